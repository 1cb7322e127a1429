//! IPv6 inbound (issue 13, defect 4): a meshed pod's IPv6 address is no way
//! around the agent. sk_lookup steers it to the agent's IPv6 inbound socket, and
//! drops it when there is none.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};
use lab::{Lab, Pod};
use mesh_agent::ebpf::{InboundEnrolment, KernelPrograms, LoadOptions, PodEnrolment};
use mesh_agent::netns::{Netns, netns_cookie};

use common::reply_server;

/// A stand-in for the agent's inbound listener on `addr`: answers every steered
/// connection with `agent\n`.
fn stand_in_inbound(pod: &Pod, addr: &'static str) -> Result<TcpListener> {
    let listener = pod.in_netns(move || TcpListener::bind(addr))??;
    let accepting = listener.try_clone()?;
    std::thread::spawn(move || {
        for stream in accepting.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.write_all(b"agent\n");
        }
    });
    Ok(listener)
}

/// What the server at `dst` says to a connection from `pod`'s netns; an error
/// if it cannot connect within 2 s.
fn read_from(pod: &Pod, dst: SocketAddr) -> Result<String> {
    pod.in_netns(move || -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&dst, Duration::from_secs(2))
            .with_context(|| format!("connect to {dst}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut stream, &mut reply)?;
        Ok(reply)
    })?
}

struct Pods {
    lab: Lab,
    programs: KernelPrograms,
    server_v4: SocketAddr,
    server_v6: SocketAddr,
}

/// A dual-stack lab with a `server` pod (its app on port 8080, both families)
/// and a `client` pod on one node, the kernel programs loaded.
fn dual_stack_pods(owner: &str) -> Result<Pods> {
    let mut lab = Lab::new_dual_stack()?;
    lab.add_node("node-a")?;
    lab.add_pod("node-a", "server", None)?;
    lab.add_pod("node-a", "client", None)?;
    lab.wait_until_forwarding()?;
    let server = lab.pod("server")?;
    let ip6 = server.ip6.context("a dual-stack pod has IPv6")?;
    let (server_v4, _) = reply_server(
        server,
        SocketAddr::new(IpAddr::V4(server.ip), 8080),
        "app\n",
    )?;
    let (server_v6, _) = reply_server(server, SocketAddr::new(IpAddr::V6(ip6), 8080), "app\n")?;
    let programs = KernelPrograms::open(&LoadOptions {
        cgroup: lab.cgroup().to_path_buf(),
        bpffs_dir: lab.bpffs(owner)?,
        kernel_log_level: 3,
    })?;
    Ok(Pods {
        lab,
        programs,
        server_v4,
        server_v6,
    })
}

fn enrolment(pod: &Pod) -> Result<PodEnrolment> {
    Ok(PodEnrolment {
        netns_cookie: netns_cookie(&Netns::open(pod.netns_path())?)?,
        pod_ips: vec![IpAddr::V4(pod.ip), IpAddr::V6(pod.ip6.context("IPv6")?)],
        outbound_port: 15001,
        node_addr: None,
    })
}

#[test]
fn ipv6_inbound_without_an_agent_ipv6_socket_is_dropped() -> Result<()> {
    let mut pods = dual_stack_pods("v6-closed")?;
    let (server, client) = (pods.lab.pod("server")?, pods.lab.pod("client")?);
    // Unmeshed, the app answers on both families.
    assert_eq!(read_from(client, pods.server_v6)?, "app\n");
    let inbound = stand_in_inbound(server, "0.0.0.0:0")?;
    let netns = Netns::open(server.netns_path())?;
    let steer = InboundEnrolment {
        netns: netns.file(),
        listener: &inbound,
        listener6: None,
    };
    pods.programs.enrol(&enrolment(server)?, Some(steer))?;
    assert_eq!(read_from(client, pods.server_v4)?, "agent\n");
    // Only an IPv4 agent socket: IPv6 to the pod finds no socket of its family
    // and is dropped, never handed to the app.
    let v6 = read_from(client, pods.server_v6);
    assert!(v6.is_err(), "IPv6 inbound reached the app: {v6:?}");
    Ok(())
}

#[test]
fn ipv6_inbound_is_steered_to_the_agent_ipv6_socket() -> Result<()> {
    let mut pods = dual_stack_pods("v6-steer")?;
    let (server, client, node) = (
        pods.lab.pod("server")?,
        pods.lab.pod("client")?,
        pods.lab.node("node-a")?,
    );
    let inbound = stand_in_inbound(server, "0.0.0.0:0")?;
    let inbound6 = stand_in_inbound(server, "[::]:0")?;
    let netns = Netns::open(server.netns_path())?;
    let steer = InboundEnrolment {
        netns: netns.file(),
        listener: &inbound,
        listener6: Some(&inbound6),
    };
    pods.programs.enrol(&enrolment(server)?, Some(steer))?;
    assert_eq!(read_from(client, pods.server_v4)?, "agent\n");
    assert_eq!(
        read_from(client, pods.server_v6)?,
        "agent\n",
        "a pod over IPv6"
    );
    // The node's IPv6 address gets no bypass either.
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && timeout 5 cat <&3",
        pods.server_v6.ip(),
        pods.server_v6.port()
    );
    let from_node = common::output_ok(node.command("bash").args(["-c", &script]).output()?)?;
    assert_eq!(from_node, "agent\n", "the node over IPv6");
    Ok(())
}

#[test]
fn strict_pod_over_ipv6_refuses_plaintext_and_serves_the_mesh_through_the_tunnel() -> Result<()> {
    let mut mesh = lab::MeshLab::dual_stack()?;
    // payments-6f7c-b: node-a, namespace payments (strict mTLS).
    let payments = mesh.pod("payments-6f7c-b")?;
    let ip6 = payments.ip6.context("dual stack")?;
    let (app, seen) = reply_server(
        payments,
        SocketAddr::new(IpAddr::V6(ip6), 8443),
        "payments\n",
    )?;

    // Unmeshed (legacy) pod, plaintext over IPv6: refused by strict mode.
    let plaintext = common::tcp_read_from(mesh.pod("inventory-0")?, app);
    assert!(
        plaintext.as_deref().is_ok_and(|r| r.is_empty()) || plaintext.is_err(),
        "plaintext over IPv6 reached a strict pod: {plaintext:?}"
    );
    // A meshed pod on the other node: through the tunnel, over IPv6.
    let frontend = mesh.pod("frontend-7d9f-b")?;
    assert_eq!(common::tcp_read_from(frontend, app)?, "payments\n");
    let peer = seen.recv_timeout(Duration::from_secs(1))?;
    eprintln!("payments saw the meshed connection from {peer}");
    let log = mesh.agent("node-a")?.log();
    assert!(log.contains("plaintext refused"), "{log}");

    // Policy applies to IPv6 too: deny everything to payments.
    mesh.config.add_yaml(
        "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-all\n  namespace: payments\nspec:\n  action: DENY\n  rules:\n    - from:\n        - source:\n            namespaces: [shop]\n",
    )?;
    mesh.apply_config()?;
    let denied = common::tcp_read_from(mesh.pod("frontend-7d9f-b")?, app);
    assert!(
        denied.as_deref().is_ok_and(|r| r.is_empty()) || denied.is_err(),
        "a DENY policy let an IPv6 connection through: {denied:?}"
    );
    Ok(())
}
