//! Helpers shared by the end-to-end tests: small real servers and clients.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lab::Pod;

/// A TCP server in `pod`'s netns on `port` that answers every connection with
/// `reply` and reports each peer address on the returned channel.
pub fn reply_server(
    pod: &Pod,
    addr: SocketAddr,
    reply: &'static str,
) -> Result<(SocketAddr, mpsc::Receiver<SocketAddr>)> {
    let listener = pod.in_netns(move || TcpListener::bind(addr))??;
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            if let Ok(peer) = stream.peer_addr() {
                let _ = tx.send(peer);
            }
            let _ = stream.write_all(reply.as_bytes());
            let mut sink = [0u8; 64];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.read(&mut sink);
        }
    });
    Ok((local, rx))
}

/// Connects from `pod` (a real process in its netns and cgroup: bash's /dev/tcp)
/// and returns what the server sent.
pub fn tcp_read_from(pod: &Pod, dst: SocketAddr) -> Result<String> {
    output_ok(spawn_tcp_read(pod, dst)?.wait_with_output()?)
}

/// Starts the client of [`tcp_read_from`] without waiting for it.
pub fn spawn_tcp_read(pod: &Pod, dst: SocketAddr) -> Result<Child> {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && timeout 5 cat <&3",
        dst.ip(),
        dst.port()
    );
    pod.command("bash")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run bash in the pod")
}

/// Accepts one connection, failing after `timeout`.
pub fn accept_within(listener: &TcpListener, timeout: Duration) -> Result<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false)?;
                return Ok((stream, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
}

pub fn output_ok(out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
