//! The inbound listeners of a pod: the tunnel (`15008`, HTTP/2 CONNECT) and
//! plaintext (`15006`, what `sk_lookup` steers there). Both forward to the app
//! through the agent's `Dialer`, on behalf of the client's address.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::accept::{accept_loop, accept_loop_with};
use super::copy::{CopyObserver, CopyResult, Direction};
use super::http::inbound::{self as http_inbound, Served};
use super::pod::{ConnectionPermit, PodConnections};
use super::tunnel::{PeerCertificate, Refusal, StreamHandler, serve_connection_until};
use super::{Dialer, Shared, bridge, dial_app, reset};
use crate::policy::{AdmissionGuard, Inbound, RequestAttrs};
use crate::telemetry::{
    ConnectionLabels, ConnectionMetrics, Metrics, RefuseReason, RequestProtocol, RequestRecord,
};
use revocable::Revocable;

mod revocable;

/// What the inbound handlers ask of the agent, for one pod.
pub trait InboundContext: Send + Sync + 'static {
    type Dialer: Dialer;
    /// The tunnel's transport after `accept_tunnel` (TLS with mTLS).
    type TunnelIo: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Who is at the other end of a tunnel connection (address now; the
    /// verified identity with mTLS).
    type Peer: Send + Sync + 'static;

    /// Connects to the app.
    fn dialer(&self) -> &Self::Dialer;

    /// Turns an accepted `15008` connection into the tunnel transport
    /// (identity for plaintext; the TLS handshake with mTLS).
    fn accept_tunnel(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::TunnelIo, Self::Peer)>> + Send;

    /// May `peer` reach `target` (the CONNECT authority) in this pod? The
    /// agent checks the target is this pod's address, then admits it under
    /// the current state (`Admission`).
    fn authorize(&self, peer: &Self::Peer, target: SocketAddr) -> Result<Admission, Refusal>;

    /// May plaintext from `peer` to `local` (the original destination, kept by
    /// `sk_lookup`) go through?
    fn inbound_plaintext_allowed(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Admission, Refusal>;

    /// May this request of `conn` (admitted with `NeedsRequest`) reach the
    /// app, under the current policies? A context whose admissions never
    /// need the request keeps the default, which fails closed.
    fn authorize_request(&self, conn: &Inbound, request: &RequestAttrs) -> bool {
        let _ = (conn, request);
        false
    }
}

/// An admitted inbound connection, before the app is dialled.
pub struct Admission {
    /// For the connection's metrics (reporter `destination`).
    pub labels: ConnectionLabels,
    /// Its place under policy review (registered before it was decided); a
    /// review that denies it ends it, even while the app is being dialled.
    pub review: Option<AdmissionGuard>,
}

/// Runs the pod's tunnel listener until `pod` stops accepting; its open
/// tunnel connections close when the pod's connections are closed, and each
/// at its peer certificate's expiry (docs/security.md).
pub async fn run_inbound_tunnel<C: InboundContext>(
    listener: TcpListener,
    ctx: Arc<C>,
    shared: Shared,
    pod: PodConnections,
) where
    C::TunnelIo: PeerCertificate,
{
    let handler = Arc::new(TunnelHandler {
        ctx: Arc::clone(&ctx),
        shared: shared.clone(),
        pod: pod.clone(),
    });
    let metrics = Arc::clone(&shared.metrics);
    // A handshake takes a handshake slot only; the connection takes a data
    // slot, and one of its peer's, once the peer is authenticated.
    let admit = |pod: &PodConnections, peer: SocketAddr| pod.try_handshake(peer.ip());
    accept_loop_with(listener, pod.clone(), &metrics, "inbound tunnel", admit, |tcp, peer, handshake| {
        let (ctx, handler, shared, pod) = (ctx.clone(), handler.clone(), shared.clone(), pod.clone());
        async move {
            let config = &shared.config;
            let accepted = tokio::select! {
                r = tokio::time::timeout(config.tunnel.handshake_timeout, ctx.accept_tunnel(tcp, peer)) => r,
                () = pod.connections_token().cancelled() => return,
            };
            drop(handshake);
            let (io, peer_info) = match accepted {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => return debug!(pod = pod.name(), %peer, error = %e, "tunnel accept failed"),
                Err(_) => return debug!(pod = pod.name(), %peer, "tunnel accept timed out"),
            };
            let permits = pod.try_peer(peer.ip()).zip(pod.try_acquire());
            let Some((_peer_slot, permit)) = permits else {
                shared.metrics.refused(RefuseReason::Limit);
                return debug!(pod = pod.name(), %peer, "tunnel connection over the pod's or the peer's limit, closing");
            };
            let expires = io.peer_not_after();
            let cancel = pod.connections_token().clone();
            let peer_info = PeerAt { info: peer_info, addr: peer };
            let served =
                serve_connection_until(io, peer_info, handler, &config.tunnel, &config.copy, cancel, expires).await;
            if let Err(e) = served {
                debug!(pod = pod.name(), %peer, error = %e, "tunnel connection ended");
            }
            drop(permit);
        }
    })
    .await;
}

/// A tunnel peer as the context knows it, and the address it connected from:
/// the client address the app is dialled with (docs/architecture.md,
/// "Keeping the client's address").
struct PeerAt<P> {
    info: P,
    addr: SocketAddr,
}

struct TunnelHandler<C> {
    ctx: Arc<C>,
    shared: Shared,
    pod: PodConnections,
}

/// A bridged tunnel stream: its metrics and its slot in the pod's cap.
struct StreamSession {
    metrics: ConnectionMetrics,
    _permit: ConnectionPermit,
}

impl CopyObserver for StreamSession {
    fn on_bytes(&mut self, direction: Direction, n: u64) {
        self.metrics.on_bytes(direction, n);
    }
    fn on_end(&mut self, result: &CopyResult) {
        self.metrics.on_end(result);
    }
}

/// The app side of an admitted connection: the app's socket, or for a
/// connection whose requests are decided one by one, the pipe to the HTTP
/// server in front of it (`http::inbound`).
type AppSide = Either<Revocable<TcpStream>, DuplexStream>;

/// The connection and its revocation, when its admission decides each
/// request (taken before the guard moves into the app stream).
fn decides_requests(review: &Option<AdmissionGuard>) -> Option<(Inbound, CancellationToken)> {
    let guard = review.as_ref()?;
    Some((guard.decides_requests()?.clone(), guard.revoked().clone()))
}

/// `upstream` as the copy loop sees it: unchanged unless the admission
/// decides each request; then each request is reported with the
/// connection's labels (reporter `destination`).
fn app_side<C: InboundContext>(
    ctx: &Arc<C>,
    upstream: Revocable<TcpStream>,
    parsed: Option<(Inbound, CancellationToken)>,
    metrics: &Arc<Metrics>,
    labels: &ConnectionLabels,
    app: SocketAddr,
) -> AppSide {
    let Some((conn, revoked)) = parsed else {
        return Either::Left(upstream);
    };
    let ctx = Arc::clone(ctx);
    let authorize = move |r: &RequestAttrs| ctx.authorize_request(&conn, r);
    let observe = request_reporter(Arc::clone(metrics), labels.clone(), app);
    Either::Right(http_inbound::spawn(upstream, revoked, authorize, observe))
}

fn request_reporter(
    metrics: Arc<Metrics>,
    labels: ConnectionLabels,
    app: SocketAddr,
) -> impl Fn(&Served) + Send + Sync + 'static {
    let source_pod = match labels.source_workload.as_str() {
        "" => "-".to_owned(),
        w => format!("{}/{w}", labels.source_workload_namespace),
    };
    let destination = app.to_string();
    move |s: &Served| {
        metrics.record_request(&RequestRecord {
            labels: &labels,
            protocol: if s.grpc {
                RequestProtocol::Grpc
            } else {
                RequestProtocol::Http
            },
            response_code: s.status.map_or(0, |c| c.as_u16()),
            grpc_status: s.grpc_status,
            flag: s.flag,
            duration: s.duration,
            request_bytes: s.request_bytes,
            response_bytes: s.response_bytes,
            method: &s.method,
            path: &s.path,
            authority: &s.authority,
            source_pod: &source_pod,
            destination: &destination,
        });
    }
}

impl<C: InboundContext> StreamHandler<PeerAt<C::Peer>> for TunnelHandler<C> {
    type Upstream = AppSide;
    type Session = StreamSession;

    async fn open(
        &self,
        target: SocketAddr,
        peer: &PeerAt<C::Peer>,
    ) -> Result<(AppSide, StreamSession), Refusal> {
        let metrics = &self.shared.metrics;
        let Some(permit) = self.pod.try_acquire() else {
            metrics.refused(RefuseReason::Limit);
            return Err(Refusal::unavailable("pod connection limit reached"));
        };
        let admission = self.ctx.authorize(&peer.info, target).inspect_err(|r| {
            metrics.refused(RefuseReason::Policy);
            debug!(pod = self.pod.name(), %target, refusal = %r, "tunnel stream not authorized");
        })?;
        let upstream = dial_app(
            self.ctx.dialer(),
            target,
            peer.addr,
            self.shared.config.connect_timeout,
        )
        .await
        .map_err(|e| {
            metrics.refused(RefuseReason::UpstreamConnect);
            warn!(pod = self.pod.name(), %target, error = %e, "connecting to the app failed");
            Refusal::unavailable(format!("connect {target}: {e}"))
        })?;
        let _ = upstream.set_nodelay(true);
        let parsed = decides_requests(&admission.review);
        let upstream = Revocable::new(upstream, admission.review);
        if upstream.is_revoked() {
            metrics.refused(RefuseReason::Policy);
            debug!(pod = self.pod.name(), %target, "tunnel stream revoked while connecting to the app");
            return Err(Refusal::forbidden("a policy change revoked it"));
        }
        let upstream = app_side(
            &self.ctx,
            upstream,
            parsed,
            metrics,
            &admission.labels,
            target,
        );
        Ok((
            upstream,
            StreamSession {
                metrics: metrics.connection(&admission.labels),
                _permit: permit,
            },
        ))
    }
}

/// Runs the pod's plaintext inbound listener until `pod` stops accepting.
pub async fn run_inbound_plaintext<C: InboundContext>(
    listener: TcpListener,
    ctx: Arc<C>,
    shared: Shared,
    pod: PodConnections,
) {
    let metrics = Arc::clone(&shared.metrics);
    accept_loop(
        listener,
        pod.clone(),
        &metrics,
        "inbound plaintext",
        |client, peer, mut permit| {
            let (ctx, shared, pod) = (ctx.clone(), shared.clone(), pod.clone());
            async move {
                plaintext(client, peer, &ctx, &shared, &pod, &mut permit).await;
                drop(permit);
            }
        },
    )
    .await;
}

async fn plaintext<C: InboundContext>(
    mut client: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<C>,
    shared: &Shared,
    pod: &PodConnections,
    permit: &mut ConnectionPermit,
) {
    let metrics = &shared.metrics;
    // sk_lookup hands us the connection unchanged: its local address is
    // where the client was going.
    let local = match client.local_addr() {
        Ok(a) => a,
        Err(e) => return debug!(pod = pod.name(), %peer, error = %e, "no local address"),
    };
    let admission = match ctx.inbound_plaintext_allowed(peer, local) {
        Ok(a) => a,
        Err(refusal) => {
            metrics.refused(RefuseReason::Policy);
            debug!(pod = pod.name(), %peer, %local, %refusal, "plaintext inbound refused");
            return reset(client);
        }
    };
    if !permit.take_upstream_descriptor() {
        metrics.refused(RefuseReason::Limit);
        debug!(pod = pod.name(), %peer, %local, "node connection budget spent, refusing");
        return reset(client);
    }
    let dialled = dial_app(ctx.dialer(), local, peer, shared.config.connect_timeout);
    let upstream = match dialled.await {
        Ok(s) => s,
        Err(e) => {
            metrics.refused(RefuseReason::UpstreamConnect);
            warn!(pod = pod.name(), %peer, %local, error = %e, "connecting to the app failed");
            return reset(client);
        }
    };
    let _ = upstream.set_nodelay(true);
    let parsed = decides_requests(&admission.review);
    let upstream = Revocable::new(upstream, admission.review);
    if upstream.is_revoked() {
        metrics.refused(RefuseReason::Policy);
        debug!(pod = pod.name(), %peer, %local, "plaintext inbound revoked while connecting to the app");
        return reset(client);
    }
    let mut upstream = app_side(ctx, upstream, parsed, metrics, &admission.labels, local);
    let conn = metrics.connection(&admission.labels);
    bridge(
        &mut client,
        &mut upstream,
        conn,
        &shared.config.copy,
        pod,
        "inbound plaintext",
    )
    .await;
}
