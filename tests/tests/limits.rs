//! Resource limits on the data path (issue 13), with real agents and a hostile
//! end made in this test: connections that never finish TLS do not starve a
//! pod, an authenticated peer cannot hold idle tunnel connections, a tunnel
//! connection ends at its peer certificate's expiry, and thousands of streams
//! to an app that never reads cannot push the agent past a memory bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use lab::{MeshLab, metric_sum};
use mesh_agent::identity::tls::{self, client_config, provider, root_store};
use mesh_agent::identity::{CertificateAuthority, IssuedCert, LocalCa, SpiffeId};
use mesh_agent::proxy::TunnelConfig;
use mesh_agent::proxy::tunnel::TunnelClient;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

const FRONTEND: &str = "frontend-7d9f-a";
/// reviews-v1 on node-b (shop: no policy, anyone meshed may call it).
const REVIEWS_POD: &str = "reviews-v1-5c4b-b";
const REVIEWS_IP: &str = "10.88.2.11";
/// payments-6f7c-a on node-b: only shop/frontend and namespace payments may.
const PAYMENTS_IP: &str = "10.88.2.12";

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::for_workload("cluster.local", ns, sa)
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("an IP"), port)
}

/// A certificate for `who` from the mesh CA, valid from a minute ago for `lifetime`.
fn cert(mesh: &MeshLab, who: &SpiffeId, lifetime: Duration) -> Result<(IssuedCert, LocalCa)> {
    let ca = LocalCa::load(&mesh.ca_dir)?;
    let now = SystemTime::now();
    let cert = ca.issue_valid(who, now - Duration::from_secs(60), now + lifetime)?;
    Ok((cert, ca))
}

/// The test process holds thousands of sockets: take the whole hard limit.
fn raise_fd_limit() -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}

/// An authenticated tunnel connection from the unmeshed inventory-0 pod to
/// `server_ip`:15008, as `cert`'s identity, expecting the server to be
/// `server_id`. The receiver fires when the connection has ended.
async fn tunnel_client(
    mesh: &MeshLab,
    cert: &IssuedCert,
    ca: &LocalCa,
    server_ip: &str,
    server_id: &SpiffeId,
    config: &TunnelConfig,
) -> Result<(TunnelClient, oneshot::Receiver<Instant>)> {
    let tunnel = addr(server_ip, 15008);
    let tcp = mesh
        .pod("inventory-0")?
        .in_netns(move || std::net::TcpStream::connect(tunnel))??;
    tcp.set_nonblocking(true)?;
    let tcp = tokio::net::TcpStream::from_std(tcp)?;
    let config_tls = client_config(cert, root_store(&ca.roots())?, server_id, provider())?;
    let tls = tls::connect(tcp, config_tls).await?;
    let (closed_tx, closed) = oneshot::channel();
    let client = TunnelClient::handshake(tls, config, move || {
        let _ = closed_tx.send(Instant::now());
    })
    .await?;
    Ok((client, closed))
}

/// A client-side config that never closes a connection on its own.
fn patient_client() -> TunnelConfig {
    TunnelConfig {
        pool_idle_timeout: Duration::from_secs(3600),
        max_connection_age: None,
        max_streams_per_connection: 1000,
        ..TunnelConfig::default()
    }
}

/// Defect 2: connections to a pod's 15008 that never finish TLS, more than the
/// agent has descriptors for, leave that pod's meshed traffic flowing.
#[test]
fn unfinished_handshakes_do_not_starve_a_pods_traffic() -> Result<()> {
    raise_fd_limit()?;
    let mesh = MeshLab::start_with(&["--max-open-files", "800"])?;
    let tunnel = addr(REVIEWS_IP, 15008);
    let held = mesh.pod("inventory-0")?.in_netns(move || {
        (0..900)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&tunnel, Duration::from_secs(1)).ok()
            })
            .collect::<Vec<_>>()
    })?;
    println!("holding {} connections that never start TLS", held.len());
    std::thread::sleep(Duration::from_millis(500));
    let out = mesh.load_from(
        FRONTEND,
        &["say", &format!("{REVIEWS_IP}:9080"), "still-here"],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "meshed traffic to the pod under attack failed: {stderr}"
    );
    let refused = metric_sum(
        &mesh.metrics("node-b")?,
        "weft_connections_refused_total",
        &[],
    );
    println!("node-b refused {refused} connections");
    ensure!(refused > 0.0, "the surplus handshakes were not refused");
    drop(held);
    Ok(())
}

/// Defect 2: an authenticated peer that policy denies cannot hold a tunnel
/// connection (a slot) open by keeping it idle: the server closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_connection_of_a_denied_peer_is_closed() -> Result<()> {
    let mesh = MeshLab::start_with(&["--tunnel-idle-timeout", "3s"])?;
    // shop/reviews may not call payments.
    let (cert, ca) = cert(&mesh, &id("shop", "reviews"), Duration::from_secs(600))?;
    let (client, closed) = tunnel_client(
        &mesh,
        &cert,
        &ca,
        PAYMENTS_IP,
        &id("payments", "payments"),
        &patient_client(),
    )
    .await?;
    let denied = client.connect(addr(PAYMENTS_IP, 8443)).await;
    let status = denied.as_ref().err().and_then(|e| e.status());
    ensure!(
        status.map(|s| s.as_u16()) == Some(403),
        "the stream was not refused by policy: {denied:?}"
    );
    let start = Instant::now();
    match tokio::time::timeout(Duration::from_secs(15), closed).await {
        Ok(_) => println!("idle connection closed after {:?}", start.elapsed()),
        Err(_) => bail!("the denied peer's idle tunnel connection was still open after 15 s"),
    }
    Ok(())
}

/// Defect 11: an authenticated tunnel connection, even one carrying a stream,
/// is closed by the server when its peer's certificate expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_connection_closes_at_the_peer_certificates_expiry() -> Result<()> {
    let mesh = MeshLab::start()?;
    let lifetime = Duration::from_secs(6);
    let (cert, ca) = cert(&mesh, &id("shop", "frontend"), lifetime)?;
    let not_after = Instant::now() + lifetime;
    let (client, closed) = tunnel_client(
        &mesh,
        &cert,
        &ca,
        REVIEWS_IP,
        &id("shop", "reviews"),
        &patient_client(),
    )
    .await?;
    // An open stream: the connection is in use, not idle.
    let mut stream = client
        .connect(addr(REVIEWS_IP, 9080))
        .await
        .context("open a stream to reviews")?;
    stream.write_all(b"hello").await?;
    match tokio::time::timeout(lifetime + Duration::from_secs(10), closed).await {
        Ok(Ok(at)) => {
            let late = at.saturating_duration_since(not_after);
            println!("closed {late:?} after the certificate's notAfter");
            ensure!(
                at + Duration::from_secs(2) >= not_after,
                "closed well before notAfter"
            );
            ensure!(late < Duration::from_secs(3), "closed {late:?} late");
        }
        _ => bail!("the tunnel connection outlived its peer's certificate by 10 s"),
    }
    Ok(())
}

/// The resident memory bound of defect 9's test, in MiB.
const RSS_BOUND_MIB: u64 = 256;

/// Defect 9: a hostile authenticated peer opens thousands of streams to an app
/// that never reads and pushes data into all of them; the destination agent's
/// RSS stays under `RSS_BOUND_MIB`, and a normal pod's meshed traffic works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_cannot_push_the_agent_past_a_memory_bound() -> Result<()> {
    raise_fd_limit()?;
    let mesh = MeshLab::start()?;
    // The app: accepts on reviews-v1:9999 and never reads.
    let app = addr(REVIEWS_IP, 9999);
    let listener = mesh.pod(REVIEWS_POD)?.in_netns(move || {
        let socket = std::net::TcpListener::bind(app)?;
        Ok::<_, std::io::Error>(socket)
    })??;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let (cert, ca) = cert(&mesh, &id("shop", "frontend"), Duration::from_secs(600))?;
    let cert = Arc::new(cert);
    let agent_pid = mesh.agent("node-b")?.pid;
    let before = mesh.agent("node-b")?.rss_kib()? / 1024;

    const CONNECTIONS: usize = 12;
    const STREAMS: usize = 200;
    let mut tasks = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, _closed) = tunnel_client(
            &mesh,
            &cert,
            &ca,
            REVIEWS_IP,
            &id("shop", "reviews"),
            &patient_client(),
        )
        .await?;
        for _ in 0..STREAMS {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut stream) = client.connect(app).await else {
                    return false;
                };
                let chunk = vec![0x5au8; 64 * 1024];
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while tokio::time::timeout_at(deadline, stream.write_all(&chunk))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {}
                // Keep the stream open until the test ends.
                std::future::pending::<()>().await;
                true
            }));
        }
        clients.push(client);
    }
    let mut peak = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let status = std::fs::read_to_string(format!("/proc/{agent_pid}/status"))?;
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .context("no VmRSS")?;
        peak = peak.max(rss / 1024);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open = mesh.metrics("node-b")?;
    println!(
        "{} streams attempted; node-b agent RSS {before} MiB before, peak {peak} MiB (bound {RSS_BOUND_MIB} MiB); refused so far {}",
        CONNECTIONS * STREAMS,
        metric_sum(&open, "weft_connections_refused_total", &[])
    );
    let out = mesh.load_from(
        FRONTEND,
        &["say", &format!("{REVIEWS_IP}:9080"), "still-here"],
    )?;
    ensure!(
        out.status.success(),
        "meshed traffic failed under the flood: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        peak < RSS_BOUND_MIB,
        "node-b's agent reached {peak} MiB RSS, over the {RSS_BOUND_MIB} MiB bound"
    );
    for t in tasks {
        t.abort();
    }
    drop(clients);
    Ok(())
}
