//! The tunnel server: accepts HTTP/2 on a transport, and for each `CONNECT`
//! asks a handler for an upstream, answers 200 and bridges the two with `copy`,
//! or answers the handler's refusal status.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::expiry::time_left;
use super::keepalive::keepalive;
use super::{TunnelConfig, TunnelStream};
use crate::proxy::copy::{CopyConfig, CopyEnd, CopyObserver, copy_bidirectional};

/// A refused stream: the HTTP status the peer gets and why (logged, not sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
    /// 400: the `:authority` is not a valid or acceptable target.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }
    /// 403: denied by policy.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason)
    }
    /// 503: the upstream could not be reached, or a limit was hit.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, reason)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.status)
    }
}

/// Decides what each `CONNECT` stream of a connection from peer `P` reaches.
pub trait StreamHandler<P>: Send + Sync + 'static {
    /// Where accepted streams are bridged to (usually a socket to the app).
    type Upstream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Per-stream state kept while bridging: counts bytes (as `a` = tunnel
    /// side, `b` = upstream) and is dropped when the stream ends.
    type Session: CopyObserver + Send + 'static;

    fn open(
        &self,
        target: SocketAddr,
        peer: &P,
    ) -> impl Future<Output = Result<(Self::Upstream, Self::Session), Refusal>> + Send;
}

/// Serves one tunnel connection until the peer closes it or `cancel` fires,
/// which also closes every stream it carries.
pub async fn serve_connection<T, P, H>(
    io: T,
    peer: P,
    handler: Arc<H>,
    config: &TunnelConfig,
    copy: &CopyConfig,
    cancel: CancellationToken,
) -> Result<(), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: Send + Sync + 'static,
    H: StreamHandler<P>,
{
    serve_connection_until(io, peer, handler, config, copy, cancel, None).await
}

/// As `serve_connection`, and closes the connection (GOAWAY, then its streams)
/// at `expires`, the peer certificate's notAfter, and once it has carried no
/// stream for `config.server_idle_timeout` (docs/security.md).
pub async fn serve_connection_until<T, P, H>(
    io: T,
    peer: P,
    handler: Arc<H>,
    config: &TunnelConfig,
    copy: &CopyConfig,
    cancel: CancellationToken,
    expires: Option<SystemTime>,
) -> Result<(), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: Send + Sync + 'static,
    H: StreamHandler<P>,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .max_frame_size(config.max_frame_size)
        .max_send_buffer_size(config.max_send_buffer)
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(config.max_header_list_size)
        .handshake::<_, Bytes>(io);
    let mut conn = tokio::select! {
        res = tokio::time::timeout(config.handshake_timeout, handshake) => match res {
            Ok(conn) => conn?,
            Err(_) => {
                debug!("tunnel handshake timed out");
                return Ok(());
            }
        },
        () = cancel.cancelled() => return Ok(()),
    };
    let ping = keepalive(
        conn.ping_pong(),
        config.keepalive_interval,
        config.keepalive_timeout,
    );
    tokio::pin!(ping);
    let expiry = async {
        match expires {
            Some(at) => tokio::time::sleep(time_left(at, SystemTime::now())).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    let streams_open = Arc::new(StreamCount::default());
    let idle = idle_watch(&streams_open, config.server_idle_timeout);
    tokio::pin!(idle);
    let peer = Arc::new(peer);
    // Streams end with the connection: closing it cancels this child token.
    let streams = cancel.child_token();
    let _close_streams = streams.clone().drop_guard();
    loop {
        let next = tokio::select! {
            next = conn.accept() => next,
            () = cancel.cancelled() => return close(conn, "shutdown").await,
            () = &mut expiry => return close(conn, "the peer's certificate expired").await,
            () = &mut idle => return close(conn, "idle").await,
            () = &mut ping => return Ok(()),
        };
        let (request, respond) = match next {
            None => return Ok(()),
            Some(Ok(stream)) => stream,
            Some(Err(e)) if e.is_reset() => continue,
            Some(Err(e)) => return Err(e),
        };
        let handler = Arc::clone(&handler);
        let peer = Arc::clone(&peer);
        let copy = copy.clone();
        let cancel = streams.clone();
        let open = StreamCount::open(&streams_open);
        tokio::spawn(async move {
            tokio::select! {
                () = serve_stream(request, respond, &*peer, &*handler, &copy) => {}
                () = cancel.cancelled() => debug!("tunnel stream closed by shutdown"),
            }
            drop(open);
        });
    }
}

/// GOAWAY, then drives the connection a moment so the frame goes out; the
/// caller's return closes the streams and the socket.
async fn close<T>(
    mut conn: h2::server::Connection<T, Bytes>,
    why: &'static str,
) -> Result<(), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    debug!(why, "closing tunnel connection");
    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
    let drain = async { while let Some(Ok(_)) = conn.accept().await {} };
    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    Ok(())
}

/// How long a closing connection may take to send its GOAWAY.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Streams open on a server connection, and how many were ever opened.
#[derive(Default)]
struct StreamCount {
    open: AtomicUsize,
    opened: AtomicU64,
}

impl StreamCount {
    fn open(this: &Arc<Self>) -> OpenStream {
        this.open.fetch_add(1, Ordering::AcqRel);
        this.opened.fetch_add(1, Ordering::Relaxed);
        OpenStream(Arc::clone(this))
    }
}

struct OpenStream(Arc<StreamCount>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Completes once no stream was open or opened for a whole `idle` period
/// (checked every `idle`, so within 2×).
async fn idle_watch(count: &StreamCount, idle: Duration) {
    let mut seen = count.opened.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(idle).await;
        let now = count.opened.load(Ordering::Relaxed);
        if now == seen && count.open.load(Ordering::Acquire) == 0 {
            return;
        }
        seen = now;
    }
}

async fn serve_stream<P, H: StreamHandler<P>>(
    request: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: &P,
    handler: &H,
    copy: &CopyConfig,
) {
    if request.method() != Method::CONNECT {
        refuse(&mut respond, StatusCode::METHOD_NOT_ALLOWED);
        return;
    }
    let target = request
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok());
    let Some(target) = target else {
        debug!(uri = %request.uri(), "CONNECT with a bad authority");
        refuse(&mut respond, StatusCode::BAD_REQUEST);
        return;
    };
    let (mut upstream, mut session) = match handler.open(target, peer).await {
        Ok(accepted) => accepted,
        Err(refusal) => {
            debug!(%target, %refusal, "tunnel stream refused");
            refuse(&mut respond, refusal.status);
            return;
        }
    };
    let ok = Response::builder().status(StatusCode::OK).body(());
    let send = match ok.map(|r| respond.send_response(r, false)) {
        Ok(Ok(send)) => send,
        _ => return,
    };
    let mut stream = TunnelStream::new(send, request.into_body(), None);
    let result = copy_bidirectional(&mut stream, &mut upstream, copy, &mut session).await;
    match &result.end {
        CopyEnd::Error(dir, e) => debug!(%target, ?dir, error = %e, "tunnel stream ended"),
        end => {
            debug!(%target, ?end, up = result.a_to_b, down = result.b_to_a, "tunnel stream done")
        }
    }
}

fn refuse(respond: &mut SendResponse<Bytes>, status: StatusCode) {
    match Response::builder().status(status).body(()) {
        Ok(resp) => {
            if let Err(e) = respond.send_response(resp, true) {
                warn!(error = %e, "sending tunnel refusal failed");
            }
        }
        Err(e) => warn!(error = %e, "building tunnel refusal failed"),
    }
}
