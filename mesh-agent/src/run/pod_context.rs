//! What the proxy handlers ask of the agent for one pod: sockets made in the
//! pod's netns, original destinations from the kernel's map, routes from the
//! state, and the inbound admission rules.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use aya::maps::{HashMap, MapData};
use mesh_common::{OrigDst, PortKey};
use tokio::net::TcpStream;

use super::resolve::{PoolKey, resolve, workload_label};
use crate::ebpf::orig_dst_to_socket_addr;
use crate::netns::{Netns, connect_marked};
use crate::proxy::tunnel::Refusal;
use crate::proxy::{Dialer, InboundContext, OutboundContext, Route};
use crate::state::{MtlsMode, StateHandle, Workload};
use crate::telemetry::{ConnectionLabels, Reporter};

/// Connects from inside a pod's netns, with the agent mark.
pub struct NetnsDialer {
    pub netns: Netns,
}

impl Dialer for NetnsDialer {
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        connect_marked(&self.netns, addr).await
    }
}

/// The read side of the kernel's original-destination map, shared by all pods.
pub type OrigDstMap = Arc<HashMap<MapData, PortKey, OrigDst>>;

pub struct PodContext {
    pub workload: Arc<Workload>,
    pub netns_cookie: u64,
    pub dialer: NetnsDialer,
    pub state: StateHandle,
    pub orig_dst: OrigDstMap,
    pub node_addr: Option<IpAddr>,
    pub round_robin: AtomicUsize,
}

impl OutboundContext for PodContext {
    type PoolKey = PoolKey;
    type Dialer = NetnsDialer;
    type TunnelIo = TcpStream;

    fn original_destination(&self, peer: SocketAddr) -> Option<SocketAddr> {
        let orig = self
            .orig_dst
            .get(&PortKey::new(self.netns_cookie, peer.port()), 0)
            .ok()?;
        Some(orig_dst_to_socket_addr(&orig))
    }

    fn resolve(&self, _peer: SocketAddr, original_dst: SocketAddr) -> Route<PoolKey> {
        resolve(
            &self.state.current(),
            &self.workload,
            original_dst,
            &self.round_robin,
        )
    }

    fn dialer(&self) -> &NetnsDialer {
        &self.dialer
    }

    async fn connect_tunnel(
        &self,
        tunnel_addr: SocketAddr,
        _key: &PoolKey,
    ) -> io::Result<TcpStream> {
        // The tunnel leaves from the source pod's netns, with the pod's own IP.
        connect_marked(&self.dialer.netns, tunnel_addr).await
    }
}

impl PodContext {
    fn inbound_labels(&self, peer: IpAddr) -> ConnectionLabels {
        let snapshot = self.state.current();
        let source = snapshot.workload_by_ip(peer);
        ConnectionLabels {
            reporter: Reporter::Destination,
            source_workload: source.map(|w| workload_label(w)).unwrap_or_default(),
            source_workload_namespace: source.map(|w| w.key.namespace.clone()).unwrap_or_default(),
            destination_workload: workload_label(&self.workload),
            destination_workload_namespace: self.workload.key.namespace.clone(),
            ..Default::default()
        }
    }
}

impl InboundContext for PodContext {
    type Dialer = NetnsDialer;
    type TunnelIo = TcpStream;
    type Peer = SocketAddr;

    fn dialer(&self) -> &NetnsDialer {
        &self.dialer
    }

    async fn accept_tunnel(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<(TcpStream, SocketAddr)> {
        Ok((stream, peer))
    }

    fn authorize(
        &self,
        peer: &SocketAddr,
        target: SocketAddr,
    ) -> Result<ConnectionLabels, Refusal> {
        if !self.workload.ips.contains(&target.ip()) {
            return Err(Refusal::bad_request(format!(
                "{target} is not an address of pod {}",
                self.workload.key
            )));
        }
        Ok(self.inbound_labels(peer.ip()))
    }

    fn inbound_plaintext_allowed(
        &self,
        peer: SocketAddr,
        _local: SocketAddr,
    ) -> Result<ConnectionLabels, Refusal> {
        let from_node = Some(peer.ip()) == self.node_addr;
        if self.workload.mtls == MtlsMode::Strict && !from_node {
            return Err(Refusal::forbidden(format!(
                "namespace {} is strict mTLS: plaintext from {peer} refused",
                self.workload.key.namespace
            )));
        }
        Ok(self.inbound_labels(peer.ip()))
    }
}
