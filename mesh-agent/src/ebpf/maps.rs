//! Typed handles on the pinned maps the agent reads and writes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, SockHash};
use mesh_common::{
    AF_INET, AF_INET6, InboundConfig, KubepodsConfig, NetnsConfig, OrigDst, PodIpKey, PortKey,
    map_names, stats,
};

use super::pins::PinLayout;

pub struct MapHandles {
    pub enrolled_netns: HashMap<MapData, u64, NetnsConfig>,
    pub orig_dst_by_port: HashMap<MapData, PortKey, OrigDst>,
    pub inbound_sockets: SockHash<MapData, PodIpKey>,
    pub inbound_config: HashMap<MapData, PodIpKey, InboundConfig>,
    pub excluded_ports: HashMap<MapData, u16, u8>,
    pub counters: PerCpuArray<MapData, u64>,
    /// The pod gate (`ebpf::gate`): where the kubelet's pod cgroups are.
    pub kubepods_root: Array<MapData, KubepodsConfig>,
    /// The pod gate: pod cgroup id → `mesh_common::pod_verdict`.
    pub pod_cgroups: HashMap<MapData, u64, u32>,
    /// Index 0: whether the fast path takes new connections.
    pub fast_path: Array<MapData, u32>,
}

fn open(layout: &PinLayout, name: &str) -> Result<Map> {
    let path = layout.map(name);
    let data =
        MapData::from_pin(&path).with_context(|| format!("open pinned map {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("map {name}"))
}

impl MapHandles {
    pub fn from_pins(layout: &PinLayout) -> Result<Self> {
        Ok(MapHandles {
            enrolled_netns: open(layout, map_names::ENROLLED_NETNS)?.try_into()?,
            orig_dst_by_port: open(layout, map_names::ORIG_DST_BY_PORT)?.try_into()?,
            inbound_sockets: open(layout, map_names::INBOUND_SOCKETS)?.try_into()?,
            inbound_config: open(layout, map_names::INBOUND_CONFIG)?.try_into()?,
            excluded_ports: open(layout, map_names::EXCLUDED_PORTS)?.try_into()?,
            counters: open(layout, map_names::STATS)?.try_into()?,
            kubepods_root: open(layout, map_names::KUBEPODS_ROOT)?.try_into()?,
            pod_cgroups: open(layout, map_names::POD_CGROUPS)?.try_into()?,
            fast_path: open(layout, map_names::FAST_PATH)?.try_into()?,
        })
    }

    /// Turns the fast path on or off for connections established from now on;
    /// those already in it keep it until they close.
    pub fn set_fast_path(&mut self, on: bool) -> Result<()> {
        let value = if on { mesh_common::FAST_PATH_ON } else { 0 };
        self.fast_path
            .set(0, value, 0)
            .context("write the fast path switch")
    }

    /// The original destination of a redirected connection, looked up by the
    /// application's netns and its end of the connection (the peer the agent
    /// accepted).
    pub fn original_destination(&self, netns_cookie: u64, app: SocketAddr) -> Option<SocketAddr> {
        let orig = self
            .orig_dst_by_port
            .get(&port_key(netns_cookie, app), 0)
            .ok()?;
        Some(orig_dst_to_socket_addr(&orig))
    }

    /// The netns cookies currently enrolled for capture.
    pub fn enrolled_cookies(&self) -> Vec<u64> {
        self.enrolled_netns.keys().filter_map(Result::ok).collect()
    }

    /// The pod IPs with an inbound configuration.
    pub fn inbound_pod_ips(&self) -> Vec<IpAddr> {
        self.inbound_config
            .keys()
            .filter_map(Result::ok)
            .map(|k| pod_ip_from_key(&k))
            .collect()
    }

    pub fn stats(&self) -> KernelStats {
        KernelStats::read(&self.counters)
    }
}

impl KernelStats {
    /// Sums the per-CPU counters of the `STATS` map.
    pub fn read(counters: &PerCpuArray<MapData, u64>) -> KernelStats {
        let sum = |index: u32| -> u64 {
            counters
                .get(&index, 0)
                .ok()
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        KernelStats {
            connect_redirected: sum(stats::CONNECT_REDIRECTED),
            connect_skipped_mark: sum(stats::CONNECT_SKIPPED_MARK),
            inbound_steered: sum(stats::INBOUND_STEERED),
            orig_dst_published: sum(stats::ORIG_DST_PUBLISHED),
            connect_refused_unclassified: sum(stats::CONNECT_REFUSED_UNCLASSIFIED),
            connect_refused_closed: sum(stats::CONNECT_REFUSED_CLOSED),
            fast_path_redirects: sum(stats::FAST_PATH_REDIRECTS),
            fast_path_bytes: sum(stats::FAST_PATH_BYTES),
            fast_path_fell_back: sum(stats::FAST_PATH_FELL_BACK),
        }
    }
}

/// Counters kept by the kernel programs.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct KernelStats {
    pub connect_redirected: u64,
    pub connect_skipped_mark: u64,
    pub inbound_steered: u64,
    pub orig_dst_published: u64,
    /// Connects refused because their pod was not classified yet (the pod gate).
    pub connect_refused_unclassified: u64,
    /// Connects refused because their pod is enrolled closed (its agent
    /// listeners could not be set up).
    pub connect_refused_closed: u64,
    /// Sends the fast path moved socket to socket (`weft_fast_path_redirects_total`).
    pub fast_path_redirects: u64,
    /// Bytes of those sends.
    pub fast_path_bytes: u64,
    /// Fast-path sockets whose send found no peer, left on the normal path.
    pub fast_path_fell_back: u64,
}

pub fn orig_dst_to_socket_addr(orig: &OrigDst) -> SocketAddr {
    let ip = match orig.as_v4() {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        None => IpAddr::V6(Ipv6Addr::from(orig.addr)),
    };
    SocketAddr::new(ip, orig.port)
}

/// The `ORIG_DST_BY_PORT` key of a redirected connection whose application end
/// the agent accepted as `app`, in the pod netns `netns_cookie`.
pub fn port_key(netns_cookie: u64, app: SocketAddr) -> PortKey {
    let family = match app.ip().to_canonical() {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    };
    PortKey::new(netns_cookie, app.port(), family)
}

pub fn pod_ip_key(ip: IpAddr) -> PodIpKey {
    match ip {
        IpAddr::V4(v4) => PodIpKey::v4(v4.octets()),
        IpAddr::V6(v6) => PodIpKey { addr: v6.octets() },
    }
}

fn pod_ip_from_key(key: &PodIpKey) -> IpAddr {
    let v6 = Ipv6Addr::from(key.addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orig_dst_v4_round_trips_to_socket_addr() {
        let orig = OrigDst::v4([10, 96, 0, 10], 8080);
        assert_eq!(
            orig_dst_to_socket_addr(&orig),
            "10.96.0.10:8080".parse().unwrap()
        );
    }

    #[test]
    fn port_key_carries_the_family_of_the_accepted_peer() {
        let key = |s: &str| port_key(7, s.parse().unwrap());
        assert_eq!(key("127.0.0.1:41234"), PortKey::new(7, 41234, AF_INET));
        assert_eq!(key("[::1]:41234"), PortKey::new(7, 41234, AF_INET6));
        // A dual-stack listener would see an IPv4 peer as mapped: still IPv4.
        assert_eq!(
            key("[::ffff:127.0.0.1]:41234"),
            PortKey::new(7, 41234, AF_INET)
        );
        assert_ne!(key("127.0.0.1:41234"), key("[::1]:41234"));
    }

    #[test]
    fn pod_ip_key_round_trips() {
        for ip in ["10.88.1.5", "fd00::5"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(pod_ip_from_key(&pod_ip_key(ip)), ip);
        }
    }
}
