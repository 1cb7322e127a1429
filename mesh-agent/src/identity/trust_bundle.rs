//! The trust bundle in the cluster: a ConfigMap (`weft-trust-bundle` in
//! `weft-system` by default) whose key `roots.pem` holds every root workload
//! certificates may chain to. The CA service writes it (`ca_server::bundle`);
//! agents read it at start and watch it, so roots added or removed during a
//! root rotation reach every agent's [`CertManager`] without a restart.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::watcher::watcher;
use kube::runtime::watcher::{self, Event};
use rustls::pki_types::CertificateDer;
use tracing::{debug, error, info, warn};

use super::CertManager;
use super::ca::pem_certificates;

/// The ConfigMap key that holds the roots, PEM, one after the other.
pub const ROOTS_KEY: &str = "roots.pem";
pub const DEFAULT_TRUST_BUNDLE: &str = "weft-trust-bundle";
pub const DEFAULT_NAMESPACE: &str = "weft-system";

#[derive(Debug, thiserror::Error)]
pub enum TrustBundleError {
    #[error("ConfigMap {namespace}/{name} does not exist (yet): is the CA service running?")]
    Missing { namespace: String, name: String },
    #[error("ConfigMap {namespace}/{name}: {why}")]
    Invalid {
        namespace: String,
        name: String,
        why: String,
    },
    #[error("read ConfigMap {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// The roots of a trust-bundle ConfigMap; an error says what is wrong with it
/// (no `roots.pem`, bad PEM, no certificate).
pub fn roots_of(config_map: &ConfigMap) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(ROOTS_KEY))
        .ok_or_else(|| format!("no {ROOTS_KEY} key"))?;
    let roots = pem_certificates(pem).map_err(|e| format!("{ROOTS_KEY}: {e:#}"))?;
    if roots.is_empty() {
        return Err(format!("{ROOTS_KEY} holds no certificate"));
    }
    Ok(roots)
}

/// The roots published now, read once (the agent's initial trust bundle).
pub async fn fetch_trust_bundle(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<CertificateDer<'static>>, TrustBundleError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config_map = api
        .get_opt(name)
        .await
        .map_err(|source| TrustBundleError::Api {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| TrustBundleError::Missing {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    roots_of(&config_map).map_err(|why| TrustBundleError::Invalid {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        why,
    })
}

/// [`fetch_trust_bundle`], retried every `every` while the ConfigMap is
/// missing or the API server cannot be reached (the CA service may start
/// after the agents), until `deadline` has passed.
pub async fn wait_for_trust_bundle(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    every: Duration,
    deadline: Duration,
) -> Result<Vec<CertificateDer<'static>>, TrustBundleError> {
    let start = tokio::time::Instant::now();
    loop {
        match fetch_trust_bundle(client, namespace, name).await {
            Ok(roots) => return Ok(roots),
            Err(e @ TrustBundleError::Invalid { .. }) => return Err(e),
            Err(e) if start.elapsed() + every > deadline => return Err(e),
            Err(e) => {
                warn!(error = %e, "waiting for the trust bundle");
                tokio::time::sleep(every).await;
            }
        }
    }
}

/// Watches the trust-bundle ConfigMap and gives every new set of roots to
/// `certs` ([`CertManager::set_roots`]). Runs until dropped (spawn it, abort it
/// on shutdown). Watch errors are retried with backoff; a deleted or invalid
/// ConfigMap keeps the roots in force (an empty trust store would refuse every
/// peer), with an error in the log.
pub async fn watch_trust_bundle(
    client: kube::Client,
    namespace: String,
    name: String,
    certs: Arc<CertManager>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // The cluster source's backoff: a 410 after an outage relists at once.
    let mut events = crate::config::kube::backoff(watcher(api, config).boxed()).boxed();
    while let Some(event) = events.next().await {
        let config_map = match event {
            Ok(Event::Apply(cm) | Event::InitApply(cm)) => cm,
            Ok(Event::Delete(_)) => {
                error!(%namespace, %name, "the trust-bundle ConfigMap was deleted; keeping the current roots");
                continue;
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(e) => {
                warn!(%namespace, %name, error = %e, "trust-bundle watch failed; retrying");
                continue;
            }
        };
        let roots = match roots_of(&config_map) {
            Ok(roots) => roots,
            Err(why) => {
                error!(%namespace, %name, %why, "invalid trust bundle ignored; keeping the current roots");
                continue;
            }
        };
        if roots == certs.roots() {
            debug!(%namespace, %name, "trust bundle unchanged");
            continue;
        }
        match certs.set_roots(roots) {
            Ok(()) => {
                info!(%namespace, %name, roots = certs.roots().len(), "trust bundle updated from the ConfigMap")
            }
            Err(e) => {
                error!(%namespace, %name, error = %format!("{e:#}"), "trust bundle refused; keeping the current roots")
            }
        }
    }
}
