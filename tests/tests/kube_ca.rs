//! The CA service (`mesh-agent ca serve`, the built binary) against a real
//! API server, with the RBAC of `manifests/` for its ServiceAccount and the
//! agent's: it signs an identity only for the node where a pod of it is
//! scheduled, refuses tokens for another audience, not bound to a pod, or of
//! another ServiceAccount; it publishes the trust bundle, which agents read
//! and watch; and a root rotation goes through without a refused handshake.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::agent_binary;
use lab::kube::{API_AUDIENCES, ControlPlane, KubeLab};
use mesh_agent::identity::tls::{self, accept, client_config, connect, provider, root_store};
use mesh_agent::identity::{
    CaClientError, CertConfig, CertManager, CertificateDer, IssuedCert, LocalCa, RemoteCa,
    RemoteCaOptions, SpiffeId, ca_server, fetch_trust_bundle, pem_certificates, remote_authority,
    watch_trust_bundle,
};

const NS: &str = "weft-system";
const AGENT_SA: &str = "weft-agent";
/// The name the agent's Role allows it to read.
const BUNDLE: &str = "weft-trust-bundle";
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Polls `f` until it returns `Some`, for up to `secs` seconds.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = f()? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// weft-system, the CA's and the agent's ServiceAccounts and RBAC, exactly as
/// `manifests/` has them (server-side apply: idempotent, tests may race).
fn install_rbac(cp: &ControlPlane) -> Result<()> {
    let manifests = Path::new(REPO).join("../manifests");
    for file in [
        "namespace.yaml",
        "ca/serviceaccount.yaml",
        "ca/rbac.yaml",
        "agent/serviceaccount.yaml",
        "agent/rbac.yaml",
    ] {
        let path = manifests.join(file);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        cp.apply_yaml(&text)
            .with_context(|| format!("apply {}", path.display()))?;
    }
    Ok(())
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// A running `mesh-agent ca serve`, on loopback, authenticated to the API
/// server with a token of the `weft-ca` ServiceAccount.
struct CaServer {
    addr: SocketAddr,
    ca_dir: PathBuf,
    log: PathBuf,
}

impl CaServer {
    fn start(kl: &KubeLab, bundle: &str) -> Result<CaServer> {
        let cp = kl.cp();
        let dir = kl.lab().run_dir().join(format!("ca-{bundle}"));
        let ca_dir = dir.join("ca");
        LocalCa::init(&ca_dir)?;
        let token = cp.token(NS, "weft-ca", API_AUDIENCES[0], None)?;
        let kubeconfig = dir.join("ca.kubeconfig");
        cp.write_token_kubeconfig(&kubeconfig, &token, None)?;
        let addr = free_port()?;
        let log = dir.join("ca.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(agent_binary()?);
        cmd.args(["ca", "serve"])
            .arg(format!("--listen={addr}"))
            .arg(format!("--ca-dir={}", ca_dir.display()))
            .arg(format!("--trust-bundle-configmap={bundle}"))
            .arg(format!("--namespace={NS}"))
            .arg("--audience=weft-ca")
            .arg(format!("--agent-service-account={NS}/{AGENT_SA}"))
            .arg("--serving-ip=127.0.0.1")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--poll-interval=1s")
            .arg("--max-cert-lifetime=1h")
            .env("RUST_LOG", "info")
            .stdout(out.try_clone()?)
            .stderr(out);
        kl.spawn(cmd)?;
        let server = CaServer { addr, ca_dir, log };
        wait_for("the CA's bundle ConfigMap", 30, || {
            Ok(cp
                .kubectl(&["get", "configmap", bundle, "-n", NS])
                .is_ok()
                .then_some(()))
        })
        .map_err(|e| e.context(server.log_text()))?;
        Ok(server)
    }

    fn root(&self) -> Result<CertificateDer<'static>> {
        Ok(LocalCa::load(&self.ca_dir)?.certificate().clone())
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn log_text(&self) -> String {
        format!(
            "CA log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// A client as an agent makes it, with the token in `token_file`.
    fn client(&self, token_file: &Path, roots: Vec<CertificateDer<'static>>) -> Result<RemoteCa> {
        RemoteCa::new(RemoteCaOptions {
            address: self.url(),
            token_file: token_file.to_owned(),
            roots,
            timeout: Duration::from_secs(10),
        })
    }
}

/// The roots in a bundle ConfigMap, read as the admin.
fn bundle_roots(cp: &ControlPlane, name: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = cp.kubectl(&[
        "get",
        "configmap",
        name,
        "-n",
        NS,
        "-o",
        "jsonpath={.data.roots\\.pem}",
    ])?;
    pem_certificates(&pem)
}

/// An agent pod (hostNetwork, as the DaemonSet's) on `node`; returns (name, uid).
fn run_agent_pod(kl: &mut KubeLab, node: &str) -> Result<(String, String)> {
    let name = format!("{}-agent-{node}", kl.id());
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "serviceAccountName": AGENT_SA,
            "hostNetwork": true,
            "containers": [{ "name": "agent", "image": "weft.dev/agent:lab", "command": ["sleep", "infinity"] }],
        },
    });
    let pod = kl.run_pod(node, &manifest.to_string())?;
    Ok((pod.name.clone(), pod.uid.clone()))
}

/// A workload pod running as service account `sa` on `node`.
fn run_workload(kl: &mut KubeLab, node: &str, ns: &str, name: &str, sa: &str) -> Result<String> {
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "serviceAccountName": sa,
            "containers": [{ "name": "app", "image": "weft.dev/app:lab", "command": ["sleep", "infinity"] }],
        },
    });
    Ok(kl.run_pod(node, &manifest.to_string())?.uid.clone())
}

fn write_token(kl: &KubeLab, name: &str, token: &str) -> Result<PathBuf> {
    let path = kl.lab().run_dir().join(format!("{name}.token"));
    std::fs::write(&path, token)?;
    Ok(path)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The certificate verifies against `roots` in a real handshake (with itself
/// on both ends), and the peer's identity read from it is `id`.
fn check_against_bundle(
    rt: &tokio::runtime::Runtime,
    cert: &IssuedCert,
    roots: &[CertificateDer<'static>],
    id: &SpiffeId,
) -> Result<()> {
    let store = root_store(roots)?;
    let server = tls::server_config(cert, store.clone(), provider())?;
    let client = client_config(cert, store, id, provider())?;
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(16 * 1024);
        let server = tokio::spawn(async move { accept(b, server).await.map(|(_, id)| id) });
        let stream = connect(a, client).await?;
        let seen_by_client = tls::peer_identity(stream.get_ref().1)?;
        let seen_by_server = server.await??;
        anyhow::ensure!(seen_by_client == *id && seen_by_server == *id);
        Ok(())
    })
}

fn refused(result: Result<IssuedCert, CaClientError>) -> Result<(u16, String)> {
    match result {
        Err(CaClientError::Refused { status, reason, .. }) => Ok((status, reason)),
        Err(other) => bail!("expected a refusal, got {other}"),
        Ok(cert) => bail!(
            "expected a refusal, got a certificate for {}",
            cert.identity
        ),
    }
}

#[test]
fn the_ca_signs_only_for_pods_on_the_callers_node() -> Result<()> {
    let cp = ControlPlane::shared()?;
    install_rbac(&cp)?;
    let mut kl = KubeLab::new(cp.clone())?;
    kl.add_node("a")?;
    kl.add_node("b")?;
    let (node_a, node_b) = (kl.node("a")?.object.clone(), kl.node("b")?.object.clone());
    let shop = format!("{}-shop", kl.id());
    kl.create_namespace(&shop, &[("weft.dev/mesh", "enabled")])?;
    cp.kubectl(&["create", "serviceaccount", "frontend", "-n", &shop])?;
    let frontend_uid = run_workload(&mut kl, "a", &shop, "frontend-1", "frontend")?;
    let agent_a = run_agent_pod(&mut kl, "a")?;
    let agent_b = run_agent_pod(&mut kl, "b")?;

    // A bundle of its own: the other test's CA publishes `weft-trust-bundle`.
    let bundle = format!("{}-bundle", kl.id());
    let ca = CaServer::start(&kl, &bundle)?;
    let roots = bundle_roots(&cp, &bundle)?;
    assert_eq!(roots, vec![ca.root()?], "the bundle holds the CA's root");

    // /healthz over HTTPS, the serving certificate checked against the bundle.
    let bundle_file = kl.lab().run_dir().join("bundle.pem");
    std::fs::write(&bundle_file, ca_server::bundle_pem(&roots))?;
    let health = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&bundle_file)
        .arg(format!("{}/healthz", ca.url()))
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&health.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );

    let token = |sa_ns: &str, sa: &str, audience: &str, pod: Option<&(String, String)>| {
        kl.token(
            sa_ns,
            sa,
            audience,
            pod.map(|(name, uid)| (name.as_str(), uid.as_str())),
        )
    };
    let rt = runtime()?;
    let frontend = SpiffeId::for_workload("cluster.local", &shop, "frontend");
    let ask = |token_file: &Path, id: &SpiffeId| -> Result<Result<IssuedCert, CaClientError>> {
        let client = ca.client(token_file, roots.clone())?;
        Ok(rt.block_on(client.request(id, Duration::from_secs(600))))
    };

    // Node A's agent, for the pod on node A: signed, chains to the bundle, names it.
    let a_token = write_token(
        &kl,
        "agent-a",
        &token(NS, AGENT_SA, "weft-ca", Some(&agent_a))?,
    )?;
    let cert = ask(&a_token, &frontend)?.map_err(|e| anyhow::anyhow!("{e}\n{}", ca.log_text()))?;
    assert_eq!(cert.identity, frontend);
    assert_eq!(cert.chain.last(), Some(&roots[0]));
    let lifetime = cert.lifetime();
    assert!(
        lifetime > Duration::from_secs(590) && lifetime < Duration::from_secs(800),
        "{lifetime:?}"
    );
    check_against_bundle(&rt, &cert, &roots, &frontend)?;

    // Node B's agent, for the same identity: its pod is on node A.
    let b_token = write_token(
        &kl,
        "agent-b",
        &token(NS, AGENT_SA, "weft-ca", Some(&agent_b))?,
    )?;
    let (status, reason) = refused(ask(&b_token, &frontend)?)?;
    assert_eq!(status, 403, "{reason}");
    assert!(reason.contains(&format!("node {node_b:?}")), "{reason}");
    assert!(reason.contains(&frontend.to_string()), "{reason}");
    assert!(reason.contains("no pod of namespace"), "{reason}");

    // Node A's agent, for an identity with no pod anywhere.
    let nobody = SpiffeId::for_workload("cluster.local", &shop, "nobody");
    let (status, reason) = refused(ask(&a_token, &nobody)?)?;
    assert_eq!(status, 403, "{reason}");
    assert!(reason.contains(&format!("node {node_a:?}")), "{reason}");

    // A token of the agent for the API server's audience, not the CA's.
    let api_aud = write_token(
        &kl,
        "agent-a-api",
        &token(NS, AGENT_SA, API_AUDIENCES[0], Some(&agent_a))?,
    )?;
    let (status, reason) = refused(ask(&api_aud, &frontend)?)?;
    assert_eq!(status, 401, "{reason}");
    assert!(reason.contains("audience"), "{reason}");

    // A token of the agent's ServiceAccount bound to no pod: no node.
    let unbound = write_token(&kl, "agent-unbound", &token(NS, AGENT_SA, "weft-ca", None)?)?;
    let (status, reason) = refused(ask(&unbound, &frontend)?)?;
    assert_eq!(status, 401, "{reason}");
    assert!(reason.contains("not bound to a pod"), "{reason}");

    // The workload's own token, bound to its pod on node A: not the agent.
    let frontend_pod = ("frontend-1".to_owned(), frontend_uid);
    let workload = write_token(
        &kl,
        "frontend",
        &token(&shop, "frontend", "weft-ca", Some(&frontend_pod))?,
    )?;
    let (status, reason) = refused(ask(&workload, &frontend)?)?;
    assert_eq!(status, 401, "{reason}");
    assert!(
        reason.contains(&format!("system:serviceaccount:{shop}:frontend")),
        "{reason}"
    );

    // A CSR for another trust domain.
    let elsewhere = SpiffeId::for_workload("other.domain", &shop, "frontend");
    let (status, reason) = refused(ask(&a_token, &elsewhere)?)?;
    assert_eq!(status, 400, "{reason}");

    // The pod has terminated: its identity is not signed any more.
    cp.kubectl(&[
        "patch",
        "pod",
        "frontend-1",
        "-n",
        &shop,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded"}}"#,
    ])?;
    let (status, reason) = refused(ask(&a_token, &frontend)?)?;
    assert_eq!(status, 403, "{reason}");
    assert!(reason.contains("terminated"), "{reason}");

    // Every decision is in the CA's log.
    let log = ca.log_text();
    assert!(log.contains("certificate issued"), "{log}");
    assert!(log.contains("certificate refused"), "{log}");
    Ok(())
}

#[test]
fn a_root_rotation_reaches_agents_through_the_bundle() -> Result<()> {
    let cp = ControlPlane::shared()?;
    install_rbac(&cp)?;
    let mut kl = KubeLab::new(cp.clone())?;
    kl.add_node("a")?;
    let shop = format!("{}-shop", kl.id());
    kl.create_namespace(&shop, &[])?;
    for sa in ["frontend", "reviews"] {
        cp.kubectl(&["create", "serviceaccount", sa, "-n", &shop])?;
        run_workload(&mut kl, "a", &shop, &format!("{sa}-1"), sa)?;
    }
    let agent = run_agent_pod(&mut kl, "a")?;
    let ca = CaServer::start(&kl, BUNDLE)?;
    let old = ca.root()?;

    // The agent's view: its API token (the agent's RBAC: the named ConfigMap
    // only) and its CA token.
    let api_token = kl.token(NS, AGENT_SA, API_AUDIENCES[0], Some((&agent.0, &agent.1)))?;
    let kubeconfig = kl.lab().run_dir().join("agent.kubeconfig");
    cp.write_token_kubeconfig(&kubeconfig, &api_token, None)?;
    let ca_token = write_token(
        &kl,
        "agent",
        &kl.token(NS, AGENT_SA, "weft-ca", Some((&agent.0, &agent.1)))?,
    )?;
    let rt = runtime()?;
    let client = rt.block_on(ca_server::kube_client(Some(&kubeconfig)))?;
    let roots = rt.block_on(fetch_trust_bundle(&client, NS, BUNDLE))?;
    assert_eq!(roots, vec![old.clone()]);
    let remote = remote_authority(RemoteCaOptions {
        address: ca.url(),
        token_file: ca_token,
        roots,
        timeout: Duration::from_secs(10),
    })?;
    let metrics = mesh_agent::telemetry::Metrics::new()?;
    let config = CertConfig {
        lifetime: Duration::from_secs(3600),
        jitter: 0.0,
    };
    let certs = CertManager::new(remote, config, metrics.registry())?;
    let watch = rt.spawn(watch_trust_bundle(
        client,
        NS.to_owned(),
        BUNDLE.to_owned(),
        certs.clone(),
    ));
    // Renewals, as the agent runs them (the task is aborted at the end).
    let renewals = rt.spawn(certs.clone().run_renewals(Default::default()));
    let (frontend, reviews) = (
        SpiffeId::for_workload("cluster.local", &shop, "frontend"),
        SpiffeId::for_workload("cluster.local", &shop, "reviews"),
    );
    let failed = certs.set_wanted([frontend.clone()]);
    assert!(failed.is_empty(), "{failed:?}\n{}", ca.log_text());
    assert_eq!(
        certs.credential(&frontend).unwrap().cert.chain.last(),
        Some(&old)
    );

    // Step 1: the next root joins the bundle; agents trust both.
    let next_dir = kl.lab().run_dir().join("next-ca");
    LocalCa::init(&next_dir)?;
    let new = LocalCa::load(&next_dir)?.certificate().clone();
    let extra = ca.ca_dir.join("extra-roots.pem");
    std::fs::copy(next_dir.join("ca.crt"), &extra)?;
    wait_for("both roots at the agent", 30, || {
        let r = certs.roots();
        Ok((r.len() == 2 && r.contains(&old) && r.contains(&new)).then_some(()))
    })?;

    // Step 2: the CA signs with the next key; the previous root stays in the bundle.
    std::fs::copy(ca.ca_dir.join("ca.crt"), &extra)?;
    std::fs::copy(next_dir.join("ca.key"), ca.ca_dir.join("ca.key"))?;
    std::fs::copy(next_dir.join("ca.crt"), ca.ca_dir.join("ca.crt"))?;
    wait_for("the CA to sign with the next key", 30, || {
        if certs.roots().first() != Some(&new) {
            return Ok(None);
        }
        certs.set_wanted([frontend.clone()]);
        let failed = certs.set_wanted([frontend.clone(), reviews.clone()]);
        anyhow::ensure!(failed.is_empty(), "{failed:?}");
        Ok(Some(()))
    })?;
    let reviews_cert = certs.credential(&reviews).unwrap();
    assert_eq!(reviews_cert.cert.chain.last(), Some(&new));
    assert_eq!(
        certs.credential(&frontend).unwrap().cert.chain.last(),
        Some(&old)
    );
    // Old-root and new-root certificates accept each other.
    handshake(&rt, &certs, &frontend, &reviews)?;
    handshake(&rt, &certs, &reviews, &frontend)?;

    // Step 3: the previous root leaves the bundle; the agent renews what
    // chained to it at once, from the CA.
    std::fs::remove_file(&extra)?;
    wait_for("the old root to leave, and frontend renewed", 30, || {
        let renewed = certs.credential(&frontend).unwrap().cert.chain.last() == Some(&new);
        Ok((certs.roots() == [new.clone()] && renewed).then_some(()))
    })
    .map_err(|e| e.context(ca.log_text()))?;
    assert_eq!(bundle_roots(&cp, BUNDLE)?, vec![new.clone()]);
    handshake(&rt, &certs, &frontend, &reviews)?;
    handshake(&rt, &certs, &reviews, &frontend)?;

    renewals.abort();
    watch.abort();
    Ok(())
}

/// `from` dials `to` with the manager's configs: both ends verify each other.
fn handshake(
    rt: &tokio::runtime::Runtime,
    certs: &CertManager,
    from: &SpiffeId,
    to: &SpiffeId,
) -> Result<()> {
    let client = certs.client_config(from, to)?;
    let server = certs.server_config(to).context("no server side")?;
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(16 * 1024);
        let server = tokio::spawn(async move { accept(b, server).await.map(|(_, id)| id) });
        let stream = connect(a, client).await?;
        anyhow::ensure!(tls::peer_identity(stream.get_ref().1)? == *to);
        anyhow::ensure!(server.await?? == *from);
        Ok(())
    })
}
