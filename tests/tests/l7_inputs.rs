//! L7 at the edges (issue 14): which connections the source agent parses
//! (sniffed HTTP on an unnamed port; a server-first protocol not held beyond
//! the sniff window), and bad input — a malformed request, oversized
//! headers, a client leaving mid-body, an upstream resetting mid-response —
//! each ending only its own request or connection, counted, while the agent
//! keeps serving.

mod common;

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use anyhow::{Result, bail};
use lab::http::curl;
use lab::{MeshLab, metric_sum};

const REVIEWS: &str = "http://10.96.0.20:9080";

/// Two Services on reviews-v1's pods whose ports say nothing of their
/// protocol: `plain` (7000 → the echo's 9080, with a route that marks what it
/// routes) and `banner` (7100, a server that speaks first).
const UNNAMED: &str = "apiVersion: v1
kind: Service
metadata: {name: plain, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  selector: {app: reviews, version: v1}
  ports: [{port: 7000, targetPort: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: banner, namespace: shop}
spec:
  clusterIP: 10.96.0.31
  selector: {app: reviews, version: v1}
  ports: [{port: 7100, targetPort: 7100}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: plain, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: plain}]
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-routed, value: l7}]}
      backendRefs: [{name: plain, port: 7000}]
";

/// Python in `pod`: `script` with `ADDR` bound to ("ip", port).
fn python(mesh: &MeshLab, pod: &str, addr: &str, script: &str) -> Result<Output> {
    let (ip, port) = addr.rsplit_once(':').unwrap_or((addr, "80"));
    let program = format!("ADDR = ('{ip}', {port})\n{script}");
    Ok(mesh
        .pod(pod)?
        .command("python3")
        .args(["-c", &program])
        .output()?)
}

fn stdout(out: &Output) -> Result<String> {
    if !out.status.success() {
        bail!("python failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn unnamed_ports_sniff_http_and_never_hold_a_server_first_protocol() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    for pod in ["reviews-v1-5c4b-a", "reviews-v1-5c4b-b"] {
        let addr: SocketAddr = "0.0.0.0:7100".parse()?;
        common::reply_server(mesh.pod(pod)?, addr, "220 banner ready\r\n")?;
    }
    mesh.config.add_yaml(UNNAMED)?;
    mesh.apply_config()?;

    // HTTP on a port that declares nothing is seen as HTTP and routed.
    let echo = curl(mesh.pod("frontend-7d9f-a")?, &["http://10.96.0.30:7000/x"])?.echo()?;
    assert_eq!(echo["headers"]["x-routed"], "l7", "{echo}");

    // The server speaks first: the client waits at most the sniff window
    // (100 ms) for its banner, plus the path's own time.
    let timed = python(
        &mesh,
        "frontend-7d9f-a",
        "10.96.0.31:7100",
        "import socket, time
s = socket.create_connection(ADDR, timeout=5)
t = time.monotonic()
data = s.recv(100)
print(f'{time.monotonic() - t:.3f} {data.decode().strip()}')",
    )?;
    let line = stdout(&timed)?;
    let (secs, banner) = line.split_once(' ').unwrap_or_default();
    assert_eq!(banner, "220 banner ready", "{line}");
    let waited = Duration::from_secs_f64(secs.parse()?);
    assert!(
        waited < Duration::from_millis(100 + 400),
        "the banner waited {waited:?}, beyond the 100 ms sniff window"
    );
    Ok(())
}

#[test]
fn bad_requests_end_only_themselves_and_are_counted() -> Result<()> {
    let mesh = MeshLab::start()?;
    let client = mesh.pod("frontend-7d9f-a")?;

    // A malformed request: hyper answers 400 and closes that connection.
    let malformed = python(
        &mesh,
        "frontend-7d9f-a",
        "10.96.0.20:9080",
        "import socket
s = socket.create_connection(ADDR, timeout=5)
s.sendall(b'GET / HTTP/1.1\\r\\nHost: reviews\\r\\nno colon here\\r\\n\\r\\n')
print(s.recv(200).split(b'\\r\\n')[0].decode())",
    )?;
    assert_eq!(stdout(&malformed)?, "HTTP/1.1 400 Bad Request");

    // Headers past 16 KiB: 431.
    let big = format!("x-big: {}", "a".repeat(20 * 1024));
    let r = curl(client, &["-H", &big, &format!("{REVIEWS}/")])?;
    assert_eq!(r.status, 431, "{r:?}");

    // A client that promises 1 MB and leaves after 1 KiB.
    let left = python(
        &mesh,
        "frontend-7d9f-a",
        "10.96.0.20:9080",
        "import socket, time
s = socket.create_connection(ADDR, timeout=5)
s.sendall(b'POST /upload HTTP/1.1\\r\\nHost: reviews\\r\\nContent-Length: 1000000\\r\\n\\r\\n' + b'x' * 1024)
time.sleep(0.3)
s.close()
print('left')",
    )?;
    assert_eq!(stdout(&left)?, "left");

    // An upstream that aborts mid-response: the client's transfer fails...
    let reset = client
        .command("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "10"])
        .arg(format!("{REVIEWS}/reset"))
        .output()?;
    assert!(
        !reset.status.success(),
        "the client sees the aborted response"
    );

    // ...and the agent serves the next request, on a new connection or not.
    let r = curl(client, &[&format!("{REVIEWS}/after")])?;
    assert_eq!(r.status, 200, "{r:?}");

    // Each counted with its reason.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let count = |code: &str, flag: &str| -> Result<f64> {
        let a = mesh.metrics("node-a")?;
        let labels = [
            ("reporter", "source"),
            ("response_code", code),
            ("response_flags", flag),
        ];
        Ok(metric_sum(&a, "istio_requests_total", &labels))
    };
    let wanted = [("400", "DPE"), ("431", "DPE"), ("0", "DC"), ("200", "UR")];
    for (code, flag) in wanted {
        while count(code, flag)? < 1.0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            count(code, flag)? >= 1.0,
            "no request counted with code {code} flag {flag}:\n{}",
            mesh.metrics("node-a")?
        );
    }
    Ok(())
}
