//! The client's address kept at the destination (issue 15, item 4): the
//! destination agent dials the app with the client's IP as its source, so a
//! real server (Python's `http.server`, answering each request with the peer
//! address it accepted) sees the client pod, over the tunnel, over plaintext,
//! over IPv6 and through L7 routing; the pod's reply rules capture nothing of
//! the app's own traffic, survive an agent restart and go with the pod.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use lab::http::curl;
use lab::{Lab, MeshLab, Pod};

/// frontend-7d9f-b (node-b, shop): the server pod.
const SERVER_POD: &str = "frontend-7d9f-b";
const SERVER_IP: &str = "10.88.2.10";
/// frontend-7d9f-a (node-a, shop): a meshed client across nodes.
const MESHED: &str = "frontend-7d9f-a";
const MESHED_IP: &str = "10.88.1.10";
/// reviews-v1-5c4b-b (node-b, shop): a meshed client on the server's node.
const SAME_NODE: &str = "reviews-v1-5c4b-b";
const SAME_NODE_IP: &str = "10.88.2.11";
/// inventory-0 (node-a, legacy): unmeshed, plaintext to 15006.
const UNMESHED: &str = "inventory-0";
const UNMESHED_IP: &str = "10.88.1.13";
const PORT: u16 = 7070;

/// Answers every GET with the peer's address as accepted (IPv4-mapped
/// addresses unmapped); listens on both families.
const PEER_SERVER: &str = r#"
import http.server, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].removeprefix("::ffff:").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
server = S(("::", int(sys.argv[1])), H)
print("ready", flush=True)
server.serve_forever()
"#;

/// A UDP datagram from (pod IP, port): the app's own traffic from its
/// serving port, which the reply rules (TCP only) must let leave.
const UDP_FROM_PORT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(3)
s.sendto(b"ping", (sys.argv[3], int(sys.argv[4])))
print(s.recvfrom(64)[0].decode())
"#;

const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(64)
    s.sendto(b"pong", peer)
"#;

/// Starts `script ARGS` with python3 in `pod` (a lab process, killed with the
/// lab) and waits for its "ready".
fn spawn_python(lab: &Lab, pod: &Pod, script: &str, args: &[&str]) -> Result<()> {
    let out = lab
        .run_dir()
        .join(format!("python-{}-{}.out", pod.name, args.join("-")));
    let mut cmd = pod.command("python3");
    cmd.arg("-c")
        .arg(script)
        .args(args)
        .stdout(std::fs::File::create(&out)?);
    lab.spawn(cmd)?;
    for _ in 0..100 {
        if std::fs::read_to_string(&out)?.trim() == "ready" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("python in {} not ready", pod.name)
}

/// The peer address the server at `url` saw the request come from.
fn seen_from(pod: &Pod, url: &str) -> Result<String> {
    let reply = curl(pod, &["--max-time", "5", url])?;
    if reply.status != 200 {
        bail!("{url} from {}: {reply:?}", pod.name);
    }
    Ok(reply.body.trim().to_owned())
}

fn url(ip: &str) -> String {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    format!("http://{host}:{PORT}/")
}

/// The reply rules in `pod`'s netns (`ip rule` lines sending to the agent's table).
fn reply_rules(pod: &Pod, family: &str) -> Result<Vec<String>> {
    let out = common::output_ok(pod.command("ip").args([family, "rule", "show"]).output()?)?;
    Ok(out
        .lines()
        .filter(|l| l.contains("lookup 22341"))
        .map(str::to_owned)
        .collect())
}

#[test]
fn the_app_sees_the_client_pods_address_and_its_own_traffic_is_untouched() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    spawn_python(
        &mesh.lab,
        mesh.pod(SERVER_POD)?,
        PEER_SERVER,
        &[&PORT.to_string()],
    )?;
    let app = url(SERVER_IP);

    // Over the tunnel, across nodes and on the same node; plaintext (15006)
    // from an unmeshed pod.
    assert_eq!(seen_from(mesh.pod(MESHED)?, &app)?, MESHED_IP);
    assert_eq!(seen_from(mesh.pod(SAME_NODE)?, &app)?, SAME_NODE_IP);
    assert_eq!(
        seen_from(mesh.pod(UNMESHED)?, &app).context("plaintext")?,
        UNMESHED_IP
    );
    let rules = reply_rules(mesh.pod(SERVER_POD)?, "-4")?;
    assert_eq!(rules.len(), 2, "{rules:?}");

    // The app's own UDP from its serving port still leaves the pod (the rule
    // is TCP only), and its own connections through the mesh still work.
    let echo = mesh.pod("inventory-1")?;
    spawn_python(&mesh.lab, echo, UDP_ECHO, &["5353"])?;
    let out = mesh
        .pod(SERVER_POD)?
        .command("python3")
        .args(["-c", UDP_FROM_PORT, SERVER_IP, &PORT.to_string()])
        .args(["10.88.2.13", "5353"])
        .output()?;
    assert_eq!(common::output_ok(out)?.trim(), "pong");
    mesh.ping(SERVER_POD, "10.88.1.11:9080")?;

    // The agent restarted: its dials set the rules up again, idempotently.
    mesh.start_agent("node-b")?;
    assert_eq!(seen_from(mesh.pod(MESHED)?, &app)?, MESHED_IP);
    assert_eq!(seen_from(mesh.pod(UNMESHED)?, &app)?, UNMESHED_IP);
    assert_eq!(
        reply_rules(mesh.pod(SERVER_POD)?, "-4")?,
        rules,
        "no duplicate rules"
    );

    // L7: a Service with appProtocol http, routed by the source agent.
    mesh.config
        .set_label("Pod", "shop", SERVER_POD, "peers", Some("yes"))?;
    mesh.config.add_yaml(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: peers\n  namespace: shop\nspec:\n  clusterIP: 10.96.0.77\n  selector:\n    peers: \"yes\"\n  ports:\n    - name: http\n      port: 80\n      targetPort: {PORT}\n      appProtocol: http\n"
    ))?;
    mesh.apply_config()?;
    let through_l7 = curl(
        mesh.pod(MESHED)?,
        &["--max-time", "5", "http://10.96.0.77/"],
    )?;
    assert_eq!(through_l7.status, 200, "{through_l7:?}");
    assert_eq!(through_l7.body.trim(), MESHED_IP);

    // Out of the mesh, its rules go: a direct client gets the app's replies.
    let from = mesh.agent("node-b")?.log_len();
    mesh.config
        .set_label("Pod", "shop", SERVER_POD, "weft.dev/mesh", Some("disabled"))?;
    mesh.config.save()?;
    mesh.agent("node-b")?.wait_for_log(
        &format!("pod released pod=shop/{SERVER_POD}"),
        from,
        Duration::from_secs(10),
    )?;
    assert!(reply_rules(mesh.pod(SERVER_POD)?, "-4")?.is_empty());
    assert_eq!(
        seen_from(mesh.pod(UNMESHED)?, &app).context("out of the mesh")?,
        UNMESHED_IP
    );
    Ok(())
}

#[test]
fn over_ipv6_the_app_sees_the_client_pods_ipv6_address() -> Result<()> {
    let mesh = lab::MeshLab::dual_stack()?;
    let server = mesh.pod(SERVER_POD)?;
    spawn_python(&mesh.lab, server, PEER_SERVER, &[&PORT.to_string()])?;
    let ip6 = |name: &str| -> Result<String> {
        Ok(mesh.pod(name)?.ip6.context("dual stack")?.to_string())
    };
    let app = url(&ip6(SERVER_POD)?);
    assert_eq!(seen_from(mesh.pod(MESHED)?, &app)?, ip6(MESHED)?);
    assert_eq!(seen_from(mesh.pod(UNMESHED)?, &app)?, ip6(UNMESHED)?);
    // IPv4 alongside, in the same pod.
    assert_eq!(seen_from(mesh.pod(MESHED)?, &url(SERVER_IP))?, MESHED_IP);
    assert_eq!(reply_rules(server, "-6")?.len(), 2);
    Ok(())
}

#[test]
fn with_client_address_off_the_app_sees_its_own_address_and_no_rule_is_set() -> Result<()> {
    let mesh = MeshLab::start_with(&["--client-address", "off"])?;
    let server = mesh.pod(SERVER_POD)?;
    spawn_python(&mesh.lab, server, PEER_SERVER, &[&PORT.to_string()])?;
    assert_eq!(seen_from(mesh.pod(MESHED)?, &url(SERVER_IP))?, SERVER_IP);
    assert!(reply_rules(server, "-4")?.is_empty());
    Ok(())
}
