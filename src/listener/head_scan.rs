//! A byte-level look at each request head as it arrives, before Pingora parses it.
//!
//! It finds where the head ends (for the head deadline) and refuses the framing ambiguities
//! that Pingora resolves silently: a head with both `Content-Length` and `Transfer-Encoding`
//! (Pingora lets chunked win and drops `Content-Length` before any filter can see both — the
//! classic CL.TE / TE.CL smuggling shape), and line endings other than CRLF (a lone LF or CR,
//! which parsers along a chain of proxies disagree about). RFC 9112 §6.1 and §2.2 allow a
//! server to reject both; a gateway in front of unknown backends should.

/// What one chunk of bytes says about the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The head goes on past these bytes.
    More,
    /// The head ends just before this index.
    End(usize),
    /// The head is malformed; the connection must be refused.
    Malformed(&'static str),
}

/// Header names we must see, lowercased; longer names are never compared.
const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const NAME_MAX: usize = 17;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadScan {
    /// Lines completed so far (the request line is line 0).
    line: usize,
    /// Bytes in the current line, CR excluded.
    line_len: usize,
    after_cr: bool,
    /// Still inside the current line's field name (before `:`).
    in_name: bool,
    name: [u8; NAME_MAX],
    name_len: usize,
    content_length: bool,
    transfer_encoding: bool,
}

impl HeadScan {
    pub fn new() -> HeadScan {
        HeadScan::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Scan {
        let mut i = 0;
        while i < bytes.len() {
            if !self.after_cr && !self.in_name && self.line_len > 0 {
                // Inside the request line or a field value: nothing matters until CR or LF.
                match memchr::memchr2(b'\r', b'\n', &bytes[i..]) {
                    None => {
                        self.line_len += bytes.len() - i;
                        return Scan::More;
                    }
                    Some(k) => {
                        self.line_len += k;
                        i += k;
                    }
                }
            }
            let b = bytes[i];
            i += 1;
            if self.after_cr {
                if b != b'\n' {
                    return Scan::Malformed("bare CR in request head");
                }
                self.after_cr = false;
                if let Some(done) = self.end_line() {
                    return done.map_or(Scan::End(i), Scan::Malformed);
                }
                continue;
            }
            match b {
                b'\r' => self.after_cr = true,
                b'\n' => return Scan::Malformed("bare LF in request head"),
                _ => self.push(b),
            }
        }
        Scan::More
    }

    fn push(&mut self, b: u8) {
        if self.line_len == 0 && self.line > 0 {
            self.in_name = true;
            self.name_len = 0;
        }
        self.line_len += 1;
        if !self.in_name {
            return;
        }
        if b == b':' {
            self.in_name = false;
            if self.name_len <= NAME_MAX {
                let name = &self.name[..self.name_len];
                self.content_length |= name == CONTENT_LENGTH;
                self.transfer_encoding |= name == TRANSFER_ENCODING;
            }
        } else if self.name_len < NAME_MAX {
            self.name[self.name_len] = b.to_ascii_lowercase();
            self.name_len += 1;
        } else {
            // Too long to be either name; keep counting so it never matches.
            self.name_len = NAME_MAX + 1;
        }
    }

    /// A CRLF arrived. `Some(None)`: the head is complete; `Some(Some(why))`: it is malformed;
    /// `None`: go on.
    fn end_line(&mut self) -> Option<Option<&'static str>> {
        let empty = self.line_len == 0;
        self.line_len = 0;
        self.in_name = false;
        if !empty {
            self.line += 1;
            return None;
        }
        if self.line == 0 {
            // RFC 9112 §2.2: empty lines before the request line are ignored.
            return None;
        }
        if self.content_length && self.transfer_encoding {
            return Some(Some("both Content-Length and Transfer-Encoding"));
        }
        Some(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> Vec<Scan> {
        let mut s = HeadScan::new();
        chunks.iter().map(|c| s.feed(c)).collect()
    }

    #[test]
    fn finds_the_end_of_a_crlf_head_across_reads() {
        assert_eq!(
            scan_all(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"]),
            vec![Scan::End(27)]
        );
        assert_eq!(
            scan_all(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n\r", b"\n"]),
            vec![Scan::More, Scan::More, Scan::End(1)]
        );
        let head = b"GET / HTTP/1.1\r\nX: y\r\n\r\n";
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        let got = scan_all(&bytes);
        assert_eq!(got.last(), Some(&Scan::End(1)));
        assert!(got[..got.len() - 1].iter().all(|s| *s == Scan::More));
    }

    #[test]
    fn leading_empty_lines_do_not_end_the_head() {
        assert_eq!(
            scan_all(&[b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"]),
            vec![Scan::End(29)]
        );
    }

    #[test]
    fn lone_lf_or_cr_is_malformed() {
        assert!(matches!(
            scan_all(&[b"GET / HTTP/1.1\nHost: a\n\n"])[0],
            Scan::Malformed(_)
        ));
        assert!(matches!(
            scan_all(&[b"GET / HTTP/1.1\r\nX-A: b\nTransfer-Encoding: chunked\r\n\r\n"])[0],
            Scan::Malformed(_)
        ));
        assert!(matches!(
            scan_all(&[b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n"])[0],
            Scan::Malformed(_)
        ));
    }

    #[test]
    fn content_length_with_transfer_encoding_is_malformed_in_any_case_and_order() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nHost: a\r\nCONTENT-LENGTH: 4\r\n\r\n",
        ] {
            assert_eq!(
                scan_all(&[head]),
                vec![Scan::Malformed("both Content-Length and Transfer-Encoding")]
            );
        }
    }

    #[test]
    fn lookalike_names_and_values_are_not_confused_with_framing_headers() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nX-Transfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encodings: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nX: Transfer-Encoding: chunked\r\n\r\n",
            b"GET http://a:80/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(scan_all(&[head])[0], Scan::End(_)),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn the_name_may_be_split_across_reads() {
        assert_eq!(
            scan_all(&[
                b"POST / HTTP/1.1\r\nContent-Len",
                b"gth: 4\r\nTransfer-",
                b"Encoding: chunked\r\n\r\n"
            ]),
            vec![
                Scan::More,
                Scan::More,
                Scan::Malformed("both Content-Length and Transfer-Encoding")
            ]
        );
    }
}
