//! Client connections from one pod to its endpoints (docs/architecture.md,
//! "L7 routing"): HTTP/1.1 connections kept alive and reused per endpoint,
//! one multiplexed HTTP/2 connection per endpoint. Each connection rides one
//! tunnel stream (or a direct socket), so mTLS and policy apply as at L4.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::debug;

use super::Body;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed.
const MAX_IDLE_PER_ENDPOINT: usize = 32;

/// An idle HTTP/1.1 connection is closed after this long unused (each holds
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

struct Idle {
    id: u64,
    sender: http1::SendRequest<Body>,
}

#[derive(Default)]
struct Inner {
    idle: HashMap<SocketAddr, Vec<Idle>>,
    h2: HashMap<SocketAddr, http2::SendRequest<Body>>,
    next_id: u64,
}

/// One pod's upstream connections; cheap to clone.
#[derive(Clone, Default)]
pub struct Upstreams {
    inner: Arc<Mutex<Inner>>,
}

impl Upstreams {
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
        // An idle connection the endpoint closed meanwhile refuses the request
        // unsent; then it goes on the next one, or a new one.
        while let Some(mut sender) = self.take_idle(addr) {
            match sender.try_send_request(req).await {
                Ok(response) => {
                    self.give_back_when_ready(addr, sender);
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
        self.give_back_when_ready(addr, sender);
        Ok(response)
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<http1::SendRequest<Body>> {
        let mut inner = self.lock();
        let idle = inner.idle.get_mut(&addr)?;
        while let Some(i) = idle.pop() {
            if i.sender.is_ready() {
                return Some(i.sender);
            }
        }
        None
    }

    /// Once the response has been read whole, the connection is free again:
    /// it goes back to the idle set, and is closed if still there after
    /// `IDLE_TIMEOUT`. A connection that is not reusable (upgraded, closed,
    /// its response abandoned) never becomes ready and is dropped.
    fn give_back_when_ready(&self, addr: SocketAddr, mut sender: http1::SendRequest<Body>) {
        let this = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let id = {
                let mut inner = this.lock();
                inner.next_id += 1;
                let id = inner.next_id;
                let idle = inner.idle.entry(addr).or_default();
                if idle.len() >= MAX_IDLE_PER_ENDPOINT {
                    return;
                }
                idle.push(Idle { id, sender });
                id
            };
            tokio::time::sleep_until(Instant::now() + IDLE_TIMEOUT).await;
            let mut inner = this.lock();
            if let Some(idle) = inner.idle.get_mut(&addr) {
                idle.retain(|i| i.id != id);
                if idle.is_empty() {
                    inner.idle.remove(&addr);
                }
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Idle HTTP/1.1 connections and HTTP/2 connections held.
    pub fn held(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.idle.values().map(Vec::len).sum(), inner.h2.len())
    }
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
            // The connection returns to the idle set from a task.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(up.held(), (1, 0));
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
