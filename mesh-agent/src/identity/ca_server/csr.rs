//! A certificate request → the identity it asks for, or why it is refused.
//! Pure: no clock, no I/O.

use rcgen::{CertificateSigningRequestParams, PKCS_ECDSA_P256_SHA256, SanType};

use crate::identity::SpiffeId;

/// What the CA signs: the public key of a checked request and its one identity.
#[derive(Debug)]
pub struct CheckedCsr {
    pub identity: SpiffeId,
    pub public_key: rcgen::PublicKey,
}

/// Why a request is not a certificate request the CA signs (HTTP 400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the csr is not a PEM PKCS#10 request with a valid signature: {0}")]
    Unreadable(String),
    #[error("the csr's key must be ECDSA P-256 signed with SHA-256")]
    KeyAlgorithm,
    #[error(
        "the csr must name exactly one SPIFFE id as its only subject alternative name, found {0}"
    )]
    Names(String),
    #[error("the csr names {0:?}: {1}")]
    NotWorkloadId(String, String),
    #[error("the csr names {id}, outside this CA's trust domain {trust_domain:?}")]
    TrustDomain { id: String, trust_domain: String },
}

/// Reads a PEM CSR: its signature must verify (the requester holds the key),
/// its key be P-256, and its only name be one SPIFFE workload id in
/// `trust_domain`. Usages, constraints and the subject it asks for are
/// ignored: the CA sets its own.
pub fn check_csr(pem: &str, trust_domain: &str) -> Result<CheckedCsr, CsrError> {
    let request = CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| CsrError::Unreadable(e.to_string()))?;
    if request.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(CsrError::KeyAlgorithm);
    }
    let uri = match request.params.subject_alt_names.as_slice() {
        [SanType::URI(uri)] => uri.as_str().to_owned(),
        names => return Err(CsrError::Names(describe(names))),
    };
    let identity: SpiffeId = uri.parse().map_err(|e: crate::identity::SpiffeIdError| {
        CsrError::NotWorkloadId(uri.clone(), e.to_string())
    })?;
    if identity.trust_domain() != trust_domain {
        return Err(CsrError::TrustDomain {
            id: uri,
            trust_domain: trust_domain.to_owned(),
        });
    }
    Ok(CheckedCsr {
        identity,
        public_key: request.public_key,
    })
}

fn describe(names: &[SanType]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let list: Vec<String> = names
        .iter()
        .map(|n| match n {
            SanType::URI(u) => format!("URI {}", u.as_str()),
            SanType::DnsName(d) => format!("DNS {}", d.as_str()),
            SanType::IpAddress(ip) => format!("IP {ip}"),
            SanType::Rfc822Name(m) => format!("email {}", m.as_str()),
            other => format!("{other:?}"),
        })
        .collect();
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P384_SHA384};

    use super::*;

    fn csr(sans: Vec<SanType>, key: &KeyPair) -> String {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    fn p256() -> KeyPair {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
    }

    #[test]
    fn one_spiffe_id_of_our_trust_domain_is_accepted() {
        let key = p256();
        let pem = csr(
            vec![uri("spiffe://cluster.local/ns/shop/sa/frontend")],
            &key,
        );
        let checked = check_csr(&pem, "cluster.local").unwrap();
        assert_eq!(
            checked.identity,
            SpiffeId::for_workload("cluster.local", "shop", "frontend")
        );
        use rcgen::PublicKeyData;
        assert_eq!(checked.public_key.der_bytes(), key.public_key_raw());
    }

    #[test]
    fn other_names_and_shapes_are_refused() {
        let key = p256();
        let cases: Vec<(Vec<SanType>, &str)> = vec![
            (vec![], "found none"),
            (
                vec![
                    uri("spiffe://cluster.local/ns/shop/sa/frontend"),
                    uri("spiffe://cluster.local/ns/shop/sa/admin"),
                ],
                "exactly one",
            ),
            (
                vec![
                    uri("spiffe://cluster.local/ns/shop/sa/frontend"),
                    SanType::DnsName("evil.example".try_into().unwrap()),
                ],
                "DNS evil.example",
            ),
            (
                vec![SanType::DnsName("frontend.shop".try_into().unwrap())],
                "DNS frontend.shop",
            ),
            (
                vec![uri("spiffe://cluster.local/ns/shop")],
                "not a workload SPIFFE id",
            ),
            (
                vec![uri("https://cluster.local/ns/a/sa/b")],
                "must start with spiffe://",
            ),
            (
                vec![uri("spiffe://other.domain/ns/shop/sa/frontend")],
                "outside this CA's trust domain \"cluster.local\"",
            ),
        ];
        for (sans, want) in cases {
            let e = check_csr(&csr(sans.clone(), &key), "cluster.local")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{sans:?}: {e}");
        }
    }

    #[test]
    fn garbage_tampered_and_other_keys_are_refused() {
        assert!(matches!(
            check_csr("not a csr", "cluster.local"),
            Err(CsrError::Unreadable(_))
        ));
        // A request whose signature does not match its content.
        let key = p256();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![uri("spiffe://cluster.local/ns/shop/sa/frontend")];
        let good = params.serialize_request(&key).unwrap();
        let mut der = good.der().to_vec();
        let at = der.len() - 10;
        der[at] ^= 0xff;
        let tampered = pem_of(&der);
        assert!(matches!(
            check_csr(&tampered, "cluster.local"),
            Err(CsrError::Unreadable(_))
        ));
        let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let pem = csr(
            vec![uri("spiffe://cluster.local/ns/shop/sa/frontend")],
            &p384,
        );
        assert_eq!(
            check_csr(&pem, "cluster.local").unwrap_err(),
            CsrError::KeyAlgorithm
        );
    }

    fn pem_of(der: &[u8]) -> String {
        let body = crate::identity::ca::to_pem(&der.to_vec().into());
        body.replace("CERTIFICATE", "CERTIFICATE REQUEST")
    }
}
