//! Header and query conditions on a route's `match` (DESIGN.md "Routing by headers, traffic
//! split and mirroring"): plain data; the router compiles them once (src/routing/conditions.rs).

use serde::{Deserialize, Serialize, Serializer};

/// One condition on a header or query parameter's value.
///
/// Written as a bare scalar (`X-Api-Version: 2`, an exact value) or as a one-key map:
/// `{present: true}`, `{prefix: "..."}`, `{regex: "..."}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawValueMatch")]
pub enum ValueMatch {
    Exact(String),
    Present,
    Prefix(String),
    /// Unanchored search (`regex` crate syntax); write `^...$` for a whole-value match.
    Regex(String),
}

impl ValueMatch {
    /// The pattern text of a `regex` condition, for `check`.
    pub fn regex(&self) -> Option<&str> {
        match self {
            ValueMatch::Regex(r) => Some(r),
            _ => None,
        }
    }
}

/// Written back in the form it is read (`/config` on the admin port).
impl Serialize for ValueMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (key, value) = match self {
            ValueMatch::Exact(v) => return s.serialize_str(v),
            ValueMatch::Present => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("present", &true)?;
                return m.end();
            }
            ValueMatch::Prefix(p) => ("prefix", p),
            ValueMatch::Regex(r) => ("regex", r),
        };
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(key, value)?;
        m.end()
    }
}

/// What YAML may hold: numbers and booleans count as their text, so `X-Api-Version: 2` means
/// the header value `2` rather than a type error.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawValueMatch {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Form(ValueForm),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueForm {
    #[serde(default)]
    present: Option<bool>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    regex: Option<String>,
}

impl TryFrom<RawValueMatch> for ValueMatch {
    type Error = String;

    fn try_from(raw: RawValueMatch) -> Result<Self, Self::Error> {
        Ok(match raw {
            RawValueMatch::Text(s) => ValueMatch::Exact(s),
            RawValueMatch::Integer(n) => ValueMatch::Exact(n.to_string()),
            // YAML reads `1.10` as the number 1.1: matching its text would surprise.
            RawValueMatch::Float(f) => {
                return Err(format!(
                    "YAML reads this value as the number {f}; quote it (\"1.10\") to match its text"
                ))
            }
            RawValueMatch::Bool(b) => ValueMatch::Exact(b.to_string()),
            RawValueMatch::Form(form) => match (form.present, form.prefix, form.regex) {
                (Some(true), None, None) => ValueMatch::Present,
                (Some(false), None, None) => {
                    return Err("`present: false` is not supported; write `present: true` or leave the condition out".into())
                }
                (None, Some(p), None) => ValueMatch::Prefix(p),
                (None, None, Some(r)) => ValueMatch::Regex(r),
                _ => {
                    return Err(
                        "write a value, or exactly one of {present: true}, {prefix: ...}, {regex: ...}"
                            .into(),
                    )
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse(yaml: &str) -> Result<BTreeMap<String, ValueMatch>, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn scalars_are_exact_values_and_maps_are_forms() {
        let m = parse("a: 2\nb: \"v2\"\nc: {present: true}\nd: {prefix: \"app/\"}\ne: {regex: \"^v[0-9]+$\"}\nf: true\n")
            .expect("valid");
        assert_eq!(m["a"], ValueMatch::Exact("2".into()));
        assert_eq!(m["b"], ValueMatch::Exact("v2".into()));
        assert_eq!(m["c"], ValueMatch::Present);
        assert_eq!(m["d"], ValueMatch::Prefix("app/".into()));
        assert_eq!(m["e"], ValueMatch::Regex("^v[0-9]+$".into()));
        assert_eq!(m["f"], ValueMatch::Exact("true".into()));
    }

    #[test]
    fn two_forms_at_once_or_present_false_are_refused() {
        assert!(parse("a: {prefix: x, regex: y}\n").is_err());
        assert!(parse("a: {present: false}\n").is_err());
        assert!(parse("a: {}\n").is_err());
        assert!(parse("a: 1.10\n").is_err());
        assert_eq!(
            parse("a: \"1.10\"\n").expect("valid")["a"],
            ValueMatch::Exact("1.10".into())
        );
    }
}
