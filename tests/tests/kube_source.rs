//! The agent's cluster source end to end (docs/architecture.md, "The cluster
//! source"): AuthorizationPolicies written with kubectl (deny, allow again, an
//! invalid one refused alone), an API server outage, and a forced watch expiry
//! (410 Gone) with a relist, each against a real API server with Weft installed
//! from `manifests/` and agents run from the DaemonSet (`lab::cluster`). Traffic
//! is real: `weft-load` processes in pods the lab runs as kubelet. Run as root
//! (`cargo xtask test`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use lab::cluster::Cluster;
use lab::kube::ControlPlane;
use lab::{load_binary, metric_sum};
use serde_json::{Value, json};

/// The server's port; its Service listens on 80.
const APP_PORT: u16 = 8080;
const NODES: [&str; 2] = ["a", "b"];

fn load() -> Result<String> {
    Ok(load_binary()?.to_string_lossy().into_owned())
}

/// A meshed namespace `ns` with an echo server (node b, ServiceAccount `web`)
/// behind the Service `server` (port 80) and one idle pod per name in `clients`
/// (node a, each with a ServiceAccount of its own name), agents on both nodes.
/// Returns the cluster and the Service's `ip:80`, once every client reaches it.
fn meshed_cluster(cp: Arc<ControlPlane>, ns: &str, clients: &[&str]) -> Result<(Cluster, String)> {
    let mut c = Cluster::new(cp, &NODES)?;
    c.klab
        .create_namespace(ns, &[("weft.dev/mesh", "enabled")])?;
    for sa in std::iter::once("web").chain(clients.iter().copied()) {
        c.cp()
            .kubectl(&["create", "serviceaccount", sa, "-n", ns])?;
    }
    apply(&c, &service(ns, "server", 80))?;
    let server = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "server", "namespace": ns, "labels": {"app": "server"}},
        "spec": {"serviceAccountName": "web", "containers": [{
            "name": "echo", "image": "weft-load",
            "command": [load()?, "echo", APP_PORT.to_string()],
            "ports": [{"containerPort": APP_PORT}],
        }]},
    });
    c.klab.run_pod("b", &server.to_string())?;
    for name in clients {
        let client = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"serviceAccountName": name, "containers": [{
                "name": "sleep", "image": "busybox", "command": ["sleep", "infinity"],
            }]},
        });
        c.klab.run_pod("a", &client.to_string())?;
    }
    for node in NODES {
        c.start_agent(node)?;
    }
    let addr = format!("{}:80", c.service_ip(ns, "server")?);
    for name in clients {
        c.wait_until(
            &format!("{name} reaches the server through the mesh"),
            Duration::from_secs(60),
            || say(&c, ns, name, &addr).is_ok(),
        )?;
    }
    Ok((c, addr))
}

/// A Service selecting the echo server, `port` → its app port.
fn service(ns: &str, name: &str, port: u16) -> String {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": "server"},
                 "ports": [{"name": "echo", "port": port, "targetPort": APP_PORT}]},
    })
    .to_string()
}

/// `kubectl apply -f -`, as a user applies a file.
fn apply(c: &Cluster, object: &str) -> Result<()> {
    c.cp().kubectl_with_input(&["apply", "-f", "-"], object)?;
    Ok(())
}

fn delete_policy(c: &Cluster, ns: &str, name: &str) -> Result<()> {
    c.cp()
        .kubectl(&["delete", "authorizationpolicy", name, "-n", ns])?;
    Ok(())
}

/// An AuthorizationPolicy on the echo server.
fn policy(ns: &str, name: &str, action: &str, rules: Value) -> String {
    json!({
        "apiVersion": "weft.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "server"}}, "action": action, "rules": rules},
    })
    .to_string()
}

/// DENY connections from ServiceAccount `sa` of `ns` to the echo server.
fn deny(ns: &str, name: &str, sa: &str) -> String {
    let principal = format!("cluster.local/ns/{ns}/sa/{sa}");
    policy(
        ns,
        name,
        "DENY",
        json!([{"from": [{"source": {"principals": [principal]}}]}]),
    )
}

/// One new connection from pod `from` to `addr`: a line sent and echoed.
fn say(c: &Cluster, ns: &str, from: &str, addr: &str) -> Result<()> {
    let out = c
        .klab
        .pod(ns, from)?
        .command(&load()?)
        .args(["say", addr, "hello"])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "{from} → {addr}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `mesh-agent <args>` on `node`; fails unless it exits 0.
fn agent_cli(c: &Cluster, node: &str, args: &[&str]) -> Result<String> {
    let out = c.agent_cli(node, args)?;
    if !out.status.success() {
        bail!(
            "mesh-agent {} on {node}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An open connection from a pod: `weft-load stream`, a line echoed every
/// 100 ms until the connection is closed under it or `secs` pass.
struct OpenConnection {
    child: Child,
    lines: Receiver<String>,
}

impl OpenConnection {
    fn open(c: &Cluster, ns: &str, from: &str, addr: &str, secs: u64) -> Result<OpenConnection> {
        let mut child = c
            .klab
            .pod(ns, from)?
            .command(&load()?)
            .args(["stream", addr, "--secs", &secs.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("the stream's stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let conn = OpenConnection { child, lines };
        let first = conn
            .lines
            .recv_timeout(Duration::from_secs(30))
            .context("the open connection never came up")?;
        ensure!(first.contains("\"up\":true"), "{first}");
        Ok(conn)
    }

    /// How the connection ended (`{"ended":…}`), waiting up to `timeout`.
    fn ended(&self, timeout: Duration) -> Result<String> {
        self.lines
            .recv_timeout(timeout)
            .with_context(|| format!("the connection still carried data after {timeout:?}"))
    }

    /// Still echoing: it has not reported its end.
    fn is_open(&self) -> bool {
        matches!(self.lines.try_recv(), Err(mpsc::TryRecvError::Empty))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// New connections from a pod to an address, one every 200 ms (a line sent and
/// echoed on each), every outcome written down, until stopped: a shell loop in
/// the pod's cgroup and netns, so each connection is captured like an app's.
struct Prober {
    out: PathBuf,
    stop: PathBuf,
}

/// What a prober saw: connections that worked, and each failure with its time.
struct Probes {
    ok: usize,
    failures: Vec<String>,
}

impl Prober {
    fn start(c: &Cluster, ns: &str, from: &str, addr: &str, name: &str) -> Result<Prober> {
        let out = c.dir().join(format!("probe-{name}.log"));
        let stop = c.dir().join(format!("probe-{name}.stop"));
        let script = r#"load=$1 addr=$2 stop=$3
while [ ! -e "$stop" ]; do
  if err=$("$load" say "$addr" probe 2>&1 >/dev/null); then
    echo "ok $(date +%s.%N)"
  else
    echo "fail $(date +%s.%N) $err"
  fi
  sleep 0.2
done
echo done"#;
        let log = std::fs::File::create(&out)?;
        let mut cmd = c.klab.pod(ns, from)?.command("sh");
        cmd.args(["-c", script, "sh", &load()?, addr])
            .arg(&stop)
            .stdout(log.try_clone()?)
            .stderr(log);
        c.klab.spawn(cmd)?;
        let prober = Prober { out, stop };
        c.wait_until(
            "the prober's first connections",
            Duration::from_secs(30),
            || prober.probes().ok >= 3,
        )?;
        Ok(prober)
    }

    fn probes(&self) -> Probes {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        Probes {
            ok: text.lines().filter(|l| l.starts_with("ok ")).count(),
            failures: text
                .lines()
                .filter(|l| l.starts_with("fail "))
                .map(str::to_string)
                .collect(),
        }
    }

    /// Stops the loop after its current connection and returns what it saw.
    fn stop(self) -> Result<Probes> {
        std::fs::write(&self.stop, "")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&self.out)?
            .lines()
            .any(|l| l == "done")
        {
            ensure!(Instant::now() < deadline, "the prober did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(self.probes())
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The agent's log lines since `from` (JSON, one object per line): each
/// line's `fields` (`message`, `kind`, `error`, …).
fn log_fields(c: &Cluster, node: &str, from: u64) -> Result<Vec<Value>> {
    let text = c.agent(node)?.log_text();
    Ok(text
        .get(from as usize..)
        .unwrap_or("")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|mut l| l["fields"].take())
        .collect())
}

/// The agent's watch errors since `from`: (watched kind, error), the trust
/// bundle's watch as `trust-bundle`.
fn watch_errors(c: &Cluster, node: &str, from: u64) -> Result<Vec<(String, String)>> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(log_fields(c, node, from)?
        .iter()
        .filter_map(|f| match f["message"].as_str()? {
            m if m.starts_with("trust-bundle watch failed") => {
                Some(("trust-bundle".to_string(), text(&f["error"])))
            }
            m if m.starts_with("watch failed") => Some((text(&f["kind"]), text(&f["error"]))),
            _ => None,
        })
        .collect())
}

/// A watch error that is the API server's `410 Gone` (reason `Expired`):
/// the resource version the watch resumes from is no longer served.
fn is_gone(error: &str) -> bool {
    error.contains("during watch") && error.ends_with(": Expired")
}

/// Pods the agent on `node` released since `from` (a relist that dropped
/// them for a moment would release and enrol them again).
fn released(c: &Cluster, node: &str, from: u64) -> Result<usize> {
    Ok(log_fields(c, node, from)?
        .iter()
        .filter(|f| f["message"] == "pod released")
        .count())
}

/// The kinds the cluster source watches.
const WATCHED: [&str; 8] = [
    "Namespace",
    "Pod",
    "Service",
    "EndpointSlice",
    "HTTPRoute",
    "GRPCRoute",
    "AuthorizationPolicy",
    "TrafficPolicy",
];

/// Compacts etcd's history up to its current revision, through etcd's v3
/// JSON gateway on its client URL (read from the etcd process's command line),
/// so a watch from any older resource version is answered `410 Gone` by etcd
/// as well. Returns the revision.
fn compact_etcd(cp: &ControlPlane) -> Result<u64> {
    let (_, pid) = cp
        .pids()
        .into_iter()
        .find(|(name, _)| *name == "etcd")
        .context("etcd is not running")?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let url = cmdline
        .split(|b| *b == 0)
        .filter_map(|a| std::str::from_utf8(a).ok())
        .find_map(|a| a.strip_prefix("--listen-client-urls="))
        .context("etcd's client URL")?
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    let post = |path: &str, body: &Value| -> Result<Value> {
        let out = std::process::Command::new("curl")
            .args(["-sSf", "--max-time", "10", "-X", "POST"])
            .arg(format!("{url}{path}"))
            .args(["-d", &body.to_string()])
            .output()?;
        ensure!(
            out.status.success(),
            "POST {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    // Any key's range answer carries the store's current revision ("/" in base64).
    let range = post("/v3/kv/range", &json!({"key": "Lw=="}))?;
    let revision: u64 = range["header"]["revision"]
        .as_str()
        .context("no revision in etcd's answer")?
        .parse()?;
    post(
        "/v3/kv/compaction",
        &json!({"revision": revision.to_string(), "physical": true}),
    )?;
    Ok(revision)
}

#[test]
fn authorization_policies_from_kubectl_deny_then_allow_and_an_invalid_one_is_refused_alone()
-> Result<()> {
    let ns = "authz-kubectl";
    let (c, addr) = meshed_cluster(ControlPlane::shared()?, ns, &["client", "other"])?;

    // DENY the client: its open connection is closed, new ones are refused.
    let open = OpenConnection::open(&c, ns, "client", &addr, 120)?;
    let from_b = c.agent("b")?.log_len();
    apply(&c, &deny(ns, "deny-client", "client"))?;
    let applied = Instant::now();
    let ended = open.ended(Duration::from_secs(60))?;
    ensure!(ended.contains("\"ended\":\"closed\""), "{ended}");
    eprintln!(
        "open connection closed {:?} after kubectl apply",
        applied.elapsed()
    );
    c.agent("b")?.wait_for_log(
        "open connection closed: policy now denies it",
        from_b,
        Duration::from_secs(10),
    )?;
    ensure!(
        say(&c, ns, "client", &addr).is_err(),
        "a new connection from the client is refused"
    );
    say(&c, ns, "other", &addr).context("the policy denies only the client")?;

    // Deleted: allowed again.
    delete_policy(&c, ns, "deny-client")?;
    let took = c.wait_until(
        "the client is allowed again",
        Duration::from_secs(60),
        || say(&c, ns, "client", &addr).is_ok(),
    )?;
    eprintln!("deleted policy stopped applying within {took:?}");

    // An invalid policy beside a valid one. The CRD's schema lets port 0
    // through; the agent refuses it. Had it applied, this ALLOW (whose only
    // rule matches nothing) would refuse every client of the server.
    let invalid = "allow-port-zero";
    apply(
        &c,
        &policy(
            ns,
            invalid,
            "ALLOW",
            json!([{"to": [{"operation": {"ports": [0]}}]}]),
        ),
    )?;
    apply(&c, &deny(ns, "deny-client", "client"))?;
    // One watch delivers a kind's events in order: once the second object
    // applies, the first has been seen.
    c.wait_until("the valid policy applies", Duration::from_secs(60), || {
        say(&c, ns, "client", &addr).is_err()
    })?;
    say(&c, ns, "other", &addr).context("the invalid ALLOW must not apply")?;
    let field = "spec.rules[0].to[0].operation.ports[0]";
    let reason = "port must be between 1 and 65535 (got 0)";
    let listed = format!("AuthorizationPolicy {ns}/{invalid}: {field}: {reason}");
    for node in NODES {
        // Each agent has its watch: node a's may trail b's, which decided above.
        c.wait_until(
            &format!("mesh-agent status on {node} lists the refused policy"),
            Duration::from_secs(30),
            || agent_cli(&c, node, &["status"]).is_ok_and(|s| s.contains(&listed)),
        )?;
        let status = agent_cli(&c, node, &["status"])?;
        ensure!(status.contains("refused objects:"), "{status}");
        let json: Value = serde_json::from_str(&agent_cli(&c, node, &["status", "-o", "json"])?)?;
        let refused = json["refused"].as_array().context("no refused list")?;
        ensure!(
            refused.iter().any(|r| r["kind"] == "AuthorizationPolicy"
                && r["namespace"] == ns
                && r["name"] == invalid
                && r["errors"].to_string().contains(field)),
            "{refused:?}"
        );
        let rejected = metric_sum(
            &c.metrics(node)?,
            "weft_config_rejected_total",
            &[("kind", "AuthorizationPolicy")],
        );
        ensure!(rejected >= 1.0, "rejections counted on {node}: {rejected}");
        let log = c.agent(node)?.log_text();
        ensure!(
            log.lines().any(|l| l.contains("object refused")
                && l.contains(&format!("AuthorizationPolicy {ns}/{invalid}"))
                && l.contains(field)),
            "the agent on {node} logs the refusal with the resource and the field"
        );
    }

    // Deleting the invalid one clears the refusal; the valid one still applies.
    delete_policy(&c, ns, invalid)?;
    c.wait_until(
        "the refusal is gone from status",
        Duration::from_secs(60),
        || {
            NODES.iter().all(|n| {
                agent_cli(&c, n, &["status"]).is_ok_and(|s| !s.contains(&format!("{ns}/{invalid}")))
            })
        },
    )?;
    ensure!(say(&c, ns, "client", &addr).is_err());
    say(&c, ns, "other", &addr)?;
    Ok(())
}

#[test]
fn an_api_server_outage_keeps_the_mesh_on_its_last_state_and_later_changes_apply() -> Result<()> {
    // Its own control plane: this test stops the API server.
    let cp = Arc::new(ControlPlane::start()?);
    let ns = "outage";
    let (c, addr) = meshed_cluster(cp, ns, &["client", "other"])?;
    let open = OpenConnection::open(&c, ns, "client", &addr, 600)?;
    let prober = Prober::start(&c, ns, "client", &addr, "outage")?;
    let offsets: Vec<u64> = NODES
        .iter()
        .map(|n| c.agent(n).map(|a| a.log_len()))
        .collect::<Result<_>>()?;
    let pids: Vec<u32> = NODES
        .iter()
        .map(|n| c.agent(n).map(|a| a.pid))
        .collect::<Result<_>>()?;

    c.cp().stop_apiserver()?;
    let down = Instant::now();
    let before = prober.probes().ok;
    for (node, from) in NODES.iter().zip(&offsets) {
        c.agent(node)?
            .wait_for_log("watch failed", *from, Duration::from_secs(30))?;
    }
    // 30 s without an API server: the agents stay up and ready, and new
    // connections keep going through the mesh on the last state.
    while down.elapsed() < Duration::from_secs(30) {
        for (node, pid) in NODES.iter().zip(&pids) {
            ensure!(alive(*pid), "the agent on {node} died during the outage");
            ensure!(
                c.ready(node)?,
                "the agent on {node} is not ready during the outage"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let during = prober.probes();
    ensure!(
        during.failures.is_empty(),
        "connections failed during the outage: {:?}",
        during.failures
    );
    let new_connections = during.ok - before;
    ensure!(
        new_connections >= 20,
        "only {new_connections} new connections in 30 s"
    );
    ensure!(open.is_open(), "the open connection survived the outage");
    eprintln!("outage: {new_connections} new connections in 30 s, none failed");

    // Back: a change made right away applies once the agents have reconnected
    // (their watches retry with backoff, up to 30 s plus jitter).
    c.cp().start_apiserver()?;
    eprintln!("API server back after {:?}", down.elapsed());
    apply(&c, &deny(ns, "deny-other", "other"))?;
    let took = c.wait_until(
        "a policy written after the outage applies",
        Duration::from_secs(180),
        || say(&c, ns, "other", &addr).is_err(),
    )?;
    eprintln!("policy written after the outage applied within {took:?}");

    let probes = prober.stop()?;
    ensure!(
        probes.failures.is_empty(),
        "connections failed across the outage and the resync: {:?}",
        probes.failures
    );
    ensure!(
        open.is_open(),
        "the open connection survived the outage and the resync"
    );
    eprintln!(
        "{} new connections from the client across the outage and the resync, none failed",
        probes.ok
    );

    // The watch errors are logged, each watch spaced out by its backoff:
    // 0.8 s doubling to 30 s with jitter gives at most 7 retries in the
    // outage and the reconnection, and one 410 at the relist.
    for ((node, from), pid) in NODES.iter().zip(&offsets).zip(&pids) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for (kind, _) in watch_errors(&c, node, *from)? {
            *counts.entry(kind).or_default() += 1;
        }
        eprintln!("watch errors logged on {node}: {counts:?}");
        for kind in WATCHED {
            ensure!(
                counts.get(kind).is_some_and(|n| *n >= 1),
                "{node}: no watch error logged for {kind}: {counts:?}"
            );
        }
        let most = counts.values().max().copied().unwrap_or(0);
        ensure!(
            most <= 12,
            "{node}: a watch logged {most} errors: not backing off ({counts:?})"
        );
        ensure!(
            alive(*pid) && c.ready(node)?,
            "the agent on {node} is ready"
        );
    }
    Ok(())
}

#[test]
fn a_forced_watch_expiry_relists_with_no_gap_in_traffic() -> Result<()> {
    // Its own control plane: this test restarts the API server.
    let cp = Arc::new(ControlPlane::start()?);
    let ns = "expiry";
    let (mut c, addr) = meshed_cluster(cp, ns, &["client", "other"])?;
    apply(&c, &deny(ns, "deny-other", "other"))?;
    c.wait_until("deny-other applies", Duration::from_secs(60), || {
        say(&c, ns, "other", &addr).is_err()
    })?;
    let prober = Prober::start(&c, ns, "client", &addr, "expiry")?;
    let offsets: Vec<u64> = NODES
        .iter()
        .map(|n| c.agent(n).map(|a| a.log_len()))
        .collect::<Result<_>>()?;

    // The nodes lose the API server; the agents' watches stop at the resource
    // versions they last saw.
    c.cut_api_server();
    let cut = Instant::now();
    for (node, from) in NODES.iter().zip(&offsets) {
        c.agent(node)?
            .wait_for_log("watch failed", *from, Duration::from_secs(30))?;
    }
    // Changes they do not see: a policy deleted, one created, a new Service
    // (and the EndpointSlice the controller manager makes for it).
    delete_policy(&c, ns, "deny-other")?;
    apply(&c, &deny(ns, "deny-ghost", "ghost"))?;
    apply(&c, &service(ns, "late", 81))?;
    let late = format!("{}:81", c.service_ip(ns, "late")?);
    c.wait_until(
        "the EndpointSlice of the new Service",
        Duration::from_secs(60),
        || {
            c.cp()
                .kubectl(&[
                    "get",
                    "endpointslices",
                    "-n",
                    ns,
                    "-l",
                    "kubernetes.io/service-name=late",
                    "-o",
                    "jsonpath={.items[*].endpoints[*].addresses[*]}",
                ])
                .is_ok_and(|a| !a.trim().is_empty())
        },
    )?;
    // Their watches can no longer resume: etcd's history is compacted past
    // them, and a restarted API server's watch cache starts after them.
    let revision = compact_etcd(c.cp())?;
    c.cp().stop_apiserver()?;
    c.cp().start_apiserver()?;
    eprintln!("etcd compacted at revision {revision}; API server restarted");
    // A partition of 30 s at least: the watches' retries reach the backoff's
    // longest delays, as in a real outage.
    while cut.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    c.restore_api_server()?;
    let restored = Instant::now();

    // Per node, when its AuthorizationPolicy watch was answered 410 Gone
    // (reason Expired), and when its state had relisted: the deleted policy
    // gone, the new one there.
    let expired = |node: &str, from: u64| -> Result<bool> {
        Ok(watch_errors(&c, node, from)?
            .iter()
            .any(|(kind, e)| kind == "AuthorizationPolicy" && is_gone(e)))
    };
    let dump_has = |node: &str, name: &str| {
        agent_cli(&c, node, &["config", "dump", "-o", "json"])
            .is_ok_and(|d| d.contains(&format!("\"{name}\"")))
    };
    let mut expired_at = [None; NODES.len()];
    let mut relisted_at = [None; NODES.len()];
    while expired_at.iter().chain(&relisted_at).any(Option::is_none) {
        ensure!(
            restored.elapsed() < Duration::from_secs(180),
            "no 410 and relist within 180 s of the restore: 410 {expired_at:?}, relisted {relisted_at:?}"
        );
        for (i, (node, from)) in NODES.iter().zip(&offsets).enumerate() {
            if expired_at[i].is_none() && expired(node, *from)? {
                expired_at[i] = Some(Instant::now());
            }
            if relisted_at[i].is_none()
                && dump_has(node, "deny-ghost")
                && !dump_has(node, "deny-other")
            {
                relisted_at[i] = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, node) in NODES.iter().enumerate() {
        let (gone, relisted) = (expired_at[i].unwrap(), relisted_at[i].unwrap());
        let after_410 = relisted.saturating_duration_since(gone);
        eprintln!(
            "{node}: 410 {:?} after the restore, relisted {after_410:?} later",
            gone - restored
        );
        // The API server is back and asks for a relist: not a reason to wait
        // out the outage's backoff (25 s or more by now).
        ensure!(
            after_410 < Duration::from_secs(15),
            "{node} relisted {after_410:?} after the 410"
        );
    }
    let took = c.wait_until(
        "the relisted state in the data path",
        Duration::from_secs(60),
        || say(&c, ns, "other", &addr).is_ok() && say(&c, ns, "client", &late).is_ok(),
    )?;
    eprintln!(
        "relisted within {:?} of the API server being reachable again",
        restored.elapsed() - took
    );
    for (node, from) in NODES.iter().zip(&offsets) {
        let kinds: Vec<String> = watch_errors(&c, node, *from)?
            .into_iter()
            .filter(|(_, e)| is_gone(e))
            .map(|(kind, _)| kind)
            .collect();
        eprintln!("410 Gone on {node} for {kinds:?}");
    }

    let probes = prober.stop()?;
    ensure!(
        probes.failures.is_empty(),
        "connections failed across the partition and the relist: {:?}",
        probes.failures
    );
    ensure!(probes.ok >= 20, "only {} connections probed", probes.ok);
    for (node, from) in NODES.iter().zip(&offsets) {
        ensure!(
            released(&c, node, *from)? == 0,
            "the agent on {node} released pods during the relist"
        );
    }
    eprintln!(
        "{} new connections from the client across the partition, the 410 and the relist, none failed ({:?} after the restore)",
        probes.ok,
        restored.elapsed()
    );
    Ok(())
}
