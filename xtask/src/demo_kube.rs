//! `cargo xtask demo --kube`: Weft on a real Kubernetes API server. A local
//! control plane (etcd, kube-apiserver, kube-controller-manager), Weft
//! installed from `manifests/` with kubectl, two lab nodes whose agents and the
//! CA run with the manifests' commands, a namespace opted in, mTLS between its
//! two pods, and `mesh-agent check --kubeconfig` green; torn down at the end.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::cluster::{Cluster, SYSTEM_NAMESPACE};
use lab::kube::ControlPlane;
use lab::{agent_binary, metric_sum};

use crate::demo::{say, show};
use crate::{cargo, setup, step};

const NS: &str = "demo";

pub fn run() -> Result<()> {
    let started = Instant::now();
    if !kube_binaries_present() {
        println!(
            "The Kubernetes binaries (kube-apiserver, kube-controller-manager, kubectl, etcd) are not \
             built yet: setup builds them now, which takes ~5-10 minutes the first time."
        );
    }
    setup::run()?;
    step(
        "build the agent and the lab's tools",
        cargo().args(["build", "--workspace", "--bins"]),
    )?;
    // Other labs may be running (tests): they are left alone, and only this
    // run's objects must be gone at the end.
    let others = lab::leftovers();
    if !others.is_empty() {
        println!(
            "note: {} lab objects of other runs exist; left alone (`cargo xtask lab clean` \
             removes them once nothing runs)",
            others.len()
        );
    }

    say(
        "start a local control plane: etcd, kube-apiserver and kube-controller-manager on loopback \
         (fresh PKI, RBAC on, no kubelet: the lab plays kubelet)",
    );
    let cp = Arc::new(ControlPlane::start()?);
    println!(
        "API server {}; admin kubeconfig {}",
        cp.server(),
        cp.kubeconfig().display()
    );
    let result = demo(&cp);
    say("tearing everything down");
    drop(cp);
    let left = ours(lab::leftovers());
    if !left.is_empty() {
        bail!("the demo left lab objects behind: {left:?}");
    }
    result?;
    println!(
        "nothing left behind. Done in {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Lab objects made by this process: lab ids start with `wl<pid>`.
fn ours(items: Vec<String>) -> Vec<String> {
    let prefix = format!("{}{:x}", lab::PREFIX, std::process::id() & 0xffff);
    items
        .into_iter()
        .filter(|i| i.contains(&format!(" {prefix}")) || i.contains(&format!("/{prefix}")))
        .collect()
}

fn kube_binaries_present() -> bool {
    lab::kube::bin_dir().is_ok_and(|bin| {
        lab::kube::TOOLS
            .iter()
            .chain([&lab::kube::ETCD_TOOL])
            .all(|(name, _)| bin.join(name).is_file())
    })
}

/// Everything between start and teardown; the cluster drops before the
/// control plane.
fn demo(cp: &Arc<ControlPlane>) -> Result<()> {
    say(
        "install Weft as docs/install.md says: the Gateway API route CRDs, `kubectl apply \
         --server-side -k manifests/`, the CA key Secret from `mesh-agent ca init`; two nodes; \
         the CA service run with the weft-ca Deployment's command, args and env",
    );
    let mut c = Cluster::new(cp.clone(), &["a", "b"])?;
    println!(
        "nodes {} and {} (network namespaces registered as Node objects); CA at {} for the \
         Service's cluster IP {}:{}",
        c.klab.node("a")?.object,
        c.klab.node("b")?.object,
        c.ca.addr,
        c.ca.cluster_ip,
        c.ca.port
    );

    say("start each node's agent with the weft-agent DaemonSet's command, args and env");
    for node in ["a", "b"] {
        let object = c.klab.node(node)?.object.clone();
        let agent = c.start_agent(node)?;
        println!(
            "{object}: mesh-agent pid {}, pod {} Ready (log {})",
            agent.pid,
            agent.pod.0,
            agent.log.display()
        );
    }
    say("kubectl -n weft-system rollout status daemonset/weft-agent");
    print!(
        "{}",
        c.cp().kubectl(&[
            "rollout",
            "status",
            "daemonset/weft-agent",
            "-n",
            SYSTEM_NAMESPACE,
            "--timeout=60s",
        ])?
    );

    say(&format!(
        "namespace {NS}: pod client on node a, pod server (python http.server :8080) on node b, \
         Service server:80"
    ));
    workloads(&mut c)?;
    let service_ip = c.service_ip(NS, "server")?;
    println!("Service server: {service_ip}:80");

    say(&format!(
        "kubectl label namespace {NS} weft.dev/mesh=enabled"
    ));
    print!(
        "{}",
        c.cp()
            .kubectl(&["label", "namespace", NS, "weft.dev/mesh=enabled"])?
    );
    c.wait_until("both pods enrolled", Duration::from_secs(30), || {
        ["a", "b"].iter().all(|n| {
            c.agent(n)
                .is_ok_and(|a| a.log_text().contains("pod enrolled"))
        })
    })?;
    println!("both agents enrolled their node's pod (captured from the next connect on)");

    say(&format!(
        "client -> http://{service_ip}/ (curl in the client pod; the lab has no kube-proxy, \
         so only the mesh resolves the Service)"
    ));
    let url = format!("http://{service_ip}/");
    c.wait_until("a meshed request succeeds", Duration::from_secs(30), || {
        curl(&c, &url).is_ok_and(|code| code == "200")
    })?;
    println!("HTTP {}", curl(&c, &url)?);

    say("what the agents report on :15020/metrics: mutual TLS, with both SPIFFE principals");
    for (node, reporter) in [("a", "source"), ("b", "destination")] {
        let metrics = c.metrics(node)?;
        let lines: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("istio_tcp_connections_opened_total")
                    && l.contains("connection_security_policy=\"mutual_tls\"")
                    && l.contains(&format!("reporter=\"{reporter}\""))
                    && l.contains(&format!("/ns/{NS}/"))
            })
            .collect();
        println!("node {node} ({reporter}):");
        for line in &lines {
            println!("  {line}");
        }
        if let Some(enrolled) = metrics
            .lines()
            .find(|l| l.starts_with("weft_enrolled_pods "))
        {
            println!("  {enrolled}");
        }
        let opened = metric_sum(
            &metrics,
            "istio_tcp_connections_opened_total",
            &[
                ("reporter", reporter),
                ("connection_security_policy", "mutual_tls"),
                (
                    "source_principal",
                    &format!("spiffe://cluster.local/ns/{NS}/sa/client"),
                ),
                (
                    "destination_principal",
                    &format!("spiffe://cluster.local/ns/{NS}/sa/web"),
                ),
            ],
        );
        if opened < 1.0 {
            bail!("node {node}'s agent reports no mTLS connection from client to server");
        }
    }

    say("mesh-agent status on node a");
    show(c.agent_cli("a", &["status"])?);

    say("kubectl get pods -n weft-system -o wide");
    print!(
        "{}",
        c.cp()
            .kubectl(&["get", "pods", "-n", SYSTEM_NAMESPACE, "-o", "wide"])?
    );

    let kubeconfig = c.cp().kubeconfig().display().to_string();
    let ca = c.ca.addr.to_string();
    say(&format!(
        "mesh-agent check --kubeconfig {kubeconfig} --ca-addr {ca}: the installed mesh from this \
         machine, a workstation's view (--ca-addr is where `kubectl port-forward svc/weft-ca` would \
         put the CA: its cluster IP exists only inside the nodes)"
    ));
    let out = Command::new(agent_binary()?)
        .args(["check", "--kubeconfig", &kubeconfig, "--ca-addr", &ca])
        .output()
        .context("run mesh-agent check")?;
    let passed = out.status.success();
    show(out);
    if !passed {
        bail!("mesh-agent check failed");
    }
    Ok(())
}

/// The client and server pods of the demo namespace, their ServiceAccounts
/// (each its own SPIFFE identity) and the Service.
fn workloads(c: &mut Cluster) -> Result<()> {
    c.klab.create_namespace(NS, &[])?;
    for sa in ["client", "web"] {
        c.cp()
            .kubectl(&["create", "serviceaccount", sa, "-n", NS])?;
    }
    let service = format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"server","namespace":"{NS}"}},
"spec":{{"selector":{{"app":"server"}},"ports":[{{"name":"http","port":80,"targetPort":8080}}]}}}}"#
    );
    let server = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"server","namespace":"{NS}","labels":{{"app":"server"}}}},
"spec":{{"serviceAccountName":"web","containers":[{{"name":"web","image":"python","command":["python3","-m","http.server","8080"],"ports":[{{"containerPort":8080}}]}}]}}}}"#
    );
    let client = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"client","namespace":"{NS}"}},
"spec":{{"serviceAccountName":"client","containers":[{{"name":"sleep","image":"busybox","command":["sleep","infinity"]}}]}}}}"#
    );
    c.cp().apply_yaml(&service)?;
    let server = c.klab.run_pod("b", &server)?;
    println!("pod {NS}/server on node b at {}", server.ip);
    let client = c.klab.run_pod("a", &client)?;
    println!("pod {NS}/client on node a at {}", client.ip);
    Ok(())
}

/// The HTTP status code of `curl url` from the client pod.
fn curl(c: &Cluster, url: &str) -> Result<String> {
    c.klab.pod(NS, "client")?.http_status(url)
}
