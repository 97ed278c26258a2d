//! The addresses a pool sends to right now, each with what a request to it needs.
//!
//! A backend given by IP literal is one member for the pool's life. A backend given by
//! hostname contributes one member per address it currently resolves to (`upstream::dns`):
//! members come and go as the answers change, so everything keyed by address (server name,
//! `Host` header, in-flight count) lives here, in one table swapped atomically, rather than in
//! maps fixed when the pool was built.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One address in (or joining) rotation.
#[derive(Debug)]
pub struct Member {
    pub addr: SocketAddr,
    /// The configured host: the hostname of a backend given by name, else the IP. It is the
    /// default TLS server name.
    pub host: String,
    /// How it was configured (`api.internal:8080`, `10.0.0.5:8080`), for `/upstreams`.
    pub configured: String,
    /// Whether the address came from DNS (and may leave with the next answer).
    pub resolved: bool,
    pub weight: usize,
    /// The `Host` of requests to it when the client's is not preserved: the configured
    /// `host:port` of a named backend (what name-based virtual hosts expect), the address of
    /// a literal one.
    pub host_header: http::HeaderValue,
    /// Pingora pools idle upstream connections by peer hash, which includes this key: an
    /// address that left rotation and comes back later never reuses a connection from before.
    /// Literal backends keep 0 (never re-resolved, they share connections as before).
    pub group_key: u64,
    in_flight: AtomicUsize,
}

static NEXT_GROUP_KEY: AtomicU64 = AtomicU64::new(1);

impl Member {
    pub fn new(
        addr: SocketAddr,
        host: &str,
        configured: &str,
        resolved: bool,
        weight: usize,
    ) -> Member {
        let header_text = if resolved {
            configured.to_string()
        } else {
            addr.to_string()
        };
        Member {
            addr,
            host: host.to_string(),
            configured: configured.to_string(),
            resolved,
            weight,
            host_header: http::HeaderValue::from_str(&header_text)
                .unwrap_or(http::HeaderValue::from_static("localhost")),
            group_key: if resolved {
                NEXT_GROUP_KEY.fetch_add(1, Ordering::Relaxed)
            } else {
                0
            },
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Count a request to this member until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Requests to this member that have not finished yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request in flight to one member (see [`Member::enter`]).
#[derive(Debug)]
pub struct InFlight(Arc<Member>);

impl InFlight {
    pub fn member(&self) -> &Arc<Member> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The members of one pool by address.
#[derive(Default)]
pub struct MemberTable {
    by_addr: ArcSwap<HashMap<SocketAddr, Arc<Member>>>,
}

impl std::fmt::Debug for MemberTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_addr.load().keys()).finish()
    }
}

impl MemberTable {
    /// A table of literal backends: `(address, as configured)`.
    pub fn of_literals(backends: &[(SocketAddr, &str)]) -> MemberTable {
        let table = MemberTable::default();
        table.store(
            backends
                .iter()
                .map(|(addr, configured)| {
                    let host = addr.ip().to_string();
                    (
                        *addr,
                        Arc::new(Member::new(*addr, &host, configured, false, 1)),
                    )
                })
                .collect(),
        );
        table
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<Member>> {
        self.by_addr.load().get(addr).cloned()
    }

    pub fn snapshot(&self) -> Arc<HashMap<SocketAddr, Arc<Member>>> {
        self.by_addr.load_full()
    }

    pub fn store(&self, members: HashMap<SocketAddr, Arc<Member>>) {
        self.by_addr.store(Arc::new(members));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_members_carry_their_name_and_a_fresh_connection_group() {
        let addr: SocketAddr = "127.0.0.2:8080".parse().unwrap();
        let a = Member::new(addr, "api.internal", "api.internal:8080", true, 2);
        let b = Member::new(addr, "api.internal", "api.internal:8080", true, 2);
        assert_eq!(a.host_header, "api.internal:8080");
        assert_ne!(a.group_key, 0);
        assert_ne!(
            a.group_key, b.group_key,
            "a comeback never reuses old connections"
        );
        let lit = Member::new(addr, "127.0.0.2", "127.0.0.2:8080", false, 1);
        assert_eq!(lit.host_header, "127.0.0.2:8080");
        assert_eq!(lit.group_key, 0);
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let m = Arc::new(Member::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1",
            "127.0.0.1:1",
            false,
            1,
        ));
        let g1 = m.enter();
        let g2 = m.enter();
        assert_eq!(m.in_flight(), 2);
        drop(g1);
        assert_eq!(m.in_flight(), 1);
        drop(g2);
        assert_eq!(m.in_flight(), 0);
    }
}
