//! From a request head to a route (DESIGN.md steps 2-3): the path normalised under the path
//! policy of the route it leads to, the host and method matched, and the gateway's answer when
//! that fails (400, 404, or 405 with `Allow`).

use super::conditions::RequestView;
use super::path_policy;
use super::{request_host, router::host_only, Match, Router};
use crate::config::path_policy::{PathPolicyConfig, PathPolicyOverride};
use crate::reply::{GatewayError, Refusal};
use pingora::http::RequestHeader;

/// What a route contributes to deciding its own path: its `path_policy` override, and whether
/// it rewrites its prefix.
pub trait RouteFacts {
    fn path_policy(&self, route: usize) -> Option<PathPolicyOverride>;
    fn rewrites_prefix(&self, route: usize) -> bool;
}

/// The route and, when it differs from the path sent, the normalised path to forward (with
/// `;parameters` when they are kept; without them when the route rewrites its prefix, since
/// the prefix was matched against the path without them).
pub fn route_request(
    router: &Router,
    routes: &(impl RouteFacts + ?Sized),
    server: PathPolicyConfig,
    req: &RequestHeader,
) -> Result<(usize, Option<String>), Refusal> {
    route_as(
        router,
        routes,
        server,
        req,
        Some(req.method.as_str().as_bytes()),
    )
}

/// The route a CORS preflight speaks for: the one its `Access-Control-Request-Method` would
/// reach, else the one its path leads to whatever the method (so a preflight for a method the
/// route refuses is still answered, without `Access-Control-Allow-*`). `None` when neither
/// exists or the path is refused: the preflight is then routed as the `OPTIONS` it is.
pub fn route_preflight(
    router: &Router,
    routes: &(impl RouteFacts + ?Sized),
    server: PathPolicyConfig,
    req: &RequestHeader,
    method: &str,
) -> Option<(usize, Option<String>)> {
    route_as(router, routes, server, req, Some(method.as_bytes()))
        .or_else(|_| route_as(router, routes, server, req, None))
        .ok()
}

/// [`route_request`] for `method`, or for any method when `None`.
fn route_as(
    router: &Router,
    routes: &(impl RouteFacts + ?Sized),
    server: PathPolicyConfig,
    req: &RequestHeader,
    method: Option<&[u8]>,
) -> Result<(usize, Option<String>), Refusal> {
    let host = host_only(request_host(req));
    let view = RequestView {
        headers: Some(&req.headers),
        query: req.uri.query(),
    };
    let (path, found) = path_policy::resolve(
        req.uri.path(),
        |path| match method {
            Some(m) => router.lookup_request(host, path, m, &view),
            None => router.lookup_any_method(host, path, &view),
        },
        |route| server.with(route.and_then(|i| routes.path_policy(i)).as_ref()),
    )
    .map_err(|why| Refusal::with_message(GatewayError::BadRequest, why.to_string()))?;
    let route = match found {
        Match::Found(i) => i,
        Match::NotFound => return Err(Refusal::of(GatewayError::NotFound)),
        Match::MethodNotAllowed(allowed) => {
            return Err(
                Refusal::of(GatewayError::MethodNotAllowed).header("Allow", allowed.allow_header())
            )
        }
    };
    let normalized = if !path.changed() {
        None
    } else if routes.rewrites_prefix(route) {
        Some(path.route().to_owned())
    } else {
        Some(path.forward.into_owned())
    };
    Ok((route, normalized))
}

/// `308` to the same host and path-and-query on the TLS port (`server.redirect_https`).
pub fn https_redirect(req: &RequestHeader, port: u16) -> Refusal {
    let host = host_only(request_host(req));
    let authority = match port {
        443 => host.to_owned(),
        p => format!("{host}:{p}"),
    };
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    Refusal::of(GatewayError::HttpsRequired)
        .header("Location", format!("https://{authority}{target}"))
}
