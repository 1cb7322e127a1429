//! Gateway API durations (`GEP-2257`): `1h`, `30s`, `500ms`, `1m30s`.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the Gateway API way: one to four `<number><unit>` parts,
/// each number at most five digits, units `h`, `m`, `s`, `ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GatewayDuration(pub Duration);

/// What a duration string must look like, for error messages.
pub const DURATION_HINT: &str = "a Gateway API duration like 500ms, 10s, 1m30s or 1h";

#[derive(Debug, thiserror::Error)]
#[error("invalid duration {input:?}: expected {DURATION_HINT}")]
pub struct DurationError {
    input: String,
}

impl FromStr for GatewayDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError {
            input: s.to_owned(),
        };
        let bytes = s.as_bytes();
        if bytes.is_empty() {
            return Err(err());
        }
        let (mut i, mut parts, mut total) = (0usize, 0usize, Duration::ZERO);
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[start..i];
            if digits.is_empty() || digits.len() > 5 {
                return Err(err());
            }
            let n: u64 = digits.parse().map_err(|_| err())?;
            let unit = if s[i..].starts_with("ms") {
                i += 2;
                Duration::from_millis(n)
            } else {
                let d = match bytes.get(i) {
                    Some(b'h') => Duration::from_secs(n * 3600),
                    Some(b'm') => Duration::from_secs(n * 60),
                    Some(b's') => Duration::from_secs(n),
                    _ => return Err(err()),
                };
                i += 1;
                d
            };
            total += unit;
            parts += 1;
        }
        if parts > 4 {
            return Err(err());
        }
        Ok(GatewayDuration(total))
    }
}

impl fmt::Display for GatewayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let (h, m, s, rest) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (rest, "ms")] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for GatewayDuration {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GatewayDuration {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(de)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for GatewayDuration {
    fn schema_name() -> Cow<'static, str> {
        "GatewayDuration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]{1,5}(h|m|s|ms)){1,4}$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (s, ms) in [
            ("500ms", 500),
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
        ] {
            let d: GatewayDuration = s.parse().expect(s);
            assert_eq!(d.0.as_millis(), ms);
            assert_eq!(d.to_string(), s);
        }
        for bad in ["", "10", "1x", "123456s", "1h1m1s1ms1h", "-1s"] {
            assert!(bad.parse::<GatewayDuration>().is_err(), "{bad}");
        }
    }
}
