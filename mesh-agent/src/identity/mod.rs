//! Workload identity (docs/architecture.md, "The agent"): SPIFFE ids, the CA (local, or
//! the CA service and its client), per-workload certificates and their
//! renewal, the trust bundle, and the rustls configurations and verifiers of
//! the mutual-TLS tunnel.

mod ca;
mod ca_client;
pub mod ca_server;
mod manager;
mod spiffe;
pub mod tls;
mod trust_bundle;

pub use ca::{
    CA_CERT_FILE, CA_KEY_FILE, CertificateAuthority, IssuedCert, LocalCa, ServingCert, SignedCert,
    local_authority, pem_certificates, to_pem,
};
pub use ca_client::{
    CaClientError, DEFAULT_CA_ADDRESS, DEFAULT_TOKEN_FILE, RemoteCa, RemoteCaOptions, csr_pem,
    remote_authority,
};
pub use manager::{CertConfig, CertManager, CertStatus, Credential};
/// The DER certificates of the public API (roots, chains).
pub use rustls::pki_types::CertificateDer;
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use trust_bundle::{
    DEFAULT_NAMESPACE, DEFAULT_TRUST_BUNDLE, ROOTS_KEY, TrustBundleError, fetch_trust_bundle,
    roots_of, wait_for_trust_bundle, watch_trust_bundle,
};

#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod tests;
