use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::proxy::copy::{CopyObserver, Direction};

fn labels() -> ConnectionLabels {
    ConnectionLabels {
        reporter: Reporter::Source,
        source_workload: "client".into(),
        source_workload_namespace: "ns-a".into(),
        destination_workload: "server".into(),
        destination_workload_namespace: "ns-b".into(),
        destination_service: "server.ns-b.svc.cluster.local".into(),
        ..ConnectionLabels::default()
    }
}

fn text(m: &Metrics) -> String {
    String::from_utf8(m.render().unwrap()).unwrap()
}

/// The value of the one series of `name` whose labels contain all of `parts`.
fn value(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn connection_counters_move_and_render() {
    let m = Metrics::new().unwrap();
    let mut conn = m.connection(&labels());
    conn.on_bytes(Direction::AToB, 100);
    conn.on_bytes(Direction::BToA, 7);
    conn.on_bytes(Direction::AToB, 1);
    let t = text(&m);
    let sel = [
        r#"reporter="source""#,
        r#"source_workload="client""#,
        r#"destination_service="server.ns-b.svc.cluster.local""#,
        r#"source_principal="unknown""#,
        r#"connection_security_policy="none""#,
    ];
    assert_eq!(
        value(&t, "istio_tcp_connections_opened_total", &sel),
        Some(1.0)
    );
    assert_eq!(
        value(&t, "istio_tcp_received_bytes_total", &sel),
        Some(101.0)
    );
    assert_eq!(value(&t, "istio_tcp_sent_bytes_total", &sel), Some(7.0));
    // Counted as closed only once dropped.
    assert_eq!(
        value(&t, "istio_tcp_connections_closed_total", &sel),
        Some(0.0)
    );
    drop(conn);
    let t = text(&m);
    assert_eq!(
        value(&t, "istio_tcp_connections_closed_total", &sel),
        Some(1.0)
    );
}

#[test]
fn weft_counters_render() {
    let m = Metrics::new().unwrap();
    m.refused(RefuseReason::Limit);
    m.refused(RefuseReason::Limit);
    m.refused(RefuseReason::Policy);
    m.config_errors().inc();
    m.pool_connections().set(3);
    let t = text(&m);
    assert_eq!(
        value(&t, "weft_connections_refused_total", &[r#"reason="limit""#]),
        Some(2.0)
    );
    assert_eq!(
        value(
            &t,
            "weft_connections_refused_total",
            &[r#"reason="policy""#]
        ),
        Some(1.0)
    );
    assert_eq!(value(&t, "weft_config_errors_total", &[]), Some(1.0));
    assert_eq!(value(&t, "weft_pool_connections", &[]), Some(3.0));
}

#[test]
fn registries_are_independent() {
    let a = Metrics::new().unwrap();
    let b = Metrics::new().unwrap();
    a.config_errors().inc();
    assert_eq!(value(&text(&b), "weft_config_errors_total", &[]), Some(0.0));
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn serves_metrics_and_alias() {
    let m = Arc::new(Metrics::new().unwrap());
    let _conn = m.connection(&labels());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(serve_metrics(l, Arc::clone(&m)));
    let within = |f| tokio::time::timeout(Duration::from_secs(10), f);
    for path in ["/metrics", "/stats/prometheus"] {
        let resp = within(get(addr, path)).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("text/plain; version=0.0.4"), "{resp}");
        assert!(
            resp.contains("istio_tcp_connections_opened_total{"),
            "{resp}"
        );
    }
    let resp = within(get(addr, "/nope")).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    server.abort();
}
