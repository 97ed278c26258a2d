//! Observability (DESIGN.md "Observability"): the admin `/metrics` exposition (exact counters by
//! label, histograms, backend health gauges, in-flight, build info, process metrics, format and
//! label hygiene), the JSON access log (stdout and file destinations, field values, no secrets,
//! `off`, SIGUSR1 reopen for logrotate), `X-Request-Id` and W3C trace context propagation.
//!
//! Every test runs its own gateway process, so counters start from zero and exact values can be
//! asserted. Metrics and log lines are written in Pingora's `logging` phase, i.e. possibly after
//! the client already has its response: scrapes and log reads poll (bounded) until the expected
//! state is reached, then assert exact values.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// A strict parser for the Prometheus text exposition format (0.0.4)
// ---------------------------------------------------------------------------------------------

mod prom {
    use std::collections::{BTreeMap, BTreeSet};

    pub type Labels = BTreeMap<String, String>;

    #[derive(Debug, Clone)]
    pub struct Sample {
        pub name: String,
        pub labels: Labels,
        pub value: f64,
    }

    #[derive(Debug, Default)]
    pub struct Family {
        pub help: Option<String>,
        pub kind: Option<String>,
        pub samples: Vec<Sample>,
    }

    /// A parsed exposition plus every problem found (syntax or structure). A well-formed
    /// exposition has no problems.
    #[derive(Debug, Default)]
    pub struct Exposition {
        pub families: BTreeMap<String, Family>,
        pub problems: Vec<String>,
    }

    impl Exposition {
        pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
            self.families
                .values()
                .flat_map(|f| f.samples.iter())
                .filter(move |s| s.name == name)
        }

        /// The value of the sample with exactly these labels.
        pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
            let want: Labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            self.samples(name)
                .find(|s| s.labels == want)
                .map(|s| s.value)
        }

        pub fn sum(&self, name: &str) -> f64 {
            self.samples(name).map(|s| s.value).sum()
        }

        /// `labels → value` for every sample of `name`, keyed by the given label names' values.
        pub fn by(&self, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
            self.samples(name)
                .map(|s| {
                    let k = keys
                        .iter()
                        .map(|k| s.labels.get(*k).cloned().unwrap_or_else(|| "<none>".into()))
                        .collect();
                    (k, s.value)
                })
                .collect()
        }
    }

    fn name_start(c: u8, colon: bool) -> bool {
        c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':')
    }

    fn name_char(c: u8, colon: bool) -> bool {
        name_start(c, colon) || c.is_ascii_digit()
    }

    pub fn valid_metric_name(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty() && name_start(b[0], true) && b.iter().all(|&c| name_char(c, true))
    }

    pub fn valid_label_name(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty() && name_start(b[0], false) && b.iter().all(|&c| name_char(c, false))
    }

    pub fn parse_value(s: &str) -> Option<f64> {
        match s {
            "+Inf" | "Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
            {
                s.parse().ok()
            }
            _ => None,
        }
    }

    fn unescape_help(s: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                other => return Err(format!("bad escape \\{other:?} in HELP text")),
            }
        }
        Ok(out)
    }

    /// `name{label="value",...} value [timestamp]`
    pub fn parse_sample(line: &str) -> Result<Sample, String> {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() && name_char(b[i], true) {
            i += 1;
        }
        let name = &line[..i];
        if !valid_metric_name(name) {
            return Err(format!("invalid metric name {name:?}"));
        }
        let mut labels = Labels::new();
        if b.get(i) == Some(&b'{') {
            i += 1;
            loop {
                if b.get(i) == Some(&b'}') {
                    i += 1;
                    break;
                }
                let start = i;
                while i < b.len() && name_char(b[i], false) {
                    i += 1;
                }
                let lname = &line[start..i];
                if !valid_label_name(lname) {
                    return Err(format!("invalid label name {lname:?}"));
                }
                if lname.starts_with("__") {
                    return Err(format!("reserved label name {lname:?}"));
                }
                if b.get(i) != Some(&b'=') {
                    return Err(format!("expected '=' after label {lname:?}"));
                }
                i += 1;
                if b.get(i) != Some(&b'"') {
                    return Err(format!("expected '\"' opening the value of {lname:?}"));
                }
                i += 1;
                let mut value = String::new();
                loop {
                    match b.get(i) {
                        None => return Err(format!("unterminated value of label {lname:?}")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match b.get(i + 1) {
                                Some(b'\\') => value.push('\\'),
                                Some(b'"') => value.push('"'),
                                Some(b'n') => value.push('\n'),
                                other => {
                                    return Err(format!(
                                        "bad escape in value of {lname:?}: {:?}",
                                        other.map(|c| *c as char)
                                    ))
                                }
                            }
                            i += 2;
                        }
                        Some(_) => {
                            let ch = line[i..].chars().next().expect("char at boundary");
                            value.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(format!("label {lname:?} repeated"));
                }
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return Err(format!("expected ',' or '}}' after label {lname:?}")),
                }
            }
        }
        if b.get(i) != Some(&b' ') {
            return Err("expected a space before the value".into());
        }
        let mut parts = line[i..].split(' ').filter(|p| !p.is_empty());
        let raw = parts.next().ok_or("missing value")?;
        let value = parse_value(raw).ok_or_else(|| format!("unparsable value {raw:?}"))?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("unparsable timestamp {ts:?}"))?;
        }
        if let Some(extra) = parts.next() {
            return Err(format!("trailing garbage {extra:?}"));
        }
        Ok(Sample {
            name: name.to_string(),
            labels,
            value,
        })
    }

    /// Which declared family a sample name belongs to.
    fn family_of(families: &BTreeMap<String, Family>, name: &str) -> String {
        let kind = |n: &str| families.get(n).and_then(|f| f.kind.as_deref());
        if matches!(
            kind(name),
            Some("counter" | "gauge" | "untyped" | "summary")
        ) {
            return name.to_string();
        }
        for suffix in ["_bucket", "_count", "_sum"] {
            if let Some(base) = name.strip_suffix(suffix) {
                match kind(base) {
                    Some("histogram") => return base.to_string(),
                    Some("summary") if suffix != "_bucket" => return base.to_string(),
                    _ => {}
                }
            }
        }
        name.to_string()
    }

    pub fn parse(text: &str) -> Exposition {
        let mut exp = Exposition::default();
        let mut current: Option<String> = None;
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut seen: BTreeSet<(String, Vec<(String, String)>)> = BTreeSet::new();
        if !text.is_empty() && !text.ends_with('\n') {
            exp.problems
                .push("exposition does not end with a newline".into());
        }
        // Entering family `fam`: its group must not have ended before.
        let mut enter =
            |fam: &str, current: &mut Option<String>, problems: &mut Vec<String>, lineno: usize| {
                if current.as_deref() == Some(fam) {
                    return;
                }
                if let Some(prev) = current.take() {
                    done.insert(prev);
                }
                if done.contains(fam) {
                    problems.push(format!(
                        "line {lineno}: lines of family {fam} are not one contiguous group"
                    ));
                }
                *current = Some(fam.to_string());
            };
        for (n, line) in text.lines().enumerate() {
            let lineno = n + 1;
            if line.contains('\r') {
                exp.problems.push(format!("line {lineno}: carriage return"));
            }
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                let rest = rest.trim_start_matches(' ');
                let mut toks = rest.splitn(3, ' ');
                let keyword = toks.next().unwrap_or("");
                if keyword != "HELP" && keyword != "TYPE" {
                    continue; // a plain comment
                }
                let name = toks.next().unwrap_or("");
                let arg = toks.next();
                if !valid_metric_name(name) {
                    exp.problems.push(format!(
                        "line {lineno}: {keyword} with invalid metric name {name:?}"
                    ));
                    continue;
                }
                enter(name, &mut current, &mut exp.problems, lineno);
                let fam = exp.families.entry(name.to_string()).or_default();
                if keyword == "HELP" {
                    if fam.help.is_some() {
                        exp.problems
                            .push(format!("line {lineno}: second HELP for {name}"));
                    }
                    match unescape_help(arg.unwrap_or("")) {
                        Ok(h) => fam.help = Some(h),
                        Err(e) => exp.problems.push(format!("line {lineno}: {e}")),
                    }
                } else {
                    let kind = arg.unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        exp.problems
                            .push(format!("line {lineno}: unknown TYPE {kind:?} for {name}"));
                    }
                    if fam.kind.is_some() {
                        exp.problems
                            .push(format!("line {lineno}: second TYPE for {name}"));
                    }
                    if !fam.samples.is_empty() {
                        exp.problems
                            .push(format!("line {lineno}: TYPE for {name} after its samples"));
                    }
                    fam.kind = Some(kind.to_string());
                }
                continue;
            }
            match parse_sample(line) {
                Ok(sample) => {
                    let fam = family_of(&exp.families, &sample.name);
                    enter(&fam, &mut current, &mut exp.problems, lineno);
                    let key = (
                        sample.name.clone(),
                        sample
                            .labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    );
                    if !seen.insert(key) {
                        exp.problems
                            .push(format!("line {lineno}: duplicate sample {line:?}"));
                    }
                    exp.families.entry(fam).or_default().samples.push(sample);
                }
                Err(e) => exp.problems.push(format!("line {lineno}: {e}: {line:?}")),
            }
        }
        validate(&mut exp);
        exp
    }

    /// HELP and TYPE everywhere; counters non-negative; histograms internally consistent.
    fn validate(exp: &mut Exposition) {
        let mut problems = Vec::new();
        for (name, fam) in &exp.families {
            if fam.help.as_deref().is_none_or(str::is_empty) {
                problems.push(format!("family {name} has no HELP"));
            }
            let Some(kind) = fam.kind.as_deref() else {
                problems.push(format!("family {name} has no TYPE"));
                continue;
            };
            for s in &fam.samples {
                if kind == "counter" && !(s.value >= 0.0 && s.value.is_finite()) {
                    problems.push(format!("counter {name}: bad value {s:?}"));
                }
            }
            if kind != "histogram" {
                continue;
            }
            // Group by the labels other than `le`.
            type Group = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
            let mut groups: BTreeMap<Vec<(String, String)>, Group> = BTreeMap::new();
            for s in &fam.samples {
                let key: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "le")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let g = groups.entry(key).or_default();
                if s.name == format!("{name}_bucket") {
                    match s.labels.get("le").and_then(|le| parse_value(le)) {
                        Some(le) if !le.is_nan() => g.0.push((le, s.value)),
                        _ => problems.push(format!("{name}: bucket without a valid le: {s:?}")),
                    }
                } else if s.name == format!("{name}_count") {
                    g.1 = Some(s.value);
                } else if s.name == format!("{name}_sum") {
                    g.2 = Some(s.value);
                } else {
                    problems.push(format!("{name}: unexpected sample {s:?}"));
                }
                if s.name != format!("{name}_bucket") && s.labels.contains_key("le") {
                    problems.push(format!("{name}: `le` outside a bucket: {s:?}"));
                }
            }
            for (labels, (mut buckets, count, sum)) in groups {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                    problems.push(format!("{name}{labels:?}: buckets not cumulative"));
                }
                let inf = buckets.last().filter(|b| b.0 == f64::INFINITY).map(|b| b.1);
                match (inf, count) {
                    (Some(i), Some(c)) if i == c => {}
                    _ => problems.push(format!(
                        "{name}{labels:?}: +Inf bucket {inf:?} != _count {count:?}"
                    )),
                }
                if sum.is_none() {
                    problems.push(format!("{name}{labels:?}: no _sum"));
                }
            }
        }
        exp.problems.extend(problems);
    }
}

/// The exposition checks below are only as good as this parser: it must accept the real format
/// (escapes, histograms, timestamps) and reject what Prometheus would not.
#[test]
fn prometheus_parser_is_strict() {
    let good = "# HELP a_total Things, with a \\\\ and a \\n.\n# TYPE a_total counter\n\
a_total{x=\"q\\\"uote\\\\back\\nnl\",y=\"\"} 3\na_total{x=\"2\",} 4 1700000000000\n\
# HELP h Hist\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
h_sum 0.3\nh_count 2\n# HELP g G\n# TYPE g gauge\ng -1.5e-3\ng{k=\"v\"} NaN\n";
    let m = prom::parse(good);
    assert!(m.problems.is_empty(), "{:?}", m.problems);
    assert_eq!(
        m.value("a_total", &[("x", "q\"uote\\back\nnl"), ("y", "")]),
        Some(3.0)
    );
    assert_eq!(m.value("a_total", &[("x", "2")]), Some(4.0));
    assert_eq!(m.value("h_count", &[]), Some(2.0));
    assert_eq!(m.value("g", &[]), Some(-0.0015));
    assert_eq!(m.families["h"].samples.len(), 4);

    let header = "# HELP m M\n# TYPE m counter\n";
    let bad: &[(&str, String)] = &[
        ("no TYPE", "# HELP m M\nm 1\n".into()),
        ("no HELP", "# TYPE m counter\nm 1\n".into()),
        ("no value", format!("{header}m\n")),
        ("bad value", format!("{header}m one\n")),
        ("bad name", format!("{header}1m 1\n")),
        ("bad label name", format!("{header}m{{1a=\"x\"}} 1\n")),
        ("unquoted label", format!("{header}m{{a=x}} 1\n")),
        ("unterminated", format!("{header}m{{a=\"x}} 1\n")),
        ("bad escape", format!("{header}m{{a=\"\\t\"}} 1\n")),
        ("repeated label", format!("{header}m{{a=\"1\",a=\"2\"}} 1\n")),
        ("duplicate", format!("{header}m{{a=\"1\"}} 1\nm{{a=\"1\"}} 2\n")),
        ("trailing", format!("{header}m 1 2 3\n")),
        ("negative counter", format!("{header}m -1\n")),
        ("NaN counter", format!("{header}m NaN\n")),
        ("no final newline", format!("{header}m 1")),
        ("second TYPE", format!("{header}# TYPE m gauge\nm 1\n")),
        (
            "split group",
            format!("{header}m 1\n# HELP n N\n# TYPE n gauge\nn 1\nm{{a=\"b\"}} 2\n"),
        ),
        (
            "+Inf != count",
            "# HELP h H\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n".into(),
        ),
        (
            "not cumulative",
            "# HELP h H\n# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n"
                .into(),
        ),
    ];
    for (what, text) in bad {
        let m = prom::parse(text);
        assert!(!m.problems.is_empty(), "{what}: accepted {text:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Config and helpers
// ---------------------------------------------------------------------------------------------

/// The API key of consumer [`KEY_ID`]; the config only holds its SHA-256.
const API_KEY: &str = "obs-live-key-7f3e91c0d2aa";
const BAD_KEY: &str = "obs-wrong-key-55aa11bb";
const KEY_ID: &str = "consumer-acme-5150";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The access log fields of DESIGN.md, plus `trace_id`.
const LOG_FIELDS: &[&str] = &[
    "ts",
    "request_id",
    "client_ip",
    "method",
    "host",
    "path",
    "route",
    "upstream",
    "backend",
    "status",
    "latency_ms",
    "upstream_latency_ms",
    "bytes_sent",
    "user_agent",
    "consumer",
    "error",
    "trace_id",
];

/// A request to drive: (method or request id, path, headers, expected status).
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A backend that is dead before the gateway starts (its port refuses connections).
async fn dead_backend() -> Backend {
    let b = Backend::start("dead").await;
    b.kill().await;
    b
}

/// Routes: `ok` (/ok → echo), `two` (/two → second), `keyed` (/keyed → echo, API key always
/// required), `limited` (/limited → echo, limit `tiny` = `limit` requests per minute per client
/// IP), `down` (/down → dead, whose only backend is dead at start).
fn config(echo: &Backend, second: &Backend, dead: &Backend, limit: u32) -> String {
    format!(
        "upstreams:\n{}{}{}
auth:
  api_keys:
    p:
      header: X-API-Key
      keys:
        - {{id: {KEY_ID}, sha256: \"{}\"}}

rate_limits:
  tiny: {{key: client_ip, requests: {limit}, per: 1m}}

routes:
  - name: ok
    match: {{path_prefix: /ok}}
    upstream: echo
  - name: two
    match: {{path_prefix: /two}}
    upstream: second
  - name: keyed
    match: {{path_prefix: /keyed}}
    upstream: echo
    auth: {{api_key: p, required: always}}
  - name: limited
    match: {{path_prefix: /limited}}
    upstream: echo
    rate_limit: tiny
  - name: down
    match: {{path_prefix: /down}}
    upstream: dead
",
        upstream_yaml("echo", &[echo], &[FAST_HEALTH, "retries: 0"]),
        upstream_yaml("second", &[second], &[FAST_HEALTH, "retries: 0"]),
        upstream_yaml("dead", &[dead], &[FAST_HEALTH, "retries: 0"]),
        sha256_hex(API_KEY)
    )
}

/// Three backends (`echo`, `second`, and a dead one) and the [`config`] over them.
struct Fixture {
    echo: Backend,
    second: Backend,
    dead: Backend,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture {
            echo: Backend::start("echo").await,
            second: Backend::start("second").await,
            dead: dead_backend().await,
        }
    }

    fn config(&self, limit: u32) -> String {
        config(&self.echo, &self.second, &self.dead, limit)
    }
}

async fn scrape(client: &reqwest::Client, admin_port: u16) -> (Resp, String, prom::Exposition) {
    let url = format!("http://127.0.0.1:{admin_port}/metrics");
    let r = send(client, "GET", &url, &[]).await;
    assert_eq!(r.status, 200, "GET /metrics: {r}");
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain")),
        "GET /metrics on 127.0.0.1:{admin_port} is not an exposition: {r}"
    );
    let text = r.text();
    let exp = prom::parse(&text);
    (r, text, exp)
}

/// Scrapes until `pred` holds (≤ 10 s), returning that scrape; panics with the last one.
async fn scrape_until(
    client: &reqwest::Client,
    admin_port: u16,
    what: &str,
    pred: impl Fn(&prom::Exposition) -> bool,
) -> (String, prom::Exposition) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text, exp) = scrape(client, admin_port).await;
        if pred(&exp) {
            return (text, exp);
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what} within 10 s; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every one of `requests` requests (`upstream` of them answered by an upstream) went through
/// the whole `logging` phase. A scrape may run concurrently with `logging`, which updates the
/// families one after the other: wait for all of them, not just the first.
fn settled(m: &prom::Exposition, requests: usize, upstream: usize) -> bool {
    in_flight(m) == Some(0.0)
        && m.sum("tollgate_http_requests_total") >= requests as f64
        && m.sum("tollgate_http_request_duration_seconds_count") >= requests as f64
        && m.sum("tollgate_upstream_duration_seconds_count") >= upstream as f64
}

fn in_flight(exp: &prom::Exposition) -> Option<f64> {
    exp.value("tollgate_http_requests_in_flight", &[])
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// `(trace_id, parent_id, flags)` of a version-00 `traceparent` with lowercase-hex, non-zero ids.
fn valid_traceparent(v: &str) -> Option<(String, String, String)> {
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let parts: Vec<&str> = v.split('-').collect();
    if parts.len() != 4 || parts[0] != "00" {
        return None;
    }
    let (trace, parent, flags) = (parts[1], parts[2], parts[3]);
    if !hex(trace, 32) || trace.bytes().all(|b| b == b'0') {
        return None;
    }
    if !hex(parent, 16) || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    if !hex(flags, 2) {
        return None;
    }
    Some((trace.into(), parent.into(), flags.into()))
}

fn is_trace_id(s: &str) -> bool {
    valid_traceparent(&format!("00-{s}-00f067aa0ba902b7-01")).is_some()
}

// ---------------------------------------------------------------------------------------------
// Access log lines (gateways from `common::LoggedGateway`)
// ---------------------------------------------------------------------------------------------

/// Checks the fields every access log line has, whatever the outcome.
fn assert_common_fields(line: &Value, resp: &Resp, method: &str, host: &str, ua: &str) {
    let obj = line.as_object().expect("object");
    for f in LOG_FIELDS {
        assert!(obj.contains_key(*f), "access log line lacks {f:?}: {line}");
    }
    let ts = line["ts"].as_str().unwrap_or_else(|| panic!("ts: {line}"));
    let t = humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("ts {ts:?} not RFC 3339: {e}"));
    let skew = match SystemTime::now().duration_since(t) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        skew < Duration::from_secs(600),
        "ts {ts:?} is far from now: {line}"
    );
    assert_eq!(line["status"], resp.status, "status: {line}");
    assert_eq!(line["method"], method, "method: {line}");
    assert_eq!(line["host"], host, "host: {line}");
    assert_eq!(line["user_agent"], ua, "user_agent: {line}");
    let latency = line["latency_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("latency_ms not a number: {line}"));
    assert!(latency >= 0.0, "latency_ms: {line}");
    assert_eq!(
        line["bytes_sent"].as_u64(),
        Some(resp.body.len() as u64),
        "bytes_sent must be the response body length ({}): {line}",
        resp.body.len()
    );
    let trace = line["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("trace_id missing: {line}"));
    assert!(is_trace_id(trace), "trace_id {trace:?} invalid: {line}");
    let path = line["path"].as_str().unwrap_or_default();
    assert!(
        path.starts_with('/') && !path.contains('?'),
        "path must be the path without a query: {line}"
    );
    if let Some(rid) = resp.header("x-request-id") {
        assert_eq!(line["request_id"], rid, "request_id vs response: {line}");
    }
    assert_eq!(line["client_ip"], "127.0.0.1", "client_ip: {line}");
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// `tollgate_http_requests_total{route,method,status}` counts exactly what was answered — 200,
/// 401, 404 (`_unmatched`), 429, 503 — and the duration histograms, auth failures, rate-limit
/// refusals, backend gauges, in-flight and build info agree with the same traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counters_and_histograms_match_the_traffic_exactly() {
    let fx = Fixture::new().await;
    let gw = Gateway::start(&fx.config(3)).await;

    for i in 0..5 {
        assert_eq!(gw.get(&format!("/ok/{i}")).await.status, 200);
    }
    for _ in 0..2 {
        let r = gw.request("POST", "/ok/b", &[]).await;
        assert_eq!(r.status, 200, "{r}");
    }
    for _ in 0..4 {
        assert_eq!(gw.get("/two/x").await.status, 200);
    }
    for _ in 0..2 {
        gw.get("/keyed/x")
            .await
            .assert_gateway_error(401, "unauthorized");
    }
    gw.get_with("/keyed/x", &[("x-api-key", BAD_KEY)])
        .await
        .assert_gateway_error(401, "unauthorized");
    for _ in 0..3 {
        let r = gw.get_with("/keyed/y", &[("x-api-key", API_KEY)]).await;
        assert_eq!(r.status, 200, "{r}");
    }
    let mut limited: BTreeMap<u16, usize> = BTreeMap::new();
    for _ in 0..6 {
        *limited
            .entry(gw.get("/limited/z").await.status)
            .or_default() += 1;
    }
    assert_eq!(
        limited,
        BTreeMap::from([(200, 3), (429, 3)]),
        "limit of 3 per minute"
    );
    for i in 0..4 {
        gw.get(&format!("/nowhere/{i}"))
            .await
            .assert_gateway_error(404, "not_found");
    }
    gw.request("DELETE", "/nowhere", &[])
        .await
        .assert_gateway_error(404, "not_found");
    for _ in 0..2 {
        gw.get("/down/x")
            .await
            .assert_gateway_error(503, "service_unavailable");
    }
    let total = 5 + 2 + 4 + 3 + 3 + 6 + 4 + 1 + 2;

    let (text, m) = scrape_until(&gw.client, gw.admin_port, "all requests logged", |m| {
        settled(m, total, 17)
    })
    .await;

    let requests = m.by(
        "tollgate_http_requests_total",
        &["route", "method", "status"],
    );
    let expected: BTreeMap<Vec<String>, f64> = [
        (["ok", "GET", "200"], 5.0),
        (["ok", "POST", "200"], 2.0),
        (["two", "GET", "200"], 4.0),
        (["keyed", "GET", "401"], 3.0),
        (["keyed", "GET", "200"], 3.0),
        (["limited", "GET", "200"], 3.0),
        (["limited", "GET", "429"], 3.0),
        (["_unmatched", "GET", "404"], 4.0),
        (["_unmatched", "DELETE", "404"], 1.0),
        (["down", "GET", "503"], 2.0),
    ]
    .into_iter()
    .map(|(k, v)| (key(&k), v))
    .collect();
    assert_eq!(requests, expected, "requests_total; exposition:\n{text}");
    for s in m.samples("tollgate_http_requests_total") {
        let names: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(names, ["method", "route", "status"], "labels of {s:?}");
    }

    let durations = m.by("tollgate_http_request_duration_seconds_count", &["route"]);
    let expected: BTreeMap<Vec<String>, f64> = [
        ("ok", 7.0),
        ("two", 4.0),
        ("keyed", 6.0),
        ("limited", 6.0),
        ("_unmatched", 5.0),
        ("down", 2.0),
    ]
    .into_iter()
    .map(|(k, v)| (key(&[k]), v))
    .collect();
    assert_eq!(
        durations, expected,
        "request duration _count per route; exposition:\n{text}"
    );

    // Only requests that got an upstream response are timed upstream: 5+2+3+3 on echo, 4 on
    // second; the dead upstream was never reached.
    let up = m.by("tollgate_upstream_duration_seconds_count", &["upstream"]);
    assert_eq!(up.get(&key(&["echo"])), Some(&13.0), "{text}");
    assert_eq!(up.get(&key(&["second"])), Some(&4.0), "{text}");
    assert!(
        up.get(&key(&["dead"])).is_none_or(|v| *v == 0.0),
        "dead upstream timed: {text}"
    );
    assert_eq!(up.len() - usize::from(up.contains_key(&key(&["dead"]))), 2);

    let auth = m.by("tollgate_auth_failures_total", &["route", "reason"]);
    assert_eq!(
        auth,
        BTreeMap::from([
            (key(&["keyed", "missing"]), 2.0),
            (key(&["keyed", "invalid_api_key"]), 1.0)
        ]),
        "auth failures; exposition:\n{text}"
    );
    let rl = m.by("tollgate_rate_limited_total", &["route", "limit"]);
    assert_eq!(
        rl,
        BTreeMap::from([(key(&["limited", "tiny"]), 3.0)]),
        "rate limited; exposition:\n{text}"
    );

    let healthy = m.by(
        "tollgate_upstream_backend_healthy",
        &["upstream", "backend"],
    );
    assert_eq!(
        healthy,
        BTreeMap::from([
            (key(&["echo", &fx.echo.addr()]), 1.0),
            (key(&["second", &fx.second.addr()]), 1.0),
            (key(&["dead", &fx.dead.addr()]), 0.0),
        ]),
        "backend health gauges; exposition:\n{text}"
    );

    assert_eq!(in_flight(&m), Some(0.0), "{text}");
    let build: Vec<_> = m.samples("tollgate_build_info").collect();
    assert_eq!(build.len(), 1, "{text}");
    assert_eq!(
        build[0].labels.get("version").map(String::as_str),
        Some(VERSION)
    );
    assert_eq!(build[0].value, 1.0);
}

/// `tollgate_upstream_backend_healthy` goes 1 → 0 when a backend dies or fails its health check,
/// and back to 1 when it recovers (health checks every 200 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_healthy_gauge_follows_health_checks() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let body = format!(
        "upstreams:\n{}\nroutes:\n  - name: all\n    match: {{path_prefix: /}}\n    upstream: pool\n",
        upstream_yaml("pool", &[&a, &b], &[FAST_HEALTH, "retries: 0"])
    );
    let gw = Gateway::start(&body).await;
    let (aa, ba) = (a.addr(), b.addr());
    let gauge = move |m: &prom::Exposition, addr: &str| {
        m.value(
            "tollgate_upstream_backend_healthy",
            &[("upstream", "pool"), ("backend", addr)],
        )
    };

    let (_, m) = scrape_until(&gw.client, gw.admin_port, "both backends healthy", |m| {
        gauge(m, &aa) == Some(1.0) && gauge(m, &ba) == Some(1.0)
    })
    .await;
    assert_eq!(m.samples("tollgate_upstream_backend_healthy").count(), 2);

    b.kill().await;
    let (text, m) = scrape_until(&gw.client, gw.admin_port, "b unhealthy", |m| {
        gauge(m, &ba) == Some(0.0)
    })
    .await;
    assert_eq!(gauge(&m, &aa), Some(1.0), "a must stay healthy:\n{text}");

    b.revive().await;
    let (text, m) = scrape_until(&gw.client, gw.admin_port, "b healthy again", |m| {
        gauge(m, &ba) == Some(1.0)
    })
    .await;
    assert_eq!(gauge(&m, &aa), Some(1.0), "{text}");

    // An HTTP health check answering 503 counts as unhealthy too.
    a.set_healthy(false);
    let (text, m) = scrape_until(&gw.client, gw.admin_port, "a unhealthy (503)", |m| {
        gauge(m, &aa) == Some(0.0)
    })
    .await;
    assert_eq!(gauge(&m, &ba), Some(1.0), "{text}");
    a.set_healthy(true);
    scrape_until(&gw.client, gw.admin_port, "a healthy again", |m| {
        gauge(m, &aa) == Some(1.0) && gauge(m, &ba) == Some(1.0)
    })
    .await;
}

/// `tollgate_http_requests_in_flight` is 1 while a request waits on a slow upstream and 0 after,
/// also when the client gave up before the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_gauge_tracks_open_requests_and_returns_to_zero() {
    let slow = Backend::start_with_delay("slow", Duration::from_millis(1500)).await;
    let body = format!(
        "upstreams:\n{}\nroutes:\n  - name: slow\n    match: {{path_prefix: /slow}}\n    upstream: pool\n",
        upstream_yaml("pool", &[&slow], &[FAST_HEALTH, "retries: 0", "read_timeout: 10s"])
    );
    let gw = Gateway::start(&body).await;
    let (_, _, m) = scrape(&gw.client, gw.admin_port).await;
    assert_eq!(in_flight(&m), Some(0.0), "idle gateway");

    let (c, url) = (gw.client.clone(), gw.url("/slow/a"));
    let pending = tokio::spawn(async move { send(&c, "GET", &url, &[]).await });
    scrape_until(&gw.client, gw.admin_port, "one request in flight", |m| {
        in_flight(m) == Some(1.0)
    })
    .await;
    let r = tokio::time::timeout(Duration::from_secs(15), pending)
        .await
        .expect("slow request finished")
        .expect("task");
    assert_eq!(r.status, 200, "{r}");
    scrape_until(&gw.client, gw.admin_port, "in flight back to 0", |m| {
        in_flight(m) == Some(0.0)
    })
    .await;

    // A client that hangs up while the upstream is still working.
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let err = impatient.get(gw.url("/slow/b")).send().await;
    assert!(err.is_err(), "expected a client timeout: {err:?}");
    let (text, m) = scrape_until(
        &gw.client,
        gw.admin_port,
        "in flight back to 0 after a client abort",
        |m| settled(m, 2, 1),
    )
    .await;
    assert_eq!(
        m.sum("tollgate_http_requests_total"),
        2.0,
        "both requests counted:\n{text}"
    );
}

/// The exposition parses strictly: every sample line (name, labels, value), HELP and TYPE for
/// every family, contiguous groups, consistent histograms; the documented metrics have the
/// documented types and label names; process metrics are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_is_well_formed_and_has_the_documented_families() {
    let fx = Fixture::new().await;
    let gw = Gateway::start(&fx.config(1)).await;
    assert_eq!(gw.get("/ok/a").await.status, 200);
    assert_eq!(gw.get("/two/a").await.status, 200);
    assert_eq!(gw.get("/keyed/a").await.status, 401);
    assert_eq!(gw.get("/limited/a").await.status, 200);
    assert_eq!(gw.get("/limited/a").await.status, 429);
    assert_eq!(gw.get("/nowhere").await.status, 404);
    assert_eq!(gw.get("/down").await.status, 503);
    scrape_until(&gw.client, gw.admin_port, "7 requests", |m| {
        settled(m, 7, 3)
    })
    .await;

    let (resp, text, m) = scrape(&gw.client, gw.admin_port).await;
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "Content-Type of /metrics: {ct:?}"
    );
    assert!(
        m.problems.is_empty(),
        "exposition problems:\n{}\n--- exposition ---\n{text}",
        m.problems.join("\n")
    );
    // Every non-comment line was parsed into a sample.
    let sample_lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let parsed: usize = m.families.values().map(|f| f.samples.len()).sum();
    assert_eq!(sample_lines, parsed);

    let documented: &[(&str, &str, &[&str])] = &[
        (
            "tollgate_http_requests_total",
            "counter",
            &["method", "route", "status"],
        ),
        (
            "tollgate_http_request_duration_seconds",
            "histogram",
            &["route"],
        ),
        (
            "tollgate_upstream_duration_seconds",
            "histogram",
            &["upstream"],
        ),
        (
            "tollgate_upstream_backend_healthy",
            "gauge",
            &["backend", "upstream"],
        ),
        (
            "tollgate_rate_limited_total",
            "counter",
            &["limit", "route"],
        ),
        (
            "tollgate_auth_failures_total",
            "counter",
            &["reason", "route"],
        ),
        ("tollgate_http_requests_in_flight", "gauge", &[]),
        ("tollgate_build_info", "gauge", &["version"]),
    ];
    for (name, kind, labels) in documented {
        let fam = m
            .families
            .get(*name)
            .unwrap_or_else(|| panic!("family {name} missing:\n{text}"));
        assert_eq!(fam.kind.as_deref(), Some(*kind), "TYPE of {name}");
        assert!(!fam.samples.is_empty(), "{name} has no samples:\n{text}");
        for s in &fam.samples {
            let names: Vec<&str> = s
                .labels
                .keys()
                .map(String::as_str)
                .filter(|k| !(s.name.ends_with("_bucket") && *k == "le"))
                .collect();
            assert_eq!(&names, labels, "label names of {s:?}");
        }
    }
    for (name, kind) in [
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
    ] {
        let fam = m
            .families
            .get(name)
            .unwrap_or_else(|| panic!("process metric {name} missing:\n{text}"));
        assert_eq!(fam.kind.as_deref(), Some(kind), "TYPE of {name}");
        let v = m.value(name, &[]).unwrap_or(0.0);
        assert!(v > 0.0, "{name} = {v}");
    }
}

/// Labels are bounded: route names from config (or `_unmatched`), a fixed method set, status
/// codes, configured upstream/backend/limit names, fixed reasons. Paths, query strings, user ids,
/// consumer ids, client IPs, tokens, keys, cookies and user agents never reach the exposition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_never_carry_paths_ids_ips_or_tokens() {
    let fx = Fixture::new().await;
    let gw = Gateway::start_with(&["trusted_proxies: [\"127.0.0.0/8\"]"], &fx.config(2)).await;
    const CLIENT_IP: &str = "203.0.113.77";
    const BEARER: &str = "Bearer tok3nSECRETvalue";
    const COOKIE: &str = "sid=cookieSECRET55";
    const USER: &str = "user-31337x";
    const UA: &str = "agentMARK42/1.0";
    let leaky: [(&str, &str); 6] = [
        ("x-forwarded-for", CLIENT_IP),
        ("authorization", BEARER),
        ("cookie", COOKIE),
        ("x-user-id", USER),
        ("x-consumer", USER),
        ("user-agent", UA),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut h = leaky.to_vec();
        h.extend_from_slice(extra);
        h
    };
    let mut sent = 0;
    let cases: Vec<Case<'_>> = vec![
        (
            "GET",
            "/ok/users/u98765pathmark/orders?token=querySECRET66",
            with(&[]),
            200,
        ),
        (
            "GET",
            "/two/pathmark-two/42?email=querySECRET66",
            with(&[]),
            200,
        ),
        (
            "GET",
            "/keyed/pathmark-keyed",
            with(&[("x-api-key", API_KEY)]),
            200,
        ),
        (
            "GET",
            "/keyed/pathmark-keyed",
            with(&[("x-api-key", BAD_KEY)]),
            401,
        ),
        ("GET", "/limited/pathmark-l/1", with(&[]), 200),
        ("GET", "/limited/pathmark-l/2", with(&[]), 200),
        ("GET", "/limited/pathmark-l/3", with(&[]), 429),
        (
            "GET",
            "/secret-unmatched-pathmark?session=querySECRET66",
            with(&[]),
            404,
        ),
        ("FOOBARMETHOD", "/nowhere-pathmark", with(&[]), 404),
        ("GET", "/down/pathmark-down", with(&[]), 503),
    ];
    for (method, path, headers, status) in &cases {
        let r = gw.request(method, path, headers).await;
        assert_eq!(r.status, *status, "{method} {path}: {r}");
        sent += 1;
    }

    let (text, m) = scrape_until(&gw.client, gw.admin_port, "all requests counted", |m| {
        settled(m, sent, 5)
    })
    .await;
    assert_eq!(
        m.value(
            "tollgate_http_requests_total",
            &[
                ("route", "_unmatched"),
                ("method", "OTHER"),
                ("status", "404")
            ]
        ),
        Some(1.0),
        "an unknown method is counted as OTHER:\n{text}"
    );

    let lower = text.to_ascii_lowercase();
    for marker in [
        "pathmark",
        "querysecret66",
        "tok3nsecretvalue",
        "cookiesecret55",
        USER,
        CLIENT_IP,
        API_KEY,
        BAD_KEY,
        KEY_ID,
        &sha256_hex(API_KEY),
        "agentmark42",
        "foobarmethod",
        "/ok",
        "/keyed",
        "users",
    ] {
        assert!(
            !lower.contains(&marker.to_ascii_lowercase()),
            "{marker:?} leaked into /metrics:\n{text}"
        );
    }

    let routes = ["ok", "two", "keyed", "limited", "down", "_unmatched"];
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
    ];
    let upstreams = ["echo", "second", "dead"];
    let backends = [fx.echo.addr(), fx.second.addr(), fx.dead.addr()];
    let reasons = [
        "missing",
        "malformed",
        "ambiguous",
        "expired",
        "not_yet_valid",
        "bad_signature",
        "wrong_issuer",
        "wrong_audience",
        "unknown_kid",
        "disallowed_alg",
        "missing_claim",
        "invalid_api_key",
        "forbidden",
    ];
    for (fname, fam) in m
        .families
        .iter()
        .filter(|(n, _)| n.starts_with("tollgate_"))
    {
        for s in &fam.samples {
            for (k, v) in &s.labels {
                let ok = match k.as_str() {
                    "route" => routes.contains(&v.as_str()),
                    "method" => methods.contains(&v.as_str()),
                    "status" => v.len() == 3 && v.bytes().all(|b| b.is_ascii_digit()),
                    "upstream" => upstreams.contains(&v.as_str()),
                    "backend" => backends.contains(v),
                    "reason" => reasons.contains(&v.as_str()),
                    "limit" => v == "tiny",
                    "version" => v == VERSION,
                    "le" => prom::parse_value(v).is_some(),
                    _ => false,
                };
                assert!(
                    ok,
                    "unbounded or unexpected label {k}={v:?} on {fname}: {s:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Access log
// ---------------------------------------------------------------------------------------------

const LOG_HOST: &str = "logs.example.test";
const LOG_UA: &str = "obs-agent/1.0";

/// `X-Request-Id`, `Host` and `User-Agent` for an access log test request, plus `extra`.
fn log_headers<'a>(rid: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("x-request-id", rid),
        ("host", LOG_HOST),
        ("user-agent", LOG_UA),
    ];
    v.extend_from_slice(extra);
    v
}

/// `access_log: stdout`, a proxied 200 with an API key: every documented field, one JSON object
/// per line, exactly one line per request, nothing but access log lines on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_of_a_proxied_200() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let r = gw
        .get(
            "/keyed/items/7?page=2",
            &log_headers("rid-200", &[("x-api-key", API_KEY)]),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r2 = gw
        .request("POST", "/ok/orders", &log_headers("rid-200-post", &[]))
        .await;
    assert_eq!(r2.status, 200, "{r2}");

    let l = gw.log_line("stdout.log", "rid-200").await;
    assert_common_fields(&l, &r, "GET", LOG_HOST, LOG_UA);
    assert_eq!(l["path"], "/keyed/items/7", "{l}");
    assert_eq!(l["route"], "keyed", "{l}");
    assert_eq!(l["upstream"], "echo", "{l}");
    assert_eq!(l["backend"], fx.echo.addr().as_str(), "{l}");
    assert_eq!(l["consumer"], KEY_ID, "{l}");
    assert_eq!(l["error"], Value::Null, "{l}");
    let up = l["upstream_latency_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("upstream_latency_ms of a proxied 200: {l}"));
    let total = l["latency_ms"].as_f64().unwrap();
    assert!(
        (0.0..=total).contains(&up),
        "upstream latency within total latency: {l}"
    );

    let l2 = gw.log_line("stdout.log", "rid-200-post").await;
    assert_common_fields(&l2, &r2, "POST", LOG_HOST, LOG_UA);
    assert_eq!(l2["route"], "ok", "{l2}");
    assert_eq!(l2["consumer"], Value::Null, "anonymous: {l2}");

    let lines = json_lines(&gw.read("stdout.log"));
    let mut ids: Vec<&str> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap_or_default())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["rid-200", "rid-200-post"], "one line per request");
    assert!(gw.read("stdout.log").ends_with('\n'));
}

/// A 404: route `_unmatched`, no upstream/backend, error `not_found`, and the client's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_of_a_404() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let r = gw.get("/nowhere/9", &log_headers("rid-404", &[])).await;
    r.assert_gateway_error(404, "not_found");
    let l = gw.log_line("stdout.log", "rid-404").await;
    assert_eq!(l["path"], "/nowhere/9", "{l}");
    assert_eq!(l["route"], "_unmatched", "{l}");
    assert_eq!(l["upstream"], Value::Null, "{l}");
    assert_eq!(l["backend"], Value::Null, "{l}");
    assert_eq!(l["upstream_latency_ms"], Value::Null, "{l}");
    assert_eq!(l["consumer"], Value::Null, "{l}");
    assert_eq!(l["error"], "not_found", "{l}");
    assert_common_fields(&l, &r, "GET", LOG_HOST, LOG_UA);
}

/// A 401: the route, no backend, no consumer, error `unauthorized`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_of_a_401() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let r = gw
        .get(
            "/keyed/x",
            &log_headers("rid-401", &[("x-api-key", BAD_KEY)]),
        )
        .await;
    r.assert_gateway_error(401, "unauthorized");
    let l = gw.log_line("stdout.log", "rid-401").await;
    assert_common_fields(&l, &r, "GET", LOG_HOST, LOG_UA);
    assert_eq!(l["path"], "/keyed/x", "{l}");
    assert_eq!(l["route"], "keyed", "{l}");
    assert!(
        l["upstream"].is_null() || l["upstream"] == "echo",
        "upstream of a 401: {l}"
    );
    assert_eq!(l["backend"], Value::Null, "{l}");
    assert_eq!(l["upstream_latency_ms"], Value::Null, "{l}");
    assert_eq!(l["consumer"], Value::Null, "{l}");
    assert_eq!(l["error"], "unauthorized", "{l}");
}

/// A 429: the route, no backend, error `rate_limited` (the admitted request before it has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_of_a_429() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let first = gw
        .get("/limited/a", &log_headers("rid-429-first", &[]))
        .await;
    assert_eq!(first.status, 200, "{first}");
    let r = gw.get("/limited/b", &log_headers("rid-429", &[])).await;
    r.assert_gateway_error(429, "rate_limited");

    let l = gw.log_line("stdout.log", "rid-429").await;
    assert_common_fields(&l, &r, "GET", LOG_HOST, LOG_UA);
    assert_eq!(l["path"], "/limited/b", "{l}");
    assert_eq!(l["route"], "limited", "{l}");
    assert_eq!(l["backend"], Value::Null, "{l}");
    assert_eq!(l["upstream_latency_ms"], Value::Null, "{l}");
    assert_eq!(l["consumer"], Value::Null, "{l}");
    assert_eq!(l["error"], "rate_limited", "{l}");

    let l = gw.log_line("stdout.log", "rid-429-first").await;
    assert_common_fields(&l, &first, "GET", LOG_HOST, LOG_UA);
    assert_eq!(l["route"], "limited", "{l}");
    assert_eq!(l["backend"], fx.echo.addr().as_str(), "{l}");
    assert_eq!(l["error"], Value::Null, "{l}");
}

/// A 503 (the upstream's only backend is dead): the upstream is named, no backend was picked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_of_a_503() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let r = gw.get("/down/x", &log_headers("rid-503", &[])).await;
    r.assert_gateway_error(503, "service_unavailable");
    let l = gw.log_line("stdout.log", "rid-503").await;
    assert_common_fields(&l, &r, "GET", LOG_HOST, LOG_UA);
    assert_eq!(l["route"], "down", "{l}");
    assert_eq!(l["upstream"], "dead", "{l}");
    assert_eq!(l["backend"], Value::Null, "{l}");
    assert_eq!(l["upstream_latency_ms"], Value::Null, "{l}");
    assert_eq!(l["error"], "service_unavailable", "{l}");
}

/// Authorization headers, API keys (valid or not), cookies and query strings never reach the
/// access log (nor the gateway's stderr).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_never_contains_credentials_cookies_or_query_strings() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(100)).await;
    const AUTH: &str = "Bearer eyJhbGciOiJIUzI1NiJ9.AUTHSECRETpayload.sig";
    const BASIC: &str = "Basic YWxpY2U6QkFTSUNTRUNSRVQ=";
    const COOKIE: &str = "session=COOKIESECRET1; theme=dark";
    let cases: [Case<'_>; 5] = [
        (
            "q-200-key",
            "/keyed/a?api_key=QSECRET1&token=QSECRET2",
            vec![
                ("x-api-key", API_KEY),
                ("authorization", AUTH),
                ("cookie", COOKIE),
            ],
            200,
        ),
        (
            "q-401-key",
            "/keyed/b?sig=QSECRET3",
            vec![
                ("x-api-key", BAD_KEY),
                ("authorization", BASIC),
                ("cookie", COOKIE),
            ],
            401,
        ),
        (
            "q-200",
            "/ok/c?password=QSECRET4",
            vec![("authorization", AUTH), ("cookie", COOKIE)],
            200,
        ),
        (
            "q-404",
            "/nowhere?access_token=QSECRET5",
            vec![("authorization", AUTH), ("cookie", COOKIE)],
            404,
        ),
        (
            "q-429-warm",
            "/limited/d?code=QSECRET6",
            vec![("cookie", COOKIE), ("x-api-key", API_KEY)],
            200,
        ),
    ];
    for (rid, path, headers, status) in &cases {
        let mut h = headers.clone();
        h.push(("x-request-id", rid));
        let r = gw.get(path, &h).await;
        assert_eq!(r.status, *status, "{path}: {r}");
    }
    for (rid, path, _, _) in &cases {
        let line = gw.log_line("stdout.log", rid).await;
        let want = path.split('?').next().unwrap();
        assert_eq!(
            line["path"], want,
            "logged path must drop the query: {line}"
        );
    }
    let stdout = gw.read("stdout.log");
    let stderr = gw.read("stderr.log");
    for (what, text) in [("access log", &stdout), ("stderr", &stderr)] {
        for secret in [
            API_KEY,
            BAD_KEY,
            &sha256_hex(API_KEY),
            "AUTHSECRET",
            "eyJhbGciOiJIUzI1NiJ9",
            "YWxpY2U6QkFTSUNTRUNSRVQ",
            "COOKIESECRET",
            "theme=dark",
            "QSECRET",
            "api_key=",
            "password=",
            "access_token=",
        ] {
            assert!(!text.contains(secret), "{secret:?} found in the {what}");
        }
    }
}

/// `access_log: off` writes no access log anywhere (stdout stays empty, no file appears).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_off_writes_nothing() {
    let fx = Fixture::new().await;
    let mut gw = LoggedGateway::start("off", &[], &[], &fx.config(1)).await;
    assert_eq!(gw.get("/ok/a", &[]).await.status, 200);
    assert_eq!(gw.get("/keyed/a", &[]).await.status, 401);
    assert_eq!(gw.get("/nowhere", &[]).await.status, 404);
    assert_eq!(gw.get("/limited/a", &[]).await.status, 200);
    assert_eq!(gw.get("/limited/a", &[]).await.status, 429);
    // The requests were fully handled (logging phase ran) once the metrics show them; then give
    // a writer (which flushes at least every 500 ms) time to show up if there were one.
    scrape_until(&gw.client, gw.admin_port, "5 requests", |m| {
        settled(m, 5, 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(gw.exited().is_none(), "gateway died");
    assert_eq!(gw.read("stdout.log"), "", "access_log: off wrote to stdout");
    let allowed = [
        "tollgate.yaml",
        "stdout.log",
        "stderr.log",
        "tollgate.pid",
        "upgrade.sock",
    ];
    let files: Vec<String> = std::fs::read_dir(gw.dir())
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    assert!(files.is_empty(), "unexpected files: {files:?}");
}

/// File destination: lines go to the file; after logrotate renames it and sends SIGUSR1, new
/// lines go to a freshly created file at the configured path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_file_is_reopened_on_usr1_after_rotation() {
    let fx = Fixture::new().await;
    let mut gw = LoggedGateway::start("@DIR@/access.log", &[], &[], &fx.config(1)).await;
    let rid = |id: &'static str| [("x-request-id", id)];

    assert_eq!(gw.get("/ok/1", &rid("file-1")).await.status, 200);
    let l1 = gw.log_line("access.log", "file-1").await;
    assert_eq!(l1["route"], "ok");
    assert!(
        !gw.read("stdout.log").contains("file-1"),
        "file destination must not also log to stdout"
    );

    std::fs::rename(gw.path("access.log"), gw.path("access.log.1")).expect("rename");
    // Until the signal, the writer keeps appending to the renamed file.
    assert_eq!(gw.get("/ok/2", &rid("file-2")).await.status, 200);
    gw.log_line("access.log.1", "file-2").await;

    signal(gw.pid(), "USR1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gw.exited().is_none(), "SIGUSR1 killed the gateway");
    assert_eq!(gw.get("/ok/3", &rid("file-3")).await.status, 200);
    assert_eq!(gw.get("/nowhere", &rid("file-4")).await.status, 404);
    let l3 = gw.log_line("access.log", "file-3").await;
    assert_eq!(l3["status"], 200);
    let l4 = gw.log_line("access.log", "file-4").await;
    assert_eq!(l4["status"], 404);

    let fresh = gw.read("access.log");
    assert!(
        !fresh.contains("file-1") && !fresh.contains("file-2"),
        "the new file must be freshly created:\n{fresh}"
    );
    assert_eq!(json_lines(&fresh).len(), 2, "{fresh}");
    let rotated = gw.read("access.log.1");
    assert!(
        !rotated.contains("file-3") && !rotated.contains("file-4"),
        "lines after SIGUSR1 went to the rotated file:\n{rotated}"
    );
    assert_eq!(json_lines(&rotated).len(), 2, "{rotated}");
}

/// logrotate may send SIGUSR1 before the gateway has logged anything (a quiet night after a
/// restart): the signal must not kill the process, and logging must work afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usr1_before_the_first_request_does_not_kill_the_gateway() {
    let fx = Fixture::new().await;
    let mut gw = LoggedGateway::start("@DIR@/access.log", &[], &[], &fx.config(1)).await;
    signal(gw.pid(), "USR1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(status) = gw.exited() {
        panic!("SIGUSR1 before any request terminated the gateway ({status})");
    }
    let r = gw
        .get("/ok/x", &[("x-request-id", "after-early-usr1")])
        .await;
    assert_eq!(r.status, 200, "{r}");
    gw.log_line("access.log", "after-early-usr1").await;
}

// ---------------------------------------------------------------------------------------------
// Request id
// ---------------------------------------------------------------------------------------------

/// A sane incoming `X-Request-Id` reaches the backend, the response and the log line unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_request_id_round_trips_to_backend_response_and_log() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    for (i, rid) in [
        "client-rid_42.AbC:xyz",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        &"r".repeat(128),
    ]
    .into_iter()
    .enumerate()
    {
        let r = gw.get(&format!("/ok/{i}"), &[("x-request-id", rid)]).await;
        let echo = r.echo();
        assert_eq!(
            echo.header("x-request-id"),
            Some(rid),
            "backend saw: {echo:?}"
        );
        assert_eq!(r.header_all("x-request-id"), [rid], "response: {r}");
        let line = gw.log_line("stdout.log", rid).await;
        assert_eq!(line["status"], 200, "{line}");
    }
}

/// Without an (acceptable) incoming id the gateway generates one, the same at the backend, in the
/// response and in the log; each request gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_request_id_is_the_same_everywhere() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let long = "x".repeat(200);
    let incoming: [Option<&str>; 4] = [None, None, Some("has a space"), Some(&long)];
    let mut seen = BTreeSet::new();
    for (i, inc) in incoming.iter().enumerate() {
        let headers: Vec<(&str, &str)> = inc.map(|v| ("x-request-id", v)).into_iter().collect();
        let r = gw.get(&format!("/ok/{i}"), &headers).await;
        let echo = r.echo();
        let at_backend = echo
            .header("x-request-id")
            .unwrap_or_else(|| panic!("backend got no X-Request-Id: {echo:?}"))
            .to_string();
        assert!(
            !at_backend.is_empty()
                && at_backend.len() <= 128
                && at_backend.bytes().all(|b| (0x21..0x7f).contains(&b)),
            "generated id {at_backend:?}"
        );
        if let Some(inc) = inc {
            assert_ne!(at_backend, *inc, "an unacceptable id must be replaced");
        }
        assert_eq!(
            r.header_all("x-request-id"),
            [at_backend.as_str()],
            "response: {r}"
        );
        let line = gw.log_line("stdout.log", &at_backend).await;
        assert_eq!(line["path"], format!("/ok/{i}"), "{line}");
        assert!(seen.insert(at_backend.clone()), "id reused: {at_backend}");
    }
}

/// The gateway's own error bodies (404, 401, 429, 503) carry the request id, equal to the
/// `X-Request-Id` response header and the log line's — incoming or generated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_carry_the_request_id() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    assert_eq!(gw.get("/limited/warm", &[]).await.status, 200);
    let cases = [
        ("/nowhere", 404, "not_found"),
        ("/keyed/a", 401, "unauthorized"),
        ("/limited/b", 429, "rate_limited"),
        ("/down/c", 503, "service_unavailable"),
    ];
    for (path, status, code) in cases {
        for incoming in [Some(format!("err-{status}")), None] {
            let headers: Vec<(&str, &str)> = incoming
                .as_deref()
                .map(|v| ("x-request-id", v))
                .into_iter()
                .collect();
            let r = gw.get(path, &headers).await;
            let body = r.assert_gateway_error(status, code);
            let in_body = body["request_id"].as_str().unwrap().to_string();
            assert_eq!(
                r.header_all("x-request-id"),
                [in_body.as_str()],
                "body vs header: {r}"
            );
            if let Some(inc) = &incoming {
                assert_eq!(&in_body, inc, "incoming id kept: {r}");
            }
            let line = gw.log_line("stdout.log", &in_body).await;
            assert_eq!(line["status"], status, "{line}");
            assert_eq!(line["error"], code, "{line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Trace context
// ---------------------------------------------------------------------------------------------

/// A valid `traceparent` (and its `tracestate`) reach the backend unchanged; the log's trace_id
/// is its trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_traceparent_and_tracestate_reach_the_backend_unchanged() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let cases = [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "vendor=opaque-value",
            "0af7651916cd43dd8448eb211c80319c",
        ),
    ];
    for (i, (tp, ts, trace_id)) in cases.into_iter().enumerate() {
        let rid = format!("trace-valid-{i}");
        let r = gw
            .get(
                "/ok/trace",
                &[
                    ("traceparent", tp),
                    ("tracestate", ts),
                    ("x-request-id", &rid),
                ],
            )
            .await;
        let echo = r.echo();
        assert_eq!(echo.header("traceparent"), Some(tp), "{echo:?}");
        assert_eq!(echo.header("tracestate"), Some(ts), "{echo:?}");
        let line = gw.log_line("stdout.log", &rid).await;
        assert_eq!(line["trace_id"], trace_id, "{line}");
    }
}

/// No or an invalid `traceparent`: the backend gets a fresh valid one (version 00, lowercase hex,
/// non-zero ids) and no `tracestate`; the log's trace_id is the new trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_invalid_traceparent_starts_a_new_trace() {
    let fx = Fixture::new().await;
    let gw = LoggedGateway::start("stdout", &[], &[], &fx.config(1)).await;
    let incoming: [(Option<&str>, Option<&str>); 9] = [
        (None, None),
        (None, Some("rojo=00f067aa0ba902b7")),
        (
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("rojo=1"),
        ),
        (
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("rojo=2"),
        ),
        (
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("rojo=3"),
        ),
        (
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("rojo=4"),
        ),
        (
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
            Some("rojo=5"),
        ),
        (Some("00-4bf92f35-00f067aa0ba902b7-01"), Some("rojo=6")),
        (Some("garbage"), Some("rojo=7")),
    ];
    let mut traces = BTreeSet::new();
    for (i, (tp, ts)) in incoming.into_iter().enumerate() {
        let rid = format!("trace-new-{i}");
        let mut headers = vec![("x-request-id", rid.as_str())];
        if let Some(tp) = tp {
            headers.push(("traceparent", tp));
        }
        if let Some(ts) = ts {
            headers.push(("tracestate", ts));
        }
        let r = gw.get("/ok/trace", &headers).await;
        let echo = r.echo();
        let got = echo
            .header("traceparent")
            .unwrap_or_else(|| panic!("case {i}: backend got no traceparent: {echo:?}"));
        let (trace_id, _, _) = valid_traceparent(got)
            .unwrap_or_else(|| panic!("case {i}: backend got an invalid traceparent {got:?}"));
        if let Some(tp) = tp {
            assert_ne!(got, tp, "case {i}: invalid traceparent forwarded");
            if let Some(old_trace) = tp.split('-').nth(1) {
                assert_ne!(
                    trace_id,
                    old_trace.to_ascii_lowercase(),
                    "case {i}: the trace of an invalid traceparent must be restarted"
                );
            }
        }
        assert_eq!(
            echo.header("tracestate"),
            None,
            "case {i}: tracestate of a discarded trace forwarded: {echo:?}"
        );
        let line = gw.log_line("stdout.log", &rid).await;
        assert_eq!(line["trace_id"], trace_id.as_str(), "case {i}: {line}");
        assert!(traces.insert(trace_id), "case {i}: trace id reused");
    }
}
