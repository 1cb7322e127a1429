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
    /// Port of the agent's outbound listener on loopback in the pod's netns.
    pub outbound_port: u16,
    /// The node's address as the pod sees it: its connections (probes) are not steered.
    pub node_addr: Option<IpAddr>,
}

/// The agent's plaintext inbound listener of a pod, for sk_lookup to steer to.
pub struct InboundEnrolment<'a> {
    pub netns: &'a File,
    pub listener: &'a dyn AsRawFd,
}

impl KernelPrograms {
    /// Captures a pod: inbound first (socket, config, sk_lookup), then outbound.
    /// Idempotent: enrolling an enrolled pod refreshes its entries.
    pub fn enrol(
        &mut self,
        pod: &PodEnrolment,
        inbound: Option<InboundEnrolment<'_>>,
    ) -> Result<()> {
        if let Some(inbound) = inbound {
            let node_addr = match pod.node_addr {
                Some(ip) => pod_ip_key(ip).addr,
                None => [0; 16],
            };
            for ip in &pod.pod_ips {
                let key = pod_ip_key(*ip);
                let maps = self.maps_mut();
                maps.inbound_sockets
                    .insert(key, inbound.listener.as_raw_fd(), 0)
                    .with_context(|| format!("register the inbound socket of {ip}"))?;
                maps.inbound_config
                    .insert(key, InboundConfig { node_addr }, 0)
                    .with_context(|| format!("register the inbound config of {ip}"))?;
            }
            self.attach_sk_lookup(inbound.netns, pod.netns_cookie)?;
        }
        let config = NetnsConfig {
            outbound_port: pod.outbound_port,
            _pad: [0; 6],
        };
        self.maps_mut()
            .enrolled_netns
            .insert(pod.netns_cookie, config, 0)
            .context("enrol the pod netns for outbound capture")?;
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

pub(super) fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}
