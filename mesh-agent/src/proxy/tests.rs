//! The handlers end to end on loopback, with fake agent contexts.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::inbound::Admission;
use super::*;
use crate::policy::{AdmittedConnections, ConnectionAttrs, Decision, Inbound, Verdict};
use crate::telemetry::{ConnectionLabels, Reporter};

const TIMEOUT: Duration = Duration::from_secs(20);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f).await.expect("timed out")
}

/// Echoes until EOF, then adds one `!`, so the two directions differ in size.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.write_all(b"!").await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Connects on loopback, optionally rewriting the destination (as the
/// agent's dialer reaches the app at an address of its own choosing).
#[derive(Default)]
struct FakeDialer {
    rewrite: HashMap<SocketAddr, SocketAddr>,
    /// A policy change denying everything here lands while dialling.
    revoke_while_dialling: Option<AdmittedConnections>,
}

impl Dialer for FakeDialer {
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        if let Some(admitted) = &self.revoke_while_dialling {
            admitted.review(|_| Decision::from(Verdict::NotAllowed));
        }
        TcpStream::connect(self.rewrite.get(&addr).copied().unwrap_or(addr)).await
    }
}

fn labels(reporter: Reporter, dst: &str) -> ConnectionLabels {
    ConnectionLabels {
        reporter,
        source_workload: "client".into(),
        destination_workload: dst.into(),
        ..ConnectionLabels::default()
    }
}

/// Original destinations by the client's port; routes by original destination.
#[derive(Default)]
struct FakeOutbound {
    original: Mutex<HashMap<u16, SocketAddr>>,
    routes: HashMap<SocketAddr, OutboundTarget<String>>,
    dialer: FakeDialer,
}

impl OutboundContext for FakeOutbound {
    type PoolKey = String;
    type Dialer = FakeDialer;
    type TunnelIo = TcpStream;

    fn original_destination(&self, peer: SocketAddr) -> Option<SocketAddr> {
        self.original.lock().unwrap().get(&peer.port()).copied()
    }
    fn resolve(&self, _peer: SocketAddr, original: SocketAddr) -> Route<String> {
        let target = self
            .routes
            .get(&original)
            .cloned()
            .unwrap_or_else(|| OutboundTarget::Refuse("no route".into()));
        let dst = match &target {
            OutboundTarget::Tunnel { pool_key, .. } => pool_key.clone(),
            _ => "direct".into(),
        };
        Route {
            target,
            labels: labels(Reporter::Source, &dst),
        }
    }
    fn dialer(&self) -> &FakeDialer {
        &self.dialer
    }
    async fn connect_tunnel(&self, addr: SocketAddr, _key: &String) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }
}

/// Allows everything except targets on port 1, and plaintext when
/// `deny_plaintext`; keeps what it admits under review in `admitted`.
#[derive(Default)]
struct FakeInbound {
    dialer: FakeDialer,
    deny_plaintext: bool,
    admitted: AdmittedConnections,
}

impl FakeInbound {
    fn admit(&self, conn: ConnectionAttrs, labels: ConnectionLabels) -> Admission {
        let allow = |_: &Inbound| Decision::from(Verdict::AllowedNoPolicy);
        let (guard, _) = self
            .admitted
            .admit(&Inbound::plaintext(conn, false), allow)
            .expect("allowed");
        Admission {
            labels,
            review: Some(guard),
        }
    }
}

impl InboundContext for FakeInbound {
    type Dialer = FakeDialer;
    type TunnelIo = TcpStream;
    type Peer = SocketAddr;

    fn dialer(&self) -> &FakeDialer {
        &self.dialer
    }
    async fn accept_tunnel(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<(TcpStream, SocketAddr)> {
        Ok((stream, peer))
    }
    fn authorize(&self, peer: &SocketAddr, target: SocketAddr) -> Result<Admission, Refusal> {
        if target.port() == 1 {
            return Err(Refusal::forbidden("test policy"));
        }
        let conn = ConnectionAttrs::plaintext(peer.ip(), target.port());
        Ok(self.admit(conn, labels(Reporter::Destination, "server")))
    }
    fn inbound_plaintext_allowed(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Admission, Refusal> {
        if self.deny_plaintext {
            return Err(Refusal::forbidden("strict"));
        }
        let conn = ConnectionAttrs::plaintext(peer.ip(), local.port());
        Ok(self.admit(conn, labels(Reporter::Destination, "plain")))
    }
}

fn shared() -> Shared {
    Shared {
        metrics: Arc::new(Metrics::new().unwrap()),
        config: Arc::new(ProxyConfig::default()),
    }
}

fn counter(shared: &Shared, name: &str, parts: &[&str]) -> u64 {
    let text = String::from_utf8(shared.metrics.render().unwrap()).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let ok = tokio::time::timeout(TIMEOUT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "never happened: {what}");
}

/// An agent with an outbound listener for pod "src" and a tunnel listener for
/// pod "dst", plus the addresses the fake original destinations route to.
struct Agent {
    shared: Shared,
    outbound: SocketAddr,
    ctx: Arc<FakeOutbound>,
    src: PodConnections,
    run: tokio::task::JoinHandle<()>,
}

const DIRECT: &str = "10.0.0.1:80";
const TUNNEL: &str = "10.0.0.2:80";
const TUNNEL_DENIED: &str = "10.0.0.3:80";
const DIRECT_DEAD: &str = "10.0.0.4:80";

async fn agent(max_per_pod: usize) -> Agent {
    let shared = shared();
    let echo = echo_server().await;
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let tunnel_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tunnel_addr = tunnel_l.local_addr().unwrap();
    let dst = PodConnections::new("dst", DEFAULT_MAX_CONNECTIONS_PER_POD);
    tokio::spawn(run_inbound_tunnel(
        tunnel_l,
        Arc::new(FakeInbound::default()),
        shared.clone(),
        dst,
    ));
    let tunnel = |target| OutboundTarget::Tunnel {
        tunnel_addr,
        target,
        pool_key: "server".to_string(),
    };
    let routes = HashMap::from([
        (DIRECT.parse().unwrap(), OutboundTarget::Direct(echo)),
        (TUNNEL.parse().unwrap(), tunnel(echo)),
        (
            TUNNEL_DENIED.parse().unwrap(),
            tunnel("127.0.0.1:1".parse().unwrap()),
        ),
        (DIRECT_DEAD.parse().unwrap(), OutboundTarget::Direct(dead)),
    ]);
    let ctx = Arc::new(FakeOutbound {
        routes,
        ..FakeOutbound::default()
    });
    let out_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outbound = out_l.local_addr().unwrap();
    let src = PodConnections::new("src", max_per_pod);
    let pool = Pool::new(
        shared.config.tunnel.clone(),
        Some(shared.metrics.pool_connections().clone()),
    );
    let run = tokio::spawn(run_outbound(
        out_l,
        Arc::clone(&ctx),
        pool,
        shared.clone(),
        src.clone(),
    ));
    Agent {
        shared,
        outbound,
        ctx,
        src,
        run,
    }
}

impl Agent {
    /// Connects as an app whose original destination was `original`.
    async fn connect(&self, original: Option<&str>) -> TcpStream {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = sock.local_addr().unwrap().port();
        if let Some(o) = original {
            self.ctx
                .original
                .lock()
                .unwrap()
                .insert(port, o.parse().unwrap());
        }
        sock.connect(self.outbound).await.unwrap()
    }
}

/// Sends `data`, half-closes, and checks the echo (plus its `!`) comes back.
async fn echo_roundtrip(mut s: TcpStream, data: &[u8]) -> bool {
    s.write_all(data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    got.len() == data.len() + 1 && got[..data.len()] == *data && got.ends_with(b"!")
}

/// The client is closed on it promptly: EOF or reset, no data, no hang.
async fn assert_closed(mut s: TcpStream) {
    let mut buf = [0u8; 16];
    match within(s.read(&mut buf)).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("read {n} bytes from a refused connection"),
    }
}

#[tokio::test]
async fn outbound_direct_and_tunnel_reach_the_server_and_count() {
    let agent = agent(DEFAULT_MAX_CONNECTIONS_PER_POD).await;
    let data = vec![42u8; 300_000];
    let s = agent.connect(Some(DIRECT)).await;
    assert!(within(echo_roundtrip(s, &data)).await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = agent.connect(Some(TUNNEL)).await;
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            assert!(echo_roundtrip(s, &data).await);
        }));
    }
    for t in tasks {
        within(t).await.unwrap();
    }
    let sh = &agent.shared;
    let direct = [r#"reporter="source""#, r#"destination_workload="direct""#];
    let src = [r#"reporter="source""#, r#"destination_workload="server""#];
    let dst = [
        r#"reporter="destination""#,
        r#"destination_workload="server""#,
    ];
    eventually("all connections closed", || {
        counter(sh, "istio_tcp_connections_closed_total", &src) == 20
            && counter(sh, "istio_tcp_connections_closed_total", &dst) == 20
            && counter(sh, "istio_tcp_connections_closed_total", &direct) == 1
    })
    .await;
    assert_eq!(
        counter(sh, "istio_tcp_connections_opened_total", &direct),
        1
    );
    assert_eq!(
        counter(sh, "istio_tcp_received_bytes_total", &direct),
        300_000
    );
    assert_eq!(counter(sh, "istio_tcp_sent_bytes_total", &direct), 300_001);
    for sel in [&src, &dst] {
        assert_eq!(counter(sh, "istio_tcp_connections_opened_total", sel), 20);
        assert_eq!(
            counter(sh, "istio_tcp_received_bytes_total", sel),
            20 * 300_000
        );
        assert_eq!(counter(sh, "istio_tcp_sent_bytes_total", sel), 20 * 300_001);
    }
    // Twenty tunnelled connections, one pooled HTTP/2 connection.
    assert_eq!(counter(sh, "weft_pool_connections", &[]), 1);
    assert_eq!(agent.src.active(), 0);
}

#[tokio::test]
async fn outbound_failures_close_the_client_and_are_counted() {
    let agent = agent(DEFAULT_MAX_CONNECTIONS_PER_POD).await;
    let sh = &agent.shared;
    let cases = [
        (None, "no_original_destination"),
        (Some("10.9.9.9:80"), "policy"),
        (Some(DIRECT_DEAD), "upstream_connect"),
        (Some(TUNNEL_DENIED), "tunnel"),
    ];
    for (original, reason) in cases {
        assert_closed(agent.connect(original).await).await;
        let label = format!(r#"reason="{reason}""#);
        eventually(reason, || {
            counter(sh, "weft_connections_refused_total", &[&label]) >= 1
        })
        .await;
    }
    // The destination side counted its own policy refusal.
    assert_eq!(
        counter(
            sh,
            "weft_connections_refused_total",
            &[r#"reason="policy""#]
        ),
        2
    );
    assert_eq!(counter(sh, "istio_tcp_connections_opened_total", &[]), 0);
}

#[tokio::test]
async fn pod_limit_refuses_and_shutdown_closes_everything() {
    let agent = agent(1).await;
    let sh = &agent.shared;
    let mut held = agent.connect(Some(DIRECT)).await;
    held.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    within(held.read_exact(&mut buf)).await.unwrap();
    assert_closed(agent.connect(Some(DIRECT)).await).await;
    eventually("limit counted", || {
        counter(sh, "weft_connections_refused_total", &[r#"reason="limit""#]) == 1
    })
    .await;
    // Unenrol: the listener stops and the open connection is closed.
    agent.src.close_all();
    within(agent.run).await.unwrap();
    assert_closed(held).await;
    assert!(TcpStream::connect(agent.outbound).await.is_err());
    eventually("permit released", || agent.src.active() == 0).await;
}

async fn plaintext_agent(deny: bool) -> (Shared, SocketAddr) {
    let shared = shared();
    let echo = echo_server().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let ctx = FakeInbound {
        // The app "behind" the steered address is the echo server.
        dialer: FakeDialer {
            rewrite: HashMap::from([(addr, echo)]),
            ..Default::default()
        },
        deny_plaintext: deny,
        ..Default::default()
    };
    let pod = PodConnections::new("dst", DEFAULT_MAX_CONNECTIONS_PER_POD);
    tokio::spawn(run_inbound_plaintext(l, Arc::new(ctx), shared.clone(), pod));
    (shared, addr)
}

#[tokio::test]
async fn inbound_plaintext_forwards_to_the_local_address() {
    let (sh, addr) = plaintext_agent(false).await;
    let s = TcpStream::connect(addr).await.unwrap();
    assert!(within(echo_roundtrip(s, b"hello app")).await);
    let sel = [
        r#"reporter="destination""#,
        r#"destination_workload="plain""#,
    ];
    eventually("closed", || {
        counter(&sh, "istio_tcp_connections_closed_total", &sel) == 1
    })
    .await;
    assert_eq!(counter(&sh, "istio_tcp_received_bytes_total", &sel), 9);
    assert_eq!(counter(&sh, "istio_tcp_sent_bytes_total", &sel), 10);
}

#[tokio::test]
async fn inbound_plaintext_refusal_resets() {
    let (sh, addr) = plaintext_agent(true).await;
    assert_closed(TcpStream::connect(addr).await.unwrap()).await;
    eventually("refusal counted", || {
        counter(
            &sh,
            "weft_connections_refused_total",
            &[r#"reason="policy""#],
        ) == 1
    })
    .await;
}

#[tokio::test]
async fn inbound_tunnel_refuses_with_403_and_unreachable_with_503() {
    let shared = shared();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let pod = PodConnections::new("dst", DEFAULT_MAX_CONNECTIONS_PER_POD);
    tokio::spawn(run_inbound_tunnel(
        l,
        Arc::new(FakeInbound::default()),
        shared.clone(),
        pod,
    ));
    let pool: Pool<()> = Pool::new(TunnelConfig::default(), None);
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let status = |target: SocketAddr| {
        let pool = pool.clone();
        async move {
            let r = pool.connect(&(), target, || TcpStream::connect(addr)).await;
            r.err().and_then(|e| e.status())
        }
    };
    assert_eq!(
        within(status("127.0.0.1:1".parse().unwrap())).await,
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        within(status(dead)).await,
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
    let sel = [r#"reason="upstream_connect""#];
    assert_eq!(counter(&shared, "weft_connections_refused_total", &sel), 1);
}

/// A plaintext agent whose dial lands during a policy change denying it.
async fn revoking_plaintext_agent() -> (Shared, SocketAddr) {
    let shared = shared();
    let echo = echo_server().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let admitted = AdmittedConnections::default();
    let ctx = FakeInbound {
        dialer: FakeDialer {
            rewrite: HashMap::from([(addr, echo)]),
            revoke_while_dialling: Some(admitted.clone()),
        },
        admitted,
        ..Default::default()
    };
    let pod = PodConnections::new("dst", DEFAULT_MAX_CONNECTIONS_PER_POD);
    tokio::spawn(run_inbound_plaintext(l, Arc::new(ctx), shared.clone(), pod));
    (shared, addr)
}

#[tokio::test]
async fn a_review_during_the_dial_refuses_the_plaintext_connection() {
    let (sh, addr) = revoking_plaintext_agent().await;
    assert_closed(TcpStream::connect(addr).await.unwrap()).await;
    eventually("refusal counted", || {
        counter(
            &sh,
            "weft_connections_refused_total",
            &[r#"reason="policy""#],
        ) == 1
    })
    .await;
    let sel = [r#"reporter="destination""#];
    assert_eq!(counter(&sh, "istio_tcp_connections_opened_total", &sel), 0);
}

#[tokio::test]
async fn a_review_closes_an_open_plaintext_connection() {
    let shared = shared();
    let echo = echo_server().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let ctx = Arc::new(FakeInbound {
        dialer: FakeDialer {
            rewrite: HashMap::from([(addr, echo)]),
            ..Default::default()
        },
        ..Default::default()
    });
    let pod = PodConnections::new("dst", DEFAULT_MAX_CONNECTIONS_PER_POD);
    tokio::spawn(run_inbound_plaintext(l, ctx.clone(), shared, pod));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    within(s.read_exact(&mut buf)).await.unwrap();
    let revoked = ctx.admitted.review(|_| Decision::from(Verdict::NotAllowed));
    assert_eq!(revoked.len(), 1);
    assert_closed(s).await;
    eventually("unregistered", || ctx.admitted.is_empty()).await;
}

#[tokio::test]
async fn a_review_during_the_dial_refuses_the_tunnel_stream() {
    let shared = shared();
    let echo = echo_server().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let admitted = AdmittedConnections::default();
    let ctx = FakeInbound {
        dialer: FakeDialer {
            revoke_while_dialling: Some(admitted.clone()),
            ..Default::default()
        },
        admitted,
        ..Default::default()
    };
    let pod = PodConnections::new("dst", DEFAULT_MAX_CONNECTIONS_PER_POD);
    tokio::spawn(run_inbound_tunnel(l, Arc::new(ctx), shared.clone(), pod));
    let pool: Pool<()> = Pool::new(TunnelConfig::default(), None);
    let r = within(pool.connect(&(), echo, || TcpStream::connect(addr))).await;
    assert_eq!(
        r.err().and_then(|e| e.status()),
        Some(StatusCode::FORBIDDEN)
    );
    let sel = [r#"reason="policy""#];
    assert_eq!(counter(&shared, "weft_connections_refused_total", &sel), 1);
}
