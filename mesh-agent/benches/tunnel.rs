//! Micro-bench of the data path on loopback, one process: direct TCP versus
//! the full mesh path (app → outbound handler → pooled HTTP/2 tunnel →
//! inbound tunnel handler → server). Prints p50/p99 of a 1 KiB echo, new
//! connection latency, single-stream bulk throughput, and ratios to direct.
//!
//! `cargo bench -p mesh-agent --bench tunnel`. Not the lab bench (no netns,
//! no eBPF, everything shares the same cores), so read ratios, not absolutes.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_agent::proxy::inbound::Admission;
use mesh_agent::proxy::pod::PodConnections;
use mesh_agent::proxy::{
    Dialer, InboundContext, OutboundContext, OutboundTarget, Pool, ProxyConfig, Refusal, Route,
    Shared, run_inbound_tunnel, run_outbound,
};
use mesh_agent::telemetry::{ConnectionLabels, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const MSG: usize = 1024;
const ROUNDS: usize = 5000;
const CONNS: usize = 500;
const BULK: usize = 1024 * 1024 * 1024;

struct Loopback;
impl Dialer for Loopback {
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }
}

struct Out {
    original: Mutex<HashMap<u16, SocketAddr>>,
    tunnel: SocketAddr,
}
impl OutboundContext for Out {
    type PoolKey = ();
    type Dialer = Loopback;
    type TunnelIo = TcpStream;
    fn original_destination(&self, peer: SocketAddr) -> Option<SocketAddr> {
        self.original.lock().ok()?.remove(&peer.port())
    }
    fn resolve(&self, _: SocketAddr, original: SocketAddr) -> Route<()> {
        Route {
            target: OutboundTarget::Tunnel {
                tunnel_addr: self.tunnel,
                target: original,
                pool_key: (),
            },
            labels: ConnectionLabels::default(),
        }
    }
    fn dialer(&self) -> &Loopback {
        &Loopback
    }
    async fn connect_tunnel(&self, addr: SocketAddr, _: &()) -> io::Result<TcpStream> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

struct In;
impl InboundContext for In {
    type Dialer = Loopback;
    type TunnelIo = TcpStream;
    type Peer = SocketAddr;
    fn dialer(&self) -> &Loopback {
        &Loopback
    }
    async fn accept_tunnel(
        &self,
        s: TcpStream,
        p: SocketAddr,
    ) -> io::Result<(TcpStream, SocketAddr)> {
        s.set_nodelay(true)?;
        Ok((s, p))
    }
    fn authorize(&self, _: &SocketAddr, _: SocketAddr) -> Result<Admission, Refusal> {
        Ok(unreviewed())
    }
    fn inbound_plaintext_allowed(
        &self,
        _: SocketAddr,
        _: SocketAddr,
    ) -> Result<Admission, Refusal> {
        Ok(unreviewed())
    }
}

fn unreviewed() -> Admission {
    Admission {
        labels: ConnectionLabels::default(),
        review: None,
    }
}

/// Echoes; or, after a first byte of `b'B'`, swallows everything and answers
/// one byte at EOF (bulk mode).
async fn server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                if n > 0 && buf[0] == b'B' {
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = s.write_all(b"k").await;
                    return;
                }
                let mut n = n;
                while n > 0 {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    n = s.read(&mut buf).await.unwrap_or(0);
                }
            });
        }
    });
    addr
}

/// Starts both agents; returns a connector for "an app in the source pod".
async fn mesh(
    config: ProxyConfig,
) -> impl Fn(SocketAddr) -> std::pin::Pin<Box<dyn Future<Output = TcpStream>>> {
    let shared = Shared {
        metrics: Arc::new(Metrics::new().expect("metrics")),
        config: Arc::new(config),
    };
    let tl = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tunnel = tl.local_addr().expect("addr");
    tokio::spawn(run_inbound_tunnel(
        tl,
        Arc::new(In),
        shared.clone(),
        PodConnections::new("dst", 1 << 20),
    ));
    let ol = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let outbound = ol.local_addr().expect("addr");
    let ctx = Arc::new(Out {
        original: Mutex::new(HashMap::new()),
        tunnel,
    });
    let pool = Pool::new(shared.config.tunnel.clone(), None);
    tokio::spawn(run_outbound(
        ol,
        Arc::clone(&ctx),
        pool,
        shared,
        PodConnections::new("src", 1 << 20),
    ));
    move |dst: SocketAddr| {
        let ctx = Arc::clone(&ctx);
        Box::pin(async move {
            let sock = TcpSocket::new_v4().expect("socket");
            sock.bind("127.0.0.1:0".parse().expect("addr"))
                .expect("bind");
            let port = sock.local_addr().expect("addr").port();
            ctx.original.lock().expect("lock").insert(port, dst);
            let s = sock.connect(outbound).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            s
        })
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

async fn echo_latency(mut s: TcpStream) -> Vec<Duration> {
    let msg = [7u8; MSG];
    let mut back = [0u8; MSG];
    let mut out = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        s.write_all(&msg).await.expect("write");
        s.read_exact(&mut back).await.expect("read");
        out.push(t.elapsed());
    }
    out
}

/// Time from connect to the first echoed byte, per new connection.
async fn connect_latency<F: AsyncFnMut() -> TcpStream>(mut connect: F) -> Vec<Duration> {
    let mut out = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let t = Instant::now();
        let mut s = connect().await;
        s.write_all(b"x").await.expect("write");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("read");
        out.push(t.elapsed());
    }
    out
}

/// Single-stream upload throughput in Gbit/s.
async fn bulk(mut s: TcpStream) -> f64 {
    let chunk = vec![b'B'; 256 * 1024];
    let t = Instant::now();
    let mut sent = 0;
    while sent < BULK {
        s.write_all(&chunk).await.expect("write");
        sent += chunk.len();
    }
    s.shutdown().await.expect("shutdown");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("ack");
    (sent as f64 * 8.0) / t.elapsed().as_secs_f64() / 1e9
}

fn row(name: &str, direct: Duration, mesh: Duration) {
    println!(
        "{name:<28} direct {:>9.1?}  mesh {:>9.1?}  ratio {:.2}x",
        direct,
        mesh,
        mesh.as_secs_f64() / direct.as_secs_f64()
    );
}

/// `WEFT_BENCH_BUF` (copy buffer bytes), `WEFT_BENCH_FRAME` (max HTTP/2 frame),
/// `WEFT_BENCH_WINDOW` (stream window; connection window is 4×) for sweeps.
fn config_from_env() -> ProxyConfig {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let mut c = ProxyConfig::default();
    if let Some(b) = var("WEFT_BENCH_BUF") {
        c.copy.buffer_size = b;
    }
    if let Some(f) = var("WEFT_BENCH_FRAME") {
        c.tunnel.max_frame_size = f as u32;
    }
    if let Some(w) = var("WEFT_BENCH_WINDOW") {
        c.tunnel.stream_window = w as u32;
        c.tunnel.connection_window = 4 * w as u32;
    }
    println!(
        "copy buffer {} KiB, max frame {} KiB, stream window {} KiB",
        c.copy.buffer_size >> 10,
        c.tunnel.max_frame_size >> 10,
        c.tunnel.stream_window >> 10
    );
    c
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let srv = server().await;
        let via = mesh(config_from_env()).await;

        let mut d = echo_latency(TcpStream::connect(srv).await.expect("connect")).await;
        let mut m = echo_latency(via(srv).await).await;
        println!("1 KiB echo, {ROUNDS} rounds on one connection:");
        row("  p50", pct(&mut d, 0.5), pct(&mut m, 0.5));
        row("  p99", pct(&mut d, 0.99), pct(&mut m, 0.99));

        let mut d = connect_latency(async || TcpStream::connect(srv).await.expect("connect")).await;
        let mut m = connect_latency(async || via(srv).await).await;
        println!("new connection + 1 byte echo, {CONNS} sequential (pooled tunnel):");
        row("  p50", pct(&mut d, 0.5), pct(&mut m, 0.5));
        row("  p99", pct(&mut d, 0.99), pct(&mut m, 0.99));

        let d = bulk(TcpStream::connect(srv).await.expect("connect")).await;
        let m = bulk(via(srv).await).await;
        println!(
            "bulk upload {} MiB, one stream: direct {d:.2} Gbit/s  mesh {m:.2} Gbit/s  ratio {:.0}%",
            BULK >> 20,
            100.0 * m / d
        );
    });
}
