//! `/tap?namespace=N&pod=P`: live requests as newline-delimited JSON, for
//! `mesh-agent tap` (docs/architecture.md, "Request telemetry"). One line per
//! matching request ([`TapEvent`]); `{"lost":n}` when this client fell behind
//! and missed `n` events. A client that goes away (its connection closes) is
//! unsubscribed at once, so it stops costing the data path.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::{
    Response, StatusCode,
    body::Frame,
    header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue},
};

use super::{Router, text};
use crate::telemetry::{Tap, TapFilter, TapItem, TapSubscription};

/// Adds `/tap` over the agent's request stream (`Metrics::tap`).
pub fn with_tap(router: Router, tap: Tap) -> Router {
    router.get("/tap", move |req| {
        let filter = parse_query(req.uri().query().unwrap_or(""));
        let tap = tap.clone();
        async move {
            match filter {
                Ok(filter) => stream_events(tap.subscribe(), filter),
                Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            }
        }
    })
}

fn stream_events(sub: TapSubscription, filter: TapFilter) -> Response<super::Body> {
    let lines = stream::unfold((sub, filter), |(mut sub, filter)| async move {
        let mut line = match sub.next(&filter).await? {
            TapItem::Event(e) => serde_json::to_vec(&*e).unwrap_or_default(),
            TapItem::Lost(n) => {
                serde_json::to_vec(&serde_json::json!({ "lost": n })).unwrap_or_default()
            }
        };
        line.push(b'\n');
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(line))),
            (sub, filter),
        ))
    });
    let mut r = Response::new(StreamBody::new(lines).boxed_unsync());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `namespace` and `pod`, percent-decoded; anything else is refused, so a
/// mistyped filter does not silently show everything.
pub fn parse_query(query: &str) -> Result<TapFilter, String> {
    let mut filter = TapFilter::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).ok_or_else(|| format!("bad encoding in {pair:?}"))?;
        let value = (!value.is_empty()).then_some(value);
        match key {
            "namespace" => filter.namespace = value,
            "pod" => filter.pod = value,
            _ => return Err(format!("unknown filter {key:?}: use namespace= and pod=")),
        }
    }
    Ok(filter)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parses_and_refuses_unknown_keys() {
        assert_eq!(parse_query(""), Ok(TapFilter::default()));
        assert_eq!(
            parse_query("namespace=shop&pod=front%2Dend"),
            Ok(TapFilter {
                namespace: Some("shop".into()),
                pod: Some("front-end".into())
            })
        );
        assert_eq!(
            parse_query("namespace="),
            Ok(TapFilter::default()),
            "empty means any"
        );
        assert!(parse_query("ns=shop").is_err());
        assert!(parse_query("pod=%zz").is_err());
        assert!(parse_query("pod=%e2").is_err(), "not UTF-8");
    }
}

#[cfg(test)]
mod stream_tests {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use crate::telemetry::{
        ConnectionLabels, Metrics, RequestProtocol, RequestRecord, ResponseFlag, TapEvent,
    };

    fn labels(dst_ns: &str) -> ConnectionLabels {
        ConnectionLabels {
            source_workload: "client".into(),
            source_workload_namespace: "ns-a".into(),
            destination_workload: "server".into(),
            destination_workload_namespace: dst_ns.into(),
            destination_service: format!("server.{dst_ns}.svc.cluster.local"),
            ..ConnectionLabels::default()
        }
    }

    fn record<'a>(labels: &'a ConnectionLabels, path: &'a str) -> RequestRecord<'a> {
        RequestRecord {
            labels,
            protocol: RequestProtocol::Http,
            response_code: 404,
            grpc_status: None,
            flag: ResponseFlag::NoRouteFound,
            duration: Duration::from_millis(7),
            request_bytes: 0,
            response_bytes: 9,
            method: "POST",
            path,
            authority: "server",
            source_pod: "other/client-1",
            destination: "10.0.0.9:80",
        }
    }

    /// A `/tap` client: sends the request, returns the lines after the head.
    async fn tap_client(
        addr: std::net::SocketAddr,
        query: &str,
    ) -> (String, tokio::io::Lines<BufReader<tokio::net::TcpStream>>) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /tap{query} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(s).lines();
        let mut head = String::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.is_empty() {
                break;
            }
            head.push_str(&l);
            head.push('\n');
        }
        (head, lines)
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("in time")
    }

    #[tokio::test]
    async fn tap_streams_matching_requests_only() {
        let metrics = Metrics::new().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = super::with_tap(super::Router::new(), metrics.tap().clone());
        let server = tokio::spawn(super::super::serve_router(listener, router));

        let (head, mut lines) = tap_client(addr, "?namespace=ns-b").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("application/x-ndjson"), "{head}");
        within(async {
            while !metrics.tap().is_watched() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        // Neither side in ns-b (the source pod's namespace is `other`).
        let elsewhere = labels("ns-c");
        metrics.record_request(&record(&elsewhere, "/not-me"));
        let wanted = labels("ns-b");
        metrics.record_request(&record(&wanted, "/me?x=1"));
        // Chunked framing: a size line, then the event, per chunk.
        let event = within(async {
            loop {
                let l = lines.next_line().await.unwrap().unwrap();
                if let Ok(e) = serde_json::from_str::<TapEvent>(&l) {
                    return e;
                }
            }
        })
        .await;
        assert_eq!(event.path, "/me?x=1");
        assert_eq!(event.method, "POST");
        assert_eq!(event.status, 404);
        assert_eq!(event.flag, "NR");
        assert_eq!(event.source, "other/client-1");
        assert_eq!(event.destination, "10.0.0.9:80");
        assert_eq!(event.reporter, "source");
        assert_eq!(event.destination_service, "server.ns-b.svc.cluster.local");
        assert!((event.latency_ms - 7.0).abs() < 1e-9);

        let (head, _) = tap_client(addr, "?names=ns-b").await;
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        server.abort();
    }

    #[tokio::test]
    async fn a_tap_client_that_left_stops_costing_requests() {
        let metrics = Metrics::new().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = super::with_tap(super::Router::new(), metrics.tap().clone());
        let server = tokio::spawn(super::super::serve_router(listener, router));
        let (head, lines) = tap_client(addr, "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(metrics.tap().is_watched());
        // Gone without a word, while no request flows.
        drop(lines);
        within(async {
            while metrics.tap().is_watched() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        server.abort();
    }
}
