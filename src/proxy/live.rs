//! [`Live`] as Pingora's `ProxyHttp` ([`LiveProxy`]): each phase runs [`Gateway`]'s implementation of it on the
//! generation the request started with (see `runtime::live`). Nothing else happens here.

use super::Ctx;
use crate::runtime::live::{Generation, Live};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::Error;
use std::sync::Arc;
use std::time::Duration;

/// The `ProxyHttp` Pingora serves: the swappable generations of [`Live`].
pub struct LiveProxy(pub Arc<Live>);

/// A request's generation and its per-request state.
///
/// The state is boxed because Pingora keeps room for its `CTX` inline, several times over, in
/// the per-request future it copies into a box for every request and keeps alive while a
/// keep-alive connection waits: inline, `Ctx` made that future 1.8 KB larger (1.8 MiB at 1,000
/// idle connections, and ~2k instructions of `memcpy` per request); boxed, it is one
/// allocation while a request is served.
pub struct LiveCtx {
    generation: Arc<Generation>,
    inner: Box<Ctx>,
}

#[async_trait]
impl ProxyHttp for LiveProxy {
    type CTX = LiveCtx;

    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        self.0.current().gateway.init_downstream_modules(modules)
    }

    fn new_ctx(&self) -> LiveCtx {
        let generation = self.0.current();
        let inner = Box::new(generation.gateway.new_ctx());
        LiveCtx { generation, inner }
    }

    async fn request_filter(&self, s: &mut Session, ctx: &mut LiveCtx) -> pingora::Result<bool> {
        let LiveCtx { generation, inner } = ctx;
        generation.gateway.request_filter(s, inner).await
    }

    async fn request_body_filter(
        &self,
        s: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut LiveCtx,
    ) -> pingora::Result<()> {
        let LiveCtx { generation, inner } = ctx;
        let gateway = &generation.gateway;
        gateway
            .request_body_filter(s, body, end_of_stream, inner)
            .await
    }

    async fn upstream_peer(
        &self,
        s: &mut Session,
        ctx: &mut LiveCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let LiveCtx { generation, inner } = ctx;
        generation.gateway.upstream_peer(s, inner).await
    }

    fn fail_to_connect(
        &self,
        s: &mut Session,
        peer: &HttpPeer,
        ctx: &mut LiveCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        let LiveCtx { generation, inner } = ctx;
        generation.gateway.fail_to_connect(s, peer, inner, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        s: &mut Session,
        e: Box<Error>,
        ctx: &mut LiveCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let LiveCtx { generation, inner } = ctx;
        generation
            .gateway
            .error_while_proxy(peer, s, e, inner, client_reused)
    }

    async fn upstream_request_filter(
        &self,
        s: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut LiveCtx,
    ) -> pingora::Result<()> {
        let LiveCtx { generation, inner } = ctx;
        let gateway = &generation.gateway;
        gateway.upstream_request_filter(s, upstream, inner).await
    }

    async fn upstream_response_filter(
        &self,
        s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut LiveCtx,
    ) -> pingora::Result<()> {
        let LiveCtx { generation, inner } = ctx;
        let gateway = &generation.gateway;
        gateway.upstream_response_filter(s, resp, inner).await
    }

    fn response_body_filter(
        &self,
        s: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut LiveCtx,
    ) -> pingora::Result<Option<Duration>> {
        let LiveCtx { generation, inner } = ctx;
        let gateway = &generation.gateway;
        gateway.response_body_filter(s, body, end_of_stream, inner)
    }

    async fn response_filter(
        &self,
        s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut LiveCtx,
    ) -> pingora::Result<()> {
        let LiveCtx { generation, inner } = ctx;
        generation.gateway.response_filter(s, resp, inner).await
    }

    async fn fail_to_proxy(&self, s: &mut Session, e: &Error, ctx: &mut LiveCtx) -> FailToProxy {
        let LiveCtx { generation, inner } = ctx;
        generation.gateway.fail_to_proxy(s, e, inner).await
    }

    fn suppress_error_log(&self, s: &Session, ctx: &LiveCtx, error: &Error) -> bool {
        ctx.generation
            .gateway
            .suppress_error_log(s, &ctx.inner, error)
    }

    async fn logging(&self, s: &mut Session, e: Option<&Error>, ctx: &mut LiveCtx) {
        let LiveCtx { generation, inner } = ctx;
        generation.gateway.logging(s, e, inner).await
    }
}
