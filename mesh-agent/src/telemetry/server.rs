//! The metrics endpoint: `/metrics` and its Istio alias `/stats/prometheus`,
//! Prometheus text format, HTTP/1.1. Kept off the data path's runtime budget:
//! one small task per scrape connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::Metrics;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves metrics on `listener` until the future is dropped (it is `Send`:
/// spawn it). Accept errors are logged and retried, so it does not return.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(respond(&metrics, &req)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path_ok = matches!(req.uri().path(), "/metrics" | "/stats/prometheus");
    let (status, content_type, body) = if !path_ok {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        )
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"method not allowed\n"),
        )
    } else {
        match metrics.render() {
            Ok(text) => (StatusCode::OK, TEXT_FORMAT, Bytes::from(text)),
            Err(e) => {
                warn!(error = %e, "encoding metrics failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    Bytes::from_static(b"encoding metrics failed\n"),
                )
            }
        }
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}
