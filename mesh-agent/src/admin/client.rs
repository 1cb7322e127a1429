//! A small HTTP/1 client for the admin API (used by the CLI).

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// Default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";

/// A response: status, generation header if any, body.
pub struct AdminResponse {
    pub status: u16,
    pub generation: Option<u64>,
    pub body: Bytes,
}

/// `GET http://<addr><path>` with a 5 s timeout.
pub async fn get(addr: &str, path: &str) -> anyhow::Result<AdminResponse> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}{path}")
        .parse()
        .with_context(|| format!("bad admin address {addr:?}"))?;
    let fut = async {
        let resp = client.get(uri).await?;
        let status = resp.status().as_u16();
        let generation = resp
            .headers()
            .get(super::GENERATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok(AdminResponse {
            status,
            generation,
            body,
        })
    };
    let resp = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .with_context(|| format!("admin API at {addr} did not answer within 5 s"))?
        .with_context(|| format!("cannot reach the admin API at {addr}: is the agent running?"))?;
    Ok(resp)
}

/// `GET` expecting 200 and JSON.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    addr: &str,
    path: &str,
) -> anyhow::Result<(T, Option<u64>)> {
    let r = get(addr, path).await?;
    if r.status != 200 {
        bail!(
            "{path}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        );
    }
    let v = serde_json::from_slice(&r.body).with_context(|| format!("{path}: invalid JSON"))?;
    Ok((v, r.generation))
}

/// `GET` a streamed endpoint (`/tap`): waits up to 5 s for the head, which
/// must be 200, then hands over the body to read as it arrives.
pub async fn get_stream(addr: &str, path: &str) -> anyhow::Result<hyper::body::Incoming> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}{path}")
        .parse()
        .with_context(|| format!("bad admin address {addr:?}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .with_context(|| format!("admin API at {addr} did not answer within 5 s"))?
        .with_context(|| format!("cannot reach the admin API at {addr}: is the agent running?"))?;
    if resp.status() != hyper::StatusCode::OK {
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
            .await
            .ok()
            .and_then(|b| b.ok())
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!(
            "{path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(resp.into_body())
}
