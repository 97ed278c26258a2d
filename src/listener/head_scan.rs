//! A byte-level look at each request head as it arrives, before Pingora parses it.
//!
//! It finds where the head ends (for the head deadline), learns how the body is framed (so the
//! listener knows where the next head starts and can check chunked framing), and refuses the
//! framing ambiguities that Pingora resolves silently: a head with both `Content-Length` and
//! `Transfer-Encoding` (Pingora lets chunked win and drops `Content-Length` before any filter
//! can see both — the classic CL.TE / TE.CL smuggling shape), `Content-Length` values that are
//! not plain digits or that disagree across repeated lines and lists (RFC 9110 §8.6: an
//! unrecoverable error; Pingora would answer a bare-text 400), and line endings other than CRLF
//! (a lone LF or CR, which parsers along a chain of proxies disagree about). RFC 9112 §6.1 and
//! §2.2 allow a server to reject all of these; a gateway in front of unknown backends should.

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
const UPGRADE: &[u8] = b"upgrade";
const NAME_MAX: usize = 17;

/// How the body after a complete head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Content-Length: n` (every value agreeing); 0 when absent: a request without framing
    /// headers has no body (RFC 9112 §6.3).
    Length(u64),
    /// `Transfer-Encoding` (Pingora refuses any whose final coding is not chunked).
    Chunked,
}

/// `Content-Length` values seen so far, across lines and comma-separated lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LengthValues {
    agreed: Option<u64>,
    current: Option<u64>,
    /// Digits of the current element are done (whitespace followed them).
    closed: bool,
    invalid: bool,
}

impl LengthValues {
    fn byte(&mut self, b: u8) {
        match b {
            b' ' | b'\t' => self.closed |= self.current.is_some(),
            b'0'..=b'9' if !self.closed => {
                let digit = u64::from(b - b'0');
                self.current = match self.current.unwrap_or(0).checked_mul(10) {
                    Some(v) => v.checked_add(digit),
                    None => None,
                };
                self.invalid |= self.current.is_none();
            }
            b',' => self.element_end(),
            _ => self.invalid = true,
        }
    }

    /// A `,` or the end of the line: the element must hold digits and agree with the others.
    fn element_end(&mut self) {
        match (self.current.take(), self.agreed) {
            (None, _) => self.invalid = true,
            (Some(v), Some(a)) if v != a => self.invalid = true,
            (Some(v), _) => self.agreed = Some(v),
        }
        self.closed = false;
    }
}

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
    /// Inside a `Content-Length` value: its bytes are parsed, not skipped.
    in_length: bool,
    content_length: bool,
    lengths: LengthValues,
    transfer_encoding: bool,
    /// A name that is not a framing header but that CGI-style backends read as one.
    framing_lookalike: bool,
    upgrade: bool,
}

impl HeadScan {
    pub fn new() -> HeadScan {
        HeadScan::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Scan {
        let mut i = 0;
        while i < bytes.len() {
            if !self.after_cr && !self.in_name && !self.in_length && self.line_len > 0 {
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

    /// How the body of the head just ended is framed (meaningful after [`Scan::End`]).
    pub fn body(&self) -> BodyFraming {
        if self.transfer_encoding {
            BodyFraming::Chunked
        } else {
            BodyFraming::Length(self.lengths.agreed.unwrap_or(0))
        }
    }

    /// The head asked for a protocol upgrade: after a `101` its connection is a tunnel.
    pub fn upgrade(&self) -> bool {
        self.upgrade
    }

    fn push(&mut self, b: u8) {
        if self.line_len == 0 && self.line > 0 {
            self.in_name = true;
            self.name_len = 0;
        }
        self.line_len += 1;
        if self.in_length {
            self.lengths.byte(b);
            return;
        }
        if !self.in_name {
            return;
        }
        if b == b':' {
            self.in_name = false;
            if self.name_len <= NAME_MAX {
                let name = &self.name[..self.name_len];
                self.in_length = name == CONTENT_LENGTH;
                self.content_length |= self.in_length;
                self.transfer_encoding |= name == TRANSFER_ENCODING;
                self.framing_lookalike |= framing_lookalike(name);
                self.upgrade |= name == UPGRADE;
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
        if std::mem::take(&mut self.in_length) {
            self.lengths.element_end();
        }
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
        if self.framing_lookalike {
            return Some(Some(FRAMING_LOOKALIKE));
        }
        if self.lengths.invalid {
            return Some(Some("invalid or conflicting Content-Length"));
        }
        Some(None)
    }
}

/// `Content_Length`, `Transfer.Encoding` and the like: not framing headers to Pingora or to
/// this scanner, which frame the body without them and forward them as they are, but CGI-style
/// backends (WSGI, Rack, PHP) map `-`, `_` and `.` alike and would frame the same bytes by
/// them: the gateway and the backend would disagree on where the next request starts.
/// `name` is lower case (the scanner lowers it; parsed names are lower case).
pub(crate) fn framing_lookalike(name: &[u8]) -> bool {
    [CONTENT_LENGTH, TRANSFER_ENCODING]
        .iter()
        .any(|&framing| name != framing && crate::auth::same_cgi_bytes(name, framing))
}

/// Why a head with a [`framing_lookalike`] name is refused, on either protocol.
pub(crate) const FRAMING_LOOKALIKE: &str =
    "a header name that backends read as Content-Length or Transfer-Encoding";

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
    fn framing_names_spelled_with_underscores_or_dots_are_malformed() {
        for name in [
            "Content_Length",
            "content.length",
            "Transfer_Encoding",
            "Transfer.encoding",
            "Transfer-Encoding".replace('-', "_").as_str(),
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\n{name}: 5\r\n\r\n");
            assert!(
                matches!(scan_all(&[head.as_bytes()])[0], Scan::Malformed(_)),
                "{name}"
            );
        }
        for name in [
            "Content-Length",
            "X_Content_Length",
            "Content_Type",
            "Upgrade_Insecure",
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\n{name}: 5\r\n\r\n");
            assert!(
                matches!(scan_all(&[head.as_bytes()])[0], Scan::End(_)),
                "{name}"
            );
        }
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

    fn framing(head: &[u8]) -> Result<BodyFraming, &'static str> {
        let mut s = HeadScan::new();
        match s.feed(head) {
            Scan::End(_) => Ok(s.body()),
            Scan::Malformed(why) => Err(why),
            Scan::More => Err("incomplete"),
        }
    }

    #[test]
    fn agreeing_content_lengths_frame_the_body() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 10\r\ncontent-length:10\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 10, 10\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length:\t10 ,10 \r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 010\r\n\r\n",
        ] {
            assert_eq!(
                framing(head),
                Ok(BodyFraming::Length(10)),
                "{}",
                head.escape_ascii()
            );
        }
        assert_eq!(
            framing(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(BodyFraming::Length(0))
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(BodyFraming::Chunked)
        );
    }

    #[test]
    fn disagreeing_or_non_digit_content_lengths_are_malformed() {
        for value in [
            "5\r\nContent-Length: 10",
            "5, 10",
            "10, 5",
            "+10",
            "-1",
            "1_0",
            "0x0a",
            "10 10",
            "",
            " ",
            "10,",
            ",10",
            "10,,10",
            "1e3",
            "99999999999999999999999",
        ] {
            let head = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(
                framing(head.as_bytes()),
                Err("invalid or conflicting Content-Length"),
                "{value:?}"
            );
        }
    }

    #[test]
    fn upgrade_requests_are_noticed() {
        let mut s = HeadScan::new();
        s.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        assert!(s.upgrade());
        let mut s = HeadScan::new();
        s.feed(b"GET / HTTP/1.1\r\nX-Upgrade: no\r\n\r\n");
        assert!(!s.upgrade());
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
