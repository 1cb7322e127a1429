//! Publishing the trust bundle: every root of the CA directory (`ca.crt`, the
//! signing root, and the roots of the extra-roots file, kept during a
//! rotation) into the ConfigMap agents watch, key `roots.pem`. Created, or
//! replaced when it differs, with the resource version read (a replica that
//! loses a race to the other tries again at its next poll); RBAC: `get`,
//! `create`, `update` on ConfigMaps in the CA's namespace.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use rustls::pki_types::CertificateDer;

use crate::identity::ca::{CA_CERT_FILE, pem_certificates, to_pem};
use crate::identity::trust_bundle::ROOTS_KEY;

pub const FIELD_MANAGER: &str = "weft-ca";

/// The roots to publish: the signing root first, then the extra ones (a
/// missing extra-roots file is an empty one: the Secret key is optional).
pub fn read_roots(
    ca_dir: &Path,
    extra_roots: Option<&Path>,
) -> Result<Vec<CertificateDer<'static>>> {
    let path = ca_dir.join(CA_CERT_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let mut roots = pem_certificates(&text).with_context(|| path.display().to_string())?;
    if roots.is_empty() {
        bail!("{}: no PEM certificate", path.display());
    }
    if let Some(extra) = extra_roots {
        match std::fs::read_to_string(extra) {
            Ok(text) => {
                let more = pem_certificates(&text).with_context(|| extra.display().to_string())?;
                roots.extend(more);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("read {}", extra.display())),
        }
    }
    let mut unique = Vec::with_capacity(roots.len());
    for root in roots {
        check_root(&root)?;
        if !unique.contains(&root) {
            unique.push(root);
        }
    }
    Ok(unique)
}

/// A root must be a CA certificate: a leaf in the bundle would be a mistake.
fn check_root(root: &CertificateDer<'_>) -> Result<()> {
    let (_, cert) = x509_parser::parse_x509_certificate(root)
        .map_err(|e| anyhow::anyhow!("a root of the bundle is not a certificate: {e}"))?;
    if !cert.is_ca() {
        bail!(
            "{} is not a CA certificate and cannot be a root of the trust bundle",
            cert.subject()
        );
    }
    Ok(())
}

/// The `roots.pem` text.
pub fn bundle_pem(roots: &[CertificateDer<'_>]) -> String {
    roots.iter().map(to_pem).collect()
}

/// Subjects and expiry of the roots, for the log.
pub fn describe(roots: &[CertificateDer<'_>]) -> Vec<String> {
    roots
        .iter()
        .map(|r| match x509_parser::parse_x509_certificate(r) {
            Ok((_, c)) => format!("{} (until {})", c.subject(), c.validity().not_after),
            Err(_) => "unreadable".to_owned(),
        })
        .collect()
}

/// The ConfigMap as this CA applies it.
pub fn config_map(namespace: &str, name: &str, pem: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "weft".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(ROOTS_KEY.to_owned(), pem)])),
        ..ConfigMap::default()
    }
}

/// What [`publish`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    Created,
    Updated,
    Unchanged,
}

/// Creates the ConfigMap, or sets its `roots.pem` to `pem` (other keys and
/// labels someone added are kept).
pub async fn publish(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    pem: String,
) -> Result<Published> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let context = || format!("publish ConfigMap {namespace}/{name}");
    match api.get_opt(name).await.with_context(context)? {
        None => {
            api.create(&params, &config_map(namespace, name, pem))
                .await
                .with_context(context)?;
            Ok(Published::Created)
        }
        Some(mut current) => {
            let data = current.data.get_or_insert_with(BTreeMap::new);
            if data.get(ROOTS_KEY) == Some(&pem) {
                return Ok(Published::Unchanged);
            }
            data.insert(ROOTS_KEY.to_owned(), pem);
            // `current` carries the resource version read: a concurrent write
            // makes this one fail (409) rather than be lost.
            api.replace(name, &params, &current)
                .await
                .with_context(context)?;
            Ok(Published::Updated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{LocalCa, trust_bundle::roots_of};

    #[test]
    fn roots_are_read_deduplicated_and_round_trip_through_the_config_map() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        LocalCa::init(a.path()).unwrap();
        LocalCa::init(b.path()).unwrap();
        let root_a = LocalCa::load(a.path()).unwrap().certificate().clone();
        let root_b = LocalCa::load(b.path()).unwrap().certificate().clone();
        let extra = a.path().join("extra-roots.pem");

        // No extra-roots file: the signing root alone.
        assert_eq!(
            read_roots(a.path(), Some(&extra)).unwrap(),
            vec![root_a.clone()]
        );

        // The signing root repeated in the extra file counts once.
        std::fs::write(&extra, bundle_pem(&[root_b.clone(), root_a.clone()])).unwrap();
        let roots = read_roots(a.path(), Some(&extra)).unwrap();
        assert_eq!(roots, vec![root_a.clone(), root_b.clone()]);

        let cm = config_map("weft-system", "weft-trust-bundle", bundle_pem(&roots));
        assert_eq!(roots_of(&cm).unwrap(), roots);
    }

    #[test]
    fn leaves_and_garbage_are_not_roots() {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::init(dir.path()).unwrap();
        let ca = LocalCa::load(dir.path()).unwrap();
        let leaf = ca
            .issue_serving(&["weft-ca".into()], &[], std::time::Duration::from_secs(60))
            .unwrap();
        let extra = dir.path().join("extra.pem");
        std::fs::write(&extra, bundle_pem(&leaf.chain[..1])).unwrap();
        let e = read_roots(dir.path(), Some(&extra))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a CA certificate"), "{e}");
        std::fs::write(
            &extra,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_roots(dir.path(), Some(&extra)).is_err());
        // A config map without the key, or with no certificate in it.
        let mut cm = config_map("ns", "n", String::new());
        assert!(roots_of(&cm).unwrap_err().contains("holds no certificate"));
        cm.data = None;
        assert!(roots_of(&cm).unwrap_err().contains("no roots.pem key"));
    }
}
