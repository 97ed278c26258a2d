//! Where each request on a client connection begins and ends, followed byte by byte as the
//! bytes arrive: heads are scanned by [`HeadScan`], bodies are counted (`Content-Length`) or
//! checked against the chunked grammar ([`ChunkScan`]), and the first byte after a body is the
//! next request's head — pipelined or not. Knowing the boundaries is what lets the listener
//! (a) time each head from its first byte, (b) refuse a malformed head or chunked body before
//! Pingora acts on it, wherever it sits on the connection, and (c) stop scanning a connection
//! that became a tunnel after `101 Switching Protocols`.

use super::chunk_scan::{ChunkScan, Chunks};
use super::head_scan::{BodyFraming, HeadScan, Scan};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Inside a request head (its deadline runs).
    Head(HeadScan),
    /// Body bytes still to come for a `Content-Length` body.
    Length(u64),
    Chunked(ChunkScan),
    /// Bytes pass unexamined: an upgrade is pending its answer, or was accepted.
    Tunnel,
    /// Between requests: the next byte starts a head.
    Idle,
}

/// What broke the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    Head(&'static str),
    Body(&'static str),
}

/// What one read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fed {
    /// A new head began in these bytes (its deadline starts now).
    pub head_started: bool,
    /// The bytes from this index on must not reach the parser.
    pub broken: Option<(usize, Broken)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    phase: Phase,
    /// A complete head was handed on and its final response has not started.
    awaiting_response: bool,
    /// The last head asked for an upgrade.
    upgrade_requested: bool,
    /// A `101` was sent: the rest of the connection is not HTTP/1.
    tunnel: bool,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            phase: Phase::Head(HeadScan::new()),
            awaiting_response: false,
            upgrade_requested: false,
            tunnel: false,
        }
    }
}

impl Framing {
    /// A new connection: its first head has begun (its deadline runs from accept).
    pub fn new() -> Framing {
        Framing::default()
    }

    /// A connection that is not HTTP/1 (HTTP/2 by ALPN or prior knowledge): nothing to follow,
    /// no head deadline (HTTP/2 framing is the h2 layer's business).
    pub fn not_http1() -> Framing {
        Framing {
            phase: Phase::Tunnel,
            tunnel: true,
            ..Framing::default()
        }
    }

    /// A head is being read: its deadline applies.
    pub fn reading_head(&self) -> bool {
        matches!(self.phase, Phase::Head(_))
    }

    /// A request has been handed on and is not over: a refusal can no longer be a clean answer
    /// of its own, only a cut after the bytes that were fine.
    pub fn busy(&self) -> bool {
        self.awaiting_response
            || matches!(
                self.phase,
                Phase::Length(_) | Phase::Chunked(_) | Phase::Tunnel
            )
    }

    pub fn feed(&mut self, bytes: &[u8]) -> Fed {
        let mut fed = Fed::default();
        let mut i = 0;
        let mut head_start = 0;
        while i < bytes.len() {
            match &mut self.phase {
                Phase::Idle => {
                    self.phase = Phase::Head(HeadScan::new());
                    fed.head_started = true;
                    head_start = i;
                }
                Phase::Head(scan) => match scan.feed(&bytes[i..]) {
                    Scan::More => break,
                    Scan::End(n) => {
                        i += n;
                        self.awaiting_response = true;
                        self.upgrade_requested = scan.upgrade();
                        self.phase = match scan.body() {
                            BodyFraming::Length(0) => self.after_body(),
                            BodyFraming::Length(n) => Phase::Length(n),
                            BodyFraming::Chunked => Phase::Chunked(ChunkScan::new()),
                        };
                    }
                    Scan::Malformed(why) => {
                        fed.broken = Some((head_start, Broken::Head(why)));
                        break;
                    }
                },
                Phase::Length(left) => {
                    let take = (*left).min((bytes.len() - i) as u64);
                    i += take as usize;
                    *left -= take;
                    if *left == 0 {
                        self.phase = self.after_body();
                    }
                }
                Phase::Chunked(scan) => match scan.feed(&bytes[i..]) {
                    Chunks::More => break,
                    Chunks::End(n) => {
                        i += n;
                        self.phase = self.after_body();
                    }
                    Chunks::Malformed(at, why) => {
                        fed.broken = Some((i + at, Broken::Body(why)));
                        break;
                    }
                },
                Phase::Tunnel => break,
            }
        }
        fed
    }

    fn after_body(&self) -> Phase {
        if self.upgrade_requested {
            Phase::Tunnel
        } else {
            Phase::Idle
        }
    }

    /// A response head with this status went out to the client.
    pub fn on_response(&mut self, status: u16) {
        if self.tunnel {
            return;
        }
        if status == 101 {
            self.tunnel = true;
            self.phase = Phase::Tunnel;
        } else if status >= 200 {
            self.awaiting_response = false;
            if std::mem::take(&mut self.upgrade_requested) && self.phase == Phase::Tunnel {
                self.phase = Phase::Idle;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_heads_after_bodies_are_scanned() {
        let mut f = Framing::new();
        let bytes = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nX: a\nY: b\r\n\r\n";
        let fed = f.feed(bytes);
        assert!(fed.head_started);
        assert_eq!(
            fed.broken,
            Some((42, Broken::Head("bare LF in request head")))
        );
        let mut f = Framing::new();
        let bytes = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(f.feed(bytes).broken, Some((_, Broken::Head(_)))));
    }

    #[test]
    fn a_bad_chunk_line_is_located_in_the_stream() {
        let mut f = Framing::new();
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(f.feed(head), Fed::default());
        assert!(f.busy());
        assert_eq!(f.feed(b"3\r\nabc\r\n"), Fed::default());
        let fed = f.feed(b"2\r\nxy\r\n\r\nGET /admin HTTP/1.1\r\n\r\n");
        assert_eq!(
            fed.broken,
            Some((7, Broken::Body("chunk size without a hex digit")))
        );
    }

    #[test]
    fn heads_restart_after_each_body_and_not_before() {
        let mut f = Framing::new();
        f.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
        assert!(!f.reading_head());
        let fed = f.feed(b"cde");
        assert!(!fed.head_started && !f.reading_head());
        f.on_response(200);
        assert!(!f.busy());
        let fed = f.feed(b"G");
        assert!(fed.head_started && f.reading_head());
    }

    #[test]
    fn an_accepted_upgrade_is_a_tunnel_and_a_refused_one_is_http_again() {
        let upgrade = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let mut f = Framing::new();
        f.feed(upgrade);
        f.on_response(101);
        assert_eq!(f.feed(b"\x81\x05hello\n\r\n"), Fed::default());
        f.on_response(200);
        assert_eq!(f.feed(b"\n\n"), Fed::default());

        let mut f = Framing::new();
        f.feed(upgrade);
        f.on_response(400);
        assert!(f.feed(b"GET / HTTP/1.1\nX: y\r\n\r\n").broken.is_some());
    }

    #[test]
    fn interim_responses_do_not_end_a_request() {
        let mut f = Framing::new();
        f.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        f.on_response(100);
        assert!(f.busy());
        assert_eq!(f.feed(b"ok"), Fed::default());
    }
}
