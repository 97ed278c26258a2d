//! `compress`: response compression at the edge, zstd, br or gzip by the client's
//! `Accept-Encoding` q-values (RFC 9110 §12.5.3), for the listed media types and bodies of at
//! least `min_size`, streamed chunk by chunk.
//!
//! The negotiation is ours because Pingora 0.9.1's `ResponseCompressionCtx` ignores q-values
//! (`pingora-core/src/protocols/http/compression/mod.rs:597`, "TODO: support q value": it picks
//! the first listed coding, so `gzip;q=0` would be *chosen*) and decides compressibility by its
//! own fixed type list and 20-byte floor (`mod.rs:990`). Its encoders are not used either: its
//! brotli encoder only `flush()`es at the end of the body (`compression/brotli.rs:112-116`)
//! and never writes the final meta-block, so strict decoders reject the stream, and none of
//! them flushes between chunks, so a streamed response (server-sent events) reached the client
//! only when the upstream finished. [`Streaming`] drives the same `brotli`, `flate2` and `zstd`
//! crates, flushes after each chunk and finishes the stream at the end.

use crate::config::edge::CompressConfig;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::compression::Encode;

/// A content coding the gateway can produce, in its order of preference on equal q-values
/// (smallest output and cheapest decode first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Zstd,
    Brotli,
    Gzip,
}

impl Coding {
    const PREFERENCE: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// A streaming encoder of this coding.
    pub fn new_encoder(self) -> Option<Encoder> {
        self.encoder().map(Encoder)
    }

    /// Levels for on-the-fly compression of API responses: each codec's fast end, where
    /// most of the size is won for little CPU (brotli's higher levels cost 10x for a few %).
    fn encoder(self) -> Option<Box<dyn Encode + Send + Sync>> {
        match self {
            // 4 KiB internal buffer, window 2^22 (the format's default).
            Coding::Brotli => Some(Streaming::boxed(
                brotli::CompressorWriter::new(Vec::new(), 4096, 4, 22),
                "br",
            )),
            Coding::Gzip => Some(Streaming::boxed(
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6)),
                "gzip",
            )),
            Coding::Zstd => zstd::stream::write::Encoder::new(Vec::new(), 3)
                .ok()
                .map(|w| Streaming::boxed(w, "zstd")),
        }
    }
}

/// The coding to send for this `Accept-Encoding`, or `None` for identity. No header means no
/// compression (a client that says nothing may not decode anything); `q=0` refuses a coding;
/// `*` stands for codings not named; identity wins only when explicitly weighed higher.
pub fn negotiate(accept_encoding: Option<&str>) -> Option<Coding> {
    let header = accept_encoding?;
    let mut named = [None::<f32>; 3];
    let (mut star, mut identity) = (None::<f32>, None::<f32>);
    for entry in header.split(',') {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or("").trim();
        if coding.is_empty() {
            continue;
        }
        let Some(q) = quality(parts) else {
            continue;
        };
        let slot = if coding == "*" {
            &mut star
        } else if coding.eq_ignore_ascii_case("identity") {
            &mut identity
        } else if let Some(i) = Coding::PREFERENCE.iter().position(|c| {
            coding.eq_ignore_ascii_case(c.token())
                || (*c == Coding::Gzip && coding.eq_ignore_ascii_case("x-gzip"))
        }) {
            &mut named[i]
        } else {
            continue;
        };
        // A coding listed twice keeps its most favourable weight.
        *slot = Some(slot.map_or(q, |old: f32| old.max(q)));
    }
    // Identity is always acceptable (RFC 9110 §12.5.3) but is preferred over a coding only
    // when the client weighs it higher explicitly: a listed coding means "I can decode it".
    let identity = identity.unwrap_or(0.0);
    let mut best: Option<(Coding, f32)> = None;
    for (i, coding) in Coding::PREFERENCE.iter().enumerate() {
        let q = named[i].or(star).unwrap_or(0.0);
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((*coding, q));
        }
    }
    best.filter(|(_, q)| *q >= identity).map(|(c, _)| c)
}

/// The `q` parameter (default 1); `None` for a malformed weight, which voids the entry.
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> Option<f32> {
    let mut q = 1.0;
    for p in params {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("q") {
            let v = v.trim();
            let well_formed = v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            q = v
                .parse::<f32>()
                .ok()
                .filter(|q| well_formed && (0.0..=1.0).contains(q))?;
        }
    }
    Some(q)
}

/// A route's compiled `compress` section.
#[derive(Debug, Clone)]
pub struct Compress {
    /// Lowercase `type/subtype`, or `type/` for a `type/*` pattern.
    types: Vec<String>,
    min_size: u64,
}

impl Compress {
    pub fn new(cfg: &CompressConfig) -> Compress {
        Compress {
            types: cfg
                .types
                .iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .map(|t| t.strip_suffix('*').map(str::to_owned).unwrap_or(t))
                .collect(),
            min_size: cfg.min_size.0,
        }
    }

    fn listed(&self, content_type: &str) -> bool {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.types.iter().any(|t| {
            if t.ends_with('/') {
                media.starts_with(t.as_str()) && media.len() > t.len()
            } else {
                media == *t
            }
        })
    }

    /// Whether this response would be compressed for a client that accepts it: it has a body
    /// (not HEAD, 1xx, 204, 304), is whole (not 206 or `Content-Range`), is not encoded
    /// already, allows transformation, has a listed type, and is not declared smaller than
    /// `min_size` (an unknown length is compressed).
    pub fn eligible(&self, head_request: bool, resp: &ResponseHeader) -> bool {
        let status = resp.status.as_u16();
        let header = |name: http::HeaderName| resp.headers.get(name).and_then(|v| v.to_str().ok());
        // Every line and list element: `Content-Encoding: identity` then `gzip` is gzip.
        let encoded = resp
            .headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"));
        let no_transform = resp
            .headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
                })
            });
        let small = header(http::header::CONTENT_LENGTH)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n == 0 || n < self.min_size);
        !head_request
            && !matches!(status, 100..=199 | 204 | 206 | 304)
            && !resp.headers.contains_key(http::header::CONTENT_RANGE)
            && !encoded
            && !no_transform
            && !small
            && header(http::header::CONTENT_TYPE).is_some_and(|t| self.listed(t))
    }

    /// Decide on the response head: `Vary: Accept-Encoding` on every eligible response (the
    /// representation depends on it), and when a coding was negotiated, the head of the
    /// encoded representation (`Content-Encoding`, no `Content-Length`, weak `ETag`, no
    /// `Accept-Ranges`) plus the encoder for its body.
    pub fn on_response_head(
        &self,
        head_request: bool,
        accept_encoding: Option<&str>,
        resp: &mut ResponseHeader,
    ) -> pingora::Result<Option<Encoder>> {
        let Some(coding) = self.choose(head_request, accept_encoding, resp)? else {
            return Ok(None);
        };
        let Some(encoder) = coding.encoder() else {
            return Ok(None);
        };
        encoded_head(coding, resp)?;
        Ok(Some(Encoder(encoder)))
    }

    /// The first half of [`Compress::on_response_head`]: `Vary: Accept-Encoding` on an
    /// eligible response and the coding negotiated, the head otherwise untouched (a cache hit
    /// may have that coding's bytes already).
    pub fn choose(
        &self,
        head_request: bool,
        accept_encoding: Option<&str>,
        resp: &mut ResponseHeader,
    ) -> pingora::Result<Option<Coding>> {
        if !self.eligible(head_request, resp) {
            return Ok(None);
        }
        super::cors::add_vary(resp, "Accept-Encoding")?;
        Ok(negotiate(accept_encoding))
    }

    /// A 304 the cache answers for a stored response: the validators and `Vary` that the 200
    /// this client would get carries (RFC 9110 §15.4.5), i.e. `Vary: Accept-Encoding` when the
    /// stored response is compressible, and the weak `ETag` when this client's 200 would be
    /// encoded.
    pub fn not_modified_head(
        &self,
        stored: &ResponseHeader,
        accept_encoding: Option<&str>,
        resp: &mut ResponseHeader,
    ) -> pingora::Result<()> {
        if !self.eligible(false, stored) {
            return Ok(());
        }
        super::cors::add_vary(resp, "Accept-Encoding")?;
        if negotiate(accept_encoding).is_some() {
            weaken_etag(resp)?;
        }
        Ok(())
    }
}

/// The head of the `coding` representation: `Content-Encoding`, no `Content-Length` (the
/// caller sets it when it knows it), weak `ETag`, no `Accept-Ranges`.
pub fn encoded_head(coding: Coding, resp: &mut ResponseHeader) -> pingora::Result<()> {
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.remove_header(&http::header::ACCEPT_RANGES);
    resp.insert_header(http::header::CONTENT_ENCODING, coding.token())?;
    weaken_etag(resp)
}

/// An encoded representation is not byte-for-byte the one a strong `ETag` names.
fn weaken_etag(resp: &mut ResponseHeader) -> pingora::Result<()> {
    let strong = resp
        .headers
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|e| e.starts_with('"'))
        .map(|e| format!("W/{e}"));
    if let Some(weak) = strong {
        resp.insert_header(http::header::ETAG, weak)?;
    }
    Ok(())
}

/// A compressor writing into a `Vec` that can be drained between chunks and finished at the
/// end of the body.
trait Sink: std::io::Write + Send + Sync {
    fn sink(&mut self) -> &mut Vec<u8>;
    fn finish(self) -> std::io::Result<Vec<u8>>;
}

impl Sink for brotli::CompressorWriter<Vec<u8>> {
    fn sink(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    /// `into_inner` writes the last meta-block (RFC 7932 `ISLAST`); only then is it complete.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        Ok(self.into_inner())
    }
}

impl Sink for flate2::write::GzEncoder<Vec<u8>> {
    fn sink(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    fn finish(self) -> std::io::Result<Vec<u8>> {
        flate2::write::GzEncoder::finish(self)
    }
}

impl Sink for zstd::stream::write::Encoder<'static, Vec<u8>> {
    fn sink(&mut self) -> &mut Vec<u8> {
        self.get_mut()
    }
    fn finish(self) -> std::io::Result<Vec<u8>> {
        zstd::stream::write::Encoder::finish(self)
    }
}

/// One response body's compressor, flushed after every chunk: what the upstream has sent is
/// decodable by the client at once. Without the flush an event stream (`text/event-stream`
/// under `text/*`) or a long poll sat in the compressor until the upstream finished; the
/// price is a few bytes of sync marker per upstream chunk.
struct Streaming<W: Sink> {
    writer: Option<W>,
    name: &'static str,
    total_in: usize,
    total_out: usize,
    spent: std::time::Duration,
}

impl<W: Sink> Streaming<W> {
    fn boxed(writer: W, name: &'static str) -> Box<dyn Encode + Send + Sync>
    where
        W: 'static,
    {
        Box::new(Streaming {
            writer: Some(writer),
            name,
            total_in: 0,
            total_out: 0,
            spent: std::time::Duration::ZERO,
        })
    }
}

impl<W: Sink> Encode for Streaming<W> {
    fn encode(&mut self, input: &[u8], end: bool) -> pingora::Result<Bytes> {
        use pingora::{ErrorType, OrErr};
        let start = std::time::Instant::now();
        let Some(writer) = self.writer.as_mut() else {
            return pingora::Error::e_explain(ErrorType::InternalError, "stream finished");
        };
        self.total_in += input.len();
        writer
            .write_all(input)
            .or_err(ErrorType::InternalError, "while compressing")?;
        let out = match self.writer.take() {
            Some(w) if end => w
                .finish()
                .or_err(ErrorType::InternalError, "while compressing")?,
            Some(mut w) => {
                w.flush()
                    .or_err(ErrorType::InternalError, "while compressing")?;
                let out = std::mem::take(w.sink());
                self.writer = Some(w);
                out
            }
            None => Vec::new(),
        };
        self.total_out += out.len();
        self.spent += start.elapsed();
        Ok(Bytes::from(out))
    }

    fn stat(&self) -> (&'static str, usize, usize, std::time::Duration) {
        (self.name, self.total_in, self.total_out, self.spent)
    }
}

/// The streaming encoder of one response body.
pub struct Encoder(Box<dyn Encode + Send + Sync>);

impl Encoder {
    /// Replace `body` with its encoded bytes; at the end, the encoder's tail is flushed too.
    pub fn on_body(
        &mut self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> pingora::Result<()> {
        let input = body.take().unwrap_or_default();
        let out = self.0.encode(&input, end_of_stream)?;
        *body = (!out.is_empty()).then_some(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the upstream has sent so far decodes at once, before the body ends: an event
    /// stream reaches the client event by event.
    #[test]
    fn every_chunk_is_decodable_before_the_end() {
        use std::io::Write;
        fn decoded(coding: Coding, bytes: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            match coding {
                Coding::Gzip => {
                    let mut d = flate2::write::GzDecoder::new(&mut out);
                    d.write_all(bytes).unwrap();
                    d.flush().unwrap();
                }
                Coding::Zstd => {
                    let mut d = zstd::stream::write::Decoder::new(&mut out).unwrap();
                    d.write_all(bytes).unwrap();
                    d.flush().unwrap();
                }
                Coding::Brotli => {
                    let mut d = brotli::DecompressorWriter::new(&mut out, 4096);
                    d.write_all(bytes).unwrap();
                    d.flush().unwrap();
                }
            }
            out
        }
        for coding in Coding::PREFERENCE {
            let mut enc = coding.new_encoder().expect("encoder");
            let mut wire = Vec::new();
            let mut sent = Vec::new();
            for event in ["data: one\n\n", "data: two\n\n"] {
                let mut body = Some(Bytes::from(event));
                enc.on_body(&mut body, false).unwrap();
                wire.extend_from_slice(&body.unwrap_or_default());
                sent.extend_from_slice(event.as_bytes());
                assert_eq!(
                    decoded(coding, &wire),
                    sent,
                    "{coding:?} held back {event:?}"
                );
            }
            let mut tail = None;
            enc.on_body(&mut tail, true).unwrap();
            wire.extend_from_slice(&tail.unwrap_or_default());
            assert_eq!(decoded(coding, &wire), sent, "{coding:?} whole stream");
        }
    }

    #[test]
    fn q_values_choose_and_zero_refuses() {
        assert_eq!(negotiate(None), None);
        assert_eq!(negotiate(Some("")), None);
        assert_eq!(
            negotiate(Some("gzip, deflate, br, zstd")),
            Some(Coding::Zstd)
        );
        assert_eq!(negotiate(Some("gzip, br")), Some(Coding::Brotli));
        assert_eq!(negotiate(Some("gzip;q=1, br;q=0.5")), Some(Coding::Gzip));
        assert_eq!(negotiate(Some("br;q=0, gzip;q=0.1")), Some(Coding::Gzip));
        assert_eq!(negotiate(Some("gzip;q=0")), None);
        assert_eq!(negotiate(Some("deflate")), None);
        assert_eq!(negotiate(Some("x-gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(Some("GZIP ; Q=0.8")), Some(Coding::Gzip));
    }

    #[test]
    fn star_and_identity() {
        assert_eq!(negotiate(Some("*")), Some(Coding::Zstd));
        assert_eq!(negotiate(Some("*;q=0.5, zstd;q=0")), Some(Coding::Brotli));
        assert_eq!(negotiate(Some("*;q=0")), None);
        assert_eq!(negotiate(Some("identity")), None);
        assert_eq!(
            negotiate(Some("gzip;q=0.5, identity")),
            None,
            "identity strictly preferred"
        );
        assert_eq!(negotiate(Some("gzip, identity;q=0")), Some(Coding::Gzip));
        assert_eq!(
            negotiate(Some("gzip;q=0.5, identity;q=0.5")),
            Some(Coding::Gzip)
        );
    }

    #[test]
    fn malformed_weights_void_their_entry() {
        for bad in [
            "gzip;q=2",
            "gzip;q=-1",
            "gzip;q=abc",
            "gzip;q=0.12345",
            "gzip;q",
            "gzip;q=1e0",
        ] {
            assert_eq!(negotiate(Some(bad)), None, "{bad}");
        }
        assert_eq!(negotiate(Some("br;q=9, gzip")), Some(Coding::Gzip));
    }

    fn policy() -> Compress {
        Compress::new(
            &serde_yaml::from_str("{types: [application/json, \"text/*\"], min_size: 100}")
                .unwrap(),
        )
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn only_listed_types_of_sufficient_size() {
        let p = policy();
        let ok = |h: &[(&str, &str)]| p.eligible(false, &resp(200, h));
        assert!(ok(&[("content-type", "application/json; charset=utf-8")]));
        assert!(ok(&[
            ("content-type", "text/html"),
            ("content-length", "100")
        ]));
        assert!(ok(&[("content-type", "Text/CSV")]));
        assert!(!ok(&[("content-type", "text/")]));
        assert!(!ok(&[("content-type", "image/png")]));
        assert!(!ok(&[("content-type", "application/jsonx")]));
        assert!(!ok(&[]));
        assert!(!ok(&[
            ("content-type", "text/html"),
            ("content-length", "99")
        ]));
        assert!(!ok(&[
            ("content-type", "text/html"),
            ("content-length", "0")
        ]));
        assert!(!ok(&[
            ("content-type", "text/html"),
            ("content-encoding", "gzip")
        ]));
        assert!(ok(&[
            ("content-type", "text/html"),
            ("content-encoding", "identity")
        ]));
        assert!(!ok(&[
            ("content-type", "text/html"),
            ("cache-control", "public, no-transform")
        ]));
        assert!(!ok(&[
            ("content-type", "text/html"),
            ("content-range", "bytes 0-1/2")
        ]));
    }

    #[test]
    fn never_for_head_or_bodiless_or_partial() {
        let p = policy();
        let json = [("content-type", "application/json")];
        assert!(!p.eligible(true, &resp(200, &json)));
        for status in [204, 206, 304, 101] {
            assert!(!p.eligible(false, &resp(status, &json)), "{status}");
        }
        assert!(p.eligible(false, &resp(404, &json)));
    }

    #[test]
    fn brotli_streams_are_finished() {
        let mut enc = Coding::Brotli.encoder().expect("br");
        let mut out = enc.encode(&b"x".repeat(5000), false).unwrap().to_vec();
        out.extend_from_slice(&enc.encode(b"tail", true).unwrap());
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut brotli::Decompressor::new(&out[..], 4096), &mut plain)
            .expect("a complete brotli stream");
        assert_eq!(plain.len(), 5004);
    }

    #[test]
    fn head_of_the_encoded_representation_and_streamed_body() {
        let p = policy();
        let mut r = resp(
            200,
            &[
                ("content-type", "text/plain"),
                ("content-length", "500"),
                ("etag", "\"v1\""),
                ("accept-ranges", "bytes"),
            ],
        );
        let mut enc = p
            .on_response_head(false, Some("gzip"), &mut r)
            .unwrap()
            .expect("encoder");
        assert_eq!(r.headers["content-encoding"], "gzip");
        assert_eq!(r.headers["etag"], "W/\"v1\"");
        assert_eq!(r.headers["vary"], "Accept-Encoding");
        assert!(r.headers.get("content-length").is_none());
        assert!(r.headers.get("accept-ranges").is_none());
        let mut out = Vec::new();
        for (chunk, end) in [("a".repeat(250), false), ("b".repeat(250), true)] {
            let mut body = Some(Bytes::from(chunk));
            enc.on_body(&mut body, end).unwrap();
            out.extend_from_slice(&body.unwrap_or_default());
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&out[..]), &mut text)
            .unwrap();
        assert_eq!(text, format!("{}{}", "a".repeat(250), "b".repeat(250)));
        // eligible but not accepted: Vary only
        let mut r = resp(200, &[("content-type", "text/plain")]);
        assert!(p
            .on_response_head(false, Some("identity"), &mut r)
            .unwrap()
            .is_none());
        assert_eq!(r.headers["vary"], "Accept-Encoding");
        assert!(r.headers.get("content-encoding").is_none());
    }
}
