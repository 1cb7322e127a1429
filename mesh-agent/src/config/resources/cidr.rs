//! An IP block written as a CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3`).

use std::{borrow::Cow, fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed IP block; a bare address means a /32 (or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpBlock(pub IpNet);

impl IpBlock {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid IP block {0:?}: expected a CIDR like 10.0.0.0/8 or fd00::/64, or a single address"
)]
pub struct IpBlockError(String);

impl FromStr for IpBlock {
    type Err = IpBlockError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(IpBlock(net));
        }
        s.parse::<IpAddr>()
            .map(|ip| IpBlock(IpNet::from(ip)))
            .map_err(|_| IpBlockError(s.to_owned()))
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for IpBlock {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpBlock {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(de)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for IpBlock {
    fn schema_name() -> Cow<'static, str> {
        "IpBlock".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string" })
    }
}
