//! The local CA (docs/architecture.md, "The agent"): a root key and certificate in
//! files, signing ECDSA P-256 workload certificates whose only name is the
//! SPIFFE id as a URI SAN. The agent uses it directly in local mode (the lab
//! and the demo: every node holds the key); `mesh-agent ca serve` uses it to
//! sign the certificate requests of agents that never see the key.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::SpiffeId;

pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
/// Validity of a root made by `mesh-agent ca init`.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start a little in the past, so a peer whose clock is slightly
/// behind does not see them as not yet valid.
const BACKDATE: Duration = Duration::from_secs(60);

/// A signed workload certificate with its key.
#[derive(Debug)]
pub struct IssuedCert {
    pub identity: SpiffeId,
    /// Leaf first, then the CA.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl IssuedCert {
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// Signs workload certificates: the local CA ([`LocalCa`]) or the client of
/// the CA service ([`super::RemoteCa`]).
pub trait CertificateAuthority: Send + Sync + 'static {
    /// A certificate and its key for `identity`. Synchronous: the remote client
    /// blocks its caller (without stalling the async runtime's other tasks).
    fn issue(&self, identity: &SpiffeId, lifetime: Duration) -> Result<IssuedCert>;
    /// The roots peers' chains must lead to.
    fn roots(&self) -> Vec<CertificateDer<'static>>;
    /// The trust bundle changed (roots added or removed, see
    /// [`super::CertManager::set_roots`]). A CA that is reached over TLS
    /// verifies its server against the new roots from now on; the local CA has
    /// nothing to do.
    fn roots_changed(&self, _roots: &[CertificateDer<'static>]) {}
}

/// The local CA as the agent's authority (`mesh-agent run --ca-dir`). Every
/// node then holds the CA's private key: for the lab and the demo, not for
/// production, and the log says so.
pub fn local_authority(dir: &Path) -> Result<Arc<dyn CertificateAuthority>> {
    let ca = LocalCa::load(dir)?;
    tracing::warn!(
        ca = %dir.display(),
        "local CA mode: this agent holds the CA's private key and signs its own workload \
         certificates; for the lab and the demo only, NOT FOR PRODUCTION (use the CA service, \
         `mesh-agent ca serve`)"
    );
    Ok(Arc::new(ca))
}

/// A certificate signed for a public key held elsewhere.
#[derive(Debug)]
pub struct SignedCert {
    /// Leaf first, then the CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The CA service's own TLS certificate and key.
#[derive(Debug)]
pub struct ServingCert {
    /// Leaf first, then the CA.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
    pub not_after: SystemTime,
}

/// A CA whose key the agent holds.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

impl LocalCa {
    /// Creates a new root in `dir` (`ca.crt`, and `ca.key` readable by the
    /// owner only); refuses to overwrite an existing one.
    pub fn init(dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        for path in [&cert_path, &key_path] {
            if path.exists() {
                bail!(
                    "{} exists: refusing to replace a CA (remove it first to start over)",
                    path.display()
                );
            }
        }
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        // A name of its own: chains are matched to roots by name first.
        let tag: u32 = rand::random();
        name.push(DnType::CommonName, format!("Weft local CA {tag:08x}"));
        name.push(DnType::OrganizationName, "Weft");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_LIFETIME).into();
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        Ok((cert_path, key_path))
    }

    /// Loads the root from `dir`.
    pub fn load(dir: &Path) -> Result<LocalCa> {
        let hint = format!(
            "the CA directory needs {CA_CERT_FILE} and {CA_KEY_FILE}; `mesh-agent ca init {}` creates them",
            dir.display()
        );
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).with_context(|| format!("read {}: {hint}", path.display()))
        };
        let (cert_pem, key_pem) = (read(CA_CERT_FILE)?, read(CA_KEY_FILE)?);
        let key = KeyPair::from_pem(&key_pem).with_context(|| {
            format!("{}: not a PEM private key", dir.join(CA_KEY_FILE).display())
        })?;
        let der = pem_certificate(&cert_pem)
            .with_context(|| format!("{}: no PEM certificate", dir.join(CA_CERT_FILE).display()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(CA_CERT_FILE).display()))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            bail!(
                "{} and {} do not belong together: the key does not match the certificate",
                dir.join(CA_CERT_FILE).display(),
                dir.join(CA_KEY_FILE).display()
            );
        }
        let issuer = Issuer::from_ca_cert_der(&der, key).with_context(|| {
            format!(
                "{}: not a usable CA certificate",
                dir.join(CA_CERT_FILE).display()
            )
        })?;
        Ok(LocalCa { issuer, cert: der })
    }

    /// The root that signs (`ca.crt`).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// A certificate valid from `not_before` to `not_after` (tests make expired
    /// ones with it).
    pub fn issue_valid(
        &self,
        identity: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let signed = self.sign_workload(identity, &key, not_before, not_after)?;
        Ok(IssuedCert {
            identity: identity.clone(),
            chain: signed.chain,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            serial: signed.serial,
            not_before,
            not_after,
        })
    }

    /// A workload certificate for `identity` over a public key the requester
    /// holds the private half of (a checked CSR's). Nothing of the request but
    /// the key is copied: the name, usages and validity are the CA's.
    pub fn sign_workload(
        &self,
        identity: &SpiffeId,
        public_key: &impl PublicKeyData,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<SignedCert> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let serial = random_serial();
        let serial_hex = hex(serial.as_ref());
        params.serial_number = Some(serial);
        let cert = params.signed_by(public_key, &self.issuer)?;
        Ok(SignedCert {
            chain: vec![cert.der().clone(), self.cert.clone()],
            serial: serial_hex,
            not_before,
            not_after,
        })
    }

    /// [`Self::sign_workload`] valid from now (backdated a little) for `lifetime`.
    pub fn sign_request(
        &self,
        identity: &SpiffeId,
        public_key: &impl PublicKeyData,
        lifetime: Duration,
    ) -> Result<SignedCert> {
        let now = SystemTime::now();
        self.sign_workload(
            identity,
            public_key,
            now - BACKDATE.min(lifetime / 4),
            now + lifetime,
        )
        .with_context(|| format!("sign a certificate for {identity}"))
    }

    /// A TLS server certificate with a fresh key, for the CA service itself:
    /// `dns` and `ips` as its names, valid for `lifetime`.
    pub fn issue_serving(
        &self,
        dns: &[String],
        ips: &[IpAddr],
        lifetime: Duration,
    ) -> Result<ServingCert> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        if let Some(first) = dns.first() {
            name.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = name;
        let mut sans = Vec::with_capacity(dns.len() + ips.len());
        for d in dns {
            sans.push(SanType::DnsName(
                d.as_str()
                    .try_into()
                    .with_context(|| format!("{d:?} is not a DNS name"))?,
            ));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        let not_after = now + lifetime;
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServingCert {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            not_after,
        })
    }
}

impl CertificateAuthority for LocalCa {
    fn issue(&self, identity: &SpiffeId, lifetime: Duration) -> Result<IssuedCert> {
        let now = SystemTime::now();
        self.issue_valid(identity, now - BACKDATE.min(lifetime / 4), now + lifetime)
            .with_context(|| format!("issue a certificate for {identity}"))
    }

    fn roots(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and never starting with a zero byte (DER minimal encoding).
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pem_certificate(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

/// Every certificate of a PEM text, in order; an error names the first bad block.
pub fn pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .enumerate()
        .map(|(i, c)| c.map_err(|e| anyhow::anyhow!("PEM certificate #{}: {e}", i + 1)))
        .collect()
}

/// PEM text of one certificate.
pub fn to_pem(cert: &CertificateDer<'_>) -> String {
    use std::fmt::Write as _;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(cert.len() * 4 / 3 + 4);
    for chunk in cert.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(data)
        .with_context(|| format!("write {}", path.display()))
}
