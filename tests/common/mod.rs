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

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local_addr").port()
}

/// Two distinct free ports on 127.0.0.1: `(public, admin)`.
pub fn free_port_pair() -> (u16, u16) {
    let port = free_port();
    let mut admin_port = free_port();
    for _ in 0..10 {
        if admin_port != port {
            break;
        }
        admin_port = free_port();
    }
    assert_ne!(port, admin_port, "could not find two distinct free ports");
    (port, admin_port)
}
