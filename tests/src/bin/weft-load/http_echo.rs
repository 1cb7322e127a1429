//! The echo server's HTTP side: a connection whose first bytes are an HTTP/1
//! request line or the HTTP/2 preface is served by hyper (HTTP/1.1 and h2c),
//! answering every request with JSON describing it — so tests see what the
//! mesh delivered (method, path, headers, body size) and which pod answered.
//!
//! Paths with a meaning: `/delay/MS` answers after MS milliseconds,
//! `/status/CODE` answers with CODE, `/bytes/N` answers N bytes of body,
//! `/reset` sends the head and part of the body, then aborts the connection,
//! `/_seen?path=P` answers how many requests for path P this server has had
//! (so a test can tell a mirrored copy arrived).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

type Body = BoxBody<Bytes, std::io::Error>;

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"PRI ",
    b"CONNECT ",
];

/// Whether `first` (the connection's first bytes, maybe partial) starts an
/// HTTP request; `None` while too few bytes have come to tell.
pub fn looks_like_http(first: &[u8]) -> Option<bool> {
    let mut undecided = false;
    for m in METHODS {
        let n = first.len().min(m.len());
        if first[..n] == m[..n] {
            if n == m.len() {
                return Some(true);
            }
            undecided = true;
        }
    }
    (!undecided).then_some(false)
}

/// Requests answered, by path.
fn seen() -> &'static Mutex<HashMap<String, u64>> {
    static SEEN: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the HTTP echo")
    })
}

/// Serves HTTP on `stream` until the client closes it; blocks the caller's
/// thread meanwhile, as the other handlers do.
pub fn serve(stream: std::net::TcpStream, pod: &'static str) {
    let _ = stream.set_nonblocking(true);
    runtime().block_on(async move {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
            return;
        };
        let service = hyper::service::service_fn(move |req| answer(req, pod));
        let _ = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .await;
    });
}

async fn answer(req: Request<Incoming>, pod: &'static str) -> Result<Response<Body>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let path = parts.uri.path().to_owned();
    if path == "/_seen" {
        let asked = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("path="))
            .unwrap_or_default();
        let count = seen()
            .lock()
            .map_or(0, |s| s.get(asked).copied().unwrap_or(0));
        return Ok(Response::new(full(Bytes::from(format!(
            "{{\"count\":{count}}}"
        )))));
    }
    if let Ok(mut seen) = seen().lock() {
        *seen.entry(path.clone()).or_default() += 1;
    }
    let mut status = StatusCode::OK;
    if let Some(ms) = path.strip_prefix("/delay/").and_then(|s| s.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = path.strip_prefix("/status/").and_then(|s| s.parse().ok()) {
        status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    }
    let body: Body = if let Some(n) = path.strip_prefix("/bytes/").and_then(|s| s.parse().ok()) {
        full(Bytes::from(vec![b'x'; n]))
    } else if path == "/reset" {
        aborted()
    } else {
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .keys()
            .map(|k| {
                let values: Vec<&str> = parts
                    .headers
                    .get_all(k)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (k.as_str().to_owned(), values.join(", ").into())
            })
            .collect();
        let json = serde_json::json!({
            "pod": pod,
            "method": parts.method.as_str(),
            "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            "version": format!("{:?}", parts.version),
            // `:authority` (HTTP/2) or `Host` (HTTP/1.1).
            "authority": parts.uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
                parts.headers.get("host").and_then(|h| h.to_str().ok()).map(str::to_owned)
            }),
            "headers": headers,
            "body_bytes": body_bytes,
        });
        full(Bytes::from(json.to_string()))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-echo-pod", hyper::header::HeaderValue::from_static(pod));
    Ok(response)
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// 1 KiB, then (50 ms later, so the first chunk is on the wire) an error:
/// hyper aborts the connection (HTTP/1.1) or resets the stream (HTTP/2).
fn aborted() -> Body {
    Aborting {
        sent: false,
        pause: Box::pin(tokio::time::sleep(Duration::from_millis(50))),
    }
    .boxed()
}

struct Aborting {
    sent: bool,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Aborting {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if !self.sent {
            self.sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 1024])))));
        }
        match self.pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::other(
                "the echo server aborts mid-response",
            )))),
        }
    }
}
