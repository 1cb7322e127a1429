//! The HTTP side of the outbound listener (docs/architecture.md, "L7
//! routing"): serves the app's connection to a Service port with hyper
//! (HTTP/1.1 or h2c, as the app speaks), asks the state where each request
//! goes (`OutboundContext::plan_request`), and forwards it to the endpoint
//! chosen for it through the tunnel, answering 4xx/5xx itself when it cannot.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{self, PathAndQuery};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::debug;

use super::upstream::Upstreams;
use super::{Body, HttpService, Plan, forward, respond};
use crate::proxy::Shared;
use crate::proxy::outbound::OutboundContext;
use crate::proxy::pod::PodConnections;
use crate::proxy::tunnel::Pool;
use crate::routing::RequestHead;
use crate::telemetry::{ConnectionLabels, RequestProtocol, RequestRecord, ResponseFlag};

/// Largest request head (line and headers) an app may send, and most headers.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 100;

/// What the HTTP handlers of one pod share: its upstream connections and
/// its cap on requests in flight.
#[derive(Clone)]
pub struct PodHttp {
    pub(super) upstreams: Upstreams,
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
pub(super) struct Conn<C: OutboundContext> {
    pub(super) ctx: Arc<C>,
    pub(super) pool: Pool<C::PoolKey>,
    pub(super) http: PodHttp,
    pub(super) shared: Shared,
    pub(super) service: HttpService,
    /// `namespace/name` of the source pod (access log and tap).
    pub(super) source: String,
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

/// What the access log and tap show of a request, kept past the hand-off.
/// Reference-counted clones of the parsed head, not copies: a request
/// reported only to the metrics allocates nothing for it.
pub(super) struct Seen {
    pub(super) method: Method,
    path: Option<PathAndQuery>,
    authority: Authority,
    protocol: RequestProtocol,
    start: Instant,
}

/// `:authority` (HTTP/2) or `Host` (HTTP/1.1), as `RequestHead::authority`.
enum Authority {
    Uri(uri::Authority),
    Host(HeaderValue),
    None,
}

impl Seen {
    fn of(req: &Request<Incoming>) -> Self {
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let authority = match (req.uri().authority(), req.headers().get(header::HOST)) {
            (Some(a), _) => Authority::Uri(a.clone()),
            (None, Some(host)) => Authority::Host(host.clone()),
            (None, None) => Authority::None,
        };
        Seen {
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            authority,
            protocol: if grpc {
                RequestProtocol::Grpc
            } else {
                RequestProtocol::Http
            },
            start: Instant::now(),
        }
    }

    fn path(&self) -> &str {
        self.path.as_ref().map_or("/", PathAndQuery::as_str)
    }

    fn authority(&self) -> &str {
        match &self.authority {
            Authority::Uri(a) => a.as_str(),
            Authority::Host(h) => h.to_str().unwrap_or_default(),
            Authority::None => "",
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
        Plan::Forward(forward) => forward::proxy(conn, req, forward, seen).await,
    };
    // Held until the response head is out; streaming bodies are bounded by
    // the connection budgets.
    drop(permit);
    response
}

/// Answers without an upstream, and reports the request at once.
pub(super) fn local<C: OutboundContext>(
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

impl<C: OutboundContext> Conn<C> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn report(
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
            method: seen.method.as_str(),
            path: seen.path(),
            authority: seen.authority(),
            source_pod: &self.source,
            destination,
        });
    }
}
