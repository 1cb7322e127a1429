use super::*;

#[test]
fn the_caps_fit_in_the_descriptors_with_a_reserve() {
    for open_files in [600u64, 1024, 4096, 20_000, 1 << 20] {
        let l = Limits::from_open_files(open_files);
        let needed = l.node_connections as u64 + l.node_handshakes as u64;
        let reserve = open_files - needed;
        assert!(
            reserve >= (open_files / 10).max(256).min(open_files / 2),
            "{open_files}: {l:?} leaves {reserve}"
        );
        assert!(l.pod_connections <= l.node_connections, "{l:?}");
        assert!(l.pod_handshakes <= l.node_handshakes, "{l:?}");
        assert!(l.source_handshakes < l.pod_handshakes, "{l:?}");
        assert!(l.peer_connections >= 4, "{l:?}");
    }
}

#[test]
fn the_ci_limit_gives_these_caps() {
    let l = Limits::from_open_files(20_000);
    assert_eq!(
        l,
        Limits {
            node_connections: 16875,
            pod_connections: 16875,
            node_handshakes: 1125,
            pod_handshakes: 128,
            source_handshakes: 32,
            peer_connections: 169,
            buffer_growth: 32 << 20,
        }
    );
    // 10,000 tunnelled connections (one descriptor each) fit on one node.
    assert!(l.node_connections > 10_000);
}

#[test]
fn a_tiny_limit_still_gives_every_budget_a_unit() {
    let l = Limits::from_open_files(8);
    assert!(l.node_connections >= 1 && l.node_handshakes >= 1 && l.source_handshakes >= 1);
}

#[test]
fn a_budget_refuses_once_spent_and_refills_on_drop() {
    let b = Budget::new(3);
    let mut p = b.try_take(2).unwrap();
    assert!(b.try_take(2).is_none());
    assert!(p.grow(1));
    assert!(!p.grow(1));
    assert_eq!(b.used(), 3);
    drop(p);
    assert_eq!(b.used(), 0);
    assert!(b.try_take(3).is_some());
}

#[test]
fn a_keyed_budget_counts_each_key_apart_and_forgets_empty_keys() {
    let b = KeyedBudget::new(2);
    let a1 = b.try_take("a").unwrap();
    let _a2 = b.try_take("a").unwrap();
    assert!(b.try_take("a").is_none());
    let c = b.try_take("c").unwrap();
    drop(a1);
    assert!(b.try_take("a").is_some());
    drop(c);
    assert_eq!(b.used(&"c"), 0);
    assert!(lock(&b.inner.used).get("c").is_none());
}

#[test]
fn the_node_budget_counts_descriptors() {
    let limits = Limits {
        node_connections: 3,
        pod_connections: 10,
        ..Limits::default()
    };
    let node = NodeBudgets::new(&limits);
    let pod = crate::proxy::pod::PodConnections::with_limits("p", &limits, &node);
    // A direct (or plaintext inbound) connection holds two sockets.
    let mut direct = pod.try_acquire().unwrap();
    assert!(direct.take_upstream_descriptor());
    // A tunnelled one holds one.
    let tunnelled = pod.try_acquire().unwrap();
    assert!(pod.try_acquire().is_none(), "three descriptors are spent");
    drop(tunnelled);
    let mut second = pod.try_acquire().unwrap();
    assert!(!second.take_upstream_descriptor(), "no fourth descriptor");
    drop((direct, second));
    assert!(pod.try_acquire().is_some());
}
