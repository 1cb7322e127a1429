//! Keeps the kernel and the pods' sockets in step with the state: every meshed pod
//! of this node is enrolled (listeners in its netns, map entries, sk_lookup), and
//! every pod that went away, was opted out or lost its namespace label is released.
//! A pod that cannot be enrolled is held closed by the kernel and retried with
//! backoff (docs/architecture.md, "Enrolment failures").

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mesh_common::{INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT, TUNNEL_PORT};
use tracing::{debug, info, warn};

use super::enrol_failures::{EnrolFailures, FailureMetrics};
use super::node_pods::{NodePodReport, NodePods, gate, report};
use super::pod_context::{NetnsDialer, OrigDstMap, PodContext};
use super::resolve::PoolKey;
use crate::admin::FailingPods;
use crate::ebpf::{InboundEnrolment, KernelPrograms, KubepodsRoot, PodEnrolment};
use crate::identity::{CertManager, SpiffeId};
use crate::netns::{Netns, bind_listener, netns_cookie};
use crate::proxy::pod::PodConnections;
use crate::proxy::{Pool, Shared, run_inbound_plaintext, run_inbound_tunnel, run_outbound};
use crate::state::{StateHandle, Workload, WorkloadKey};
use crate::telemetry::SecurityPolicy;

const BACKLOG: i32 = 1024;
/// How long a pod whose identity changed waits for its old listeners to close
/// before it is enrolled again (its connections fail closed meanwhile).
const REENROL_DELAY: Duration = Duration::from_millis(100);
/// Cluster mode: how often the node's pods are rescanned. A new pod's connects
/// are refused by the kernel until a scan finds and enrols it, so this bounds how
/// long a new meshed pod waits (its app retries).
const RESCAN: Duration = Duration::from_millis(200);

/// One enrolled pod: what must be undone to release it.
struct EnrolledPod {
    netns_path: PathBuf,
    netns_cookie: u64,
    ips: Vec<IpAddr>,
    /// The pod's proxies: closing it stops its listeners and connections.
    connections: PodConnections,
    /// Its tunnel connections, dialled from its netns with its address: its
    /// own, and closed with it.
    pool: Pool<PoolKey>,
    ctx: Arc<PodContext>,
}

/// A pod held closed by the kernel after its enrolment failed: what must be
/// undone once it is enrolled for real or goes.
struct ClosedPod {
    netns_path: PathBuf,
    netns_cookie: u64,
    ips: Vec<IpAddr>,
}

/// The agent's listeners inside a pod's netns.
pub struct PodSockets {
    pub netns: Netns,
    pub outbound: Vec<std::net::TcpListener>,
    pub inbound_plaintext: std::net::TcpListener,
    pub tunnel: std::net::TcpListener,
    /// `[::]:15006` and `[::]:15008` (IPv6 only), when the pod's netns has IPv6.
    /// Without them, inbound to the pod's IPv6 addresses is dropped in the kernel.
    pub inbound_plaintext6: Option<std::net::TcpListener>,
    pub tunnel6: Option<std::net::TcpListener>,
}

pub struct PodManager {
    node: String,
    programs: KernelPrograms,
    state: StateHandle,
    shared: Shared,
    orig_dst: OrigDstMap,
    pods: HashMap<WorkloadKey, EnrolledPod>,
    node_addrs: Vec<(Ipv4Addr, u8)>,
    trust_domain: Arc<str>,
    security: SecurityPolicy,
    certs: Option<Arc<CertManager>>,
    /// Cluster mode: pods found from the kubepods cgroups and /proc.
    node_pods: Option<NodePods>,
    /// Pod cgroups the kernel currently lets connect (cluster mode).
    gated: HashSet<u64>,
    /// Set once every meshed pod of the node that can be enrolled is.
    ready: Arc<AtomicBool>,
    /// Pods that could not be enrolled: why, and when to try again.
    failures: EnrolFailures,
    /// Their closed enrolments in the kernel.
    closed: HashMap<WorkloadKey, ClosedPod>,
    /// What `/ready` and `status` show of `failures`.
    failing: FailingPods,
    /// A pod's identity changed and its proxies were stopped: enrol it again
    /// once their listeners are closed (they close on their own tasks).
    reenrol_at: Option<Instant>,
    failure_metrics: FailureMetrics,
    /// Cluster mode: the node's pods for `/node_pods`.
    reports: Arc<std::sync::RwLock<Vec<NodePodReport>>>,
    /// The agent's own (the node's) netns cookie: never held by the pod gate.
    host_netns_cookie: u64,
    /// Dial apps with the client's address (`--client-address`).
    client_address: bool,
}

impl PodManager {
    pub fn new(
        node: String,
        programs: KernelPrograms,
        state: StateHandle,
        shared: Shared,
        trust_domain: &str,
        certs: Option<Arc<CertManager>>,
        ready: Arc<AtomicBool>,
    ) -> Result<Self> {
        let orig_dst = Arc::new(programs.orig_dst_reader()?);
        Ok(PodManager {
            node,
            programs,
            state,
            failure_metrics: FailureMetrics::register(shared.metrics.registry())?,
            shared,
            orig_dst,
            pods: HashMap::new(),
            node_addrs: node_addresses(),
            trust_domain: trust_domain.into(),
            security: if certs.is_some() {
                SecurityPolicy::MutualTls
            } else {
                SecurityPolicy::None
            },
            certs,
            node_pods: None,
            gated: HashSet::new(),
            ready,
            failures: EnrolFailures::default(),
            closed: HashMap::new(),
            failing: FailingPods::default(),
            reenrol_at: None,
            reports: Default::default(),
            host_netns_cookie: Netns::open("/proc/self/ns/net")
                .and_then(|ns| netns_cookie(&ns))
                .context("read the node's netns cookie")?,
            client_address: true,
        })
    }

    /// `false`: apps are dialled from their pod's own address, as before
    /// `--client-address` existed.
    pub fn with_client_address(mut self, keep: bool) -> Self {
        self.client_address = keep;
        self
    }

    /// Cluster mode: enrol the pods `node_pods` finds, and drive the pod gate.
    pub fn with_node_pods(mut self, node_pods: NodePods) -> Self {
        self.node_pods = Some(node_pods);
        self
    }

    /// Where to show the pods whose enrolment fails (`/ready`, `status`).
    pub fn with_failing_pods(mut self, failing: FailingPods) -> Self {
        self.failing = failing;
        self
    }

    /// What `/node_pods` serves (cluster mode; empty otherwise).
    pub fn reports(&self) -> Arc<std::sync::RwLock<Vec<NodePodReport>>> {
        self.reports.clone()
    }

    /// Reconciles on every new snapshot until `shutdown` resolves.
    pub async fn run_until_shutdown(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let mut generations = self.state.subscribe();
        if let Some(node_pods) = &mut self.node_pods {
            node_pods.rescan();
            self.gated = self.programs.pod_cgroups().into_iter().collect();
        }
        self.release_stale_kernel_state();
        self.reconcile();
        let mut rescan = tokio::time::interval(RESCAN);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            // A failing pod is retried on its own schedule, in file mode too.
            let retry = self
                .failures
                .next_retry()
                .into_iter()
                .chain(self.reenrol_at)
                .min();
            let retry_due = async move {
                match retry {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = generations.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if let Some(node_pods) = &mut self.node_pods {
                        node_pods.rescan();
                    }
                    self.reconcile();
                }
                _ = rescan.tick(), if self.node_pods.is_some() => {
                    if self.node_pods.as_mut().is_some_and(NodePods::rescan) {
                        self.reconcile();
                    }
                }
                () = retry_due => self.reconcile(),
                () = &mut shutdown => break,
            }
        }
        // The kernel state stays: pods remain captured (and fail closed) until
        // the next agent adopts it.
        for pod in self.pods.values() {
            pod.connections.close_all();
        }
        Ok(())
    }

    /// The meshed pods of this node that can be enrolled now: with an IP and a
    /// network namespace (a file names it; in a cluster it is discovered).
    fn desired(&self) -> HashMap<WorkloadKey, Arc<Workload>> {
        let snapshot = self.state.current();
        snapshot
            .workloads_on_node(&self.node)
            .filter(|w| w.meshed && !w.ips.is_empty())
            .filter_map(|w| match &self.node_pods {
                None => w.netns.is_some().then(|| w.clone()),
                Some(found) => {
                    let netns = found.netns_of(&w.uid)?;
                    Some(Arc::new(Workload {
                        netns: Some(netns),
                        ..(**w).clone()
                    }))
                }
            })
            .map(|w| (w.key.clone(), w))
            .collect()
    }

    fn reconcile(&mut self) {
        let now = Instant::now();
        let desired = self.desired();
        if let Some(certs) = &self.certs {
            // Certificates only for the identities of pods enrolled here.
            let ids = desired.values().map(|w| identity_of(&self.trust_domain, w));
            for (id, error) in certs.set_wanted(ids) {
                warn!(identity = %id, %error, "cannot issue a workload certificate; its pods cannot accept tunnel connections");
            }
        }
        let renamed = self.release_stale(&desired);
        self.reenrol_at = (!renamed.is_empty()).then(|| now + REENROL_DELAY);
        let wanted: HashSet<&WorkloadKey> = desired.keys().collect();
        self.failures.retain(&wanted);
        for (key, workload) in &desired {
            let waiting = !self.failures.due(key, now) || renamed.contains(key);
            if self.pods.contains_key(key) || waiting {
                continue;
            }
            match self.enrol(workload) {
                Ok(pod) => {
                    // The real enrolment replaced the closed one's entries.
                    self.closed.remove(key);
                    let failed_before = self.failures.succeeded(key);
                    info!(pod = %key, ips = ?pod.ips, netns = %pod.netns_path.display(), failed_before, "pod enrolled");
                    self.pods.insert(key.clone(), pod);
                }
                Err(e) => self.enrolment_failed(workload, &e, now),
            }
        }
        for pod in self.pods.values() {
            pod.ctx.review_connections();
        }
        self.shared
            .metrics
            .enrolled_pods()
            .set(self.pods.len() as i64);
        self.failure_metrics.set_failing(&self.failures);
        self.failing.set(self.failures.reports(now));
        self.update_gate();
        // In a cluster, `/ready` waits until every meshed pod already on the node
        // is enrolled or held closed (failures are retried with backoff); a
        // file's pods are enrolled or reported at the first reconcile. A pod
        // held closed is safe (nothing of it flows unmeshed), so it leaves the
        // agent ready; `/ready`'s body names it.
        let settled = self.failures.all_closed() || self.node_pods.is_none();
        if settled && !self.ready.swap(true, Ordering::AcqRel) {
            info!(
                enrolled = self.pods.len(),
                failing = self.failures.closed(),
                "agent ready"
            );
        }
    }

    /// Releases the enrolled pods that went or whose netns or IPs changed, and
    /// their closed enrolments likewise. A pod whose identity changed keeps its
    /// kernel capture while its proxies stop; it is enrolled again, with the new
    /// identity, once they are closed (`REENROL_DELAY`), and until then its
    /// connections fail closed. Returns the pods whose identity changed.
    fn release_stale(
        &mut self,
        desired: &HashMap<WorkloadKey, Arc<Workload>>,
    ) -> HashSet<WorkloadKey> {
        let moved = |w: Option<&Arc<Workload>>, netns: &PathBuf, ips: &Vec<IpAddr>| {
            w.is_none_or(|w| w.netns.as_ref() != Some(netns) || w.ips != *ips)
        };
        let stale: Vec<WorkloadKey> = self
            .pods
            .iter()
            .filter(|(key, pod)| moved(desired.get(*key), &pod.netns_path, &pod.ips))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(pod) = self.pods.remove(&key) {
                match self.release(&pod) {
                    Ok(()) => info!(pod = %key, "pod released"),
                    Err(e) => warn!(pod = %key, error = %format!("{e:#}"), "releasing pod"),
                }
            }
        }
        let renamed: HashSet<WorkloadKey> = self
            .pods
            .iter()
            .filter(|(key, pod)| {
                desired
                    .get(*key)
                    .is_some_and(|w| identity_of(&self.trust_domain, w) != pod.ctx.identity)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &renamed {
            if let Some(pod) = self.pods.remove(key) {
                info!(pod = %key, old = %pod.ctx.identity, "pod identity changed: enrolling it again");
                pod.connections.close_all();
                pod.pool.close_all();
            }
        }
        let stale: Vec<WorkloadKey> = self
            .closed
            .iter()
            .filter(|(key, pod)| moved(desired.get(*key), &pod.netns_path, &pod.ips))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            // Its new netns or IPs are tried (and held closed) at once.
            self.failures.forget(&key);
            if let Some(pod) = self.closed.remove(&key) {
                match self.programs.unenrol(pod.netns_cookie, &pod.ips) {
                    Ok(()) => info!(pod = %key, "closed enrolment released"),
                    Err(e) => {
                        warn!(pod = %key, error = %format!("{e:#}"), "releasing a closed enrolment")
                    }
                }
            }
        }
        renamed
    }

    /// A pod could not be enrolled: hold it closed in the kernel (inbound
    /// dropped, outbound refused) rather than leave it uncaptured, and retry
    /// with backoff (docs/security.md).
    fn enrolment_failed(&mut self, workload: &Workload, error: &anyhow::Error, now: Instant) {
        let key = &workload.key;
        let closed = match self.enrol_closed(workload) {
            Ok(pod) => {
                self.closed.insert(key.clone(), pod);
                true
            }
            Err(e) => {
                warn!(pod = %key, error = %format!("{e:#}"), "cannot hold the pod closed either");
                false
            }
        };
        let reason = format!("{error:#}");
        let (attempts, wait) = self.failures.failed(key, reason.clone(), closed, now);
        self.failure_metrics.attempt_failed();
        // Backoff bounds these to one a minute per pod.
        warn!(pod = %key, error = %reason, attempts, retry_in = ?wait, closed, "cannot enrol pod; held closed, will retry");
    }

    /// The pod's closed enrolment: the kernel captures its netns and IPs with
    /// no agent socket behind them, so it fails closed.
    fn enrol_closed(&mut self, workload: &Workload) -> Result<ClosedPod> {
        let netns_path = workload.netns.clone().context("no netns")?;
        let netns = Netns::open(&netns_path)?;
        let cookie = netns_cookie(&netns).context("read the netns cookie")?;
        let node_addr = self.node_addr_for(&workload.ips);
        let enrolment = PodEnrolment {
            netns_cookie: cookie,
            pod_ips: workload.ips.clone(),
            outbound_port: 0,
            node_addr,
        };
        self.programs.enrol_closed(&enrolment, netns.file())?;
        Ok(ClosedPod {
            netns_path,
            netns_cookie: cookie,
            ips: workload.ips.clone(),
        })
    }

    /// Cluster mode: tells the kernel which pod cgroups may connect (see
    /// `node_pods::gate`), and where the kubepods tree is.
    fn update_gate(&mut self) {
        let Some(node_pods) = &self.node_pods else {
            return;
        };
        let Some(kubepods) = &node_pods.kubepods else {
            return;
        };
        let enrolled: HashSet<String> = self
            .pods
            .values()
            .map(|p| p.ctx.workload.uid.clone())
            .collect();
        let snapshot = self.state.current();
        let allowed = gate(&node_pods.pods, &snapshot, &self.node, &enrolled);
        *self
            .reports
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            report(&node_pods.pods, &snapshot, &self.node, &enrolled);
        let root = KubepodsRoot {
            host_netns_cookie: self.host_netns_cookie,
            ..kubepods.kernel_root()
        };
        // Marks first, then the root: on a node where the gate was off, pods
        // already running must not be refused for the moment between the two.
        for id in allowed.difference(&self.gated) {
            if let Err(e) = self.programs.mark_pod_cgroup(*id) {
                warn!(cgroup_id = id, error = %format!("{e:#}"), "cannot let a pod cgroup connect");
            }
        }
        for id in self.gated.difference(&allowed) {
            if let Err(e) = self.programs.forget_pod_cgroup(*id) {
                warn!(cgroup_id = id, error = %format!("{e:#}"), "cannot hold a pod cgroup back");
            }
        }
        self.gated = allowed;
        if self.programs.kubepods_root().ok().flatten() != Some(root)
            && let Err(e) = self.programs.set_kubepods_root(Some(root))
        {
            warn!(error = %format!("{e:#}"), "cannot tell the kernel where the pods' cgroups are");
        }
    }

    /// Opens the pod's listeners, puts the kernel capture in place, then starts
    /// the pod's proxies on those listeners.
    fn enrol(&mut self, workload: &Arc<Workload>) -> Result<EnrolledPod> {
        let netns_path = workload.netns.clone().context("no netns")?;
        let netns = Netns::open(&netns_path)?;
        let cookie = netns_cookie(&netns).context("read the netns cookie")?;
        let sockets = open_pod_sockets(netns)?;
        let node_addr = self.node_addr_for(&workload.ips);
        let enrolment = PodEnrolment {
            netns_cookie: cookie,
            pod_ips: workload.ips.clone(),
            outbound_port: OUTBOUND_PORT,
            node_addr,
        };
        let inbound = InboundEnrolment {
            netns: sockets.netns.file(),
            listener: &sockets.inbound_plaintext,
            listener6: sockets
                .inbound_plaintext6
                .as_ref()
                .map(|l| l as &dyn std::os::fd::AsRawFd),
        };
        self.programs.enrol(&enrolment, Some(inbound))?;
        debug!(pod = %workload.key, cookie, "kernel capture in place");

        let ctx = Arc::new(PodContext {
            workload: workload.clone(),
            netns_cookie: cookie,
            dialer: NetnsDialer::new(
                sockets.netns.clone(),
                workload.ips.clone(),
                self.shared.metrics.clone(),
            )
            .keeping_client_address(self.client_address),
            state: self.state.clone(),
            orig_dst: self.orig_dst.clone(),
            node_addr,
            round_robin: Default::default(),
            balancer: Default::default(),
            identity: identity_of(&self.trust_domain, workload),
            certs: self.certs.clone(),
            trust_domain: self.trust_domain.clone(),
            security: self.security,
            admitted: Default::default(),
            metrics: self.shared.metrics.clone(),
        });
        let connections = self.shared.config.pod_connections(workload.key.to_string());
        // A tunnel connection leaves from this pod's netns with its address, so
        // it carries only this pod's streams and goes when the pod does.
        let pool = Pool::new(
            self.shared.config.tunnel.clone(),
            Some(self.shared.metrics.pool_connections().clone()),
        );
        let started = self.start_proxies(sockets, ctx.clone(), &connections, &pool);
        if let Err(e) = started {
            // The capture stays: the caller holds the pod closed in its place.
            connections.close_all();
            return Err(e);
        }
        Ok(EnrolledPod {
            netns_path,
            netns_cookie: cookie,
            ips: workload.ips.clone(),
            connections,
            pool,
            ctx,
        })
    }

    fn start_proxies(
        &self,
        sockets: PodSockets,
        ctx: Arc<PodContext>,
        connections: &PodConnections,
        pool: &Pool<PoolKey>,
    ) -> Result<()> {
        let tokio_listener = |l: std::net::TcpListener| {
            tokio::net::TcpListener::from_std(l).context("register a pod listener")
        };
        for listener in sockets.outbound {
            let listener = tokio_listener(listener)?;
            tokio::spawn(run_outbound(
                listener,
                ctx.clone(),
                pool.clone(),
                self.shared.clone(),
                connections.clone(),
            ));
        }
        let plaintext = tokio_listener(sockets.inbound_plaintext)?;
        tokio::spawn(run_inbound_plaintext(
            plaintext,
            ctx.clone(),
            self.shared.clone(),
            connections.clone(),
        ));
        if let Some(plaintext6) = sockets.inbound_plaintext6 {
            tokio::spawn(run_inbound_plaintext(
                tokio_listener(plaintext6)?,
                ctx.clone(),
                self.shared.clone(),
                connections.clone(),
            ));
        }
        if let Some(tunnel6) = sockets.tunnel6 {
            tokio::spawn(run_inbound_tunnel(
                tokio_listener(tunnel6)?,
                ctx.clone(),
                self.shared.clone(),
                connections.clone(),
            ));
        }
        let tunnel = tokio_listener(sockets.tunnel)?;
        tokio::spawn(run_inbound_tunnel(
            tunnel,
            ctx,
            self.shared.clone(),
            connections.clone(),
        ));
        Ok(())
    }

    /// Stops the pod's proxies and connections (its tunnel connections too:
    /// their sockets would keep its netns alive), then releases its kernel state.
    fn release(&mut self, pod: &EnrolledPod) -> Result<()> {
        pod.connections.close_all();
        pod.pool.close_all();
        pod.ctx.dialer.release_client_address();
        self.programs.unenrol(pod.netns_cookie, &pod.ips)
    }

    /// Kernel entries left by a previous agent for pods that are gone or no longer
    /// meshed: the pinned maps outlive the agent, so they must be swept at start.
    fn release_stale_kernel_state(&mut self) {
        let desired = self.desired();
        let live_cookies: Vec<u64> = desired
            .values()
            .filter_map(|w| Netns::open(w.netns.as_ref()?).ok())
            .filter_map(|ns| netns_cookie(&ns).ok())
            .collect();
        let live_ips: Vec<IpAddr> = desired.values().flat_map(|w| w.ips.clone()).collect();
        let mut cookies = self.programs.maps().enrolled_cookies();
        cookies.extend(self.programs.layout().pinned_sk_lookup_cookies());
        for cookie in cookies.into_iter().filter(|c| !live_cookies.contains(c)) {
            if let Err(e) = self.programs.release_netns(cookie) {
                warn!(cookie, error = %format!("{e:#}"), "removing a stale enrolment");
            }
        }
        let stale_ips: Vec<IpAddr> = self
            .programs
            .maps()
            .inbound_pod_ips()
            .into_iter()
            .filter(|ip| !live_ips.contains(ip))
            .collect();
        if let Err(e) = self.programs.release_pod_ips(&stale_ips) {
            warn!(error = %format!("{e:#}"), "removing stale inbound entries");
        }
    }

    /// The node's address on the pod's subnet: kubelet probes come from it.
    fn node_addr_for(&self, pod_ips: &[IpAddr]) -> Option<IpAddr> {
        pod_ips.iter().find_map(|ip| {
            let IpAddr::V4(ip) = ip else { return None };
            self.node_addrs
                .iter()
                .find(|(addr, prefix)| same_subnet(*addr, *ip, *prefix))
                .map(|(addr, _)| IpAddr::V4(*addr))
        })
    }
}

fn open_pod_sockets(netns: Netns) -> Result<PodSockets> {
    let listen = |addr: SocketAddr| {
        bind_listener(&netns, addr, BACKLOG)
            .with_context(|| format!("listen on {addr} in {}", netns.path().display()))
    };
    let mut outbound = vec![listen(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        OUTBOUND_PORT,
    )))?];
    // IPv6 loopback only if the pod has it.
    match listen(SocketAddr::from((
        std::net::Ipv6Addr::LOCALHOST,
        OUTBOUND_PORT,
    ))) {
        Ok(l) => outbound.push(l),
        Err(e) => debug!(error = %format!("{e:#}"), "no IPv6 outbound listener"),
    }
    let inbound_plaintext = listen(SocketAddr::from((
        Ipv4Addr::UNSPECIFIED,
        INBOUND_PLAINTEXT_PORT,
    )))?;
    let tunnel = listen(SocketAddr::from((Ipv4Addr::UNSPECIFIED, TUNNEL_PORT)))?;
    // IPv6 inbound (docs/security.md): both listeners or neither, only if the
    // pod's netns has IPv6. Without them its IPv6 addresses are dropped, not open.
    let listen6 = |port| listen(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)));
    let (inbound_plaintext6, tunnel6) =
        match listen6(INBOUND_PLAINTEXT_PORT).and_then(|p| Ok((p, listen6(TUNNEL_PORT)?))) {
            Ok((plaintext, tunnel)) => (Some(plaintext), Some(tunnel)),
            Err(e) => {
                debug!(error = %format!("{e:#}"), "no IPv6 inbound listeners");
                (None, None)
            }
        };
    Ok(PodSockets {
        netns,
        outbound,
        inbound_plaintext,
        tunnel,
        inbound_plaintext6,
        tunnel6,
    })
}

/// The SPIFFE id a pod's service account gives it.
fn identity_of(trust_domain: &str, w: &Workload) -> SpiffeId {
    SpiffeId::for_workload(trust_domain, &w.key.namespace, &w.service_account)
}

/// IPv4 addresses of the agent's own netns, with their prefix lengths.
fn node_addresses() -> Vec<(Ipv4Addr, u8)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            let mask = a.netmask?.as_sockaddr_in()?.ip();
            (!ip.is_loopback()).then(|| (ip, u32::from(mask).count_ones() as u8))
        })
        .collect()
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(a) & mask == u32::from(b) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(same_subnet(ip("10.88.1.1"), ip("10.88.1.20"), 24));
        assert!(!same_subnet(ip("10.88.1.1"), ip("10.88.2.20"), 24));
        assert!(same_subnet(ip("10.0.0.1"), ip("192.168.0.1"), 0));
    }
}
