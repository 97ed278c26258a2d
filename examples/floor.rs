//! The framework floor for `load-tests/compare.sh`: a bare Pingora `ProxyHttp` that only picks
//! the one upstream peer, built with tollgate's own Pingora version, features and allocator.
//! Whatever tollgate measures below this is the cost of its policies and glue; whatever this
//! measures below nginx is the framework's.
//!
//! `cargo run --release --example floor -- LISTEN UPSTREAM` (defaults 127.0.0.1:4905 and
//! 127.0.0.1:4900); one worker thread, like every proxy in the comparison. For experiments on
//! the framework's own settings: `FLOOR_READ_BUFFER` (downstream L4 read buffer, bytes),
//! `FLOOR_POOL` (upstream keep-alive pool size), `FLOOR_NO_STEAL=1` (current-thread runtime).

use async_trait::async_trait;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    // The heap page policy of tollgate's `main`, so the floor differs only in the proxy.
    tollgate::heap::keep_in_small_pages();
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:4905".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:4900".into());
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let mut conf = ServerConf {
        threads: 1,
        work_stealing: env("FLOOR_NO_STEAL") != Some(1),
        ..ServerConf::default()
    };
    if let Some(pool) = env("FLOOR_POOL") {
        conf.upstream_keepalive_pool_size = pool;
    }
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Floor { upstream });
    let mut endpoint = ListenerConfig::tcp(listen);
    if let Some(read) = env("FLOOR_READ_BUFFER") {
        endpoint = endpoint.l4_buffer(L4BufferSettings::default().read(read));
    }
    proxy.add_listener(endpoint);
    server.add_service(proxy);
    server.run_forever();
}
