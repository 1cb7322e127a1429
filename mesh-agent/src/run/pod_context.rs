//! What the proxy handlers ask of the agent for one pod: sockets made in the
//! pod's netns, original destinations from the kernel's map, routes from the
//! state, and the inbound admission rules.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use aya::maps::{HashMap, MapData};
use mesh_common::{OrigDst, PortKey};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tracing::{debug, warn};

use super::http_plan::{Client, http_service, plan_request};
use super::resolve::{PoolKey, resolve};
use crate::ebpf::{orig_dst_to_socket_addr, port_key};
use crate::identity::{CertManager, SpiffeId, tls};
use crate::netns::{
    Netns, Prepared, ReplyRoutes, SourcePorts, TransparentError, app_source, connect_marked,
    connect_transparent,
};
use crate::policy::AdmittedConnections;
use crate::proxy::http::{HttpService, Plan};
use crate::proxy::{Dialer, OutboundContext, Route};
use crate::routing::{RequestHead, RoundRobin};
use crate::state::{StateHandle, Workload};
use crate::telemetry::{Metrics, SecurityPolicy};

/// Connects from inside a pod's netns, with the agent mark; to the pod's app on
/// behalf of a client, with the client's address (docs/architecture.md,
/// "Keeping the client's address").
pub struct NetnsDialer {
    pub netns: Netns,
    /// The pod's own addresses: a client among them is dialled as before.
    pod_ips: Vec<IpAddr>,
    replies: ReplyRoutes,
    ports: SourcePorts,
    metrics: Arc<Metrics>,
    /// `--client-address off`: every dial from the pod's own address.
    keep_client: bool,
}

impl NetnsDialer {
    pub fn new(netns: Netns, pod_ips: Vec<IpAddr>, metrics: Arc<Metrics>) -> Self {
        NetnsDialer {
            replies: ReplyRoutes::new(netns.clone()),
            ports: SourcePorts::starting_at(rand::random()),
            netns,
            pod_ips,
            metrics,
            keep_client: true,
        }
    }

    pub fn keeping_client_address(mut self, keep: bool) -> Self {
        self.keep_client = keep;
        self
    }

    /// Removes the pod's reply rules: it leaves the mesh, and its app's replies
    /// must leave by its own interface again.
    pub fn release_client_address(&self) {
        match self.replies.remove() {
            Ok(0) => {}
            Ok(n) => debug!(netns = %self.netns.path().display(), rules = n, "reply rules removed"),
            Err(e) => {
                warn!(netns = %self.netns.path().display(), error = %e, "cannot remove the reply rules")
            }
        }
    }

    async fn fallback(&self, addr: SocketAddr, reason: &'static str) -> io::Result<TcpStream> {
        self.metrics.client_address_fallback(reason);
        connect_marked(&self.netns, addr).await
    }
}

impl Dialer for NetnsDialer {
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        connect_marked(&self.netns, addr).await
    }

    async fn connect_as(&self, addr: SocketAddr, client: SocketAddr) -> io::Result<TcpStream> {
        let source = app_source(client.ip(), addr, &self.pod_ips).filter(|_| self.keep_client);
        let Some(source) = source else {
            return connect_marked(&self.netns, addr).await;
        };
        // Never a broken connection: without the reply routes or the socket,
        // dial as before (the app sees the pod's address), warn once a while.
        match self.replies.prepare(addr) {
            Prepared::Ready => {}
            Prepared::FailedNow(e) => {
                warn!(app = %addr, error = %e, "cannot set up the reply routes; the app sees its own address as the client");
                return self.fallback(addr, "routes").await;
            }
            Prepared::FailedBefore => return self.fallback(addr, "routes").await,
        }
        let client = SocketAddr::new(source, client.port());
        match connect_transparent(&self.netns, &self.ports, client, addr).await {
            Ok(stream) => Ok(stream),
            Err(TransparentError::Connect(e)) => Err(e),
            Err(TransparentError::Socket(e)) => {
                if self.replies.failed(addr) {
                    warn!(app = %addr, error = %e, "cannot dial with the client's address; the app sees its own address as the client");
                }
                self.fallback(addr, "socket").await
            }
        }
    }
}

/// The read side of the kernel's original-destination map, shared by all pods.
pub type OrigDstMap = Arc<HashMap<MapData, PortKey, OrigDst>>;

pub struct PodContext {
    pub workload: Arc<Workload>,
    pub netns_cookie: u64,
    pub dialer: NetnsDialer,
    pub state: StateHandle,
    pub orig_dst: OrigDstMap,
    pub node_addr: Option<IpAddr>,
    pub round_robin: AtomicUsize,
    /// Picks an endpoint per HTTP request.
    pub balancer: RoundRobin,
    /// This pod's SPIFFE id.
    pub identity: SpiffeId,
    /// Certificates for the mutual-TLS tunnel; `None` only in the plaintext
    /// benchmark setting.
    pub certs: Option<Arc<CertManager>>,
    pub trust_domain: Arc<str>,
    /// What the tunnel gives: mutual TLS, or nothing (benchmark setting).
    pub security: SecurityPolicy,
    /// Inbound connections kept under policy review.
    pub admitted: AdmittedConnections,
    pub metrics: Arc<Metrics>,
}

impl OutboundContext for PodContext {
    type PoolKey = PoolKey;
    type Dialer = NetnsDialer;
    type TunnelIo = Either<TcpStream, tls::ClientTunnelTls<tls::Buffered<TcpStream>>>;

    fn original_destination(&self, peer: SocketAddr) -> Option<SocketAddr> {
        let orig = self
            .orig_dst
            .get(&port_key(self.netns_cookie, peer), 0)
            .ok()?;
        Some(orig_dst_to_socket_addr(&orig))
    }

    fn resolve(&self, _peer: SocketAddr, original_dst: SocketAddr) -> Route<PoolKey> {
        resolve(
            &self.state.current(),
            &self.workload,
            original_dst,
            &self.round_robin,
            &self.trust_domain,
            self.security,
        )
    }

    fn http_service(&self, original_dst: SocketAddr) -> Option<HttpService> {
        http_service(&self.state.current(), &self.workload, original_dst)
    }

    fn plan_request(&self, service: &HttpService, head: &RequestHead<'_>) -> Plan<PoolKey> {
        let client = Client {
            workload: &self.workload,
            trust_domain: &self.trust_domain,
            security: self.security,
        };
        let roll = rand::random();
        plan_request(
            &self.state.current(),
            &client,
            service,
            head,
            roll,
            &self.balancer,
        )
    }

    fn dialer(&self) -> &NetnsDialer {
        &self.dialer
    }

    async fn connect_tunnel(
        &self,
        tunnel_addr: SocketAddr,
        key: &PoolKey,
    ) -> io::Result<Self::TunnelIo> {
        // The tunnel leaves from the source pod's netns, with the pod's own IP.
        let tcp = connect_marked(&self.dialer.netns, tunnel_addr).await?;
        let _ = tcp.set_nodelay(true);
        let Some(certs) = &self.certs else {
            return Ok(Either::Left(tcp));
        };
        let (source, expected, _) = key;
        // Read before the handshake picks the current certificate: if a
        // renewal comes between, the connection retires early, never late.
        let own_not_after = certs.credential(source).map(|c| c.cert.not_after);
        let config = certs.client_config(source, expected)?;
        let tls = tls::connect(tcp, config).await?;
        Ok(Either::Right(tls::ClientTunnelTls::new(tls, own_not_after)))
    }
}
