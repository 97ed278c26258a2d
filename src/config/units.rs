//! Human-friendly units in the YAML (`500ms`, `2s`, `10MiB`), so operators never count zeros.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// A duration written the way people write them: `500ms`, `2s`, `1m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        humantime::parse_duration(raw.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {raw:?} ({e}); write e.g. 500ms, 2s, 1m"
                ))
            })
    }
}

/// Written back the way it is read (`/config` on the admin port).
impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A byte size: `512KiB`, `10MiB`, `1GB`, or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s
                .trim()
                .parse::<bytesize::ByteSize>()
                .map(|b| ByteSize(b.as_u64()))
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "invalid size {s:?} ({e}); write e.g. 512KiB, 10MiB"
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_human_forms() {
        let d: HumanDuration = serde_yaml::from_str("500ms").unwrap();
        assert_eq!(d.0, Duration::from_millis(500));
        let d: HumanDuration = serde_yaml::from_str("1m").unwrap();
        assert_eq!(d.0, Duration::from_secs(60));
        let err = serde_yaml::from_str::<HumanDuration>("2x").unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }

    #[test]
    fn sizes_parse_binary_units_and_plain_numbers() {
        let s: ByteSize = serde_yaml::from_str("10MiB").unwrap();
        assert_eq!(s.0, 10 * 1024 * 1024);
        let s: ByteSize = serde_yaml::from_str("512KiB").unwrap();
        assert_eq!(s.0, 512 * 1024);
        let s: ByteSize = serde_yaml::from_str("1000").unwrap();
        assert_eq!(s.0, 1000);
        assert!(serde_yaml::from_str::<ByteSize>("lots").is_err());
    }
}
