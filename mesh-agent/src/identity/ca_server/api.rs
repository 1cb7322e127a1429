//! The CA service's wire format, shared by the server and the agent's client.
//!
//! `POST /v1/certificates` with `Authorization: Bearer <projected token>` and
//! `{ "csr": "<PEM PKCS#10>", "lifetime_seconds": 86400 }` answers
//! `200 { "chain": ["<PEM leaf>", "<PEM root>"], "notAfter": <unix seconds> }`,
//! or `400`/`401`/`403`/`503` with `{ "error": "<why>" }`.

use serde::{Deserialize, Serialize};

pub const CERTIFICATES_PATH: &str = "/v1/certificates";
pub const HEALTHZ_PATH: &str = "/healthz";
/// The port of the CA service.
pub const DEFAULT_PORT: u16 = 15012;
/// The audience agents' tokens for the CA carry.
pub const DEFAULT_AUDIENCE: &str = "weft-ca";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// PKCS#10, PEM; its only name is the requested SPIFFE id as a URI SAN.
    pub csr: String,
    /// Wanted lifetime; the CA caps it (default: the cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_seconds: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssueResponse {
    /// PEM certificates, leaf first, then the CA's.
    pub chain: Vec<String>,
    /// Unix seconds.
    pub not_after: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorResponse {
    pub error: String,
}
