//! Which rustls crypto provider the tunnel uses, by measurement: full TLS 1.3
//! mutual-TLS handshakes with ECDSA P-256 workload certificates, and bulk
//! throughput of application data, both ends in one thread over an in-memory
//! pipe so only the crypto differs. `cargo bench -p mesh-agent --bench tls_provider`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_agent::identity::tls::{accept, client_config, connect, root_store, server_config};
use mesh_agent::identity::{CertificateAuthority, LocalCa, SpiffeId};
use rustls::crypto::CryptoProvider;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HANDSHAKES: usize = 400;
const BULK_BYTES: usize = 512 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    LocalCa::init(dir.path())?;
    let ca = LocalCa::load(dir.path())?;
    let (client_id, server_id) = (
        SpiffeId::for_workload("cluster.local", "shop", "frontend"),
        SpiffeId::for_workload("cluster.local", "shop", "reviews"),
    );
    let client_cert = ca.issue(&client_id, Duration::from_secs(3600))?;
    let server_cert = ca.issue(&server_id, Duration::from_secs(3600))?;
    let roots = root_store(&ca.roots())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "{:<10} {:>16} {:>14}",
        "provider", "handshakes/s", "bulk MiB/s"
    );
    let providers: [(&str, CryptoProvider); 2] = [
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider()),
        ("ring", rustls::crypto::ring::default_provider()),
    ];
    for (name, provider) in providers {
        let provider = Arc::new(provider);
        let sc = server_config(&server_cert, roots.clone(), provider.clone())?;
        let cc = client_config(&client_cert, roots.clone(), &server_id, provider)?;
        let (hs, bulk) = runtime.block_on(async {
            let start = Instant::now();
            for _ in 0..HANDSHAKES {
                handshake(cc.clone(), sc.clone()).await?;
            }
            let hs = HANDSHAKES as f64 / start.elapsed().as_secs_f64();
            let bulk = bulk(cc.clone(), sc.clone()).await?;
            anyhow::Ok((hs, bulk))
        })?;
        println!("{name:<10} {hs:>16.0} {bulk:>14.0}");
    }
    Ok(())
}

async fn handshake(
    cc: Arc<rustls::ClientConfig>,
    sc: Arc<rustls::ServerConfig>,
) -> anyhow::Result<()> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (client, server) = tokio::join!(connect(a, cc), accept(b, sc));
    let (mut c, (mut s, _)) = (client?, server?);
    // One byte each way completes the handshake on both sides.
    c.write_all(b"x").await?;
    c.flush().await?;
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await?;
    Ok(())
}

async fn bulk(cc: Arc<rustls::ClientConfig>, sc: Arc<rustls::ServerConfig>) -> anyhow::Result<f64> {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (client, server) = tokio::join!(connect(a, cc), accept(b, sc));
    let (mut c, (mut s, _)) = (client?, server?);
    let chunk = vec![7u8; CHUNK];
    let start = Instant::now();
    let send = async {
        for _ in 0..BULK_BYTES / CHUNK {
            c.write_all(&chunk).await?;
        }
        c.shutdown().await?;
        anyhow::Ok(())
    };
    let receive = async {
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        anyhow::Ok(total)
    };
    let (sent, received) = tokio::join!(send, receive);
    sent?;
    anyhow::ensure!(received? == BULK_BYTES, "bulk transfer lost bytes");
    Ok(BULK_BYTES as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64())
}
