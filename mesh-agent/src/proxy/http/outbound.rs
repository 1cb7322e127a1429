//! The HTTP side of the outbound listener (docs/architecture.md, "L7
//! routing"): serves the app's connection to a Service port with hyper
//! (HTTP/1.1 or h2c, as the app speaks), asks the state where each request
//! goes (`OutboundContext::plan_request`), and forwards it to the endpoint
//! chosen for it through the tunnel, answering 4xx/5xx itself when it cannot.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tracing::debug;

use super::body::{Counted, Finish, Progress, Reporting, grpc_status};
use super::headers::{ensure_request_id, is_upgrade, strip_hop_by_hop};
use super::upstream::{UpstreamError, Upstreams};
use super::{Body, Forward, HttpService, Plan};
use super::{mirror, respond};
use crate::proxy::outbound::{OutboundContext, OutboundTarget};
use crate::proxy::pod::PodConnections;
use crate::proxy::tunnel::Pool;
use crate::proxy::{Shared, dial};
use crate::routing::{RequestHead, apply_request, apply_response};
use crate::telemetry::{ConnectionLabels, RequestProtocol, RequestRecord, ResponseFlag};

/// Largest request head (line and headers) an app may send, and most headers.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 100;

/// What the HTTP handlers of one pod share: its upstream connections and
/// its cap on requests in flight.
#[derive(Clone)]
pub struct PodHttp {
    upstreams: Upstreams,
    requests: Arc<Semaphore>,
}

impl PodHttp {
    /// At most `max_requests` requests of the pod in flight at once.
    pub fn new(max_requests: usize) -> Self {
        Self {
            upstreams: Upstreams::default(),
            requests: Arc::new(Semaphore::new(max_requests)),
        }
    }
}

/// One app connection being served.
struct Conn<C: OutboundContext> {
    ctx: Arc<C>,
    pool: Pool<C::PoolKey>,
    http: PodHttp,
    shared: Shared,
    service: HttpService,
    /// `namespace/name` of the source pod (access log and tap).
    source: String,
}

/// Serves HTTP on `client` until it closes or the pod shuts down.
pub async fn serve<C: OutboundContext>(
    client: TcpStream,
    service: HttpService,
    ctx: Arc<C>,
    pool: Pool<C::PoolKey>,
    http: PodHttp,
    shared: Shared,
    pod: &PodConnections,
) {
    let conn = Arc::new(Conn {
        ctx,
        pool,
        http,
        shared,
        service,
        source: pod.name().to_owned(),
    });
    let svc = {
        let conn = Arc::clone(&conn);
        hyper::service::service_fn(move |req| {
            let conn = Arc::clone(&conn);
            async move { Ok::<_, Infallible>(handle(&conn, req).await) }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .max_headers(MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .timer(TokioTimer::new());
    let served = builder.serve_connection_with_upgrades(TokioIo::new(client), svc);
    tokio::select! {
        r = served => if let Err(e) = r {
            malformed(&conn, e.as_ref());
        },
        () = pod.connections_token().cancelled() => {
            debug!(pod = pod.name(), "HTTP connection closed by pod shutdown");
        }
    }
}

/// A connection hyper ended on a protocol error answered the client itself
/// (400, 431); count it as a request with flag `DPE`.
fn malformed<C: OutboundContext>(conn: &Conn<C>, e: &(dyn std::error::Error + 'static)) {
    let Some(e) = e.downcast_ref::<hyper::Error>() else {
        return;
    };
    if !e.is_parse() && !e.is_parse_too_large() {
        debug!(source = conn.source, error = %e, "HTTP connection ended");
        return;
    }
    let code = if e.is_parse_too_large() { 431 } else { 400 };
    debug!(source = conn.source, error = %e, code, "malformed request, connection closed");
    conn.shared.metrics.record_request(&RequestRecord {
        labels: &conn.service.labels,
        protocol: RequestProtocol::Http,
        response_code: code,
        grpc_status: None,
        flag: ResponseFlag::InvalidRequest,
        duration: Duration::ZERO,
        request_bytes: 0,
        response_bytes: 0,
        method: "-",
        path: "-",
        authority: "-",
        source_pod: &conn.source,
        destination: "",
    });
}

/// What the access log and tap show of a request; owned, as the report
/// comes after the request has been handed on.
struct Seen {
    method: String,
    path: String,
    authority: String,
    protocol: RequestProtocol,
    start: Instant,
}

impl Seen {
    fn of(req: &Request<Incoming>) -> Self {
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        Seen {
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".into(), |p| p.to_string()),
            authority: RequestHead::new(req.method(), req.uri(), req.headers())
                .authority()
                .unwrap_or_default()
                .to_owned(),
            protocol: if grpc {
                RequestProtocol::Grpc
            } else {
                RequestProtocol::Http
            },
            start: Instant::now(),
        }
    }
}

async fn handle<C: OutboundContext>(conn: &Arc<Conn<C>>, req: Request<Incoming>) -> Response<Body> {
    let seen = Seen::of(&req);
    let Ok(permit) = Arc::clone(&conn.http.requests).try_acquire_owned() else {
        let labels = conn.service.labels.clone();
        return local(
            conn,
            &seen,
            labels,
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            ResponseFlag::Overloaded,
        );
    };
    let head = RequestHead::new(req.method(), req.uri(), req.headers());
    let response = match conn.ctx.plan_request(&conn.service, &head) {
        Plan::Respond {
            status,
            location,
            flag,
            labels,
        } => local(conn, &seen, labels, status, location, flag),
        Plan::Forward(forward) => proxy(conn, req, forward, seen).await,
    };
    // Held until the response head is out; streaming bodies are bounded by
    // the connection budgets.
    drop(permit);
    response
}

/// Answers without an upstream, and reports the request at once.
fn local<C: OutboundContext>(
    conn: &Conn<C>,
    seen: &Seen,
    labels: ConnectionLabels,
    status: StatusCode,
    location: Option<HeaderValue>,
    flag: ResponseFlag,
) -> Response<Body> {
    let (response, len) = respond::answer(status, location, flag);
    conn.report(&labels, seen, status.as_u16(), None, flag, 0, len, "");
    response
}

/// Why no upstream response came.
enum Failure {
    Timeout,
    Upstream(UpstreamError),
}

async fn proxy<C: OutboundContext>(
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
    let sent = conn.http.upstreams.send(addr, req, || open.open(conn));
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
        || (seen.method == "CONNECT" && response.status().is_success());
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
                .send(addr, req, || opener.open(&conn))
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
    async fn open<C: OutboundContext<PoolKey = K>>(
        &self,
        conn: &Conn<C>,
    ) -> io::Result<Either<crate::proxy::tunnel::TunnelStream, TcpStream>> {
        match *self {
            Opener::Tunnel(tunnel_addr, target, key) => conn
                .pool
                .connect(key, target, || conn.ctx.connect_tunnel(tunnel_addr, key))
                .await
                .map(Either::Left)
                .map_err(io::Error::other),
            Opener::Direct(addr) => {
                let s = dial(conn.ctx.dialer(), addr, conn.shared.config.connect_timeout).await?;
                let _ = s.set_nodelay(true);
                Ok(Either::Right(s))
            }
        }
    }
}

impl<C: OutboundContext> Conn<C> {
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        labels: &ConnectionLabels,
        seen: &Seen,
        response_code: u16,
        grpc_status: Option<u32>,
        flag: ResponseFlag,
        request_bytes: u64,
        response_bytes: u64,
        destination: &str,
    ) {
        self.shared.metrics.record_request(&RequestRecord {
            labels,
            protocol: seen.protocol,
            response_code,
            grpc_status,
            flag,
            duration: seen.start.elapsed(),
            request_bytes,
            response_bytes,
            method: &seen.method,
            path: &seen.path,
            authority: &seen.authority,
            source_pod: &self.source,
            destination,
        });
    }
}
