//! W3C Trace Context (`traceparent`): propagate a valid one unchanged, start a trace when there
//! is none, and expose the trace id for the access log — so the gateway appears in distributed
//! traces without an OpenTelemetry SDK on the hot path.

/// Header names parsed once (a lookup by `&str` parses the name on every request).
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// A validated `traceparent`'s trace id, or a freshly minted header. Both are kept inline:
/// every request has one, so it costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceContext {
    /// The client's header is valid and is forwarded as is.
    Incoming { trace_id: Ascii<32> },
    /// None (or an invalid one) came in: this header must be set upstream, and an incoming
    /// `tracestate` dropped (it belonged to the discarded trace).
    Started { header: Ascii<55> },
}

impl TraceContext {
    pub fn trace_id(&self) -> &str {
        match self {
            TraceContext::Incoming { trace_id } => trace_id.as_str(),
            TraceContext::Started { header } => header.as_str().get(3..35).unwrap_or(""),
        }
    }
}

/// `N` bytes of ASCII (lower-case hex and dashes here), held inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ascii<const N: usize>([u8; N]);

impl<const N: usize> Ascii<N> {
    /// `s` when it is exactly `N` ASCII bytes.
    pub fn new(s: &str) -> Option<Self> {
        let bytes: [u8; N] = s.as_bytes().try_into().ok()?;
        bytes.is_ascii().then_some(Ascii(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Built only from ASCII (`new` checks it, `from_incoming` writes hex).
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl<const N: usize> std::fmt::Debug for Ascii<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The trace id of a valid version-00 (or future-version) `traceparent`.
pub fn parse(value: &str) -> Option<&str> {
    parts(value).map(|p| p.trace_id)
}

/// The fields of a valid `traceparent`, as lower-case hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    pub trace_id: &'a str,
    pub parent_id: &'a str,
    pub flags: &'a str,
}

/// The fields of a valid version-00 (or future-version) `traceparent`.
pub fn parts(value: &str) -> Option<Parts<'_>> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || !is_lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace_id.len() != 32 || !is_lower_hex(trace_id) || trace_id.bytes().all(|b| b == b'0') {
        return None;
    }
    if parent_id.len() != 16 || !is_lower_hex(parent_id) || parent_id.bytes().all(|b| b == b'0') {
        return None;
    }
    if flags.len() != 2 || !is_lower_hex(flags) {
        return None;
    }
    Some(Parts {
        trace_id,
        parent_id,
        flags,
    })
}

impl TraceContext {
    /// A trace this hop started replaces whatever `traceparent`/`tracestate` came in; an
    /// incoming valid one travels on untouched.
    pub fn set_upstream(&self, upstream: &mut pingora::http::RequestHeader) -> pingora::Result<()> {
        if let TraceContext::Started { header } = self {
            upstream.insert_header("traceparent", header.as_str())?;
            upstream.remove_header(&TRACESTATE);
        }
        Ok(())
    }
}

pub fn from_incoming(value: Option<&str>) -> TraceContext {
    match value.and_then(parse).and_then(Ascii::new) {
        Some(trace_id) => TraceContext::Incoming { trace_id },
        None => {
            // Random, non-zero ids from the thread-local fast RNG (W3C asks for uniqueness,
            // not secrecy), hex-encoded without the formatting machinery: every request
            // without a valid `traceparent` pays this.
            let trace = fastrand::u128(1..);
            let span = fastrand::u64(1..);
            let mut header = *b"00-00000000000000000000000000000000-0000000000000000-01";
            write_hex(&mut header[3..35], &trace.to_be_bytes());
            write_hex(&mut header[36..52], &span.to_be_bytes());
            TraceContext::Started {
                header: Ascii(header),
            }
        }
    }
}

/// Lower-case hex of `bytes` into `out` (twice as long).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_headers_are_kept_invalid_ones_restarted() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            from_incoming(Some(tp)),
            TraceContext::Incoming {
                trace_id: Ascii::new("4bf92f3577b34da6a3ce929d0e0e4736").expect("32 bytes")
            }
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            match from_incoming(Some(bad)) {
                started @ TraceContext::Started { header } => {
                    let header = header.as_str();
                    assert_eq!(parse(header), Some(started.trace_id()), "{header}");
                }
                other => panic!("accepted {bad}: {other:?}"),
            }
        }
    }
}
