//! Map layouts and constants shared by the kernel programs (`mesh-ebpf`) and the
//! agent (`mesh-agent`). Every type here is `#[repr(C)]` with explicit padding so
//! both sides agree byte for byte; the agent gets `aya::Pod` impls through the
//! `user` feature.
#![no_std]

/// `SO_MARK` carried by every socket the agent creates. The kernel programs never
/// redirect a socket with this mark, so the agent cannot capture itself.
pub const AGENT_MARK: u32 = 0x5745;

/// Agent listener ports inside every meshed pod's network namespace.
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
pub const TUNNEL_PORT: u16 = 15008;

/// Version of the pinned maps' layouts (keys, values, sizes). Bump it whenever
/// one changes: the agent pins under a directory named after it and refuses to
/// adopt pins of another version (`mesh-agent reset` removes them).
pub const PIN_LAYOUT_VERSION: u32 = 3;

/// Names of the maps, as the agent looks them up in the object and pins them.
pub mod map_names {
    pub const ENROLLED_NETNS: &str = "ENROLLED_NETNS";
    pub const ORIG_DST_BY_COOKIE: &str = "ORIG_DST_BY_COOKIE";
    pub const ORIG_DST_BY_PORT: &str = "ORIG_DST_BY_PORT";
    pub const INBOUND_SOCKETS: &str = "INBOUND_SOCKETS";
    pub const INBOUND_CONFIG: &str = "INBOUND_CONFIG";
    pub const EXCLUDED_PORTS: &str = "EXCLUDED_PORTS";
    pub const STATS: &str = "STATS";
    pub const KUBEPODS_ROOT: &str = "KUBEPODS_ROOT";
    pub const POD_CGROUPS: &str = "POD_CGROUPS";
    pub const FAST_PATH: &str = "FAST_PATH";
    pub const FAST_PATH_SOCKETS: &str = "FAST_PATH_SOCKETS";
    pub const FAST_PATH_DIALS: &str = "FAST_PATH_DIALS";
    pub const FAST_PATH_FELL_BACK: &str = "FAST_PATH_FELL_BACK";
}

/// Names of the programs (their Rust function names in `mesh-ebpf`).
pub mod program_names {
    pub const CONNECT4: &str = "weft_connect4";
    pub const CONNECT6: &str = "weft_connect6";
    pub const SOCKOPS: &str = "weft_sockops";
    pub const GETPEERNAME4: &str = "weft_getpeername4";
    pub const GETPEERNAME6: &str = "weft_getpeername6";
    pub const SK_LOOKUP: &str = "weft_sk_lookup";
    pub const SK_MSG: &str = "weft_sk_msg";
}

/// Value of `ENROLLED_NETNS` (key: netns cookie, `u64`): how a captured pod's
/// outbound connections are redirected.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsConfig {
    /// Port of the agent's outbound listener on loopback in that netns (host order).
    /// 0: enrolled "closed", the agent could not set up the pod's listeners; its
    /// TCP connects, but to loopback and excluded ports, are refused (EPERM).
    pub outbound_port: u16,
    pub _pad: [u8; 6],
}

impl NetnsConfig {
    /// A pod enrolled closed: see [`NetnsConfig::outbound_port`].
    pub const CLOSED: NetnsConfig = NetnsConfig::redirect_to(0);

    pub const fn redirect_to(outbound_port: u16) -> Self {
        NetnsConfig {
            outbound_port,
            _pad: [0; 6],
        }
    }

    pub const fn is_closed(&self) -> bool {
        self.outbound_port == 0
    }
}

/// An original destination as the application asked for it.
///
/// IPv4 is stored as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), so one layout
/// serves both families. Address bytes are in network order, the port in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigDst {
    pub addr: [u8; 16],
    pub port: u16,
    /// `AF_INET` (2) or `AF_INET6` (10): the family of the application's socket.
    pub family: u16,
    pub _pad: [u8; 4],
}

impl OrigDst {
    pub const fn v4(addr_be: [u8; 4], port: u16) -> Self {
        let a = addr_be;
        OrigDst {
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
            ],
            port,
            family: AF_INET,
            _pad: [0; 4],
        }
    }

    /// The IPv4 address bytes if this is an IPv4-mapped address.
    pub fn as_v4(&self) -> Option<[u8; 4]> {
        let a = &self.addr;
        if a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff {
            Some([a[12], a[13], a[14], a[15]])
        } else {
            None
        }
    }
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Key of `ORIG_DST_BY_PORT`: the application's side of a redirected connection,
/// as the agent sees it when it accepts on its outbound listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub netns_cookie: u64,
    /// The application socket's local port (host order).
    pub port: u16,
    /// The connection's family as the agent accepts it: `AF_INET` (an IPv4
    /// socket, or an IPv6 one to an IPv4-mapped address) or `AF_INET6`. An IPv4
    /// and an IPv6 socket may share a local port.
    pub family: u16,
    pub _pad: [u8; 4],
}

impl PortKey {
    pub const fn new(netns_cookie: u64, port: u16, family: u16) -> Self {
        PortKey {
            netns_cookie,
            port,
            family,
            _pad: [0; 4],
        }
    }
}

/// Key of `INBOUND_SOCKETS` (a sockhash) and `INBOUND_CONFIG`: a pod IP, IPv4-mapped
/// like [`OrigDst::addr`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PodIpKey {
    pub addr: [u8; 16],
}

impl PodIpKey {
    pub const fn v4(addr_be: [u8; 4]) -> Self {
        let a = addr_be;
        PodIpKey {
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
            ],
        }
    }
}

/// Value of `INBOUND_CONFIG`: what the pod's `sk_lookup` program must leave alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundConfig {
    /// The node's own address as the pod sees it, IPv4-mapped (all zero: none).
    /// Not an exemption: sk_lookup steers the node's connections to the agent
    /// like any other, and the agent exempts only kubelet probes.
    pub node_addr: [u8; 16],
    /// The pod's netns cookie: the fast path pairs the agent's socket dialling
    /// this IP from inside that netns with the app's (0: unknown).
    pub netns_cookie: u64,
}

/// Value of `FAST_PATH` (index 0): [`FAST_PATH_ON`] or 0. The agent writes it at
/// every start, so `--fast-path` applies to adopted programs too.
pub const FAST_PATH_ON: u32 = 1;

/// Key of `FAST_PATH_SOCKETS` (a sockhash), `FAST_PATH_DIALS` and
/// `FAST_PATH_FELL_BACK`: one socket by its netns and its own end and peer.
/// Its peer's key is the mirror ([`SockKey::peer`]): a 4-tuple is unique among a
/// netns's live sockets, so the mirror can only be the socket at the other end.
/// Addresses IPv4-mapped like [`OrigDst::addr`], ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub netns_cookie: u64,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: [u8; 4],
}

impl SockKey {
    /// The key of the socket at the other end of this one's connection.
    pub const fn peer(&self) -> SockKey {
        SockKey {
            netns_cookie: self.netns_cookie,
            local_addr: self.remote_addr,
            remote_addr: self.local_addr,
            local_port: self.remote_port,
            remote_port: self.local_port,
            _pad: [0; 4],
        }
    }
}

/// The only entry (index 0) of `KUBEPODS_ROOT`: where the kubelet's pod cgroups
/// live, so the connect programs can hold back pods the agent has not classified.
///
/// Cgroup ids are the kernel's (the inode number of the cgroup directory); levels
/// count from the cgroup v2 root (level 0). `cgroup_id == 0`: no kubepods root
/// (file mode), nothing is held back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KubepodsConfig {
    /// The kubepods cgroup (`kubepods` or `kubepods.slice`).
    pub cgroup_id: u64,
    /// The QoS cgroups under it (burstable, besteffort); 0 for an absent one. A
    /// child of kubepods that is not one of these is a (Guaranteed) pod cgroup.
    pub qos_ids: [u64; 2],
    /// Level of the kubepods cgroup in the hierarchy.
    pub level: u32,
    pub _pad: [u8; 4],
    /// The node's netns cookie: tasks in it (host-network pods, the agent itself,
    /// which must reach the API server before it can classify anything) are
    /// never held, as their traffic is never captured.
    pub host_netns_cookie: u64,
}

/// Values of `POD_CGROUPS` (key: a pod-level cgroup id, `u64`).
pub mod pod_verdict {
    /// The agent has classified the pod (its netns is enrolled, or it is not
    /// meshed): its connects go on as the netns enrolment decides. A pod cgroup
    /// absent from the map, or with any other value, has its TCP connects refused.
    pub const CLASSIFIED: u32 = 1;
}

/// The fast path's choice of sockets (docs/architecture.md, "Kernel programs"):
/// pure, so it is unit-tested here; `mesh-ebpf/src/fast_path.rs` feeds it what
/// the socket and the maps say. Only sockets established in an enrolled, open
/// netns with the fast path on are asked about.
pub mod fast_path {
    use super::{AGENT_MARK, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT, TUNNEL_PORT};

    /// A socket that connected (active end), as the kernel sees it.
    #[derive(Clone, Copy, Debug)]
    pub struct Active {
        /// The connect program redirected it to the agent: an app's socket.
        pub redirected: bool,
        pub mark: u32,
        pub remote_port: u16,
        /// The netns of the pod whose IP it connected to (`INBOUND_CONFIG`), if any.
        pub remote_pod_netns: Option<u64>,
        /// Its own netns.
        pub netns: u64,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ActiveVerdict {
        /// Stays on the normal path.
        Out,
        /// Source side: an app's socket to the agent's outbound port.
        Source,
        /// Destination side: the agent dialling an app of this very pod;
        /// recorded so the app's end joins too.
        Destination,
    }

    pub fn active(s: &Active) -> ActiveVerdict {
        if s.redirected {
            return ActiveVerdict::Source;
        }
        let agent_port = matches!(
            s.remote_port,
            OUTBOUND_PORT | INBOUND_PLAINTEXT_PORT | TUNNEL_PORT
        );
        if s.mark == AGENT_MARK && !agent_port && s.remote_pod_netns == Some(s.netns) {
            ActiveVerdict::Destination
        } else {
            ActiveVerdict::Out
        }
    }

    /// An accepted socket (passive end) joins when it is the agent's on the
    /// netns's outbound port, or the app's accepting a recorded agent dial.
    pub fn passive(local_port: u16, outbound_port: u16, peer_is_recorded_dial: bool) -> bool {
        local_port == outbound_port || peer_is_recorded_dial
    }
}

/// Indexes into the per-CPU `STATS` array.
pub mod stats {
    pub const CONNECT_REDIRECTED: u32 = 0;
    pub const CONNECT_SKIPPED_MARK: u32 = 1;
    pub const INBOUND_STEERED: u32 = 2;
    pub const ORIG_DST_PUBLISHED: u32 = 3;
    /// TCP connects refused because the task's pod cgroup is not classified yet.
    pub const CONNECT_REFUSED_UNCLASSIFIED: u32 = 4;
    /// TCP connects refused because their netns is enrolled closed.
    pub const CONNECT_REFUSED_CLOSED: u32 = 5;
    /// Sends the fast path moved straight to the peer socket (`bpf_msg_redirect_hash`).
    pub const FAST_PATH_REDIRECTS: u32 = 6;
    /// Bytes of those sends.
    pub const FAST_PATH_BYTES: u32 = 7;
    /// Sockets in the fast path's map whose peer was not there at a send: they
    /// stay on the normal path for good, so their bytes are never reordered.
    pub const FAST_PATH_FELL_BACK: u32 = 8;
    pub const COUNT: u32 = 9;
}

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: all of these are repr(C), made only of integers and byte arrays, with
    // explicit padding fields, so every bit pattern is valid and there are no holes.
    unsafe impl aya::Pod for super::NetnsConfig {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::PodIpKey {}
    unsafe impl aya::Pod for super::InboundConfig {}
    unsafe impl aya::Pod for super::KubepodsConfig {}
    unsafe impl aya::Pod for super::SockKey {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<NetnsConfig>(), 8);
        assert_eq!(core::mem::size_of::<OrigDst>(), 24);
        assert_eq!(core::mem::size_of::<PortKey>(), 16);
        assert_eq!(core::mem::size_of::<PodIpKey>(), 16);
        assert_eq!(core::mem::size_of::<InboundConfig>(), 24);
        assert_eq!(core::mem::size_of::<SockKey>(), 48);
        assert_eq!(core::mem::size_of::<KubepodsConfig>(), 40);
    }

    #[test]
    fn port_keys_of_the_two_families_differ() {
        assert_ne!(
            PortKey::new(7, 41234, AF_INET),
            PortKey::new(7, 41234, AF_INET6)
        );
    }

    #[test]
    fn a_sockets_peer_key_is_its_mirror() {
        let app = SockKey {
            netns_cookie: 9,
            local_addr: OrigDst::v4([127, 0, 0, 1], 0).addr,
            remote_addr: OrigDst::v4([127, 0, 0, 2], 0).addr,
            local_port: 41234,
            remote_port: 15001,
            _pad: [0; 4],
        };
        let agent = app.peer();
        assert_eq!((agent.local_port, agent.remote_port), (15001, 41234));
        assert_eq!(agent.local_addr, app.remote_addr);
        assert_eq!(agent.peer(), app);
        assert_ne!(agent, app);
    }

    #[test]
    fn only_app_and_agent_ends_in_one_pod_join_the_fast_path() {
        use fast_path::{Active, ActiveVerdict, active, passive};
        let app = Active {
            redirected: true,
            mark: 0,
            remote_port: OUTBOUND_PORT,
            remote_pod_netns: None,
            netns: 7,
        };
        assert_eq!(active(&app), ActiveVerdict::Source);
        let dial = Active {
            redirected: false,
            mark: AGENT_MARK,
            remote_port: 8080,
            remote_pod_netns: Some(7),
            netns: 7,
        };
        assert_eq!(active(&dial), ActiveVerdict::Destination);
        let out = |a: Active| assert_eq!(active(&a), ActiveVerdict::Out, "{a:?}");
        // The agent's tunnel and direct dials to other pods, and its own ports.
        out(Active {
            remote_pod_netns: Some(8),
            ..dial
        });
        out(Active {
            remote_pod_netns: None,
            ..dial
        });
        out(Active {
            remote_port: TUNNEL_PORT,
            ..dial
        });
        // An app's own socket that was not redirected (excluded port, loopback).
        out(Active { mark: 0, ..dial });
        assert!(passive(OUTBOUND_PORT, OUTBOUND_PORT, false));
        assert!(passive(8080, OUTBOUND_PORT, true));
        assert!(!passive(8080, OUTBOUND_PORT, false));
        assert!(!passive(TUNNEL_PORT, OUTBOUND_PORT, false));
    }

    #[test]
    fn v4_mapped_round_trip() {
        let d = OrigDst::v4([10, 96, 0, 10], 80);
        assert_eq!(d.as_v4(), Some([10, 96, 0, 10]));
        assert_eq!(d.family, AF_INET);
    }
}
