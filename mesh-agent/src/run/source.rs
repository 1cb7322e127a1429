//! Where the agent's state comes from: a YAML file (local mode) or the Kubernetes
//! API server (cluster mode). Either way the rest of the agent reads one
//! [`StateHandle`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::RunArgs;
use crate::config::{self, kube::KubeSource, resources::ResourceSet};
use crate::state::{self, StateHandle};
use crate::telemetry::Metrics;

/// Loads the files (an invalid configuration stops the start) and watches them.
pub fn start_file(args: &RunArgs, metrics: &Metrics) -> Result<StateHandle> {
    let snapshot = config::file::load(&args.config).map_err(|errors| {
        anyhow::anyhow!("the configuration is invalid; nothing was started:\n{errors}")
    })?;
    let state = StateHandle::new(snapshot);
    tokio::spawn(config::file::watch(
        args.config.clone(),
        state.clone(),
        metrics.config_errors().clone(),
    ));
    Ok(state)
}

/// Connects to the API server, starts the watchers and waits for the first full
/// sync: the pod manager must not reconcile against an empty state, which would
/// release the pods a previous agent left captured.
pub async fn start_kube(
    args: &RunArgs,
    metrics: Arc<Metrics>,
) -> Result<(StateHandle, KubeSource, kube::Client)> {
    let client = kube_client(args).await?;
    let state = StateHandle::new(state::build(&ResourceSet::default()));
    let source = config::kube::spawn(client.clone(), args.node.clone(), state.clone(), metrics);
    let mut synced = source.synced.clone();
    let started = std::time::Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), synced.wait_for(|s| *s)).await {
            Ok(Ok(_)) => break,
            Ok(Err(_)) => anyhow::bail!("the cluster source stopped before its first sync"),
            Err(_) => warn!(
                waited = ?started.elapsed(),
                "still waiting for the first full list from the API server"
            ),
        }
    }
    info!(took = ?started.elapsed(), generation = state.current().generation, "state taken from the API server");
    Ok((state, source, client))
}

async fn kube_client(args: &RunArgs) -> Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("use the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("find the API server: neither in a cluster (service account) nor a kubeconfig ($KUBECONFIG, ~/.kube/config); or pass --kubeconfig")?,
    };
    crate::identity::tls::install_process_provider();
    kube::Client::try_from(config).context("make the API client")
}
