//! Request telemetry end to end (issue 14): real curl through the mesh; the
//! source agent's Istio request series, its access log and `mesh-agent tap`
//! see each request, and tap's filter keeps out what does not match.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::MeshLab;
use lab::http::curl;
use lab::metric_sum;

/// The `reviews` Service (examples/mesh.yaml), declared `appProtocol: http`.
const REVIEWS: &str = "http://10.96.0.20:9080";

/// A running `mesh-agent tap`, killed when dropped; its stdout lines arrive
/// on `lines`.
struct TapProcess {
    child: Child,
    lines: Receiver<String>,
}

impl TapProcess {
    fn start(mesh: &MeshLab, node: &str, args: &[&str]) -> Result<Self> {
        let bin = lab::agent_binary()?;
        let mut child = mesh
            .lab
            .node(node)?
            .command(&bin.to_string_lossy())
            .arg("tap")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("tap stdout")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(TapProcess { child, lines })
    }

    /// Every line printed so far.
    fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for TapProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tap_access_log_and_request_metrics_see_a_curl_through_the_mesh() -> Result<()> {
    let mesh = MeshLab::start_with(&["--access-log", "json"])?;
    let client = mesh.pod("frontend-7d9f-a")?; // on node-a
    let matching = TapProcess::start(&mesh, "node-a", &["--namespace", "shop", "-o", "json"])?;
    let table = TapProcess::start(&mesh, "node-a", &["--pod", "frontend"])?;
    let elsewhere = TapProcess::start(&mesh, "node-a", &["--namespace", "nothere"])?;
    // The table's header is printed once the agent has taken the tap on.
    for tap in [&table, &elsewhere] {
        let header = tap.lines.recv_timeout(Duration::from_secs(10))?;
        assert!(header.starts_with("REPORTER"), "{header}");
    }

    // The taps connect on their own time: ask until one sees a request.
    let path = "/ratings?telemetry=1";
    let deadline = Instant::now() + Duration::from_secs(20);
    let event: serde_json::Value = loop {
        let reply = curl(client, &[&format!("{REVIEWS}{path}")])?;
        assert_eq!(reply.status, 200, "{reply:?}");
        if let Ok(line) = matching.lines.recv_timeout(Duration::from_millis(500)) {
            break serde_json::from_str(&line).with_context(|| format!("tap line {line:?}"))?;
        }
        if Instant::now() > deadline {
            bail!("mesh-agent tap saw no request in 20 s");
        }
    };
    assert_eq!(event["method"], "GET", "{event}");
    assert_eq!(event["path"], path, "{event}");
    assert_eq!(event["status"], 200, "{event}");
    assert_eq!(event["flag"], "-", "{event}");
    assert_eq!(event["reporter"], "source", "{event}");
    assert_eq!(event["source"], "shop/frontend-7d9f-a", "{event}");
    // The backend Service the route chose (a 90/10 split over the versions).
    assert!(
        ["reviews-v1", "reviews-v2"]
            .map(|s| format!("{s}.shop.svc.cluster.local"))
            .contains(
                &event["destination_service"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            ),
        "{event}"
    );
    // The endpoint the request went to: a reviews pod's address.
    assert!(
        event["destination"]
            .as_str()
            .is_some_and(|d| d.starts_with("10.") && d.contains(':')),
        "{event}"
    );
    assert!(event["latency_ms"].as_f64().is_some(), "{event}");

    // One more, after the first has gone through every tap.
    let reply = curl(client, &[&format!("{REVIEWS}/last")])?;
    assert_eq!(reply.status, 200, "{reply:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rows = Vec::new();
    while !rows.iter().any(|r: &String| r.contains("/last")) {
        if let Ok(row) = table.lines.recv_timeout(Duration::from_millis(200)) {
            rows.push(row);
        }
        assert!(Instant::now() < deadline, "table tap printed {rows:?}");
    }
    let last = rows.iter().find(|r| r.contains("/last")).expect("found");
    assert!(
        last.contains("shop/frontend-7d9f-a") && last.contains(" GET ") && last.contains(" 200 "),
        "{last}"
    );
    // The filter for another namespace printed nothing past its header.
    assert_eq!(elsewhere.drain(), Vec::<String>::new());

    // Istio's request series, labelled from the state; the path is no label.
    let metrics = mesh.metrics("node-a")?;
    let sel = [
        ("reporter", "source"),
        ("source_workload", "frontend"),
        ("source_workload_namespace", "shop"),
        ("destination_workload", "reviews"),
        ("destination_workload_namespace", "shop"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("grpc_response_status", ""),
        ("response_flags", "-"),
    ];
    let requests = metric_sum(&metrics, "istio_requests_total", &sel);
    assert!(requests >= 2.0, "{requests} requests counted:\n{metrics}");
    assert_eq!(
        metric_sum(&metrics, "istio_request_duration_milliseconds_count", &sel),
        requests
    );
    assert_eq!(
        metric_sum(&metrics, "istio_response_bytes_count", &sel),
        requests
    );
    assert!(metric_sum(&metrics, "istio_response_bytes_sum", &sel) > 0.0);
    assert!(!metrics.contains("telemetry=1"), "request data in a label");

    // The access log: a JSON line for the request on the agent's stdout.
    let agent = mesh.agent("node-a")?;
    let logged = agent
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["path"] == path && v["reporter"] == "source");
    let logged = logged.with_context(|| format!("no access log line:\n{}", agent.log()))?;
    assert_eq!(logged["method"], "GET");
    assert_eq!(logged["response_code"], 200);
    assert_eq!(logged["authority"], "10.96.0.20:9080");
    assert_eq!(logged["source"], "shop/frontend-7d9f-a");
    Ok(())
}
