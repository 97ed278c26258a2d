//! Per-response sanitising state for a route with `response_json`: decides whether a response
//! is subject to stripping, undoes gzip/deflate, enforces `max_body`, and streams the body
//! through the [`JsonStripper`].
//!
//! Compressed upstream bodies are decoded and sent to the client as identity: re-compressing
//! costs CPU on every response, and clients of an API gateway usually sit on fast links. The
//! upstream is asked for identity in the first place (`Accept-Encoding` is dropped on these
//! routes), so decoding is the fallback for upstreams that compress regardless.

use super::paths::{Mode, Rules};
use super::strip::{JsonStripper, StripError};
use flate2::write::{GzDecoder, ZlibDecoder};
use std::io::Write;
use std::sync::Arc;

/// Compressed bytes decoded per step (see [`BodyFilter::push`]).
const DECODE_STEP: usize = 512;

/// A route's compiled `response_json` policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Arc<Rules>,
    pub max_body: u64,
}

impl Policy {
    /// Compile `cfg`, found at YAML path `at` (`routes[i].response_json`).
    pub fn compile(
        cfg: &crate::config::ResponseJsonConfig,
        at: &str,
    ) -> Result<Policy, Vec<crate::config::Problem>> {
        use crate::config::Problem;
        let (mode, field, paths) = match (&cfg.remove, &cfg.keep) {
            (Some(r), None) => (Mode::Remove, "remove", r),
            (None, Some(k)) => (Mode::Keep, "keep", k),
            _ => {
                return Err(vec![Problem::new(
                    at,
                    "needs exactly one of remove: [paths] or keep: [paths]",
                )])
            }
        };
        let rules = Rules::compile(mode, paths).map_err(|errs| {
            errs.into_iter()
                .map(|(i, m)| Problem::new(format!("{at}.{field}[{i}]"), m))
                .collect::<Vec<_>>()
        })?;
        Ok(Policy {
            rules: Arc::new(rules),
            max_body: cfg.max_body.0,
        })
    }
}

/// `application/json` and any `+json` type (e.g. `application/problem+json`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

/// Parse `Content-Encoding`; `None` for encodings we cannot undo (the response must then be
/// refused rather than passed through unstripped).
pub fn encoding(value: Option<&str>) -> Option<Encoding> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Some(Encoding::Identity),
        Some(v) if v.is_empty() || v == "identity" => Some(Encoding::Identity),
        Some(v) if v == "gzip" || v == "x-gzip" => Some(Encoding::Gzip),
        Some(v) if v == "deflate" => Some(Encoding::Deflate),
        Some(_) => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyFilterError {
    #[error(transparent)]
    Json(#[from] StripError),
    #[error("response body larger than max_body")]
    TooLarge,
    #[error("cannot decode the upstream's compressed body")]
    Decode,
}

impl BodyFilterError {
    /// Bounded reason label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyFilterError::Json(StripError::TooDeep) => "too_deep",
            BodyFilterError::Json(StripError::KeyTooLong) => "key_too_long",
            BodyFilterError::Json(StripError::Malformed(_)) => "malformed",
            BodyFilterError::TooLarge => "too_large",
            BodyFilterError::Decode => "bad_encoding",
        }
    }
}

enum Decoder {
    Identity,
    Gzip(GzDecoder<Vec<u8>>),
    Deflate(ZlibDecoder<Vec<u8>>),
}

/// The state of one response being sanitised.
pub struct BodyFilter {
    stripper: JsonStripper,
    decoder: Decoder,
    max_body: u64,
    seen: u64,
}

impl BodyFilter {
    pub fn new(policy: &Policy, encoding: Encoding) -> BodyFilter {
        BodyFilter {
            stripper: JsonStripper::new(policy.rules.clone()),
            decoder: match encoding {
                Encoding::Identity => Decoder::Identity,
                Encoding::Gzip => Decoder::Gzip(GzDecoder::new(Vec::new())),
                Encoding::Deflate => Decoder::Deflate(ZlibDecoder::new(Vec::new())),
            },
            max_body: policy.max_body,
            seen: 0,
        }
    }

    /// Feed one upstream chunk; returns the sanitised bytes to send now.
    pub fn push(&mut self, chunk: &[u8], end: bool) -> Result<Vec<u8>, BodyFilterError> {
        let mut out = Vec::with_capacity(chunk.len());
        if let Decoder::Identity = self.decoder {
            self.account(chunk.len())?;
            self.stripper.feed(chunk, &mut out)?;
        } else {
            // Small compressed steps: deflate expands at most ~1000:1, so one step decodes to
            // well under a megabyte, and max_body is checked before the next — a compression
            // bomb cannot balloon memory.
            for piece in chunk.chunks(DECODE_STEP) {
                self.decode(piece, false, &mut out)?;
            }
            if end {
                self.decode(&[], true, &mut out)?;
            }
        }
        if end {
            self.stripper.finish(&mut out)?;
        }
        Ok(out)
    }

    fn account(&mut self, n: usize) -> Result<(), BodyFilterError> {
        self.seen += n as u64;
        if self.seen > self.max_body {
            Err(BodyFilterError::TooLarge)
        } else {
            Ok(())
        }
    }

    fn decode(
        &mut self,
        piece: &[u8],
        finish: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), BodyFilterError> {
        let decoded = match &mut self.decoder {
            Decoder::Identity => return Ok(()),
            Decoder::Gzip(d) => {
                d.write_all(piece).map_err(|_| BodyFilterError::Decode)?;
                if finish {
                    d.try_finish().map_err(|_| BodyFilterError::Decode)?;
                }
                std::mem::take(d.get_mut())
            }
            Decoder::Deflate(d) => {
                d.write_all(piece).map_err(|_| BodyFilterError::Decode)?;
                if finish {
                    d.try_finish().map_err(|_| BodyFilterError::Decode)?;
                }
                std::mem::take(d.get_mut())
            }
        };
        self.account(decoded.len())?;
        self.stripper.feed(&decoded, out)?;
        Ok(())
    }
}
