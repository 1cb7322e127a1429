//! Workload identity (DESIGN §3 `identity`): SPIFFE ids, the local CA,
//! per-workload certificates and their renewal, and the rustls configurations
//! and verifiers of the mutual-TLS tunnel.

mod ca;
mod manager;
mod spiffe;
pub mod tls;

pub use ca::{CA_CERT_FILE, CA_KEY_FILE, CertificateAuthority, IssuedCert, LocalCa};
pub use manager::{CertConfig, CertManager, CertStatus, Credential};
pub use spiffe::{SpiffeId, SpiffeIdError};

#[cfg(test)]
mod tests;
