//! `mesh-agent run`: the agent process. Wires the modules together: the state and
//! its config source, the kernel programs, the pods' sockets and proxies, the admin
//! and metrics servers; then waits for a signal.

mod args;
mod enrol_failures;
mod http_plan;
mod inbound;
mod memory;
mod node_pods;
mod pod_context;
mod pods;
mod resolve;
mod source;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use args::{DEFAULT_BPFFS_DIR, RunArgs};
pub use node_pods::NodePodReport;
use pods::PodManager;

use crate::ebpf::{KernelPrograms, LoadOptions, forward_kernel_logs};
use crate::identity::{self, CertConfig, CertManager, RemoteCaOptions};
use crate::proxy::{ProxyConfig, Shared};
use crate::{admin, telemetry};

pub fn main(args: RunArgs) -> Result<()> {
    memory::limit_arenas(); // before the runtime's threads
    args.init_logging()?;
    let open_files = raise_fd_limit(args.max_open_files);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(args.worker_threads());
    let runtime = runtime
        .enable_all()
        .thread_name("weft-worker")
        .build()
        .context("start the async runtime")?;
    runtime.block_on(run(args, open_files))
}

async fn run(args: RunArgs, open_files: u64) -> Result<()> {
    let metrics = Arc::new(
        telemetry::Metrics::new()?
            .with_access_log(args.access_log)
            .context("start the access log")?,
    );
    let ready = Arc::new(AtomicBool::new(false));
    let failing = admin::FailingPods::default();
    let probes = tokio::net::TcpListener::bind(args.readiness_addr)
        .await
        .with_context(|| format!("bind the readiness server on {}", args.readiness_addr))?;
    tokio::spawn(log_exit(
        "readiness server",
        admin::serve_router(
            probes,
            admin::with_ready_detail(
                admin::probes_router(ready.clone()),
                ready.clone(),
                failing.clone(),
            ),
        ),
    ));
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("bind the metrics server on {}", args.metrics_addr))?;
    tokio::spawn(log_exit(
        "metrics server",
        telemetry::serve_metrics(metrics_listener, metrics.clone()),
    ));

    let (state, refusals, client) = if args.kube {
        let (state, source, client) = source::start_kube(&args, metrics.clone()).await?;
        (state, Some(source.refusals), Some(client))
    } else {
        (source::start_file(&args, &metrics)?, None, None)
    };

    tokio::spawn(export_generation(state.clone(), metrics.clone()));

    let cgroup = args.cgroup()?;
    let mut programs = KernelPrograms::open(&LoadOptions {
        cgroup: cgroup.clone(),
        bpffs_dir: args.bpffs_dir.clone(),
        kernel_log_level: args.kernel_log_level.as_aya_level(),
    })?;
    forward_kernel_logs(&mut programs);
    let fast_path = args.fast_path == args::FastPath::On;
    programs.maps_mut().set_fast_path(fast_path)?;
    let kernel_stats = programs.stats_reader()?;
    metrics.register_fast_path_redirects(move || kernel_stats().fast_path_redirects)?;
    info!(origin = ?programs.origin, cgroup = %cgroup.display(), fast_path, "kernel programs in place");

    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("bind the admin server on {}", args.admin_addr))?;
    let certs = certificates(&args, &metrics, client.as_ref()).await?;
    let mut admin_router =
        admin::with_certs(admin::router(state.clone(), ready.clone()), certs.clone());
    admin_router = admin::with_ready_detail(admin_router, ready.clone(), failing.clone());
    admin_router = admin::with_enrolment_failures(admin_router, failing.clone());
    admin_router = admin::with_tap(admin_router, metrics.tap().clone());
    if let Some(refusals) = refusals {
        admin_router = admin::with_refusals(admin_router, refusals);
    }

    let shared = Shared {
        metrics: metrics.clone(),
        config: Arc::new(proxy_config(&args, open_files)),
    };
    let mut pods = PodManager::new(
        args.node.clone(),
        programs,
        state.clone(),
        shared,
        &args.trust_domain,
        certs,
        ready.clone(),
    )?
    .with_failing_pods(failing)
    .with_client_address(args.client_address == args::ClientAddress::On);
    if args.kube {
        pods = pods.with_node_pods(node_pods::NodePods::new(&cgroup)?);
    }
    if args.kube {
        admin_router = with_node_pods(admin_router, pods.reports());
    }
    tokio::spawn(log_exit(
        "admin server",
        admin::serve_router(admin_listener, admin_router),
    ));
    let pods_task = tokio::spawn(pods.run_until_shutdown(shutdown_signal()));

    tokio::spawn(memory::release_freed_memory_periodically());
    info!(node = %args.node, generation = state.current().generation, "agent started");
    pods_task.await.context("pod manager")??;
    info!(
        "agent stopped; kernel programs stay pinned so pods stay captured (fail closed) until it restarts"
    );
    Ok(())
}

/// Keeps `weft_state_generation` at the snapshot in force (how long a change takes
/// to apply is read from it).
async fn export_generation(state: crate::state::StateHandle, metrics: Arc<telemetry::Metrics>) {
    let mut generations = state.subscribe();
    loop {
        metrics
            .state_generation()
            .set(state.current().generation as i64);
        if generations.changed().await.is_err() {
            return;
        }
    }
}

/// Adds `/node_pods`: this node's pods as discovered, with the processes that
/// share a meshed pod's netns from outside its cgroup (not captured).
fn with_node_pods(
    router: admin::Router,
    reports: Arc<std::sync::RwLock<Vec<node_pods::NodePodReport>>>,
) -> admin::Router {
    router.get("/node_pods", move |_| {
        let mut rows = reports
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        async move {
            match tokio::task::spawn_blocking(move || {
                node_pods::find_uncaptured(&mut rows);
                rows
            })
            .await
            {
                Ok(rows) => admin::json(&rows),
                Err(e) => admin::text(
                    hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("listing the node's pods failed: {e}\n"),
                ),
            }
        }
    })
}

/// The certificate manager over the CA service (cluster mode) or the local CA,
/// with its renewal task running; `None` when the tunnel is to run without TLS.
async fn certificates(
    args: &RunArgs,
    metrics: &telemetry::Metrics,
    client: Option<&kube::Client>,
) -> Result<Option<Arc<CertManager>>> {
    if args.insecure_plaintext_tunnel {
        warn!("--insecure-plaintext-tunnel: meshed traffic crosses between nodes in the clear");
        return Ok(None);
    }
    let config = CertConfig {
        lifetime: args.cert_lifetime,
        ..CertConfig::default()
    };
    let (ca, bundle_client) = match (&args.ca_addr, &args.ca_dir, client) {
        (Some(address), _, Some(client)) => {
            let roots = identity::wait_for_trust_bundle(
                client,
                &args.ca_namespace,
                identity::DEFAULT_TRUST_BUNDLE,
                Duration::from_secs(2),
                Duration::from_secs(120),
            )
            .await
            .context("read the CA service's trust bundle")?;
            let ca = identity::remote_authority(RemoteCaOptions {
                address: address.clone(),
                token_file: args.ca_token_file.clone(),
                roots,
                // Certificates are issued one after another while the pod
                // manager reconciles: a CA that does not answer must not hold
                // it for long.
                timeout: Duration::from_secs(5),
            })?;
            info!(ca = %address, "certificates from the CA service");
            (ca, Some(client.clone()))
        }
        (None, Some(dir), _) => (identity::local_authority(dir)?, None),
        _ => anyhow::bail!(
            "no CA: pass --ca-addr (cluster mode, the CA service) or --ca-dir (a local CA, for the lab and the demo)"
        ),
    };
    let certs = CertManager::new(ca, config, metrics.registry())?;
    tokio::spawn(certs.clone().run_renewals(CancellationToken::new()));
    if let Some(client) = bundle_client {
        tokio::spawn(identity::watch_trust_bundle(
            client,
            args.ca_namespace.clone(),
            identity::DEFAULT_TRUST_BUNDLE.to_owned(),
            certs.clone(),
        ));
    }
    Ok(Some(certs))
}

fn proxy_config(args: &RunArgs, open_files: u64) -> ProxyConfig {
    let mut config = ProxyConfig::for_open_files(open_files);
    info!(open_files, limits = ?config.limits, "connection budgets");
    // A tunnel connection is re-made once its certificates are half way to
    // expiry, so no connection outlives the identity it was authenticated with.
    let age = config.tunnel.max_connection_age.unwrap_or(Duration::MAX);
    config.tunnel.max_connection_age = Some(age.min(args.cert_lifetime / 2));
    config.tunnel.max_connection_streams = args.tunnel_max_connection_streams;
    if let Some(idle) = args.tunnel_idle_timeout {
        config.tunnel.server_idle_timeout = idle;
    }
    config
}

/// Every proxied connection costs the agent two descriptors (more through the
/// tunnel): take the whole hard limit rather than the usual soft 1024, or
/// `max` when given (tests). Gives the soft limit in force, which the
/// connection caps derive from (docs/architecture.md, "Limits").
fn raise_fd_limit(max: Option<u64>) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit");
            return 1024;
        }
    };
    let wanted = max.map_or(hard, |m| m.min(hard));
    if wanted == soft {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, wanted, hard) {
        Ok(()) => wanted,
        Err(e) => {
            warn!(error = %e, "cannot set the open-file limit");
            soft
        }
    }
}

async fn log_exit(what: &'static str, task: impl std::future::Future<Output = Result<()>>) {
    if let Err(e) = task.await {
        error!(error = %format!("{e:#}"), "{what} stopped");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot watch SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => info!("interrupted: stopping"),
    }
}
