//! The `tollgate` command line: `run`, `check`, `demo`.

use clap::{Parser, Subcommand};

/// mimalloc: Pingora's per-request allocations are small and short-lived; glibc malloc costs
/// 10-15% throughput on this workload (DESIGN.md baseline).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tollgate::auth::mint::{mint_hmac, DevClaims};
use tollgate::config::{Config, Problems};
use tollgate::drain::Draining;
use tollgate::runtime::Runtime;
use tollgate::server::{self, RunFlags};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An API gateway on Cloudflare Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with the given config (refuses to start on any config problem).
    Run {
        /// Path to the YAML config.
        #[arg(short = 'c', long = "conf")]
        conf: PathBuf,
        /// Fork into the background; the parent exits once the daemon is serving.
        #[arg(short, long)]
        daemon: bool,
        /// Take the listening sockets over from a running tollgate (zero-downtime upgrade):
        /// start this, then send SIGQUIT to the old process.
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a config: print every problem with its YAML path, exit 1 if there is any.
    Check {
        /// Path to the YAML config.
        #[arg(short = 'c', long = "conf")]
        conf: PathBuf,
    },
    /// Start the gateway with built-in demo backends on loopback and print curl lines to try.
    Demo,
    /// Mint a short-lived HMAC-signed JWT for development and tests.
    Token {
        /// Environment variable holding the shared secret (never pass secrets as arguments).
        #[arg(long)]
        secret_env: String,
        /// HS256, HS384 or HS512.
        #[arg(long, default_value = "HS256")]
        alg: String,
        /// Subject (`sub`): the consumer id.
        #[arg(long)]
        sub: String,
        /// Comma-separated roles (`roles` claim).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Space-separated scopes (`scope` claim).
        #[arg(long)]
        scope: Option<String>,
        #[arg(long)]
        iss: Option<String>,
        #[arg(long)]
        aud: Option<String>,
        /// Lifetime, e.g. 15m.
        #[arg(long, default_value = "15m")]
        ttl: String,
    },
}

fn print_problems(file: &str, problems: &Problems) {
    for p in &problems.0 {
        eprintln!("error: {p}");
    }
    eprintln!("{} problem(s) in {file}", problems.0.len());
}

/// Read a config and build its runtime (the composition root): every problem is printed.
fn load(path: &Path, draining: Draining) -> Result<(Config, Runtime, String), ExitCode> {
    Runtime::load(path, draining).map_err(|problems| {
        print_problems(&path.display().to_string(), &problems);
        ExitCode::from(1)
    })
}

/// The drain flag of a serving process: raised by SIGQUIT and SIGTERM.
fn draining() -> Result<Draining, ExitCode> {
    Draining::on_signals().map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

/// `server.log_level` (or `RUST_LOG`). A bare level applies to tollgate's own lines; Pingora's
/// crates stay at `warn` (their INFO start-up and per-service lines are noise to an operator)
/// unless the value names them, e.g. `info,pingora_core=info`.
fn init_tracing(level: &str, format: tollgate::config::LogFormat) {
    let directives = if level.contains('=') {
        level.to_string()
    } else {
        format!("{level},pingora=warn,pingora_core=warn,pingora_proxy=warn,pingora_load_balancing=error")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(directives))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        tollgate::config::LogFormat::Text => builder.init(),
        tollgate::config::LogFormat::Json => builder.json().init(),
    }
}

fn serve(
    config: &Config,
    runtime: Runtime,
    flags: RunFlags,
    extra: Vec<Box<dyn pingora::services::ServiceWithDependents>>,
    source: Option<(&Path, &str)>,
) -> ExitCode {
    match server::build(config, runtime, flags, extra, source) {
        Ok(server) => {
            tracing::info!(
                "tollgate {} serving {} route(s) over {} upstream(s) on {:?}, admin on {}",
                env!("CARGO_PKG_VERSION"),
                config.routes.len(),
                config.upstreams.len(),
                config.server.listen,
                config.server.admin_listen
            );
            server.run_forever()
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    tollgate::heap::keep_in_small_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { conf } => match load(&conf, Draining::default()) {
            Ok((config, runtime, _)) => {
                // Warnings do not fail `check`: the file is usable, maybe not as intended.
                let dns = tollgate::upstream::dns::check_names(&config);
                for w in config
                    .warnings()
                    .iter()
                    .chain(runtime.warnings())
                    .chain(&dns)
                {
                    eprintln!("warning: {w}");
                }
                println!(
                    "{}: OK ({} upstream(s), {} route(s))",
                    conf.display(),
                    config.upstreams.len(),
                    config.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run {
            conf,
            daemon,
            upgrade,
        } => {
            let draining = match draining() {
                Ok(d) => d,
                Err(code) => return code,
            };
            let (config, runtime, text) = match load(&conf, draining) {
                Ok(built) => built,
                Err(code) => return code,
            };
            init_tracing(&config.server.log_level, config.server.log_format);
            for w in config.warnings().iter().chain(runtime.warnings()) {
                tracing::warn!("config: {w}");
            }
            let flags = RunFlags { daemon, upgrade };
            // Absolute: a daemon runs from `/`, and SIGHUP/SIGUSR2 re-read this path.
            let conf = std::path::absolute(&conf).unwrap_or(conf);
            serve(&config, runtime, flags, Vec::new(), Some((&conf, &text)))
        }
        Command::Token {
            secret_env,
            alg,
            sub,
            roles,
            scope,
            iss,
            aud,
            ttl,
        } => {
            let Ok(secret) = std::env::var(&secret_env) else {
                eprintln!("error: environment variable {secret_env} is not set");
                return ExitCode::from(2);
            };
            let Ok(alg) = alg.parse::<jsonwebtoken::Algorithm>() else {
                eprintln!("error: unknown algorithm {alg:?}");
                return ExitCode::from(2);
            };
            let ttl = match humantime::parse_duration(&ttl) {
                Ok(d) => d.as_secs(),
                Err(e) => {
                    eprintln!("error: invalid --ttl {ttl:?}: {e}");
                    return ExitCode::from(2);
                }
            };
            let claims = DevClaims {
                sub,
                roles,
                scope,
                issuer: iss,
                audience: aud,
                ttl_secs: ttl,
            };
            match mint_hmac(secret.as_bytes(), alg, &claims) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Demo => {
            let config = match tollgate::demo::load_config() {
                Ok((c, _dir)) => c,
                Err(problems) => {
                    eprintln!("error: the embedded demo config is invalid:\n{problems}");
                    return ExitCode::from(1);
                }
            };
            let runtime = match draining().map(|d| Runtime::build(&config, d)) {
                Ok(Ok(runtime)) => runtime,
                Ok(Err(problems)) => {
                    eprintln!("error: the embedded demo config is invalid:\n{problems}");
                    return ExitCode::from(1);
                }
                Err(code) => return code,
            };
            init_tracing(&config.server.log_level, config.server.log_format);
            println!(
                "{}",
                tollgate::demo::banner(&config.server.listen[0], &config.server.admin_listen)
            );
            serve(
                &config,
                runtime,
                RunFlags::default(),
                tollgate::demo::services(),
                None,
            )
        }
    }
}
