//! The control plane's PKI, made fresh for every run with rcgen: one cluster CA
//! (it signs the API server's serving certificate and the client certificates,
//! and is the `--client-ca-file`), and the service-account signing key.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

/// The `kubernetes` Service's cluster IP in `--service-cluster-ip-range=10.96.0.0/16`.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
const BACKDATE: Duration = Duration::from_secs(3600);

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The cluster CA of one control plane; issues more client certificates on demand.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    pub ca: CertFiles,
    /// The API server's serving certificate.
    pub serving: CertFiles,
    /// `system:masters`: what the lab's kubectl uses.
    pub admin: CertFiles,
    /// `system:kube-controller-manager`, bound by the bootstrap RBAC policy.
    pub controller_manager: CertFiles,
    /// Signs service-account tokens (`sa.key`); `sa.pub` verifies them.
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

impl Pki {
    /// Generates everything into `dir` (which must exist).
    pub fn generate(dir: &Path) -> Result<Pki> {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = base_params("weft-lab-kubernetes-ca", None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params
            .self_signed(&ca_key)
            .context("self-sign the cluster CA")?;
        let ca = write_pair(dir, "ca", &ca_cert.pem(), &ca_key.serialize_pem())?;
        let issuer = Issuer::new(params, ca_key);

        let sa = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        write_private(&sa_key, &sa.serialize_pem())?;
        std::fs::write(&sa_pub, sa.public_key_pem())
            .with_context(|| format!("write {}", sa_pub.display()))?;

        let mut pki = Pki {
            dir: dir.to_path_buf(),
            issuer,
            ca,
            serving: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            admin: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            controller_manager: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            sa_key,
            sa_pub,
        };
        pki.serving = pki.serving_cert("apiserver")?;
        pki.admin = pki.client_cert("admin", "weft-lab-admin", Some("system:masters"))?;
        pki.controller_manager =
            pki.client_cert("controller-manager", "system:kube-controller-manager", None)?;
        Ok(pki)
    }

    /// The API server's certificate: valid for a client that dials it by
    /// loopback IP, by `localhost`, or by the `kubernetes` Service's IP and names.
    fn serving_cert(&self, file: &str) -> Result<CertFiles> {
        let mut params = base_params("kube-apiserver", None);
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)),
        ];
        for name in [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.try_into()?));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, params)
    }

    /// A client certificate for user `cn` in `group` (rcgen keeps one O per
    /// name), written as `<file>.crt`/`<file>.key` in the PKI directory.
    pub fn client_cert(&self, file: &str, cn: &str, group: Option<&str>) -> Result<CertFiles> {
        let mut params = base_params(cn, group);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, params)
    }

    fn issue(&self, file: &str, mut params: CertificateParams) -> Result<CertFiles> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("sign the {file} certificate"))?;
        write_pair(&self.dir, file, &cert.pem(), &key.serialize_pem())
    }
}

fn base_params(cn: &str, group: Option<&str>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    if let Some(group) = group {
        name.push(DnType::OrganizationName, group);
    }
    params.distinguished_name = name;
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + LIFETIME).into();
    params
}

fn write_pair(dir: &Path, file: &str, cert: &str, key: &str) -> Result<CertFiles> {
    let files = CertFiles {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
    };
    std::fs::write(&files.cert, cert).with_context(|| format!("write {}", files.cert.display()))?;
    write_private(&files.key, key)?;
    Ok(files)
}

fn write_private(path: &Path, pem: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .with_context(|| format!("write {}", path.display()))
}
