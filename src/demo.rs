//! `tollgate demo`: the gateway plus built-in backends on loopback, so a newcomer sees
//! routing, round robin, health checks and header handling without writing a service.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use pingora::services::ServiceWithDependents;

/// The embedded config; also shipped as `conf/demo.yaml`.
pub const CONFIG: &str = include_str!("../conf/demo.yaml");

/// (service, instance, address) of every demo backend.
const BACKENDS: &[(&str, &str, &str)] = &[
    ("orders", "orders-1", "127.0.0.1:4101"),
    ("orders", "orders-2", "127.0.0.1:4102"),
    ("payments", "payments-1", "127.0.0.1:4201"),
    ("payments", "payments-2", "127.0.0.1:4202"),
    ("users", "users-1", "127.0.0.1:4301"),
    ("users", "users-2", "127.0.0.1:4302"),
];

/// A toy service answering JSON that, like real ones, carries an internal field
/// (`internal_cost`) a gateway should keep from clients.
pub struct DemoBackend {
    service: &'static str,
    instance: &'static str,
}

#[async_trait]
impl ServeHttp for DemoBackend {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        if path == "/health" {
            return json(200, b"{\"status\":\"ok\"}".to_vec());
        }
        let body = serde_json::json!({
            "service": self.service,
            "instance": self.instance,
            "method": req.method.as_str(),
            "path": req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            "user_id": req.headers.get("x-user-id").and_then(|v| v.to_str().ok()),
            "consumer": req.headers.get("x-consumer").and_then(|v| v.to_str().ok()),
            "request_id": req.headers.get("x-request-id").and_then(|v| v.to_str().ok()),
            "data": {"id": 7, "status": "shipped", "total": 42.5,
                     "items": [{"sku": "A-1", "qty": 2, "supplier_id": "sup-93"},
                               {"sku": "B-7", "qty": 1, "supplier_id": "sup-12"}]},
            "internal_cost": 31.2,
        });
        json(200, serde_json::to_vec(&body).unwrap_or_default())
    }
}

fn json(status: u16, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .header("Content-Length", body.len())
        .header("Server", "demo-backend")
        .header("X-Powered-By", "tollgate-demo")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// One listening service per demo backend instance.
pub fn services() -> Vec<Box<dyn ServiceWithDependents>> {
    BACKENDS
        .iter()
        .map(|(service, instance, addr)| {
            let mut svc = Service::new(
                format!("demo backend {instance}"),
                DemoBackend { service, instance },
            );
            svc.threads = Some(1);
            svc.add_tcp(addr);
            Box::new(svc) as Box<dyn ServiceWithDependents>
        })
        .collect()
}

/// The demo's HS256 secret, shipped beside the config as `conf/demo-jwt-secret.txt`. It is a
/// published demo secret: it protects loopback toys, nothing else.
pub const SECRET: &str = include_str!("../conf/demo-jwt-secret.txt");
/// The demo partner's API key; conf/demo.yaml holds only its SHA-256.
pub const PARTNER_KEY: &str = "demo-partner-key";

/// Where the demo serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN).
pub const TLS_LISTEN: &str = "127.0.0.1:8443";

/// Load the embedded config, with its secret file written to a private directory, plus an
/// HTTPS listener on [`TLS_LISTEN`] serving a throwaway self-signed certificate made now.
pub fn load_config() -> Result<(crate::config::Config, std::path::PathBuf), String> {
    let dir = std::env::temp_dir().join(format!("tollgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(dir.join("demo-jwt-secret.txt"), SECRET)
        .map_err(|e| format!("cannot write the demo secret: {e}"))?;
    let mut config = crate::config::Config::load_str_in(CONFIG, &dir).map_err(|p| {
        p.0.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    config.server.tls = Some(throwaway_certificate(&dir)?);
    config.server.tls_listen = vec![TLS_LISTEN.to_string()];
    Ok((config, dir))
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, valid for 30 days from now,
/// written beside the demo secret; the TLS settings serve it as the default certificate.
fn throwaway_certificate(dir: &std::path::Path) -> Result<crate::config::tls::TlsConfig, String> {
    let fail = |e: rcgen::Error| format!("cannot make the demo certificate: {e}");
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut params = rcgen::CertificateParams::new(names).map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tollgate demo");
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(30 * 24 * 3600)).into();
    let key_pair = rcgen::KeyPair::generate().map_err(fail)?;
    let issued = params.self_signed(&key_pair).map_err(fail)?;
    let (cert, key) = (dir.join("demo-cert.pem"), dir.join("demo-key.pem"));
    std::fs::write(&cert, issued.pem())
        .and_then(|_| std::fs::write(&key, key_pair.serialize_pem()))
        .map_err(|e| format!("cannot write the demo certificate: {e}"))?;
    let yaml = format!(
        "certificates: [{{cert_file: {:?}, key_file: {:?}, default: true}}]",
        cert.display().to_string(),
        key.display().to_string()
    );
    serde_yaml::from_str(&yaml).map_err(|e| format!("demo TLS settings: {e}"))
}

fn demo_token(sub: &str, roles: &[&str]) -> String {
    let secret = SECRET.trim();
    let claims = crate::auth::mint::DevClaims {
        sub: sub.to_string(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        scope: Some("orders:read orders:write".to_string()),
        issuer: Some("tollgate-demo".to_string()),
        audience: Some("demo".to_string()),
        ttl_secs: 3600,
    };
    crate::auth::mint::mint_hmac(secret.as_bytes(), jsonwebtoken::Algorithm::HS256, &claims)
        .unwrap_or_else(|e| format!("<could not mint: {e}>"))
}

/// What to paste into a second terminal.
pub fn banner(listen: &str, admin: &str) -> String {
    let https = TLS_LISTEN.replace("127.0.0.1", "localhost");
    let good = demo_token("alice", &["payments", "orders-writer"]);
    let weak = demo_token("bob", &["viewer"]);
    let key = PARTNER_KEY;
    format!(
        r#"tollgate demo: gateway on http://{listen} (HTTP/1.1 and h2c) and https://{https} (HTTP/1.1 and h2), admin on http://{admin}
backends: orders 127.0.0.1:4101/4102, payments 127.0.0.1:4201/4202 (weight 2 on the second), users 127.0.0.1:4301/4302

Try (watch "instance" alternate: round robin over health-checked pools):
  curl -s http://{listen}/orders/7
  curl -s http://{listen}/orders/7
  curl -si -X DELETE http://{listen}/orders/7          # 405 + Allow
  curl -s http://{listen}/users/me                      # rewrite_prefix: backend sees /v1/users/me
  curl -s http://127.0.0.1:4101/orders/7               # a backend directly: internal_cost, supplier_id...
  curl -s http://{listen}/orders/7                      # ...stripped by the gateway (response_json)
  curl -sk --http2 https://{https}/orders/7            # HTTPS + HTTP/2 (throwaway self-signed certificate)
  curl -s --http2-prior-knowledge http://{listen}/orders/7   # h2c on the cleartext port

Rate limit (/users: 5 requests per 10 s per client IP; watch 200s turn into 429s):
  for i in $(seq 8); do curl -s -o /dev/null -w '%{{http_code}} ' http://{listen}/users/me; done; echo
  curl -si http://{listen}/users/me | grep -iE '^HTTP|retry-after|x-ratelimit'
  curl -s http://{listen}/nope                          # 404 JSON error
  curl -si 'http://{listen}/orders/%2e%2e/%2e%2e/etc'   # 400: climbs above /
  curl -s -H 'X-User-Id: admin' http://{listen}/orders/1   # spoofed identity is stripped

Auth (HS256 dev tokens, valid 1h; /payments always needs a token with role "payments",
writes to /orders need role "orders-writer" or the partner API key):
  GOOD={good}
  WEAK={weak}
  curl -si http://{listen}/payments/1 | head -1                                   # 401 + WWW-Authenticate
  curl -s -H "Authorization: Bearer $GOOD" http://{listen}/payments/42            # 200: user_id alice, path /42 (strip_prefix)
  curl -si -H "Authorization: Bearer $WEAK" http://{listen}/payments/42 | head -1  # 403: missing role
  curl -si -X POST http://{listen}/orders -d '{{}}' | head -1                       # 401: writes need credentials
  curl -s -X POST -H 'X-API-Key: {key}' http://{listen}/orders -d '{{}}'            # 200 as consumer acme
  curl -s http://{admin}/ready
  curl -s http://{admin}/metrics | grep -E '^tollgate_(http_requests_total|rate_limited|auth_failures)'
Ctrl-C stops everything.
"#
    )
}
