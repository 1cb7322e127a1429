//! Handshakes between real rustls ends over an in-memory pipe: who is accepted,
//! who is refused and what the refusal says; the manager's issue, drop and
//! renewal.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tls::{self, accept, client_config, connect, provider, root_store, server_config};
use super::*;

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::for_workload("cluster.local", ns, sa)
}

fn new_ca() -> (tempfile::TempDir, LocalCa) {
    let dir = tempfile::tempdir().unwrap();
    LocalCa::init(dir.path()).unwrap();
    let ca = LocalCa::load(dir.path()).unwrap();
    (dir, ca)
}

/// Runs a handshake: `client_cert` dials a server holding `server_cert`,
/// expecting it to be `expected`; both trust `roots`'s CA (client and server
/// roots given separately).
async fn handshake(
    client_cert: &IssuedCert,
    client_roots: &LocalCa,
    expected: &SpiffeId,
    server_cert: &IssuedCert,
    server_roots: &LocalCa,
) -> (std::io::Result<SpiffeId>, std::io::Result<SpiffeId>) {
    let p = provider();
    let sc = server_config(
        server_cert,
        root_store(&server_roots.roots()).unwrap(),
        p.clone(),
    )
    .unwrap();
    let cc = client_config(
        client_cert,
        root_store(&client_roots.roots()).unwrap(),
        expected,
        p,
    )
    .unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let (mut s, peer) = accept(b, sc).await?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await?;
        s.write_all(&buf).await?;
        s.flush().await?;
        Ok::<_, std::io::Error>(peer)
    });
    let client = async {
        let mut c = connect(a, cc).await?;
        c.write_all(b"hello").await?;
        c.flush().await?;
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"hello");
        let id = tls::peer_identity(c.get_ref().1)?;
        Ok(id)
    };
    let client = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("client timed out");
    let server = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server timed out")
        .expect("server task");
    (client, server)
}

#[tokio::test]
async fn mutual_tls_reads_both_identities() {
    let (_d, ca) = new_ca();
    let (frontend, reviews) = (id("shop", "frontend"), id("shop", "reviews"));
    let c = ca.issue(&frontend, Duration::from_secs(60)).unwrap();
    let s = ca.issue(&reviews, Duration::from_secs(60)).unwrap();
    let (client, server) = handshake(&c, &ca, &reviews, &s, &ca).await;
    assert_eq!(client.unwrap(), reviews, "the client saw the server's id");
    assert_eq!(server.unwrap(), frontend, "the server saw the client's id");
}

#[tokio::test]
async fn a_server_with_the_wrong_identity_is_refused() {
    let (_d, ca) = new_ca();
    let c = ca
        .issue(&id("shop", "frontend"), Duration::from_secs(60))
        .unwrap();
    let evil = ca
        .issue(&id("shop", "evil"), Duration::from_secs(60))
        .unwrap();
    let (client, _server) = handshake(&c, &ca, &id("shop", "reviews"), &evil, &ca).await;
    let e = client.unwrap_err().to_string();
    assert!(
        e.contains("server presented spiffe://cluster.local/ns/shop/sa/evil, expected spiffe://cluster.local/ns/shop/sa/reviews"),
        "{e}"
    );
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused_both_ways() {
    let (_d, ca) = new_ca();
    let (_d2, other) = new_ca();
    let reviews = id("shop", "reviews");
    let good_client = ca
        .issue(&id("shop", "frontend"), Duration::from_secs(60))
        .unwrap();
    let good_server = ca.issue(&reviews, Duration::from_secs(60)).unwrap();
    // A server from another CA: the client refuses it.
    let rogue_server = other.issue(&reviews, Duration::from_secs(60)).unwrap();
    let (client, _) = handshake(&good_client, &ca, &reviews, &rogue_server, &other).await;
    let e = client.unwrap_err().to_string();
    assert!(e.contains("not signed by a trusted CA"), "{e}");
    // A client from another CA (that trusts our server): the server refuses it.
    let rogue_client = other
        .issue(&id("shop", "frontend"), Duration::from_secs(60))
        .unwrap();
    let (_, server) = handshake(&rogue_client, &ca, &reviews, &good_server, &ca).await;
    let e = server.unwrap_err().to_string();
    assert!(e.contains("not signed by a trusted CA"), "{e}");
}

#[tokio::test]
async fn expired_certificates_are_refused() {
    let (_d, ca) = new_ca();
    let reviews = id("shop", "reviews");
    let now = SystemTime::now();
    let expired = ca
        .issue_valid(
            &id("shop", "frontend"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    let server = ca.issue(&reviews, Duration::from_secs(60)).unwrap();
    let (_, refused) = handshake(&expired, &ca, &reviews, &server, &ca).await;
    let e = refused.unwrap_err().to_string();
    assert!(e.contains("expired"), "{e}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let (_d, ca) = new_ca();
    let server_cert = ca
        .issue(&id("shop", "reviews"), Duration::from_secs(60))
        .unwrap();
    let sc = server_config(&server_cert, root_store(&ca.roots()).unwrap(), provider()).unwrap();
    let cc = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_no_client_auth();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move { accept(b, sc).await.map(|_| ()) });
    let name = rustls::pki_types::ServerName::try_from("reviews.invalid").unwrap();
    let _ = tokio_rustls::TlsConnector::from(Arc::new(cc))
        .connect(name, a)
        .await;
    let e = server.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("presented no certificate"), "{e}");
}

#[test]
fn ca_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let e = LocalCa::load(dir.path()).err().unwrap().to_string();
    assert!(e.contains("mesh-agent ca init"), "{e}");
    LocalCa::init(dir.path()).unwrap();
    let e = LocalCa::init(dir.path()).unwrap_err().to_string();
    assert!(e.contains("refusing to replace"), "{e}");
    // A key that is not the certificate's.
    let other = tempfile::tempdir().unwrap();
    LocalCa::init(other.path()).unwrap();
    std::fs::copy(other.path().join(CA_KEY_FILE), dir.path().join(CA_KEY_FILE)).unwrap();
    let e = LocalCa::load(dir.path()).err().unwrap().to_string();
    assert!(e.contains("do not belong together"), "{e}");
}

/// A client that trusts any server, so only the server's checks decide.
#[derive(Debug)]
struct AcceptAnyServer;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A CA that fails on demand.
struct Flaky {
    ca: LocalCa,
    fail: std::sync::atomic::AtomicBool,
}

impl CertificateAuthority for Flaky {
    fn issue(&self, identity: &SpiffeId, lifetime: Duration) -> anyhow::Result<IssuedCert> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            anyhow::bail!("CA unreachable");
        }
        self.ca.issue(identity, lifetime)
    }
    fn roots(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.ca.roots()
    }
}

#[tokio::test]
async fn the_manager_issues_renews_reports_and_drops() {
    let (_d, ca) = new_ca();
    let flaky = Arc::new(Flaky {
        ca,
        fail: false.into(),
    });
    let registry = prometheus::Registry::new();
    let config = CertConfig {
        lifetime: Duration::from_secs(2),
        jitter: 0.05,
    };
    let manager = CertManager::new(flaky.clone(), config, &registry).unwrap();
    let (a, b) = (id("shop", "frontend"), id("shop", "reviews"));
    assert!(manager.set_wanted([a.clone(), b.clone()]).is_empty());
    assert!(manager.server_config(&a).is_some());
    let first = manager.credential(&a).unwrap().cert.serial.clone();
    manager.client_config(&a, &b).unwrap();

    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(manager.clone().run_renewals(stop.clone()));
    // Renewed at about 1 s, well before the 2 s expiry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let renewed = manager.credential(&a).unwrap();
    assert_ne!(renewed.cert.serial, first, "renewed at half life");
    assert!(renewed.cert.not_after > SystemTime::now());
    let text = metrics_text(&registry);
    assert!(
        text.contains("weft_certificate_renewals_total{result=\"success\"} 2"),
        "{text}"
    );

    // A failing CA: reported at once, and the current certificate kept.
    flaky.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let status = manager.list();
    assert!(
        status
            .iter()
            .all(|s| s.renewal_error.as_deref() == Some("CA unreachable")),
        "{status:?}"
    );
    assert!(
        metrics_text(&registry).contains("weft_certificate_renewals_total{result=\"failure\"}")
    );
    stop.cancel();

    // Dropping an identity forgets it and its expiry series.
    manager.set_wanted([b.clone()]);
    assert!(manager.server_config(&a).is_none());
    let text = metrics_text(&registry);
    assert!(!text.contains("ns/shop/sa/frontend"), "{text}");
    assert!(text.contains("ns/shop/sa/reviews"), "{text}");
}

fn metrics_text(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn client_configs_are_cached_per_destination_until_renewal_or_new_roots() {
    let (_d, ca) = new_ca();
    let (_d2, other) = new_ca();
    let registry = prometheus::Registry::new();
    let config = CertConfig {
        lifetime: Duration::from_secs(2),
        jitter: 0.0,
    };
    let roots = ca.roots();
    let manager = CertManager::new(Arc::new(ca), config, &registry).unwrap();
    let (a, b, c) = (
        id("shop", "frontend"),
        id("shop", "reviews"),
        id("shop", "ratings"),
    );
    assert!(manager.set_wanted([a.clone()]).is_empty());
    let first = manager.client_config(&a, &b).unwrap();
    // Built once per (source, destination identity), not per dial.
    assert!(Arc::ptr_eq(&first, &manager.client_config(&a, &b).unwrap()));
    assert!(!Arc::ptr_eq(
        &first,
        &manager.client_config(&a, &c).unwrap()
    ));

    // A new trust bundle: the next dial verifies with it.
    let mut both = roots.clone();
    both.extend(other.roots());
    manager.set_roots(both).unwrap();
    let after_roots = manager.client_config(&a, &b).unwrap();
    assert!(!Arc::ptr_eq(&first, &after_roots));
    assert!(Arc::ptr_eq(
        &after_roots,
        &manager.client_config(&a, &b).unwrap()
    ));

    // A renewal (at half of 2 s): the next dial presents the new certificate.
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(manager.clone().run_renewals(stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    assert!(!Arc::ptr_eq(
        &after_roots,
        &manager.client_config(&a, &b).unwrap()
    ));
}
