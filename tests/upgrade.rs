//! Zero-downtime upgrades and graceful shutdown of the real `tollgate` binary (DESIGN.md
//! "Operations", issue 7), driven the way `systemd/tollgate.service` drives it:
//!
//! * start: `tollgate run -d -c CFG` (returns once the daemon is up; its pid is in `pid_file`);
//! * upgrade/reload: `tollgate run -d -u -c CFG` (returns once the new daemon is up and waiting for
//!   the sockets; Pingora renames `pid_file` to `pid_file.old` and the new daemon writes
//!   `pid_file`), then `kill -QUIT <old pid>`: the old process hands its listening sockets over
//!   `upgrade_sock`, keeps serving what it has, and exits;
//! * stop: SIGTERM: stop accepting, finish in-flight requests, exit 0.
//!
//! Every daemon a test starts is SIGKILLed when the test ends, even on panic ([`Fleet`]'s `Drop`:
//! the pids it saw, the pid files, and any process whose command line names the test's own
//! config file). Every wait is bounded; traffic goes to loopback only. Signals are sent with the
//! `kill` command (libc is not a dev-dependency).

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `server.grace_period` / `server.graceful_shutdown_timeout` of the tests that watch processes
/// exit. The grace period is long on purpose: a process exits as soon as it has drained (issue
/// 22), so an exit observed within [`EXIT_SLACK`] of its drain starting cannot be the grace
/// period running out.
const GRACE: &str = "60s";
const GRACE_PERIOD: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: &str = "3s";

/// Pingora 0.9 keeps an old process accepting for a hard-coded `CLOSE_TIMEOUT` (5 s) after it has
/// handed its sockets over, before its graceful shutdown starts (pingora-core
/// `src/server/mod.rs`). A drained old process is therefore expected to be gone
/// `PINGORA_CLOSE_TIMEOUT` after SIGQUIT, plus [`EXIT_SLACK`].
const PINGORA_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Slack on every "the process must be gone by now" bound, for a loaded 2-core machine.
const EXIT_SLACK: Duration = Duration::from_secs(10);

// "Well before the grace period", not a tight timing.
const _: () =
    assert!(PINGORA_CLOSE_TIMEOUT.as_secs() + EXIT_SLACK.as_secs() < GRACE_PERIOD.as_secs() / 2);

/// Hard cap on any traffic loop, whatever the test does.
const TRAFFIC_HARD_CAP: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------------------------------------
// Processes: /proc, signals
// ---------------------------------------------------------------------------------------------

/// True if `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: comm may contain anything, the state follows the last ')'.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The NUL-separated command line of `pid`, as a list of arguments (empty if it is gone).
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (non-zombie) processes that have `arg` as one of their arguments.
fn processes_with_arg(arg: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && cmdline(pid).iter().any(|a| a == arg) && alive(pid) {
            out.insert(pid);
        }
    }
    out
}

/// Waits (polling, until `deadline`) for `pid` to be gone. True if it is.
async fn wait_gone(pid: u32, deadline: Instant) -> bool {
    loop {
        if !alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Fleet: one config, the daemons started from it, and their cleanup
// ---------------------------------------------------------------------------------------------

/// The finished (or killed) `tollgate` command-line invocation.
#[derive(Debug)]
struct Run {
    label: String,
    code: Option<i32>,
    timed_out: bool,
    /// Its stderr (stdout stays in its file, shown by [`Fleet::logs`]).
    stderr: String,
}

/// A tempdir with a tollgate config (its own free ports, pid file and upgrade socket) and every
/// tollgate process started from it. Dropping it SIGKILLs them all (and prints their logs if the
/// test is panicking).
struct Fleet {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    /// `cfg` as a string: the marker that identifies this test's processes in /proc.
    cfg_arg: String,
    pid_file: PathBuf,
    port: u16,
    admin_port: u16,
    backend_addr: String,
    grace: String,
    shutdown_timeout: String,
    /// Every tollgate pid this test has seen.
    seen: Mutex<BTreeSet<u32>>,
    /// A foreground `tollgate run` child, if the test started one.
    fg: Mutex<Option<Child>>,
    runs: AtomicUsize,
    /// One request per connection, so that a probe can land on any process sharing the socket.
    probe: reqwest::Client,
}

impl Fleet {
    /// Writes a config routing everything to `backend`, with the given `grace_period` and
    /// `graceful_shutdown_timeout`.
    fn new(backend: &Backend, grace: &str, shutdown_timeout: &str) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, admin_port) = free_port_pair();
        let cfg = dir.path().join("tollgate.yaml");
        let fleet = Fleet {
            cfg_arg: cfg.to_str().expect("utf-8 tempdir path").to_string(),
            pid_file: dir.path().join("tollgate.pid"),
            cfg,
            dir,
            port,
            admin_port,
            backend_addr: backend.addr(),
            grace: grace.to_string(),
            shutdown_timeout: shutdown_timeout.to_string(),
            seen: Mutex::new(BTreeSet::new()),
            fg: Mutex::new(None),
            runs: AtomicUsize::new(0),
            probe: client_no_keepalive(),
        };
        fleet.write_config(&fleet.yaml("", ""));
        fleet
    }

    /// The config; `server_extra` is inserted at the end of the `server:` section and
    /// `route_upstream`, if non-empty, replaces the route's upstream name.
    fn yaml(&self, server_extra: &str, route_upstream: &str) -> String {
        let d = self.dir.path().display();
        let upstream = if route_upstream.is_empty() {
            "pool"
        } else {
            route_upstream
        };
        format!(
            "server:
  listen: [\"127.0.0.1:{port}\"]
  admin_listen: \"127.0.0.1:{admin}\"
  threads: 1
  pid_file: \"{d}/tollgate.pid\"
  upgrade_sock: \"{d}/upgrade.sock\"
  grace_period: {grace}
  graceful_shutdown_timeout: {timeout}
  access_log: \"off\"
{server_extra}
upstreams:
  pool:
    backends: [\"{backend}\"]
    {FAST_HEALTH}
routes:
  - name: all
    match: {{path_prefix: /}}
    upstream: {upstream}
",
            port = self.port,
            admin = self.admin_port,
            grace = self.grace,
            timeout = self.shutdown_timeout,
            backend = self.backend_addr,
        )
    }

    fn write_config(&self, yaml: &str) {
        std::fs::write(&self.cfg, yaml).expect("write config");
    }

    fn old_pid_file(&self) -> PathBuf {
        PathBuf::from(format!("{}.old", self.pid_file.display()))
    }

    fn remember(&self, pid: u32) {
        self.seen.lock().unwrap().insert(pid);
    }

    /// Live tollgate processes started from this fleet's config.
    fn live(&self) -> BTreeSet<u32> {
        processes_with_arg(&self.cfg_arg)
    }

    /// Runs `tollgate <args>` with stdout/stderr to fresh files in the tempdir (a daemon it forks
    /// keeps writing its logs there); kills it after `limit`.
    fn tollgate(&self, label: &str, args: &[&str], limit: Duration) -> Run {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let base = self.dir.path().join(format!("{n:02}-{label}"));
        let out_path = base.with_extension("stdout");
        let err_path = base.with_extension("stderr");
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let status = wait_or_kill(&mut child, limit, Duration::from_millis(10));
        Run {
            label: label.to_string(),
            code: status.and_then(|s| s.code()),
            timed_out: status.is_none(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }

    /// `tollgate run -d -c CFG`; returns the daemon's pid once `/ready` answers from it.
    async fn start_daemon(&self) -> u32 {
        let cfg = self.cfg_arg.clone();
        let run = self.tollgate("start", &["run", "-d", "-c", &cfg], Duration::from_secs(30));
        if let Some(pid) = read_pid(&self.pid_file) {
            self.remember(pid);
        }
        assert!(
            run.code == Some(0) && !run.timed_out,
            "`tollgate run -d` failed: {run:?}"
        );
        let pid = read_pid(&self.pid_file).unwrap_or_else(|| {
            panic!(
                "no pid in {} after `run -d` returned",
                self.pid_file.display()
            )
        });
        assert!(alive(pid), "daemon {pid} from the pid file is not running");
        self.wait_ready_pid(pid, Duration::from_secs(20)).await;
        pid
    }

    /// First half of an upgrade: `tollgate run -d -u -c CFG` must succeed and leave a new daemon
    /// (pid in `pid_file`, the old pid moved to `pid_file.old`). Returns the new pid.
    fn start_upgrade(&self, label: &str, old: u32) -> u32 {
        let cfg = self.cfg_arg.clone();
        let run = self.tollgate(
            label,
            &["run", "-d", "-u", "-c", &cfg],
            Duration::from_secs(30),
        );
        let new = read_pid(&self.pid_file);
        if let Some(pid) = new {
            self.remember(pid);
        }
        assert!(
            run.code == Some(0) && !run.timed_out,
            "`tollgate run -d -u` failed: {run:?}"
        );
        let new = new.unwrap_or_else(|| panic!("no pid in {}", self.pid_file.display()));
        assert_ne!(
            new, old,
            "pid file still names the old process after `run -d -u`"
        );
        assert!(alive(new), "new daemon {new} is not running");
        assert_eq!(
            read_pid(&self.old_pid_file()),
            Some(old),
            "{} should hold the old pid",
            self.old_pid_file().display()
        );
        new
    }

    /// `GET /ready` on a fresh connection: `(status, pid)`.
    async fn ready_pid(&self) -> Result<(u16, u32), String> {
        let url = format!("http://127.0.0.1:{}/ready", self.admin_port);
        let r = self
            .probe
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = r.status().as_u16();
        let body = r.bytes().await.map_err(|e| format!("{e:?}"))?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("/ready body is not JSON ({e}): {body:?}"))?;
        let pid = v
            .get("pid")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("/ready has no numeric pid: {v}"))?;
        Ok((status, pid as u32))
    }

    /// Polls `/ready` (fresh connection each time) until it answers 200 from `want`, within
    /// `limit`. Returns every pid that answered meanwhile.
    async fn wait_ready_pid(&self, want: u32, limit: Duration) -> BTreeSet<u32> {
        let deadline = Instant::now() + limit;
        let mut answered = BTreeSet::new();
        loop {
            let last = match self.ready_pid().await {
                Ok((status, pid)) => {
                    answered.insert(pid);
                    if status == 200 && pid == want {
                        return answered;
                    }
                    format!("HTTP {status} from pid {pid}")
                }
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "/ready did not answer 200 from pid {want} within {limit:?}; pids that answered: \
                 {answered:?}; last: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `tollgate run -c CFG` in the foreground (logs in `fg.stdout`/`fg.stderr`); returns its pid
    /// once `/ready` answers 200 from it.
    async fn start_foreground(&self) -> u32 {
        let child = Command::new(BIN)
            .args(["run", "-c", &self.cfg_arg])
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(File::create(self.dir.path().join("fg.stdout")).expect("stdout file"))
            .stderr(File::create(self.fg_stderr_path()).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let pid = child.id();
        self.remember(pid);
        *self.fg.lock().unwrap() = Some(child);
        self.wait_ready_pid(pid, Duration::from_secs(20)).await;
        pid
    }

    fn fg_stderr_path(&self) -> PathBuf {
        self.dir.path().join("fg.stderr")
    }

    /// The foreground process's exit status if it has exited (`None` while it runs).
    fn foreground_status(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.fg.lock().unwrap();
        let child = guard.as_mut().expect("foreground child");
        child.try_wait().expect("try_wait")
    }

    /// Polls the foreground process until it exits (its status) or `deadline` (`None`).
    async fn wait_foreground_exit(&self, deadline: Instant) -> Option<std::process::ExitStatus> {
        loop {
            if let Some(s) = self.foreground_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `n` lines of the foreground process's log.
    fn foreground_log_tail(&self, n: usize) -> String {
        let logs = std::fs::read_to_string(self.fg_stderr_path()).unwrap_or_default();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Every log file of this fleet (config, then each invocation's stdout/stderr, which the
    /// daemons it forked inherited).
    fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        let mut out = format!(
            "--- config {} ---\n{}",
            self.cfg.display(),
            std::fs::read_to_string(&self.cfg).unwrap_or_default()
        );
        for p in names {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext == "stdout" || ext == "stderr" {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.push_str(&format!("\n--- {} ---\n{text}", p.display()));
            }
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(child) = self.fg.lock().unwrap_or_else(|e| e.into_inner()).take() {
            kill_and_reap(child);
        }
        let mut pids: BTreeSet<u32> = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        pids.extend(read_pid(&self.pid_file));
        pids.extend(read_pid(&self.old_pid_file()));
        pids.extend(self.live());
        let mut killed = Vec::new();
        for pid in pids {
            // Only processes started from this test's config: a pid from a file may have been
            // reused by an unrelated process since.
            if alive(pid) && cmdline(pid).contains(&self.cfg_arg) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .stdin(Stdio::null())
                    .status();
                killed.push(pid);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while killed.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if std::thread::panicking() || std::env::var_os("TOLLGATE_TEST_LOGS").is_some() {
            eprintln!("SIGKILLed at cleanup: {killed:?}\n{}", self.logs());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------

/// Client tasks sending `GET /t/<client>/<n>` to the gateway until stopped, recording every
/// request that did not come back as the backend's 200 echo of that very path.
struct Traffic {
    start: Instant,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<(String, tokio::task::JoinHandle<usize>)>,
}

#[derive(Clone, Copy)]
enum ClientKind {
    /// One pooled reqwest client, requests back to back on its keep-alive connection(s).
    KeepAlive,
    /// A pooled reqwest client that pauses between requests (its connection sits idle).
    KeepAliveIdle,
    /// A new connection for every request.
    Fresh,
}

impl Traffic {
    fn start(port: u16, clients: &[ClientKind]) -> Traffic {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, kind) in clients.iter().enumerate() {
            let (name, client, pause) = match kind {
                ClientKind::KeepAlive => (format!("keepalive{i}"), client(), Duration::ZERO),
                ClientKind::KeepAliveIdle => (
                    format!("keepalive-idle{i}"),
                    client(),
                    Duration::from_millis(25),
                ),
                // The pause keeps the number of client-side TIME_WAIT sockets well below the
                // ephemeral port range over the test's duration.
                ClientKind::Fresh => (
                    format!("fresh{i}"),
                    client_no_keepalive(),
                    Duration::from_millis(10),
                ),
            };
            let stop = stop.clone();
            let failures = failures.clone();
            let task_name = name.clone();
            let handle = tokio::spawn(async move {
                let mut ok = 0usize;
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) && start.elapsed() < TRAFFIC_HARD_CAP {
                    n += 1;
                    let path = format!("/t/{task_name}/{n}");
                    let url = format!("http://127.0.0.1:{port}{path}");
                    match one_request(&client, &url, &path).await {
                        Ok(()) => ok += 1,
                        Err(e) => failures.lock().unwrap().push(format!(
                            "t={:.3}s {task_name} {path}: {e}",
                            start.elapsed().as_secs_f64()
                        )),
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                ok
            });
            tasks.push((name, handle));
        }
        Traffic {
            start,
            stop,
            failures,
            tasks,
        }
    }

    fn at(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Stops the clients; returns `(successes per client, failures)`.
    async fn finish(self) -> (Vec<(String, usize)>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut per_client = Vec::new();
        for (name, handle) in self.tasks {
            // A request is bounded by the client's 10 s timeout.
            let ok = tokio::time::timeout(Duration::from_secs(20), handle)
                .await
                .unwrap_or_else(|_| panic!("traffic client {name} did not stop"))
                .unwrap_or_else(|e| panic!("traffic client {name} panicked: {e}"));
            per_client.push((name, ok));
        }
        let failures = self.failures.lock().unwrap().clone();
        (per_client, failures)
    }
}

/// One GET that must come back as the backend's 200 echo of `path`, with its whole body.
async fn one_request(client: &reqwest::Client, url: &str, path: &str) -> Result<(), String> {
    let r = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("request error: {e:?}"))?;
    let status = r.status().as_u16();
    let headers = format!("{:?}", r.headers());
    let body = r
        .bytes()
        .await
        .map_err(|e| format!("HTTP {status}, body error: {e:?}"))?;
    if status != 200 {
        return Err(format!(
            "HTTP {status} {headers} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "HTTP 200 but not the backend's JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    if v.get("path").and_then(Value::as_str) != Some(path) {
        return Err(format!("HTTP 200 echoing another path: {v}"));
    }
    Ok(())
}

fn assert_no_failures(
    what: &str,
    per_client: &[(String, usize)],
    failures: &[String],
    timeline: &[String],
) {
    let total: usize = per_client.iter().map(|(_, n)| n).sum();
    let shown: Vec<&String> = failures.iter().take(40).collect();
    assert!(
        failures.is_empty(),
        "{what}: {} failed request(s) ({total} succeeded; per client {per_client:?}).\n\
         Timeline:\n  {}\nFailures (first 40):\n  {}",
        failures.len(),
        timeline.join("\n  "),
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    for (name, ok) in per_client {
        assert!(
            *ok > 0,
            "{what}: client {name} completed no request at all ({per_client:?})"
        );
    }
}

/// The spread of client kinds used under upgrades.
const MIXED_CLIENTS: &[ClientKind] = &[
    ClientKind::KeepAlive,
    ClientKind::KeepAlive,
    ClientKind::KeepAliveIdle,
    ClientKind::Fresh,
    ClientKind::Fresh,
    ClientKind::Fresh,
];

/// The bound for a drained old process to be gone after its SIGQUIT: the hand-off window and
/// slack, far below the hand-off plus [`GRACE_PERIOD`] that Pingora alone would take.
fn exit_bound_after_quit() -> Duration {
    PINGORA_CLOSE_TIMEOUT + EXIT_SLACK
}

/// Watches `pid` from now on (polling, until `deadline`): how long it took to be gone, or
/// `None` if it was still alive at the deadline. Started right after a signal, so that the
/// time measured is the process's own, not the test's.
fn watch_exit(pid: u32, deadline: Instant) -> tokio::task::JoinHandle<Option<Duration>> {
    let from = Instant::now();
    tokio::spawn(async move { wait_gone(pid, deadline).await.then(|| from.elapsed()) })
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Issue 7 (1): three successive upgrades of a daemonised gateway under continuous keep-alive and
/// connection-per-request traffic: no request fails, `/ready`'s pid moves old → new each time,
/// every old process exits once drained (issue 22: right after Pingora's hand-off window, not
/// after the 60 s grace period), and exactly one process is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_upgrades_under_load_lose_no_request() {
    let backend = Backend::start("b").await;
    let fleet = Fleet::new(&backend, GRACE, SHUTDOWN_TIMEOUT);
    let first = fleet.start_daemon().await;

    let traffic = Traffic::start(fleet.port, MIXED_CLIENTS);
    let mut timeline = vec![format!(
        "t={:.3}s traffic started, pid {first}",
        traffic.at()
    )];
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut generations = vec![first];
    let mut quits: Vec<(u32, tokio::task::JoinHandle<Option<Duration>>)> = Vec::new();
    for i in 1..=3 {
        let old = *generations.last().unwrap();
        timeline.push(format!("t={:.3}s upgrade {i}: run -d -u", traffic.at()));
        let new = fleet.start_upgrade(&format!("upgrade{i}"), old);
        timeline.push(format!(
            "t={:.3}s upgrade {i}: new pid {new} waiting; kill -QUIT {old}",
            traffic.at()
        ));
        signal(old, "QUIT");
        quits.push((
            old,
            watch_exit(old, Instant::now() + exit_bound_after_quit()),
        ));
        timeline.push(format!(
            "t={:.3}s upgrade {i}: QUIT sent; {old} should stop accepting and start its graceful \
             shutdown at t≈{:.3}s (Pingora's 5 s close timeout)",
            traffic.at(),
            traffic.at() + PINGORA_CLOSE_TIMEOUT.as_secs_f64()
        ));
        let answered = fleet.wait_ready_pid(new, Duration::from_secs(15)).await;
        timeline.push(format!(
            "t={:.3}s upgrade {i}: /ready answered by {new} (pids seen meanwhile: {answered:?})",
            traffic.at()
        ));
        generations.push(new);
        if i < 3 {
            // Traffic on the new generation while the previous one drains.
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
    }

    let mut lingering = Vec::new();
    for (pid, exit) in quits {
        match exit.await.expect("exit watcher panicked") {
            Some(after) => timeline.push(format!(
                "t={:.3}s pid {pid} was gone {:.3}s after its SIGQUIT",
                traffic.at(),
                after.as_secs_f64()
            )),
            None => lingering.push(pid),
        }
    }
    // A little traffic on the sole survivor.
    tokio::time::sleep(Duration::from_millis(500)).await;
    timeline.push(format!("t={:.3}s traffic stopping", traffic.at()));
    let (per_client, failures) = traffic.finish().await;
    eprintln!(
        "three upgrades: generations {generations:?}, per client {per_client:?}\n  {}",
        timeline.join("\n  ")
    );

    assert_no_failures("three upgrades", &per_client, &failures, &timeline);
    let distinct: BTreeSet<u32> = generations.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        4,
        "each upgrade must start a new process: {generations:?}"
    );
    assert!(
        lingering.is_empty(),
        "old process(es) {lingering:?} still alive {:?} after their SIGQUIT (expected gone once \
         drained, right after Pingora's 5 s close timeout; grace_period is {GRACE})",
        exit_bound_after_quit()
    );
    let last = *generations.last().unwrap();
    for _ in 0..5 {
        let (status, pid) = fleet.ready_pid().await.expect("final /ready");
        assert_eq!(
            (status, pid),
            (200, last),
            "/ready after the upgrades must come from the last generation"
        );
    }
    let live = fleet.live();
    assert_eq!(
        live,
        BTreeSet::from([last]),
        "exactly the last generation must be left running (generations {generations:?})"
    );
}

/// Issue 18: the binary upgrade as one signal. SIGUSR2 to the running daemon makes it check the
/// file, start its successor with `run -d -u` itself, and quit into the hand-off once the
/// successor is up; traffic never fails and the old process is gone after draining. A file that
/// fails `check` leaves the old process serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_upgrades_in_place_and_a_bad_file_leaves_the_old_process() {
    let backend = Backend::start("b").await;
    let fleet = Fleet::new(&backend, GRACE, SHUTDOWN_TIMEOUT);
    let old = fleet.start_daemon().await;
    let traffic = Traffic::start(fleet.port, MIXED_CLIENTS);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A broken file first: nothing happens to the running process.
    let good = std::fs::read_to_string(&fleet.cfg_arg).expect("config");
    fleet.write_config("upstreams: [");
    signal(old, "USR2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alive(old), "a failed self-upgrade stopped the old process");
    assert_eq!(fleet.ready_pid().await.expect("/ready").1, old);

    fleet.write_config(&good);
    signal(old, "USR2");
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        if let Ok((200, pid)) = fleet.ready_pid().await {
            if pid != old {
                break pid;
            }
        }
        assert!(Instant::now() < deadline, "no successor answered /ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    fleet.remember(new);
    let gone = wait_gone(old, Instant::now() + exit_bound_after_quit()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (per_client, failures) = traffic.finish().await;
    assert_no_failures("SIGUSR2 upgrade", &per_client, &failures, &[]);
    assert!(gone, "old process {old} still alive after the hand-off");
    assert_eq!(fleet.live(), BTreeSet::from([new]));
}

/// Issue 7 (2): a slow request that reached the backend through the old process just before its
/// SIGQUIT completes: 200 with the whole body; then the old process exits, drained (issue 22),
/// far before its 60 s grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_slow_request_completes_on_the_old_process() {
    let backend = Backend::start("b").await;
    let fleet = Fleet::new(&backend, GRACE, SHUTDOWN_TIMEOUT);
    let old = fleet.start_daemon().await;

    // The new process is up but has no listening socket until the old one hands them over after
    // SIGQUIT, so a connection made now is necessarily the old process's.
    let new = fleet.start_upgrade("upgrade", old);
    let hits_before = backend.hits();
    let url = format!("http://127.0.0.1:{}/slow/in-flight", fleet.port);
    let slow = tokio::spawn(async move {
        let r = client_no_keepalive()
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("request error: {e:?}"))?;
        let status = r.status().as_u16();
        let content_length = r.content_length();
        let body = r
            .bytes()
            .await
            .map_err(|e| format!("HTTP {status}, body error: {e:?}"))?;
        Ok::<_, String>((status, content_length, body))
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend.hits() == hits_before {
        assert!(
            Instant::now() < deadline,
            "the slow request did not reach the backend within 5 s"
        );
        assert!(!slow.is_finished(), "the slow request ended before SIGQUIT");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(old, "QUIT");
    let exit = watch_exit(old, Instant::now() + exit_bound_after_quit());
    fleet.wait_ready_pid(new, Duration::from_secs(15)).await;

    let (status, content_length, body) = tokio::time::timeout(Duration::from_secs(15), slow)
        .await
        .expect("slow request still running 15 s after SIGQUIT")
        .expect("slow request task panicked")
        .unwrap_or_else(|e| panic!("the in-flight slow request failed across SIGQUIT: {e}"));
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "in-flight slow request: {text}");
    if let Some(len) = content_length {
        assert_eq!(len as usize, body.len(), "truncated body: {text}");
    }
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("incomplete or non-JSON body ({e}): {text}"));
    assert_eq!(
        v.get("path").and_then(Value::as_str),
        Some("/slow/in-flight"),
        "{v}"
    );
    assert_eq!(v.get("backend").and_then(Value::as_str), Some("b"), "{v}");

    let gone_after = exit.await.expect("exit watcher panicked");
    eprintln!("old process {old} gone {gone_after:?} after SIGQUIT (grace_period {GRACE})");
    assert!(
        gone_after.is_some(),
        "old process {old} still alive {:?} after SIGQUIT: it should exit once drained, not \
         after its grace_period ({GRACE})",
        exit_bound_after_quit()
    );
    assert_eq!(fleet.live(), BTreeSet::from([new]));
}

/// Issue 7 (3): `run -d -u` with a broken config exits non-zero at once, naming the YAML path, and
/// touches nothing: the old process keeps its pid file and keeps serving without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_a_broken_config_leaves_the_old_process_serving() {
    let backend = Backend::start("b").await;
    let fleet = Fleet::new(&backend, GRACE, SHUTDOWN_TIMEOUT);
    let old = fleet.start_daemon().await;
    let good = std::fs::read_to_string(&fleet.cfg).expect("read config");

    let traffic = Traffic::start(fleet.port, MIXED_CLIENTS);
    let mut timeline = vec![format!("t={:.3}s traffic started, pid {old}", traffic.at())];
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The config file the running process came from is edited in place, as an operator would
    // before `systemctl reload`.
    let broken = [
        (
            "unknown-key",
            fleet.yaml("  bogus_key: 1", ""),
            "server.bogus_key",
        ),
        (
            "dangling-upstream",
            fleet.yaml("", "nope"),
            "routes[0].upstream",
        ),
    ];
    let cfg = fleet.cfg_arg.clone();
    for (label, yaml, yaml_path) in &broken {
        fleet.write_config(yaml);
        timeline.push(format!("t={:.3}s {label}: run -d -u", traffic.at()));
        let run = fleet.tollgate(
            label,
            &["run", "-d", "-u", "-c", &cfg],
            Duration::from_secs(20),
        );
        timeline.push(format!(
            "t={:.3}s {label}: exited {:?}",
            traffic.at(),
            run.code
        ));
        assert!(
            !run.timed_out,
            "{label}: `run -d -u` with a broken config was still running after 20 s: {run:?}"
        );
        assert!(
            matches!(run.code, Some(c) if c != 0),
            "{label}: `run -d -u` with a broken config must exit non-zero: {run:?}"
        );
        assert!(
            run.stderr.contains(yaml_path),
            "{label}: stderr must name {yaml_path:?}: {run:?}"
        );
        assert_eq!(
            read_pid(&fleet.pid_file),
            Some(old),
            "{label}: the pid file must still name the running process ({})",
            run.label
        );
        assert!(
            !fleet.old_pid_file().exists(),
            "{label}: a failed upgrade must not move the pid file aside"
        );
        assert!(alive(old), "{label}: the old process died");
        assert_eq!(
            fleet.live(),
            BTreeSet::from([old]),
            "{label}: the failed upgrade must leave no process behind"
        );
        for _ in 0..5 {
            let (status, pid) = fleet.ready_pid().await.expect("/ready");
            assert_eq!(
                (status, pid),
                (200, old),
                "{label}: /ready after the attempt"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    fleet.write_config(&good);

    tokio::time::sleep(Duration::from_millis(500)).await;
    timeline.push(format!("t={:.3}s traffic stopping", traffic.at()));
    let (per_client, failures) = traffic.finish().await;
    assert_no_failures("broken-config upgrade", &per_client, &failures, &timeline);
    assert_eq!(fleet.live(), BTreeSet::from([old]));
    assert_eq!(read_pid(&fleet.pid_file), Some(old));
}

/// Sends one GET for `path` on a fresh connection in the background; the backend echoes it
/// (after [`DEFAULT_SLOW_DELAY`] for `/slow...` paths). Returns `(status, body)`.
fn spawn_get(
    port: u16,
    path: &str,
) -> tokio::task::JoinHandle<Result<(u16, bytes::Bytes), String>> {
    let url = format!("http://127.0.0.1:{port}{path}");
    tokio::spawn(async move {
        let r = client_no_keepalive()
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("request error: {e:?}"))?;
        let status = r.status().as_u16();
        let body = r
            .bytes()
            .await
            .map_err(|e| format!("HTTP {status}, body error: {e:?}"))?;
        Ok((status, body))
    })
}

/// Waits (≤ 5 s) until `backend` has seen more than `before` requests.
async fn wait_backend_hit(backend: &Backend, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend.hits() == before {
        assert!(
            Instant::now() < deadline,
            "the slow request did not reach the backend within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts a `(status, body)` from [`spawn_get`] is the backend's 200 echo of `path`, whole.
fn assert_echo_200(result: Result<(u16, bytes::Bytes), String>, path: &str, when: &str) {
    let (code, body) =
        result.unwrap_or_else(|e| panic!("the in-flight request {path} failed: {e}\n{when}"));
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(code, 200, "in-flight request {path}: {text}\n{when}");
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("incomplete or non-JSON body ({e}): {text}\n{when}"));
    assert_eq!(v.get("path").and_then(Value::as_str), Some(path), "{v}");
}

/// Issue 7 (4): SIGTERM on a running gateway: new connections are refused at once, an in-flight
/// slow request is still answered (200, whole body), and the process exits 0 within a bound.
///
/// Timing: the documented contract (README "Zero-downtime upgrade and reload",
/// systemd/tollgate.service) is that once a process stops accepting, in-flight requests get
/// `grace_period` to finish, and `graceful_shutdown_timeout` then bounds the runtime teardown.
/// grace_period is 5 s here and the backend answers 3 s after it got the request (which is
/// before SIGTERM), so the request has ≥ 2 s of margin; the 1 s teardown bound is irrelevant
/// to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_connections_and_drains_in_flight_requests() {
    let backend = Backend::start("b").await;
    let fleet = Fleet::new(&backend, "5s", "1s");
    let pid = fleet.start_foreground().await;

    let hits_before = backend.hits();
    let slow = spawn_get(fleet.port, "/slow/draining");
    wait_backend_hit(&backend, hits_before).await;
    signal(pid, "TERM");
    let term_at = Instant::now();

    // New connections: refused once the listener is closed, which must happen promptly (well
    // before the in-flight request is done).
    let refuse_deadline = Instant::now() + Duration::from_secs(2);
    let mut accepted_after_term = 0;
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", fleet.port)).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            // A connect racing the listener's close is reset from the backlog: also not
            // accepted. Keep probing until the port answers with a plain refusal.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("unexpected connect error after SIGTERM: {e}"),
            Ok(_) => accepted_after_term += 1,
        }
        assert!(
            Instant::now() < refuse_deadline,
            "new connections still accepted 2 s after SIGTERM ({accepted_after_term} accepted)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_at = term_at.elapsed();
    assert!(
        !slow.is_finished(),
        "the slow request was over before new connections were refused"
    );
    for _ in 0..5 {
        let e = tokio::net::TcpStream::connect(("127.0.0.1", fleet.port))
            .await
            .expect_err("a new connection was accepted after SIGTERM");
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let result = tokio::time::timeout(Duration::from_secs(15), slow)
        .await
        .expect("slow request still running 15 s after SIGTERM")
        .expect("slow request task panicked");
    let request_done = term_at.elapsed();

    // The exit: bounded by grace_period + graceful_shutdown_timeout + slack.
    let status = fleet
        .wait_foreground_exit(Instant::now() + Duration::from_secs(1 + 5) + EXIT_SLACK)
        .await;
    let exited = term_at.elapsed();
    let when = format!(
        "after SIGTERM: listener refused at {refused_at:?}, slow request ended at \
         {request_done:?}, process status {status:?} at {exited:?}; gateway log tail:\n{}",
        fleet.foreground_log_tail(25)
    );
    assert_echo_200(result, "/slow/draining", &when);
    let status = status.unwrap_or_else(|| panic!("tollgate did not exit after SIGTERM: {when}"));
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {when}");
}

/// Issue 22: an idle gateway stops on SIGTERM as soon as it has nothing to drain, well before its
/// grace period (60 s here; Pingora's own default would be 300 s). A client's idle keep-alive
/// connection does not hold it: Pingora closes those once it has stopped accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gateway_exits_on_sigterm_well_before_grace_period() {
    let backend = Backend::start("b").await;
    let fleet = Fleet::new(&backend, GRACE, SHUTDOWN_TIMEOUT);
    let pid = fleet.start_foreground().await;

    // A pooled client keeps its connection open and idle after this request.
    let keepalive = client();
    let url = format!("http://127.0.0.1:{}/t/idle/1", fleet.port);
    one_request(&keepalive, &url, "/t/idle/1")
        .await
        .unwrap_or_else(|e| panic!("request before SIGTERM: {e}"));

    signal(pid, "TERM");
    let term_at = Instant::now();
    let status = fleet.wait_foreground_exit(term_at + EXIT_SLACK).await;
    let exited = term_at.elapsed();
    eprintln!("idle gateway: status {status:?} {exited:?} after SIGTERM (grace_period {GRACE})");
    let when = format!(
        "{exited:?} after SIGTERM, grace_period {GRACE}; gateway log tail:\n{}",
        fleet.foreground_log_tail(25)
    );
    let status = status.unwrap_or_else(|| {
        panic!("an idle gateway must exit once drained, not after its grace period: {when}")
    });
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {when}");
    assert!(
        fleet.foreground_log_tail(25).contains("drained"),
        "the exit should be the drain's early exit: {when}"
    );
    drop(keepalive);
}

/// Issue 22: one slow request in flight keeps a SIGTERMed gateway alive until it has been
/// answered (200, whole body); then the gateway exits, well before its 60 s grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_delays_sigterm_exit_until_answered() {
    let backend = Backend::start("b").await;
    let fleet = Fleet::new(&backend, GRACE, SHUTDOWN_TIMEOUT);
    let pid = fleet.start_foreground().await;

    let hits_before = backend.hits();
    let slow = spawn_get(fleet.port, "/slow/holds-the-exit");
    wait_backend_hit(&backend, hits_before).await;
    signal(pid, "TERM");
    let term_at = Instant::now();

    // The backend answers DEFAULT_SLOW_DELAY (3 s) after it got the request, i.e. after SIGTERM;
    // an idle gateway is gone a fraction of a second after SIGTERM (test above). Halfway, the
    // request is pending, and the process must still be there to answer it.
    tokio::time::sleep(DEFAULT_SLOW_DELAY / 2).await;
    assert!(
        !slow.is_finished(),
        "the slow request ended before the backend could have answered it"
    );
    assert!(
        fleet.foreground_status().is_none(),
        "the gateway exited {:?} after SIGTERM with a request in flight; log tail:\n{}",
        term_at.elapsed(),
        fleet.foreground_log_tail(25)
    );

    let result = tokio::time::timeout(Duration::from_secs(15), slow)
        .await
        .expect("slow request still running 15 s after SIGTERM")
        .expect("slow request task panicked");
    let answered = term_at.elapsed();
    let status = fleet.wait_foreground_exit(term_at + EXIT_SLACK).await;
    let exited = term_at.elapsed();
    eprintln!(
        "slow request: answered {answered:?}, gateway status {status:?} {exited:?} after \
         SIGTERM (grace_period {GRACE})"
    );
    let when = format!(
        "answered {answered:?}, exit {status:?} {exited:?} after SIGTERM, grace_period {GRACE}; \
         gateway log tail:\n{}",
        fleet.foreground_log_tail(25)
    );
    assert_echo_200(result, "/slow/holds-the-exit", &when);
    let status = status.unwrap_or_else(|| {
        panic!("the gateway must exit once the slow request is answered: {when}")
    });
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {when}");
}
