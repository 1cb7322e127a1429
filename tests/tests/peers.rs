//! Peers that must be refused (issue 5), with real agents and a rogue end made
//! in this test: a client with a certificate from another CA or an expired one
//! is refused by the destination agent; a server with the wrong identity for
//! its IP, another CA's certificate or an expired one is refused by the source
//! agent. Each refusal is logged with its reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use lab::MeshLab;
use mesh_agent::identity::tls::{self, client_config, provider, root_store, server_config};
use mesh_agent::identity::{CertificateAuthority, IssuedCert, LocalCa, SpiffeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REVIEWS_POD: &str = "reviews-v1-5c4b-b";
const REVIEWS_TUNNEL: &str = "10.88.2.11:15008";

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::for_workload("cluster.local", ns, sa)
}

fn expired(ca: &LocalCa, who: &SpiffeId) -> Result<IssuedCert> {
    let now = SystemTime::now();
    ca.issue_valid(
        who,
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    )
}

/// A CA of its own, not the mesh's.
fn other_ca(mesh: &MeshLab) -> Result<LocalCa> {
    let dir = mesh.lab.run_dir().join("other-ca");
    LocalCa::init(&dir)?;
    LocalCa::load(&dir)
}

/// Dials the reviews pod's tunnel port from the unmeshed inventory-0 pod with
/// `cert`, trusting the mesh CA, and tries to use the connection.
async fn rogue_client(mesh: &MeshLab, cert: &IssuedCert, mesh_ca: &LocalCa) -> Result<()> {
    let addr: SocketAddr = REVIEWS_TUNNEL.parse()?;
    let tcp = mesh
        .pod("inventory-0")?
        .in_netns(move || std::net::TcpStream::connect(addr))??;
    tcp.set_nonblocking(true)?;
    let tcp = tokio::net::TcpStream::from_std(tcp)?;
    let config = client_config(
        cert,
        root_store(&mesh_ca.roots())?,
        &id("shop", "reviews"),
        provider(),
    )?;
    // TLS 1.3: the client finishes before the server has judged its
    // certificate; the refusal arrives on the first read.
    if let Ok(mut tls) = tls::connect(tcp, config).await {
        let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_destination_agent_refuses_clients_it_cannot_trust() -> Result<()> {
    let mesh = MeshLab::start()?;
    let mesh_ca = LocalCa::load(&mesh.ca_dir)?;
    let frontend = id("shop", "frontend");
    let agent = mesh.agent("node-b")?;

    let from = agent.log_len();
    rogue_client(
        &mesh,
        &other_ca(&mesh)?.issue(&frontend, Duration::from_secs(600))?,
        &mesh_ca,
    )
    .await?;
    agent.wait_for_log(
        "the peer's certificate is not signed by a trusted CA",
        from,
        Duration::from_secs(5),
    )?;

    let from = agent.log_len();
    rogue_client(&mesh, &expired(&mesh_ca, &frontend)?, &mesh_ca).await?;
    agent.wait_for_log(
        "the peer's certificate has expired",
        from,
        Duration::from_secs(5),
    )?;

    // The mesh itself still works.
    mesh.ping("frontend-7d9f-a", "10.88.2.11:9080")?;
    Ok(())
}

/// Serves TLS with `cert` on the reviews pod's tunnel address, in its netns,
/// until dropped (the real agent of node-b must be down).
fn rogue_server(
    mesh: &MeshLab,
    cert: IssuedCert,
    trusted: &LocalCa,
) -> Result<tokio::task::JoinHandle<()>> {
    let addr: SocketAddr = REVIEWS_TUNNEL.parse()?;
    let listener = mesh
        .pod(REVIEWS_POD)?
        .in_netns(move || std::net::TcpListener::bind(addr))??;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let config = server_config(&cert, root_store(&trusted.roots())?, provider())?;
    Ok(tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let config = Arc::clone(&config);
            tokio::spawn(async move {
                let _ = tls::accept(tcp, config).await;
            });
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_agent_refuses_servers_that_are_not_who_the_state_says() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let mesh_ca = LocalCa::load(&mesh.ca_dir)?;
    // node-b's agent goes away; its pods stay captured, and a rogue takes the
    // reviews pod's tunnel port.
    let b = mesh.agent("node-b")?;
    b.kill(&mesh.lab)?;
    mesh.agents.retain(|a| a.node != "node-b");
    let reviews = id("shop", "reviews");
    let cases = [
        (
            "wrong identity",
            mesh_ca.issue(&id("shop", "evil"), Duration::from_secs(600))?,
            "server presented spiffe://cluster.local/ns/shop/sa/evil, expected spiffe://cluster.local/ns/shop/sa/reviews",
        ),
        (
            "another CA",
            other_ca(&mesh)?.issue(&reviews, Duration::from_secs(600))?,
            "the peer's certificate is not signed by a trusted CA",
        ),
        (
            "expired",
            expired(&mesh_ca, &reviews)?,
            "the peer's certificate has expired",
        ),
    ];
    let agent = mesh.agent("node-a")?;
    for (name, cert, reason) in cases {
        let server = rogue_server(&mesh, cert, &mesh_ca)?;
        let from = agent.log_len();
        let result = mesh.ping("frontend-7d9f-a", "10.88.2.11:9080");
        assert!(result.is_err(), "{name}: the connection must fail");
        agent
            .wait_for_log(reason, from, Duration::from_secs(5))
            .with_context(|| format!("{name}: the refusal names the reason"))?;
        server.abort();
        let _ = server.await;
    }
    Ok(())
}
