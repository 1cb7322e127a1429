//! Weft's kernel programs (docs/architecture.md, "Kernel programs").
//!
//! - `connect4`/`connect6`: a TCP connect from an enrolled pod netns, by a socket the
//!   agent did not mark, is rewritten to the agent's outbound listener on loopback in
//!   that same netns; the original destination is saved under the socket cookie.
//! - `sockops`: once such a connection is established, publish
//!   `(netns cookie, local port) → original destination` for the agent, which only
//!   sees that port when it accepts; delete both entries on close.
//! - `getpeername4`/`6`: a redirected application sees its original peer.
//! - `sk_msg` (on `FAST_PATH_SOCKETS`, filled by `sockops`): the fast path, sends
//!   between a pod's app and the agent's in-pod sockets skip loopback TCP
//!   (`fast_path.rs`).
//! - `sk_lookup` (one per pod netns): inbound TCP, IPv4 or IPv6, from outside the
//!   pod (the node's own address included) goes to the agent's plaintext inbound
//!   socket of that pod and family; the tunnel port is left alone.
//! - A netns enrolled "closed" (`NetnsConfig::CLOSED`: the agent could not set up
//!   the pod's listeners) has its TCP connects refused (EPERM), and sk_lookup
//!   drops inbound to it, as its IPs have a config but no agent socket.
//! - The pod gate, in `connect4`/`connect6`: a TCP connect by a task in a pod
//!   cgroup under the node's kubepods cgroup that the agent has not classified yet
//!   is refused (EPERM), so no connection leaves a pod unmeshed between its start
//!   and its enrolment.
//!
//! Every program returns "allow" on any unexpected input: a kernel program must
//! never break a connection it does not understand, except where failing closed is
//! the point (inbound to a captured pod whose agent socket is gone, a connect from
//! a pod not classified yet or enrolled closed).
#![no_std]
#![no_main]

mod fast_path;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE, bpf_sock_addr, sk_action,
    },
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_netns_cookie, bpf_get_socket_cookie,
    },
    macros::{cgroup_sock_addr, map, sk_lookup, sock_ops},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, SockHash},
    programs::{SkLookupContext, SockAddrContext, SockOpsContext},
};
use aya_log_ebpf::debug;
use mesh_common::{
    AF_INET, AF_INET6, AGENT_MARK, InboundConfig, KubepodsConfig, NetnsConfig, OrigDst, PodIpKey,
    PortKey, TUNNEL_PORT, pod_verdict, stats,
};

const IPPROTO_TCP: u32 = 6;
const LOOPBACK_IFINDEX: u32 = 1;
const MAX_PODS: u32 = 4096;
const MAX_CONNECTIONS: u32 = 65536;

/// Netns cookie → how to redirect. Present means "this pod is captured".
#[map]
static ENROLLED_NETNS: HashMap<u64, NetnsConfig> = HashMap::with_max_entries(MAX_PODS, 0);

/// Socket cookie → original destination, written at connect time.
#[map]
static ORIG_DST_BY_COOKIE: LruHashMap<u64, OrigDst> =
    LruHashMap::with_max_entries(MAX_CONNECTIONS, 0);

/// (netns cookie, application's local port) → original destination, for the agent.
#[map]
static ORIG_DST_BY_PORT: LruHashMap<PortKey, OrigDst> =
    LruHashMap::with_max_entries(MAX_CONNECTIONS, 0);

/// Destination ports never captured (host order), e.g. the API server's.
#[map]
static EXCLUDED_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(256, 0);

/// Pod IP → the agent's plaintext inbound (15006) socket for that pod.
#[map]
static INBOUND_SOCKETS: SockHash<PodIpKey> = SockHash::with_max_entries(MAX_PODS, 0);

/// Pod IP → what its sk_lookup program must leave alone.
#[map]
static INBOUND_CONFIG: HashMap<PodIpKey, InboundConfig> = HashMap::with_max_entries(MAX_PODS, 0);

/// Index 0: the node's kubepods cgroup, or all zero when there is none (file mode).
#[map]
static KUBEPODS_ROOT: Array<KubepodsConfig> = Array::with_max_entries(1, 0);

/// Pod-level cgroup id → `mesh_common::pod_verdict`. A pod cgroup under kubepods
/// that is missing here is not classified yet: its TCP connects are refused.
#[map]
static POD_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_PODS, 0);

/// Counters, indexed by `mesh_common::stats`.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::COUNT, 0);

#[inline(always)]
fn count(index: u32) {
    count_n(index, 1);
}

#[inline(always)]
fn count_n(index: u32, n: u64) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += n };
    }
}

/// The socket's `SO_MARK`, or 0 when the kernel gives no socket.
#[inline(always)]
fn socket_mark(sa: *const bpf_sock_addr) -> u32 {
    // SAFETY: the verifier only lets us read `sk` as a nullable socket pointer.
    unsafe {
        let sk = (*sa).__bindgen_anon_1.sk;
        if sk.is_null() { 0 } else { (*sk).mark }
    }
}

/// What a connect gets, before its destination is looked at.
enum Gate {
    /// Not ours: leave it alone.
    Pass,
    /// An unmarked TCP socket in an enrolled netns: redirect to the agent.
    Capture(NetnsConfig),
    /// An unmarked TCP socket of a task in this pod cgroup, which the agent has
    /// not classified yet: refuse it unless it stays on the node's loopback.
    Hold(u64),
}

#[inline(always)]
fn gate(ctx: &SockAddrContext) -> Gate {
    let sa = ctx.sock_addr;
    // SAFETY: ctx fields are readable in cgroup/connect hooks.
    if unsafe { (*sa).protocol } != IPPROTO_TCP {
        return Gate::Pass;
    }
    // SAFETY: bpf_get_netns_cookie accepts the sock_addr context (kernel ≥ 5.7).
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: plain value copied out of the map.
    let enrolled = unsafe { ENROLLED_NETNS.get(&netns) }.copied();
    if socket_mark(sa) == AGENT_MARK {
        if enrolled.is_some() {
            count(stats::CONNECT_SKIPPED_MARK);
        }
        return Gate::Pass;
    }
    if let Some(config) = enrolled {
        return Gate::Capture(config);
    }
    match unclassified_pod_cgroup(netns) {
        Some(pod) => Gate::Hold(pod),
        None => Gate::Pass,
    }
}

/// The calling task's pod-level cgroup if it is under the kubepods cgroup and not
/// classified by the agent. The task's cgroup, not the socket's: the kernel gives
/// `bpf_get_current_ancestor_cgroup_id` to cgroup/connect programs (kernel ≥ 5.7),
/// and a pod's tasks are what the kubelet places in its cgroup.
#[inline(always)]
fn unclassified_pod_cgroup(netns: u64) -> Option<u64> {
    let root = KUBEPODS_ROOT.get(0).copied()?;
    if root.cgroup_id == 0 {
        return None; // no kubepods root configured: nothing is held
    }
    if netns == root.host_netns_cookie {
        return None; // host network: never captured, so nothing can escape
    }
    let level = root.level as i32;
    // SAFETY: the helper takes any level; one above the task's own gives 0.
    let ancestor = |l: i32| unsafe { bpf_get_current_ancestor_cgroup_id(l) };
    if ancestor(level) != root.cgroup_id {
        return None; // outside kubepods: the node's own processes
    }
    let mut pod = ancestor(level.wrapping_add(1));
    if pod != 0 && (pod == root.qos_ids[0] || pod == root.qos_ids[1]) {
        pod = ancestor(level.wrapping_add(2));
    }
    if pod == 0 {
        return None; // in kubepods or a QoS cgroup itself, not in a pod
    }
    // SAFETY: plain value read from the map.
    match unsafe { POD_CGROUPS.get(&pod) } {
        Some(&pod_verdict::CLASSIFIED) => None,
        _ => Some(pod),
    }
}

/// Counts and logs a held connect; the return value refuses it (the app sees EPERM).
#[inline(always)]
fn refuse(ctx: &SockAddrContext, pod: u64, port: u16) -> i32 {
    count(stats::CONNECT_REFUSED_UNCLASSIFIED);
    debug!(
        ctx,
        "connect to port {} refused: pod cgroup {} not classified yet", port, pod
    );
    0
}

/// Refuses a connect from a netns enrolled closed: the agent could not set up
/// its listeners, and the pod must not go around it (docs/security.md).
#[inline(always)]
fn refuse_closed(ctx: &SockAddrContext, port: u16) -> i32 {
    count(stats::CONNECT_REFUSED_CLOSED);
    debug!(ctx, "connect to port {} refused: pod enrolled closed", port);
    0
}

#[inline(always)]
fn port_excluded(port: u16) -> bool {
    // SAFETY: plain value read from the map.
    unsafe { EXCLUDED_PORTS.get(&port) }.is_some()
}

#[cgroup_sock_addr(connect4)]
pub fn weft_connect4(ctx: SockAddrContext) -> i32 {
    let gate = gate(&ctx);
    if matches!(gate, Gate::Pass) {
        return 1;
    }
    // SAFETY: user_ip4/user_port are readable in connect4.
    let (ip, port) = unsafe {
        let sa = ctx.sock_addr;
        // Network order in memory, as the address bytes are.
        (
            (*sa).user_ip4.to_ne_bytes(),
            u16::from_be((*sa).user_port as u16),
        )
    };
    // Loopback and excluded ports are never captured, hence never held either.
    if ip[0] == 127 || port_excluded(port) {
        return 1;
    }
    match gate {
        Gate::Capture(config) if config.is_closed() => refuse_closed(&ctx, port),
        Gate::Capture(config) => redirect4(&ctx, config, ip, port),
        Gate::Hold(pod) => refuse(&ctx, pod, port),
        Gate::Pass => 1,
    }
}

#[inline(always)]
fn redirect4(ctx: &SockAddrContext, config: NetnsConfig, ip: [u8; 4], port: u16) -> i32 {
    // SAFETY: bpf_get_socket_cookie accepts the sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if ORIG_DST_BY_COOKIE
        .insert(&cookie, &OrigDst::v4(ip, port), 0)
        .is_err()
    {
        return 1;
    }
    // SAFETY: user_ip4/user_port are writable in connect4.
    unsafe {
        (*ctx.sock_addr).user_ip4 = u32::from_ne_bytes([127, 0, 0, 1]);
        (*ctx.sock_addr).user_port = u32::from(config.outbound_port.to_be());
    }
    debug!(
        ctx,
        "connect4 {:i}:{} redirected",
        u32::from_be_bytes(ip),
        port
    );
    count(stats::CONNECT_REDIRECTED);
    1
}

#[cgroup_sock_addr(connect6)]
pub fn weft_connect6(ctx: SockAddrContext) -> i32 {
    let gate = gate(&ctx);
    if matches!(gate, Gate::Pass) {
        return 1;
    }
    // SAFETY: user_ip6/user_port are readable in connect6.
    let (words, port) = unsafe {
        let sa = ctx.sock_addr;
        ((*sa).user_ip6, u16::from_be((*sa).user_port as u16))
    };
    let addr = ip6_bytes(words);
    let mapped_v4 = addr[..10] == [0; 10] && addr[10] == 0xff && addr[11] == 0xff;
    let loopback6 = addr[..15] == [0; 15] && addr[15] == 1;
    // Loopback and excluded ports are never captured, hence never held either.
    if loopback6 || (mapped_v4 && addr[12] == 127) || port_excluded(port) {
        return 1;
    }
    match gate {
        Gate::Capture(config) if config.is_closed() => refuse_closed(&ctx, port),
        Gate::Capture(config) => redirect6(&ctx, config, addr, port, mapped_v4),
        Gate::Hold(pod) => refuse(&ctx, pod, port),
        Gate::Pass => 1,
    }
}

#[inline(always)]
fn redirect6(
    ctx: &SockAddrContext,
    config: NetnsConfig,
    addr: [u8; 16],
    port: u16,
    mapped_v4: bool,
) -> i32 {
    let orig = OrigDst {
        addr,
        port,
        family: AF_INET6,
        _pad: [0; 4],
    };
    // SAFETY: bpf_get_socket_cookie accepts the sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if ORIG_DST_BY_COOKIE.insert(&cookie, &orig, 0).is_err() {
        return 1;
    }
    // SAFETY: user_ip6/user_port are writable in connect6.
    unsafe {
        let sa = ctx.sock_addr;
        if mapped_v4 {
            // Dual-stack socket to an IPv4 address: stay IPv4, to 127.0.0.1.
            (*sa).user_ip6[3] = u32::from_ne_bytes([127, 0, 0, 1]);
        } else {
            (*sa).user_ip6 = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];
        }
        (*sa).user_port = u32::from(config.outbound_port.to_be());
    }
    debug!(ctx, "connect6 to port {} redirected", port);
    count(stats::CONNECT_REDIRECTED);
    1
}

#[sock_ops]
pub fn weft_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_established(&ctx),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_passive_established(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => on_close(&ctx),
        _ => {}
    }
    1
}

#[inline(always)]
fn on_established(ctx: &SockOpsContext) {
    // SAFETY: both helpers accept the sock_ops context (netns cookie: kernel ≥ 5.15).
    let (cookie, netns) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    // SAFETY: plain value copied out of the map.
    let orig = (unsafe { ORIG_DST_BY_COOKIE.get(&cookie) }).copied();
    if let Some(orig) = orig {
        let key = PortKey::new(netns, ctx.local_port() as u16, connection_family(ctx));
        if ORIG_DST_BY_PORT.insert(&key, &orig, 0).is_ok() {
            count(stats::ORIG_DST_PUBLISHED);
        }
    }
    // SAFETY: plain value copied out of the map.
    let enrolled = (unsafe { ENROLLED_NETNS.get(&netns) }).copied();
    let fast = enrolled.is_some_and(|c| fast_path::on_active(ctx, netns, c, orig.is_some()));
    if orig.is_some() || fast {
        // Be called again on state changes, to delete the entries at close.
        let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    }
}

#[inline(always)]
fn on_passive_established(ctx: &SockOpsContext) {
    // SAFETY: the helper accepts the sock_ops context (kernel ≥ 5.15).
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: plain value copied out of the map.
    let Some(config) = (unsafe { ENROLLED_NETNS.get(&netns) }).copied() else {
        return;
    };
    if fast_path::on_passive(ctx, netns, config) {
        let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    }
}

#[inline(always)]
fn on_close(ctx: &SockOpsContext) {
    // SAFETY: as in on_established.
    let (cookie, netns) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    let _ = ORIG_DST_BY_COOKIE.remove(&cookie);
    let key = PortKey::new(netns, ctx.local_port() as u16, connection_family(ctx));
    let _ = ORIG_DST_BY_PORT.remove(&key);
    fast_path::on_close(ctx, netns);
}

/// The family of the connection as the agent's listener sees it: an IPv6 socket
/// connected to an IPv4-mapped address (redirected to 127.0.0.1) is IPv4 there.
#[inline(always)]
fn connection_family(ctx: &SockOpsContext) -> u16 {
    if ctx.family() != u32::from(AF_INET6) {
        return AF_INET;
    }
    let remote = ctx.remote_ip6();
    let mapped = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    if remote[0] == 0 && remote[1] == 0 && remote[2] == mapped {
        AF_INET
    } else {
        AF_INET6
    }
}

/// The saved original destination of a redirected socket.
#[inline(always)]
fn original_destination(ctx: &SockAddrContext) -> Option<OrigDst> {
    // SAFETY: bpf_get_socket_cookie accepts the sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: plain value copied out of the map.
    unsafe { ORIG_DST_BY_COOKIE.get(&cookie) }.copied()
}

#[cgroup_sock_addr(getpeername4)]
pub fn weft_getpeername4(ctx: SockAddrContext) -> i32 {
    if let Some(orig) = original_destination(&ctx)
        && orig.family == AF_INET
        && let Some(ip) = orig.as_v4()
    {
        // SAFETY: user_ip4/user_port are writable in getpeername4.
        unsafe {
            (*ctx.sock_addr).user_ip4 = u32::from_ne_bytes(ip);
            (*ctx.sock_addr).user_port = u32::from(orig.port.to_be());
        }
    }
    1
}

#[cgroup_sock_addr(getpeername6)]
pub fn weft_getpeername6(ctx: SockAddrContext) -> i32 {
    if let Some(orig) = original_destination(&ctx) {
        let a = orig.addr;
        let word = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        // SAFETY: user_ip6/user_port are writable in getpeername6.
        unsafe {
            (*ctx.sock_addr).user_ip6 = [word(0), word(4), word(8), word(12)];
            (*ctx.sock_addr).user_port = u32::from(orig.port.to_be());
        }
    }
    1
}

#[sk_lookup]
pub fn weft_sk_lookup(ctx: SkLookupContext) -> u32 {
    let l = ctx.lookup;
    // SAFETY: these context fields are readable in sk_lookup.
    let (family, protocol, local_port) = unsafe { ((*l).family, (*l).protocol, (*l).local_port) };
    if protocol != IPPROTO_TCP {
        return sk_action::SK_PASS;
    }
    let port = local_port as u16;
    // The tunnel is the agent's own.
    if port == TUNNEL_PORT || port_excluded(port) {
        return sk_action::SK_PASS;
    }
    // Over loopback: the agent dialling the app with the client's address
    // (docs/architecture.md, "Keeping the client's address"). Only a socket
    // inside the pod sends there; nothing from outside comes in by `lo`.
    // SAFETY: readable in sk_lookup (kernel >= 5.17).
    if unsafe { (*l).ingress_ifindex } == LOOPBACK_IFINDEX {
        return sk_action::SK_PASS;
    }
    // Both families: a pod's IPv6 address must not be a way around the agent
    // (docs/security.md). The pod talking to itself and loopback stay local.
    let key = if family == u32::from(AF_INET) {
        // SAFETY: readable in sk_lookup.
        let (local, remote) = unsafe { ((*l).local_ip4, (*l).remote_ip4) };
        if remote == local || remote.to_ne_bytes()[0] == 127 {
            return sk_action::SK_PASS;
        }
        PodIpKey::v4(local.to_ne_bytes())
    } else if family == u32::from(AF_INET6) {
        // SAFETY: readable in sk_lookup.
        let (local, remote) = unsafe { ((*l).local_ip6, (*l).remote_ip6) };
        let same = remote[0] == local[0]
            && remote[1] == local[1]
            && remote[2] == local[2]
            && remote[3] == local[3];
        let loopback = remote[0] == 0
            && remote[1] == 0
            && remote[2] == 0
            && remote[3] == u32::from_ne_bytes([0, 0, 0, 1]);
        if same || loopback {
            return sk_action::SK_PASS;
        }
        PodIpKey {
            addr: ip6_bytes(local),
        }
    } else {
        return sk_action::SK_PASS;
    };
    // The node's own address is steered too: the agent exempts only kubelet
    // probes from policy (docs/security.md), nothing bypasses it here.
    // SAFETY: a plain lookup in the map.
    if unsafe { INBOUND_CONFIG.get(&key) }.is_none() {
        return sk_action::SK_PASS;
    }
    match INBOUND_SOCKETS.redirect_sk_lookup(&ctx, key, 0) {
        Ok(()) => {
            count(stats::INBOUND_STEERED);
            sk_action::SK_PASS
        }
        // Captured pod without an agent socket of this family (agent down,
        // enrolled closed, no IPv6 listener): refuse, never bypass.
        Err(_) => sk_action::SK_DROP,
    }
}

/// An IPv6 address as the kernel gives it (four words in network byte order in
/// memory) as bytes.
#[inline(always)]
fn ip6_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
        i += 1;
    }
    addr
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
