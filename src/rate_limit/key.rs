//! What a limit counts by, and the per-request value of that key.

use http::HeaderName;
use std::hash::Hash;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    ClientIp,
    /// Verified JWT `sub` or API key id; anonymous callers fall back to their IP.
    Consumer,
    Route,
    Header(HeaderName),
    Claim(String),
}

impl KeyKind {
    pub fn parse(s: &str) -> Result<KeyKind, String> {
        match s {
            "client_ip" => Ok(KeyKind::ClientIp),
            "consumer" => Ok(KeyKind::Consumer),
            "route" => Ok(KeyKind::Route),
            _ => {
                if let Some(h) = s.strip_prefix("header:") {
                    HeaderName::from_bytes(h.trim().as_bytes())
                        .map(KeyKind::Header)
                        .map_err(|_| format!("invalid header name {h:?}"))
                } else if let Some(c) = s.strip_prefix("claim:") {
                    let c = c.trim();
                    if c.is_empty() {
                        Err("claim: needs a claim name".into())
                    } else {
                        Ok(KeyKind::Claim(c.to_string()))
                    }
                } else {
                    Err(format!(
                        "unknown key {s:?}; expected client_ip, consumer, route, header:<Name> or claim:<name>"
                    ))
                }
            }
        }
    }

    /// Keys that exist only once the caller is authenticated.
    pub fn needs_identity(&self) -> bool {
        matches!(self, KeyKind::Consumer | KeyKind::Claim(_))
    }
}

/// The value a request is counted under. Hashing borrows; nothing is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyValue<'a> {
    Ip(IpAddr),
    Text(&'a str),
    Bytes(&'a [u8]),
    Route(usize),
    /// No client address known (not expected on TCP listeners): one shared bucket.
    Unknown,
}

/// Everything a key may be derived from.
pub struct RequestFacts<'a> {
    pub client_ip: Option<IpAddr>,
    pub consumer: Option<&'a str>,
    pub claims: &'a [(String, String)],
    pub route: usize,
    pub headers: &'a http::HeaderMap,
}

impl<'a> RequestFacts<'a> {
    /// `identity`: the verified consumer and its claims, when the caller was identified.
    pub fn of(
        client_ip: Option<IpAddr>,
        identity: Option<(&'a str, &'a [(String, String)])>,
        route: usize,
        headers: &'a http::HeaderMap,
    ) -> RequestFacts<'a> {
        RequestFacts {
            client_ip,
            consumer: identity.map(|i| i.0),
            claims: identity.map_or(&[][..], |i| i.1),
            route,
            headers,
        }
    }

    fn ip(&self) -> KeyValue<'_> {
        self.client_ip.map_or(KeyValue::Unknown, KeyValue::Ip)
    }
}

pub fn value<'a>(kind: &KeyKind, facts: &'a RequestFacts<'a>) -> KeyValue<'a> {
    match kind {
        KeyKind::ClientIp => facts.ip(),
        KeyKind::Consumer => match facts.consumer {
            Some(c) if !c.is_empty() => KeyValue::Text(c),
            _ => facts.ip(),
        },
        KeyKind::Route => KeyValue::Route(facts.route),
        KeyKind::Header(h) => match facts.headers.get(h) {
            Some(v) => KeyValue::Bytes(v.as_bytes()),
            None => facts.ip(),
        },
        KeyKind::Claim(name) => facts
            .claims
            .iter()
            .find(|(k, _)| k == name)
            .map_or_else(|| facts.ip(), |(_, v)| KeyValue::Text(v)),
    }
}

/// Longest key text put into a Redis key as is; longer values (a big header) are hashed.
const MAX_KEY_TEXT: usize = 128;

impl KeyValue<'_> {
    /// The key as text for a shared store: readable for the usual short values, a SHA-256 for
    /// long or binary ones, so a client cannot make the gateway write huge Redis keys.
    pub fn render(&self) -> String {
        let text: std::borrow::Cow<'_, str> = match self {
            KeyValue::Ip(ip) => ip.to_string().into(),
            KeyValue::Text(t) => (*t).into(),
            KeyValue::Bytes(b) => String::from_utf8_lossy(b),
            KeyValue::Route(i) => format!("route{i}").into(),
            KeyValue::Unknown => "unknown".into(),
        };
        let plain = text.len() <= MAX_KEY_TEXT
            && !matches!(self, KeyValue::Bytes(b) if std::str::from_utf8(b).is_err())
            && text.bytes().all(|c| c.is_ascii_graphic());
        if plain {
            text.into_owned()
        } else {
            use sha2::Digest;
            let raw: &[u8] = match self {
                KeyValue::Bytes(b) => b,
                _ => text.as_bytes(),
            };
            format!("h{}", hex::encode(sha2::Sha256::digest(raw)))
        }
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;

    #[test]
    fn short_printable_keys_stay_readable_others_are_hashed() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(KeyValue::Ip(ip).render(), "10.0.0.7");
        assert_eq!(KeyValue::Text("acme").render(), "acme");
        assert_eq!(KeyValue::Route(3).render(), "route3");
        let long = "x".repeat(500);
        let h = KeyValue::Text(&long).render();
        assert!(h.starts_with('h') && h.len() == 65, "{h}");
        assert_ne!(KeyValue::Text("a b").render(), "a b", "spaces are hashed");
        assert_ne!(
            KeyValue::Bytes(&[0xff, 0xfe]).render(),
            KeyValue::Bytes(&[0xff, 0xfd]).render(),
            "distinct binary values stay distinct"
        );
    }
}
