//! The probes beyond reading objects: each agent's `/metrics` through the API
//! server's pod proxy (the admin API is on the node's loopback, out of reach
//! from a workstation; the metrics port is on the node's address), and a TLS
//! handshake plus `GET /healthz` with the CA service, verified against the
//! trust bundle, when it can be reached from here. Both read the remote
//! `Date` header for the clock check. Each is bounded by [`PROBE_TIMEOUT`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::client::Body;
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ca::cert_times;
use super::clock::parse_http_date;
use super::facts::{AgentProbe, CaProbe, ClockReading};
use crate::identity::tls::{provider, root_store};

pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The agent container's metrics port (`manifests/agent/daemonset.yaml`).
pub const METRICS_PORT: u16 = 15020;
/// Metrics answers larger than this are cut (the check reads one gauge).
const MAX_METRICS: usize = 4 * 1024 * 1024;

/// `GET /api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/metrics`.
pub async fn agent_metrics(client: &Client, ns: &str, pod: &Pod, port: u16) -> AgentProbe {
    let Some(name) = pod.metadata.name.as_deref() else {
        return AgentProbe::NotTried("a pod without a name".into());
    };
    let running = pod
        .status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some());
    if !running {
        return AgentProbe::NotTried("the pod is not running".into());
    }
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/metrics");
    let request = match Request::get(&path).body(Body::empty()) {
        Ok(r) => r,
        Err(e) => return AgentProbe::NotTried(e.to_string()),
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        let response = client.send(request).await.map_err(|e| e.to_string())?;
        let local = SystemTime::now();
        let status = response.status();
        let remote = response
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((
            status,
            body,
            remote.map(|remote| ClockReading { local, remote }),
        ))
    })
    .await;
    match answer {
        Err(_) => AgentProbe::Unreachable(format!(
            "the API server's pod proxy got no answer within {PROBE_TIMEOUT:?}"
        )),
        Ok(Err(e)) => AgentProbe::Unreachable(e),
        Ok(Ok((status, body, clock))) if status.is_success() => {
            let cut = &body[..body.len().min(MAX_METRICS)];
            AgentProbe::Answered {
                metrics: String::from_utf8_lossy(cut).into_owned(),
                clock,
            }
        }
        Ok(Ok((status, body, _))) => AgentProbe::Unreachable(proxy_error(status.as_u16(), &body)),
    }
}

/// The API server's `Status` message for a failed proxy request (e.g. "error
/// trying to reach service: dial tcp 10.0.0.5:15020: connect: no route to
/// host"), or the status code.
/// An answer that is not the API server's own `Status` (e.g. a 403 from an
/// HTTP proxy the API server dials through) is quoted as it came.
pub fn proxy_error(code: u16, body: &[u8]) -> String {
    let status = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(|v| v["kind"] == "Status");
    let text = String::from_utf8_lossy(body);
    let first_line = text.lines().next().unwrap_or("").trim();
    match status {
        Some(s) if s["reason"] == "Forbidden" => format!(
            "these credentials may not proxy to pods (pods/proxy): {}",
            s["message"].as_str().unwrap_or_default()
        ),
        Some(s) => format!(
            "the API server cannot reach the agent's metrics port: {}",
            s["message"].as_str().unwrap_or_default()
        ),
        None if first_line.is_empty() => format!("the pod proxy answered {code}"),
        None => format!("the pod proxy answered {code}: {first_line}"),
    }
}

/// A TLS handshake with the CA at `target` (`host:port`), as
/// `weft-ca.<ns>.svc` (the name the agents use), verified against `roots`,
/// then `GET /healthz`.
pub async fn ca(
    target: &str,
    ns: &str,
    roots: &[CertificateDer<'static>],
    should_reach: bool,
) -> CaProbe {
    let unreachable = |why: String| CaProbe::Unreachable {
        target: target.to_owned(),
        why,
        should_reach,
    };
    let tcp = match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(target)).await {
        Err(_) => return unreachable(format!("no connection within {PROBE_TIMEOUT:?}")),
        Ok(Err(e)) => return unreachable(e.to_string()),
        Ok(Ok(tcp)) => tcp,
    };
    let untrusted = |why: String| CaProbe::Untrusted {
        target: target.to_owned(),
        why,
        should_reach,
    };
    let config = match tls_config(roots) {
        Ok(c) => c,
        Err(e) => return untrusted(format!("the trust bundle cannot be used: {e}")),
    };
    let Ok(name) = ServerName::try_from(format!("{}.{ns}.svc", super::ca::SERVICE)) else {
        return untrusted(format!("{ns} does not make a DNS name"));
    };
    let tls =
        match tokio::time::timeout(PROBE_TIMEOUT, TlsConnector::from(config).connect(name, tcp))
            .await
        {
            Err(_) => return untrusted(format!("no TLS handshake within {PROBE_TIMEOUT:?}")),
            Ok(Err(e)) => return untrusted(format!("TLS handshake failed: {e}")),
            Ok(Ok(tls)) => tls,
        };
    let serving = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(cert_times);
    match tokio::time::timeout(PROBE_TIMEOUT, healthz(tls, target)).await {
        Ok(Ok((healthz, clock))) => CaProbe::Answered {
            target: target.to_owned(),
            healthz,
            serving,
            clock,
        },
        Ok(Err(e)) => untrusted(format!("TLS verified, but GET /healthz failed: {e}")),
        Err(_) => untrusted(format!(
            "TLS verified, but no /healthz answer within {PROBE_TIMEOUT:?}"
        )),
    }
}

fn tls_config(roots: &[CertificateDer<'static>]) -> anyhow::Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(roots)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn healthz(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    target: &str,
) -> anyhow::Result<(u16, Option<ClockReading>)> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    let conn = tokio::spawn(conn);
    let request = Request::get(crate::identity::ca_server::api::HEALTHZ_PATH)
        .header(http::header::HOST, target)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let local = SystemTime::now();
    let remote = response
        .headers()
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    conn.abort();
    Ok((status, remote.map(|remote| ClockReading { local, remote })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_errors_read_the_status_message() {
        let body = br#"{"kind":"Status","message":"error trying to reach service: dial tcp 10.89.0.1:15020: connect: no route to host","code":503}"#;
        assert_eq!(
            proxy_error(503, body),
            "the API server cannot reach the agent's metrics port: error trying to reach service: \
             dial tcp 10.89.0.1:15020: connect: no route to host"
        );
        let rbac = br#"{"kind":"Status","reason":"Forbidden","message":"pods \"x\" is forbidden","code":403}"#;
        assert!(proxy_error(403, rbac).contains("may not proxy to pods (pods/proxy)"));
        assert_eq!(
            proxy_error(403, b"resolve_deny: denied destination\n"),
            "the pod proxy answered 403: resolve_deny: denied destination"
        );
        assert_eq!(proxy_error(502, b""), "the pod proxy answered 502");
    }
}
