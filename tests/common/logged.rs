//! [`LoggedGateway`]: the real `tollgate` binary with a chosen `access_log` and extra environment
//! (the shared [`super::Gateway`] fixes `access_log: off`), for tests that read its logs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{client, gateway::spawn_ready, gateway_yaml, send, Resp};

/// `tollgate run` with a chosen `access_log` (`@DIR@` is replaced by the gateway's tempdir,
/// which is also its working directory), env vars for the child only (`RUST_LOG` is removed
/// unless given). stdout/stderr go to `stdout.log`/`stderr.log` there. Killed on drop; its logs
/// are printed if the test is panicking.
pub struct LoggedGateway {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    pub client: reqwest::Client,
}

impl LoggedGateway {
    /// Starts the gateway with the given `access_log`, extra `server:` keys (one per entry),
    /// environment and `body` (the `upstreams:`/`routes:`/... sections, verbatim), and waits
    /// until it is ready.
    pub async fn start(
        access_log: &str,
        server_extra: &[&str],
        env: &[(&str, &str)],
        body: &str,
    ) -> LoggedGateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let access_log = access_log.replace("@DIR@", &d);
        let config: PathBuf = dir.path().join("tollgate.yaml");
        let (child, port, admin_port) = spawn_ready(
            &config,
            |port, admin| gateway_yaml(dir.path(), port, admin, &access_log, server_extra, body),
            |cmd| {
                cmd.current_dir(dir.path())
                    .env_remove("RUST_LOG")
                    .stdout(File::create(dir.path().join("stdout.log")).expect("stdout.log"))
                    .stderr(File::create(dir.path().join("stderr.log")).expect("stderr.log"));
                for (k, v) in env {
                    cmd.env(k, v);
                }
            },
        )
        .await;
        LoggedGateway {
            child: Some(child),
            dir,
            port,
            admin_port,
            client: client(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The gateway's tempdir (also its working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file in the gateway's tempdir.
    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// The contents of file `f` of the gateway's tempdir (empty if unreadable).
    pub fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.path(f)).unwrap_or_default()
    }

    /// The config and every `*.log*` file of the gateway's tempdir.
    pub fn logs(&self) -> String {
        let mut files: Vec<String> = std::fs::read_dir(self.dir.path())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".log") || n.contains(".log."))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let mut out = format!("--- tollgate.yaml ---\n{}", self.read("tollgate.yaml"));
        for f in files {
            out.push_str(&format!("\n--- {f} ---\n{}", self.read(&f)));
        }
        out
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        send(&self.client, method, &url, headers).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", path, headers).await
    }

    /// The access log line of `request_id` in file `f` of the gateway's dir (polled ≤ 5 s).
    pub async fn log_line(&self, f: &str, request_id: &str) -> Value {
        let path = self.path(f);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(v) = json_lines(&text)
                .into_iter()
                .find(|v| v["request_id"] == request_id)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no access log line with request_id {request_id:?} in {f} within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LoggedGateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Every complete line (the last, possibly partial, one is ignored) must be one JSON object.
pub fn json_lines(text: &str) -> Vec<Value> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l:?}"));
            assert!(v.is_object(), "access log line is not a JSON object: {l:?}");
            v
        })
        .collect()
}
