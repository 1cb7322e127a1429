//! Client connections from one pod to its endpoints (docs/architecture.md,
//! "L7 routing"): HTTP/1.1 connections kept alive and reused per endpoint,
//! one multiplexed HTTP/2 connection per endpoint. Each connection rides one
//! tunnel stream (or a direct socket), so mTLS and policy apply as at L4.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::debug;

use super::Body;

/// HTTP/1.1 connections kept per endpoint, in use or free; more are closed
/// once their response is read.
const MAX_KEPT_PER_ENDPOINT: usize = 32;

/// A kept HTTP/1.1 connection is closed after this long unused (each holds
/// a tunnel stream and a socket to the app on the destination).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no response from its endpoint.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Opening the transport (tunnel stream or socket) failed.
    #[error("connecting: {0}")]
    Connect(io::Error),
    /// The HTTP handshake on a new transport failed.
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    /// The connection or stream ended before the response head.
    #[error("{0}")]
    Request(hyper::Error),
}

/// A kept HTTP/1.1 connection: in use until its response is read whole
/// (`is_ready`), then free for the next request to its endpoint.
struct Kept {
    sender: http1::SendRequest<Body>,
    /// When its last request was sent.
    used: Instant,
}

struct Inner {
    h1: HashMap<SocketAddr, Vec<Kept>>,
    h2: HashMap<SocketAddr, http2::SendRequest<Body>>,
    idle_timeout: Duration,
    /// A sweeper task runs while any HTTP/1.1 connection is kept.
    sweeping: bool,
}

/// One pod's upstream connections; cheap to clone.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::with_idle_timeout(IDLE_TIMEOUT)
    }
}

impl Upstreams {
    /// Kept HTTP/1.1 connections unused for `idle_timeout` are closed.
    pub fn with_idle_timeout(idle_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                h1: HashMap::new(),
                h2: HashMap::new(),
                idle_timeout,
                sweeping: false,
            })),
        }
    }

    /// Sends `req` to `addr` in the request's own HTTP version, reusing a
    /// connection when one is free, else opening a transport with `open`.
    pub async fn send<F, Fut, T>(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
        open: F,
    ) -> Result<Response<Incoming>, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<T>>,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if req.version() == Version::HTTP_2 {
            self.send_h2(addr, req, open).await
        } else {
            self.send_h1(addr, req, open).await
        }
    }

    async fn send_h2<F, Fut, T>(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
        open: F,
    ) -> Result<Response<Incoming>, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<T>>,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let existing = {
            let mut inner = self.lock();
            inner.h2.retain(|_, s| !s.is_closed());
            inner.h2.get(&addr).cloned()
        };
        let mut sender = match existing {
            Some(s) => s,
            None => {
                let io = open().await.map_err(UpstreamError::Connect)?;
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(hyper_util::rt::TokioTimer::new())
                    .handshake(TokioIo::new(io))
                    .await
                    .map_err(UpstreamError::Handshake)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(%addr, error = %e, "upstream h2 connection ended");
                    }
                });
                self.lock().h2.insert(addr, sender.clone());
                sender
            }
        };
        sender.ready().await.map_err(UpstreamError::Request)?;
        sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Request)
    }

    async fn send_h1<F, Fut, T>(
        &self,
        addr: SocketAddr,
        mut req: Request<Body>,
        open: F,
    ) -> Result<Response<Incoming>, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<T>>,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // A kept connection the endpoint closed meanwhile refuses the request
        // unsent; then it goes on the next one, or a new one.
        while let Some(mut sender) = self.take_free(addr) {
            match sender.try_send_request(req).await {
                Ok(response) => {
                    self.keep(addr, sender);
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
        let io = open().await.map_err(UpstreamError::Connect)?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(%addr, error = %e, "upstream connection ended");
            }
        });
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Request)?;
        self.keep(addr, sender);
        Ok(response)
    }

    /// A kept connection to `addr` whose last response has been read whole.
    /// Closed and expired ones are dropped on the way.
    fn take_free(&self, addr: SocketAddr) -> Option<http1::SendRequest<Body>> {
        let mut inner = self.lock();
        let idle_timeout = inner.idle_timeout;
        let kept = inner.h1.get_mut(&addr)?;
        kept.retain(|k| !k.sender.is_closed() && k.used.elapsed() < idle_timeout);
        let free = kept.iter().position(|k| k.sender.is_ready())?;
        Some(kept.swap_remove(free).sender)
    }

    /// Keeps a connection whose request was just sent: it is in use until
    /// its response has been read whole, then free (`take_free`). No task
    /// waits on it: a busy connection is skipped, an upgraded, closed or
    /// abandoned one never becomes free and is dropped by the sweeper, and a
    /// connection not reused for the idle timeout is dropped (closing it).
    fn keep(&self, addr: SocketAddr, sender: http1::SendRequest<Body>) {
        let mut inner = self.lock();
        let kept = inner.h1.entry(addr).or_default();
        if kept.len() >= MAX_KEPT_PER_ENDPOINT {
            // Dropping the sender closes the connection after this response.
            return;
        }
        kept.push(Kept {
            sender,
            used: Instant::now(),
        });
        if !inner.sweeping {
            inner.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(&self.inner)));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Kept HTTP/1.1 connections and HTTP/2 connections held.
    pub fn held(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.h1.values().map(Vec::len).sum(), inner.h2.len())
    }
}

/// Drops kept HTTP/1.1 connections that closed or went unused for the idle
/// timeout, every quarter of it, until none is kept or the pod's
/// `Upstreams` are gone. One task per pod, not one per request.
async fn sweep(inner: Weak<Mutex<Inner>>) {
    loop {
        let Some(period) = inner.upgrade().map(|i| lock(&i).idle_timeout / 4) else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut inner = lock(&inner);
        let idle_timeout = inner.idle_timeout;
        inner.h1.retain(|_, kept| {
            kept.retain(|k| !k.sender.is_closed() && k.used.elapsed() < idle_timeout);
            !kept.is_empty()
        });
        if inner.h1.is_empty() {
            inner.sweeping = false;
            return;
        }
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A panic while holding the lock cannot leave the maps inconsistent.
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::{TcpListener, TcpStream};

    /// An HTTP/1.1 and h2c server counting the connections it accepted.
    async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn request(version: Version) -> Request<Body> {
        let uri = if version == Version::HTTP_2 {
            "http://svc/x"
        } else {
            "/x"
        };
        let mut req = Request::builder()
            .uri(uri)
            .version(version)
            .body(Empty::new().map_err(|n| match n {}).boxed_unsync())
            .unwrap();
        req.headers_mut().insert("host", "svc".parse().unwrap());
        req
    }

    async fn send(up: &Upstreams, addr: SocketAddr, version: Version) {
        let resp = up
            .send(addr, request(version), || TcpStream::connect(addr))
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
    }

    #[tokio::test]
    async fn http1_connections_are_reused_once_their_response_is_read() {
        let (addr, accepted) = server().await;
        let up = Upstreams::default();
        for _ in 0..5 {
            send(&up, addr, Version::HTTP_11).await;
            // The connection becomes free once its task has seen the body end.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(up.held(), (1, 0));
    }

    #[tokio::test]
    async fn requests_leave_no_task_behind() {
        let (addr, _) = server().await;
        let up = Upstreams::default();
        for _ in 0..50 {
            send(&up, addr, Version::HTTP_11).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The server's accept loop and connection, the client connection's
        // driver and the pod's sweeper: nothing per request.
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert!(alive <= 4, "{alive} tasks alive after 50 requests");
    }

    #[tokio::test]
    async fn unused_http1_connections_are_closed_after_the_idle_timeout() {
        let (addr, accepted) = server().await;
        let up = Upstreams::with_idle_timeout(Duration::from_millis(200));
        send(&up, addr, Version::HTTP_11).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(up.held(), (1, 0));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(up.held(), (0, 0));
        // The next request needs a new connection.
        send(&up, addr, Version::HTTP_11).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_http1_requests_open_connections_side_by_side() {
        let (addr, accepted) = server().await;
        let up = Upstreams::default();
        let mut reqs = Vec::new();
        for _ in 0..3 {
            let up = up.clone();
            reqs.push(tokio::spawn(async move {
                let resp = up
                    .send(addr, request(Version::HTTP_11), || TcpStream::connect(addr))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                resp.into_body().collect().await.unwrap();
            }));
        }
        for r in reqs {
            r.await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn http2_requests_share_one_connection() {
        let (addr, accepted) = server().await;
        let up = Upstreams::default();
        for _ in 0..5 {
            send(&up, addr, Version::HTTP_2).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(up.held(), (0, 1));
    }

    #[tokio::test]
    async fn a_failed_connect_is_a_connect_error() {
        let up = Upstreams::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let err = up
            .send(addr, request(Version::HTTP_11), || TcpStream::connect(addr))
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    }
}
