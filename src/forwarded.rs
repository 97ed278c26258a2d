//! Who the client is, and the `X-Forwarded-For` chain the upstream receives.
//!
//! An incoming `X-Forwarded-For` is believed only when the TCP peer is a configured trusted
//! proxy; from anyone else it is discarded, because any client can write that header.

use http::HeaderValue;
use ipnet::IpNet;
use pingora::http::RequestHeader;
use std::net::IpAddr;

/// `X-Forwarded-*` names parsed once (a lookup by `&str` parses the name on every request).
pub const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");

/// The client of one request as the gateway sees it.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// DESIGN.md `client_ip`: the TCP peer, or what a trusted proxy said it forwarded for.
    pub ip: Option<IpAddr>,
    /// The `X-Forwarded-For` the upstream receives, built once as a header value.
    forwarded_for: Option<HeaderValue>,
    peer_trusted: bool,
    /// The connection to the gateway is TLS.
    pub tls: bool,
    /// The verified client certificate of that connection (mTLS), if it presented one.
    pub certificate: Option<std::sync::Arc<crate::tls::client_cert::ClientCert>>,
}

impl Client {
    /// `X-Forwarded-For`, `-Proto` and `-Host` on the upstream request: a trusted proxy's
    /// `-Proto`/`-Host` pass through, anyone else's are replaced with what this hop saw.
    pub fn set_upstream_headers(
        &self,
        upstream: &mut RequestHeader,
        original: &RequestHeader,
        host: &str,
    ) -> pingora::Result<()> {
        if let Some(xff) = &self.forwarded_for {
            upstream.insert_header("X-Forwarded-For", xff.clone())?;
        }
        if !(self.peer_trusted && original.headers.contains_key(X_FORWARDED_PROTO)) {
            let proto = HeaderValue::from_static(if self.tls { "https" } else { "http" });
            upstream.insert_header("X-Forwarded-Proto", proto)?;
        }
        let keep_host = self.peer_trusted && original.headers.contains_key(X_FORWARDED_HOST);
        if !keep_host && !host.is_empty() {
            // The client's own `Host` value shares the parsed head's buffer: no copy.
            let value = match original.headers.get(http::header::HOST) {
                Some(v) if v.as_bytes() == host.as_bytes() => v.clone(),
                _ => HeaderValue::from_str(host).map_err(|_| {
                    pingora::Error::explain(pingora::ErrorType::InvalidHTTPHeader, "host")
                })?,
            };
            upstream.insert_header("X-Forwarded-Host", value)?;
        }
        Ok(())
    }
}

/// The incoming `X-Forwarded-For` as one list: several lines are one comma-separated value
/// (RFC 9110 §5.3). Reading only the first line would let a client whose proxy appends its own
/// line pick its address: `10.9.9.9` sent ahead of the proxy's `6.6.6.6` would be believed.
/// A line that is not text stays in the list as a hop that stops the walk.
pub fn incoming_chain(req: &RequestHeader) -> Option<std::borrow::Cow<'_, str>> {
    let mut lines = req.headers.get_all(X_FORWARDED_FOR).iter();
    let first = lines.next()?;
    fn text(v: &HeaderValue) -> &str {
        v.to_str().unwrap_or("?")
    }
    let Some(second) = lines.next() else {
        return Some(std::borrow::Cow::Borrowed(text(first)));
    };
    let mut chain = format!("{}, {}", text(first), text(second));
    for line in lines {
        chain.push_str(", ");
        chain.push_str(text(line));
    }
    Some(std::borrow::Cow::Owned(chain))
}

/// Parse a trusted-proxy entry: a CIDR (`10.0.0.0/8`) or a bare address (`192.168.1.7`).
pub fn parse_trusted(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// `server.trusted_proxies`; every entry that is not a CIDR or an address is a problem.
    pub fn build(entries: &[String]) -> Result<TrustedProxies, Vec<crate::config::Problem>> {
        let mut nets = Vec::with_capacity(entries.len());
        let mut problems = Vec::new();
        for (i, cidr) in entries.iter().enumerate() {
            match parse_trusted(cidr) {
                Some(net) => nets.push(net),
                None => problems.push(crate::config::Problem::new(
                    format!("server.trusted_proxies[{i}]"),
                    format!("invalid CIDR {cidr:?}; write e.g. 10.0.0.0/8 or 192.168.1.7"),
                )),
            }
        }
        if problems.is_empty() {
            Ok(TrustedProxies(nets))
        } else {
            Err(problems)
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Who sent this request, from the TCP peer and the incoming `X-Forwarded-For`.
    pub fn client(&self, peer: Option<IpAddr>, incoming_xff: Option<&str>, tls: bool) -> Client {
        let Some(peer) = peer else {
            return Client {
                tls,
                ..Client::default()
            };
        };
        let (ip, xff) = resolve(peer, incoming_xff, self);
        Client {
            ip: Some(ip),
            forwarded_for: Some(xff),
            peer_trusted: !self.is_empty() && self.contains(peer),
            tls,
            certificate: None,
        }
    }
}

/// IPv4-mapped IPv6 peers (`::ffff:1.2.3.4`) are matched and logged as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client address and the `X-Forwarded-For` value to send upstream.
pub fn resolve(
    peer: IpAddr,
    incoming: Option<&str>,
    trusted: &TrustedProxies,
) -> (IpAddr, HeaderValue) {
    let peer = canonical(peer);
    let incoming = incoming.map(str::trim).filter(|s| !s.is_empty());
    match incoming {
        Some(chain) if trusted.contains(peer) => {
            // Walk right to left past our own proxies; the first address they did not vouch
            // for is the client.
            let mut client = peer;
            for hop in chain.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(ip) => {
                        client = canonical(ip);
                        if !trusted.contains(client) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            (client, forwarded_value(Some(chain), peer))
        }
        _ => (peer, forwarded_value(None, peer)),
    }
}

/// `chain, peer` (or `peer` alone) as a header value, written into one buffer that the value
/// then owns. `Ipv4Addr`'s `Display` goes through the formatting machinery (~1.3k
/// instructions, a `String`, and a copy into the header); every request pays this.
fn forwarded_value(chain: Option<&str>, peer: IpAddr) -> HeaderValue {
    let mut text = Vec::with_capacity(chain.map_or(0, |c| c.len() + 2) + 15);
    if let Some(chain) = chain {
        text.extend_from_slice(chain.as_bytes());
        text.extend_from_slice(b", ");
    }
    match peer {
        IpAddr::V4(v4) => push_ipv4(&mut text, v4),
        IpAddr::V6(v6) => text.extend_from_slice(v6.to_string().as_bytes()),
    }
    // The chain is the text of a header value we received, the rest digits, dots, colons and
    // hex: never rejected; the fallback only keeps this path free of panics.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Dotted decimal, as `Ipv4Addr`'s `Display` writes it.
fn push_ipv4(out: &mut Vec<u8>, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let t = TrustedProxies::build(&["10.0.0.0/8".to_string()]).expect("valid");
        let (client, xff) = resolve(ip("203.0.113.9"), Some("1.2.3.4"), &t);
        assert_eq!(client, ip("203.0.113.9"));
        assert_eq!(xff, "203.0.113.9");
    }

    #[test]
    fn trusted_peer_chain_is_appended_and_walked() {
        let t = TrustedProxies::build(&["10.0.0.0/8".to_string()]).expect("valid");
        let (client, xff) = resolve(ip("10.0.0.2"), Some("1.2.3.4, 10.0.0.1"), &t);
        assert_eq!(client, ip("1.2.3.4"));
        assert_eq!(xff, "1.2.3.4, 10.0.0.1, 10.0.0.2");
    }

    #[test]
    fn garbage_in_the_chain_stops_the_walk() {
        let t = TrustedProxies::build(&["127.0.0.1".to_string()]).expect("valid");
        let (client, _) = resolve(ip("127.0.0.1"), Some("evil, 1.2.3.4"), &t);
        assert_eq!(client, ip("1.2.3.4"));
        let (client, _) = resolve(ip("127.0.0.1"), Some("nonsense"), &t);
        assert_eq!(client, ip("127.0.0.1"));
    }

    #[test]
    fn ipv4_text_matches_display_for_every_octet_width() {
        for octet in 0..=255u8 {
            let addr = std::net::Ipv4Addr::new(octet, 0, 255, octet);
            let mut out = Vec::new();
            push_ipv4(&mut out, addr);
            assert_eq!(out, addr.to_string().as_bytes());
        }
        let t = TrustedProxies::default();
        let (_, xff) = resolve(ip("2001:db8::1"), None, &t);
        assert_eq!(xff, "2001:db8::1");
        let (_, xff) = resolve(ip("::ffff:192.0.2.10"), None, &t);
        assert_eq!(xff, "192.0.2.10");
    }

    #[test]
    fn several_forwarded_for_lines_are_one_list() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("head");
        assert!(incoming_chain(&req).is_none());
        req.append_header("X-Forwarded-For", "10.9.9.9").expect("h");
        assert_eq!(incoming_chain(&req).as_deref(), Some("10.9.9.9"));
        req.append_header("X-Forwarded-For", "6.6.6.6").expect("h");
        assert_eq!(incoming_chain(&req).as_deref(), Some("10.9.9.9, 6.6.6.6"));
        // Behind a trusted proxy the rightmost untrusted hop is the client, whichever line.
        let t = TrustedProxies::build(&["127.0.0.1".to_string()]).expect("valid");
        let chain = incoming_chain(&req);
        let (client, xff) = resolve(ip("127.0.0.1"), chain.as_deref(), &t);
        assert_eq!(client, ip("6.6.6.6"));
        assert_eq!(xff, "10.9.9.9, 6.6.6.6, 127.0.0.1");
    }

    #[test]
    fn mapped_ipv6_is_treated_as_ipv4() {
        let t = TrustedProxies::build(&["127.0.0.0/8".to_string()]).expect("valid");
        assert!(t.contains(ip("::ffff:127.0.0.1")));
        assert!(parse_trusted("10.0.0.0/33").is_none());
    }
}
