use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::proxy::copy::{CopyConfig, CopyObserver, Direction};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Echoes every connection until EOF, then closes its write side.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

#[derive(Default)]
struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

struct Session(Arc<Counters>);

impl CopyObserver for Session {
    fn on_bytes(&mut self, d: Direction, n: u64) {
        match d {
            Direction::AToB => self.0.bytes_in.fetch_add(n, Ordering::Relaxed),
            Direction::BToA => self.0.bytes_out.fetch_add(n, Ordering::Relaxed),
        };
    }
}

/// Connects to the target on loopback; ports 1 and 2 are refused by "policy"
/// and "unreachable" respectively.
struct Handler(Arc<Counters>);

impl StreamHandler<SocketAddr> for Handler {
    type Upstream = TcpStream;
    type Session = Session;

    async fn open(
        &self,
        target: SocketAddr,
        _peer: &SocketAddr,
    ) -> Result<(TcpStream, Session), Refusal> {
        match target.port() {
            1 => Err(Refusal::forbidden("test policy")),
            2 => Err(Refusal::unavailable("test unreachable")),
            _ => TcpStream::connect(target)
                .await
                .map(|s| (s, Session(Arc::clone(&self.0))))
                .map_err(|e| Refusal::unavailable(e.to_string())),
        }
    }
}

struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
}

async fn tunnel_server(config: TunnelConfig) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(Counters::default());
    let handler = Arc::new(Handler(Arc::clone(&counters)));
    let cancel = CancellationToken::new();
    let (acc, op, token) = (Arc::clone(&accepted), Arc::clone(&open), cancel.clone());
    tokio::spawn(async move {
        while let Ok((s, peer)) = l.accept().await {
            acc.fetch_add(1, Ordering::SeqCst);
            op.fetch_add(1, Ordering::SeqCst);
            let (handler, config, token, op) = (
                Arc::clone(&handler),
                config.clone(),
                token.clone(),
                Arc::clone(&op),
            );
            tokio::spawn(async move {
                let copy = CopyConfig::default();
                let _ = serve_connection(s, peer, handler, &config, &copy, token).await;
                op.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Server {
        addr,
        accepted,
        open,
        counters,
        cancel,
    }
}

/// A pool plus a dialler that counts its calls.
fn pool_to(server: SocketAddr, config: TunnelConfig) -> (Pool<&'static str>, Dialer) {
    (
        Pool::new(config, None),
        Dialer {
            server,
            dials: Arc::new(AtomicUsize::new(0)),
        },
    )
}

#[derive(Clone)]
struct Dialer {
    server: SocketAddr,
    dials: Arc<AtomicUsize>,
}

impl Dialer {
    async fn dial(&self) -> std::io::Result<TcpStream> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        TcpStream::connect(self.server).await
    }
}

fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn roundtrip(mut s: TunnelStream, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(&mut s);
    let write = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(write, read);
    got
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f).await.expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_share_one_connection() {
    let echo = echo_server().await;
    let server = tunnel_server(TunnelConfig::default()).await;
    let (pool, dialer) = pool_to(server.addr, TunnelConfig::default());
    let mut tasks = Vec::new();
    for i in 0..64u8 {
        let (pool, dialer) = (pool.clone(), dialer.clone());
        tasks.push(tokio::spawn(async move {
            let s = pool.connect(&"a", echo, || dialer.dial()).await.unwrap();
            let data = payload(i, 64 * 1024 + i as usize);
            let got = roundtrip(s, &data).await;
            assert!(got == data, "stream {i} corrupted");
        }));
    }
    for t in tasks {
        within(t).await.unwrap();
    }
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 1);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.connection_count(), 1);
    let expected: u64 = (0..64u64).map(|i| 64 * 1024 + i).sum();
    assert_eq!(server.counters.bytes_in.load(Ordering::SeqCst), expected);
    assert_eq!(server.counters.bytes_out.load(Ordering::SeqCst), expected);
}

#[tokio::test]
async fn large_transfer_through_tunnel() {
    let echo = echo_server().await;
    let server = tunnel_server(TunnelConfig::default()).await;
    let (pool, dialer) = pool_to(server.addr, TunnelConfig::default());
    let s = within(pool.connect(&"a", echo, || dialer.dial()))
        .await
        .unwrap();
    let data = payload(7, 24 * 1024 * 1024 + 5);
    let got = within(roundtrip(s, &data)).await;
    assert_eq!(got.len(), data.len());
    assert!(got == data);
}

#[tokio::test]
async fn full_connection_makes_the_pool_dial_another() {
    let echo = echo_server().await;
    let config = TunnelConfig {
        max_streams_per_connection: 2,
        ..TunnelConfig::default()
    };
    let server = tunnel_server(config.clone()).await;
    let (pool, dialer) = pool_to(server.addr, config);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            within(pool.connect(&"a", echo, || dialer.dial()))
                .await
                .unwrap(),
        );
    }
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 2);
    // A different key never shares a connection.
    held.push(
        within(pool.connect(&"b", echo, || dialer.dial()))
            .await
            .unwrap(),
    );
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 3);
    // Freed slots are reused.
    held.clear();
    let s = within(pool.connect(&"a", echo, || dialer.dial()))
        .await
        .unwrap();
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 3);
    assert_eq!(within(roundtrip(s, b"still works")).await, b"still works");
}

#[tokio::test]
async fn refusals_carry_the_status() {
    let server = tunnel_server(TunnelConfig::default()).await;
    let (pool, dialer) = pool_to(server.addr, TunnelConfig::default());
    let forbidden = "127.0.0.1:1".parse().unwrap();
    let unreachable = "127.0.0.1:2".parse().unwrap();
    let e = within(pool.connect(&"a", forbidden, || dialer.dial()))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::FORBIDDEN), "{e}");
    let e = within(pool.connect(&"a", unreachable, || dialer.dial()))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{e}");
    // Refused streams do not cost the connection.
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 1);
}

/// Sends a raw request the typed client cannot produce.
async fn raw_status(server: SocketAddr, request: http::Request<()>) -> StatusCode {
    let tcp = TcpStream::connect(server).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (resp, _send) = client.send_request(request, false).unwrap();
    resp.await.unwrap().status()
}

#[tokio::test]
async fn bad_requests_are_rejected() {
    let server = tunnel_server(TunnelConfig::default()).await;
    let get = http::Request::get("http://127.0.0.1:80/").body(()).unwrap();
    assert_eq!(
        within(raw_status(server.addr, get)).await,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let bad = http::Request::connect("not-an-ip:80").body(()).unwrap();
    assert_eq!(
        within(raw_status(server.addr, bad)).await,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn idle_connections_close_and_are_redialled() {
    let echo = echo_server().await;
    let config = TunnelConfig {
        pool_idle_timeout: Duration::from_millis(100),
        ..TunnelConfig::default()
    };
    let server = tunnel_server(config.clone()).await;
    let (pool, dialer) = pool_to(server.addr, config);
    let s = within(pool.connect(&"a", echo, || dialer.dial()))
        .await
        .unwrap();
    // An open stream keeps the connection, however long it is quiet.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pool.connection_count(), 1);
    assert_eq!(within(roundtrip(s, b"hi")).await, b"hi");
    // Once unused, it closes on both ends.
    within(async {
        while pool.connection_count() > 0 || server.open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let s = within(pool.connect(&"a", echo, || dialer.dial()))
        .await
        .unwrap();
    assert_eq!(within(roundtrip(s, b"again")).await, b"again");
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_first_requests_share_a_failed_dial() {
    let pool: Pool<&str> = Pool::new(TunnelConfig::default(), None);
    let dials = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (pool, dials, started, release) = (
            pool.clone(),
            Arc::clone(&dials),
            Arc::clone(&started),
            Arc::clone(&release),
        );
        tasks.push(tokio::spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            pool.connect(&"k", target, || {
                let (dials, release) = (Arc::clone(&dials), Arc::clone(&release));
                async move {
                    dials.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    Err::<TcpStream, _>(std::io::Error::other("dial refused"))
                }
            })
            .await
        }));
    }
    // Single-threaded runtime: once every task has started it is parked on the dial.
    within(async {
        while started.load(Ordering::SeqCst) < 10 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    tokio::task::yield_now().await;
    release.notify_waiters();
    for t in tasks {
        let e = within(t).await.unwrap().unwrap_err();
        assert!(matches!(e, TunnelError::Dial(_)), "{e}");
    }
    assert_eq!(dials.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cancelling_the_server_closes_its_streams() {
    let echo = echo_server().await;
    let server = tunnel_server(TunnelConfig::default()).await;
    let (pool, dialer) = pool_to(server.addr, TunnelConfig::default());
    let mut s = within(pool.connect(&"a", echo, || dialer.dial()))
        .await
        .unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    within(s.read_exact(&mut buf)).await.unwrap();
    server.cancel.cancel();
    // The stream ends (EOF or error), it does not hang.
    let mut rest = Vec::new();
    let _ = within(s.read_to_end(&mut rest)).await;
    within(async {
        while pool.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn keepalive_closes_a_connection_to_a_silent_peer() {
    // Accepts TCP and never speaks HTTP/2: no SETTINGS, no PING answer.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let config = TunnelConfig {
        keepalive_interval: Some(Duration::from_millis(100)),
        keepalive_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(600),
        ..TunnelConfig::default()
    };
    let gauge = prometheus::IntGauge::new("g", "g").unwrap();
    let pool: Pool<()> = Pool::new(config, Some(gauge.clone()));
    let target = "127.0.0.1:9".parse().unwrap();
    // Without keepalive this would wait for the (huge) connect timeout.
    let e = within(pool.connect(&(), target, || TcpStream::connect(addr)))
        .await
        .unwrap_err();
    assert!(!matches!(e, TunnelError::Timeout), "{e}");
    within(async {
        while pool.connection_count() > 0 || gauge.get() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_closed_pool_ends_its_idle_connections_at_once_and_hands_out_none() {
    let echo = echo_server().await;
    // Idle connections would stay for the default five minutes.
    let config = TunnelConfig::default();
    let server = tunnel_server(config.clone()).await;
    let (pool, dialer) = pool_to(server.addr, config);
    for key in ["a", "b"] {
        let s = within(pool.connect(&key, echo, || dialer.dial()))
            .await
            .unwrap();
        assert_eq!(within(roundtrip(s, b"hi")).await, b"hi");
    }
    assert_eq!(server.open.load(Ordering::SeqCst), 2);
    pool.close_all();
    within(async {
        while server.open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(pool.connection_count(), 0);
    let refused = within(pool.connect(&"a", echo, || dialer.dial())).await;
    assert!(matches!(refused, Err(TunnelError::Unavailable)));
    assert_eq!(
        dialer.dials.load(Ordering::SeqCst),
        2,
        "no dial after closing"
    );
}

#[tokio::test]
async fn retired_connections_finish_their_streams_then_close() {
    let echo = echo_server().await;
    let config = TunnelConfig {
        max_connection_streams: Some(1),
        ..TunnelConfig::default()
    };
    let server = tunnel_server(config.clone()).await;
    let (pool, dialer) = pool_to(server.addr, config);
    let first = within(pool.connect(&"a", echo, || dialer.dial()))
        .await
        .unwrap();
    // The first connection carried its one stream: the next needs another.
    let second = within(pool.connect(&"a", echo, || dialer.dial()))
        .await
        .unwrap();
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 2);
    // A retired connection's open stream still works…
    assert_eq!(within(roundtrip(first, b"old")).await, b"old");
    assert_eq!(within(roundtrip(second, b"new")).await, b"new");
    // …and once its streams are done, it closes on both ends.
    within(async {
        while pool.connection_count() > 0 || server.open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn connections_retire_at_their_age() {
    let echo = echo_server().await;
    let config = TunnelConfig {
        max_connection_age: Some(Duration::from_millis(200)),
        ..TunnelConfig::default()
    };
    let server = tunnel_server(config.clone()).await;
    let (pool, dialer) = pool_to(server.addr, config);
    let s = within(pool.connect(&"a", echo, || dialer.dial()))
        .await
        .unwrap();
    assert_eq!(within(roundtrip(s, b"young")).await, b"young");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = within(pool.connect(&"a", echo, || dialer.dial()))
        .await
        .unwrap();
    assert_eq!(
        dialer.dials.load(Ordering::SeqCst),
        2,
        "an old connection is not reused"
    );
    assert_eq!(within(roundtrip(s, b"renewed")).await, b"renewed");
}

#[tokio::test]
async fn early_bytes_reach_the_upstream_ahead_of_the_rest() {
    let server = tunnel_server(TunnelConfig::default()).await;
    let (pool, dialer) = pool_to(server.addr, TunnelConfig::default());
    let echo = echo_server().await;
    let early = bytes::Bytes::from_static(b"GET / HTTP/1.1\r\n");
    let mut s = within(pool.connect_early(&"a", echo, early.clone(), || dialer.dial()))
        .await
        .unwrap();
    s.write_all(b"\r\n").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    within(s.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(server.counters.bytes_in.load(Ordering::SeqCst), 18);
}

#[tokio::test]
async fn early_bytes_of_a_refused_stream_go_nowhere() {
    let server = tunnel_server(TunnelConfig::default()).await;
    let (pool, dialer) = pool_to(server.addr, TunnelConfig::default());
    let forbidden = "127.0.0.1:1".parse().unwrap();
    let early = bytes::Bytes::from_static(b"secret");
    let e = within(pool.connect_early(&"a", forbidden, early, || dialer.dial()))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::FORBIDDEN), "{e}");
    assert_eq!(server.counters.bytes_in.load(Ordering::SeqCst), 0);
    // The connection survives the refused stream and its unread data.
    let echo = echo_server().await;
    let s = within(pool.connect(&"a", echo, || dialer.dial()))
        .await
        .unwrap();
    assert_eq!(within(roundtrip(s, b"next")).await, b"next");
    assert_eq!(dialer.dials.load(Ordering::SeqCst), 1);
}

/// Finishes a dial only once `gate` dials have started, so dials that queued
/// behind each other never finish.
#[derive(Clone)]
struct GatedDialer {
    server: SocketAddr,
    started: Arc<AtomicUsize>,
    changed: Arc<tokio::sync::Notify>,
    gate: usize,
}

impl GatedDialer {
    async fn dial(&self) -> std::io::Result<TcpStream> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        let all_started = async {
            loop {
                let notified = self.changed.notified();
                if self.started.load(Ordering::SeqCst) >= self.gate {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), all_started)
            .await
            .map_err(|_| std::io::Error::other("dials ran one after another"))?;
        TcpStream::connect(self.server).await
    }
}

#[tokio::test]
async fn waiters_beyond_one_connection_dial_in_parallel() {
    let echo = echo_server().await;
    let config = TunnelConfig {
        max_streams_per_connection: 2,
        ..TunnelConfig::default()
    };
    let server = tunnel_server(config.clone()).await;
    let pool = Pool::new(config, None);
    let dialer = GatedDialer {
        server: server.addr,
        started: Arc::new(AtomicUsize::new(0)),
        changed: Arc::new(tokio::sync::Notify::new()),
        gate: 3,
    };
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (pool, dialer) = (pool.clone(), dialer.clone());
            tokio::spawn(async move { pool.connect(&"a", echo, || dialer.dial()).await })
        })
        .collect();
    let mut streams = Vec::new();
    for t in tasks {
        streams.push(within(t).await.unwrap().expect("stream"));
    }
    // Six waiters, two streams a connection: three dials, all at once.
    assert_eq!(dialer.started.load(Ordering::SeqCst), 3);
    assert_eq!(pool.connection_count(), 3);
}

/// A tunnel server for one connection, served until `expires`.
async fn expiring_server(
    config: TunnelConfig,
    expires: Option<std::time::SystemTime>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let handler = Arc::new(Handler(Arc::new(Counters::default())));
    let served = tokio::spawn(async move {
        let (s, peer) = l.accept().await.unwrap();
        let copy = CopyConfig::default();
        let cancel = CancellationToken::new();
        let _ = serve_connection_until(s, peer, handler, &config, &copy, cancel, expires).await;
    });
    (addr, served)
}

fn patient_client() -> TunnelConfig {
    TunnelConfig {
        pool_idle_timeout: Duration::from_secs(3600),
        max_connection_age: None,
        ..TunnelConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_closes_a_connection_that_carries_no_stream() {
    let echo = echo_server().await;
    let config = TunnelConfig {
        server_idle_timeout: Duration::from_millis(200),
        ..TunnelConfig::default()
    };
    let (addr, served) = expiring_server(config, None).await;
    let (pool, dialer) = pool_to(addr, patient_client());
    // In use for longer than the idle timeout: not closed meanwhile.
    let stream = within(pool.connect(&"k", echo, || dialer.dial()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(roundtrip(stream, b"busy").await, b"busy");
    assert!(!served.is_finished(), "closed while a stream was open");
    // Then idle: closed by the server, and the pool lets the connection go.
    within(served).await.unwrap();
    within(async {
        while pool.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The pool copes: the next stream dials a new connection.
    let (addr2, _served2) = expiring_server(TunnelConfig::default(), None).await;
    let (pool2, dialer2) = pool_to(addr2, patient_client());
    let stream = within(pool2.connect(&"k", echo, || dialer2.dial()))
        .await
        .unwrap();
    assert_eq!(roundtrip(stream, b"again").await, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_closes_a_connection_when_its_peer_certificate_expires() {
    let echo = echo_server().await;
    let expires = std::time::SystemTime::now() + Duration::from_millis(500);
    let (addr, served) = expiring_server(TunnelConfig::default(), Some(expires)).await;
    let (pool, dialer) = pool_to(addr, patient_client());
    let mut stream = within(pool.connect(&"k", echo, || dialer.dial()))
        .await
        .unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    stream.read_exact(&mut one).await.unwrap();
    // The stream stays open; the connection ends anyway, at notAfter.
    within(served).await.unwrap();
    assert!(std::time::SystemTime::now() >= expires);
    let mut rest = Vec::new();
    let read = within(stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_err() || rest.is_empty(),
        "the stream ended with the connection"
    );
}

/// A transport whose identities are valid until a given time.
struct Expiring {
    inner: TcpStream,
    until: std::time::SystemTime,
}

impl PeerCertificate for Expiring {
    fn peer_not_after(&self) -> Option<std::time::SystemTime> {
        Some(self.until)
    }
}

impl tokio::io::AsyncRead for Expiring {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Expiring {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_stops_opening_streams_ahead_of_the_certificates_expiry() {
    // Before: the pool kept opening streams on a connection until its age
    // limit, past the notAfter at which the server cuts it, so those streams
    // were reset (a connection failure during certificate renewal).
    let echo = echo_server().await;
    let until = std::time::SystemTime::now() + Duration::from_millis(800);
    let (addr, _served) = expiring_server(TunnelConfig::default(), Some(until)).await;
    let (pool, dialer) = pool_to(addr, patient_client());
    // The replacement goes to a server that lives on: the first one stops
    // listening at `until`, and a dial that a loaded machine delays past it
    // would be refused and dialled again.
    let (replacement, _served2) = expiring_server(TunnelConfig::default(), None).await;
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    let dial = || async {
        if dialer.dials.load(Ordering::SeqCst) == 0 {
            let inner = dialer.dial().await?;
            return Ok(Expiring { inner, until });
        }
        dialer.dials.fetch_add(1, Ordering::SeqCst);
        let inner = TcpStream::connect(replacement).await?;
        Ok(Expiring {
            inner,
            until: later,
        })
    };
    let stream = within(pool.connect(&"k", echo, dial)).await.unwrap();
    assert_eq!(roundtrip(stream, b"early").await, b"early");
    // Past the retirement point (a quarter of the 800 ms left ahead of it).
    tokio::time::sleep(Duration::from_millis(650)).await;
    let stream = within(pool.connect(&"k", echo, dial)).await.unwrap();
    assert_eq!(roundtrip(stream, b"late").await, b"late");
    assert_eq!(
        dialer.dials.load(Ordering::SeqCst),
        2,
        "a new connection is dialled instead of a stream on the expiring one"
    );
}
