//! The CA's key material as of the last look at its files: the signing root
//! (`ca.crt`, `ca.key`), the roots to publish (plus the extra-roots file) and
//! the service's own TLS certificate, issued from the key at start, again when
//! the files change (a rotation switches the signing key) and at half life.
//! Swapped atomically; the TLS server picks the serving certificate per
//! handshake, so a reload needs no restart.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::bundle::read_roots;
use crate::identity::ca::{CA_CERT_FILE, CA_KEY_FILE};
use crate::identity::{LocalCa, tls};

/// How long the CA's serving certificate is valid; re-issued at half of it.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where the key material is and what the serving certificate names.
#[derive(Clone, Debug)]
pub struct SignerFiles {
    pub ca_dir: PathBuf,
    pub extra_roots: Option<PathBuf>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// One consistent generation of the key material.
pub struct Keys {
    pub ca: Arc<LocalCa>,
    /// Signing root first.
    pub roots: Vec<CertificateDer<'static>>,
    serving: Arc<CertifiedKey>,
    serving_renew_at: SystemTime,
    /// The files' bytes this generation was made from.
    stamp: Vec<Option<Vec<u8>>>,
}

/// What [`Signer::refresh`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    /// The serving certificate was re-issued (half life).
    ServingRenewed,
    /// The files changed: new signing root and/or roots.
    Reloaded,
}

#[derive(Debug)]
pub struct Signer {
    files: SignerFiles,
    keys: ArcSwap<Keys>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl Signer {
    /// Loads the files; fails if they are missing or do not belong together.
    pub fn load(files: SignerFiles) -> Result<Self> {
        let keys = load_keys(&files)?;
        Ok(Self {
            files,
            keys: ArcSwap::from_pointee(keys),
        })
    }

    pub fn keys(&self) -> Arc<Keys> {
        self.keys.load_full()
    }

    /// Reloads when the files changed, re-issues the serving certificate when
    /// due. A failed reload (files half written, key and certificate not
    /// matching yet) keeps the current generation and says why.
    pub fn refresh(&self, now: SystemTime) -> Result<Refresh> {
        let current = self.keys.load();
        if stamp(&self.files) != current.stamp {
            self.keys.store(Arc::new(load_keys(&self.files)?));
            return Ok(Refresh::Reloaded);
        }
        if now >= current.serving_renew_at {
            let (serving, serving_renew_at) = serving(&current.ca, &self.files)?;
            self.keys.store(Arc::new(Keys {
                ca: current.ca.clone(),
                roots: current.roots.clone(),
                serving,
                serving_renew_at,
                stamp: current.stamp.clone(),
            }));
            return Ok(Refresh::ServingRenewed);
        }
        Ok(Refresh::Unchanged)
    }
}

impl ResolvesServerCert for Signer {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.keys.load().serving.clone())
    }
}

fn load_keys(files: &SignerFiles) -> Result<Keys> {
    // The stamp first: a change while loading is seen at the next refresh.
    let stamp = stamp(files);
    let ca = Arc::new(LocalCa::load(&files.ca_dir)?);
    let roots = read_roots(&files.ca_dir, files.extra_roots.as_deref())?;
    let (serving, serving_renew_at) = serving(&ca, files)?;
    Ok(Keys {
        ca,
        roots,
        serving,
        serving_renew_at,
        stamp,
    })
}

fn serving(ca: &LocalCa, files: &SignerFiles) -> Result<(Arc<CertifiedKey>, SystemTime)> {
    let cert = ca
        .issue_serving(&files.dns_names, &files.ips, SERVING_LIFETIME)
        .context("issue the CA service's serving certificate")?;
    let key = CertifiedKey::from_der(cert.chain, PrivateKeyDer::Pkcs8(cert.key), &tls::provider())
        .context("load the serving key")?;
    Ok((Arc::new(key), SystemTime::now() + SERVING_LIFETIME / 2))
}

fn stamp(files: &SignerFiles) -> Vec<Option<Vec<u8>>> {
    let mut paths = vec![
        files.ca_dir.join(CA_CERT_FILE),
        files.ca_dir.join(CA_KEY_FILE),
    ];
    paths.extend(files.extra_roots.clone());
    paths.iter().map(|p| std::fs::read(p).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_reloaded_when_they_change_and_not_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::init(dir.path()).unwrap();
        let extra = dir.path().join("extra-roots.pem");
        let signer = Signer::load(SignerFiles {
            ca_dir: dir.path().to_owned(),
            extra_roots: Some(extra.clone()),
            dns_names: vec!["weft-ca".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        })
        .unwrap();
        let now = SystemTime::now();
        assert_eq!(signer.refresh(now).unwrap(), Refresh::Unchanged);
        assert_eq!(signer.keys().roots.len(), 1);

        // Rotation step 1: a new root in the extra file.
        let next = tempfile::tempdir().unwrap();
        LocalCa::init(next.path()).unwrap();
        std::fs::copy(next.path().join(CA_CERT_FILE), &extra).unwrap();
        assert_eq!(signer.refresh(now).unwrap(), Refresh::Reloaded);
        assert_eq!(signer.keys().roots.len(), 2);
        assert_eq!(signer.refresh(now).unwrap(), Refresh::Unchanged);

        // A key that does not match the certificate (a half-done edit): kept.
        let before = signer.keys().ca.certificate().clone();
        std::fs::copy(next.path().join(CA_KEY_FILE), dir.path().join(CA_KEY_FILE)).unwrap();
        assert!(signer.refresh(now).is_err());
        assert_eq!(signer.keys().ca.certificate(), &before);
        // ... and completed: the new signing root.
        std::fs::copy(
            next.path().join(CA_CERT_FILE),
            dir.path().join(CA_CERT_FILE),
        )
        .unwrap();
        assert_eq!(signer.refresh(now).unwrap(), Refresh::Reloaded);
        assert_ne!(signer.keys().ca.certificate(), &before);

        // Half life of the serving certificate.
        let later = now + SERVING_LIFETIME;
        assert_eq!(signer.refresh(later).unwrap(), Refresh::ServingRenewed);
    }
}
