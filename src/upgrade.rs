//! The binary upgrade as one signal: `SIGUSR2` makes the running gateway start its successor
//! itself (`tollgate run -d -u` with the same executable path and config file, after `check`),
//! and once the successor is up and waiting for the sockets, quit gracefully so that it takes
//! them over (Pingora's hand-off on `SIGQUIT`). Started from inside the running process, the
//! successor inherits its user, environment and, under systemd, its cgroup and sandbox:
//! `systemctl kill -s USR2 --kill-whom=main tollgate` upgrades a unit in place, like nginx's
//! `USR2`. A successor that fails `check` or does not come up leaves this process serving.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// How long the successor's `run -d -u` may take to say it is up (its first health round
/// included) before the upgrade is abandoned.
const SUCCESSOR_START: Duration = Duration::from_secs(60);

/// The `SIGUSR2` handler of `tollgate run`.
pub struct SelfUpgrade {
    /// The executable this process was started from (read at start: once replaced on disk,
    /// `/proc/self/exe` names the deleted file, and the path is what the successor runs).
    pub exe: PathBuf,
    /// The config file, absolute (a daemon runs from `/`).
    pub config: PathBuf,
}

impl SelfUpgrade {
    async fn tollgate(&self, args: &[&str]) -> Result<(), String> {
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(args)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let status = tokio::time::timeout(SUCCESSOR_START, cmd.status())
            .await
            .map_err(|_| format!("`tollgate {}` did not finish in time", args.join(" ")))?
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "`tollgate {}` exited with {status}",
                args.join(" ")
            ))
        }
    }

    async fn upgrade(&self) -> Result<(), String> {
        self.tollgate(&["check"]).await?;
        self.tollgate(&["run", "-d", "-u"]).await
    }
}

#[async_trait]
impl BackgroundService for SelfUpgrade {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr2 = match signal(SignalKind::user_defined2()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot watch SIGUSR2, the self-upgrade is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                got = usr2.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGUSR2: starting the successor from {}", self.exe.display());
                    match self.upgrade().await {
                        Ok(()) => {
                            tracing::info!("successor is up; handing the sockets over and draining");
                            if let Err(e) = signal_hook::low_level::raise(signal_hook::consts::SIGQUIT) {
                                tracing::error!("cannot quit for the hand-off: {e}");
                            }
                            return;
                        }
                        Err(e) => tracing::error!("upgrade abandoned, still serving: {e}"),
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
