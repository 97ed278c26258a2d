//! The `tollgate` binary as a process.
//!
//! * [`Gateway`]: `tollgate run` with a generated YAML config in a tempdir, free ports for the
//!   public and admin listeners (`access_log: off`), killed on drop.
//! * [`gateway_yaml`], [`wait_until_ready`], [`signal`], [`kill_and_reap`], [`wait_or_kill`]:
//!   the pieces, for tests that drive processes themselves.
//! * [`check`] / [`run_once`] / [`run_bounded`]: `tollgate check` / `tollgate run` on a config,
//!   with bounded waits.
//!
//! Every wait in here is bounded in count and time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpStream;

use super::{client, free_port_pair, raw_get, raw_request, send, Resp, BIN};

// ---------------------------------------------------------------------------------------------
// Process pieces
// ---------------------------------------------------------------------------------------------

/// A full config: a `server` section on the given loopback ports, with pid file and upgrade
/// socket inside `dir`, plus `server_extra` keys (one per entry), then `body`.
pub fn gateway_yaml(
    dir: &Path,
    port: u16,
    admin_port: u16,
    access_log: &str,
    server_extra: &[&str],
    body: &str,
) -> String {
    let d = dir.display();
    let mut yaml = format!(
        "server:\n  listen: [\"127.0.0.1:{port}\"]\n  admin_listen: \"127.0.0.1:{admin_port}\"\n  threads: 1\n  pid_file: \"{d}/tollgate.pid\"\n  upgrade_sock: \"{d}/upgrade.sock\"\n  access_log: \"{access_log}\"\n"
    );
    for line in server_extra {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml.push('\n');
    yaml.push_str(body);
    yaml
}

/// The `server:` section of a config that is only ever given to `tollgate check` (ports are
/// never bound). A macro so that a file's own constant can extend it with `concat!`.
#[macro_export]
macro_rules! check_server_section {
    () => {
        "server:\n  listen: [\"127.0.0.1:18080\"]\n  admin_listen: \"127.0.0.1:19901\"\n  pid_file: \"@DIR@/tollgate.pid\"\n  upgrade_sock: \"@DIR@/upgrade.sock\"\n  access_log: \"off\"\n"
    };
}

/// `kill -<sig> <pid>`; panics if `kill` cannot be run or reports failure.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run `kill -{sig} {pid}`: {e}"));
    assert!(status.success(), "`kill -{sig} {pid}` failed: {status}");
}

/// SIGKILLs `child` and reaps it, waiting at most 5 s.
pub fn kill_and_reap(mut child: Child) {
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits for `child` to exit, polling every `poll`; kills and reaps it once `limit` has passed.
/// Returns its exit status, or `None` if it had to be killed.
pub fn wait_or_kill(child: &mut Child, limit: Duration, poll: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(poll);
    }
}

/// Whether process `pid` holds a listening TCP socket on `port` (any local address).
///
/// A connect that succeeds proves only that *someone* listens: a port from
/// [`super::free_port`] can still be held by a socket another process left behind, and then
/// Pingora retries its bind ("is in use, will try again") while the test would talk to the
/// other listener. Reads `/proc/net/tcp{,6}` for listeners on the port and looks for their
/// inodes among the process's descriptors.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1, state field 3 (0A = LISTEN), inode field 9.
            if f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
}

/// Like [`wait_until_ready`], and then whether `child` itself holds both listeners (see
/// [`listens_on`]); `false` means a port was taken by someone else and the caller should
/// start again on new ports.
pub async fn ready_on_own_ports(child: &mut Child, admin_port: u16, port: u16) -> bool {
    wait_until_ready(child, admin_port, port).await;
    let pid = child.id();
    listens_on(pid, port) && listens_on(pid, admin_port)
}

/// Starts `tollgate run -c <config>` on a fresh pair of ports and waits until it is ready on
/// them: writes `yaml(port, admin_port)` to `config`, spawns the binary configured by `setup`,
/// and, if a port turns out held by another process (see [`listens_on`]), starts again on new
/// ports (three attempts). Returns the child and `(port, admin_port)`.
pub async fn spawn_ready(
    config: &Path,
    yaml: impl Fn(u16, u16) -> String,
    setup: impl Fn(&mut Command),
) -> (Child, u16, u16) {
    for _ in 0..3 {
        let (port, admin_port) = free_port_pair();
        std::fs::write(config, yaml(port, admin_port)).expect("write config");
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("-c").arg(config).stdin(Stdio::null());
        setup(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        if ready_on_own_ports(&mut child, admin_port, port).await {
            return (child, port, admin_port);
        }
        eprintln!("gateway: port {port} or {admin_port} held by another process; new ports");
        kill_and_reap(child);
    }
    panic!("gateway: three pairs of ports in a row were held by other processes");
}

/// Waits (≤ 20 s) for admin `/health` on `admin_port` = 200, then for `port` to accept
/// connections. Panics if `child` exits or the deadline passes.
pub async fn wait_until_ready(child: &mut Child, admin_port: u16, port: u16) {
    let assert_alive = |child: &mut Child, when: &str| {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tollgate exited early ({status}) {when}");
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("probe client");
    let health = format!("http://127.0.0.1:{admin_port}/health");
    loop {
        assert_alive(child, "while waiting for admin /health");
        if let Ok(r) = probe.get(&health).send().await {
            if r.status().as_u16() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "gateway admin {health} did not return 200 within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        assert_alive(child, "while waiting for the public port");
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway public port {port} not accepting within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// A running `tollgate run -c <tempdir>/tollgate.yaml`.
pub struct Gateway {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    pub client: reqwest::Client,
}

impl Gateway {
    /// Starts the gateway with the default server section and `body` (the `upstreams:` and
    /// `routes:` sections, verbatim).
    pub async fn start(body: &str) -> Gateway {
        Self::start_with(&[], body).await
    }

    /// Like [`Gateway::start`], with extra `server:` keys, one per entry (e.g.
    /// `trusted_proxies: ["127.0.0.0/8"]`).
    pub async fn start_with(server_extra: &[&str], body: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("tollgate.yaml");
        let (child, port, admin_port) = spawn_ready(
            &config_path,
            |port, admin| gateway_yaml(dir.path(), port, admin, "off", server_extra, body),
            |cmd| {
                cmd.env("RUST_BACKTRACE", "1")
                    .stdout(File::create(dir.path().join("stdout.log")).expect("stdout.log"))
                    .stderr(File::create(dir.path().join("stderr.log")).expect("stderr.log"));
            },
        )
        .await;
        Gateway {
            child: Some(child),
            dir,
            port,
            admin_port,
            config_path,
            client: client(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Rewrite the config file with new `server:` extras and body (listen and admin ports
    /// unchanged), as an operator edits it before a reload.
    pub fn rewrite_config(&self, server_extra: &[&str], body: &str) {
        let yaml = gateway_yaml(
            self.dir.path(),
            self.port,
            self.admin_port,
            "off",
            server_extra,
            body,
        );
        std::fs::write(&self.config_path, yaml).expect("rewrite config");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub async fn get(&self, path: &str) -> Resp {
        send(&self.client, "GET", &self.url(path), &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(&self.client, "GET", &self.url(path), headers).await
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(&self.client, method, &self.url(path), headers).await
    }

    /// The admin listener's port, for requests the typed helpers do not send.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        send(&self.client, "GET", &self.admin_url(path), &[]).await
    }

    /// `/ready`'s config generation (0 when it cannot be read).
    pub async fn config_generation(&self) -> u64 {
        self.admin_get("/ready").await.json()["config_generation"]
            .as_u64()
            .unwrap_or(0)
    }

    /// SIGHUP, then wait (≤ 10 s) until generation `expected` serves.
    pub async fn reload_to(&self, expected: u64) {
        signal(self.pid(), "HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.config_generation().await != expected {
            assert!(
                Instant::now() < deadline,
                "reload not applied:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET <target>` sent byte-for-byte to the public port.
    pub async fn raw_get(&self, target: &str, host: &str) -> Resp {
        raw_get(self.port, target, host).await
    }

    pub async fn raw(&self, request: &str) -> Resp {
        raw_request(self.port, request).await
    }

    /// [`Gateway::logs`] once they contain every one of `needles`, polled for at most 5 s (the
    /// gateway writes a line after acting on it, so a test that reads right after the action
    /// can be early); what there is at the deadline otherwise.
    pub async fn logs_once_containing(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let logs = self.logs();
            if needles.iter().all(|n| logs.contains(n)) || std::time::Instant::now() > deadline {
                return logs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- tollgate config ({}) ---\n{}\n--- tollgate stdout ---\n{}\n--- tollgate stderr ---\n{}",
            self.config_path.display(),
            read("tollgate.yaml"),
            read("stdout.log"),
            read("stderr.log")
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_and_reap(child);
        }
        if std::thread::panicking() || std::env::var_os("TOLLGATE_TEST_LOGS").is_some() {
            eprintln!("{}", self.logs());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// check / run
// ---------------------------------------------------------------------------------------------

/// Output of a finished (or killed) `tollgate` invocation.
#[derive(Debug)]
pub struct Outcome {
    /// `None` if it had to be killed at the deadline (or died of a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Runs `tollgate <args...>` with stdout/stderr to files in `dir`; kills it after `limit`.
pub fn run_bounded(args: &[&str], dir: &Path, limit: Duration) -> Outcome {
    run_bounded_env(args, dir, limit, &[])
}

/// [`run_bounded`] with environment changes: `(name, Some(value))` sets, `(name, None)` removes.
pub fn run_bounded_env(
    args: &[&str],
    dir: &Path,
    limit: Duration,
    env: &[(&str, Option<&str>)],
) -> Outcome {
    let out_path = dir.join("cmd.stdout");
    let err_path = dir.join("cmd.stderr");
    let mut cmd = Command::new(BIN);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let status = wait_or_kill(&mut child, limit, Duration::from_millis(20));
    Outcome {
        timed_out: status.is_none(),
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Writes `yaml` (with every `@DIR@` replaced by a fresh tempdir) and runs
/// `tollgate check -c <file>`. Returns `(exit_code, stdout, stderr)`; exit code -1 = killed or
/// signalled.
pub fn check(yaml: &str) -> (i32, String, String) {
    check_env(yaml, &[])
}

/// [`check`] with environment changes (see [`run_bounded_env`]).
pub fn check_env(yaml: &str, env: &[(&str, Option<&str>)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("check.yaml");
    std::fs::write(
        &path,
        yaml.replace("@DIR@", &dir.path().display().to_string()),
    )
    .expect("write config");
    let o = run_bounded_env(
        &["check", "-c", path.to_str().expect("utf-8 path")],
        dir.path(),
        Duration::from_secs(30),
        env,
    );
    (o.code.unwrap_or(-1), o.stdout, o.stderr)
}

/// Runs [`check_env`] on `yaml` and asserts it exits 1 with a stderr line starting with `prefix`
/// that contains every fragment. Returns stderr.
#[track_caller]
pub fn assert_check_rejects_with(
    yaml: &str,
    env: &[(&str, Option<&str>)],
    prefix: &str,
    fragments: &[&str],
) -> String {
    let (code, out, err) = check_env(yaml, env);
    let found = err
        .lines()
        .any(|l| l.starts_with(prefix) && fragments.iter().all(|f| l.contains(f)));
    assert!(
        found,
        "expected a stderr line starting with {prefix:?} containing {fragments:?}\n\
         exit={code}\n--- stderr ---\n{err}\n--- stdout ---\n{out}\n--- config ---\n{yaml}"
    );
    assert_eq!(
        code, 1,
        "check must exit 1 on a broken config\n--- stderr ---\n{err}\n--- config ---\n{yaml}"
    );
    err
}

/// `tollgate check -c <file>` on an existing file.
pub fn check_file(path: &Path) -> (i32, String, String) {
    check_file_env(path, &[])
}

/// `tollgate check -c <file>` on an existing file, with environment changes (see
/// [`run_bounded_env`]).
pub fn check_file_env(path: &Path, env: &[(&str, Option<&str>)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run_bounded_env(
        &["check", "-c", path.to_str().expect("utf-8 path")],
        dir.path(),
        Duration::from_secs(30),
        env,
    );
    (o.code.unwrap_or(-1), o.stdout, o.stderr)
}

/// Writes `yaml` (with `@DIR@` replaced) and runs `tollgate run -c <file>`, killing it after
/// `limit` if it is still running.
pub fn run_once(yaml: &str, limit: Duration) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run.yaml");
    std::fs::write(
        &path,
        yaml.replace("@DIR@", &dir.path().display().to_string()),
    )
    .expect("write config");
    run_bounded(
        &["run", "-c", path.to_str().expect("utf-8 path")],
        dir.path(),
        limit,
    )
}

// ---------------------------------------------------------------------------------------------
// Admin /ready
// ---------------------------------------------------------------------------------------------

/// Finds `(healthy, total)` for upstream `name` anywhere in a `/ready` JSON body. Accepts
/// `{..."<name>": {"healthy": h, "total": t}...}` and `[{"name"|"upstream": "<name>", "healthy":
/// h, "total": t}]` shapes, at any depth.
pub fn upstream_counts(v: &Value, name: &str) -> Option<(u64, u64)> {
    fn counts(o: &serde_json::Map<String, Value>) -> Option<(u64, u64)> {
        Some((o.get("healthy")?.as_u64()?, o.get("total")?.as_u64()?))
    }
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(inner)) = o.get(name) {
                if let Some(c) = counts(inner) {
                    return Some(c);
                }
            }
            let named = ["name", "upstream"]
                .iter()
                .any(|k| o.get(*k).and_then(Value::as_str) == Some(name));
            if named {
                if let Some(c) = counts(o) {
                    return Some(c);
                }
            }
            o.values().find_map(|x| upstream_counts(x, name))
        }
        Value::Array(a) => a.iter().find_map(|x| upstream_counts(x, name)),
        _ => None,
    }
}
