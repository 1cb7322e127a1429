//! L7 authorization at the destination (docs/architecture.md, "L7
//! authorization"; docs/security.md): for a connection admitted with
//! `NeedsRequest`, the agent serves HTTP/1.1 or h2c to the client and decides
//! each request; an allowed one goes to the app over one client connection
//! on the socket already dialled, with the protocol the request came in, a
//! denied one gets `403 RBAC: access denied` and the connection goes on.
//!
//! The HTTP server runs on one end of an in-memory pipe whose other end the
//! caller copies to the client like any upstream: byte counting, idle timeout
//! and shutdown stay those of the byte-copied path, and a connection that
//! needs no request is never parsed.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Body;
use super::body::{Counted, Finish, Reporting, grpc_status};
use super::headers::{is_upgrade, strip_hop_by_hop};
use crate::policy::{BadRequest, RequestAttrs, with_path};
use crate::telemetry::ResponseFlag;

/// Largest request head: 16 KiB (hyper answers `431` past it).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one request (hyper answers `431` past it).
pub const MAX_HEADERS: usize = 100;
/// A client that does not finish a request head within this is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The pipe between the client copy and the HTTP server.
const PIPE_BYTES: usize = 64 * 1024;

/// Decides one request against the current policies (`true`: forward it).
pub trait RequestAuthorizer: Send + Sync + 'static {
    fn authorize(&self, request: &RequestAttrs) -> bool;
}

impl<F: Fn(&RequestAttrs) -> bool + Send + Sync + 'static> RequestAuthorizer for F {
    fn authorize(&self, request: &RequestAttrs) -> bool {
        self(request)
    }
}

/// How one request ended, for metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub method: String,
    /// Path and query as received.
    pub path: String,
    pub authority: String,
    /// `None` when the client went before a response.
    pub status: Option<StatusCode>,
    pub outcome: Outcome,
    /// Envoy's flag: `UAEX` denied, `DPE` malformed, `UF` the app
    /// connection failed, `UR` the app's response broke off, else `-`.
    pub flag: ResponseFlag,
    pub grpc: bool,
    pub grpc_status: Option<u32>,
    pub duration: Duration,
    /// Body bytes.
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// Why the agent answered, when it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The app answered.
    Forwarded,
    /// Policy denied it: `403`.
    Denied,
    /// The request broke the protocol or Istio's normalization rules: `400`
    /// (or hyper's `431` for an oversized head), connection closed.
    Malformed(Malformed),
    /// The app connection failed: `502`.
    UpstreamFailed,
}

impl Outcome {
    fn flag(self) -> ResponseFlag {
        match self {
            Outcome::Forwarded => ResponseFlag::None,
            Outcome::Denied => ResponseFlag::Unauthorized,
            Outcome::Malformed(_) => ResponseFlag::InvalidRequest,
            Outcome::UpstreamFailed => ResponseFlag::UpstreamConnectFailure,
        }
    }
}

/// Why a request was malformed (a closed set, for counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// hyper could not parse it (bad syntax, head too large, too many headers).
    Parse,
    /// Parsed, but refused before policy (`policy::BadRequest`).
    Refused(BadRequest),
}

/// Receives each finished request (the caller's metrics).
pub trait RequestObserver: Send + Sync + 'static {
    fn on_request(&self, served: &Served);
}

impl<F: Fn(&Served) + Send + Sync + 'static> RequestObserver for F {
    fn on_request(&self, served: &Served) {
        self(served)
    }
}

/// Starts serving HTTP for one client connection whose app socket is `app`;
/// returns the pipe end to copy the client's bytes to and from. Serving ends
/// when the pipe closes, the app connection ends, or `revoked` fires (a
/// policy review denied the connection).
pub fn spawn<A, Z, O>(app: A, revoked: CancellationToken, authorize: Z, observe: O) -> DuplexStream
where
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Z: RequestAuthorizer,
    O: RequestObserver,
{
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let shared = Arc::new(Shared {
        authorize,
        observe,
        app: Mutex::new(AppConn::Unconnected(Some(app))),
    });
    tokio::spawn(async move {
        tokio::select! {
            () = serve(theirs, Arc::clone(&shared)) => {}
            () = revoked.cancelled() => debug!("L7 connection revoked by a policy review"),
        }
    });
    ours
}

struct Shared<A, Z, O> {
    authorize: Z,
    observe: O,
    app: Mutex<AppConn<A>>,
}

/// The client connection to the app, made on the first request with its
/// protocol version.
enum AppConn<A> {
    Unconnected(Option<A>),
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

async fn serve<A, Z, O>(client: DuplexStream, shared: Arc<Shared<A, Z, O>>)
where
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Z: RequestAuthorizer,
    O: RequestObserver,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let service = {
        let shared = Arc::clone(&shared);
        hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req))
    };
    let served = builder
        .serve_connection_with_upgrades(TokioIo::new(client), service)
        .await;
    let Err(e) = served else { return };
    match e.downcast_ref::<hyper::Error>() {
        Some(h) if h.is_parse() || h.is_parse_too_large() => {
            // hyper answered 400 or 431 and closed this connection only.
            let code = if h.is_parse_too_large() {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            debug!(error = %h, "malformed request, connection closed");
            let outcome = Outcome::Malformed(Malformed::Parse);
            shared.observe.on_request(&Served {
                method: "-".into(),
                path: "-".into(),
                authority: "-".into(),
                status: Some(code),
                outcome,
                flag: outcome.flag(),
                grpc: false,
                grpc_status: None,
                duration: Duration::ZERO,
                request_bytes: 0,
                response_bytes: 0,
            });
        }
        _ => debug!(error = %e, "L7 connection ended"),
    }
}

async fn handle<A, Z, O>(
    shared: Arc<Shared<A, Z, O>>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible>
where
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Z: RequestAuthorizer,
    O: RequestObserver,
{
    let served = Served {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".into(), |p| p.to_string()),
        authority: authority(&req),
        status: None,
        outcome: Outcome::Forwarded,
        flag: ResponseFlag::None,
        grpc: is_grpc(&req),
        grpc_status: None,
        duration: Duration::ZERO,
        request_bytes: 0,
        response_bytes: 0,
    };
    let start = Instant::now();
    let host = req.headers().get(header::HOST);
    let attrs = match RequestAttrs::from_head(req.method(), req.uri(), host) {
        Ok(attrs) => attrs,
        Err(bad) => {
            debug!(reason = %bad, "malformed request");
            let outcome = Outcome::Malformed(Malformed::Refused(bad));
            return Ok(local(&shared, served, start, outcome, req.version()));
        }
    };
    if !shared.authorize.authorize(&attrs) {
        return Ok(local(
            &shared,
            served,
            start,
            Outcome::Denied,
            req.version(),
        ));
    }
    // The app gets the path the policy read (Istio's normalization).
    if let Some(uri) = with_path(req.uri(), &attrs.path) {
        *req.uri_mut() = uri;
    }
    let upgrade = is_upgrade(req.headers()) || req.method() == Method::CONNECT;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let version = req.version();
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let request_bytes = Arc::new(super::body::Progress::default());
    let body = Counted::new(body, Arc::clone(&request_bytes)).boxed_unsync();
    let mut response = match forward(&shared.app, Request::from_parts(parts, body)).await {
        Ok(resp) => resp,
        Err(e) => {
            debug!(error = %e, "forwarding to the app failed");
            return Ok(local(
                &shared,
                served,
                start,
                Outcome::UpstreamFailed,
                version,
            ));
        }
    };
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS
        || (served.method == "CONNECT" && response.status().is_success());
    if let (true, Some(client)) = (upgraded, client_upgrade) {
        // Both sides switched: the rest is a byte stream (docs/architecture.md).
        let app = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(app)) = tokio::join!(client, app) {
                let (mut c, mut a) = (TokioIo::new(client), TokioIo::new(app));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut a).await;
            }
        });
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgraded);
    let status = parts.status;
    let report = Arc::clone(&shared);
    let finish: Finish = Box::new(move |response_bytes, grpc_status, flag| {
        report.observe.on_request(&Served {
            status: Some(status),
            flag,
            grpc_status,
            duration: start.elapsed(),
            request_bytes: request_bytes.bytes.load(Ordering::Relaxed),
            response_bytes,
            ..served
        });
    });
    let grpc = grpc_status(&parts.headers);
    let body = Reporting::new(body, grpc, finish).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// The agent's own answer, reported at once; `close` ends an HTTP/1.1
/// connection after it (a malformed request or a broken app connection).
fn local<A, Z, O: RequestObserver>(
    shared: &Shared<A, Z, O>,
    served: Served,
    start: Instant,
    outcome: Outcome,
    version: Version,
) -> Response<Body> {
    let (status, text, close) = match outcome {
        Outcome::Denied => (StatusCode::FORBIDDEN, "RBAC: access denied", false),
        Outcome::Malformed(_) => (StatusCode::BAD_REQUEST, "bad request", true),
        Outcome::UpstreamFailed | Outcome::Forwarded => {
            (StatusCode::BAD_GATEWAY, "upstream connect error", true)
        }
    };
    shared.observe.on_request(&Served {
        status: Some(status),
        outcome,
        flag: outcome.flag(),
        duration: start.elapsed(),
        response_bytes: text.len() as u64,
        ..served
    });
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if close && version < Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Why a request could not reach the app.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The app handshake failed on an earlier request of this connection.
    #[error("the app connection failed earlier")]
    NoApp,
}

/// Sends `req` to the app, connecting on the first request.
async fn forward<A>(
    app: &Mutex<AppConn<A>>,
    req: Request<Body>,
) -> Result<Response<Incoming>, ForwardError>
where
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = app.lock().await;
    if let AppConn::Unconnected(io) = &mut *conn {
        let io = io.take().ok_or(ForwardError::NoApp)?;
        *conn = connect(io, req.version()).await?;
    }
    match &mut *conn {
        AppConn::Http2(send) => {
            let mut send = send.clone();
            // h2 multiplexes: no need to hold the lock for the response.
            drop(conn);
            Ok(send.send_request(req).await?)
        }
        AppConn::Http1(send) => {
            // One request at a time, as the client's HTTP/1.1 connection sends them.
            send.ready().await?;
            Ok(send.send_request(req).await?)
        }
        AppConn::Unconnected(_) => Err(ForwardError::NoApp),
    }
}

async fn connect<A>(io: A, version: Version) -> hyper::Result<AppConn<A>>
where
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if version == Version::HTTP_2 {
        let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "app connection (h2) ended");
            }
        });
        Ok(AppConn::Http2(send))
    } else {
        let (send, conn) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(error = %e, "app connection (HTTP/1.1) ended");
            }
        });
        Ok(AppConn::Http1(send))
    }
}

fn authority(req: &Request<Incoming>) -> String {
    match req.uri().authority() {
        Some(a) => a.to_string(),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    }
}

fn is_grpc(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

#[cfg(test)]
mod tests;
