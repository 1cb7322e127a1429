//! The data path, independent of network namespaces (docs/architecture.md, "The agent"): byte
//! copying, the HTTP/2 CONNECT tunnel, and the outbound and inbound connection
//! handlers. Sockets come in from, and go out through, traits the agent's
//! netns layer implements (`Dialer`, `OutboundContext`, `InboundContext`).

pub mod copy;
pub mod http;
pub mod inbound;
pub mod limits;
pub mod outbound;
pub mod pod;
pub mod tunnel;

mod accept;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use crate::telemetry::{ConnectionMetrics, Metrics};
use copy::{CopyConfig, CopyEnd, copy_bidirectional};
use limits::{Limits, NodeBudgets};
use pod::PodConnections;

pub use inbound::{InboundContext, run_inbound_plaintext, run_inbound_tunnel};
pub use outbound::{OutboundContext, OutboundTarget, Route, run_outbound};
pub use pod::{ConnectionPermit, DEFAULT_MAX_CONNECTIONS_PER_POD};
pub use tunnel::{Pool, Refusal, TunnelConfig, TunnelError};

/// Opens TCP connections on a pod's behalf. The agent's implementation creates
/// the socket inside the pod's network namespace with the agent mark, so the
/// kernel programs never steer it back into the agent.
pub trait Dialer: Send + Sync + 'static {
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send;

    /// Connects to the app at `addr` so that it sees `client`'s IP as the
    /// peer (docs/architecture.md, "Keeping the client's address"). A dialer
    /// that cannot, or a client it must not pose as, connects as `connect` does.
    fn connect_as(
        &self,
        addr: SocketAddr,
        client: SocketAddr,
    ) -> impl Future<Output = io::Result<TcpStream>> + Send {
        let _ = client;
        self.connect(addr)
    }
}

/// Data-path settings shared by every pod.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub copy: CopyConfig,
    pub tunnel: TunnelConfig,
    /// Bound on connecting to a direct destination or to the app.
    pub connect_timeout: Duration,
    /// The sizes of the connection and handshake budgets.
    pub limits: Limits,
    /// The node-wide budgets, shared by every pod made from this config.
    pub node: NodeBudgets,
}

impl ProxyConfig {
    /// Settings whose budgets derive from an open-file limit of `open_files`.
    pub fn for_open_files(open_files: u64) -> Self {
        let limits = Limits::from_open_files(open_files);
        Self {
            copy: CopyConfig {
                growth: limits::Budget::new(limits.buffer_growth),
                ..CopyConfig::default()
            },
            tunnel: TunnelConfig::default(),
            connect_timeout: Duration::from_secs(10),
            limits,
            node: NodeBudgets::new(&limits),
        }
    }

    /// The connection set of a newly enrolled pod, inside the node's budgets.
    pub fn pod_connections(&self, name: impl Into<String>) -> PodConnections {
        PodConnections::with_limits(name, &self.limits, &self.node)
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self::for_open_files(20_000)
    }
}

/// What every handler needs, agent-wide; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub config: Arc<ProxyConfig>,
}

/// Dials `addr` within the configured connect timeout.
async fn dial<D: Dialer>(dialer: &D, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    match tokio::time::timeout(timeout, dialer.connect(addr)).await {
        Ok(res) => res,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// Dials the app at `addr` on behalf of `client` within the configured
/// connect timeout.
async fn dial_app<D: Dialer>(
    dialer: &D,
    addr: SocketAddr,
    client: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    match tokio::time::timeout(timeout, dialer.connect_as(addr, client)).await {
        Ok(res) => res,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// Closes with a TCP reset, so a refused client fails at once and loudly.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Copies between the client side `a` and the upstream `b` until done or the
/// pod is shut down, counting bytes into `metrics`.
async fn bridge<A, B>(
    a: &mut A,
    b: &mut B,
    mut metrics: ConnectionMetrics,
    copy: &CopyConfig,
    pod: &PodConnections,
    what: &str,
) where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        r = copy_bidirectional(a, b, copy, &mut metrics) => match r.end {
            CopyEnd::Error(dir, e) => {
                debug!(pod = pod.name(), what, ?dir, error = %e, sent = r.b_to_a, received = r.a_to_b, "connection failed");
            }
            end => debug!(pod = pod.name(), what, ?end, sent = r.b_to_a, received = r.a_to_b, "connection done"),
        },
        () = pod.connections_token().cancelled() => debug!(pod = pod.name(), what, "connection closed by pod shutdown"),
    }
}

#[cfg(test)]
mod tests;
