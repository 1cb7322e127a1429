//! Transparent capture in the kernel: a meshed pod's connect is redirected to a
//! listener in its own netns with the original destination in the agent's map; an
//! unmeshed pod's connect is left alone.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::Result;
use lab::Lab;
use mesh_agent::ebpf::{InboundEnrolment, KernelPrograms, LoadOptions, PodEnrolment};
use mesh_agent::netns::{Netns, netns_cookie};

use common::{accept_within, output_ok, reply_server, spawn_tcp_read, tcp_read_from};

#[test]
fn meshed_connect_is_redirected_and_unmeshed_is_not() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_node("node-a")?;
    lab.add_node("node-b")?;
    lab.add_pod("node-a", "meshed", None)?;
    lab.add_pod("node-a", "plain", None)?;
    lab.add_pod("node-b", "server", None)?;
    lab.wait_until_forwarding()?;
    let (meshed, plain, server) = (lab.pod("meshed")?, lab.pod("plain")?, lab.pod("server")?);

    let (real_addr, _) = reply_server(
        server,
        SocketAddr::new(IpAddr::V4(server.ip), 8080),
        "real\n",
    )?;
    // The test's stand-in for the agent's outbound listener, in the meshed pod.
    let capture = meshed.in_netns(|| TcpListener::bind("127.0.0.1:0"))??;
    let capture_addr = capture.local_addr()?;

    let mut programs = KernelPrograms::open(&LoadOptions {
        cgroup: lab.cgroup().to_path_buf(),
        bpffs_dir: lab.bpffs("capture-test")?,
        kernel_log_level: 3,
    })?;
    let cookie = netns_cookie(&Netns::open(meshed.netns_path())?)?;
    let enrolment = PodEnrolment {
        netns_cookie: cookie,
        pod_ips: vec![IpAddr::V4(meshed.ip)],
        outbound_port: capture_addr.port(),
        node_addr: None,
    };
    programs.enrol(&enrolment, None)?;

    // Unmeshed pod: reaches the real server across nodes.
    assert_eq!(tcp_read_from(plain, real_addr)?, "real\n");

    // Meshed pod: redirected into the listener in its own netns. While the
    // connection is open, its original destination is in the agent's map.
    let client = spawn_tcp_read(meshed, real_addr)?;
    let (mut conn, app) = accept_within(&capture, Duration::from_secs(5))?;
    assert!(
        app.ip().is_loopback(),
        "the redirected connection arrives over loopback, got {app}"
    );
    assert_eq!(
        programs.maps().original_destination(cookie, app),
        Some(real_addr),
        "the original destination is published under (netns cookie, app port)"
    );
    conn.write_all(b"captured\n")?;
    drop(conn);
    assert_eq!(output_ok(client.wait_with_output()?)?, "captured\n");
    // ... and removed once it closes.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(programs.maps().original_destination(cookie, app), None);
    let stats = programs.maps().stats();
    assert!(
        stats.connect_redirected >= 1 && stats.orig_dst_published >= 1,
        "{stats:?}"
    );

    // Removing the pod stops the capture.
    programs.unenrol(cookie, &enrolment.pod_ips)?;
    assert_eq!(tcp_read_from(meshed, real_addr)?, "real\n");
    Ok(())
}

/// Reads what a server sends to a connection from the node's own netns (not a
/// pod: the node's address, as kubelet probes and SNATed NodePort traffic have).
fn tcp_read_from_node(node: &lab::Node, dst: SocketAddr) -> Result<String> {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && timeout 5 cat <&3",
        dst.ip(),
        dst.port()
    );
    output_ok(node.command("bash").args(["-c", &script]).output()?)
}

/// A stand-in for the agent's inbound listener: answers every steered
/// connection with `agent\n`.
fn stand_in_inbound(pod: &lab::Pod) -> Result<TcpListener> {
    let listener = pod.in_netns(|| TcpListener::bind("0.0.0.0:0"))??;
    let accepting = listener.try_clone()?;
    std::thread::spawn(move || {
        for stream in accepting.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.write_all(b"agent\n");
        }
    });
    Ok(listener)
}

#[test]
fn node_sourced_inbound_is_steered_to_the_agent() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_node("node-a")?;
    lab.add_pod("node-a", "server", None)?;
    lab.add_pod("node-a", "client", None)?;
    lab.wait_until_forwarding()?;
    let (node, server, client) = (lab.node("node-a")?, lab.pod("server")?, lab.pod("client")?);
    let (app_addr, _) = reply_server(
        server,
        SocketAddr::new(IpAddr::V4(server.ip), 8080),
        "app\n",
    )?;
    let inbound = stand_in_inbound(server)?;

    let mut programs = KernelPrograms::open(&LoadOptions {
        cgroup: lab.cgroup().to_path_buf(),
        bpffs_dir: lab.bpffs("node-steer")?,
        kernel_log_level: 3,
    })?;
    let netns = Netns::open(server.netns_path())?;
    let enrolment = PodEnrolment {
        netns_cookie: netns_cookie(&netns)?,
        pod_ips: vec![IpAddr::V4(server.ip)],
        outbound_port: 15001,
        node_addr: Some(IpAddr::V4(server.node_ip)),
    };
    let steer = InboundEnrolment {
        netns: netns.file(),
        listener: &inbound,
        listener6: None,
    };
    programs.enrol(&enrolment, Some(steer))?;

    assert_eq!(
        tcp_read_from(client, app_addr)?,
        "agent\n",
        "a pod's connection"
    );
    // The node's address gets no bypass in the kernel: the agent decides (it
    // exempts only kubelet probes).
    assert_eq!(
        tcp_read_from_node(node, app_addr)?,
        "agent\n",
        "a connection from the node's address reached the app directly"
    );
    Ok(())
}

#[test]
fn pod_enrolled_closed_refuses_outbound_and_drops_inbound() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_node("node-a")?;
    lab.add_pod("node-a", "closed", None)?;
    lab.add_pod("node-a", "other", None)?;
    lab.wait_until_forwarding()?;
    let (closed, other) = (lab.pod("closed")?, lab.pod("other")?);
    let (other_addr, _) = reply_server(
        other,
        SocketAddr::new(IpAddr::V4(other.ip), 8080),
        "other\n",
    )?;
    let (closed_addr, _) = reply_server(
        closed,
        SocketAddr::new(IpAddr::V4(closed.ip), 8080),
        "closed\n",
    )?;
    let (loopback_addr, _) = reply_server(closed, "127.0.0.1:0".parse()?, "local\n")?;

    let mut programs = KernelPrograms::open(&LoadOptions {
        cgroup: lab.cgroup().to_path_buf(),
        bpffs_dir: lab.bpffs("closed")?,
        kernel_log_level: 3,
    })?;
    let netns = Netns::open(closed.netns_path())?;
    let enrolment = PodEnrolment {
        netns_cookie: netns_cookie(&netns)?,
        pod_ips: vec![IpAddr::V4(closed.ip)],
        outbound_port: 15001,
        node_addr: None,
    };
    programs.enrol_closed(&enrolment, netns.file())?;

    let err = tcp_read_from(closed, other_addr).expect_err("outbound from a closed pod");
    assert!(
        format!("{err:#}").contains("not permitted"),
        "refused with EPERM, got {err:#}"
    );
    assert!(programs.maps().stats().connect_refused_closed >= 1);
    // Loopback inside the pod is never captured, so never refused either.
    assert_eq!(tcp_read_from(closed, loopback_addr)?, "local\n");
    // Inbound: no agent socket to steer to, so the SYN is dropped, never
    // delivered to the app.
    let inbound = other.in_netns(move || {
        std::net::TcpStream::connect_timeout(&closed_addr, Duration::from_secs(2))
    })?;
    assert!(inbound.is_err(), "inbound reached the app of a closed pod");

    // Released: both ways work again.
    programs.unenrol(enrolment.netns_cookie, &enrolment.pod_ips)?;
    assert_eq!(tcp_read_from(closed, other_addr)?, "other\n");
    assert_eq!(tcp_read_from(other, closed_addr)?, "closed\n");
    Ok(())
}

/// An IPv4 and an IPv6 socket of the pod bound to the same local port, both
/// connected (to addresses nobody serves: the capture answers), then waiting.
const SAME_PORT_CLIENTS: &str = r#"
import socket, sys, time
port = int(sys.argv[1])
v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
v4.bind(("0.0.0.0", port))
v4.connect(("10.88.200.1", 8080))
v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
v6.bind(("::", port))
v6.connect(("fd00:200::1", 8443))
print("connected", flush=True)
time.sleep(10)
"#;

#[test]
fn v4_and_v6_sockets_on_one_local_port_keep_their_original_destinations() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_node("node-a")?;
    lab.add_pod("node-a", "meshed", None)?;
    lab.wait_until_forwarding()?;
    let meshed = lab.pod("meshed")?;
    // Stand-ins for the agent's outbound listeners, on one port for both families.
    let capture4 = meshed.in_netns(|| TcpListener::bind("127.0.0.1:0"))??;
    let port = capture4.local_addr()?.port();
    let capture6 = meshed.in_netns(move || TcpListener::bind(("::1", port)))??;

    let mut programs = KernelPrograms::open(&LoadOptions {
        cgroup: lab.cgroup().to_path_buf(),
        bpffs_dir: lab.bpffs("same-port")?,
        kernel_log_level: 3,
    })?;
    let cookie = netns_cookie(&Netns::open(meshed.netns_path())?)?;
    let enrolment = PodEnrolment {
        netns_cookie: cookie,
        pod_ips: vec![IpAddr::V4(meshed.ip)],
        outbound_port: port,
        node_addr: None,
    };
    programs.enrol(&enrolment, None)?;

    let mut clients = meshed
        .command("python3")
        .args(["-c", SAME_PORT_CLIENTS, "41234"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let accepted = accept_within(&capture4, Duration::from_secs(5))
        .and_then(|(c4, app4)| Ok((c4, app4, accept_within(&capture6, Duration::from_secs(5))?)));
    let ((_c4, app4, (_c6, app6)), _) = match accepted {
        Ok(a) => (a, ()),
        Err(e) => {
            let _ = clients.kill();
            let out = clients.wait_with_output()?;
            anyhow::bail!("{e:#}: {}", String::from_utf8_lossy(&out.stderr));
        }
    };
    assert_eq!((app4.port(), app6.port()), (41234, 41234));
    let v4 = programs.maps().original_destination(cookie, app4);
    let v6 = programs.maps().original_destination(cookie, app6);
    let _ = clients.kill();
    let _ = clients.wait();
    assert_eq!(v4, Some("10.88.200.1:8080".parse()?), "the IPv4 socket's");
    assert_eq!(v6, Some("[fd00:200::1]:8443".parse()?), "the IPv6 socket's");
    Ok(())
}

#[test]
fn pins_of_an_older_layout_are_refused_with_the_fix() -> Result<()> {
    let lab = Lab::new()?;
    let bpffs_dir = lab.bpffs("old-layout")?;
    // Version 1 pinned straight under the directory.
    std::fs::create_dir_all(bpffs_dir.join("maps"))?;
    let opts = LoadOptions {
        cgroup: lab.cgroup().to_path_buf(),
        bpffs_dir: bpffs_dir.clone(),
        kernel_log_level: 3,
    };
    let err = KernelPrograms::open(&opts)
        .err()
        .expect("an older agent's pins are not adopted");
    assert!(format!("{err:#}").contains("mesh-agent reset"), "{err:#}");
    mesh_agent::ebpf::remove_pins(&mesh_agent::ebpf::PinLayout::new(&bpffs_dir))?;
    KernelPrograms::open(&opts)?;
    Ok(())
}
