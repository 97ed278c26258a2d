//! Fuzz entry points: one function per cargo-fuzz target in `fuzz/fuzz_targets/`.
//!
//! They live in the library rather than in `fuzz/` so that `tests/fuzz_corpus_replay.rs` can
//! replay the committed corpora under a plain `cargo test` on the stable toolchain: an input
//! that once found a bug keeps guarding against it without nightly or libFuzzer. Each function
//! takes arbitrary bytes, drives the real code and states its invariants with `assert!`, so a
//! panic is a finding. Not part of the gateway's API (hidden from the docs).

use crate::auth::jwt::JwtProvider;
use crate::config::auth::JwtProviderConfig;
use crate::config::{Config, Problems};
use crate::listener::head_scan::{HeadScan, Scan};
use crate::response_json::paths::{Mode, Rules};
use crate::response_json::strip::{JsonStripper, StripError, MAX_KEY};
use crate::routing::normalize::{normalize, PathError};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// Path normalisation (DESIGN.md step 2): routing and forwarding both trust its output, so it
/// must be canonical. Checked, in both escaped-slash modes: absolute, no empty/dot segments
/// (a segment named `..` before its `;parameters` included), escapes left only for bytes that
/// must stay encoded and in upper case, no `%2F`/`%5C` left when decoding, never longer than
/// the input, borrowed only when unchanged, the routing path free of `;`, and a fixed point
/// (normalising again changes nothing) — otherwise a second hop could route the same request
/// differently.
pub fn normalize_path(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    for decode in [false, true] {
        normalize_path_in(&input, decode);
    }
}

fn normalize_path_in(input: &str, decode: bool) {
    let out = match normalize(input, decode) {
        Ok(out) => out,
        Err(e) => {
            let absolute = input.starts_with('/');
            assert_eq!(
                e == PathError::NotAbsolute,
                !absolute,
                "{e:?} for {input:?}"
            );
            return;
        }
    };
    let forward = &*out.forward;
    let route = out.route();
    for p in [forward, route] {
        assert!(p.starts_with('/'), "{input:?} -> {p:?}: not absolute");
        assert!(!p.contains("//"), "{input:?} -> {p:?}: empty segment");
        assert!(
            p.split('/')
                .map(|s| s.split(';').next().unwrap_or(""))
                .all(|s| s != "." && s != ".."),
            "{input:?} -> {p:?}: dot segment"
        );
        assert!(p.len() <= input.len(), "{input:?} -> {p:?}: grew");
        assert!(canonical_escapes(p), "{input:?} -> {p:?}: escape");
    }
    assert!(!route.contains(';'), "{input:?} -> {route:?}: parameters");
    if decode {
        assert!(
            !forward.contains("%2F") && !forward.contains("%5C"),
            "{input:?} -> {forward:?}: escaped slash left"
        );
    }
    assert!(
        out.found.parameters || !forward.contains(';'),
        "{input:?} -> {forward:?}: parameters not reported"
    );
    if let Cow::Borrowed(b) = out.forward {
        assert_eq!(b, input, "borrowed output must be the input");
    }
    match normalize(forward, decode) {
        Ok(again) => {
            assert_eq!(again.forward, forward, "{input:?}: not idempotent");
            assert_eq!(again.route(), route, "{input:?}: routing not idempotent");
        }
        Err(e) => panic!("{input:?} -> {forward:?} -> {e:?}"),
    }
}

/// Every `%` starts an upper-case escape of a byte outside RFC 3986's unreserved set.
fn canonical_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let upper_hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    (0..b.len()).filter(|&i| b[i] == b'%').all(|i| {
        let (Some(h), Some(l)) = (
            b.get(i + 1).copied().and_then(upper_hex),
            b.get(i + 2).copied().and_then(upper_hex),
        ) else {
            return false;
        };
        let v = h << 4 | l;
        !(v.is_ascii_alphanumeric() || b"-._~".contains(&v))
    })
}

/// One remove-mode path, both as configured and as steps for the reference model below
/// (`None` is `[]`, every element).
type RefPath = (&'static str, &'static [Option<&'static str>]);

const REMOVE: &[RefPath] = &[
    ("internal_cost", &[Some("internal_cost")]),
    ("debug", &[Some("debug")]),
    (
        "items[].supplier_id",
        &[Some("items"), None, Some("supplier_id")],
    ),
    ("a.b.c", &[Some("a"), Some("b"), Some("c")]),
    ("[].secret", &[None, Some("secret")]),
    ("m[]", &[Some("m"), None]),
    ("x[][].y", &[Some("x"), None, None, Some("y")]),
    ("naïve", &[Some("naïve")]),
];
const KEEP: &[&str] = &["id", "items[].a", "user.name", "[].id", "a.b", "é"];

fn strip_rules() -> &'static (Arc<Rules>, Arc<Rules>) {
    static RULES: OnceLock<(Arc<Rules>, Arc<Rules>)> = OnceLock::new();
    RULES.get_or_init(|| {
        let remove: Vec<&str> = REMOVE.iter().map(|(p, _)| *p).collect();
        let compile = |mode, paths: &[&str]| {
            Arc::new(Rules::compile(mode, paths).expect("fixed fuzz rules compile"))
        };
        (compile(Mode::Remove, &remove), compile(Mode::Keep, KEEP))
    })
}

fn strip_chunks<'a>(
    rules: &Arc<Rules>,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, StripError> {
    let mut s = JsonStripper::new(rules.clone());
    let mut out = Vec::new();
    for c in chunks {
        s.feed(c, &mut out)?;
    }
    s.finish(&mut out)?;
    Ok(out)
}

/// The streaming JSON stripper, with a remove and a keep rule set. Responses arrive in chunks
/// cut anywhere, so the result must not depend on where (whole, split at a data-derived point,
/// byte by byte). It must agree with serde_json on what is JSON (or the gateway would cut good
/// responses or pass bad ones), its output must be JSON, and in remove mode it must equal the
/// reference removal on the parsed document.
pub fn json_strip(data: &[u8]) {
    let (remove, keep) = strip_rules();
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let syntax = serde_json::from_slice::<serde::de::IgnoredAny>(data);
    let doc = serde_json::from_slice::<Value>(data).ok();
    let blank = data.iter().all(|b| b" \t\r\n".contains(b));
    for rules in [remove, keep] {
        let whole = strip_chunks(rules, [data]);
        let split = strip_chunks(rules, [&data[..cut], &data[cut..]]);
        assert_eq!(whole, split, "{:?} split at {cut}", rules.mode);
        let bytewise = strip_chunks(rules, data.chunks(1));
        assert_eq!(whole, bytewise, "{:?} byte by byte", rules.mode);
        let out = match whole {
            Ok(out) => out,
            Err(e) => {
                // What serde_json parses nests at most 128 deep (< MAX_DEPTH) and has valid
                // strings, so only an over-long key may fail.
                assert!(
                    doc.is_none() || data.len() > MAX_KEY,
                    "{:?}: rejected valid JSON: {e}",
                    rules.mode
                );
                continue;
            }
        };
        assert!(out.len() <= data.len(), "output grew");
        if blank {
            assert!(out.is_empty(), "blank body produced output");
            continue;
        }
        if let Err(e) = &syntax {
            // The stripper allows 512 levels, serde_json 128: only that difference is allowed.
            assert!(
                e.to_string().starts_with("recursion limit exceeded"),
                "{:?}: accepted what serde_json rejects: {e}",
                rules.mode
            );
            continue;
        }
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(&out).is_ok(),
            "output is not JSON"
        );
        let Some(doc) = &doc else { continue };
        let got: Value = match serde_json::from_slice(&out) {
            Ok(v) => v,
            Err(e) => panic!("{:?}: output does not parse: {e}", rules.mode),
        };
        if rules.mode == Mode::Remove {
            let mut want = doc.clone();
            for (_, steps) in REMOVE {
                remove_ref(&mut want, steps);
            }
            assert_eq!(got, want, "differs from reference removal");
        }
    }
}

/// Reference removal on a parsed document (duplicate keys are fine here: serde_json keeps the
/// last, and per-member removal commutes with that).
fn remove_ref(v: &mut Value, steps: &[Option<&str>]) {
    let Some((first, rest)) = steps.split_first() else {
        return;
    };
    match (first, v) {
        (Some(k), Value::Object(m)) if rest.is_empty() => {
            m.remove(*k);
        }
        (Some(k), Value::Object(m)) => {
            if let Some(child) = m.get_mut(*k) {
                remove_ref(child, rest);
            }
        }
        (None, Value::Array(items)) if rest.is_empty() => items.clear(),
        (None, Value::Array(items)) => items.iter_mut().for_each(|i| remove_ref(i, rest)),
        _ => {}
    }
}

/// Verifiers as production builds them: HS256 with issuer/audience, RS256 from a PEM, RS256
/// from a JWKS (kid selection), ES256 and EdDSA; keys are the test fixtures.
fn jwt_providers() -> &'static [JwtProvider] {
    static PROVIDERS: OnceLock<Vec<JwtProvider>> = OnceLock::new();
    PROVIDERS.get_or_init(|| {
        let file = |name: &str| {
            let path = format!("{}/{name}", env!("CARGO_MANIFEST_DIR"));
            serde_json::to_string(&path).expect("a path serialises")
        };
        [
            format!(
                "{{algorithms: [HS256], secret_file: {}, issuer: tollgate-demo, audience: demo}}",
                file("conf/demo-jwt-secret.txt")
            ),
            format!(
                "{{algorithms: [RS256, PS256], public_key_file: {}}}",
                file("tests/fixtures/rsa1_public.pem")
            ),
            format!(
                "{{algorithms: [RS256], jwks_file: {}}}",
                file("tests/fixtures/jwks.json")
            ),
            format!(
                "{{algorithms: [ES256], public_key_file: {}}}",
                file("tests/fixtures/ec_public.pem")
            ),
            format!(
                "{{algorithms: [EdDSA], public_key_file: {}}}",
                file("tests/fixtures/ed_public.pem")
            ),
        ]
        .iter()
        .map(|yaml| {
            let cfg: JwtProviderConfig = serde_yaml::from_str(yaml).expect("fixed provider yaml");
            JwtProvider::build("fuzz", &cfg, &[])
                .unwrap_or_else(|e| panic!("fuzz provider {yaml}: {e:?}"))
        })
        .collect()
    })
}

/// JWT verification with the fuzz input as the bearer token. Nothing derived from random bytes
/// can carry a valid signature, so any `Ok` is a forgery (or an accepted `alg: none`).
pub fn jwt_header(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    for (i, p) in jwt_providers().iter().enumerate() {
        if let Ok(id) = p.verify(&token) {
            panic!("provider {i} accepted {token:?} as {:?}", id.consumer);
        }
    }
}

/// Config loading and building (`tollgate check`, startup, reload). Never panics; a rejection always says
/// what is wrong; a shape error found by `parse` is reported unchanged by `load_str`.
/// Configs that would touch the outside world are skipped: backend host names (DNS lookups) and
/// key files that are not small regular files (`/dev/zero`, FIFOs, `/proc`).
pub fn config_load(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Config::parse(text);
    if let Ok(config) = &parsed {
        if !hermetic(config) {
            return;
        }
    }
    // What only building can find (key files, limit keys, CIDRs, JSON paths) is reported by
    // the composition root, with the same guarantees.
    let built = Config::load_str(text).and_then(|config| {
        crate::runtime::Runtime::build(&config, crate::drain::Draining::default()).map(|_| ())
    });
    match built {
        Ok(()) => assert!(parsed.is_ok(), "loaded what does not parse"),
        Err(Problems(problems)) => {
            assert!(!problems.is_empty(), "rejected without a problem");
            for p in &problems {
                assert!(
                    !p.message.trim().is_empty(),
                    "empty message at {:?}",
                    p.path
                );
            }
            if let Err(Problems(shape)) = &parsed {
                assert_eq!(shape, &problems, "parse and load_str disagree");
            }
        }
    }
}

fn hermetic(config: &Config) -> bool {
    let literal_or_unresolvable = |addr: &str| {
        addr.parse::<std::net::SocketAddr>().is_ok()
            || addr
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    };
    let backends_ok = config
        .upstreams
        .values()
        .flat_map(|u| &u.backends)
        .all(|b| literal_or_unresolvable(b.addr()));
    let small_file_or_missing = |p: &String| match std::fs::metadata(p) {
        Ok(m) => m.is_file() && m.len() > 0 && m.len() <= 1 << 20,
        Err(_) => true,
    };
    let files_ok = config.auth.jwt.values().all(|j| {
        [&j.secret_file, &j.public_key_file, &j.jwks_file]
            .into_iter()
            .flatten()
            .all(small_file_or_missing)
    });
    backends_ok && files_ok
}

/// The request-head scanner (`listener::head_scan`), which finds where each head ends (for the
/// head deadline) and refuses bare CR/LF, `Content-Length` with `Transfer-Encoding` and names
/// that CGI-style backends read as either, before Pingora parses the head. Reads are cut
/// anywhere, so the outcome must not depend on where
/// (whole, split at a data-derived point, byte by byte; `End` counted from the start of the
/// input), and it must equal the independent reference model below: the same `Malformed`
/// reason, `End` at the same offset, or `More`. A head must also end the same way without the
/// bytes after it. (httparse is only a transitive dependency, so no comparison with it.)
pub fn http_head(data: &[u8]) {
    let show = || data.escape_ascii().to_string();
    // The last byte: bytes after the head do not change the outcome, so the fuzzer can pick
    // any cut without disturbing the head.
    let cut = data
        .last()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let whole = scan_chunks([data]);
    let split = scan_chunks([&data[..cut], &data[cut..]]);
    assert_eq!(whole, split, "split at {cut}: {}", show());
    assert_eq!(
        whole,
        scan_chunks(data.chunks(1)),
        "byte by byte: {}",
        show()
    );
    assert_eq!(
        whole,
        head_ref(data),
        "differs from the reference: {}",
        show()
    );
    if let Scan::End(n) = whole {
        assert_eq!(scan_chunks([&data[..n]]), whole, "head alone: {}", show());
    }
}

/// Feeds the reads in order as the listener does, stopping at the first answer that is not
/// `More`; `End` is returned as an offset into the concatenated input.
fn scan_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Scan {
    let mut scan = HeadScan::new();
    let mut offset = 0;
    for chunk in chunks {
        match scan.feed(chunk) {
            Scan::More => offset += chunk.len(),
            Scan::End(n) => {
                assert!(
                    0 < n && n <= chunk.len(),
                    "End({n}) outside a {}-byte read",
                    chunk.len()
                );
                return Scan::End(offset + n);
            }
            malformed => return malformed,
        }
    }
    Scan::More
}

/// Reference model on the whole input, by searching it rather than with carried state: the
/// head starts after any leading CRLFs and ends after the first `CRLFCRLF` from there. A lone
/// LF or CR is noticed at the LF, or at the byte after the CR (a CR at the very end may still
/// be followed by LF), and wins if noticed before the head ends. A complete head is refused if
/// its field lines (after the request line) name both framing headers before their first `:`,
/// or if its `Content-Length` elements (across lines and comma lists, SP/HTAB trimmed) are not
/// all the same plain decimal number.
fn head_ref(data: &[u8]) -> Scan {
    let mut start = 0;
    while data[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let end = data[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| start + p + 4);
    // A lone CR at i is noticed at i + 1, a lone LF at j at j; j == i + 1 would be a CRLF, so
    // the lowest position in the data is also the first noticed.
    let lone = (0..data.len()).find_map(|i| match data[i] {
        b'\n' if i == 0 || data[i - 1] != b'\r' => Some((i, "bare LF in request head")),
        b'\r' if data.get(i + 1).is_some_and(|&b| b != b'\n') => {
            Some((i + 1, "bare CR in request head"))
        }
        _ => None,
    });
    if let Some((at, why)) = lone {
        if end.is_none_or(|end| at < end) {
            return Scan::Malformed(why);
        }
    }
    let Some(end) = end else {
        return Scan::More;
    };
    // Every line break in the head is a CRLF here, so splitting at LF leaves a CR on each line.
    let (mut content_length, mut transfer_encoding, mut lookalike) = (false, false, false);
    // A name of a framing header's length that differs from it only where the framing name has
    // `-` and the name has any byte but a letter or digit.
    let looks_like = |name: &[u8], framing: &[u8]| {
        name.len() == framing.len()
            && !name.eq_ignore_ascii_case(framing)
            && name.iter().zip(framing).all(|(n, f)| {
                n.eq_ignore_ascii_case(f) || (*f == b'-' && !n.is_ascii_alphanumeric())
            })
    };
    let mut lengths: Vec<Option<u64>> = Vec::new();
    for line in data[start..end - 2].split(|&b| b == b'\n').skip(1) {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = &line[..colon];
            transfer_encoding |= name.eq_ignore_ascii_case(b"transfer-encoding");
            lookalike |=
                looks_like(name, b"content-length") || looks_like(name, b"transfer-encoding");
            if name.eq_ignore_ascii_case(b"content-length") {
                content_length = true;
                let value = line[colon + 1..]
                    .strip_suffix(b"\r")
                    .unwrap_or(&line[colon + 1..]);
                for element in value.split(|&b| b == b',') {
                    let blank = |b: &u8| *b == b' ' || *b == b'\t';
                    let first = element.iter().position(|b| !blank(b));
                    let last = element.iter().rposition(|b| !blank(b));
                    let digits = match (first, last) {
                        (Some(f), Some(l)) => &element[f..=l],
                        _ => &[][..],
                    };
                    let n = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                        .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                        .flatten();
                    lengths.push(n);
                }
            }
        }
    }
    if content_length && transfer_encoding {
        return Scan::Malformed("both Content-Length and Transfer-Encoding");
    }
    if lookalike {
        return Scan::Malformed(
            "a header name that backends read as Content-Length or Transfer-Encoding",
        );
    }
    let agreeing = lengths.iter().all(|n| n.is_some() && *n == lengths[0]);
    if !agreeing {
        return Scan::Malformed("invalid or conflicting Content-Length");
    }
    Scan::End(end)
}
