//! What a per-request decision reads of an HTTP request (docs/security.md,
//! "L7 authorization"): the method, the path normalized as Istio's default
//! (`BASE`) normalizes it, and the host. The normalized path is also what the
//! app receives, so the policy and the app read the same path.

use std::fmt;

use http::Uri;
use http::uri::PathAndQuery;

/// The request attributes an `operation` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAttrs {
    pub method: String,
    /// Normalized, without the query.
    pub path: String,
    /// From `:authority`, else `Host`, lower-cased; `None` when absent.
    pub host: Option<String>,
}

/// Why a request is refused before any policy (answered `400`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// Istio refuses a method that is not upper case, so `get` cannot slip
    /// past a rule on `GET` to an app that accepts both.
    #[error("the method is not upper case")]
    Method,
    /// `%00` in the path: refused, as Istio does.
    #[error("the path holds an encoded NUL")]
    NulInPath,
    /// A `Host` header that is not text.
    #[error("the host is not valid text")]
    Host,
}

impl BadRequest {
    /// The counter label of this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            BadRequest::Method => "method_case",
            BadRequest::NulInPath => "nul_in_path",
            BadRequest::Host => "bad_host",
        }
    }
}

impl RequestAttrs {
    /// The attributes of a request head; `host_header` is the `Host` header's
    /// value, read when the URI has no authority (HTTP/1 origin form).
    pub fn from_head(
        method: &http::Method,
        uri: &Uri,
        host_header: Option<&http::HeaderValue>,
    ) -> Result<Self, BadRequest> {
        let method = method.as_str();
        if method.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(BadRequest::Method);
        }
        let host = match uri.authority() {
            Some(a) => Some(a.as_str().to_ascii_lowercase()),
            None => host_header
                .map(|h| h.to_str().map(str::to_ascii_lowercase))
                .transpose()
                .map_err(|_| BadRequest::Host)?,
        };
        Ok(Self {
            method: method.to_owned(),
            path: normalize_path(uri.path())?,
            host,
        })
    }
}

impl fmt::Display for RequestAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.host.as_deref().unwrap_or("-");
        write!(f, "{} {}{}", self.method, host, self.path)
    }
}

/// `uri` with its path replaced by `path` (the normalized one), query kept;
/// `None` when the path is unchanged.
pub fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    if uri.path() == path {
        return None;
    }
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// Istio's `BASE` normalization: percent-encoded unreserved characters
/// decoded once (`%2d`, `%2e`, digits, letters, `%5f`, `%7e`), `\` read as
/// `/`, then `.` and `..` segments resolved (RFC 3986, 5.2.4). `%2f` stays
/// encoded and slashes are not merged, as in `BASE`.
pub fn normalize_path(path: &str) -> Result<String, BadRequest> {
    if path == "*" || path.is_empty() {
        return Ok(path.to_owned());
    }
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = (b == b'%' && i + 2 < bytes.len())
            .then(|| hex_pair(bytes[i + 1], bytes[i + 2]))
            .flatten();
        if escaped == Some(0) {
            return Err(BadRequest::NulInPath);
        }
        if let Some(c) = escaped.filter(|c| is_decoded(*c)) {
            decoded.push(char::from(c));
            i += 3;
            continue;
        }
        decoded.push(if b == b'\\' { '/' } else { char::from(b) });
        i += 1;
    }
    Ok(remove_dot_segments(&decoded))
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let h = char::from(hi).to_digit(16)?;
    let l = char::from(lo).to_digit(16)?;
    u8::try_from(h * 16 + l).ok()
}

/// The characters `BASE` decodes: RFC 3986's unreserved set.
fn is_decoded(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986, 5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                // A trailing dot segment leaves a directory: `/a/b/..` is `/a/`.
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(path.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normalize_path(p).expect("valid")
    }

    #[test]
    fn dot_segments_resolve_as_rfc_3986_says() {
        assert_eq!(norm("/a/../b"), "/b");
        assert_eq!(norm("/public/./data/abc/../xyz"), "/public/data/xyz");
        assert_eq!(norm("/../../admin"), "/admin");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/."), "/a/");
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/a//b"), "/a//b", "BASE does not merge slashes");
        assert_eq!(norm("/a/..b/c"), "/a/..b/c", "not a dot segment");
    }

    #[test]
    fn unreserved_escapes_are_decoded_once() {
        assert_eq!(norm("/some%2fdata/%61%62%63"), "/some%2fdata/abc");
        assert_eq!(norm("/%2E%2e/admin"), "/admin", "encoded dots are dots");
        assert_eq!(norm("/a%2D%5f%7E%30"), "/a-_~0");
        assert_eq!(norm("/%2561"), "/%2561", "no double decoding");
        assert_eq!(norm("/%zz%4"), "/%zz%4", "broken escapes stay");
        assert_eq!(norm("/a%20b"), "/a%20b", "reserved stays encoded");
    }

    #[test]
    fn backslashes_are_slashes() {
        assert_eq!(norm("/some\\data"), "/some/data");
        assert_eq!(norm("/x\\..\\admin"), "/admin");
    }

    #[test]
    fn an_encoded_nul_is_refused() {
        assert_eq!(normalize_path("/a%00b"), Err(BadRequest::NulInPath));
    }

    #[test]
    fn the_head_gives_method_normalized_path_and_host() {
        let uri: Uri = "/a/../b?x=1".parse().expect("uri");
        let host = http::HeaderValue::from_static("Shop.Example:8080");
        let attrs = RequestAttrs::from_head(&http::Method::GET, &uri, Some(&host)).expect("ok");
        assert_eq!(attrs.path, "/b", "no query");
        assert_eq!(attrs.host.as_deref(), Some("shop.example:8080"));
        assert_eq!(attrs.method, "GET");

        // HTTP/2: `:authority` wins over a `Host` header.
        let uri: Uri = "http://api.example/x".parse().expect("uri");
        let attrs = RequestAttrs::from_head(&http::Method::POST, &uri, Some(&host)).expect("ok");
        assert_eq!(attrs.host.as_deref(), Some("api.example"));

        let attrs = RequestAttrs::from_head(&http::Method::GET, &"/".parse().expect("uri"), None);
        assert_eq!(attrs.expect("ok").host, None);
    }

    #[test]
    fn a_lower_case_method_is_refused() {
        let method = http::Method::from_bytes(b"get").expect("method");
        let uri: Uri = "/".parse().expect("uri");
        assert_eq!(
            RequestAttrs::from_head(&method, &uri, None),
            Err(BadRequest::Method)
        );
    }

    #[test]
    fn the_forwarded_uri_carries_the_normalized_path_and_the_query() {
        let uri: Uri = "/a/../b?x=1".parse().expect("uri");
        let new = with_path(&uri, &norm(uri.path())).expect("changed");
        assert_eq!(new.to_string(), "/b?x=1");
        let abs: Uri = "http://h/a/./b".parse().expect("uri");
        assert_eq!(
            with_path(&abs, &norm(abs.path())).map(|u| u.to_string()),
            Some("http://h/a/b".to_owned())
        );
        assert_eq!(with_path(&"/b".parse().expect("uri"), "/b"), None);
    }
}
