//! Whether an outbound connection to a Service port is HTTP, and which
//! version: from what the port declares, else from the client's first bytes
//! (docs/architecture.md, "L7 routing"). Pure; the handler does the waiting.

use std::time::Duration;

use crate::state::ServicePort;

/// How long the handler waits for a client's first bytes on a port that
/// declares nothing. A client that has sent nothing by then is carried as TCP,
/// so a server-first protocol (SMTP, MySQL) waits at most this long.
pub const SNIFF_WINDOW: Duration = Duration::from_millis(100);

/// The longest request line sniffing reads before deciding it is not HTTP/1.
pub const SNIFF_LIMIT: usize = 8 * 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a Service port says about its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    /// HTTP: HTTP/1.1 or HTTP/2 with prior knowledge, told apart by the bytes.
    Http,
    /// HTTP/2 with prior knowledge (`kubernetes.io/h2c`, gRPC).
    Http2,
    /// A protocol that is not HTTP: carried as bytes, never sniffed.
    Opaque,
    /// Nothing said: sniff.
    Unknown,
}

/// From `appProtocol` first, else the port name's prefix (Istio's
/// convention: `http`, `http-web`, `grpc-api`, `tcp-db`).
pub fn declared(port: &ServicePort) -> Declared {
    if let Some(app) = port.app_protocol.as_deref() {
        return match app.to_ascii_lowercase().as_str() {
            "http" | "http1" | "kubernetes.io/ws" => Declared::Http,
            "http2" | "kubernetes.io/h2c" | "grpc" | "grpc-web" => Declared::Http2,
            _ => Declared::Opaque,
        };
    }
    let Some(name) = port.name.as_deref() else {
        return Declared::Unknown;
    };
    let name = name.to_ascii_lowercase();
    let prefix = name.split('-').next().unwrap_or_default();
    match prefix {
        "http" => Declared::Http,
        "http2" | "grpc" | "h2c" => Declared::Http2,
        "tcp" | "tls" | "https" | "mysql" | "mongo" | "redis" | "udp" => Declared::Opaque,
        _ => Declared::Unknown,
    }
}

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    Http1,
    Http2,
    Opaque,
    /// Consistent with HTTP so far; read more (within the window and limit).
    NeedMore,
}

/// Classifies a client's first bytes: the HTTP/2 connection preface, or an
/// HTTP/1 request line (`TOKEN SP target SP HTTP/1.x CRLF`).
pub fn sniff(bytes: &[u8]) -> Sniffed {
    if bytes.is_empty() {
        return Sniffed::NeedMore;
    }
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Sniffed::Http2
        } else {
            Sniffed::NeedMore
        };
    }
    request_line(bytes)
}

fn request_line(bytes: &[u8]) -> Sniffed {
    let method_len = bytes.iter().take_while(|b| is_token(**b)).count();
    match bytes.get(method_len) {
        None if method_len < 32 => return Sniffed::NeedMore,
        Some(b' ') if method_len > 0 => {}
        _ => return Sniffed::Opaque,
    }
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        let printable = bytes
            .iter()
            .all(|b| (0x20..0x7f).contains(b) || *b == b'\r');
        return if printable && bytes.len() < SNIFF_LIMIT {
            Sniffed::NeedMore
        } else {
            Sniffed::Opaque
        };
    };
    let line = &bytes[..end];
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
        Sniffed::Http1
    } else {
        Sniffed::Opaque
    }
}

/// RFC 9110 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TargetPort;

    fn port(name: Option<&str>, app: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            port: 80,
            target_port: TargetPort::Number(80),
            protocol: "TCP".into(),
            app_protocol: app.map(Into::into),
        }
    }

    #[test]
    fn declared_by_app_protocol_then_name() {
        let cases = [
            (None, Some("http"), Declared::Http),
            (None, Some("kubernetes.io/h2c"), Declared::Http2),
            (None, Some("grpc"), Declared::Http2),
            (Some("http"), Some("mysql"), Declared::Opaque),
            (Some("http"), None, Declared::Http),
            (Some("http-web"), None, Declared::Http),
            (Some("http2"), None, Declared::Http2),
            (Some("grpc-api"), None, Declared::Http2),
            (Some("tcp-db"), None, Declared::Opaque),
            (Some("https"), None, Declared::Opaque),
            (Some("web"), None, Declared::Unknown),
            (Some("httpx"), None, Declared::Unknown),
            (None, None, Declared::Unknown),
        ];
        for (name, app, want) in cases {
            assert_eq!(declared(&port(name, app)), want, "{name:?} {app:?}");
        }
    }

    #[test]
    fn sniffing() {
        let cases: [(&[u8], Sniffed); 12] = [
            (b"", Sniffed::NeedMore),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Sniffed::Http1),
            (b"POST /x?y=1 HTTP/1.0\r\n", Sniffed::Http1),
            (b"GE", Sniffed::NeedMore),
            (b"GET /long/path", Sniffed::NeedMore),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Sniffed::Http2),
            (b"PRI * HTTP/2", Sniffed::NeedMore),
            (b"\x16\x03\x01\x02\x00", Sniffed::Opaque), // a TLS ClientHello
            (b"HELO example\r\n", Sniffed::Opaque),
            (b"GET / SMTP\r\n", Sniffed::Opaque),
            (b" GET / HTTP/1.1\r\n", Sniffed::Opaque),
            (b"GET /\x00 HTTP/1.1", Sniffed::Opaque),
        ];
        for (bytes, want) in cases {
            assert_eq!(sniff(bytes), want, "{:?}", String::from_utf8_lossy(bytes));
        }
        let long = [b"GET /".as_slice(), &[b'a'; SNIFF_LIMIT]].concat();
        assert_eq!(sniff(&long), Sniffed::Opaque);
    }
}
