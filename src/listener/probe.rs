//! "The public listener accepts connections" as a service dependency.
//!
//! Pingora marks a listening service ready before it has bound its sockets, so the admin
//! listener (and with it `/ready`) could come up a moment before the public port accepts, and a
//! deploy script or test that trusts `/ready` would see its first requests refused. This
//! background service connects to every public address until each accepts, and only then
//! reports ready; the admin service depends on it.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;

pub struct ListenerProbe {
    targets: Vec<SocketAddr>,
}

/// Where to connect to reach a listener bound to `addr` from this host.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

impl ListenerProbe {
    /// Addresses that do not parse were refused by `check` already; they are skipped here.
    pub fn new(listen: &[String]) -> ListenerProbe {
        ListenerProbe {
            targets: listen
                .iter()
                .filter_map(|a| a.parse().ok())
                .map(reachable)
                .collect(),
        }
    }
}

/// Bound on the wait: a listener that never accepts (a firewall rule on loopback, say) must not
/// keep the admin endpoints down for ever; it is logged instead.
const PROBE_FOR: Duration = Duration::from_secs(10);

#[async_trait]
impl BackgroundService for ListenerProbe {
    async fn start_with_ready_notifier(
        &self,
        _shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let deadline = tokio::time::Instant::now() + PROBE_FOR;
        for target in &self.targets {
            loop {
                let attempt =
                    tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(target));
                if let Ok(Ok(_)) = attempt.await {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!("public listener {target} did not accept within {PROBE_FOR:?}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        ready.notify_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_probed_on_loopback() {
        let p = ListenerProbe::new(&[
            "0.0.0.0:8080".into(),
            "[::]:8081".into(),
            "10.1.2.3:80".into(),
            "not an address".into(),
        ]);
        assert_eq!(
            p.targets,
            vec![
                "127.0.0.1:8080".parse().unwrap(),
                "[::1]:8081".parse().unwrap(),
                "10.1.2.3:80".parse().unwrap(),
            ]
        );
    }
}
