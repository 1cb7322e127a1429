//! Enrolling a pod: the map entries and the sk_lookup attachment that capture its
//! traffic, added in an order that never leaves a half-captured pod.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use aya::maps::MapError;
use mesh_common::{InboundConfig, NetnsConfig};

use super::load::KernelPrograms;
use super::maps::pod_ip_key;

/// What the kernel needs to know to capture one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEnrolment {
    pub netns_cookie: u64,
    pub pod_ips: Vec<IpAddr>,
    /// Port of the agent's outbound listener on loopback in the pod's netns. 0
    /// enrols the pod closed (prefer [`KernelPrograms::enrol_closed`]).
    pub outbound_port: u16,
    /// The node's address as the pod sees it: its connections (probes) are not steered.
    pub node_addr: Option<IpAddr>,
}

/// The agent's plaintext inbound listeners of a pod, for sk_lookup to steer to.
pub struct InboundEnrolment<'a> {
    pub netns: &'a File,
    /// For the pod's IPv4 addresses (`0.0.0.0:15006`).
    pub listener: &'a dyn AsRawFd,
    /// For its IPv6 addresses (`[::]:15006`, IPv6 only). `None`: inbound to them
    /// is dropped, never handed to the app (docs/security.md).
    pub listener6: Option<&'a dyn AsRawFd>,
}

impl InboundEnrolment<'_> {
    /// The listener sk_lookup steers connections to `ip` to, if any.
    fn listener_for(&self, ip: IpAddr) -> Option<&dyn AsRawFd> {
        match ip.to_canonical() {
            IpAddr::V4(_) => Some(self.listener),
            IpAddr::V6(_) => self.listener6,
        }
    }
}

impl KernelPrograms {
    /// Captures a pod: inbound first (socket, config, sk_lookup), then outbound.
    /// Without `inbound`, only its outbound is captured (inbound reaches the app
    /// as if unmeshed): for tests; a pod whose listeners failed is enrolled with
    /// [`Self::enrol_closed`]. Idempotent: enrolling an enrolled pod refreshes
    /// its entries.
    pub fn enrol(
        &mut self,
        pod: &PodEnrolment,
        inbound: Option<InboundEnrolment<'_>>,
    ) -> Result<()> {
        if let Some(inbound) = inbound {
            let node_addr = node_addr_key(pod.node_addr);
            for ip in &pod.pod_ips {
                let key = pod_ip_key(*ip);
                let maps = self.maps_mut();
                match inbound.listener_for(*ip) {
                    Some(listener) => maps
                        .inbound_sockets
                        .insert(key, listener.as_raw_fd(), 0)
                        .with_context(|| format!("register the inbound socket of {ip}"))?,
                    // No socket of its family: sk_lookup drops its inbound.
                    None => ignore_missing(maps.inbound_sockets.remove(&key))
                        .with_context(|| format!("remove the inbound socket of {ip}"))?,
                }
                maps.inbound_config
                    .insert(key, inbound_config(node_addr, pod.netns_cookie), 0)
                    .with_context(|| format!("register the inbound config of {ip}"))?;
            }
            self.attach_sk_lookup(inbound.netns, pod.netns_cookie)?;
        }
        let config = NetnsConfig::redirect_to(pod.outbound_port);
        self.maps_mut()
            .enrolled_netns
            .insert(pod.netns_cookie, config, 0)
            .context("enrol the pod netns for outbound capture")?;
        Ok(())
    }

    /// Enrols a pod "closed" (docs/security.md): the agent could not set up its
    /// listeners, so nothing of the pod may go around it. Its TCP connects (but
    /// loopback and excluded ports) are refused with EPERM, and inbound to its IPs
    /// is dropped by sk_lookup, which finds their config but no agent socket.
    /// `pod.outbound_port` is ignored. Enrol it again with [`Self::enrol`] once
    /// its listeners are up.
    pub fn enrol_closed(&mut self, pod: &PodEnrolment, netns: &File) -> Result<()> {
        let node_addr = node_addr_key(pod.node_addr);
        for ip in &pod.pod_ips {
            let key = pod_ip_key(*ip);
            let maps = self.maps_mut();
            // An agent socket left from an earlier enrolment would keep steering.
            ignore_missing(maps.inbound_sockets.remove(&key))
                .with_context(|| format!("remove the inbound socket of {ip}"))?;
            maps.inbound_config
                .insert(key, inbound_config(node_addr, pod.netns_cookie), 0)
                .with_context(|| format!("register the inbound config of {ip}"))?;
        }
        self.attach_sk_lookup(netns, pod.netns_cookie)?;
        self.maps_mut()
            .enrolled_netns
            .insert(pod.netns_cookie, NetnsConfig::CLOSED, 0)
            .context("enrol the pod netns closed")?;
        Ok(())
    }

    /// Releases a pod: outbound first, then inbound. Entries already gone are fine.
    pub fn unenrol(&mut self, netns_cookie: u64, pod_ips: &[IpAddr]) -> Result<()> {
        self.release_netns(netns_cookie)?;
        self.release_pod_ips(pod_ips)
    }

    /// Stops capturing a netns: its outbound entry and its sk_lookup link.
    pub fn release_netns(&mut self, netns_cookie: u64) -> Result<()> {
        ignore_missing(self.maps_mut().enrolled_netns.remove(&netns_cookie))
            .context("remove the pod netns from outbound capture")?;
        self.detach_sk_lookup(netns_cookie)
    }

    /// Stops steering inbound traffic to these pod IPs.
    pub fn release_pod_ips(&mut self, pod_ips: &[IpAddr]) -> Result<()> {
        for ip in pod_ips {
            let key = pod_ip_key(*ip);
            let maps = self.maps_mut();
            ignore_missing(maps.inbound_config.remove(&key))
                .with_context(|| format!("remove the inbound config of {ip}"))?;
            ignore_missing(maps.inbound_sockets.remove(&key))
                .with_context(|| format!("remove the inbound socket of {ip}"))?;
        }
        Ok(())
    }
}

fn inbound_config(node_addr: [u8; 16], netns_cookie: u64) -> InboundConfig {
    InboundConfig {
        node_addr,
        netns_cookie,
    }
}

fn node_addr_key(node_addr: Option<IpAddr>) -> [u8; 16] {
    node_addr.map_or([0; 16], |ip| pod_ip_key(ip).addr)
}

pub(super) fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}
