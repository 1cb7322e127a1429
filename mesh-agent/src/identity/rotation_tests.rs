//! Root rotation as an agent sees it (docs/security.md, "Root rotation"): a
//! [`CertManager`] whose trust bundle holds two roots accepts peers of both,
//! both ways; once the old root leaves the bundle its peers are refused, and
//! the manager's own certificates that chained to it are renewed at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tls::{self, accept, connect, provider, root_store, server_config};
use super::*;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::for_workload("cluster.local", "shop", sa)
}

fn new_ca() -> (tempfile::TempDir, Arc<LocalCa>) {
    let dir = tempfile::tempdir().unwrap();
    LocalCa::init(dir.path()).unwrap();
    let ca = LocalCa::load(dir.path()).unwrap();
    (dir, Arc::new(ca))
}

/// The CA whose key signs now: switched during the rotation.
struct Switchable(Mutex<Arc<LocalCa>>);

impl Switchable {
    fn switch(&self, ca: Arc<LocalCa>) {
        *self.0.lock().unwrap() = ca;
    }
}

impl CertificateAuthority for Switchable {
    fn issue(&self, identity: &SpiffeId, lifetime: Duration) -> anyhow::Result<IssuedCert> {
        let ca = self.0.lock().unwrap().clone();
        ca.issue(identity, lifetime)
    }
    fn roots(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.0.lock().unwrap().roots()
    }
}

/// One handshake; gives (what the client saw, what the server saw).
async fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> (std::io::Result<SpiffeId>, std::io::Result<SpiffeId>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        let (mut s, peer) = accept(b, server).await?;
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await?;
        s.write_all(&buf).await?;
        s.flush().await?;
        Ok::<_, std::io::Error>(peer)
    });
    let client = async {
        let mut c = connect(a, client).await?;
        c.write_all(b"hi").await?;
        c.flush().await?;
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await?;
        tls::peer_identity(c.get_ref().1)
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

/// A peer (another node's workload) with a certificate of `ca`, trusting `trusts`.
struct Peer {
    cert: IssuedCert,
    trusts: Vec<Arc<LocalCa>>,
}

impl Peer {
    fn new(ca: &LocalCa, who: &SpiffeId, trusts: &[&Arc<LocalCa>]) -> Self {
        Self {
            cert: ca.issue(who, Duration::from_secs(600)).unwrap(),
            trusts: trusts.iter().map(|c| Arc::clone(c)).collect(),
        }
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        let roots: Vec<_> = self.trusts.iter().flat_map(|c| c.roots()).collect();
        root_store(&roots).unwrap()
    }

    fn server(&self) -> Arc<ServerConfig> {
        server_config(&self.cert, self.roots(), provider()).unwrap()
    }

    fn client(&self, expected: &SpiffeId) -> Arc<ClientConfig> {
        tls::client_config(&self.cert, self.roots(), expected, provider()).unwrap()
    }
}

/// Our workload `me` (held by `certs`) and a peer, both directions.
async fn both_ways(certs: &CertManager, me: &SpiffeId, peer: &Peer) -> [Result<(), String>; 2] {
    let them = &peer.cert.identity;
    // We dial the peer.
    let (client, _) = handshake(certs.client_config(me, them).unwrap(), peer.server()).await;
    // The peer dials us.
    let (_, server) = handshake(peer.client(me), certs.server_config(me).unwrap()).await;
    [
        client.map(|_| ()).map_err(|e| e.to_string()),
        server.map(|_| ()).map_err(|e| e.to_string()),
    ]
}

#[tokio::test]
async fn two_roots_during_the_switch_then_the_old_one_is_refused() {
    let (_d1, old) = new_ca();
    let (_d2, new) = new_ca();
    let ca = Arc::new(Switchable(Mutex::new(old.clone())));
    let registry = prometheus::Registry::new();
    let config = CertConfig {
        lifetime: Duration::from_secs(600),
        jitter: 0.0,
    };
    let certs = CertManager::new(ca.clone(), config, &registry).unwrap();
    let me = id("frontend");
    assert!(certs.set_wanted([me.clone()]).is_empty());
    let first = certs.credential(&me).unwrap();
    assert_eq!(first.cert.chain.last(), Some(old.certificate()));

    // Step 1: the new root joins the bundle (peers get it too).
    certs
        .set_roots(vec![old.certificate().clone(), new.certificate().clone()])
        .unwrap();
    assert_eq!(certs.roots().len(), 2);
    // Still chains to a root of the bundle: kept as is.
    assert_eq!(
        certs.credential(&me).unwrap().cert.serial,
        first.cert.serial
    );

    // Step 2: the CA signs with the new key. Peers renewed since (new root)
    // and peers not renewed yet (old root) are both accepted, both ways.
    ca.switch(new.clone());
    let old_peer = Peer::new(&old, &id("reviews"), &[&old, &new]);
    let new_peer = Peer::new(&new, &id("ratings"), &[&old, &new]);
    assert_eq!(both_ways(&certs, &me, &old_peer).await, [Ok(()), Ok(())]);
    assert_eq!(both_ways(&certs, &me, &new_peer).await, [Ok(()), Ok(())]);

    // Step 3: the old root leaves the bundle. Old-root peers are refused both
    // ways; our own old-root certificate is renewed at once, from the new key.
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(certs.clone().run_renewals(stop.clone()));
    certs.set_roots(vec![new.certificate().clone()]).unwrap();
    for result in both_ways(&certs, &me, &old_peer).await {
        let e = result.unwrap_err();
        assert!(e.contains("not signed by a trusted CA"), "{e}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let current = certs.credential(&me).unwrap();
        if current.cert.chain.last() == Some(new.certificate()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphaned certificate was not renewed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A peer that trusts only the new root now accepts us.
    let new_only = Peer::new(&new, &id("ratings"), &[&new]);
    assert_eq!(both_ways(&certs, &me, &new_only).await, [Ok(()), Ok(())]);
    stop.cancel();
}

#[tokio::test]
async fn an_empty_bundle_is_refused_and_changes_nothing() {
    let (_d, ca) = new_ca();
    let registry = prometheus::Registry::new();
    let certs = CertManager::new(ca.clone(), CertConfig::default(), &registry).unwrap();
    assert!(certs.set_roots(vec![]).is_err());
    assert_eq!(certs.roots(), ca.roots());
}
