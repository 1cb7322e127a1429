//! The agent's CA client against the CA service's HTTPS server (the real
//! server code, its decision replaced by a test one that needs no API
//! server): certificates for a key that stays here, the CA's reasons passed
//! on, the token re-read at each request, the CA's certificate checked
//! against the trust bundle, and the sync `issue` from either runtime flavor.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ca_server::api::{IssueRequest, IssueResponse};
use super::ca_server::authorize::Refusal;
use super::ca_server::csr::check_csr;
use super::ca_server::http::{Issuer, serve, server_tls};
use super::ca_server::signer::{Signer, SignerFiles};
use super::*;

/// Signs for the token `good`; refuses the service account `forbidden`.
struct TestIssuer {
    signer: Arc<Signer>,
    tokens: Mutex<Vec<String>>,
}

impl Issuer for TestIssuer {
    async fn issue(
        &self,
        _peer: IpAddr,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<IssueResponse, Refusal> {
        let token = bearer.unwrap_or_default().to_owned();
        self.tokens.lock().unwrap().push(token.clone());
        if token != "good" {
            return Err(Refusal::Unauthenticated(format!(
                "token {token:?} is not valid"
            )));
        }
        let request: IssueRequest =
            serde_json::from_slice(body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let csr = check_csr(&request.csr, "cluster.local")
            .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        if csr.identity.service_account() == "forbidden" {
            return Err(Refusal::Forbidden(format!(
                "node \"node-b\" may not have {}: no pod there",
                csr.identity
            )));
        }
        let lifetime = Duration::from_secs(request.lifetime_seconds.unwrap_or(3600));
        let signed = self
            .signer
            .keys()
            .ca
            .sign_request(&csr.identity, &csr.public_key, lifetime)
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        Ok(IssueResponse {
            chain: signed.chain.iter().map(to_pem).collect(),
            not_after: signed
                .not_after
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: rustls::pki_types::CertificateDer<'static>,
    port: u16,
    token_file: PathBuf,
    issuer: Arc<TestIssuer>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::init(dir.path()).unwrap();
        let signer = Arc::new(
            Signer::load(SignerFiles {
                ca_dir: dir.path().to_owned(),
                extra_roots: None,
                dns_names: vec!["weft-ca".into(), "weft-ca.weft-system.svc".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
            })
            .unwrap(),
        );
        let root = signer.keys().ca.certificate().clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let issuer = Arc::new(TestIssuer {
            signer: signer.clone(),
            tokens: Mutex::new(Vec::new()),
        });
        // A runtime of its own, as a real CA is elsewhere: the sync `issue`
        // may block the test's only runtime thread.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let tls = server_tls(signer).unwrap();
        let server_issuer = issuer.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = serve(listener, tls, server_issuer) => {}
                    _ = stopped => {}
                }
            });
        });
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "good\n").unwrap();
        Fixture {
            _dir: dir,
            root,
            port,
            token_file,
            issuer,
            _stop: stop,
        }
    }

    fn client(&self, roots: Vec<rustls::pki_types::CertificateDer<'static>>) -> RemoteCa {
        RemoteCa::new(RemoteCaOptions {
            address: format!("https://127.0.0.1:{}", self.port),
            token_file: self.token_file.clone(),
            roots,
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::for_workload("cluster.local", "shop", sa)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_over_the_remote_ca_gets_working_certificates() {
    let f = Fixture::start().await;
    let ca = remote_authority(RemoteCaOptions {
        address: format!("https://127.0.0.1:{}/", f.port),
        token_file: f.token_file.clone(),
        roots: vec![f.root.clone()],
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let registry = prometheus::Registry::new();
    let config = CertConfig {
        lifetime: Duration::from_secs(120),
        jitter: 0.0,
    };
    // `set_wanted` calls the sync `issue` on a runtime worker (block_in_place).
    let certs = CertManager::new(ca, config, &registry).unwrap();
    let (a, b) = (id("frontend"), id("reviews"));
    assert_eq!(certs.set_wanted([a.clone(), b.clone()]), vec![]);
    let held = certs.credential(&a).unwrap();
    assert_eq!(held.cert.identity, a);
    assert_eq!(held.cert.chain.last(), Some(&f.root));
    let left = held
        .cert
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(100) && left <= Duration::from_secs(121),
        "{left:?}"
    );
    assert_eq!(held.cert.serial.len(), 32, "{}", held.cert.serial);
    // The two certificates work together in a handshake.
    let (c, s) = tokio::io::duplex(64 * 1024);
    let server_config = certs.server_config(&b).unwrap();
    let server = tokio::spawn(async move { tls::accept(s, server_config).await.map(|(_, id)| id) });
    // The client stays open until the server is done (it sends session tickets).
    let client = tls::connect(c, certs.client_config(&a, &b).unwrap())
        .await
        .unwrap();
    assert_eq!(tls::peer_identity(client.get_ref().1).unwrap(), b);
    assert_eq!(server.await.unwrap().unwrap(), a);
    drop(client);
}

#[tokio::test]
async fn refusals_carry_the_cas_reason_and_the_token_is_read_each_time() {
    let f = Fixture::start().await;
    // A current-thread runtime: `issue` runs the request on a thread of its own.
    let client = f.client(vec![f.root.clone()]);
    let e = CertificateAuthority::issue(&client, &id("forbidden"), Duration::from_secs(60))
        .unwrap_err();
    let text = format!("{e:#}");
    assert!(text.contains("refused (403)"), "{text}");
    assert!(
        text.contains("node \"node-b\" may not have spiffe://cluster.local/ns/shop/sa/forbidden"),
        "{text}"
    );

    std::fs::write(&f.token_file, "stale").unwrap();
    match client
        .request(&id("frontend"), Duration::from_secs(60))
        .await
    {
        Err(CaClientError::Refused {
            status: 401,
            reason,
            ..
        }) => {
            assert!(reason.contains("\"stale\" is not valid"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The kubelet rotated the token: the next request uses the new one.
    std::fs::write(&f.token_file, "good").unwrap();
    let cert = client
        .request(&id("frontend"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cert.identity, id("frontend"));
    assert_eq!(*f.issuer.tokens.lock().unwrap(), ["good", "stale", "good"]);

    std::fs::remove_file(&f.token_file).unwrap();
    assert!(matches!(
        client
            .request(&id("frontend"), Duration::from_secs(60))
            .await,
        Err(CaClientError::Token { .. })
    ));
}

#[tokio::test]
async fn the_cas_certificate_is_checked_against_the_trust_bundle() {
    let f = Fixture::start().await;
    let other_dir = tempfile::tempdir().unwrap();
    LocalCa::init(other_dir.path()).unwrap();
    let other = LocalCa::load(other_dir.path())
        .unwrap()
        .certificate()
        .clone();

    let client = f.client(vec![other.clone()]);
    let e = client
        .request(&id("frontend"), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(e, CaClientError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("not signed by a trusted CA"), "{e}");
    assert!(
        f.issuer.tokens.lock().unwrap().is_empty(),
        "no token sent to an untrusted server"
    );

    // The bundle gains the CA's root (a rotation's first step): trusted.
    client.roots_changed(&[other, f.root.clone()]);
    assert_eq!(client.roots().len(), 2);
    client
        .request(&id("frontend"), Duration::from_secs(60))
        .await
        .unwrap();

    // A name the serving certificate does not carry.
    let by_name = RemoteCa::new(RemoteCaOptions {
        address: format!("https://localhost:{}", f.port),
        token_file: f.token_file.clone(),
        roots: vec![f.root.clone()],
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let e = by_name
        .request(&id("frontend"), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(e, CaClientError::Unreachable { .. }), "{e}");
}

#[test]
fn addresses_must_be_https_urls() {
    for bad in ["http://weft-ca:15012", "weft-ca:15012", "https://"] {
        let opts = RemoteCaOptions {
            address: bad.into(),
            token_file: "/nonexistent".into(),
            roots: vec![],
            timeout: Duration::from_secs(1),
        };
        assert!(RemoteCa::new(opts).is_err(), "{bad}");
    }
}
