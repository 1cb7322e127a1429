//! The answers the agent gives itself (redirects, 404, 5xx), with Envoy's
//! texts, so a client or an operator reading them sees familiar words.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::Body;
use crate::telemetry::ResponseFlag;

/// A response with `status` (and `location` for a redirect) explaining
/// `flag`; also its body's length, for the request's report.
pub fn answer(
    status: StatusCode,
    location: Option<HeaderValue>,
    flag: ResponseFlag,
) -> (Response<Body>, u64) {
    let text: &'static str = match flag {
        ResponseFlag::NoHealthyUpstream => "no healthy upstream",
        ResponseFlag::UpstreamConnectFailure => {
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
        }
        ResponseFlag::UpstreamRemoteReset => {
            "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
        }
        ResponseFlag::UpstreamRequestTimeout => "upstream request timeout",
        ResponseFlag::Overloaded => "overloaded: too many requests in flight",
        _ => "",
    };
    let mut response = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if !text.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    (response, text.len() as u64)
}
