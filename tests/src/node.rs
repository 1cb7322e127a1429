//! A node: a netns with a bridge for its pods and a link to the underlay.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::exec::{ip_in, run};

pub struct Node {
    pub name: String,
    pub index: u8,
    /// Name of the node's network namespace (under /run/netns).
    pub netns: String,
}

impl Node {
    pub(crate) fn create(lab_id: &str, underlay: &str, name: &str, index: u8) -> Result<Node> {
        let node = Node {
            name: name.to_string(),
            index,
            netns: format!("{lab_id}-{name}"),
        };
        let ns = node.netns.as_str();
        run("ip", &["netns", "add", ns])?;
        ip_in(ns, &["link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        // Pod bridge, with the node's address on it: pods' default gateway.
        // Its MAC is set, as CNI bridge plugins do: a bridge left to pick its
        // own takes its lowest port's, so deleting that pod's veth changed the
        // gateway's MAC under the other pods, whose neighbour entries then sent
        // into the void until they expired (a stream stalled in `pools`).
        let mac = format!("02:77:65:66:00:{:02x}", index + 1);
        ip_in(
            ns,
            &["link", "add", "br0", "address", &mac, "type", "bridge"],
        )?;
        ip_in(
            ns,
            &[
                "addr",
                "add",
                &format!("{}/24", node.bridge_ip()),
                "dev",
                "br0",
            ],
        )?;
        ip_in(ns, &["link", "set", "br0", "up"])?;
        // Underlay link.
        let peer = format!("n{index}");
        ip_in(
            ns,
            &[
                "link", "add", "ul", "type", "veth", "peer", "name", &peer, "netns", underlay,
            ],
        )?;
        ip_in(
            ns,
            &[
                "addr",
                "add",
                &format!("{}/24", node.underlay_ip()),
                "dev",
                "ul",
            ],
        )?;
        ip_in(ns, &["link", "set", "ul", "up"])?;
        ip_in(underlay, &["link", "set", &peer, "master", "ul0", "up"])?;
        Ok(node)
    }

    /// The node's address on its pod bridge: what its pods see as the node.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        self.pod_ip(1)
    }

    pub fn underlay_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 89, 0, self.index)
    }

    /// Address `host` in the node's pod subnet.
    pub fn pod_ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, self.index, host)
    }

    /// Dual-stack labs: the node's IPv6 address on its pod bridge.
    pub fn bridge_ip6(&self) -> Ipv6Addr {
        self.pod_ip6(1)
    }

    /// Dual-stack labs: address `host` in the node's IPv6 pod subnet
    /// `fd00:<index>::/64`.
    pub fn pod_ip6(&self, host: u8) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            u16::from(self.index),
            0,
            0,
            0,
            0,
            0,
            u16::from(host),
        )
    }

    /// Dual-stack labs: the node's IPv6 underlay address.
    pub fn underlay_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x89, 0, 0, 0, 0, 0, u16::from(self.index))
    }

    /// Gives the node IPv6: forwarding, an address on its pod bridge and one on
    /// the underlay (no duplicate detection: usable at once).
    pub(crate) fn enable_ipv6(&self) -> Result<()> {
        let ns = self.netns.as_str();
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.forwarding=1",
            ],
        )?;
        let bridge = format!("{}/64", self.bridge_ip6());
        ip_in(ns, &["-6", "addr", "add", &bridge, "dev", "br0", "nodad"])?;
        let underlay = format!("{}/64", self.underlay_ip6());
        ip_in(ns, &["-6", "addr", "add", &underlay, "dev", "ul", "nodad"])?;
        Ok(())
    }

    /// Dual-stack labs: routes this node's traffic for `other`'s IPv6 pods.
    pub(crate) fn route6_to(&self, other: &Node) -> Result<()> {
        let subnet = format!("{}/64", other.pod_ip6(0));
        let via = other.underlay_ip6().to_string();
        ip_in(&self.netns, &["-6", "route", "add", &subnet, "via", &via])?;
        Ok(())
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// Routes this node's traffic for `other`'s pods over the underlay.
    pub(crate) fn route_to(&self, other: &Node) -> Result<()> {
        let subnet = format!("10.88.{}.0/24", other.index);
        ip_in(
            &self.netns,
            &[
                "route",
                "add",
                &subnet,
                "via",
                &other.underlay_ip().to_string(),
            ],
        )?;
        Ok(())
    }

    /// A command that runs in this node's netns (mounts untouched, unlike `ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    pub(crate) fn destroy(self) -> Result<()> {
        run("ip", &["netns", "del", &self.netns])?;
        Ok(())
    }
}
