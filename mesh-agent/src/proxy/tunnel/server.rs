//! The tunnel server: accepts HTTP/2 on a transport, and for each `CONNECT`
//! asks a handler for an upstream, answers 200 and bridges the two with `copy`,
//! or answers the handler's refusal status.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

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
    let handshake = h2::server::Builder::new()
        .initial_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .max_frame_size(config.max_frame_size)
        .max_send_buffer_size(config.max_send_buffer)
        .max_concurrent_streams(config.max_concurrent_streams)
        .handshake::<_, Bytes>(io);
    let mut conn = tokio::select! {
        res = tokio::time::timeout(config.connect_timeout, handshake) => match res {
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
    let peer = Arc::new(peer);
    // Streams end with the connection: closing it cancels this child token.
    let streams = cancel.child_token();
    let _close_streams = streams.clone().drop_guard();
    loop {
        let next = tokio::select! {
            next = conn.accept() => next,
            () = cancel.cancelled() => {
                conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                return Ok(());
            }
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
        tokio::spawn(async move {
            tokio::select! {
                () = serve_stream(request, respond, &*peer, &*handler, &copy) => {}
                () = cancel.cancelled() => debug!("tunnel stream closed by shutdown"),
            }
        });
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
