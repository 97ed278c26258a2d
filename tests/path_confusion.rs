//! Path confusion, identity-header spellings, framing and JWT `crit` against the real gateway
//! binary (issue 14; DESIGN.md "Request path" step 2 and 4, "Path policy", "Error responses").
//!
//! Written from the spec, as an attacker would: every case sends literal bytes on a fresh
//! connection and asserts BOTH what the client got (status, and for gateway errors the JSON
//! code) AND what the backend received, byte for byte, through a [`Recorder`]: the exact
//! request-target, the header lines, the body framing, or nothing at all.
//!
//! The gateway under test routes `/public` (no auth), `/admin` (JWT HS256 from `secret_env`,
//! `required: always`) and a catch-all `/` (no auth), all to the recorder. The goal of most
//! cases is to reach the backend with an `/admin` path, or a path it would read as `/admin`,
//! without a token; the rest prove that what legitimately passes arrives exactly as judged.
//!
//! Each family test runs all its cases and reports every mismatch at once.

mod common;

use std::time::Duration;

use common::recorder::*;
use common::*;

/// HS256 secret (≥ 32 bytes) handed to the gateway through [`SECRET_ENV`].
const SECRET: &str = "tollgate-path-confusion-hs256-secret-0123456789";
const SECRET_ENV: &str = "TOLLGATE_PATH_CONFUSION_SECRET";

/// How long to wait for stray bytes to reach the backend after the client got its answer.
const SETTLE: Duration = Duration::from_millis(250);
/// How long the gateway may take to close a connection after refusing a request on it.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

struct Fx {
    rec: Recorder,
    gw: LoggedGateway,
}

/// The gateway config: `extra_routes` (YAML list items) come first, then `/public`, `/admin`
/// and the catch-all `/`.
fn config(rec: &Recorder, extra_routes: &str) -> String {
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
    async fn strict() -> Fx {
        Fx::start(&[], "").await
    }

    async fn start(server_extra: &[&str], extra_routes: &str) -> Fx {
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

/// Server-wide `keep` for all three, and a `/strict` route that rejects all three again.
async fn keep_fx() -> Fx {
    Fx::start(
        &["path_policy: {escaped_slashes: keep, backslash: keep, path_parameters: keep}"],
        "  - name: strict
    match: {path_prefix: /strict}
    upstream: rec
    path_policy: {escaped_slashes: reject, backslash: reject, path_parameters: reject}
",
    )
    .await
}

/// Server-wide `escaped_slashes: decode` (backslash and parameters stay `reject`), and an
/// `/objects` route with `escaped_slashes: keep, path_parameters: keep`.
async fn decode_fx() -> Fx {
    Fx::start(
        &["path_policy: {escaped_slashes: decode}"],
        "  - name: objects
    match: {path_prefix: /objects}
    upstream: rec
    path_policy: {escaped_slashes: keep, path_parameters: keep}
",
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

const PLAIN_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// alice: role admin, scope orders:read, tenant t-1, valid for 5 minutes.
fn claims() -> String {
    let n = unix_now();
    format!(
        r#"{{"sub":"alice","roles":["admin"],"scope":"orders:read","tenant":"t-1","iat":{n},"exp":{}}}"#,
        n + 300
    )
}

fn token_with_header(header: &str) -> String {
    hs256_token(SECRET, header, &claims())
}

fn token() -> String {
    token_with_header(PLAIN_HEADER)
}

// ---------------------------------------------------------------------------------------------
// Path cases
// ---------------------------------------------------------------------------------------------

/// What a path case must produce.
#[derive(Debug, Clone, Copy)]
enum Expect {
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
use Expect::*;

struct Case {
    target: &'static str,
    token: bool,
    expect: Expect,
}

/// A case without a token.
fn c(target: &'static str, expect: Expect) -> Case {
    Case {
        target,
        token: false,
        expect,
    }
}

/// A case with a valid token for `/admin`.
fn t(target: &'static str, expect: Expect) -> Case {
    Case {
        target,
        token: true,
        expect,
    }
}

/// `GET <target>` byte for byte, `Connection: close`.
fn get_request(target: &str, token: Option<&str>, extra_headers: &str) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {target} HTTP/1.1\r\nHost: gw.test\r\n{auth}{extra_headers}Connection: close\r\n\r\n"
    )
}

/// The JSON `error` code of a gateway error response, if it is one.
fn error_code(r: &Resp) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    Some(v.get("error")?.as_str()?.to_string())
}

fn show(r: &Option<Resp>) -> String {
    match r {
        None => "no response (connection closed)".to_string(),
        Some(r) => r.to_string().replace('\n', "\n    "),
    }
}

/// Checks the client's answer for a gateway error `status`/`code` and that the backend received
/// nothing. `Err` describes the mismatch.
async fn expect_refused(
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
fn expect_pass(fx: &Fx, resp: &Option<Resp>, target: &str) -> Result<(), String> {
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
async fn run_case(fx: &Fx, case: &Case) -> Result<(), String> {
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
async fn assert_cases(fx: &Fx, family: &str, cases: &[Case]) {
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

// ---------------------------------------------------------------------------------------------
// Default (strict) policy: paths
// ---------------------------------------------------------------------------------------------

/// The plain requests the attacks are measured against must work, or nothing below means much.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plain_paths_and_a_valid_token_pass() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "control",
        &[
            c("/public/x", Pass("/public/x")),
            c("/", Pass("/")),
            c("/other/x", Pass("/other/x")),
            c("/public/a-b_c.d~e", Pass("/public/a-b_c.d~e")),
            // Unreserved escapes are decoded (already the case before issue 14).
            c("/public/%41%7e", Pass("/public/A~")),
            c("/admin/x", Unauth),
            c("/admin", Unauth),
            t("/admin/x", Pass("/admin/x")),
        ],
    )
    .await;
}

/// `%2F`, `%2f`, `%5C`, `%5c` anywhere in the path: 400 by default, before auth, and nothing
/// reaches the backend (a backend that decodes them would see other segments than the router).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_are_rejected_by_default() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "escaped_slashes default",
        &[
            c("/public/..%2fadmin/x", Reject),
            c("/public/..%2Fadmin/x", Reject),
            c("/public%2f..%2fadmin/x", Reject),
            c("/public/a%2fb", Reject),
            c("/public/a%2Fb", Reject),
            c("/%2fadmin/x", Reject),
            c("/admin%2fx", Reject),
            c("/public/%2e%2e%2fadmin/x", Reject),
            c("/public/..%5cadmin/x", Reject),
            c("/public/..%5Cadmin/x", Reject),
            c("/public/a%5cb", Reject),
            c("/admin%5Cx", Reject),
            c("/public/x%2F", Reject),
            // The policy comes before auth: a token does not make an encoded slash acceptable.
            t("/admin/a%2Fb", Reject),
            t("/admin/a%5cb", Reject),
        ],
    )
    .await;
}

/// A raw `\` byte (IIS, some Windows-hosted and Java stacks read it as `/`): 400 by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_backslash_is_rejected_by_default() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "backslash default",
        &[
            c(r"/public\..\admin\x", Reject),
            c(r"/public/..\admin/x", Reject),
            c(r"/\admin/x", Reject),
            c(r"/admin\x", Reject),
            c(r"/public/a\b", Reject),
            c(r"/public/%2e%2e\admin", Reject),
            c(r"/public/x\", Reject),
            t(r"/admin/a\b", Reject),
        ],
    )
    .await;
}

/// `;` path parameters (Tomcat/Jetty/Spring strip them, so `/..;/` is `..` there): 400 by
/// default, whatever the segment and with or without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_are_rejected_by_default() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "path_parameters default",
        &[
            c("/admin;x=1/secret", Reject),
            c("/admin;/secret", Reject),
            c("/public/..;/admin/x", Reject),
            c("/public/..;x=1/admin/x", Reject),
            c("/public/%2e%2e;/admin/x", Reject),
            c("/public/.;x/y", Reject),
            c("/public;x=1/y", Reject),
            c("/public/y;", Reject),
            c("/public/y;v=1", Reject),
            t("/admin;x=1/secret", Reject),
        ],
    )
    .await;
}

/// `%2e`, `%2E`, `.%2e`, `%2e.`, mixed case: dot segments, resolved before routing, so
/// `/public/<disguised ..>/admin/x` is judged by `/admin` (401 without a token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segment_disguises_are_resolved_before_routing() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "dot disguises",
        &[
            c("/public/../admin/x", Unauth),
            c("/public/%2e%2e/admin/x", Unauth),
            c("/public/%2E%2E/admin/x", Unauth),
            c("/public/%2E%2e/admin/x", Unauth),
            c("/public/%2e%2E/admin/x", Unauth),
            c("/public/.%2e/admin/x", Unauth),
            c("/public/.%2E/admin/x", Unauth),
            c("/public/%2e./admin/x", Unauth),
            c("/public/%2E./admin/x", Unauth),
            c("/public/./%2e%2e/admin/x", Unauth),
            c("/public/%2e/../admin/x", Unauth),
            c("/public/a/b/%2e%2e/%2e%2e/%2e%2e/admin/x", Unauth),
            c("/public/%2e%2e/admin", Unauth),
            // Resolved the other way round: nothing to protect, but the backend must get the
            // resolved path it was judged by.
            c("/public/%2e/x", Pass("/public/x")),
            c("/public/x/%2e%2e/y", Pass("/public/y")),
            c("/admin/%2e%2e/public/x", Pass("/public/x")),
            c("/admin/x/%2E%2E/%2e%2e/public/y", Pass("/public/y")),
            c("/public/%2e%2e", Pass("/")),
        ],
    )
    .await;
}

/// With a token, a disguised climb into `/admin` reaches the backend as the resolved
/// `/admin/x`: never with the disguise left in for the backend to resolve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segment_disguises_with_a_token_forward_the_resolved_path() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "dot disguises with token",
        &[
            t("/public/%2e%2e/admin/x", Pass("/admin/x")),
            t("/public/.%2e/admin/x", Pass("/admin/x")),
            t("/public/%2E./admin/x", Pass("/admin/x")),
            t("/public/%2E%2e/admin/x/%2e", Pass("/admin/x/")),
        ],
    )
    .await;
}

/// A path that climbs above `/`, in any disguise, is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn climbing_above_root_in_any_disguise_is_400() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "above root",
        &[
            c("/..", Reject),
            c("/../admin/x", Reject),
            c("/%2e%2e/admin/x", Reject),
            c("/%2E%2E/admin/x", Reject),
            c("/.%2e/admin/x", Reject),
            c("/%2e./admin/x", Reject),
            c("/public/../../admin/x", Reject),
            c("/public/%2e%2e/%2e%2e/admin/x", Reject),
            t("/%2e%2e/admin/x", Reject),
        ],
    )
    .await;
}

/// `%252e` (double encoding) and `%c0%ae` (overlong UTF-8 for `.`, and `%c0%af` for `/`) are
/// never decoded into dots or slashes: forwarded still encoded (`%C0%AE` canonical), routed as
/// an ordinary segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_encoding_and_overlong_utf8_are_never_dots() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "double/overlong",
        &[
            c(
                "/public/%252e%252e/admin/x",
                Pass("/public/%252e%252e/admin/x"),
            ),
            c(
                "/public/%252E%252E/admin/x",
                Pass("/public/%252E%252E/admin/x"),
            ),
            c("/public/..%252fadmin/x", Pass("/public/..%252fadmin/x")),
            c("/public/..%255cadmin/x", Pass("/public/..%255cadmin/x")),
            c(
                "/public/%c0%ae%c0%ae/admin/x",
                Pass("/public/%C0%AE%C0%AE/admin/x"),
            ),
            c(
                "/public/%C0%AE%C0%AE/admin/x",
                Pass("/public/%C0%AE%C0%AE/admin/x"),
            ),
            c("/public/..%c0%afadmin/x", Pass("/public/..%C0%AFadmin/x")),
            c(
                "/public/%e0%80%ae%e0%80%ae/admin/x",
                Pass("/public/%E0%80%AE%E0%80%AE/admin/x"),
            ),
            c("/%252e%252e/admin/x", Pass("/%252e%252e/admin/x")),
            c("/%c0%ae%c0%ae/admin/x", Pass("/%C0%AE%C0%AE/admin/x")),
            // ... and cannot climb out of /admin either.
            c("/admin/%252e%252e/public/x", Unauth),
            c("/admin/%c0%ae%c0%ae/public/x", Unauth),
        ],
    )
    .await;
}

/// `//` is collapsed before routing (nginx merges slashes too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_segments_are_collapsed_before_routing() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "double slash",
        &[
            c("//admin/x", Unauth),
            c("///admin///x", Unauth),
            c("/public//../admin/x", Unauth),
            c("/public/..//admin/x", Unauth),
            c("/public//x", Pass("/public/x")),
            c("//public//x", Pass("/public/x")),
            t("//admin//x", Pass("/admin/x")),
        ],
    )
    .await;
}

/// Paths are case-sensitive: `/ADMIN` is not `/admin`, so it goes to the catch-all, and the
/// backend must then get exactly `/ADMIN/x` (never a folded `/admin/x`). Percent-encoded
/// letters are unreserved and decoded, so `/%61dmin` is `/admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_case_is_never_folded() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "case",
        &[
            c("/ADMIN/x", Pass("/ADMIN/x")),
            c("/Admin/x", Pass("/Admin/x")),
            c("/PUBLIC/x", Pass("/PUBLIC/x")),
            c("/%41dmin/x", Pass("/Admin/x")),
            c("/%61dmin/x", Unauth),
            c("/%61%64%6D%69%6E/x", Unauth),
            c("/%61%64%6d%69%6e", Unauth),
            c("/public/%2e%2e/%61dmin/x", Unauth),
        ],
    )
    .await;
}

/// The query string is not part of the path policy: forwarded as received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_string_is_not_subject_to_the_path_policy() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "query",
        &[
            c(
                "/public/x?next=..%2f..%2fadmin&q=a%5cb",
                Pass("/public/x?next=..%2f..%2fadmin&q=a%5cb"),
            ),
            c("/public/x?a=1;b=2", Pass("/public/x?a=1;b=2")),
            c("/public/x?p=%2e%2e/admin", Pass("/public/x?p=%2e%2e/admin")),
            c("/public/x?p=%252e", Pass("/public/x?p=%252e")),
            c("/admin/x?/public", Unauth),
            c("/admin/x?..%2f..%2fpublic", Unauth),
        ],
    )
    .await;
}

/// Not in the spec, but the same attack: a `#fragment` in the request-target (invalid there,
/// yet nginx drops it, so `/admin#x` is nginx's `/admin`) and absolute-form targets. Whatever
/// the gateway makes of them, they must not reach the backend as an unauthenticated
/// `/admin`, and a fragment must never be forwarded for the backend to resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_and_absolute_form_cannot_reach_admin() {
    let fx = Fx::strict().await;
    assert_cases(
        &fx,
        "fragment/absolute-form",
        &[
            c("/admin#x", Refused),
            c("/admin#/x", Refused),
            c("/public/x#/../../admin/x", RefusedOrPass("/public/x")),
            c("http://gw.test/admin/x", Refused),
            c("http://gw.test/public/%2e%2e/admin/x", Refused),
            c("http://gw.test/public/..%2fadmin/x", Refused),
            c("http://gw.test//admin/x", Refused),
            c("http://gw.test/public/..;/admin/x", Refused),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Relaxed policies
// ---------------------------------------------------------------------------------------------

/// `escaped_slashes: keep`: forwarded in canonical upper-case hex, and a segment holding `%2F`
/// is ONE segment for routing (so `/admin%2Fx` is not under `/admin`, and `..%2Fadmin` is not a
/// dot segment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_policy_forwards_escaped_slashes_as_one_segment() {
    let fx = keep_fx().await;
    assert_cases(
        &fx,
        "escaped_slashes keep",
        &[
            c("/public/a%2fb", Pass("/public/a%2Fb")),
            c("/public/a%2Fb", Pass("/public/a%2Fb")),
            c("/public/..%2fadmin/x", Pass("/public/..%2Fadmin/x")),
            c("/public/a%5cb", Pass("/public/a%5Cb")),
            c("/public/a%5Cb", Pass("/public/a%5Cb")),
            c("/admin%2fx", Pass("/admin%2Fx")),
            c("/admin%2Fx/y", Pass("/admin%2Fx/y")),
            c("/public%2F..%2F..%2Fx", Pass("/public%2F..%2F..%2Fx")),
            c("/admin/a%2Fb", Unauth),
            t("/admin/a%2fb", Pass("/admin/a%2Fb")),
            // Dot disguises are still resolved around it.
            c("/public/%2e%2e/admin/a%2Fb", Unauth),
        ],
    )
    .await;
}

/// `backslash: keep`: a raw `\` is forwarded as is, and is not a segment separator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_policy_forwards_raw_backslash() {
    let fx = keep_fx().await;
    assert_cases(
        &fx,
        "backslash keep",
        &[
            c(r"/public/a\b", Pass(r"/public/a\b")),
            c(r"/public\..\admin\x", Pass(r"/public\..\admin\x")),
            c(r"/admin\x", Pass(r"/admin\x")),
            c(r"/public/..\..\x", Pass(r"/public/..\..\x")),
            c(r"/admin/a\b", Unauth),
            t(r"/admin/a\b", Pass(r"/admin/a\b")),
        ],
    )
    .await;
}

/// `path_parameters: keep`: routed as if each segment's `;params` were removed, forwarded with
/// them; `..;x` and `.;x` are dot segments (resolved, parameters dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_policy_routes_without_path_parameters_and_forwards_them() {
    let fx = keep_fx().await;
    assert_cases(
        &fx,
        "path_parameters keep",
        &[
            c("/admin;x=1/secret", Unauth),
            c("/admin;/secret", Unauth),
            t("/admin;x=1/secret", Pass("/admin;x=1/secret")),
            c("/public/..;/admin/x", Unauth),
            c("/public/..;x=1/admin/x", Unauth),
            c("/public/%2e%2e;x/admin/x", Unauth),
            c("/public/.%2e;x/admin/x", Unauth),
            t("/public/..;/admin/x", Pass("/admin/x")),
            c("/public/.;x/y", Pass("/public/y")),
            c("/public;v=1/y", Pass("/public;v=1/y")),
            c("/public/y;v=1", Pass("/public/y;v=1")),
            c("/..;/admin/x", Reject),
            // `;x` alone leaves an empty segment for routing; however that is judged, it must
            // not reach /admin without a token.
            c("/;x/admin/x", Refused),
        ],
    )
    .await;
}

/// A route's `path_policy` overrides the server's: `/strict` rejects what the server keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_override_tightens_a_relaxed_server_policy() {
    let fx = keep_fx().await;
    assert_cases(
        &fx,
        "route override (tighter)",
        &[
            c("/strict/x", Pass("/strict/x")),
            c("/strict/a%2fb", Reject),
            c("/strict/a%5Cb", Reject),
            c(r"/strict/a\b", Reject),
            c("/strict/a;v=1", Reject),
            // `..;` is a dot segment: the resolved `/x` is the catch-all's (`keep`) business,
            // unless the gateway judges by the route the raw path named; either is safe.
            c("/strict/..;/x", RefusedOrPass("/x")),
            // The server's `keep` still applies elsewhere.
            c("/public/a%2fb", Pass("/public/a%2Fb")),
        ],
    )
    .await;
}

/// `escaped_slashes: decode`: `%2F` becomes `/` BEFORE dot segments are resolved, so routing
/// and the backend see the same segments; `%5C` becomes `\`, which the (default) backslash
/// policy then rejects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_policy_decodes_before_dot_resolution() {
    let fx = decode_fx().await;
    assert_cases(
        &fx,
        "escaped_slashes decode",
        &[
            c("/public/..%2fadmin/x", Unauth),
            c("/public/..%2Fadmin/x", Unauth),
            c("/public/%2e%2e%2fadmin/x", Unauth),
            c("/%2fadmin/x", Unauth),
            c("/public/a%2fb", Pass("/public/a/b")),
            c("/public%2fx", Pass("/public/x")),
            c("/admin%2F..%2Fpublic", Pass("/public")),
            c("/public/..%2f..%2fadmin/x", Reject),
            c("/%2e%2e%2fadmin/x", Reject),
            c("/public/..%252fadmin/x", Pass("/public/..%252fadmin/x")),
            c("/public/..%5cadmin/x", Reject),
            c("/public/a%5Cb", Reject),
            c(r"/public/a\b", Reject),
            c("/public/a;b", Reject),
        ],
    )
    .await;
}

/// With a token, what `decode` routed to `/admin` reaches the backend as the decoded path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_policy_with_a_token_forwards_the_decoded_path() {
    let fx = decode_fx().await;
    assert_cases(
        &fx,
        "escaped_slashes decode with token",
        &[
            t("/public/..%2fadmin/x", Pass("/admin/x")),
            t("/admin%2fx", Pass("/admin/x")),
            t("/admin/a%2Fb", Pass("/admin/a/b")),
        ],
    )
    .await;
}

/// A route may relax the server's `reject`: `/objects` keeps `%2F` and `;` parameters while
/// `/public` still refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_override_relaxes_the_server_policy_for_that_route_only() {
    let fx = decode_fx().await;
    assert_cases(
        &fx,
        "route override (looser)",
        &[
            c("/objects/a%2fb", Pass("/objects/a%2Fb")),
            c("/objects/a%5cb", Pass("/objects/a%5Cb")),
            c("/objects/a;v=2", Pass("/objects/a;v=2")),
            c(r"/objects/a\b", Reject),
            c("/public/a;v=2", Reject),
            c("/public/a%2fb", Pass("/public/a/b")),
            // Whether `/objects/..%2Fadmin` is judged with the server's `decode` (then it is
            // /admin: 401) or the route's `keep` (one segment, forwarded as is) is not fixed by
            // the spec; either is safe, but never /admin/x at the backend without a token.
            c(
                "/objects/..%2fadmin/x",
                RefusedOrPass("/objects/..%2Fadmin/x"),
            ),
            // Resolves to /admin/x: 401 there, or 400 if judged by /admin's (server) policy.
            c("/objects/..;/admin/x", Refused),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Identity headers
// ---------------------------------------------------------------------------------------------

/// Every identity header of the config, with the value a client would like to plant.
const FAMILIES: &[(&str, &str)] = &[
    ("X-User-Id", "mallory"),
    ("X-User-Roles", "root"),
    ("X-Scopes", "admin:all"),
    ("X-Consumer", "acme-spoof"),
    ("X-Tenant", "t-evil"),
];

/// Spellings a CGI/PHP-style backend folds into the same variable (`-`, `_`, `.` alike, any
/// case), each with the family's spoofed value.
fn spoofed_header_lines() -> String {
    let spellings: &[(&str, &[&str])] = &[
        (
            "X-User-Id",
            &[
                "X-User-Id",
                "x-user-id",
                "X.User.Id",
                "x_user_id",
                "X-USER_ID",
                "X_User.Id",
            ],
        ),
        (
            "X-User-Roles",
            &[
                "X-User-Roles",
                "x_user_roles",
                "X.USER.ROLES",
                "X-User_Roles",
            ],
        ),
        (
            "X-Scopes",
            &["X-Scopes", "x.scopes", "X_SCOPES", "x_Scopes"],
        ),
        ("X-Consumer", &["X-Consumer", "x_consumer", "X.Consumer"]),
        ("X-Tenant", &["X-Tenant", "x.tenant", "X_TENANT"]),
    ];
    let mut out = String::new();
    for (family, names) in spellings {
        let value = FAMILIES
            .iter()
            .find(|(f, _)| f == family)
            .map(|(_, v)| *v)
            .expect("family");
        for n in *names {
            out.push_str(&format!("{n}: {value}\r\n"));
        }
    }
    out
}

fn headers_dump(r: &RecRequest) -> String {
    r.headers
        .iter()
        .map(|(n, v)| format!("    {n}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// On a route without auth, no spelling of any identity header reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_header_spellings_never_reach_the_backend_on_an_open_route() {
    let fx = Fx::strict().await;
    fx.rec.clear();
    let req = get_request("/public/id", None, &spoofed_header_lines());
    let resp = exchange(fx.gw.port, req.as_bytes()).await;
    assert!(
        resp.as_ref().is_some_and(|r| r.status == 200),
        "the request itself is fine: {}\n{}",
        show(&resp),
        fx.rec.dump()
    );
    let reqs = fx.rec.requests();
    assert_eq!(reqs.len(), 1, "{}", fx.rec.dump());
    let mut leaked = Vec::new();
    for (family, _) in FAMILIES {
        for (n, v) in reqs[0].header_family(family) {
            leaked.push(format!("{n}: {v}"));
        }
    }
    assert!(
        leaked.is_empty(),
        "client-sent identity headers reached the backend: {leaked:?}\n  backend headers:\n{}",
        headers_dump(&reqs[0])
    );
}

/// With a valid token, each identity header the gateway sets arrives exactly once, with the
/// claim's value; no spelling of a client's copy survives next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_header_spellings_are_replaced_by_verified_claims() {
    let fx = Fx::strict().await;
    fx.rec.clear();
    let tok = token();
    let req = get_request("/admin/id", Some(&tok), &spoofed_header_lines());
    let resp = exchange(fx.gw.port, req.as_bytes()).await;
    assert!(
        resp.as_ref().is_some_and(|r| r.status == 200),
        "a valid token: {}\n{}",
        show(&resp),
        fx.rec.dump()
    );
    let reqs = fx.rec.requests();
    assert_eq!(reqs.len(), 1, "{}", fx.rec.dump());
    let r = &reqs[0];
    let mut problems = Vec::new();
    for (family, want) in [
        ("X-User-Id", Some("alice")),
        ("X-User-Roles", Some("admin")),
        ("X-Scopes", Some("orders:read")),
        ("X-Tenant", Some("t-1")),
        // No claim maps to X-Consumer for a JWT: at most the gateway's own, never the client's.
        ("X-Consumer", None),
    ] {
        let got: Vec<String> = r
            .header_family(family)
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        let values: Vec<&str> = r.header_family(family).iter().map(|(_, v)| *v).collect();
        match want {
            Some(w) if values != [w] => problems.push(format!(
                "{family}: want exactly one header of the family, value {w:?}; got {got:?}"
            )),
            None if values.len() > 1 => {
                problems.push(format!("{family}: more than one header: {got:?}"))
            }
            _ => {}
        }
        let spoof = FAMILIES.iter().find(|(f, _)| *f == family).unwrap().1;
        if values.contains(&spoof) {
            problems.push(format!("{family}: the client's value got through: {got:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n  backend headers:\n{}",
        problems.join("\n"),
        headers_dump(r)
    );
}

// ---------------------------------------------------------------------------------------------
// Framing: Content-Length
// ---------------------------------------------------------------------------------------------

const BODY10: &str = "0123456789";

/// `POST /public/<name>` with the given header lines and body, without `Connection: close`
/// (the gateway must close on its own after refusing).
fn post(path: &str, header_lines: &[&str], body: &str) -> String {
    let mut s = format!("POST {path} HTTP/1.1\r\nHost: gw.test\r\n");
    for h in header_lines {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

/// Agreeing `Content-Length` values, repeated or listed: forwarded as ONE `Content-Length: 10`
/// line with the 10 body bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreeing_content_lengths_are_forwarded_as_one() {
    let fx = Fx::strict().await;
    let mut failures = Vec::new();
    for lines in [
        &["Content-Length: 10", "Content-Length: 10"][..],
        &["Content-Length: 10, 10"],
        &["Content-Length: 10,10"],
        &["content-length: 10", "Content-Length: 10"],
        &["Content-Length: 10"], // control
    ] {
        fx.rec.clear();
        let mut lines = lines.to_vec();
        lines.push("Connection: close");
        let req = post("/public/cl", &lines, BODY10);
        let resp = exchange(fx.gw.port, req.as_bytes()).await;
        let reqs = fx.rec.requests();
        let ok = resp
            .as_ref()
            .is_some_and(|r| r.status == 200 && r.body == RECORDER_BODY.as_bytes())
            && reqs.len() == 1
            && reqs[0].header_all("content-length") == ["10"]
            && reqs[0].header_all("transfer-encoding").is_empty()
            && reqs[0].body == BODY10.as_bytes();
        eprintln!("CL-CASE {lines:?} -> {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failures.push(format!(
                "{lines:?}: want 200 and the backend to get one `Content-Length: 10` line and \
                 the 10 bytes\n  client got: {}\n{}",
                show(&resp),
                fx.rec.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Disagreeing `Content-Length` values, or values that are not plain digits: 400, the
/// connection is closed, and the backend receives nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disagreeing_or_non_digit_content_lengths_are_400_and_close() {
    let fx = Fx::strict().await;
    let mut failures = Vec::new();
    for lines in [
        &["Content-Length: 5", "Content-Length: 10"][..],
        &["Content-Length: 10", "Content-Length: 5"],
        &["Content-Length: 5, 10"],
        &["Content-Length: 10, 5"],
        &["Content-Length: +10"],
        &["Content-Length: 1_0"],
        &["Content-Length: 0x0a"],
        &["Content-Length: 10 10"],
        &["Content-Length: 10", "Content-Length: +10"],
    ] {
        fx.rec.clear();
        let req = post("/public/cl", lines, BODY10);
        let mut client = RawClient::connect(fx.gw.port).await;
        client.send(req.as_bytes()).await;
        let resp = client.response().await;
        let closed = client.closed_within(CLOSE_WITHIN).await;
        tokio::time::sleep(SETTLE).await;
        let mut problems = Vec::new();
        if !resp
            .as_ref()
            .is_some_and(|r| r.status == 400 && error_code(r).as_deref() == Some("bad_request"))
        {
            problems.push("want 400 bad_request");
        }
        if !closed {
            problems.push("the connection stayed open");
        }
        if fx.rec.byte_count() != 0 {
            problems.push("the backend received bytes");
        }
        eprintln!("CL-CASE {lines:?} -> {problems:?}");
        if !problems.is_empty() {
            failures.push(format!(
                "{lines:?}: {}\n  client got: {}\n  unparsed: {}\n{}",
                problems.join("; "),
                show(&resp),
                client.leftover(),
                fx.rec.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// Framing: chunk-size lines
// ---------------------------------------------------------------------------------------------

/// Chunk-size lines with no hex digit, or with garbage before any extension.
const BAD_SIZE_LINES: &[&str] = &[
    "\r\n",
    ";ext=1\r\n",
    "5 x\r\n",
    "5x\r\n",
    "-5\r\n",
    "0x5\r\n",
    "g\r\n",
];

const CHUNKED_HEAD: &str =
    "POST /public/ch HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n";

/// The request a bad chunk line tries to smuggle after itself.
const SMUGGLED: &str = "GET /admin/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";

/// Well-formed chunked bodies (also split over two writes) go through, decoded as sent: the
/// control for the two tests below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_chunked_bodies_pass() {
    let fx = Fx::strict().await;
    let mut failures = Vec::new();
    for (body, want) in [
        ("5\r\nhello\r\n0\r\n\r\n", "hello"),
        ("5;ext=1\r\nhello\r\n0\r\n\r\n", "hello"),
        ("A\r\n0123456789\r\n0\r\n\r\n", BODY10),
        ("a\r\n0123456789\r\n0\r\n\r\n", BODY10),
        ("0005\r\nhello\r\n0\r\n\r\n", "hello"),
    ] {
        fx.rec.clear();
        let req = format!("{CHUNKED_HEAD}{body}");
        let resp = exchange(fx.gw.port, req.as_bytes()).await;
        let reqs = fx.rec.requests();
        let ok = resp.as_ref().is_some_and(|r| r.status == 200)
            && reqs.len() == 1
            && reqs[0].body == want.as_bytes();
        if !ok {
            failures.push(format!(
                "{body:?}: want 200 and body {want:?} at the backend\n  client got: {}\n{}",
                show(&resp),
                fx.rec.dump()
            ));
        }
    }
    // Two writes 200 ms apart, as in the "bad line arrives later" test.
    fx.rec.clear();
    let mut client = RawClient::connect(fx.gw.port).await;
    client
        .send(format!("{CHUNKED_HEAD}5\r\nhello\r\n").as_bytes())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.send(b"5\r\nworld\r\n0\r\n\r\n").await;
    let resp = client.response().await;
    let reqs = fx.rec.requests();
    if !(resp.as_ref().is_some_and(|r| r.status == 200)
        && reqs.len() == 1
        && reqs[0].body == b"helloworld")
    {
        failures.push(format!(
            "two writes: want 200 and body \"helloworld\" at the backend\n  client got: {}\n{}",
            show(&resp),
            fx.rec.dump()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A bad chunk-size line that arrives in the same write as the head: 400, the connection is
/// closed, and the backend receives nothing at all (not even the head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_size_line_with_the_head_is_400_and_nothing_goes_upstream() {
    let fx = Fx::strict().await;
    let mut failures = Vec::new();
    for bad in BAD_SIZE_LINES {
        fx.rec.clear();
        let req = format!("{CHUNKED_HEAD}{bad}hello\r\n0\r\n\r\n{SMUGGLED}");
        let mut client = RawClient::connect(fx.gw.port).await;
        client.send(req.as_bytes()).await;
        let resp = client.response().await;
        let closed = client.closed_within(CLOSE_WITHIN).await;
        tokio::time::sleep(SETTLE).await;
        let mut problems = Vec::new();
        if !resp
            .as_ref()
            .is_some_and(|r| r.status == 400 && error_code(r).as_deref() == Some("bad_request"))
        {
            problems.push("want 400 bad_request");
        }
        if !closed {
            problems.push("the connection stayed open");
        }
        if fx.rec.byte_count() != 0 {
            problems.push("the backend received bytes");
        }
        eprintln!("CHUNK-CASE first write {bad:?} -> {problems:?}");
        if !problems.is_empty() {
            failures.push(format!(
                "size line {bad:?}: {}\n  client got: {}\n{}",
                problems.join("; "),
                show(&resp),
                fx.rec.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Decodes as many complete chunks of `body` as there are: `(data, saw_last_chunk)`; stops at
/// the first line that is not a plain hex size.
fn decode_chunks(body: &[u8]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut pos = 0;
    while let Some(i) = body[pos..].windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&body[pos..pos + i]).into_owned();
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            return (data, true);
        }
        let start = pos + i + 2;
        let Some(chunk) = body.get(start..start + size) else {
            break;
        };
        data.extend_from_slice(chunk);
        pos = start + size + 2;
        if pos > body.len() {
            break;
        }
    }
    (data, false)
}

/// A bad chunk-size line that arrives 200 ms after the head and a valid first chunk: the client
/// gets 400 (the backend cannot have answered an unfinished body), the connection closes, and no
/// byte of the bad line or after it reaches the backend: not the chunk data behind it, not a
/// terminating chunk, and never the smuggled `GET /admin/smuggled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_size_line_after_a_valid_chunk_never_reaches_the_backend() {
    let fx = Fx::strict().await;
    let mut failures = Vec::new();
    for bad in BAD_SIZE_LINES {
        fx.rec.clear();
        let mut client = RawClient::connect(fx.gw.port).await;
        client
            .send(format!("{CHUNKED_HEAD}5\r\nhello\r\n").as_bytes())
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        client
            .send(format!("{bad}EVIL!\r\n0\r\n\r\n{SMUGGLED}").as_bytes())
            .await;
        let resp = client.response().await;
        let closed = client.closed_within(CLOSE_WITHIN).await;
        tokio::time::sleep(SETTLE).await;
        let mut problems: Vec<String> = Vec::new();
        if !resp
            .as_ref()
            .is_some_and(|r| r.status == 400 && error_code(r).as_deref() == Some("bad_request"))
        {
            problems.push("want 400 bad_request".into());
        }
        if !closed {
            problems.push("the connection stayed open".into());
        }
        for marker in ["EVIL", "admin", "smuggled"] {
            if fx.rec.saw(marker.as_bytes()) {
                problems.push(format!("the backend received {marker:?}"));
            }
        }
        if !fx.rec.requests().is_empty() {
            problems.push("the backend received a complete request".into());
        }
        for conn in fx.rec.raw() {
            let Some(head_end) = conn.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let (data, last) = decode_chunks(&conn[head_end + 4..]);
            if last || !b"hello".starts_with(&data) {
                problems.push(format!(
                    "the backend got body data {:?} (last chunk: {last}); only a prefix of \
                     \"hello\" and no end of body may get there",
                    data.escape_ascii().to_string()
                ));
            }
        }
        eprintln!("CHUNK-CASE later {bad:?} -> {problems:?}");
        if !problems.is_empty() {
            failures.push(format!(
                "size line {bad:?} after a valid chunk: {}\n  client got: {}\n{}",
                problems.join("; "),
                show(&resp),
                fx.rec.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// JWT `crit`
// ---------------------------------------------------------------------------------------------

/// The hand-rolled HMAC the tokens below rely on (RFC 4231 test case 2).
#[test]
fn hand_built_hmac_matches_rfc4231() {
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

/// Control: the hand-built token without `crit` is accepted (so a 401 below is about `crit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_built_token_without_crit_is_accepted() {
    let fx = Fx::strict().await;
    assert_cases(&fx, "no crit", &[t("/admin/x", Pass("/admin/x"))]).await;
    let reqs = fx.rec.requests();
    assert_eq!(
        reqs[0].header_all("x-user-id"),
        ["alice"],
        "{}",
        fx.rec.dump()
    );
}

/// Sends each token (built with the JOSE header) to `/admin/x`: each must get 401
/// `unauthorized` with `WWW-Authenticate` naming `invalid_token`, and the backend nothing.
async fn assert_headers_refused(fx: &Fx, headers: &[&str]) {
    let mut failures = Vec::new();
    for header in headers {
        fx.rec.clear();
        let tok = token_with_header(header);
        let req = get_request("/admin/x", Some(&tok), "");
        let resp = exchange(fx.gw.port, req.as_bytes()).await;
        tokio::time::sleep(SETTLE).await;
        let www = resp
            .as_ref()
            .and_then(|r| r.header("www-authenticate"))
            .unwrap_or_default()
            .to_string();
        let ok = resp
            .as_ref()
            .is_some_and(|r| r.status == 401 && error_code(r).as_deref() == Some("unauthorized"))
            && www.contains("invalid_token")
            && fx.rec.byte_count() == 0;
        eprintln!("CRIT-CASE {header} -> {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failures.push(format!(
                "JOSE header {header}: want 401 unauthorized with WWW-Authenticate \
                 error=\"invalid_token\" and nothing at the backend\n  client got: {}\n{}",
                show(&resp),
                fx.rec.dump()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// RFC 7515 §4.1.11: a recipient must reject a JWS whose `crit` names an extension it does not
/// understand, and `crit` must not be empty or list registered names; tollgate implements none:
/// any `crit` is a 401 with `invalid_token`, and the backend sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_crit_header_is_401() {
    let fx = Fx::strict().await;
    assert_headers_refused(
        &fx,
        &[
            r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":["x-unknown"],"x-unknown":true}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":["x-unknown"]}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":[]}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":"x"}"#,
            r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#,
            r#"{"crit":["exp"],"alg":"HS256"}"#,
        ],
    )
    .await;
}

/// Beyond the spec's examples, the same rule: a `crit` that is present but not an array of
/// names (`null`, an object, numbers) or that is given twice is not a header tollgate
/// understands, so the token is refused, never accepted as if `crit` were absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_malformed_or_null_crit_is_401() {
    let fx = Fx::strict().await;
    assert_headers_refused(
        &fx,
        &[
            r#"{"alg":"HS256","typ":"JWT","crit":null}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":{}}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":[1]}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":["x-unknown"],"crit":null}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":null,"crit":["x-unknown"]}"#,
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// tollgate check
// ---------------------------------------------------------------------------------------------

/// A valid config for `check` with `server_extra` lines under `server:` and `route_extra` lines
/// under the first route (`routes[0]`, `/objects`); `routes[1]` is `/public`.
fn check_config(server_extra: &str, route0_extra: &str, route1_extra: &str) -> String {
    format!(
        r#"server:
  listen: ["127.0.0.1:18080"]
  admin_listen: "127.0.0.1:19901"
  pid_file: "@DIR@/tollgate.pid"
  upgrade_sock: "@DIR@/upgrade.sock"
  access_log: "off"
{server_extra}
upstreams:
  app:
    backends: ["127.0.0.1:4001"]

routes:
  - name: objects
    match: {{path_prefix: /objects}}
    upstream: app
{route0_extra}  - name: public
    match: {{path_prefix: /public}}
    upstream: app
{route1_extra}"#
    )
}

fn warning_lines(out: &str, err: &str) -> Vec<String> {
    out.lines()
        .chain(err.lines())
        .filter(|l| l.starts_with("warning:"))
        .map(str::to_string)
        .collect()
}

/// Relaxing a policy to `keep` is allowed (exit 0) but `check` says so, one `warning:` line
/// naming the YAML path of each relaxed key.
#[test]
fn check_warns_for_each_policy_relaxed_to_keep() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "  path_policy: {escaped_slashes: keep}\n",
            "",
            "",
            &["server.path_policy.escaped_slashes"],
        ),
        (
            "  path_policy: {backslash: keep}\n",
            "",
            "",
            &["server.path_policy.backslash"],
        ),
        (
            "  path_policy: {path_parameters: keep}\n",
            "",
            "",
            &["server.path_policy.path_parameters"],
        ),
        (
            "",
            "    path_policy: {path_parameters: keep}\n",
            "",
            &["routes[0].path_policy.path_parameters"],
        ),
        (
            "",
            "",
            "    path_policy: {escaped_slashes: keep, backslash: keep}\n",
            &[
                "routes[1].path_policy.escaped_slashes",
                "routes[1].path_policy.backslash",
            ],
        ),
        (
            "  path_policy: {escaped_slashes: keep, backslash: keep, path_parameters: keep}\n",
            "    path_policy: {escaped_slashes: keep}\n",
            "",
            &[
                "server.path_policy.escaped_slashes",
                "server.path_policy.backslash",
                "server.path_policy.path_parameters",
                "routes[0].path_policy.escaped_slashes",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (server, r0, r1, paths) in cases {
        let yaml = check_config(server, r0, r1);
        let (code, out, err) = check(&yaml);
        let warnings = warning_lines(&out, &err);
        let mut problems = Vec::new();
        if code != 0 {
            problems.push(format!("exit code {code}, want 0"));
        }
        for p in *paths {
            // `routes[0].path_policy.path_parameters` must not be satisfied by a line about
            // `routes[0].path_policy.path_parameters_x`; compare the path as a whole word.
            let n = warnings
                .iter()
                .filter(|l| {
                    l.match_indices(p).any(|(i, _)| {
                        let after = l[i + p.len()..].chars().next();
                        !after.is_some_and(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                    })
                })
                .count();
            if n != 1 {
                problems.push(format!("{n} warning lines name {p}, want 1"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}\n--- config ---\n{yaml}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The default policy, an explicit `reject`, and `decode` (routing and backend see the same
/// segments) are not relaxations worth a `keep` warning.
#[test]
fn check_does_not_warn_about_reject() {
    for (server, route) in [
        ("", ""),
        (
            "  path_policy: {escaped_slashes: reject, backslash: reject, path_parameters: reject}\n",
            "    path_policy: {path_parameters: reject}\n",
        ),
    ] {
        let yaml = check_config(server, route, "");
        let (code, out, err) = check(&yaml);
        let warnings = warning_lines(&out, &err);
        assert_eq!(code, 0, "{yaml}\n{out}\n{err}");
        assert!(
            !warnings.iter().any(|l| l.contains("path_policy")),
            "no path_policy warning expected: {warnings:?}\n--- config ---\n{yaml}"
        );
    }
}

/// Values and keys the schema does not have are refused with their YAML path.
#[test]
fn check_refuses_unknown_path_policy_values_and_keys() {
    for (server, route, path, fragment) in [
        (
            "  path_policy: {escaped_slashes: allow}\n",
            "",
            "server.path_policy",
            "allow",
        ),
        (
            "  path_policy: {backslash: decode}\n",
            "",
            "server.path_policy",
            "decode",
        ),
        (
            "  path_policy: {slashes: keep}\n",
            "",
            "server.path_policy",
            "slashes",
        ),
        (
            "",
            "    path_policy: {path_parameters: decode}\n",
            "routes[0].path_policy",
            "decode",
        ),
    ] {
        let yaml = check_config(server, route, "");
        assert_check_rejects_with(&yaml, &[], &format!("error: {path}"), &[fragment]);
    }
}
