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

fn request<'a>(labels: &'a ConnectionLabels) -> RequestRecord<'a> {
    RequestRecord {
        labels,
        protocol: RequestProtocol::Http,
        response_code: 200,
        grpc_status: None,
        flag: ResponseFlag::None,
        duration: Duration::from_micros(3_200),
        request_bytes: 5,
        response_bytes: 1_500,
        method: "GET",
        path: "/secret/user-123?token=abc",
        authority: "server.ns-b:8080",
        source_pod: "ns-a/client-1",
        destination: "10.0.0.2:8080",
    }
}

#[test]
fn request_series_have_istio_labels_and_buckets() {
    let m = Metrics::new().unwrap();
    let l = labels();
    m.record_request(&request(&l));
    m.record_request(&RequestRecord {
        protocol: RequestProtocol::Grpc,
        grpc_status: Some(14),
        response_code: 503,
        flag: ResponseFlag::UpstreamConnectFailure,
        ..request(&l)
    });
    let t = text(&m);
    let http = [
        r#"reporter="source""#,
        r#"destination_service="server.ns-b.svc.cluster.local""#,
        r#"request_protocol="http""#,
        r#"response_code="200""#,
        r#"grpc_response_status="""#,
        r#"response_flags="-""#,
    ];
    assert_eq!(value(&t, "istio_requests_total{", &http), Some(1.0));
    let grpc = [
        r#"request_protocol="grpc""#,
        r#"response_code="503""#,
        r#"grpc_response_status="14""#,
        r#"response_flags="UF""#,
    ];
    assert_eq!(value(&t, "istio_requests_total{", &grpc), Some(1.0));
    // 3.2 ms lands in the 5 ms bucket, not the 1 ms one; Istio's first bucket is 0.5.
    let le = |b: &'static str| [http.as_slice(), &[b]].concat();
    let d = "istio_request_duration_milliseconds_bucket";
    assert_eq!(value(&t, d, &le(r#"le="0.5""#)), Some(0.0));
    assert_eq!(value(&t, d, &le(r#"le="1""#)), Some(0.0));
    assert_eq!(value(&t, d, &le(r#"le="5""#)), Some(1.0));
    assert_eq!(value(&t, d, &le(r#"le="3600000""#)), Some(1.0));
    assert_eq!(
        value(&t, "istio_request_duration_milliseconds_sum", &http),
        Some(3.2)
    );
    let rb = "istio_request_bytes_bucket";
    assert_eq!(value(&t, rb, &le(r#"le="1""#)), Some(0.0));
    assert_eq!(value(&t, rb, &le(r#"le="10""#)), Some(1.0));
    let sb = "istio_response_bytes_bucket";
    assert_eq!(value(&t, sb, &le(r#"le="1000""#)), Some(0.0));
    assert_eq!(value(&t, sb, &le(r#"le="10000""#)), Some(1.0));
    assert_eq!(value(&t, "istio_response_bytes_sum", &http), Some(1500.0));
}

#[test]
fn request_data_never_becomes_a_label() {
    let m = Metrics::new().unwrap();
    let l = labels();
    for i in 0..50 {
        let path = format!("/item/{i}");
        let method = format!("M{i}");
        m.record_request(&RequestRecord {
            path: &path,
            method: &method,
            authority: &path,
            ..request(&l)
        });
    }
    let t = text(&m);
    assert!(!t.contains("/item/"), "{t}");
    assert!(!t.contains("M1"), "{t}");
    let series = t
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .count();
    assert_eq!(series, 1, "{t}");
    assert_eq!(value(&t, "istio_requests_total{", &[]), Some(50.0));
    // Exactly Istio's thirteen labels.
    let line = t
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap();
    assert_eq!(line.matches("=\"").count(), 13, "{line}");
}

#[test]
fn response_flags_render_as_envoy_does() {
    use ResponseFlag::*;
    let all = [
        (None, "-"),
        (NoHealthyUpstream, "UH"),
        (UpstreamConnectFailure, "UF"),
        (UpstreamRequestTimeout, "UT"),
        (UpstreamRemoteReset, "UR"),
        (UpstreamConnectionTermination, "UC"),
        (DownstreamConnectionTermination, "DC"),
        (NoRouteFound, "NR"),
        (UpstreamRetryLimitExceeded, "URX"),
        (Unauthorized, "UAEX"),
        (Overloaded, "UO"),
        (InvalidRequest, "DPE"),
    ];
    for (flag, s) in all {
        assert_eq!(flag.as_str(), s);
    }
    assert_eq!(RequestProtocol::Http.as_str(), "http");
    assert_eq!(RequestProtocol::Grpc.as_str(), "grpc");
}

#[test]
fn no_response_renders_code_zero() {
    let m = Metrics::new().unwrap();
    let l = labels();
    m.record_request(&RequestRecord {
        response_code: 0,
        flag: ResponseFlag::DownstreamConnectionTermination,
        ..request(&l)
    });
    let t = text(&m);
    let sel = [r#"response_code="0""#, r#"response_flags="DC""#];
    assert_eq!(value(&t, "istio_requests_total{", &sel), Some(1.0));
}

fn start_time() -> time::OffsetDateTime {
    // 2026-12-03T14:40:05.042Z
    time::OffsetDateTime::from_unix_timestamp_nanos(1_796_308_805_042_000_000).unwrap()
}

#[test]
fn access_log_text_is_envoy_like() {
    let l = labels();
    let line = format_access_log_line(AccessLogFormat::Text, &request(&l), start_time());
    assert_eq!(
        line,
        "[2026-12-03T14:40:05.042Z] \"GET /secret/user-123?token=abc HTTP\" 200 - 5 1500 3 \
         \"server.ns-b:8080\" ns-a/client-1 -> 10.0.0.2:8080 source\n"
    );
    let none = RequestRecord {
        destination: "",
        response_code: 0,
        flag: ResponseFlag::NoHealthyUpstream,
        protocol: RequestProtocol::Grpc,
        ..request(&l)
    };
    let line = format_access_log_line(AccessLogFormat::Text, &none, start_time());
    assert!(
        line.contains("gRPC\" 0 UH 5 1500 3 \"server.ns-b:8080\" ns-a/client-1 -> - source\n"),
        "{line}"
    );
}

#[test]
fn access_log_text_escapes_what_a_client_sent() {
    let l = labels();
    let r = RequestRecord {
        method: "GET",
        path: "/a\"b\n[2026-01-01] \"FAKE",
        authority: "h\\x",
        ..request(&l)
    };
    let line = format_access_log_line(AccessLogFormat::Text, &r, start_time());
    assert_eq!(line.matches('\n').count(), 1, "{line}");
    assert!(line.ends_with('\n'));
    assert!(
        line.contains(r#""GET /a\x22b\x0a[2026-01-01]\x20\x22FAKE HTTP""#),
        "{line}"
    );
    assert!(line.contains(r#""h\x5cx""#), "{line}");
}

#[test]
fn access_log_json_has_the_same_fields() {
    let l = labels();
    let r = RequestRecord {
        grpc_status: Some(0),
        protocol: RequestProtocol::Grpc,
        path: "/a\"\n",
        ..request(&l)
    };
    let line = format_access_log_line(AccessLogFormat::Json, &r, start_time());
    assert_eq!(line.matches('\n').count(), 1, "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["time"], "2026-12-03T14:40:05.042Z");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/a\"\n");
    assert_eq!(v["protocol"], "grpc");
    assert_eq!(v["response_code"], 200);
    assert_eq!(v["grpc_status"], 0);
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["request_bytes"], 5);
    assert_eq!(v["response_bytes"], 1500);
    assert_eq!(v["duration_ms"], 3);
    assert_eq!(v["authority"], "server.ns-b:8080");
    assert_eq!(v["source"], "ns-a/client-1");
    assert_eq!(v["destination"], "10.0.0.2:8080");
    assert_eq!(v["reporter"], "source");
    assert_eq!(v["destination_service"], "server.ns-b.svc.cluster.local");
}

/// A writer that blocks until released, then keeps what it was given;
/// `entered` counts the writes begun.
#[derive(Clone)]
struct Stalled {
    open: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    entered: Arc<std::sync::atomic::AtomicUsize>,
    out: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl std::io::Write for Stalled {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.entered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        self.out.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_stalled_stdout_drops_lines_and_never_blocks() {
    let sink = Stalled {
        open: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
        entered: Arc::default(),
        out: Arc::default(),
    };
    let m = Metrics::new()
        .unwrap()
        .with_access_log_sink(AccessLogFormat::Text, 4, Box::new(sink.clone()))
        .unwrap();
    let l = labels();
    // The writer takes a first line and blocks writing it.
    m.record_request(&request(&l));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sink.entered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "writer never wrote");
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = std::time::Instant::now();
    for _ in 0..100 {
        m.record_request(&request(&l));
    }
    // 100 requests against a writer that never returns: none of them waited.
    assert!(started.elapsed() < Duration::from_secs(2));
    // The queue (4) took the first ones; the rest were dropped and counted.
    assert_eq!(
        value(&text(&m), "weft_access_log_dropped_total", &[]),
        Some(96.0)
    );
    let (lock, cv) = &*sink.open;
    *lock.lock().unwrap() = true;
    cv.notify_all();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines = sink
            .out
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        if lines == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{lines} lines written"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn access_log_is_off_by_default() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: crate::run::RunArgs,
    }
    let base = ["mesh-agent", "--config", "m.yaml", "--node", "n"];
    let off = Cli::try_parse_from(base).unwrap();
    assert_eq!(off.run.access_log, None);
    let m = Metrics::new()
        .unwrap()
        .with_access_log(off.run.access_log)
        .unwrap();
    assert_eq!(m.access_log_format(), None);
    let json = Cli::try_parse_from(base.iter().chain(&["--access-log", "json"])).unwrap();
    assert_eq!(json.run.access_log, Some(AccessLogFormat::Json));
    let text = Cli::try_parse_from(base.iter().chain(&["--access-log", "text"])).unwrap();
    assert_eq!(text.run.access_log, Some(AccessLogFormat::Text));
    assert!(Cli::try_parse_from(base.iter().chain(&["--access-log", "xml"])).is_err());
}

fn filter(namespace: Option<&str>, pod: Option<&str>) -> TapFilter {
    TapFilter {
        namespace: namespace.map(Into::into),
        pod: pod.map(Into::into),
    }
}

#[test]
fn tap_filter_matches_either_side() {
    let l = labels();
    let e = TapEvent::from_record(&request(&l));
    assert_eq!(e.source, "ns-a/client-1");
    assert_eq!(e.status, 200);
    assert_eq!(e.flag, "-");
    assert!((e.latency_ms - 3.2).abs() < 1e-9);
    let yes = [
        filter(None, None),
        filter(Some("ns-a"), None),
        filter(Some("ns-b"), None),
        filter(None, Some("client-1")),
        filter(None, Some("client")),
        filter(None, Some("server")),
        filter(Some("ns-a"), Some("client-1")),
        filter(Some("ns-b"), Some("server")),
    ];
    for f in &yes {
        assert!(f.matches(&e), "{f:?}");
    }
    let no = [
        filter(Some("ns-c"), None),
        filter(None, Some("other")),
        // Both given: they must hold on the same side.
        filter(Some("ns-a"), Some("server")),
        filter(Some("ns-b"), Some("client-1")),
    ];
    for f in &no {
        assert!(!f.matches(&e), "{f:?}");
    }
    // An unknown peer: only its address; the destination side still matches.
    let unknown = ConnectionLabels {
        source_workload: String::new(),
        source_workload_namespace: String::new(),
        ..labels()
    };
    let e = TapEvent::from_record(&RequestRecord {
        source_pod: "10.1.2.3:4567",
        ..request(&unknown)
    });
    assert!(!filter(Some("ns-a"), None).matches(&e));
    assert!(filter(Some("ns-b"), None).matches(&e));
}

#[tokio::test]
async fn tap_builds_nothing_unwatched_and_counts_what_a_slow_client_loses() {
    let m = Metrics::new().unwrap();
    let l = labels();
    assert!(!m.tap().is_watched());
    m.record_request(&request(&l));
    let mut sub = m.tap().subscribe();
    assert!(m.tap().is_watched());
    // Published before the subscription: not seen.
    let all = TapFilter::default();
    m.record_request(&RequestRecord {
        path: "/first",
        ..request(&l)
    });
    match sub.next(&all).await {
        Some(TapItem::Event(e)) => assert_eq!(e.path, "/first"),
        other => panic!("{other:?}"),
    }
    // A client that does not read loses the oldest, counted.
    for _ in 0..(crate::telemetry::TAP_BUFFER + 10) {
        m.record_request(&request(&l));
    }
    assert_eq!(sub.next(&all).await, Some(TapItem::Lost(10)));
    assert_eq!(
        value(&text(&m), "weft_tap_events_lost_total", &[]),
        Some(10.0)
    );
    drop(sub);
    assert!(!m.tap().is_watched());
}
