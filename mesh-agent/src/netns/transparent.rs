//! Dialling the app with the client's address as the source
//! (docs/architecture.md, "Keeping the client's address"): an `IP_TRANSPARENT`
//! socket in the pod's netns, marked, bound to `lo` and to (client IP, a port
//! of `AGENT_SOURCE_PORTS`) with `SO_REUSEADDR`. The agent picks the port (round
//! robin over the range) because the reply rule must tell its connections'
//! replies from a client's own SYN (routing.rs); bound explicitly with
//! `SO_REUSEADDR`, the connect reuses a TIME_WAIT of the same 4-tuple at once
//! (timestamps guard it), so new connections are not bounded by TIME_WAITs.
//! The replies need the rule of `routing.rs`, set up lazily per app address
//! and remembered here.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mesh_common::AGENT_MARK;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;

use super::Netns;
use super::routing::{AGENT_SOURCE_PORTS, add_reply_route, remove_reply_rules};

/// Ports tried per dial before giving up (taken by an app listener, or a live
/// connection of the same 4-tuple).
const PORT_TRIES: usize = 8;

/// After a failed set-up, dials to that app address go out as before (pod IP
/// as source) for this long before the set-up is tried again.
pub const RETRY_SETUP_AFTER: Duration = Duration::from_secs(30);

/// The source address the app should see for a connection from `client` to
/// `app`, or `None` to dial as before, from the pod's own address: a client
/// that is the pod itself or loopback, or of another family than the app's.
pub fn app_source(client: IpAddr, app: SocketAddr, pod_ips: &[IpAddr]) -> Option<IpAddr> {
    let client = client.to_canonical();
    let usable = !client.is_loopback()
        && !client.is_unspecified()
        && !client.is_multicast()
        && client.is_ipv4() == app.is_ipv4()
        && !pod_ips.contains(&client);
    usable.then_some(client)
}

/// Why a transparent dial did not connect.
#[derive(Debug, thiserror::Error)]
pub enum TransparentError {
    /// The socket could not be made (no `CAP_NET_ADMIN`, …): dial another way.
    #[error("transparent socket: {0}")]
    Socket(io::Error),
    /// The connect itself failed, as any dial to the app can.
    #[error(transparent)]
    Connect(io::Error),
}

/// Round robin over `AGENT_SOURCE_PORTS`, per pod.
#[derive(Debug)]
pub struct SourcePorts(AtomicU32);

impl SourcePorts {
    pub fn starting_at(seed: u32) -> Self {
        SourcePorts(AtomicU32::new(seed))
    }

    pub fn next(&self) -> u16 {
        let (low, high) = AGENT_SOURCE_PORTS;
        let span = u32::from(high - low) + 1;
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        low + (n % span) as u16
    }
}

/// Connects to `app` from a socket in `netns` that carries `client`'s address
/// (module doc). The reply rule must be in place.
pub async fn connect_transparent(
    netns: &Netns,
    ports: &SourcePorts,
    client: SocketAddr,
    app: SocketAddr,
) -> Result<TcpStream, TransparentError> {
    let mut last = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
    for _ in 0..PORT_TRIES {
        let port = ports.next();
        // The client's own port would make our SYN the twin of its connection
        // (a plaintext one, accepted on 15006 with the app's address).
        if port == client.port() {
            continue;
        }
        let source = SocketAddr::new(client.ip(), port);
        let socket = netns
            .run(|| transparent_socket(app))
            .and_then(|r| r)
            .map_err(TransparentError::Socket)?;
        let started = socket
            .bind(&source.into())
            .and_then(|()| socket.connect(&app.into()));
        match started {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            // Taken (an app listens there; a live connection of this 4-tuple).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL)
                ) =>
            {
                last = e;
                continue;
            }
            Err(e) => return Err(TransparentError::Connect(e)),
        }
        let stream = TcpStream::from_std(socket.into()).map_err(TransparentError::Socket)?;
        stream.writable().await.map_err(TransparentError::Connect)?;
        if let Some(e) = stream.take_error().map_err(TransparentError::Connect)? {
            return Err(TransparentError::Connect(e));
        }
        return Ok(stream);
    }
    Err(TransparentError::Socket(last))
}

fn transparent_socket(app: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(app),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_mark(AGENT_MARK)?;
    if app.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else {
        socket.set_ip_transparent_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // Bound to `lo`, its SYN reaches the app with `lo` as the ingress device,
    // which is how `weft_sk_lookup` tells it from a client's (that one it
    // steers to 15006); the route of a packet sent to a local address
    // otherwise names that address's device.
    socket.bind_device(Some(b"lo"))?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket)
}

/// What became of the reply routes for one app address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    Ready,
    Failed(Instant),
}

/// What a dial to an app address does next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Dial,
    SetUp,
    Fallback,
}

fn step(setup: Option<Setup>, now: Instant) -> Step {
    match setup {
        Some(Setup::Ready) => Step::Dial,
        Some(Setup::Failed(at)) if now.duration_since(at) < RETRY_SETUP_AFTER => Step::Fallback,
        _ => Step::SetUp,
    }
}

/// Whether a transparent dial may go ahead.
#[derive(Debug)]
pub enum Prepared {
    Ready,
    /// The set-up failed just now (worth a warning).
    FailedNow(io::Error),
    /// It failed less than `RETRY_SETUP_AFTER` ago: fall back quietly.
    FailedBefore,
}

/// One pod's reply routes, as far as this agent has set them up.
pub struct ReplyRoutes {
    netns: Netns,
    apps: Mutex<HashMap<SocketAddr, Setup>>,
}

impl ReplyRoutes {
    pub fn new(netns: Netns) -> Self {
        ReplyRoutes {
            netns,
            apps: Mutex::default(),
        }
    }

    /// Sets the reply routes for `app` up if this agent has not yet (once per
    /// app address, retried after a failure).
    pub fn prepare(&self, app: SocketAddr) -> Prepared {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match step(apps.get(&app).copied(), now) {
            Step::Dial => Prepared::Ready,
            Step::Fallback => Prepared::FailedBefore,
            Step::SetUp => match add_reply_route(&self.netns, app) {
                Ok(()) => {
                    apps.insert(app, Setup::Ready);
                    Prepared::Ready
                }
                Err(e) => {
                    apps.insert(app, Setup::Failed(now));
                    Prepared::FailedNow(e)
                }
            },
        }
    }

    /// A transparent socket could not be made for `app`: fall back for a
    /// while. True when it was not known to fail (worth a warning).
    pub fn failed(&self, app: SocketAddr) -> bool {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let was = apps.insert(app, Setup::Failed(Instant::now()));
        !matches!(was, Some(Setup::Failed(_)))
    }

    /// Removes the pod's reply rules (it leaves the mesh; its netns may live on).
    pub fn remove(&self) -> io::Result<usize> {
        self.apps.lock().unwrap_or_else(|p| p.into_inner()).clear();
        remove_reply_rules(&self.netns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_remote_client_is_kept() {
        let pod = ["10.0.0.5".parse().unwrap()];
        let client = "10.0.1.7".parse().unwrap();
        assert_eq!(app_source(client, addr("10.0.0.5:80"), &pod), Some(client));
    }

    #[test]
    fn the_pod_itself_loopback_and_other_families_dial_as_before() {
        let pod: [IpAddr; 2] = ["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let app = addr("10.0.0.5:80");
        for client in [
            "10.0.0.5",
            "127.0.0.1",
            "0.0.0.0",
            "fd00::7",
            "::1",
            "fd00::5",
        ] {
            assert_eq!(
                app_source(client.parse().unwrap(), app, &pod),
                None,
                "{client}"
            );
        }
        assert_eq!(
            app_source("fd00::5".parse().unwrap(), addr("[fd00::5]:80"), &pod),
            None
        );
    }

    #[test]
    fn a_v4_mapped_client_is_its_ipv4_address() {
        let client: IpAddr = "::ffff:10.0.1.7".parse().unwrap();
        assert_eq!(
            app_source(client, addr("10.0.0.5:80"), &[]),
            Some("10.0.1.7".parse().unwrap())
        );
    }

    #[test]
    fn source_ports_go_round_the_agents_range() {
        let (low, high) = AGENT_SOURCE_PORTS;
        let ports = SourcePorts::starting_at(u32::from(high - low));
        assert_eq!(ports.next(), high);
        assert_eq!(ports.next(), low);
        let wrapping = SourcePorts::starting_at(u32::MAX);
        for _ in 0..3 {
            assert!((low..=high).contains(&wrapping.next()));
        }
    }

    #[test]
    fn a_failed_setup_falls_back_until_retried() {
        let t0 = Instant::now();
        assert_eq!(step(None, t0), Step::SetUp);
        assert_eq!(step(Some(Setup::Ready), t0), Step::Dial);
        let failed = Some(Setup::Failed(t0));
        assert_eq!(step(failed, t0 + Duration::from_secs(1)), Step::Fallback);
        assert_eq!(step(failed, t0 + RETRY_SETUP_AFTER), Step::SetUp);
    }
}
