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
    /// The `X-Forwarded-Proto` and, from a trusted proxy, the `X-Forwarded-Host` that
    /// [`Client::set_upstream_headers`] sends upstream (the cache keys by both).
    pub fn forwarded_view<'a>(&self, original: &'a RequestHeader) -> (&'a str, Option<&'a [u8]>) {
        let h = &original.headers;
        let proto = match h.get(X_FORWARDED_PROTO) {
            Some(v) if self.peer_trusted => v.to_str().unwrap_or("?"),
            _ if self.tls => "https",
            _ => "http",
        };
        let host = h
            .get(X_FORWARDED_HOST)
            .filter(|_| self.peer_trusted)
            .map(HeaderValue::as_bytes);
        (proto, host)
    }

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
        strip_hop_claims(upstream, original, self.peer_trusted);
        let keep_host = self.peer_trusted && original.headers.contains_key(X_FORWARDED_HOST);
        if !keep_host && host.is_empty() {
            // No host to vouch for (HTTP/1.0 without `Host`): the client's value must not pass.
            upstream.remove_header(&X_FORWARDED_HOST);
        } else if !keep_host {
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

/// Headers that assert facts about the client's hop (address, scheme, host, port, path
/// prefix, the client certificate a TLS terminator verified), which frameworks believe as they
/// believe `X-Forwarded-*` (Rack and Spring read RFC 7239 `Forwarded`, many read `X-Real-IP`,
/// Envoy-fronted services `X-Forwarded-Client-Cert`). Only a trusted proxy may assert them.
const HOP_CLAIMS: [&str; 19] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-forwarded-server",
    "x-forwarded-protocol",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "front-end-https",
    "x-forwarded-client-cert",
    "x-client-cert",
    "x-ssl-client-cert",
    "x-ssl-client-s-dn",
    "ssl-client-cert",
];

/// The gateway's own `X-Forwarded-*`: only these exact spellings pass; a lookalike
/// (`X_Forwarded_Host`) reaches CGI-style backends as the same variable.
const OWN_CLAIMS: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// Headers that make a backend serve another path or method than the request line names (IIS
/// and Symfony's `X-Original-URL`, method overrides): the route, its auth, its methods and the
/// cache key were all chosen by the request line, so these never pass, from anyone.
const OVERRIDES: [&str; 5] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Bit `n` is set when some name in the three lists is `n` bytes long: a CGI spelling has the
/// same length, so a header of any other length is none of them. Most request headers
/// (`host`, `accept`, `user-agent`) are out after one mask test.
const CLAIM_LENGTHS: u64 = {
    let lists: [&[&str]; 3] = [&HOP_CLAIMS, &OWN_CLAIMS, &OVERRIDES];
    let mut mask = 0u64;
    let mut l = 0;
    while l < lists.len() {
        let mut i = 0;
        while i < lists[l].len() {
            mask |= 1 << lists[l][i].len();
            i += 1;
        }
        l += 1;
    }
    mask
};

/// Remove [`OVERRIDES`] and lookalikes of [`OWN_CLAIMS`] from every client, and
/// [`HOP_CLAIMS`] unless the peer is a trusted proxy (which may send their exact spellings),
/// each in any spelling a CGI-style backend reads alike. Judged on the names the client sent
/// (`original`), not on the upstream head, which also holds what the gateway added.
fn strip_hop_claims(upstream: &mut RequestHeader, original: &RequestHeader, peer_trusted: bool) {
    let same = |name: &str, list: &[&str]| {
        list.iter()
            .any(|n| crate::auth::same_cgi_bytes(name.as_bytes(), n.as_bytes()))
    };
    let doomed = |name: &http::HeaderName| {
        let name = name.as_str();
        name.len() < 64
            && CLAIM_LENGTHS & (1 << name.len()) != 0
            && (same(name, &OVERRIDES)
                || (same(name, &OWN_CLAIMS) && !OWN_CLAIMS.contains(&name))
                || (same(name, &HOP_CLAIMS) && !(peer_trusted && HOP_CLAIMS.contains(&name))))
    };
    if !original.headers.keys().any(doomed) {
        return;
    }
    let found: Vec<http::HeaderName> = original
        .headers
        .keys()
        .filter(|n| doomed(n))
        .cloned()
        .collect();
    for name in found {
        upstream.remove_header(&name);
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
            ip,
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
///
/// `None` when a trusted proxy vouched for a hop that is not an address (`unknown`, an
/// obfuscated RFC 7239 node, `010.1.2.3`): the client is then unknown. Stopping the walk there
/// and keeping the last trusted hop would make every such client the proxy itself, inside
/// allow lists written for the proxy's network and sharing its rate-limit key.
pub fn resolve(
    peer: IpAddr,
    incoming: Option<&str>,
    trusted: &TrustedProxies,
) -> (Option<IpAddr>, HeaderValue) {
    let peer = canonical(peer);
    let incoming = incoming.map(str::trim).filter(|s| !s.is_empty());
    match incoming {
        Some(chain) if trusted.contains(peer) => {
            // Walk right to left past our own proxies; the first address they did not vouch
            // for is the client.
            let mut client = Some(peer);
            for hop in chain.rsplit(',') {
                client = hop_address(hop).map(canonical);
                if client.is_none_or(|ip| !trusted.contains(ip)) {
                    break;
                }
            }
            (client, forwarded_value(Some(chain), peer))
        }
        _ => (Some(peer), forwarded_value(None, peer)),
    }
}

/// One `X-Forwarded-For` hop: an address, or an address with the port some proxies append
/// (`192.0.2.7:51234`, `[2001:db8::1]:443`, `[2001:db8::1]`).
fn hop_address(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
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
        assert_eq!(client, Some(ip("203.0.113.9")));
        assert_eq!(xff, "203.0.113.9");
    }

    #[test]
    fn trusted_peer_chain_is_appended_and_walked() {
        let t = TrustedProxies::build(&["10.0.0.0/8".to_string()]).expect("valid");
        let (client, xff) = resolve(ip("10.0.0.2"), Some("1.2.3.4, 10.0.0.1"), &t);
        assert_eq!(client, Some(ip("1.2.3.4")));
        assert_eq!(xff, "1.2.3.4, 10.0.0.1, 10.0.0.2");
    }

    #[test]
    fn garbage_in_the_chain_stops_the_walk() {
        let t = TrustedProxies::build(&["127.0.0.1".to_string()]).expect("valid");
        let (client, _) = resolve(ip("127.0.0.1"), Some("evil, 1.2.3.4"), &t);
        assert_eq!(client, Some(ip("1.2.3.4")));
        // A hop the proxy vouched for that is not an address: the client is unknown, not the
        // proxy.
        for hop in ["nonsense", "unknown", "010.1.2.3", "_hidden", "1.2.3.4:x"] {
            let (client, _) = resolve(ip("127.0.0.1"), Some(hop), &t);
            assert_eq!(client, None, "{hop}");
        }
    }

    #[test]
    fn hops_with_ports_are_addresses() {
        let t = TrustedProxies::build(&["127.0.0.1".to_string()]).expect("valid");
        for (hop, want) in [
            ("10.1.2.3:51234", "10.1.2.3"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 10.1.2.3 ", "10.1.2.3"),
        ] {
            let (client, _) = resolve(ip("127.0.0.1"), Some(hop), &t);
            assert_eq!(client, Some(ip(want)), "{hop}");
        }
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
        assert_eq!(client, Some(ip("6.6.6.6")));
        assert_eq!(xff, "10.9.9.9, 6.6.6.6, 127.0.0.1");
    }

    #[test]
    fn mapped_ipv6_is_treated_as_ipv4() {
        let t = TrustedProxies::build(&["127.0.0.0/8".to_string()]).expect("valid");
        assert!(t.contains(ip("::ffff:127.0.0.1")));
        assert!(parse_trusted("10.0.0.0/33").is_none());
    }

    fn upstream_after(trusted: bool, headers: &[(&str, &str)], host: &str) -> RequestHeader {
        let t = TrustedProxies::build(&["127.0.0.1".to_string()]).expect("valid");
        let peer = if trusted { "127.0.0.1" } else { "203.0.113.9" };
        let mut req = RequestHeader::build("GET", b"/", None).expect("head");
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).expect("header");
        }
        let client = t.client(Some(ip(peer)), None, false);
        let mut upstream = req.clone();
        client
            .set_upstream_headers(&mut upstream, &req, host)
            .expect("set");
        upstream
    }

    #[test]
    fn hop_claims_pass_only_from_trusted_proxies_and_overrides_never() {
        let sent = [
            ("Forwarded", "for=6.6.6.6;host=evil.example;proto=http"),
            ("X-Real-IP", "6.6.6.6"),
            ("X_Real_IP", "6.6.6.6"),
            ("X-Forwarded-Port", "1"),
            ("X-Forwarded-Prefix", "/evil"),
            ("True-Client-IP", "6.6.6.6"),
            ("X-Forwarded-Client-Cert", "Subject=\"CN=admin\""),
            ("X-Original-URL", "/admin"),
            ("X.Rewrite.URL", "/admin"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("X_Forwarded_Host", "evil.example"),
            ("X-Keep", "1"),
        ];
        let untrusted = upstream_after(false, &sent, "a.test");
        let names: Vec<&str> = untrusted.headers.keys().map(|n| n.as_str()).collect();
        for gone in [
            "forwarded",
            "x-real-ip",
            "x_real_ip",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "true-client-ip",
            "x-forwarded-client-cert",
            "x-original-url",
            "x.rewrite.url",
            "x-http-method-override",
            "x_forwarded_host",
        ] {
            assert!(!names.contains(&gone), "{gone} passed: {names:?}");
        }
        assert!(names.contains(&"x-keep"));
        let trusted = upstream_after(true, &sent, "a.test");
        let names: Vec<&str> = trusted.headers.keys().map(|n| n.as_str()).collect();
        for kept in [
            "forwarded",
            "x-real-ip",
            "x-forwarded-port",
            "true-client-ip",
        ] {
            assert!(names.contains(&kept), "{kept} dropped: {names:?}");
        }
        for gone in [
            "x_real_ip",
            "x-original-url",
            "x.rewrite.url",
            "x_forwarded_host",
        ] {
            assert!(
                !names.contains(&gone),
                "{gone} passed from a trusted proxy: {names:?}"
            );
        }
    }

    #[test]
    fn a_request_without_host_forwards_no_client_x_forwarded_host() {
        let up = upstream_after(false, &[("X-Forwarded-Host", "evil.example")], "");
        assert!(up.headers.get("x-forwarded-host").is_none());
        let up = upstream_after(false, &[("X-Forwarded-Host", "evil.example")], "a.test");
        assert_eq!(up.headers.get("x-forwarded-host").unwrap(), "a.test");
    }
}
