//! RequestMirror (docs/config.md, "HTTPRoute"): a copy of the request goes to
//! each mirror endpoint, its answer discarded. The body is the one thing the
//! proxy ever buffers for this, and only up to `MIRROR_BODY_LIMIT`: a larger
//! or unsized body is forwarded unmirrored, streaming as always.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as HttpBody, Incoming};
use tracing::debug;

use super::{Body, BoxError};

/// The largest request body copied for mirrors.
pub const MIRROR_BODY_LIMIT: usize = 64 * 1024;

/// The body to forward, and the copies to send (`None`: not mirrored).
pub async fn split(parts: &Parts, body: Incoming) -> Result<(Body, Option<Bytes>), BoxError> {
    let small = body.is_end_stream()
        || body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MIRROR_BODY_LIMIT as u64);
    if !small {
        debug!(uri = %parts.uri, "request body too large to mirror; forwarded unmirrored");
        return Ok((body.map_err(Into::into).boxed_unsync(), None));
    }
    let bytes = Limited::new(body, MIRROR_BODY_LIMIT)
        .collect()
        .await?
        .to_bytes();
    let forward = Full::new(bytes.clone())
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok((forward, Some(bytes)))
}

/// A copy of the request head `parts` with `body`.
pub fn copy(parts: &Parts, body: Bytes) -> Request<Body> {
    let mut req = Request::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Logs a mirror that got no answer; the client's request is unaffected.
pub fn failed(addr: SocketAddr, error: &dyn std::fmt::Display) {
    debug!(%addr, %error, "mirrored request failed");
}
