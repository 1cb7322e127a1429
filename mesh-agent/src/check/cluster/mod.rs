//! `mesh-agent check --kubeconfig`: an installed mesh, checked from wherever
//! the API server can be reached. `fetch` and `probe` gather the [`Facts`]
//! (all reads at once, each bounded); `decide` and its parts (`crds`,
//! `rollout`, `ca`, `clock`) turn them into checks without I/O.

mod ca;
mod clock;
mod crds;
mod decide;
mod facts;
mod fetch;
mod probe;
mod rollout;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use futures_util::StreamExt;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use facts::{AgentProbe, CaProbe, CertTimes, ClockReading, Facts, Fetched};

use super::{Check, Report};
use crate::identity::{DEFAULT_NAMESPACE, roots_of};

/// Agents probed at once through the pod proxy.
const PROBES_IN_FLIGHT: usize = 16;
/// Any single API request.
const API_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct ClusterOptions {
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, requires = "kubeconfig")]
    pub context: Option<String>,
    /// The namespace Weft is installed in.
    #[arg(long, default_value = DEFAULT_NAMESPACE, requires = "kubeconfig")]
    pub weft_namespace: String,
    /// Where to reach the CA service for the TLS check (e.g. 127.0.0.1:15012
    /// beside `kubectl -n weft-system port-forward svc/weft-ca 15012`);
    /// default: the Service's cluster IP, reachable from inside the cluster.
    #[arg(long, value_name = "HOST:PORT", requires = "kubeconfig")]
    pub ca_addr: Option<String>,
}

/// Gathers the facts and decides. Fails only when no kubeconfig can be
/// loaded; an API server that does not answer is a failed check.
pub fn run(kubeconfig: Option<PathBuf>, opts: &ClusterOptions) -> Result<Report> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let (client, server) = client(kubeconfig, opts.context.clone()).await?;
            Ok(match gather(&client, server.clone(), opts).await {
                Ok(facts) => Report::new(decide::checks(&facts)),
                Err(down) => Report::new(vec![Check::fail(
                    "API server",
                    format!("{server}: {down}"),
                    "check the kubeconfig (server, credentials, context) and that the API server is up: \
                     kubectl get --raw /readyz",
                )]),
            })
        })
}

async fn client(kubeconfig: Option<PathBuf>, context: Option<String>) -> Result<(Client, String)> {
    let options = KubeConfigOptions {
        context,
        ..Default::default()
    };
    let mut config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(&path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        None if options.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await.context(
            "no kubeconfig ($KUBECONFIG, ~/.kube/config) and no in-cluster configuration",
        )?,
    };
    config.read_timeout = Some(API_TIMEOUT);
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_owned();
    crate::identity::tls::install_process_provider();
    Ok((Client::try_from(config)?, server))
}

async fn gather(
    client: &Client,
    server: String,
    opts: &ClusterOptions,
) -> Result<Facts, fetch::ApiDown> {
    let ns = opts.weft_namespace.as_str();
    let (server_version, server_clock) = fetch::version(client).await?;
    let expected = crate::cli::crds::weft();
    let weft_crds = futures_util::future::join_all(expected.into_iter().map(|crd| async move {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let served = fetch::crd(client, &name).await;
        (crd, served)
    }));
    let gateway_crds = futures_util::future::join_all(
        fetch::GATEWAY_CRDS
            .iter()
            .map(|name| async move { (name.to_string(), fetch::crd(client, name).await) }),
    );
    let (
        weft_crds,
        gateway_crds,
        daemonset,
        nodes,
        agent_pods,
        ca_deployment,
        ca_key,
        trust_bundle,
        ca_service,
    ) = tokio::join!(
        weft_crds,
        gateway_crds,
        fetch::daemonset(client, ns),
        fetch::nodes(client),
        fetch::agent_pods(client, ns),
        fetch::ca_deployment(client, ns),
        fetch::ca_key(client, ns),
        fetch::trust_bundle(client, ns),
        fetch::ca_service(client, ns),
    );
    let port = metrics_port(daemonset.found());
    let agent_probes = async {
        let pods = agent_pods.found().cloned().unwrap_or_default();
        futures_util::stream::iter(pods)
            .map(|pod| async move {
                let name = pod.metadata.name.clone().unwrap_or_default();
                (name, probe::agent_metrics(client, ns, &pod, port).await)
            })
            .buffer_unordered(PROBES_IN_FLIGHT)
            .collect::<BTreeMap<String, AgentProbe>>()
            .await
    };
    let ca_probe = ca_probe(&trust_bundle, &ca_service, opts);
    let (agent_probes, ca_probe) = tokio::join!(agent_probes, ca_probe);
    Ok(Facts {
        namespace: ns.to_owned(),
        cli_version: env!("CARGO_PKG_VERSION").to_owned(),
        now: SystemTime::now(),
        server,
        server_version,
        server_clock,
        weft_crds,
        gateway_crds,
        daemonset,
        nodes,
        agent_pods,
        agent_probes,
        ca_deployment,
        ca_key,
        trust_bundle,
        ca_probe,
    })
}

/// The agent container's port named `metrics`, else the default.
fn metrics_port(ds: Option<&k8s_openapi::api::apps::v1::DaemonSet>) -> u16 {
    ds.and_then(|ds| ds.spec.template.spec.as_ref()?.containers.first().cloned())
        .and_then(|c| c.ports)
        .and_then(|ports| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some("metrics"))
                .and_then(|p| u16::try_from(p.container_port).ok())
        })
        .unwrap_or(probe::METRICS_PORT)
}

/// The handshake with the CA: at `--ca-addr`, else at the Service's cluster IP.
async fn ca_probe(
    bundle: &Fetched<k8s_openapi::api::core::v1::ConfigMap>,
    service: &Fetched<k8s_openapi::api::core::v1::Service>,
    opts: &ClusterOptions,
) -> CaProbe {
    let Some(roots) = bundle.found().and_then(|cm| roots_of(cm).ok()) else {
        return CaProbe::NotTried("no valid trust bundle to verify the CA with".into());
    };
    let ns = &opts.weft_namespace;
    if let Some(addr) = &opts.ca_addr {
        return probe::ca(addr, ns, &roots, true).await;
    }
    // In a pod (the kubelet sets this), the cluster IP is the CA's for sure.
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let target = match service {
        Fetched::Found(svc) => svc.spec.as_ref().and_then(|spec| {
            let ip = spec.cluster_ip.as_deref().filter(|ip| *ip != "None")?;
            let port = spec.ports.as_ref()?.first()?.port;
            Some(if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            })
        }),
        _ => None,
    };
    match target {
        Some(target) => probe::ca(&target, ns, &roots, in_cluster).await,
        None if matches!(service, Fetched::Missing) => CaProbe::NoService,
        None => CaProbe::NotTried(
            service
                .unreadable()
                .unwrap_or_else(|| format!("the Service {ns}/{} has no cluster IP", ca::SERVICE)),
        ),
    }
}
