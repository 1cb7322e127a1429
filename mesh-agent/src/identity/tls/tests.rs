//! Session resumption is off at both ends, the read buffer comes only after the
//! handshake, and the peer's notAfter is read from its certificate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::identity::{CertificateAuthority, LocalCa};

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::for_workload("cluster.local", ns, sa)
}

struct Ends {
    _dir: tempfile::TempDir,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    client_cert: IssuedCert,
    server_cert: IssuedCert,
}

fn ends() -> Ends {
    let dir = tempfile::tempdir().unwrap();
    LocalCa::init(dir.path()).unwrap();
    let ca = LocalCa::load(dir.path()).unwrap();
    let roots = root_store(&ca.roots()).unwrap();
    let server_cert = ca
        .issue(&id("shop", "reviews"), Duration::from_secs(600))
        .unwrap();
    let client_cert = ca
        .issue(&id("shop", "frontend"), Duration::from_secs(300))
        .unwrap();
    Ends {
        _dir: dir,
        server: server_config(&server_cert, roots.clone(), provider()).unwrap(),
        client: client_config(&client_cert, roots, &id("shop", "reviews"), provider()).unwrap(),
        client_cert,
        server_cert,
    }
}

fn not_after(cert: &IssuedCert) -> SystemTime {
    let (_, c) = x509_parser::parse_x509_certificate(&cert.chain[0]).unwrap();
    UNIX_EPOCH + Duration::from_secs(c.validity().not_after.timestamp() as u64)
}

#[test]
fn the_server_sends_no_tickets_and_keeps_no_sessions() {
    let ends = ends();
    assert_eq!(ends.server.send_tls13_tickets, 0);
    assert!(!ends.server.session_storage.can_cache());
    assert!(!ends.server.ticketer.enabled());
}

#[tokio::test]
async fn every_handshake_is_a_full_one_and_buffers_only_after_it() {
    let ends = ends();
    for _ in 0..3 {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(accept(b, ends.server.clone()));
        let mut client = connect(a, ends.client.clone()).await.unwrap();
        let (mut server, peer) = server.await.unwrap().unwrap();
        // A byte each way: any session ticket the server sent is read too.
        server.write_all(b"s").await.unwrap();
        client.write_all(b"c").await.unwrap();
        let mut one = [0u8; 1];
        client.read_exact(&mut one).await.unwrap();
        server.read_exact(&mut one).await.unwrap();
        assert_eq!(peer, id("shop", "frontend"));
        assert_eq!(
            client.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        assert_eq!(
            server.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        assert!(server.get_ref().0.is_buffering());
        // Each end sees the other's notAfter.
        assert_eq!(server.peer_not_after(), Some(not_after(&ends.client_cert)));
        assert_eq!(client.peer_not_after(), Some(not_after(&ends.server_cert)));
    }
}

#[test]
fn no_read_buffer_before_the_handshake() {
    let (a, _b) = tokio::io::duplex(1024);
    assert!(!Buffered::new(a).is_buffering());
}
