//! The local CA (DESIGN §3 "Identity and mTLS", `local` mode): a root key and
//! certificate in files, signing ECDSA P-256 workload certificates whose only
//! name is the SPIFFE id as a URI SAN.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
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

/// Signs workload certificates. The local CA now; a remote CA client later.
pub trait CertificateAuthority: Send + Sync + 'static {
    fn issue(&self, identity: &SpiffeId, lifetime: Duration) -> Result<IssuedCert>;
    /// The roots peers' chains must lead to.
    fn roots(&self) -> Vec<CertificateDer<'static>>;
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

    /// A certificate valid from `not_before` to `not_after` (tests make expired
    /// ones with it).
    pub fn issue_valid(
        &self,
        identity: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
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
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            identity: identity.clone(),
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            serial: serial_hex,
            not_before,
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
