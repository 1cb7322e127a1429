//! Forwarding one request (docs/architecture.md, "L7 routing", steps 3–4):
//! the head edited, the body streamed (or copied for a mirror), the endpoint's
//! answer awaited within the route's timeouts, and the response streamed back
//! through a body that reports the request when it ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tracing::debug;

use super::body::{Counted, Finish, Progress, Reporting, grpc_status};
use super::headers::{ensure_request_id, is_upgrade, strip_hop_by_hop};
use super::metered::Metered;
use super::outbound::{Conn, Seen, local};
use super::upstream::UpstreamError;
use super::{Body, Forward, mirror, respond};
use crate::proxy::dial;
use crate::proxy::outbound::{OutboundContext, OutboundTarget};
use crate::routing::{apply_request, apply_response};
use crate::telemetry::{ConnectionLabels, ResponseFlag};

/// Why no upstream response came.
enum Failure {
    Timeout,
    Upstream(UpstreamError),
}

pub(super) async fn proxy<C: OutboundContext>(
    conn: &Arc<Conn<C>>,
    mut req: Request<Incoming>,
    forward: Forward<C::PoolKey>,
    seen: Seen,
) -> Response<Body> {
    let upgrade = is_upgrade(req.headers()) || req.method() == Method::CONNECT;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    apply_request(&mut parts, &forward.filters, &forward.path_match);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    ensure_request_id(&mut parts.headers);
    let request_body = Arc::new(Progress::default());
    let body = if forward.mirrors.is_empty() {
        body.map_err(Into::into).boxed_unsync()
    } else {
        match mirror::split(&parts, body).await {
            Ok((body, copy)) => {
                if let Some(copy) = copy {
                    send_mirrors(conn, &parts, copy, &forward.mirrors);
                }
                body
            }
            Err(e) => {
                debug!(source = conn.source, error = %e, "request body failed before forwarding");
                let labels = forward.labels;
                let flag = ResponseFlag::DownstreamConnectionTermination;
                return local(conn, &seen, labels, StatusCode::BAD_REQUEST, None, flag);
            }
        }
    };
    let req = Request::from_parts(
        parts,
        Counted::new(body, Arc::clone(&request_body)).boxed_unsync(),
    );

    let (addr, open) = match &forward.target {
        OutboundTarget::Tunnel {
            tunnel_addr,
            target,
            pool_key,
        } => (*target, Opener::Tunnel(*tunnel_addr, *target, pool_key)),
        OutboundTarget::Direct(addr) => (*addr, Opener::Direct(*addr)),
        OutboundTarget::Refuse(_) => {
            return local(
                conn,
                &seen,
                forward.labels,
                StatusCode::FORBIDDEN,
                None,
                ResponseFlag::Unauthorized,
            );
        }
    };
    let destination = addr.to_string();
    let labels = &forward.labels;
    let sent = conn
        .http
        .upstreams
        .send(addr, req, || open.open(conn, labels));
    let deadline = match (forward.timeouts.request, forward.timeouts.backend_request) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let result = match deadline {
        Some(d) => match tokio::time::timeout(d, sent).await {
            Ok(r) => r.map_err(Failure::Upstream),
            Err(_) => Err(Failure::Timeout),
        },
        None => sent.await.map_err(Failure::Upstream),
    };
    let mut response = match result {
        Ok(response) => response,
        Err(failure) => {
            let client_gone = request_body.failed.load(Ordering::Relaxed);
            let (status, flag) = match &failure {
                // The upstream failed because the client's body did: its fault.
                Failure::Upstream(_) if client_gone => (
                    StatusCode::BAD_REQUEST,
                    ResponseFlag::DownstreamConnectionTermination,
                ),
                Failure::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    ResponseFlag::UpstreamRequestTimeout,
                ),
                Failure::Upstream(UpstreamError::Connect(_) | UpstreamError::Handshake(_)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlag::UpstreamConnectFailure,
                ),
                Failure::Upstream(UpstreamError::Request(_)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ResponseFlag::UpstreamRemoteReset,
                ),
            };
            if let Failure::Upstream(e) = &failure {
                debug!(source = conn.source, %destination, error = %e, "upstream failed");
            }
            if client_gone {
                // No one to answer: counted as Envoy does, code 0 and DC.
                let sent = request_body.bytes.load(Ordering::Relaxed);
                conn.report(&forward.labels, &seen, 0, None, flag, sent, 0, &destination);
                return respond::answer(status, None, flag).0;
            }
            return local(conn, &seen, forward.labels, status, None, flag);
        }
    };

    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS
        || (seen.method == http::Method::CONNECT && response.status().is_success());
    if let (true, Some(client)) = (upgraded, client_upgrade) {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) {
                let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
            }
        });
    }
    let (mut parts, body) = response.into_parts();
    apply_response(&mut parts.headers, &forward.filters);
    strip_hop_by_hop(&mut parts.headers, upgraded);
    let code = parts.status.as_u16();
    let grpc = grpc_status(&parts.headers);
    let report = Arc::clone(conn);
    let labels = forward.labels;
    let finish: Finish = Box::new(move |response_bytes, grpc_status, flag| {
        let request_bytes = request_body.bytes.load(Ordering::Relaxed);
        report.report(
            &labels,
            &seen,
            code,
            grpc_status,
            flag,
            request_bytes,
            response_bytes,
            &destination,
        );
    });
    Response::from_parts(parts, Reporting::new(body, grpc, finish).boxed_unsync())
}

/// Sends a copy of the request to each mirror target, answers discarded.
fn send_mirrors<C: OutboundContext>(
    conn: &Arc<Conn<C>>,
    parts: &http::request::Parts,
    body: Bytes,
    targets: &[OutboundTarget<C::PoolKey>],
) {
    for target in targets {
        let (addr, open) = match target {
            OutboundTarget::Tunnel {
                tunnel_addr,
                target,
                pool_key,
            } => (
                *target,
                OwnedOpener::Tunnel(*tunnel_addr, *target, pool_key.clone()),
            ),
            OutboundTarget::Direct(addr) => (*addr, OwnedOpener::Direct(*addr)),
            OutboundTarget::Refuse(_) => continue,
        };
        let req = mirror::copy(parts, body.clone());
        let conn = Arc::clone(conn);
        tokio::spawn(async move {
            let opener = open.borrowed();
            match conn
                .http
                .upstreams
                .send(addr, req, || opener.open(&conn, &conn.service.labels))
                .await
            {
                Ok(response) => {
                    let _ = response.into_body().collect().await;
                }
                Err(e) => mirror::failed(addr, &e),
            }
        });
    }
}

/// An `Opener` that owns its pool key, for a spawned mirror.
enum OwnedOpener<K> {
    Tunnel(SocketAddr, SocketAddr, K),
    Direct(SocketAddr),
}

impl<K> OwnedOpener<K> {
    fn borrowed(&self) -> Opener<'_, K> {
        match self {
            OwnedOpener::Tunnel(t, a, k) => Opener::Tunnel(*t, *a, k),
            OwnedOpener::Direct(a) => Opener::Direct(*a),
        }
    }
}

/// How a new upstream connection is opened.
enum Opener<'k, K> {
    Tunnel(SocketAddr, SocketAddr, &'k K),
    Direct(SocketAddr),
}

impl<K: Clone + Eq + std::hash::Hash + Send + Sync + 'static> Opener<'_, K> {
    /// A new connection, counted in the TCP series under `labels`.
    async fn open<C: OutboundContext<PoolKey = K>>(
        &self,
        conn: &Conn<C>,
        labels: &ConnectionLabels,
    ) -> io::Result<Metered<Either<crate::proxy::tunnel::TunnelStream, TcpStream>>> {
        let io = match *self {
            Opener::Tunnel(tunnel_addr, target, key) => conn
                .pool
                .connect(key, target, || conn.ctx.connect_tunnel(tunnel_addr, key))
                .await
                .map(Either::Left)
                .map_err(io::Error::other)?,
            Opener::Direct(addr) => {
                let s = dial(conn.ctx.dialer(), addr, conn.shared.config.connect_timeout).await?;
                let _ = s.set_nodelay(true);
                Either::Right(s)
            }
        };
        Ok(Metered::new(io, conn.shared.metrics.connection(labels)))
    }
}
