//! The outbound listener (`15001` in each pod): every connection the pod's apps
//! make, redirected by the kernel programs. Looks up where it was going, then
//! reaches it through the tunnel or directly.

use std::future::Future;
use std::hash::Hash;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::accept::accept_loop;
use super::copy::{CopyObserver, Direction};
use super::http::outbound::{PodHttp, serve as serve_http};
use super::http::{Carry, HttpService, Plan, classify};
use super::pod::{ConnectionPermit, PodConnections};
use super::tunnel::{PeerCertificate, Pool};
use super::{Dialer, Shared, bridge, dial, reset};
use crate::routing::RequestHead;
use crate::telemetry::{ConnectionLabels, RefuseReason, ResponseFlag};

/// Where an outbound connection goes, decided by the agent's state lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboundTarget<K> {
    /// Through the tunnel: CONNECT `target` (the `:authority`) on a pooled
    /// connection for `pool_key` to `tunnel_addr` (destination pod IP:15008).
    Tunnel {
        tunnel_addr: SocketAddr,
        target: SocketAddr,
        pool_key: K,
    },
    /// Straight to this address from a socket in the pod's netns.
    Direct(SocketAddr),
    /// Not allowed; the client gets a reset. The text is logged.
    Refuse(String),
}

/// A resolved connection: where it goes and the labels of its metrics
/// (reporter `source`).
#[derive(Clone, Debug)]
pub struct Route<K> {
    pub target: OutboundTarget<K>,
    pub labels: ConnectionLabels,
}

/// What the outbound handler asks of the agent, for one pod.
pub trait OutboundContext: Send + Sync + 'static {
    /// Pool key: (source identity, destination identity, destination IP) in Weft.
    type PoolKey: Clone + Eq + Hash + Send + Sync + 'static;
    type Dialer: Dialer;
    /// The tunnel's transport: TCP now, TLS over TCP with mTLS.
    type TunnelIo: AsyncRead + AsyncWrite + PeerCertificate + Unpin + Send + 'static;

    /// The destination the app connected to before redirection, looked up by
    /// the app's side of the connection (`peer` of the accepted socket).
    fn original_destination(&self, peer: SocketAddr) -> Option<SocketAddr>;

    /// Picks the route for a connection from `peer` to `original_dst`.
    fn resolve(&self, peer: SocketAddr, original_dst: SocketAddr) -> Route<Self::PoolKey>;

    /// Used for `Direct` targets.
    fn dialer(&self) -> &Self::Dialer;

    /// A new transport to `tunnel_addr` for the pool (called only when the
    /// pool has no usable connection for `key`).
    fn connect_tunnel(
        &self,
        tunnel_addr: SocketAddr,
        key: &Self::PoolKey,
    ) -> impl Future<Output = io::Result<Self::TunnelIo>> + Send;

    /// The Service port `original_dst` addresses, when connections to it
    /// may be HTTP (docs/architecture.md, "L7 routing"); `None` keeps the
    /// connection at L4 (a pod address, or no L7 in this context).
    fn http_service(&self, _original_dst: SocketAddr) -> Option<HttpService> {
        None
    }

    /// Where one request to `service` goes: the state's decision.
    fn plan_request(&self, service: &HttpService, _head: &RequestHead<'_>) -> Plan<Self::PoolKey> {
        Plan::Respond {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            location: None,
            flag: ResponseFlag::NoHealthyUpstream,
            labels: service.labels.clone(),
        }
    }
}

/// Runs the pod's outbound listener until `pod` stops accepting.
pub async fn run_outbound<C: OutboundContext>(
    listener: TcpListener,
    ctx: Arc<C>,
    pool: Pool<C::PoolKey>,
    shared: Shared,
    pod: PodConnections,
) {
    let metrics = Arc::clone(&shared.metrics);
    let http = PodHttp::new(shared.config.limits.pod_connections);
    accept_loop(
        listener,
        pod.clone(),
        &metrics,
        "outbound",
        |client, peer, mut permit| {
            let (ctx, pool, shared, pod, http) = (
                ctx.clone(),
                pool.clone(),
                shared.clone(),
                pod.clone(),
                http.clone(),
            );
            async move {
                handle(client, peer, ctx, &pool, &shared, &pod, http, &mut permit).await;
                drop(permit);
            }
        },
    )
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn handle<C: OutboundContext>(
    mut client: TcpStream,
    peer: SocketAddr,
    ctx: Arc<C>,
    pool: &Pool<C::PoolKey>,
    shared: &Shared,
    pod: &PodConnections,
    http: PodHttp,
    permit: &mut ConnectionPermit,
) {
    let metrics = &shared.metrics;
    let Some(original) = ctx.original_destination(peer) else {
        metrics.refused(RefuseReason::NoOriginalDestination);
        warn!(pod = pod.name(), %peer, "no original destination recorded, closing");
        return reset(client);
    };
    if let Some(service) = ctx.http_service(original)
        && classify(&client, service.declared).await != Carry::Tcp
    {
        debug!(pod = pod.name(), %peer, %original, "outbound HTTP");
        let _ = client.set_nodelay(true);
        return serve_http(
            client,
            service,
            ctx,
            pool.clone(),
            http,
            shared.clone(),
            pod,
        )
        .await;
    }
    let ctx = &*ctx;
    let Route { target, labels } = ctx.resolve(peer, original);
    let config = &shared.config;
    match target {
        OutboundTarget::Refuse(why) => {
            metrics.refused(RefuseReason::Policy);
            debug!(pod = pod.name(), %peer, %original, why, "outbound connection refused");
            reset(client)
        }
        OutboundTarget::Direct(addr) => {
            if !permit.take_upstream_descriptor() {
                metrics.refused(RefuseReason::Limit);
                debug!(pod = pod.name(), %peer, %addr, "node connection budget spent, refusing");
                return reset(client);
            }
            let mut upstream = match dial(ctx.dialer(), addr, config.connect_timeout).await {
                Ok(s) => s,
                Err(e) => {
                    metrics.refused(RefuseReason::UpstreamConnect);
                    warn!(pod = pod.name(), %peer, %addr, error = %e, "direct connect failed");
                    return reset(client);
                }
            };
            let _ = upstream.set_nodelay(true);
            debug!(pod = pod.name(), %peer, %addr, "outbound direct");
            let conn = metrics.connection(&labels);
            bridge(
                &mut client,
                &mut upstream,
                conn,
                &config.copy,
                pod,
                "outbound direct",
            )
            .await;
        }
        OutboundTarget::Tunnel {
            tunnel_addr,
            target,
            pool_key,
        } => {
            let early = match read_early(&client) {
                Ok(early) => early,
                Err(e) => {
                    debug!(pod = pod.name(), %peer, error = %e, "client failed before the tunnel opened");
                    return reset(client);
                }
            };
            // Moved into the stream: the read buffer is not held for the
            // connection's life (docs/architecture.md, "Limits").
            let early_len = early.len() as u64;
            let opened = pool
                .connect_early(&pool_key, target, early, || {
                    ctx.connect_tunnel(tunnel_addr, &pool_key)
                })
                .await;
            let mut stream = match opened {
                Ok(s) => s,
                Err(e) => {
                    metrics.refused(RefuseReason::Tunnel);
                    warn!(pod = pod.name(), %peer, %tunnel_addr, %target, error = %e, "tunnel connect failed");
                    return reset(client);
                }
            };
            debug!(pod = pod.name(), %peer, %tunnel_addr, %target, "outbound via tunnel");
            let mut conn = metrics.connection(&labels);
            conn.on_bytes(Direction::AToB, early_len);
            bridge(
                &mut client,
                &mut stream,
                conn,
                &config.copy,
                pod,
                "outbound tunnel",
            )
            .await;
        }
    }
}

/// Most bytes sent ahead of the CONNECT answer.
const MAX_EARLY_BYTES: usize = 16 * 1024;

/// What the client has already sent, without waiting: a client that speaks
/// first (HTTP, TLS) has its request on the way with the CONNECT, and one that
/// waits for the server loses nothing. Read from the fd directly, because
/// Tokio reports a socket readable only after its driver's next poll.
fn read_early(client: &TcpStream) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(MAX_EARLY_BYTES);
    let spare = buf.spare_capacity_mut();
    match socket2::SockRef::from(client).recv(&mut spare[..MAX_EARLY_BYTES]) {
        Ok(n) => {
            // SAFETY: recv initialised the first n bytes of the spare capacity.
            unsafe { buf.set_len(n) };
            // Just the bytes: h2 may hold them until the stream is written.
            Ok(Bytes::copy_from_slice(&buf))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
        Err(e) => Err(e),
    }
}
