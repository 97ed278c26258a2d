//! `split` and `split_by` on a route (DESIGN.md "Routing by headers, traffic split and
//! mirroring"): plain data; the runtime is `upstream::split`.

use serde::{Deserialize, Serialize};

/// One side of a traffic split.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSide {
    pub upstream: String,
    /// Relative share: 0-100 or any non-negative integers; only the ratio counts.
    pub weight: u32,
}

/// What a sticky split hashes: `split_by` parsed (`check` refuses anything else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitBy {
    Random,
    Consumer,
    ClientIp,
    Header(String),
}

impl SplitBy {
    pub fn parse(text: Option<&str>) -> Result<SplitBy, String> {
        Ok(match text {
            None | Some("random") => SplitBy::Random,
            Some("consumer") => SplitBy::Consumer,
            Some("client_ip") => SplitBy::ClientIp,
            Some(other) => match other.strip_prefix("header:") {
                Some(name) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                    SplitBy::Header(name.to_string())
                }
                Some(name) => return Err(format!("invalid header name {name:?}")),
                None => {
                    return Err(format!(
                        "unknown split_by {other:?}; expected random, consumer, client_ip or header:<Name>"
                    ))
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_by_forms() {
        assert_eq!(SplitBy::parse(None), Ok(SplitBy::Random));
        assert_eq!(SplitBy::parse(Some("consumer")), Ok(SplitBy::Consumer));
        assert_eq!(SplitBy::parse(Some("client_ip")), Ok(SplitBy::ClientIp));
        assert_eq!(
            SplitBy::parse(Some("header:X-User")),
            Ok(SplitBy::Header("X-User".into()))
        );
        assert!(SplitBy::parse(Some("header:bad name")).is_err());
        assert!(SplitBy::parse(Some("cookie")).is_err());
    }
}
