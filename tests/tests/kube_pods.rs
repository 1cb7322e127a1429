//! The pod lifecycle on a real API server (issue 12, "Real components in the
//! tests"): a new pod captured from its first connect, a deleted pod's state and
//! sockets gone, Services and EndpointSlices followed by new connections, and
//! an agent restart that re-adopts the pinned programs and resyncs. Weft is
//! installed from `manifests/` and the agents run with the DaemonSet's command
//! (`lab::cluster`); the lab plays kubelet. Run as root (`cargo xtask test`).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lab::cluster::Cluster;
use lab::kube::{ControlPlane, KubePod};
use lab::metric_sum;
use mesh_agent::ebpf::{MapHandles, PinLayout};
use serde_json::{Value, json};

const OPENED: &str = "istio_tcp_connections_opened_total";
/// The agent's listeners in an enrolled pod: outbound, inbound plaintext, tunnel.
const PROXY_PORTS: [u16; 3] = [15001, 15006, 15008];
/// Generous: the tests share two cores with the other kube tests.
const WAIT: Duration = Duration::from_secs(60);

/// A tiny HTTP server on 8080 that answers its own name (argv[1]) and prints
/// the address of every client it serves.
const NAME_SERVER: &str = r#"
import http.server as h, sys
name = sys.argv[1].encode()
class H(h.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'
    def do_GET(s):
        s.send_response(200)
        s.send_header('Content-Length', str(len(name)))
        s.end_headers()
        s.wfile.write(name)
    def log_message(s, f, *a):
        print('client', s.client_address[0], f % a, flush=True)
h.ThreadingHTTPServer(('', 8080), H).serve_forever()
"#;

/// A client whose first instruction is a TCP connect to argv[1]:argv[2], in a
/// loop until argv[3] requests got an answer or argv[4] attempts were made. One
/// line per attempt: `refused` (EPERM: the kernel's pod gate), `ok <body>` (an
/// HTTP answer), or what else happened; then `done`.
const CLIENT: &str = r#"
import socket, errno, sys, time
dst = (sys.argv[1], int(sys.argv[2]))
want, tries = int(sys.argv[3]), int(sys.argv[4])
ok = n = 0
while ok < want and n < tries:
    n += 1
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect(dst)
    except OSError as e:
        print('refused' if e.errno == errno.EPERM else
              'connect-error ' + errno.errorcode.get(e.errno, str(e)), flush=True)
        s.close()
        time.sleep(0.05)
        continue
    d = b''
    try:
        s.sendall(b'GET / HTTP/1.0\r\n\r\n')
        while True:
            c = s.recv(4096)
            if not c:
                break
            d += c
        head, _, body = d.partition(b'\r\n\r\n')
        if head.startswith(b'HTTP/1.0 200'):
            ok += 1
            print('ok ' + body.decode(), flush=True)
        else:
            print('no-answer %r' % d[:80], flush=True)
    except OSError as e:
        print('io-error ' + str(e), flush=True)
    s.close()
    if not d.startswith(b'HTTP/1.0 200'):
        time.sleep(0.05)
print('done', flush=True)
"#;

/// The system's python3 when there is one: a version manager's shim (pyenv)
/// would add a tenth of a second before a client's first connect.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn server_pod(ns: &str, name: &str, labels: Value) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{
            "name": "web", "image": "python",
            "command": [python(), "-c", NAME_SERVER, name],
            "ports": [{"containerPort": 8080}],
        }]},
    })
    .to_string()
}

/// A pod whose containers run [`CLIENT`] against each `(container, ip, port)`.
fn client_pod(ns: &str, name: &str, targets: &[(&str, &str, u16)], want: u32) -> String {
    let containers: Vec<Value> = targets
        .iter()
        .map(|(container, ip, port)| {
            json!({
                "name": container, "image": "python",
                "command": [python(), "-c", CLIENT, ip, port.to_string(), want.to_string(), "100000"],
            })
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": containers},
    })
    .to_string()
}

fn sleeper_pod(ns: &str, name: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "sleep", "image": "busybox", "command": ["sleep", "infinity"]}]},
    })
    .to_string()
}

fn service(ns: &str, name: &str, port: u16, selector: Value) -> String {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": port, "targetPort": 8080}]},
    })
    .to_string()
}

/// Two nodes, namespace `ns` meshed (`strict`: mTLS only), agents on both.
fn meshed_cluster(ns: &str, strict: bool) -> Result<Cluster> {
    let cp = ControlPlane::shared()?;
    let mut c = Cluster::new(cp, &["a", "b"])?;
    let mut labels = vec![("weft.dev/mesh", "enabled")];
    if strict {
        labels.push(("weft.dev/mtls", "strict"));
    }
    c.klab.create_namespace(ns, &labels)?;
    c.start_agent("a")?;
    c.start_agent("b")?;
    Ok(c)
}

/// Whether the agent of `node` logged a line holding every one of `needles`
/// after byte `from` of its log.
fn logged(c: &Cluster, node: &str, from: u64, needles: &[&str]) -> bool {
    c.agent(node).is_ok_and(|a| {
        a.log_text()
            .get(from as usize..)
            .is_some_and(|t| t.lines().any(|l| needles.iter().all(|n| l.contains(n))))
    })
}

/// Waits until the agent of `node` enrolled `ns/pod` (after byte `from`).
fn wait_enrolled(c: &Cluster, node: &str, from: u64, ns: &str, pod: &str) -> Result<()> {
    let key = format!("{ns}/{pod}");
    let quoted = format!("\"{key}\"");
    c.wait_until(&format!("{key} enrolled on {node}"), WAIT, || {
        logged(c, node, from, &["pod enrolled", &quoted])
    })
    .map(drop)
}

/// A container's output (`<run dir>/pods/<ns>_<pod>_<container>.log`).
fn container_log(c: &Cluster, ns: &str, pod: &str, container: &str) -> String {
    let path = c.dir().join(format!("pods/{ns}_{pod}_{container}.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A client's lines with runs of the same line collapsed (`line ×n`).
fn summary(log: &str) -> String {
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for line in log.lines() {
        match runs.last_mut() {
            Some((last, n)) if *last == line => *n += 1,
            _ => runs.push((line, 1)),
        }
    }
    runs.iter()
        .map(|(l, n)| {
            if *n == 1 {
                l.to_string()
            } else {
                format!("{l} ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The warnings and errors the agent of `node` logged (the last 30).
fn agent_warnings(c: &Cluster, node: &str) -> String {
    let text = c.agent(node).map(|a| a.log_text()).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("refused"))
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Both agents' warnings, for a failure's message.
fn diagnose(c: &Cluster) -> String {
    format!(
        "node a's agent:\n{}\nnode b's agent:\n{}",
        agent_warnings(c, "a"),
        agent_warnings(c, "b")
    )
}

/// `curl` from a pod; the answer's body.
fn get(pod: &KubePod, url: &str) -> Result<String> {
    let out = pod
        .command("curl")
        .args(["-sS", "--max-time", "5", url])
        .output()?;
    if !out.status.success() {
        bail!("curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One run of [`CLIENT`] in `pod` (its first container: cgroup and netns): one
/// attempt, its outcome line.
fn probe(pod: &KubePod, ip: &str, port: u16) -> Result<String> {
    let out = pod
        .command(python())
        .args(["-c", CLIENT, ip, &port.to_string(), "1", "1"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(str::to_string).with_context(|| {
        format!(
            "the probe said nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn mtls_opened(c: &Cluster, node: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let mut labels = labels.to_vec();
    labels.push(("connection_security_policy", "mutual_tls"));
    Ok(metric_sum(&c.metrics(node)?, OPENED, &labels))
}

/// The kernel's counters, read from the pins of the agent of `node`.
fn kernel_stats(c: &Cluster, node: &str) -> Result<mesh_agent::ebpf::KernelStats> {
    let dir = c.klab.lab().bpffs(&format!("agent-{node}"))?;
    Ok(MapHandles::from_pins(&PinLayout::new(&dir))?.stats())
}

fn netns_inode(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .ino())
}

/// The TCP sockets listening on `ports` in the netns of `pid`: (port, inode).
fn listening_sockets(pid: u32, ports: &[u16]) -> Result<BTreeSet<(u16, u64)>> {
    let mut inodes = BTreeSet::new();
    for file in ["tcp", "tcp6"] {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/{file}"))?;
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let Some(port) = port
                && *state == "0A"
                && ports.contains(&port)
            {
                inodes.insert((port, inode.parse()?));
            }
        }
    }
    Ok(inodes)
}

/// What the process `pid`'s descriptors point at (`socket:[…]`, `net:[…]`, paths).
fn fd_targets(pid: u32) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if let Ok(target) = std::fs::read_link(entry?.path()) {
            out.push(target.to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

/// The sockets of process `pid` that live in the netns with inode `netns`, as
/// `fd N: local -> peer`. Each socket is borrowed with `pidfd_getfd` and asked
/// for its netns (`SIOCGSKNS`): a socket keeps its netns alive after every
/// process left it and its name is gone.
fn sockets_in_netns(pid: u32, netns: u64) -> Result<Vec<String>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    let owned = |fd: libc::c_long| -> Option<OwnedFd> {
        // SAFETY: a descriptor the kernel just returned to us, owned from here.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    };
    // SAFETY: plain syscalls on integers; every returned descriptor is owned.
    let pidfd = owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) })
        .with_context(|| format!("pidfd_open({pid}): {}", std::io::Error::last_os_error()))?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        let Ok(n) = entry.file_name().to_string_lossy().parse::<libc::c_int>() else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: as above.
        let Some(socket) =
            owned(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) })
        else {
            continue; // closed meanwhile
        };
        // SAFETY: an ioctl with no argument on a socket we own.
        let Some(ns) = owned(unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSKNS) } as libc::c_long)
        else {
            continue;
        };
        if std::fs::File::from(ns).metadata()?.ino() != netns {
            continue;
        }
        let socket = std::net::TcpStream::from(socket);
        found.push(format!(
            "fd {n}: {:?} -> {:?}",
            socket.local_addr().ok(),
            socket.peer_addr().ok()
        ));
        // Dropping our copy leaves the agent's descriptor as it was.
    }
    Ok(found)
}

/// `ip -j <args>` in the netns at `netns`.
fn ip_json(netns: &Path, args: &[&str]) -> Result<Value> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "ip", "-j"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "ip {} in {}: {}",
            args.join(" "),
            netns.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The node-side end of a pod's veth: (ifindex, name) in the node's netns. The
/// kernel deletes it only when the pod's netns is really gone (no process,
/// mount, descriptor or socket holds it any more).
fn pod_veth(c: &Cluster, pod: &KubePod) -> Result<(u64, String)> {
    let eth0 = ip_json(&pod.netns, &["link", "show", "eth0"])?;
    let peer = eth0[0]["link_index"]
        .as_u64()
        .context("the pod's eth0 has no peer index")?;
    let node_netns = c.klab.node(&pod.node)?.netns.clone();
    let name = ip_json(&node_netns, &["link", "show"])?
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["ifindex"].as_u64() == Some(peer))
        .and_then(|l| l["ifname"].as_str().map(str::to_string))
        .context("the pod's veth peer is not in its node's netns")?;
    Ok((peer, name))
}

fn node_has_link(c: &Cluster, node: &str, ifindex: u64, name: &str) -> Result<bool> {
    let links = ip_json(&c.klab.node(node)?.netns, &["link", "show"])?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .any(|l| l["ifindex"].as_u64() == Some(ifindex) || l["ifname"].as_str() == Some(name)))
}

/// `mesh-agent status -o json` on `node`.
fn status(c: &Cluster, node: &str) -> Result<Value> {
    let out = c.agent_cli(node, &["status", "-o", "json"])?;
    if !out.status.success() {
        bail!(
            "mesh-agent status on {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Everything the lab needs to know of an enrolled pod to check it is gone.
struct Traces {
    uid: String,
    netns_inode: u64,
    veth: (u64, String),
    /// The agent's listeners in the pod's netns: (port, socket inode).
    listeners: BTreeSet<(u16, u64)>,
}

fn traces(c: &Cluster, pod: &KubePod) -> Result<Traces> {
    let pause = *pod
        .pids()
        .first()
        .context("the pod has no sandbox process")?;
    let listeners = listening_sockets(pause, &PROXY_PORTS)?;
    Ok(Traces {
        uid: pod.uid.clone(),
        netns_inode: netns_inode(&pod.netns)?,
        veth: pod_veth(c, pod)?,
        listeners,
    })
}

/// Deletes `ns/name` and checks its agent let go of everything: "pod
/// released" logged, `status` no longer lists it, no descriptor of the agent
/// refers to its netns or its listeners, and the netns itself is gone.
fn delete_and_check_gone(c: &mut Cluster, node: &str, ns: &str, name: &str) -> Result<()> {
    let pod = c.klab.pod(ns, name)?;
    let t = traces(c, pod)?;
    let ports: BTreeSet<u16> = t.listeners.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        ports,
        BTreeSet::from(PROXY_PORTS),
        "the agent listens in {ns}/{name}'s netns"
    );
    let agent_pid = c.agent(node)?.pid;
    let fds = fd_targets(agent_pid)?;
    for (port, inode) in &t.listeners {
        assert!(
            fds.contains(&format!("socket:[{inode}]")),
            "the listener on {port} is the agent's (pid {agent_pid})"
        );
    }
    let from = c.agent(node)?.log_len();
    c.klab.delete_pod(ns, name)?;

    let key = format!("{ns}/{name}");
    let quoted = format!("\"{key}\"");
    c.wait_until(&format!("{key} released on {node}"), WAIT, || {
        logged(c, node, from, &["pod released", &quoted])
    })?;
    c.wait_until(&format!("status on {node} forgets {key}"), WAIT, || {
        status(c, node).is_ok_and(|s| !s.to_string().contains(&t.uid))
    })?;
    let fds = fd_targets(agent_pid)?;
    let net = format!("net:[{}]", t.netns_inode);
    assert!(
        !fds.contains(&net),
        "the agent still holds {key}'s netns: {fds:?}"
    );
    for (port, inode) in &t.listeners {
        let socket = format!("socket:[{inode}]");
        assert!(
            !fds.contains(&socket),
            "the agent still holds {key}'s listener on {port} ({socket})"
        );
    }
    // No socket of the agent (a pooled or accepted connection's) is left in
    // it, and nothing else keeps it alive.
    let mut left = Vec::new();
    c.wait_until(
        &format!("no socket of the agent in {key}'s netns"),
        WAIT,
        || {
            left = sockets_in_netns(agent_pid, t.netns_inode)
                .unwrap_or_else(|e| vec![format!("{e:#}")]);
            left.is_empty()
        },
    )
    .with_context(|| format!("the agent's sockets there: {left:?}"))?;
    let (ifindex, veth) = &t.veth;
    c.wait_until(
        &format!("{key}'s netns destroyed (its veth {veth} gone from {node})"),
        WAIT,
        || node_has_link(c, node, *ifindex, veth).is_ok_and(|has| !has),
    )?;
    let nodepods = status(c, node)?["nodePods"].clone();
    assert!(
        !nodepods.to_string().contains(&t.uid),
        "/node_pods still lists {key}: {nodepods}"
    );
    Ok(())
}

#[test]
fn a_new_pod_in_a_meshed_namespace_is_captured_from_its_first_connect() -> Result<()> {
    let ns = "pods-first-connect";
    let mut c = meshed_cluster(ns, true)?;
    let from_b = c.agent("b")?.log_len();
    c.cp()
        .apply_yaml(&service(ns, "web", 80, json!({"app": "web"})))?;
    c.klab
        .run_pod("b", &server_pod(ns, "web", json!({"app": "web"})))?;
    wait_enrolled(&c, "b", from_b, ns, "web")?;
    let server_ip = c.klab.pod(ns, "web")?.ip.to_string();
    let service_ip = c.service_ip(ns, "web")?;
    c.wait_until("the Service's endpoint is ready", WAIT, || {
        c.cp()
            .kubectl(&[
                "get",
                "endpointslices",
                "-n",
                ns,
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[*]}",
            ])
            .is_ok_and(|out| out.contains(&server_ip))
    })?;
    let refused_before = kernel_stats(&c, "a")?.connect_refused_unclassified;

    // Each container's first instruction is a connect: one to the Service (only
    // the mesh resolves it: the lab has no kube-proxy), one straight to the
    // server pod (plaintext has a path there, and the strict namespace's agent
    // refuses it).
    const WANT: u32 = 5;
    let manifest = client_pod(
        ns,
        "client",
        &[
            ("via-service", &service_ip, 80),
            ("direct", &server_ip, 8080),
        ],
        WANT,
    );
    c.klab.run_pod("a", &manifest)?;
    let client_ip = c.klab.pod(ns, "client")?.ip.to_string();
    c.wait_until("both clients are done", Duration::from_secs(120), || {
        ["via-service", "direct"]
            .iter()
            .all(|k| container_log(&c, ns, "client", k).contains("done"))
    })?;

    let mut ok = 0;
    let mut refused = 0;
    for container in ["via-service", "direct"] {
        let log = container_log(&c, ns, "client", container);
        eprintln!("{container}: {}", summary(&log));
        for line in log.lines().filter(|l| *l != "done") {
            match line {
                "refused" => refused += 1,
                "ok web" => ok += 1,
                other => panic!(
                    "{container}: every attempt is refused by the gate or carried by the mesh, not {other:?}:\n{}\nnode a's agent:\n{}\nnode b's agent:\n{}",
                    summary(&log),
                    agent_warnings(&c, "a"),
                    agent_warnings(&c, "b"),
                ),
            }
        }
    }
    assert_eq!(ok, 2 * WANT as usize);
    eprintln!("{refused} connects refused before the pod was classified");

    // Every answered connection went through node a's agent in mutual TLS…
    let source = [("reporter", "source"), ("source_workload_namespace", ns)];
    let meshed = mtls_opened(&c, "a", &source)?;
    assert!(
        meshed >= ok as f64,
        "{ok} answers, {meshed} mTLS connections at the source"
    );
    assert_eq!(
        metric_sum(&c.metrics("a")?, OPENED, &source),
        meshed,
        "none of the client's connections left without mTLS"
    );
    // …and arrived at node b's agent in mutual TLS; no plaintext reached it.
    let destination = [
        ("reporter", "destination"),
        ("destination_workload_namespace", ns),
    ];
    assert!(mtls_opened(&c, "b", &destination)? >= ok as f64);
    let b_log = c.agent("b")?.log_text();
    assert!(
        !b_log.contains("plaintext refused"),
        "node b's agent saw plaintext from the client"
    );
    // The server saw every connection come from the client pod's address:
    // its agent dials it with the client's IP (docs/architecture.md,
    // "Keeping the client's address"); the counters above show they all
    // came through the tunnel.
    let served = container_log(&c, ns, "web", "web");
    let clients: BTreeSet<&str> = served
        .lines()
        .filter_map(|l| l.strip_prefix("client "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        clients,
        BTreeSet::from([client_ip.as_str()]),
        "the server saw {clients:?} (the client is {client_ip}, the server {server_ip})"
    );
    // The kernel counted each refusal (the agent does not export this counter
    // in /metrics; the test reads it from the pinned map).
    let refused_kernel = kernel_stats(&c, "a")?.connect_refused_unclassified - refused_before;
    assert!(
        refused_kernel >= refused as u64,
        "the kernel refused {refused_kernel} connects, the clients saw {refused}"
    );
    Ok(())
}

#[test]
fn a_deleted_pod_leaves_no_state_and_no_sockets_behind() -> Result<()> {
    let ns = "pods-deleted";
    let mut c = meshed_cluster(ns, false)?;
    let (from_a, from_b) = (c.agent("a")?.log_len(), c.agent("b")?.log_len());
    c.cp()
        .apply_yaml(&service(ns, "web", 80, json!({"app": "web"})))?;
    c.klab
        .run_pod("b", &server_pod(ns, "web", json!({"app": "web"})))?;
    c.klab.run_pod("a", &sleeper_pod(ns, "client"))?;
    wait_enrolled(&c, "b", from_b, ns, "web")?;
    wait_enrolled(&c, "a", from_a, ns, "client")?;
    let url = format!("http://{}/", c.service_ip(ns, "web")?);
    // Meshed traffic both ways: node a's agent pools a tunnel connection dialled
    // from the client's netns, node b's accepted it in the server's.
    let client = c.klab.pod(ns, "client")?;
    c.wait_until("a meshed request succeeds", WAIT, || {
        get(client, &url).is_ok_and(|b| b == "web")
    })?;
    assert!(mtls_opened(&c, "a", &[("reporter", "source")])? >= 1.0);

    delete_and_check_gone(&mut c, "a", ns, "client")?;

    // A new client (same service account, maybe the same IP) works at once.
    let from_a = c.agent("a")?.log_len();
    c.klab.run_pod("a", &sleeper_pod(ns, "client-2"))?;
    wait_enrolled(&c, "a", from_a, ns, "client-2")?;
    let client = c.klab.pod(ns, "client-2")?;
    c.wait_until("the new client's request succeeds", WAIT, || {
        get(client, &url).is_ok_and(|b| b == "web")
    })?;
    // Its tunnel connection is its own, dialled from its netns (so it leaves
    // with its address), not one the deleted pod left in a pool.
    let own = sockets_in_netns(c.agent("a")?.pid, netns_inode(&client.netns)?)?;
    assert!(
        own.iter().any(|s| s.contains(":15008)")),
        "node a's agent has no tunnel connection from client-2's netns: {own:?}"
    );

    // The server side: its accepted tunnel connection and listeners go too.
    delete_and_check_gone(&mut c, "b", ns, "web")?;
    Ok(())
}

#[test]
fn new_connections_follow_service_and_endpoint_slice_changes() -> Result<()> {
    let ns = "pods-follow";
    let mut c = meshed_cluster(ns, false)?;
    let (from_a, from_b) = (c.agent("a")?.log_len(), c.agent("b")?.log_len());
    c.cp().apply_yaml(&service(
        ns,
        "web",
        80,
        json!({"app": "web", "version": "v1"}),
    ))?;
    c.klab.run_pod(
        "b",
        &server_pod(ns, "v1", json!({"app": "web", "version": "v1"})),
    )?;
    // v2 on the client's node: the same-node path as well.
    c.klab.run_pod(
        "a",
        &server_pod(ns, "v2", json!({"app": "web", "version": "v2"})),
    )?;
    c.klab.run_pod("a", &sleeper_pod(ns, "client"))?;
    for (node, from, pod) in [
        ("b", from_b, "v1"),
        ("a", from_a, "v2"),
        ("a", from_a, "client"),
    ] {
        wait_enrolled(&c, node, from, ns, pod)?;
    }
    let url = format!("http://{}/", c.service_ip(ns, "web")?);
    let client = c.klab.pod(ns, "client")?;
    let answers = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| get(client, &url).unwrap_or_else(|e| format!("error: {e:#}")))
            .collect()
    };
    // Each wait ends once a run of new connections all reach the expected
    // servers: the change has reached the agent and stays.
    let all_reach = |want: &[&str]| {
        let got = answers(10);
        got.iter().all(|a| want.contains(&a.as_str()))
            && want.iter().all(|w| got.iter().any(|a| a == w))
    };

    c.wait_until("the Service reaches v1", WAIT, || all_reach(&["v1"]))?;

    // The selector moves to v2: the EndpointSlice controller rewrites the
    // Service's slices; new connections follow.
    let patch = json!({"spec": {"selector": {"app": "web", "version": "v2"}}}).to_string();
    c.cp().kubectl(&[
        "patch",
        "service",
        "web",
        "-n",
        ns,
        "--type=merge",
        "-p",
        &patch,
    ])?;
    c.wait_until("the Service reaches v2 only", WAIT, || all_reach(&["v2"]))?;

    // Both selected, then v2 reported not ready: only v1, then both again.
    let patch = json!({"spec": {"selector": {"app": "web", "version": null}}}).to_string();
    c.cp().kubectl(&[
        "patch",
        "service",
        "web",
        "-n",
        ns,
        "--type=merge",
        "-p",
        &patch,
    ])?;
    c.wait_until("the Service reaches v1 and v2", WAIT, || {
        all_reach(&["v1", "v2"])
    })?;
    c.klab.set_pod_ready(ns, "v2", false)?;
    c.wait_until("an unready v2 gets no new connections", WAIT, || {
        all_reach(&["v1"])
    })?;
    c.klab.set_pod_ready(ns, "v2", true)?;
    c.wait_until("a ready v2 gets new connections again", WAIT, || {
        all_reach(&["v1", "v2"])
    })?;
    Ok(())
}

#[test]
fn a_restarted_agent_adopts_the_pinned_programs_and_resyncs() -> Result<()> {
    let ns = "pods-restart";
    let mut c = meshed_cluster(ns, true)?;
    let (from_a, from_b) = (c.agent("a")?.log_len(), c.agent("b")?.log_len());
    c.cp()
        .apply_yaml(&service(ns, "web", 80, json!({"app": "web"})))?;
    c.klab
        .run_pod("b", &server_pod(ns, "web", json!({"app": "web"})))?;
    c.klab.run_pod("a", &sleeper_pod(ns, "client"))?;
    wait_enrolled(&c, "b", from_b, ns, "web")?;
    wait_enrolled(&c, "a", from_a, ns, "client")?;
    let service_ip = c.service_ip(ns, "web")?;
    let server_ip = c.klab.pod(ns, "web")?.ip.to_string();
    let client = c.klab.pod(ns, "client")?;
    let mut last = String::new();
    c.wait_until("a meshed request succeeds", WAIT, || {
        last = probe(client, &service_ip, 80).unwrap_or_else(|e| format!("{e:#}"));
        last == "ok web"
    })
    .with_context(|| format!("the last attempt: {last}"))?;

    let log_a = c.agent("a")?.log.clone();
    c.kill_agent("a")?;
    // Fail closed: the enrolled client's connects are still redirected, to a
    // port nobody listens on now; none leaves in plaintext.
    let client = c.klab.pod(ns, "client")?;
    for (ip, port) in [(service_ip.as_str(), 80), (server_ip.as_str(), 8080)] {
        let outcome = probe(client, ip, port)?;
        assert_eq!(
            outcome, "connect-error ECONNREFUSED",
            "{ip}:{port} with the agent down"
        );
    }
    // A pod started meanwhile is held by the pinned pod gate.
    c.klab.run_pod(
        "a",
        &client_pod(ns, "late", &[("late", &service_ip, 80)], 3),
    )?;
    c.wait_until("the late pod's connects are refused", WAIT, || {
        container_log(&c, ns, "late", "late").contains("refused")
    })?;
    // A change while the agent is down: a new Service.
    c.cp()
        .apply_yaml(&service(ns, "web-new", 81, json!({"app": "web"})))?;
    c.wait_until("the new Service has its endpoint", WAIT, || {
        c.cp()
            .kubectl(&[
                "get",
                "endpointslices",
                "-n",
                ns,
                "-l",
                "kubernetes.io/service-name=web-new",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[*]}",
            ])
            .is_ok_and(|out| out.contains(&server_ip))
    })?;
    let new_ip = c.service_ip(ns, "web-new")?;

    let from_a = std::fs::metadata(&log_a)?.len();
    c.start_agent("a")?;
    assert!(
        logged(&c, "a", from_a, &["kernel programs in place", "Adopted"]),
        "the new agent adopted the pinned programs:\n{}",
        c.agent("a")?.log_text()
    );
    wait_enrolled(&c, "a", from_a, ns, "client")?;
    let client = c.klab.pod(ns, "client")?;
    let outcome = probe(client, &service_ip, 80)?;
    assert_eq!(
        outcome,
        "ok web",
        "the enrolled pod keeps working\n{}",
        diagnose(&c)
    );
    let outcome = probe(client, &new_ip, 81)?;
    assert_eq!(
        outcome,
        "ok web",
        "the change made meanwhile applies\n{}",
        diagnose(&c)
    );
    // The late pod is classified and enrolled by the new agent and gets through.
    c.wait_until("the late pod gets its answers", WAIT, || {
        container_log(&c, ns, "late", "late").contains("done")
    })?;
    let late = container_log(&c, ns, "late", "late");
    for line in late.lines().filter(|l| *l != "done") {
        assert!(
            line == "refused" || line == "ok web",
            "the late pod's attempts are refused or meshed, not {line:?}:\n{late}"
        );
    }
    let b_log = c.agent("b")?.log_text();
    assert!(
        !b_log.contains("plaintext refused"),
        "no plaintext reached node b's agent"
    );
    Ok(())
}
