//! The parts of an HTTP request that routing looks at, borrowed from the
//! request head: routing never sees the body.

use http::{HeaderMap, Method, Uri, header};

#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        RequestHead {
            method,
            uri,
            headers,
        }
    }

    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        Self::new(&parts.method, &parts.uri, &parts.headers)
    }

    pub fn path(&self) -> &'a str {
        self.uri.path()
    }

    /// The first value of query parameter `name` (names compare exactly, as
    /// Gateway API says), without percent-decoding.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.uri.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// All values of header `name`, joined with `,` as HTTP allows (RFC 9110
    /// §5.3); `None` when absent or not text.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?.to_str().ok()?;
        let mut joined = first.to_owned();
        for v in values {
            joined.push(',');
            joined.push_str(v.to_str().ok()?);
        }
        Some(joined)
    }

    /// `:authority` (HTTP/2) or `Host` (HTTP/1.1), as sent.
    pub fn authority(&self) -> Option<&'a str> {
        self.uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| self.headers.get(header::HOST)?.to_str().ok())
    }

    /// The authority's host, without the port.
    pub fn host(&self) -> Option<&'a str> {
        let authority = self.authority()?;
        if authority.starts_with('[') {
            return authority.split_inclusive(']').next();
        }
        Some(authority.split(':').next().unwrap_or(authority))
    }
}
