//! The reply routes that keep the client's address at the destination
//! (docs/architecture.md, "Keeping the client's address"). The agent dials the
//! app from the client's IP; the app's replies to it must come back to the
//! agent's socket instead of leaving by eth0. In the pod's netns, per app port
//! the agent dials, two rules send to `REPLY_TABLE`, which delivers
//! everything locally (`local 0.0.0.0/0 dev lo`, `local ::/0 dev lo`). The
//! app's replies:
//! `from <pod IP> ipproto tcp sport <app port> dport 1024-32767 fwmark 0/0xffffffff`.
//!
//! - `ipproto tcp`: the app's UDP (DNS…) is never captured; its TCP connects
//!   never get a listening port as their source port.
//! - `dport` [`AGENT_SOURCE_PORTS`], the ports the agent dials from: a client's
//!   own SYN to the app port (plaintext, steered to 15006; a kubelet probe)
//!   comes from an ephemeral port above them, and its reverse-path check
//!   (which any custom rule makes the kernel run) must not find a local
//!   route, or the SYN is dropped as martian.
//! - `fwmark 0`: the agent's marked sockets on that port (a plaintext
//!   connection accepted on 15006 keeps the app's port as its local port)
//!   route as before.
//!
//! And the agent's own socket, bound to `lo` (transparent.rs): `oif lo ipproto
//! tcp dport <app port>`; IPv6 finds no route to the pod's address through
//! `lo` otherwise.
//!
//! Set through rtnetlink (no `ip` command, no iptables); adding is idempotent
//! (`EEXIST` is success), so a restarted agent finds them in place. They die
//! with the netns; `remove_reply_rules` takes them away when the pod leaves the
//! mesh while its netns lives on.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use netlink_packet_route::{AddressFamily, IpProtocol, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_ROUTE};

use super::Netns;

/// The routing table of the reply routes (the agent mark's value, 0x5745).
pub const REPLY_TABLE: u32 = mesh_common::AGENT_MARK;
/// The rules' priority: after `local` (0), before `main` (32766).
pub const REPLY_RULE_PRIORITY: u32 = mesh_common::AGENT_MARK;
/// The source ports of the agent's dials with a client's address: below every
/// common ephemeral range (Linux 32768-60999; IANA, Windows, BSD 49152-65535),
/// above the privileged ones.
pub const AGENT_SOURCE_PORTS: (u16, u16) = (1024, 32767);

const LOOPBACK_IFINDEX: u32 = 1;

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// `local 0.0.0.0/0 dev lo table REPLY_TABLE` (or `::/0`) for `ip`'s family.
pub fn local_table_route(ip: IpAddr) -> RouteMessage {
    let mut route = RouteMessage::default();
    route.header = RouteHeader {
        address_family: family(ip),
        destination_prefix_length: 0,
        table: RouteHeader::RT_TABLE_UNSPEC,
        protocol: RouteProtocol::Static,
        scope: RouteScope::Host,
        kind: RouteType::Local,
        ..Default::default()
    };
    let any = match ip {
        IpAddr::V4(_) => RouteAddress::Inet(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => RouteAddress::Inet6(Ipv6Addr::UNSPECIFIED),
    };
    route.attributes = vec![
        RouteAttribute::Destination(any),
        RouteAttribute::Table(REPLY_TABLE),
        RouteAttribute::Oif(LOOPBACK_IFINDEX),
    ];
    route
}

fn rule(ip: IpAddr, selectors: Vec<RuleAttribute>) -> RuleMessage {
    let mut rule = RuleMessage::default();
    rule.header.family = family(ip);
    rule.header.action = RuleAction::ToTable;
    rule.attributes = selectors;
    rule.attributes.extend([
        RuleAttribute::IpProtocol(IpProtocol::Tcp),
        RuleAttribute::Priority(REPLY_RULE_PRIORITY),
        RuleAttribute::Table(REPLY_TABLE),
    ]);
    rule
}

/// The rules for the app at `app` (module doc): its replies, the agent's dials.
pub fn reply_rules(app: SocketAddr) -> [RuleMessage; 2] {
    let (low, high) = AGENT_SOURCE_PORTS;
    let mut replies = rule(
        app.ip(),
        vec![
            RuleAttribute::Source(app.ip()),
            RuleAttribute::SourcePortRange(RulePortRange {
                start: app.port(),
                end: app.port(),
            }),
            RuleAttribute::DestinationPortRange(RulePortRange {
                start: low,
                end: high,
            }),
            RuleAttribute::FwMark(0),
            RuleAttribute::FwMask(u32::MAX),
        ],
    );
    replies.header.src_len = if app.is_ipv4() { 32 } else { 128 };
    let port = RulePortRange {
        start: app.port(),
        end: app.port(),
    };
    let agent = rule(
        app.ip(),
        vec![
            RuleAttribute::Oifname("lo".into()),
            RuleAttribute::DestinationPortRange(port),
        ],
    );
    [replies, agent]
}

/// Is `rule` one of ours (it sends to `REPLY_TABLE`)?
fn is_reply_rule(rule: &RuleMessage) -> bool {
    rule.attributes
        .iter()
        .any(|a| matches!(a, RuleAttribute::Table(t) if *t == REPLY_TABLE))
}

/// An rtnetlink socket opened inside a pod's netns.
struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    fn open(netns: &Netns) -> io::Result<Self> {
        let mut socket = netns.run(|| Socket::new(NETLINK_ROUTE))??;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Reads replies to request `seq` until its ACK or the end of its dump,
    /// handing each inner message to `each`.
    fn replies(&self, seq: u32, mut each: impl FnMut(RouteNetlinkMessage)) -> io::Result<()> {
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < buf.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += len.next_multiple_of(4);
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::InnerMessage(inner) => each(inner),
                    _ => {}
                }
            }
        }
    }

    /// Adds, treating "already there" as success.
    fn add(&mut self, msg: RouteNetlinkMessage) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)?;
        match self.replies(seq, |_| {}) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }
}

/// Puts the reply route and rules for the app at `app` in place in `netns`
/// (idempotent).
pub fn add_reply_route(netns: &Netns, app: SocketAddr) -> io::Result<()> {
    let mut rtnl = Rtnl::open(netns)?;
    rtnl.add(RouteNetlinkMessage::NewRoute(local_table_route(app.ip())))?;
    for rule in reply_rules(app) {
        rtnl.add(RouteNetlinkMessage::NewRule(rule))?;
    }
    Ok(())
}

/// Removes every reply rule of `netns` (both families, all ports), e.g. when
/// its pod leaves the mesh; the table's route is inert without them. Returns
/// how many were removed.
pub fn remove_reply_rules(netns: &Netns) -> io::Result<usize> {
    let mut rtnl = Rtnl::open(netns)?;
    let seq = rtnl.send(
        RouteNetlinkMessage::GetRule(RuleMessage::default()),
        NLM_F_DUMP,
    )?;
    let mut ours = Vec::new();
    rtnl.replies(seq, |msg| {
        if let RouteNetlinkMessage::NewRule(rule) = msg
            && is_reply_rule(&rule)
        {
            ours.push(rule);
        }
    })?;
    let count = ours.len();
    for rule in ours {
        let seq = rtnl.send(RouteNetlinkMessage::DelRule(rule), NLM_F_ACK)?;
        match rtnl.replies(seq, |_| {}) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            r => r?,
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_rule_matches_only_the_apps_tcp_replies_to_the_agents_ports() {
        let app: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let [rule, agent] = reply_rules(app);
        assert!(is_reply_rule(&agent));
        assert!(
            agent
                .attributes
                .contains(&RuleAttribute::Oifname("lo".into()))
        );
        assert_eq!(rule.header.src_len, 32);
        assert_eq!(rule.header.action, RuleAction::ToTable);
        assert!(is_reply_rule(&rule));
        for wanted in [
            RuleAttribute::Source("10.0.0.5".parse().unwrap()),
            RuleAttribute::SourcePortRange(RulePortRange {
                start: 8080,
                end: 8080,
            }),
            RuleAttribute::DestinationPortRange(RulePortRange {
                start: 1024,
                end: 32767,
            }),
            RuleAttribute::IpProtocol(IpProtocol::Tcp),
            RuleAttribute::FwMark(0),
            RuleAttribute::FwMask(u32::MAX),
        ] {
            assert!(rule.attributes.contains(&wanted), "{wanted:?}");
        }
    }

    #[test]
    fn the_agents_ports_are_below_every_common_ephemeral_range() {
        let (low, high) = AGENT_SOURCE_PORTS;
        assert!(low >= 1024 && high < 32768);
    }

    #[test]
    fn ipv6_rules_and_route_are_ipv6() {
        let app: SocketAddr = "[fd00::5]:80".parse().unwrap();
        let [replies, _] = reply_rules(app);
        assert_eq!(replies.header.family, AddressFamily::Inet6);
        assert_eq!(replies.header.src_len, 128);
        let route = local_table_route(app.ip());
        assert_eq!(route.header.address_family, AddressFamily::Inet6);
        assert_eq!(route.header.kind, RouteType::Local);
    }

    #[test]
    fn other_tables_rules_are_not_ours() {
        let mut rule = RuleMessage::default();
        rule.attributes.push(RuleAttribute::Table(254));
        assert!(!is_reply_rule(&rule));
    }
}
