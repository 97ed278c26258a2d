//! Integration-test harness for the `tollgate` binary, one module per role:
//!
//! * [`backend`]: [`Backend`], a real HTTP/1.1 echo server (hyper 1) that can be killed and
//!   revived on the same port; the `upstreams:` YAML for backends.
//! * [`gateway`]: [`Gateway`], the real binary with a generated config, killed on drop;
//!   `tollgate check` / `tollgate run` with bounded waits ([`check`], [`run_once`], ...);
//!   signals and process helpers.
//! * [`logged`]: [`LoggedGateway`], a gateway with a chosen `access_log` and environment.
//! * [`client`]: [`Resp`], one response type for reqwest and the raw clients; the reqwest
//!   helpers ([`send`], ...).
//! * [`raw_http`]: clients that send literal bytes ([`RawConn`], [`raw_request`],
//!   [`raw_http::RawClient`], [`raw_http::WireConn`]).
//! * [`recorder`] and [`canned`]: raw upstreams: one that records every byte the gateway sends
//!   ([`recorder::Recorder`], and the relay [`recorder::Tap`]), one that serves scripted
//!   responses byte for byte ([`canned::Upstream`]).
//! * [`pki`]: a throwaway CA and the server/client certificates it signs (rcgen).
//! * [`metrics`]: the one reader of the admin `/metrics` exposition (a strict parser).
//! * [`tokens`]: JWTs (hand-built and signed with the keys in `tests/fixtures/`), API key digests.
//! * [`suites`]: fixtures shared by the test files of one suite (auth, observability, path
//!   confusion, response JSON).
//!
//! The paths of the former single-file harness (`common::Backend`, `common::Gateway`,
//! `common::raw_request`, ...) are re-exported here. Every wait in the harness is bounded.
#![allow(dead_code)]

pub mod backend;
pub mod canned;
pub mod client;
pub mod dns;
pub mod gateway;
pub mod logged;
pub mod metrics;
pub mod pki;
pub mod raw_http;
pub mod recorder;
pub mod suites;
pub mod tokens;

#[allow(unused_imports)]
pub use backend::{
    pool_config, upstream_yaml, Backend, BACKEND_SECRET_HEADER, DEFAULT_SLOW_DELAY, FAST_HEALTH,
};
#[allow(unused_imports)]
pub use client::{client, client_no_keepalive, send, send_body, Echo, Resp};
#[allow(unused_imports)]
pub use gateway::{
    assert_check_rejects_with, check, check_env, check_file, check_file_env, gateway_yaml,
    kill_and_reap, run_bounded, run_bounded_env, run_once, signal, upstream_counts, wait_or_kill,
    wait_until_ready, Gateway, Outcome,
};
#[allow(unused_imports)]
pub use logged::{json_lines, LoggedGateway};
#[allow(unused_imports)]
pub use raw_http::{raw_get, raw_request, RawConn};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A free TCP port on 127.0.0.1 that no other caller in this process has been given.
///
/// Ports come from a counter below the kernel's ephemeral range, not from `bind(:0)`: a port
/// learnt from `bind(:0)` and released goes back to the pool the kernel hands to every other
/// `bind(:0)` and outgoing `connect`, so a backend or client of a test running in parallel
/// could take it before the gateway binds it (CI saw a gateway retry "is in use" while the
/// test talked to someone else's listener). Below the ephemeral range only these calls hand
/// out ports; the counter never repeats one within a process, and each candidate is checked
/// free by binding it. The start is spread by process id for test binaries run side by side.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let (low, high) = below_ephemeral_range();
    let span = u32::from(high - low);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = low + u16::try_from(offset).expect("offset < span");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{low}..{high}");
}

/// `[low, high)`: up to 12,000 ports just under the start of
/// `/proc/sys/net/ipv4/ip_local_port_range` (Linux's default start is 32768).
fn below_ephemeral_range() -> (u16, u16) {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = start.max(2048);
    (high.saturating_sub(12_000).max(1024), high)
}

/// Two distinct free ports on 127.0.0.1: `(public, admin)`.
pub fn free_port_pair() -> (u16, u16) {
    (free_port(), free_port())
}
