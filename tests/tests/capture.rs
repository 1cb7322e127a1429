//! Transparent capture in the kernel: a meshed pod's connect is redirected to a
//! listener in its own netns with the original destination in the agent's map; an
//! unmeshed pod's connect is left alone.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::Result;
use lab::Lab;
use mesh_agent::ebpf::{KernelPrograms, LoadOptions, PodEnrolment};
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
        programs.maps().original_destination(cookie, app.port()),
        Some(real_addr),
        "the original destination is published under (netns cookie, app port)"
    );
    conn.write_all(b"captured\n")?;
    drop(conn);
    assert_eq!(output_ok(client.wait_with_output()?)?, "captured\n");
    // ... and removed once it closes.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        programs.maps().original_destination(cookie, app.port()),
        None
    );
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
