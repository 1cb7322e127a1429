//! SPIFFE ids of workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A workload identity. Only the Kubernetes shape Weft issues is accepted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("{0:?} is not a SPIFFE id: it must start with spiffe://")]
    Scheme(String),
    #[error(
        "{0:?} is not a workload SPIFFE id: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Shape(String),
}

impl SpiffeId {
    pub fn for_workload(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_owned()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] if [td, ns, sa].iter().all(|p| !p.is_empty()) => {
                Ok(Self::for_workload(td, ns, sa))
            }
            _ => Err(SpiffeIdError::Shape(s.to_owned())),
        }
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_shapes() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/frontend"
            .parse()
            .unwrap();
        assert_eq!(
            id,
            SpiffeId::for_workload("cluster.local", "shop", "frontend")
        );
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/frontend");
        assert_eq!(id.namespace(), "shop");
        assert!(matches!(
            "https://x/ns/a/sa/b".parse::<SpiffeId>(),
            Err(SpiffeIdError::Scheme(_))
        ));
        for bad in [
            "spiffe://td/ns/a",
            "spiffe://td/ns//sa/b",
            "spiffe://td/x/a/sa/b",
            "spiffe://td/ns/a/sa/b/c",
        ] {
            assert!(
                matches!(bad.parse::<SpiffeId>(), Err(SpiffeIdError::Shape(_))),
                "{bad}"
            );
        }
    }
}
