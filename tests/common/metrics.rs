//! The admin `/metrics` exposition, read one way by every test: [`parse`] is a strict parser for
//! the Prometheus text format (0.0.4) that records every syntax or structure problem it finds
//! (a well-formed exposition has none) and answers value queries ([`Exposition::value`],
//! [`Exposition::sum`], [`Exposition::by`], or [`value`] on the text). [`scrape`], [`scrape_until`]
//! and [`metrics_text`] fetch it from a gateway.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{send, Gateway, Resp};

// ---------------------------------------------------------------------------------------------
// A strict parser for the Prometheus text exposition format (0.0.4)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Fetching
// ---------------------------------------------------------------------------------------------

/// The value of the sample `name` with exactly these labels in the exposition `text`.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse(text).value(name, labels)
}

/// The text of the gateway's admin `/metrics` (asserted 200).
pub async fn metrics_text(gw: &Gateway) -> String {
    let r = gw.admin_get("/metrics").await;
    assert_eq!(r.status, 200, "admin /metrics: {r}");
    r.text()
}

/// `GET /metrics` on the admin port, asserted 200 and `text/plain`: the response, its text and
/// the parsed exposition.
pub async fn scrape(client: &reqwest::Client, admin_port: u16) -> (Resp, String, Exposition) {
    let url = format!("http://127.0.0.1:{admin_port}/metrics");
    let r = send(client, "GET", &url, &[]).await;
    assert_eq!(r.status, 200, "GET /metrics: {r}");
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain")),
        "GET /metrics on 127.0.0.1:{admin_port} is not an exposition: {r}"
    );
    let text = r.text();
    let exp = parse(&text);
    (r, text, exp)
}

/// Scrapes until `pred` holds (≤ 10 s), returning that scrape; panics with the last one.
pub async fn scrape_until(
    client: &reqwest::Client,
    admin_port: u16,
    what: &str,
    pred: impl Fn(&Exposition) -> bool,
) -> (String, Exposition) {
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
