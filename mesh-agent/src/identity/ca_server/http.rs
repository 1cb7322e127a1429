//! The CA service's HTTPS server (hyper 1, HTTP/1.1 over rustls TLS 1.3):
//! `POST /v1/certificates` and `GET /healthz`. What a certificate request
//! gets is an [`Issuer`]'s decision (the CA service's, or a test's).

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::api::{CERTIFICATES_PATH, ErrorResponse, HEALTHZ_PATH, IssueResponse};
use super::authorize::Refusal;
use super::signer::Signer;
use crate::identity::tls;

/// Answers one certificate request: `peer` sent `body` with `bearer`.
pub trait Issuer: Send + Sync + 'static {
    fn issue(
        &self,
        peer: IpAddr,
        bearer: Option<&str>,
        body: &[u8],
    ) -> impl Future<Output = Result<IssueResponse, Refusal>> + Send;
}

/// A certificate request is a few hundred bytes of PEM; anything much larger is not one.
const MAX_BODY: usize = 64 * 1024;
/// A client that does not finish its handshake, or send a request's
/// headers, in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS 1.3 with the serving certificate the signer holds now (re-read at
/// every handshake), no client certificates (agents authenticate with tokens).
pub fn server_tls(signer: Arc<Signer>) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(signer);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves until the listener fails for good.
pub async fn serve<S: Issuer>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    service: Arc<S>,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "CA service listening (HTTPS)");
    }
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("CA accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, service) = (acceptor.clone(), service.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        debug!(%peer, "CA TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "CA TLS handshake timed out");
                        return;
                    }
                };
            let peer_ip = peer.ip();
            let svc = service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&*service, peer_ip, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(%peer, "CA connection ended: {e}");
            }
        });
    }
}

async fn route<S: Issuer>(
    service: &S,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, HEALTHZ_PATH) => text(StatusCode::OK, "ok\n"),
        (&Method::POST, CERTIFICATES_PATH) => certificates(service, peer, req).await,
        (_, HEALTHZ_PATH | CERTIFICATES_PATH) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn certificates<S: Issuer>(
    service: &S,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let bearer = bearer(req.headers().get(AUTHORIZATION));
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return refusal(&Refusal::BadRequest(format!(
                "cannot read the body (at most {MAX_BODY} bytes): {e}"
            )));
        }
    };
    match service.issue(peer, bearer.as_deref(), &body).await {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(refused) => refusal(&refused),
    }
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(header: Option<&HeaderValue>) -> Option<String> {
    let value = header?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn refusal(refused: &Refusal) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(refused.status()).unwrap_or(StatusCode::FORBIDDEN);
    json(
        status,
        &ErrorResponse {
            error: refused.to_string(),
        },
    )
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            bearer(Some(&h("Bearer abc.def"))).as_deref(),
            Some("abc.def")
        );
        assert_eq!(bearer(Some(&h("bearer  abc "))).as_deref(), Some("abc"));
        assert_eq!(bearer(Some(&h("Basic abc"))), None);
        assert_eq!(bearer(Some(&h("abc"))), None);
        assert_eq!(bearer(None), None);
    }
}
