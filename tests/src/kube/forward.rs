//! A TCP forwarder from inside a network namespace to the host's loopback: what
//! the `kubernetes` Service and kube-proxy are to a node. Agents run in a lab
//! node's netns, whose loopback is its own; the control plane listens on the
//! host's. The listening socket is created in the netns (a socket keeps the netns
//! it was made in), the accept loop and the dials to the target run on host
//! threads, so each accepted connection is copied to the host-side target.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use crate::pod::in_netns;

/// Forwards connections until dropped; dropping also closes the ones in flight.
pub struct Forwarder {
    listen: SocketAddr,
    target: SocketAddr,
    listener: Arc<TcpListener>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Listens on `listen` inside the netns at `netns` and forwards every
    /// connection to `target` on the host.
    pub fn start(netns: &Path, listen: SocketAddr, target: SocketAddr) -> Result<Forwarder> {
        let listener = in_netns(netns, move || TcpListener::bind(listen))?
            .with_context(|| format!("listen on {listen} in {}", netns.display()))?;
        let listen = listener.local_addr()?;
        let listener = Arc::new(listener);
        let open = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (listener, open) = (listener.clone(), open.clone());
            std::thread::Builder::new()
                .name(format!("fwd-{}", listen.port()))
                .spawn(move || accept_loop(&listener, target, &open))
                .context("start the forwarder's accept thread")?
        };
        Ok(Forwarder {
            listen,
            target,
            listener,
            open,
            accept: Some(accept),
        })
    }

    /// A Service as kube-proxy would give it to the netns at `netns`: `ip` is put
    /// on its loopback, and `ip:port` there is forwarded to `target` on the host.
    pub fn service(
        netns: &Path,
        ip: std::net::Ipv4Addr,
        port: u16,
        target: SocketAddr,
    ) -> Result<Forwarder> {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args([
                "--",
                "ip",
                "addr",
                "replace",
                &format!("{ip}/32"),
                "dev",
                "lo",
            ])
            .output()
            .context("run nsenter ip addr")?;
        if !out.status.success() {
            anyhow::bail!(
                "add {ip} to lo in {}: {}",
                netns.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Self::start(netns, SocketAddr::from((ip, port)), target)
    }

    /// Where clients in the netns connect.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, open: &Mutex<Vec<TcpStream>>) {
    loop {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // Shut down by Drop (EINVAL), or the listener is unusable.
            Err(_) => return,
        };
        let upstream = match TcpStream::connect(target) {
            Ok(upstream) => upstream,
            // Target down (an API server outage): the client sees its connection closed.
            Err(_) => continue,
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
            continue;
        };
        if let Ok(mut list) = open.lock() {
            list.retain(|s| s.peer_addr().is_ok());
            list.extend(c2.try_clone().ok());
            list.extend(u2.try_clone().ok());
        }
        std::thread::spawn(move || pipe(client, upstream));
        std::thread::spawn(move || pipe(u2, c2));
    }
}

/// Copies `from` to `to` until EOF or error, then half-closes `to`.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes a blocked accept() on Linux.
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        if let Ok(mut list) = self.open.lock() {
            for stream in list.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}
