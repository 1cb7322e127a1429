//! `mesh-agent ca serve`: the CA service. It holds the CA key (from a Secret
//! mounted at `--ca-dir`); agents never see it. An agent sends a CSR for one
//! workload identity with its projected ServiceAccount token; the service
//! checks the token with a `TokenReview`, learns the agent's node from the
//! token's pod binding, and signs only identities of pods scheduled on that
//! node. It publishes the trust bundle in a ConfigMap. No state of its own:
//! any number of replicas may run.
//!
//! `api` the wire format; `authorize` and `csr` the pure decisions; `review`
//! the API server questions; `issue` one request; `http` the server;
//! `signer` the key material, reloaded when its files change; `bundle` the
//! trust-bundle ConfigMap; `limit` log rate limiting.
//!
//! Beside the serving path, the replicas elect one that writes route and policy
//! status (`crate::status`, `--write-status`); a failure there never stops
//! certificate issuing.

pub mod api;
pub mod authorize;
mod bundle;
pub mod csr;
pub(crate) mod http;
mod issue;
pub(crate) mod limit;
mod review;
pub(crate) mod signer;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

pub use authorize::ServiceAccountRef;
pub use bundle::{bundle_pem, read_roots};
pub use signer::{Refresh, Signer, SignerFiles};

/// Checked at least this often, even unchanged (someone may have edited it).
const BUNDLE_RESYNC: Duration = Duration::from_secs(60);
/// The extra-roots file when `--extra-roots` is not given: a key of the CA's
/// Secret, absent except during a root rotation.
pub const EXTRA_ROOTS_FILE: &str = "extra-roots.pem";

/// Everything `ca serve` is told.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub ca_dir: PathBuf,
    /// Default: `<ca_dir>/extra-roots.pem`.
    pub extra_roots: Option<PathBuf>,
    pub trust_bundle_configmap: String,
    pub namespace: String,
    pub audience: String,
    pub agent_service_account: ServiceAccountRef,
    pub trust_domain: String,
    pub max_lifetime: Duration,
    pub serving_ips: Vec<IpAddr>,
    pub kubeconfig: Option<PathBuf>,
    /// How often the CA files are looked at.
    pub poll_interval: Duration,
    /// Route and policy status (`None`: `--write-status=false`).
    pub status: Option<crate::status::StatusOptions>,
}

impl ServeOptions {
    /// The serving certificate's DNS names: the Service's, in every form.
    pub fn dns_names(&self) -> Vec<String> {
        let ns = &self.namespace;
        vec![
            "weft-ca".to_owned(),
            format!("weft-ca.{ns}"),
            format!("weft-ca.{ns}.svc"),
            format!("weft-ca.{ns}.svc.cluster.local"),
        ]
    }
}

/// Runs the CA service until the listener fails or `shutdown` completes.
pub async fn serve(opts: ServeOptions, shutdown: impl Future<Output = ()>) -> Result<()> {
    let signer = Arc::new(Signer::load(SignerFiles {
        ca_dir: opts.ca_dir.clone(),
        extra_roots: Some(
            opts.extra_roots
                .clone()
                .unwrap_or_else(|| opts.ca_dir.join(EXTRA_ROOTS_FILE)),
        ),
        dns_names: opts.dns_names(),
        ips: opts.serving_ips.clone(),
    })?);
    let keys = signer.keys();
    info!(
        ca = %opts.ca_dir.display(),
        signing_root = %bundle::describe(std::slice::from_ref(keys.ca.certificate())).join(""),
        roots = ?bundle::describe(&keys.roots),
        trust_domain = %opts.trust_domain,
        audience = %opts.audience,
        agent = %opts.agent_service_account,
        max_lifetime = ?opts.max_lifetime,
        "CA key loaded"
    );
    let client = kube_client(opts.kubeconfig.as_ref()).await?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("bind {}", opts.listen))?;
    tokio::spawn(maintain(signer.clone(), client.clone(), opts.clone()));
    // Its own tasks: whatever happens there, the CA keeps serving.
    let status = opts
        .status
        .as_ref()
        .map(|s| crate::status::spawn(client.clone(), s));
    let service = Arc::new(issue::CaService::new(
        client,
        signer.clone(),
        opts.audience,
        opts.agent_service_account,
        opts.trust_domain,
        opts.max_lifetime,
    ));
    let tls = http::server_tls(signer)?;
    tokio::select! {
        result = http::serve(listener, tls, service) => result,
        () = shutdown => {
            if let Some(status) = status {
                status.stop().await;
            }
            Ok(())
        }
    }
}

/// In-cluster configuration (or `$KUBECONFIG`), or the given kubeconfig.
pub async fn kube_client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client> {
    super::tls::install_process_provider();
    let client = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
            kube::Client::try_from(config)?
        }
        None => kube::Client::try_default()
            .await
            .context("no in-cluster configuration and no kubeconfig")?,
    };
    Ok(client)
}

/// Watches the CA files (reloading the signer) and keeps the trust-bundle
/// ConfigMap equal to the roots: at start, on change, every few minutes, and
/// again after a failed write.
async fn maintain(signer: Arc<Signer>, client: kube::Client, opts: ServeOptions) {
    let (ns, name) = (&opts.namespace, &opts.trust_bundle_configmap);
    let mut published: Option<(String, Instant)> = None;
    loop {
        match signer.refresh(SystemTime::now()) {
            Ok(Refresh::Unchanged) => {}
            Ok(Refresh::ServingRenewed) => info!("CA serving certificate renewed"),
            Ok(Refresh::Reloaded) => {
                let keys = signer.keys();
                info!(
                    signing_root = %bundle::describe(std::slice::from_ref(keys.ca.certificate())).join(""),
                    roots = ?bundle::describe(&keys.roots),
                    "CA files changed: key and roots reloaded"
                );
            }
            Err(e) => error!(
                error = %format!("{e:#}"),
                "CA files changed but cannot be loaded; still signing with the previous key"
            ),
        }
        let pem = bundle_pem(&signer.keys().roots);
        let due = match &published {
            Some((last, at)) => *last != pem || at.elapsed() >= BUNDLE_RESYNC,
            None => true,
        };
        if due {
            match bundle::publish(&client, ns, name, pem.clone()).await {
                Ok(outcome) => {
                    if outcome != bundle::Published::Unchanged {
                        info!(configmap = %format!("{ns}/{name}"), roots = signer.keys().roots.len(), ?outcome, "trust bundle published");
                    }
                    published = Some((pem, Instant::now()));
                }
                Err(e) => {
                    warn!(configmap = %format!("{ns}/{name}"), error = %format!("{e:#}"), "cannot publish the trust bundle; retrying");
                    published = None;
                }
            }
        }
        tokio::time::sleep(opts.poll_interval).await;
    }
}
