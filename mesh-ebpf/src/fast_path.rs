//! The fast path between a pod's app and the agent's in-pod sockets
//! (docs/architecture.md, "Kernel programs"): both ends of such a loopback
//! connection go into `FAST_PATH_SOCKETS`, and `weft_sk_msg` moves each send
//! straight into the peer socket's receive queue, skipping the loopback TCP stack.
//!
//! - Source side: the app's redirected socket (to 15001 on loopback) and the
//!   agent's socket accepted on the netns's outbound port.
//! - Destination side: the agent's socket dialling a pod IP of its own netns
//!   (whatever its source address) and the app's socket accepting it.
//!
//! Pairs are found by their mirrored 4-tuple in one netns, which only the other
//! end of the connection can have. The active end is inserted when it is
//! established, which on loopback is before the passive end is; the passive end
//! of a destination-side pair only if its peer was recorded in `FAST_PATH_DIALS`.
//! A socket whose send finds no peer stays on the normal path for good
//! (`FAST_PATH_FELL_BACK`): once bytes went through TCP, later ones must not
//! overtake them in the peer's queue. Everything else never enters the map.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_F_INGRESS, sk_action},
    helpers::generated::bpf_get_netns_cookie,
    macros::{map, sk_msg},
    maps::{Array, LruHashMap, SockHash},
    programs::{SkMsgContext, SockOpsContext},
};
use mesh_common::{
    AF_INET6, FAST_PATH_ON, NetnsConfig, PodIpKey, SockKey,
    fast_path::{Active, ActiveVerdict, active, passive},
    stats,
};

use crate::{INBOUND_CONFIG, count, count_n};

const MAX_SOCKETS: u32 = 65536;

/// Index 0: `FAST_PATH_ON`, or 0 (off). Written by the agent at every start.
#[map]
static FAST_PATH: Array<u32> = Array::with_max_entries(1, 0);

/// Both ends of every app ↔ agent loopback connection, by their own [`SockKey`].
/// The kernel drops a socket from it when the socket closes.
#[map]
static FAST_PATH_SOCKETS: SockHash<SockKey> = SockHash::with_max_entries(MAX_SOCKETS, 0);

/// The agent's destination-side dials in the map, until the app's end joins.
#[map]
static FAST_PATH_DIALS: LruHashMap<SockKey, u8> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

/// Sockets in the map that sent through TCP once: never redirected after.
#[map]
static FAST_PATH_FELL_BACK: LruHashMap<SockKey, u8> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

#[inline(always)]
fn enabled() -> bool {
    FAST_PATH.get(0).copied() == Some(FAST_PATH_ON)
}

/// The connection's key as this socket sees it.
#[inline(always)]
fn sockops_key(ctx: &SockOpsContext, netns_cookie: u64) -> SockKey {
    // SAFETY: these context fields are readable in sock_ops.
    let ops = ctx.ops;
    let (family, ports) = unsafe { ((*ops).family, ((*ops).local_port, (*ops).remote_port)) };
    let (local, remote) = if family == u32::from(AF_INET6) {
        unsafe { (words6(&(*ops).local_ip6), words6(&(*ops).remote_ip6)) }
    } else {
        unsafe { (mapped4((*ops).local_ip4), mapped4((*ops).remote_ip4)) }
    };
    key(netns_cookie, local, remote, ports)
}

/// `local_port` is in host order; `remote_port` is the network-order port in
/// the word's upper half (the kernel shifts it there for sock_ops and sk_msg).
#[inline(always)]
fn key(netns_cookie: u64, local: [u8; 16], remote: [u8; 16], ports: (u32, u32)) -> SockKey {
    SockKey {
        netns_cookie,
        local_addr: local,
        remote_addr: remote,
        local_port: ports.0 as u16,
        remote_port: u16::from_be((ports.1 >> 16) as u16),
        _pad: [0; 4],
    }
}

/// An IPv4 address (network order in memory) as an IPv4-mapped one, so both
/// ends of a dual-stack app's connection to an IPv4 agent socket agree.
#[inline(always)]
fn mapped4(ip: u32) -> [u8; 16] {
    let b = ip.to_ne_bytes();
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3],
    ]
}

/// Reads an IPv6 address word by word: the kernel allows only 4-byte loads of
/// these context fields.
#[inline(always)]
unsafe fn words6(field: *const [u32; 4]) -> [u8; 16] {
    let p = field.cast::<u32>();
    // SAFETY: the caller passes a context field of four words.
    let w = unsafe {
        [
            core::ptr::read_volatile(p),
            core::ptr::read_volatile(p.add(1)),
            core::ptr::read_volatile(p.add(2)),
            core::ptr::read_volatile(p.add(3)),
        ]
    };
    crate::ip6_bytes(w)
}

#[inline(always)]
fn insert(ctx: &SockOpsContext, key: &SockKey) -> bool {
    // SAFETY: the helper takes the sock_ops context of an established socket.
    FAST_PATH_SOCKETS
        .update(*key, unsafe { &mut *ctx.ops }, u64::from(BPF_ANY))
        .is_ok()
}

/// The socket's `SO_MARK` (0 when the kernel gives no full socket).
#[inline(always)]
fn mark(ctx: &SockOpsContext) -> u32 {
    // SAFETY: `sk` is a nullable socket pointer in sock_ops.
    unsafe {
        let sk = (*ctx.ops).__bindgen_anon_2.sk;
        if sk.is_null() { 0 } else { (*sk).mark }
    }
}

/// Active end established in an enrolled (open) netns. `redirected`: the app's
/// socket the connect program sent to the agent (source side). Returns whether
/// the socket joined the map, so the caller asks for its close callback.
#[inline(always)]
pub fn on_active(ctx: &SockOpsContext, netns: u64, config: NetnsConfig, redirected: bool) -> bool {
    if config.is_closed() || !enabled() {
        return false;
    }
    let key = sockops_key(ctx, netns);
    let pod = PodIpKey {
        addr: key.remote_addr,
    };
    // SAFETY: plain value read from the map.
    let remote_pod_netns = unsafe { INBOUND_CONFIG.get(&pod) }.map(|c| c.netns_cookie);
    let socket = Active {
        redirected,
        mark: mark(ctx),
        remote_port: key.remote_port,
        remote_pod_netns,
        netns,
    };
    match active(&socket) {
        ActiveVerdict::Out => false,
        ActiveVerdict::Source => insert(ctx, &key),
        ActiveVerdict::Destination => {
            if !insert(ctx, &key) {
                return false;
            }
            let _ = FAST_PATH_DIALS.insert(&key, &1, 0);
            true
        }
    }
}

/// Passive end established in an enrolled (open) netns: the agent's accepted
/// socket on the outbound port, or the app's accepting a recorded dial.
#[inline(always)]
pub fn on_passive(ctx: &SockOpsContext, netns: u64, config: NetnsConfig) -> bool {
    if config.is_closed() || !enabled() {
        return false;
    }
    let key = sockops_key(ctx, netns);
    let dial = key.peer();
    // SAFETY: plain lookup in the map.
    let recorded = unsafe { FAST_PATH_DIALS.get(&dial) }.is_some();
    if !passive(key.local_port, config.outbound_port, recorded) {
        return false;
    }
    if recorded {
        let _ = FAST_PATH_DIALS.remove(&dial);
    }
    insert(ctx, &key)
}

/// A socket of the fast path closes: forget what was kept about it.
#[inline(always)]
pub fn on_close(ctx: &SockOpsContext, netns: u64) {
    let key = sockops_key(ctx, netns);
    let _ = FAST_PATH_DIALS.remove(&key);
    let _ = FAST_PATH_FELL_BACK.remove(&key);
}

/// Runs for every send on a socket in `FAST_PATH_SOCKETS`.
#[sk_msg]
pub fn weft_sk_msg(ctx: SkMsgContext) -> u32 {
    let msg = ctx.msg;
    // SAFETY: bpf_get_netns_cookie accepts the sk_msg context (kernel ≥ 5.15).
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: these context fields are readable in sk_msg.
    let (family, ports) = unsafe { ((*msg).family, ((*msg).local_port, (*msg).remote_port)) };
    let (local, remote) = if family == u32::from(AF_INET6) {
        unsafe { (words6(&(*msg).local_ip6), words6(&(*msg).remote_ip6)) }
    } else {
        unsafe { (mapped4((*msg).local_ip4), mapped4((*msg).remote_ip4)) }
    };
    let own = key(netns, local, remote, ports);
    // SAFETY: plain lookup in the map.
    if unsafe { FAST_PATH_FELL_BACK.get(&own) }.is_some() {
        return sk_action::SK_PASS;
    }
    let size = ctx.size();
    if FAST_PATH_SOCKETS.redirect_msg(&ctx, own.peer(), u64::from(BPF_F_INGRESS))
        == i64::from(sk_action::SK_PASS)
    {
        count(stats::FAST_PATH_REDIRECTS);
        count_n(stats::FAST_PATH_BYTES, u64::from(size));
        return sk_action::SK_PASS;
    }
    // No peer (not established yet, or gone): the normal path, from now on.
    count(stats::FAST_PATH_FELL_BACK);
    let _ = FAST_PATH_FELL_BACK.insert(&own, &1, 0);
    sk_action::SK_PASS
}
