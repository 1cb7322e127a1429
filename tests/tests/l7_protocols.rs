//! gRPC and WebSocket through the mesh (issue 14), with real third-party
//! clients and servers: Python's `grpcio` and `websockets` (tests/py/,
//! installed by `cargo xtask setup`, found by `lab::python`), in lab pods.
//! The source node's agent serves the client's connection as HTTP (h2c for
//! gRPC, HTTP/1.1 with an Upgrade for WebSocket), routes it and carries it
//! through the mTLS tunnel.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::{MeshLab, metric_sum};
use serde_json::Value;

/// The client's pod (node-a).
const CLIENT: &str = "frontend-7d9f-a";
/// The pods that run the servers, beside their echo servers: two v1 (one per
/// node) and one v2 (examples/mesh.yaml).
const V1: [&str; 2] = ["reviews-v1-5c4b-a", "reviews-v1-5c4b-b"];
const V2: &str = "reviews-v2-8e1a-a";

const GRPC_PORT: u16 = 50051;
const GRPC_SERVICE: &str = "10.96.0.30:50051";
const WS_PORT: u16 = 8765;
const WS_URL: &str = "ws://10.96.0.40/chat";

/// `grpc-echo` over every reviews pod, declared gRPC by appProtocol, with a
/// GRPCRoute sending `weft.test.Echo/Unary` to the v2 pod and every other
/// call to the v1 pods.
const GRPC_CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: grpc-echo, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  selector: {app: reviews}
  ports: [{name: rpc, port: 50051, targetPort: 50051, appProtocol: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: grpc-echo-v1, namespace: shop}
spec:
  clusterIP: 10.96.0.31
  selector: {app: reviews, version: v1}
  ports: [{name: rpc, port: 50051, targetPort: 50051, appProtocol: grpc}]
---
apiVersion: v1
kind: Service
metadata: {name: grpc-echo-v2, namespace: shop}
spec:
  clusterIP: 10.96.0.32
  selector: {app: reviews, version: v2}
  ports: [{name: rpc, port: 50051, targetPort: 50051, appProtocol: grpc}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc-echo, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: grpc-echo, port: 50051}]
  rules:
    - matches: [{method: {service: weft.test.Echo, method: Unary}}]
      backendRefs: [{name: grpc-echo-v2, port: 50051}]
    - backendRefs: [{name: grpc-echo-v1, port: 50051}]
"#;

/// `ws-echo` over the v1 pods: port 80 named `http` (so HTTP by its name),
/// to the WebSocket servers' port.
const WS_CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: ws-echo, namespace: shop}
spec:
  clusterIP: 10.96.0.40
  selector: {app: reviews, version: v1}
  ports: [{name: http, port: 80, targetPort: 8765}]
"#;

#[test]
fn grpc_calls_of_every_kind_follow_the_grpcroute_and_keep_their_status() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    mesh.config.add_yaml(GRPC_CONFIG)?;
    mesh.apply_config()?;
    for pod in V1.into_iter().chain([V2]) {
        serve(&mesh, pod, "grpc_server.py", GRPC_PORT)?;
    }

    let out = client(&mesh, "grpc_client.py", GRPC_SERVICE)?;
    let ok = |call: &str| -> Result<&Value> {
        let o = &out[call];
        if o["code"] != "OK" {
            bail!("{call} failed: {o}\nthe client's whole report: {out}");
        }
        Ok(&o["value"])
    };
    let pod_of = |reply: &Value| reply["pod"].as_str().unwrap_or_default().to_owned();

    // Unary: the GRPCRoute's method match sends every call to v2.
    let unary = out["unary"].as_array().context("no unary calls")?;
    assert_eq!(unary.len(), 4, "{out}");
    for (i, call) in unary.iter().enumerate() {
        assert_eq!(call["code"], "OK", "unary {i}: {call}");
        assert_eq!(pod_of(&call["value"]), V2, "Unary goes to v2: {call}");
        assert_eq!(call["value"]["got"][0], format!("hello {i}"));
    }

    // Client streaming, one message of 1 MiB among them: every message
    // arrives whole, in order; the rest of the service goes to v1.
    let collect = ok("collect")?;
    assert!(V1.contains(&pod_of(collect).as_str()), "{collect}");
    assert_eq!(collect["got"], serde_json::json!([1, 1 << 20, 2]));

    // Server streaming: five messages, in order, from one v1 pod.
    let expand = ok("expand")?.as_array().context("expand")?;
    let got: Vec<&Value> = expand.iter().map(|m| &m["got"][0]).collect();
    assert_eq!(
        got,
        [0, 1, 2, 3, 4].map(Value::from).iter().collect::<Vec<_>>()
    );
    assert!(V1.contains(&pod_of(&expand[0]).as_str()), "{expand:?}");

    // Bidirectional, in lock step (each message sent after the answer to the
    // one before): neither direction is held back until the stream ends.
    let chat = ok("chat")?.as_array().context("chat")?;
    let got: Vec<&str> = chat.iter().filter_map(|m| m["got"][0].as_str()).collect();
    assert_eq!(got, ["ping 0", "ping 1", "ping 2"]);
    assert!(V1.contains(&pod_of(&chat[0]).as_str()), "{chat:?}");

    // A server's non-OK status reaches the client unchanged: grpc-status
    // and grpc-message pass (here in a trailers-only response).
    assert_eq!(out["missing"]["code"], "NOT_FOUND", "{out}");
    assert_eq!(
        out["missing"]["details"], "no such thing: thing-42",
        "{out}"
    );

    // The source agent counted it as gRPC with its status (NOT_FOUND = 5),
    // and every other call as OK (0).
    let metrics = requests_total(&mesh.metrics("node-a")?);
    let grpc = |status: &str| {
        metric_sum(
            &metrics,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("request_protocol", "grpc"),
                ("grpc_response_status", status),
            ],
        )
    };
    assert_eq!(grpc("5"), 1.0, "NOT_FOUND counted once:\n{metrics}");
    assert_eq!(grpc("0"), 7.0, "4 unary, 3 streaming calls OK:\n{metrics}");
    // Every call was answered whole: no response flag, the trailers-only
    // answer included (its body ends with its head, and is never polled).
    let flagged = metric_sum(&metrics, "istio_requests_total", &[("reporter", "source")])
        - metric_sum(
            &metrics,
            "istio_requests_total",
            &[("reporter", "source"), ("response_flags", "-")],
        );
    assert_eq!(flagged, 0.0, "no call flagged:\n{metrics}");
    Ok(())
}

#[test]
fn a_websocket_passes_through_both_ways_and_closes_cleanly() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    mesh.config.add_yaml(WS_CONFIG)?;
    mesh.apply_config()?;
    let logs: Vec<(&str, PathBuf)> = V1
        .into_iter()
        .map(|pod| Ok((pod, serve(&mesh, pod, "ws_server.py", WS_PORT)?)))
        .collect::<Result<_>>()?;

    let out = client(&mesh, "ws_client.py", WS_URL)?;
    // The server speaks first, right after the 101.
    let greeting = out["greeting"].as_str().unwrap_or_default();
    let server = greeting
        .strip_prefix("hello from ")
        .with_context(|| format!("no greeting: {out}"))?;
    assert!(V1.contains(&server), "{out}");
    assert_eq!(
        out["texts"],
        serde_json::json!([true, true, true, true, true]),
        "each text echoed unchanged: {out}"
    );
    let binary = &out["binary"];
    assert_eq!(binary["received"], 3 << 19, "{out}");
    assert_eq!(
        binary["same"], true,
        "the 1.5 MiB binary echoed unchanged: {out}"
    );
    assert_eq!(binary["type"], "bytes", "{out}");
    assert_eq!(out["close_code"], 1000, "closed cleanly: {out}");
    // And the server saw the client's close frame, not a broken connection.
    let (_, log) = logs
        .iter()
        .find(|(pod, _)| *pod == server)
        .context("the greeting names a server")?;
    wait_for_line(log, "closed code=1000 path=/chat", Duration::from_secs(5))?;

    // It went through the source agent's HTTP handler (the 101 is counted),
    // not around it.
    let metrics = requests_total(&mesh.metrics("node-a")?);
    let upgraded = metric_sum(
        &metrics,
        "istio_requests_total",
        &[("reporter", "source"), ("response_code", "101")],
    );
    assert_eq!(upgraded, 1.0, "one upgraded request:\n{metrics}");
    // Answered and closed cleanly: no response flag (not DC).
    let clean = metric_sum(
        &metrics,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("response_code", "101"),
            ("response_flags", "-"),
        ],
    );
    assert_eq!(
        clean, 1.0,
        "the upgrade reported without a flag:\n{metrics}"
    );
    Ok(())
}

/// Starts `script PORT POD` in `pod` (the lab kills it at the end) and waits
/// until it listens; returns its log.
fn serve(mesh: &MeshLab, pod: &str, script: &str, port: u16) -> Result<PathBuf> {
    let log = mesh.lab.run_dir().join(format!("{script}-{pod}.log"));
    let file = File::create(&log)?;
    let mut cmd = lab::python::command(mesh.pod(pod)?, script)?;
    cmd.arg(port.to_string())
        .arg(pod)
        .stdout(file.try_clone()?)
        .stderr(file);
    mesh.lab.spawn(cmd)?;
    wait_for_line(
        &log,
        &format!("listening on {port}"),
        Duration::from_secs(20),
    )?;
    Ok(log)
}

/// Runs `script TARGET` in the client pod; its JSON report. The clients bound
/// every step with a timeout of their own.
fn client(mesh: &MeshLab, script: &str, target: &str) -> Result<Value> {
    let out = lab::python::command(mesh.pod(CLIENT)?, script)?
        .arg(target)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let logs: String = mesh.agents.iter().map(|a| a.log()).collect();
        bail!(
            "{script} {target} failed ({}): {stderr}\nagent logs:\n{logs}",
            out.status
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{script}: not JSON: {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The `istio_requests_total` series of a scrape, for assertions and their messages.
fn requests_total(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn wait_for_line(log: &Path, needle: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} never said {needle:?}:\n{text}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
