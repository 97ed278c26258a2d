//! The path confusion suites' fixture (`tests/path_confusion.rs`, `tests/framing_identity.rs`):
//! a gateway routing `/public` (no auth), `/admin` (JWT HS256 from `secret_env`, `required:
//! always`) and a catch-all `/` (no auth), all to a [`Recorder`]; hand-built tokens for `/admin`;
//! and path cases ([`Case`]) that check both what the client got and what the backend received.

use std::time::Duration;

use crate::common::raw_http::exchange;
use crate::common::recorder::{Recorder, RECORDER_BODY};
use crate::common::tokens::{hs256_token, unix_now};
use crate::common::{LoggedGateway, Resp};

/// HS256 secret (≥ 32 bytes) handed to the gateway through [`SECRET_ENV`].
pub const SECRET: &str = "tollgate-path-confusion-hs256-secret-0123456789";
pub const SECRET_ENV: &str = "TOLLGATE_PATH_CONFUSION_SECRET";

/// How long to wait for stray bytes to reach the backend after the client got its answer.
pub const SETTLE: Duration = Duration::from_millis(250);
/// How long the gateway may take to close a connection after refusing a request on it.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// The recorder and a gateway in front of it.
pub struct Fx {
    pub rec: Recorder,
    pub gw: LoggedGateway,
}

/// The gateway config: `extra_routes` (YAML list items) come first, then `/public`, `/admin`
/// and the catch-all `/`.
pub fn config(rec: &Recorder, extra_routes: &str) -> String {
    format!(
        r#"upstreams:
  rec:
    backends: ["{addr}"]
    retries: 0

auth:
  jwt:
    main:
      algorithms: [HS256]
      secret_env: {SECRET_ENV}
      forward_claims: {{sub: X-User-Id, roles: X-User-Roles, scope: X-Scopes, tenant: X-Tenant}}

routes:
{extra_routes}  - name: public
    match: {{path_prefix: /public}}
    upstream: rec
  - name: admin
    match: {{path_prefix: /admin}}
    upstream: rec
    auth: {{jwt: main, required: always}}
  - name: other
    match: {{path_prefix: /}}
    upstream: rec
"#,
        addr = rec.addr()
    )
}

impl Fx {
    /// The default (strict) policy.
    pub async fn strict() -> Fx {
        Fx::start(&[], "").await
    }

    pub async fn start(server_extra: &[&str], extra_routes: &str) -> Fx {
        let rec = Recorder::start().await;
        let gw = LoggedGateway::start(
            "off",
            server_extra,
            &[(SECRET_ENV, SECRET)],
            &config(&rec, extra_routes),
        )
        .await;
        Fx { rec, gw }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

pub const PLAIN_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// alice: role admin, scope orders:read, tenant t-1, valid for 5 minutes.
pub fn claims() -> String {
    let n = unix_now();
    format!(
        r#"{{"sub":"alice","roles":["admin"],"scope":"orders:read","tenant":"t-1","iat":{n},"exp":{}}}"#,
        n + 300
    )
}

pub fn token_with_header(header: &str) -> String {
    hs256_token(SECRET, header, &claims())
}

pub fn token() -> String {
    token_with_header(PLAIN_HEADER)
}

// ---------------------------------------------------------------------------------------------
// Path cases
// ---------------------------------------------------------------------------------------------

/// What a path case must produce.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// 200 from the backend, which received exactly one request with this request-target.
    Pass(&'static str),
    /// 400 `bad_request`; the backend received nothing.
    Reject,
    /// 401 `unauthorized`; the backend received nothing.
    Unauth,
    /// 400 or 401 (the spec leaves which open); the backend received nothing.
    Refused,
    /// [`Expect::Refused`], or exactly [`Expect::Pass`] with this target (the spec leaves open
    /// which; either is safe).
    RefusedOrPass(&'static str),
}
pub use Expect::*;

pub struct Case {
    pub target: &'static str,
    pub token: bool,
    pub expect: Expect,
}

/// A case without a token.
pub fn c(target: &'static str, expect: Expect) -> Case {
    Case {
        target,
        token: false,
        expect,
    }
}

/// A case with a valid token for `/admin`.
pub fn t(target: &'static str, expect: Expect) -> Case {
    Case {
        target,
        token: true,
        expect,
    }
}

/// `GET <target>` byte for byte, `Connection: close`.
pub fn get_request(target: &str, token: Option<&str>, extra_headers: &str) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {target} HTTP/1.1\r\nHost: gw.test\r\n{auth}{extra_headers}Connection: close\r\n\r\n"
    )
}

/// The JSON `error` code of a gateway error response, if it is one.
pub fn error_code(r: &Resp) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    Some(v.get("error")?.as_str()?.to_string())
}

pub fn show(r: &Option<Resp>) -> String {
    match r {
        None => "no response (connection closed)".to_string(),
        Some(r) => r.to_string().replace('\n', "\n    "),
    }
}

/// Checks the client's answer for a gateway error `status`/`code` and that the backend received
/// nothing. `Err` describes the mismatch.
pub async fn expect_refused(
    fx: &Fx,
    resp: &Option<Resp>,
    allowed: &[(u16, &str)],
) -> Result<(), String> {
    tokio::time::sleep(SETTLE).await;
    let mut problems = Vec::new();
    match resp {
        Some(r)
            if allowed
                .iter()
                .any(|(s, code)| r.status == *s && error_code(r).as_deref() == Some(*code)) => {}
        _ => problems.push(format!("want one of {allowed:?} from the gateway")),
    }
    if fx.rec.byte_count() != 0 {
        problems.push("the backend received bytes".to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Checks a 200 from the backend, and that the backend got exactly one request, for `target`.
pub fn expect_pass(fx: &Fx, resp: &Option<Resp>, target: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    match resp {
        Some(r) if r.status == 200 && r.body == RECORDER_BODY.as_bytes() => {}
        _ => problems.push("want 200 from the backend".to_string()),
    }
    let reqs = fx.rec.requests();
    let targets: Vec<&str> = reqs.iter().map(|r| r.target.as_str()).collect();
    if targets != [target] {
        problems.push(format!(
            "the backend must receive exactly one request for {target:?}, got {targets:?}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Runs one case; `Err` describes what went wrong, with the evidence.
pub async fn run_case(fx: &Fx, case: &Case) -> Result<(), String> {
    fx.rec.clear();
    let tok = case.token.then(token);
    let req = get_request(case.target, tok.as_deref(), "");
    let resp = exchange(fx.gw.port, req.as_bytes()).await;
    let outcome = match case.expect {
        Pass(target) => expect_pass(fx, &resp, target),
        Reject => expect_refused(fx, &resp, &[(400, "bad_request")]).await,
        Unauth => expect_refused(fx, &resp, &[(401, "unauthorized")]).await,
        Refused => expect_refused(fx, &resp, &[(400, "bad_request"), (401, "unauthorized")]).await,
        RefusedOrPass(target) => match &resp {
            Some(r) if r.status == 200 => expect_pass(fx, &resp, target),
            _ => expect_refused(fx, &resp, &[(400, "bad_request"), (401, "unauthorized")]).await,
        },
    };
    outcome.map_err(|why| {
        format!(
            "GET {} ({}) expected {:?}: {why}\n  client got: {}\n{}",
            case.target,
            if case.token {
                "valid token"
            } else {
                "no token"
            },
            case.expect,
            show(&resp),
            fx.rec.dump()
        )
    })
}

/// Runs every case and fails with all mismatches.
pub async fn assert_cases(fx: &Fx, family: &str, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let r = run_case(fx, case).await;
        eprintln!(
            "PATH-CASE {family}: GET {} token={} -> {}",
            case.target,
            case.token,
            if r.is_ok() { "ok" } else { "FAILED" }
        );
        if let Err(e) = r {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{family}: {} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
