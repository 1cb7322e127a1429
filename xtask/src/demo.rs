//! `cargo xtask demo`: Weft at work in a lab of two nodes (examples/mesh.yaml),
//! torn down at the end.

use anyhow::Result;
use lab::{MeshLab, agent_binary};

use crate::{cargo, setup, step};

pub(crate) fn say(text: &str) {
    println!("\n==> {text}");
}

pub(crate) fn show(out: std::process::Output) {
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

pub fn run() -> Result<()> {
    setup::base()?;
    step(
        "build the agent and the lab's tools",
        cargo().args(["build", "--workspace", "--bins"]),
    )?;
    crate::remove_lab_leftovers()?;

    say("a lab cluster from examples/mesh.yaml: nodes and pods are network namespaces");
    let mut mesh = MeshLab::without_agents()?;
    for node in mesh.lab.nodes() {
        let pods: Vec<String> = mesh
            .lab
            .pods()
            .iter()
            .filter(|p| p.node == node.name)
            .map(|p| format!("{} {}", p.name, p.ip))
            .collect();
        println!("{}: {}", node.name, pods.join(", "));
    }
    println!("namespaces shop and payments are meshed (payments in strict mTLS); legacy is not");

    say("mesh-agent check: the kernel prerequisites on this machine");
    let bpffs = mesh.lab.bpffs("demo-check")?;
    let agent = agent_binary()?;
    show(
        std::process::Command::new(&agent)
            .args(["check", "--bpffs-dir"])
            .arg(&bpffs)
            .output()?,
    );

    say("start one agent per node (in the node's netns, attached to the lab cgroup)");
    for node in ["node-a", "node-b"] {
        let a = mesh.start_agent(node)?;
        println!("{node}: mesh-agent pid {} (log {})", a.pid, a.log.display());
    }

    say("mesh-agent status on node-a");
    show(mesh.agent_cli("node-a", &["status"])?);

    say("a meshed pod (shop/frontend on node-a) calls the payments Service 10.96.1.10:443");
    let (peer, seen) = mesh.ping("frontend-7d9f-a", "10.96.1.10:443")?;
    println!("the client's socket says its peer is {peer}: it believes it talks to the Service");
    println!(
        "the payments server saw the connection come from {seen}: the frontend pod's address, \
         which the server's agent keeps when it dials the app from the tunnel"
    );

    say("a meshed pod calls a pod of the unmeshed legacy namespace on node-b");
    let (_, seen) = mesh.ping("frontend-7d9f-a", "10.88.2.13:8000")?;
    println!("captured, then sent directly from the pod's own address: the server saw {seen}");

    say("an unmeshed pod (legacy/inventory-0) calls the other inventory pod: not captured");
    let (_, seen) = mesh.ping("inventory-0", "10.88.2.13:8000")?;
    println!("the server saw {seen}: straight from the pod, no agent involved");

    say("shop/reviews calls payments: payments/payments-allow-frontend admits only shop/frontend");
    let out = mesh.load_from("reviews-v1-5c4b-a", &["say", "10.96.1.10:443", "hello"])?;
    if out.status.success() {
        anyhow::bail!("the policy should have refused shop/reviews");
    }
    println!(
        "the client is refused: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    for node in ["node-a", "node-b"] {
        let log = mesh.agent(node)?.log();
        if let Some(line) = log.lines().rfind(|l| l.contains("refused by policy")) {
            println!("{node}'s agent (the destination) logged: {line}");
        }
    }

    say("HTTP by Gateway API rules: shop/frontend curls the reviews Service 10.96.0.20:9080");
    println!(
        "its HTTPRoute (examples/mesh.yaml) sends x-canary: true to reviews-v2, the rest 90/10 to v1/v2"
    );
    let frontend = mesh.pod("frontend-7d9f-a")?;
    let canary = lab::http::curl(
        frontend,
        &["-H", "x-canary: true", "http://10.96.0.20:9080/ratings"],
    )?;
    println!(
        "curl -H 'x-canary: true' http://10.96.0.20:9080/ratings -> {} from {}",
        canary.status,
        canary.pod()?
    );
    let answers = lab::http::curl_many(frontend, "http://10.96.0.20:9080/", 200, &[])?;
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for pod in lab::http::pods_of(&answers) {
        *tally.entry(pod).or_default() += 1;
    }
    println!("200 requests on one kept-alive connection, each routed on its own:");
    for (pod, n) in &tally {
        println!("  {pod:<20} {n:>4}");
    }

    say(
        "mesh-agent routes on node-a: each route's Accepted and ResolvedRefs, as in a cluster's status",
    );
    show(mesh.agent_cli("node-a", &["routes"])?);

    say("what node-a's agent counted for those requests (istio_requests_total, reporter source)");
    let metrics = mesh.metrics("node-a")?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"source\""))
    {
        println!("{line}");
    }

    say("an unmeshed pod aims at shop/frontend's agent port 10.88.1.10:15006 itself");
    let started = std::time::Instant::now();
    let out = mesh.load_from("inventory-0", &["say", "10.88.1.10:15006", "loop?"])?;
    if out.status.success() {
        anyhow::bail!("the agent should refuse its own port as a target");
    }
    println!(
        "reset after {} ms, never dialled (the agent's own ports are never a target): {}",
        started.elapsed().as_millis(),
        String::from_utf8_lossy(&out.stderr).trim()
    );

    say("mesh-agent certs on node-a: a certificate per workload identity on the node");
    show(mesh.agent_cli("node-a", &["certs"])?);

    say("what node-a's agent reports on :15020/metrics (mutual TLS, with both principals)");
    let metrics = mesh.metrics("node-a")?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_opened_total"))
    {
        println!("{line}");
    }
    say("the kernel programs' own log lines (aya-log), in node-a's agent log");
    let log = mesh.agent("node-a")?.log();
    for line in log.lines().filter(|l| l.contains("mesh_ebpf")).take(4) {
        println!("{line}");
    }

    say("tearing the lab down");
    drop(mesh);
    let left = lab::leftovers();
    anyhow::ensure!(
        left.is_empty(),
        "the demo left lab objects behind: {left:?}"
    );
    println!("nothing left behind. Done.");
    Ok(())
}
