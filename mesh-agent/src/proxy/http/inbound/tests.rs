//! The L7 server over in-memory pipes: a hyper app behind it, raw HTTP/1.1
//! and a hyper h2 client in front.

use std::sync::Mutex as StdMutex;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// An app that answers `<version> <method> <path?query> host=<host>`.
fn app() -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let body = format!(
                "{:?} {} {} host={host}",
                req.version(),
                req.method(),
                req.uri()
            );
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        });
        let _ = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(theirs), service)
            .await;
    });
    ours
}

/// Denies every path under `/admin`.
fn no_admin(r: &RequestAttrs) -> bool {
    !r.path.starts_with("/admin")
}

type Seen = Arc<StdMutex<Vec<Served>>>;

fn observer() -> (Seen, impl RequestObserver) {
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    (seen, move |r: &Served| {
        s.lock().expect("lock").push(r.clone())
    })
}

/// Reads one HTTP/1.1 response with a `content-length` body.
async fn read_response(client: &mut DuplexStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = client.read(&mut byte).await.expect("read");
        assert_eq!(n, 1, "closed mid-head: {}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).expect("utf8");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    client.read_exact(&mut body).await.expect("body");
    format!("{head}{}", String::from_utf8(body).expect("utf8"))
}

#[tokio::test]
async fn a_denied_request_leaves_the_keep_alive_connection_usable() {
    let (seen, observe) = observer();
    let mut client = spawn(app(), CancellationToken::new(), no_admin, observe);
    client
        .write_all(b"GET /admin/users HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .expect("write");
    let denied = read_response(&mut client).await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(denied.contains("content-type: text/plain"), "{denied}");
    assert!(denied.ends_with("\r\n\r\nRBAC: access denied"), "{denied}");

    client
        .write_all(b"GET /items?x=1 HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .expect("write");
    let allowed = read_response(&mut client).await;
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert!(
        allowed.ends_with("HTTP/1.1 GET /items?x=1 host=shop"),
        "{allowed}"
    );

    let outcomes: Vec<_> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|s| (s.status, s.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Some(StatusCode::FORBIDDEN), Outcome::Denied),
            (Some(StatusCode::OK), Outcome::Forwarded)
        ]
    );
}

/// The app gets the path the policy read: `/public/../admin` is `/admin`.
#[tokio::test]
async fn the_policy_and_the_app_read_the_same_normalized_path() {
    let (_, observe) = observer();
    let mut client = spawn(app(), CancellationToken::new(), no_admin, observe);
    client
        .write_all(b"GET /public/%2e%2e/admin HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .expect("write");
    assert!(read_response(&mut client).await.starts_with("HTTP/1.1 403"));
    client
        .write_all(b"GET /a/./b/../%63 HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .expect("write");
    let resp = read_response(&mut client).await;
    assert!(resp.ends_with("GET /a/c host=shop"), "{resp}");
}

#[tokio::test]
async fn h2c_requests_are_decided_one_by_one_on_one_connection() {
    let (_, observe) = observer();
    let client = spawn(app(), CancellationToken::new(), no_admin, observe);
    let (mut send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(client))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let get = |path: &str| {
        Request::get(format!("http://shop.example{path}"))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let denied = send.send_request(get("/admin")).await.expect("response");
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let body = denied.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"RBAC: access denied");
    let allowed = send.send_request(get("/ok")).await.expect("response");
    assert_eq!(allowed.status(), StatusCode::OK);
    let body = allowed
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"HTTP/2.0 GET http://shop.example/ok host=-");
}

#[tokio::test]
async fn a_malformed_request_gets_400_and_ends_its_connection() {
    let (seen, observe) = observer();
    let mut client = spawn(
        app(),
        CancellationToken::new(),
        |_: &RequestAttrs| true,
        observe,
    );
    client
        .write_all(b"GET / HTTP/1.1\r\nbad header\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    client
        .read_to_string(&mut out)
        .await
        .expect("read to the end");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].outcome, Outcome::Malformed(Malformed::Parse));
}

/// Istio's normalization refuses a lower-case method and an encoded NUL.
#[tokio::test]
async fn requests_istio_refuses_get_400() {
    for request in [
        &b"get / HTTP/1.1\r\nhost: shop\r\n\r\n"[..],
        b"GET /a%00 HTTP/1.1\r\nhost: shop\r\n\r\n",
    ] {
        let (seen, observe) = observer();
        let mut client = spawn(
            app(),
            CancellationToken::new(),
            |_: &RequestAttrs| true,
            observe,
        );
        client.write_all(request).await.expect("write");
        let mut out = String::new();
        client.read_to_string(&mut out).await.expect("closed after");
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        let outcome = seen.lock().expect("lock")[0].outcome;
        assert!(
            matches!(outcome, Outcome::Malformed(Malformed::Refused(_))),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let (_, observe) = observer();
    let mut client = spawn(
        app(),
        CancellationToken::new(),
        |_: &RequestAttrs| true,
        observe,
    );
    let mut req = b"GET / HTTP/1.1\r\nhost: shop\r\n".to_vec();
    for i in 0..MAX_HEADERS + 1 {
        req.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    client.write_all(&req).await.expect("write");
    let mut out = String::new();
    client.read_to_string(&mut out).await.expect("closed after");
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");

    let (_, observe) = observer();
    let mut client = spawn(
        app(),
        CancellationToken::new(),
        |_: &RequestAttrs| true,
        observe,
    );
    let big = format!(
        "GET / HTTP/1.1\r\nhost: shop\r\nx-big: {}\r\n\r\n",
        "a".repeat(MAX_HEADER_BYTES)
    );
    // The server answers before reading it all: ignore a write error.
    let _ = client.write_all(big.as_bytes()).await;
    let mut out = String::new();
    let _ = client.read_to_string(&mut out).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
}

/// A policy review that denies the connection ends it, idle or not.
#[tokio::test]
async fn a_revocation_closes_the_connection() {
    let (_, observe) = observer();
    let revoked = CancellationToken::new();
    let mut client = spawn(app(), revoked.clone(), |_: &RequestAttrs| true, observe);
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .expect("write");
    assert!(read_response(&mut client).await.starts_with("HTTP/1.1 200"));
    revoked.cancel();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed: {read:?}");
}

#[tokio::test]
async fn an_app_that_is_gone_gives_502() {
    let (seen, observe) = observer();
    let (gone, _) = tokio::io::duplex(64);
    let mut client = spawn(
        gone,
        CancellationToken::new(),
        |_: &RequestAttrs| true,
        observe,
    );
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .expect("write");
    let resp = read_response(&mut client).await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert_eq!(
        seen.lock().expect("lock")[0].outcome,
        Outcome::UpstreamFailed
    );
}

/// An app that switches protocols on request, then echoes bytes.
fn upgrading_app() -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let service = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
            let upgraded = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(io) = upgraded.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("echo"));
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            Ok::<_, Infallible>(resp)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(theirs), service)
            .with_upgrades()
            .await;
    });
    ours
}

/// An allowed `Upgrade` (WebSocket and the like) becomes a byte stream
/// after the app's `101`.
#[tokio::test]
async fn an_allowed_upgrade_passes_through() {
    let (_, observe) = observer();
    let mut client = spawn(upgrading_app(), CancellationToken::new(), no_admin, observe);
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: shop\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
        )
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(client.read(&mut byte).await.expect("read"), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("utf8");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client.write_all(b"ping").await.expect("write");
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut echoed))
        .await
        .expect("echoed in time")
        .expect("read");
    assert_eq!(&echoed, b"ping");
}
