//! A byte-level check of chunked request bodies as they arrive, before Pingora parses them.
//!
//! Pingora frames chunked bodies with httparse's `parse_chunk_size`, which is lenient where
//! RFC 9112 §7.1 is not: a size line with no hex digit at all is read as a last chunk, so the
//! bytes after it would reach the backend as a new request while other parsers read them as
//! body. This scanner follows the grammar strictly and says where the first byte is that breaks
//! it; the listener then never hands that byte or anything after it to Pingora.
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size   = 1*HEXDIG
//! chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! ```
//!
//! Memory is constant: nothing is buffered, only counted. Extensions and trailer lines are
//! bounded so that a client cannot make a size line last forever.

/// Longest trailer section accepted, in bytes.
const MAX_LINE: usize = 8 * 1024;
/// Longest chunk extension accepted. Pingora refuses a chunk-size line that is still incomplete
/// after 8 KiB; refusing well below that here means Pingora never refuses a line this scanner
/// let through, after the head had already gone to a backend.
const MAX_EXTENSION: usize = 4 * 1024;
/// httparse (and so Pingora) refuses a chunk size of more than 16 hex digits, leading zeros
/// included; so does this scanner, for the same reason.
const MAX_SIZE_DIGITS: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size (`digits` so far).
    Size {
        value: u64,
        digits: u32,
    },
    /// Whitespace after the size: only `;` may follow.
    SizeSpace {
        value: u64,
    },
    /// A chunk extension, up to CR.
    Extension {
        value: u64,
        len: usize,
    },
    /// The LF after the size line's CR.
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// A trailer field line (or the final empty line when `len` is 0 at CR).
    Trailer {
        len: usize,
        total: usize,
    },
    TrailerLf {
        empty: bool,
        total: usize,
    },
    Done,
}

/// What a run of bytes did to the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunks {
    /// The body goes on past these bytes.
    More,
    /// The body ends just before this index.
    End(usize),
    /// The byte at this index breaks the chunked grammar.
    Malformed(usize, &'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkScan {
    state: State,
}

impl Default for ChunkScan {
    fn default() -> Self {
        ChunkScan {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl ChunkScan {
    pub fn new() -> ChunkScan {
        ChunkScan::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Chunks {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data { remaining } = self.state {
                let take = remaining.min((bytes.len() - i) as u64);
                i += take as usize;
                self.state = if take == remaining {
                    State::DataCr
                } else {
                    State::Data {
                        remaining: remaining - take,
                    }
                };
                continue;
            }
            match self.step(bytes[i]) {
                Ok(true) => return Chunks::End(i + 1),
                Ok(false) => i += 1,
                Err(why) => return Chunks::Malformed(i, why),
            }
        }
        Chunks::More
    }

    /// One byte outside chunk data; `Ok(true)` when it ends the body.
    fn step(&mut self, b: u8) -> Result<bool, &'static str> {
        use State::*;
        self.state = match (self.state, b) {
            (Size { digits, .. }, _) if b.is_ascii_hexdigit() && digits >= MAX_SIZE_DIGITS => {
                return Err("chunk size of more than 16 hex digits")
            }
            (Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                let digit = u64::from(hex(b));
                let value = value
                    .checked_mul(16)
                    .and_then(|v| v.checked_add(digit))
                    .ok_or("chunk size too large")?;
                Size {
                    value,
                    digits: digits + 1,
                }
            }
            (Size { digits: 0, .. }, _) => return Err("chunk size without a hex digit"),
            (Size { value, .. }, b'\r') => SizeLf { value },
            (Size { value, .. } | SizeSpace { value }, b' ' | b'\t') => SizeSpace { value },
            (Size { value, .. } | SizeSpace { value }, b';') => Extension { value, len: 0 },
            (Size { .. } | SizeSpace { .. }, _) => return Err("invalid byte after chunk size"),
            (Extension { value, .. }, b'\r') => SizeLf { value },
            (Extension { .. }, _) if is_ctl(b) => return Err("control byte in chunk extension"),
            (Extension { len, .. }, _) if len >= MAX_EXTENSION => {
                return Err("chunk extension too long")
            }
            (Extension { value, len }, _) => Extension {
                value,
                len: len + 1,
            },
            (SizeLf { value: 0 }, b'\n') => Trailer { len: 0, total: 0 },
            (SizeLf { value }, b'\n') => Data { remaining: value },
            (SizeLf { .. }, _) => return Err("chunk size line not ended by CRLF"),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size {
                value: 0,
                digits: 0,
            },
            (DataCr | DataLf, _) => return Err("chunk data not followed by CRLF"),
            (Trailer { len, total }, b'\r') => TrailerLf {
                empty: len == 0,
                total,
            },
            (Trailer { .. }, b'\n') => return Err("bare LF in chunked trailer"),
            (Trailer { .. }, _) if is_ctl(b) => return Err("control byte in chunked trailer"),
            (Trailer { total, .. }, _) if total >= MAX_LINE => return Err("trailer too long"),
            (Trailer { len, total }, _) => Trailer {
                len: len + 1,
                total: total + 1,
            },
            (TrailerLf { empty: true, .. }, b'\n') => {
                self.state = Done;
                return Ok(true);
            }
            (TrailerLf { total, .. }, b'\n') => Trailer { len: 0, total },
            (TrailerLf { .. }, _) => return Err("bare CR in chunked trailer"),
            (Data { .. }, _) => unreachable!("chunk data is skipped in feed"),
            (Done, _) => return Ok(true),
        };
        Ok(false)
    }
}

/// Control bytes other than HTAB, which no extension or trailer field may hold (RFC 9110 §5.5).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(body: &[u8]) -> Chunks {
        ChunkScan::new().feed(body)
    }

    #[test]
    fn well_formed_bodies_end_where_they_end() {
        let body =
            b"5\r\nhello\r\n1a;name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nGET /next";
        assert_eq!(scan(body), Chunks::End(body.len() - 9));
        let trailers = b"3 ; x\r\nabc\r\n000\r\nX-Sum: 1\r\nY: 2\r\n\r\n";
        assert_eq!(scan(trailers), Chunks::End(trailers.len()));
        assert_eq!(scan(b"A\r\n0123456789"), Chunks::More);
    }

    #[test]
    fn byte_by_byte_is_the_same_as_whole() {
        let body = b"4\r\nwiki\r\n0;last\r\nT: v\r\n\r\n";
        let mut s = ChunkScan::new();
        for (i, b) in body.iter().enumerate() {
            let got = s.feed(std::slice::from_ref(b));
            if i + 1 == body.len() {
                assert_eq!(got, Chunks::End(1));
            } else {
                assert_eq!(got, Chunks::More, "at {i}");
            }
        }
    }

    #[test]
    fn size_lines_without_a_hex_digit_or_with_garbage_are_malformed() {
        for (body, at) in [
            (&b"\r\nGET /admin HTTP/1.1\r\n"[..], 0),
            (b";ext=1\r\n", 0),
            (b"5 x\r\nhello\r\n", 2),
            (b"5x\r\nhello\r\n", 1),
            (b"-5\r\n", 0),
            (b"0x5\r\n", 1),
            (b" 5\r\n", 0),
            (b"5\nhello", 1),
            (b"5;\x01\x7f\"x\r\nhello", 2),
            (b"5;a=b\nhello", 5),
            (b"5\r\nhello\r\n\r\n0\r\n\r\n", 10),
            (b"5\r\nhelloXX", 8),
            (b"11111111111111111\r\n", 16),
            // Leading zeros count: httparse refuses the 17th digit whatever its value.
            (b"00000000000000005\r\nhello\r\n", 16),
            (b"0\r\nX: y\n\r\n", 7),
        ] {
            match scan(body) {
                Chunks::Malformed(i, _) => assert_eq!(i, at, "{}", body.escape_ascii()),
                other => panic!("{} -> {other:?}", body.escape_ascii()),
            }
        }
    }

    #[test]
    fn long_extensions_and_trailers_are_bounded() {
        let mut body = b"1;".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_EXTENSION + 1));
        assert!(matches!(
            scan(&body),
            Chunks::Malformed(_, "chunk extension too long")
        ));
        let mut body = b"0\r\n".to_vec();
        for _ in 0..MAX_LINE / 7 + 1 {
            body.extend_from_slice(b"X: 1234\r\n");
        }
        assert!(matches!(
            scan(&body),
            Chunks::Malformed(_, "trailer too long")
        ));
    }
}
