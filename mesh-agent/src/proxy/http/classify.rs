//! Waiting for a client's first bytes to tell HTTP from anything else
//! (docs/architecture.md, "L7 routing"). Peeks, never reads: whichever
//! handler takes the connection sees every byte.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::detect::{Declared, SNIFF_LIMIT, SNIFF_WINDOW, Sniffed, sniff};

/// How long a port declared HTTP waits for the client's request before the
/// connection is carried as TCP: HTTP clients speak first, so only a
/// mis-declared server-first protocol ever waits this long (Linkerd's
/// detection timeout is the same).
pub const DECLARED_WINDOW: Duration = Duration::from_secs(10);

/// Between two peeks at an incomplete request line.
const PEEK_PAUSE: Duration = Duration::from_millis(2);

/// What to carry the connection as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carry {
    Http1,
    Http2,
    Tcp,
}

/// Classifies `client` by its declared protocol and first bytes. An opaque
/// port is TCP at once; a declared HTTP port waits up to `DECLARED_WINDOW`,
/// any other up to `SNIFF_WINDOW`; bytes that are not HTTP are TCP.
pub async fn classify(client: &TcpStream, declared: Declared) -> Carry {
    let window = match declared {
        Declared::Opaque => return Carry::Tcp,
        Declared::Http | Declared::Http2 => DECLARED_WINDOW,
        Declared::Unknown => SNIFF_WINDOW,
    };
    let deadline = Instant::now() + window;
    let mut buf = vec![0u8; SNIFF_LIMIT];
    loop {
        let peeked = tokio::time::timeout_at(deadline, client.peek(&mut buf)).await;
        let n = match peeked {
            Ok(Ok(n)) if n > 0 => n,
            // Closed, failed or silent: the TCP path sees the same and deals.
            _ => return Carry::Tcp,
        };
        match sniff(&buf[..n]) {
            Sniffed::Http1 => return Carry::Http1,
            Sniffed::Http2 => return Carry::Http2,
            Sniffed::Opaque => return Carry::Tcp,
            Sniffed::NeedMore if n == buf.len() || Instant::now() >= deadline => {
                return Carry::Tcp;
            }
            // The peek returns at once while bytes wait unread; pause for more.
            Sniffed::NeedMore => tokio::time::sleep(PEEK_PAUSE).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_request_line_in_two_pieces_is_http1() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET /a HT").await.unwrap();
        let classified = tokio::spawn(async move { classify(&server, Declared::Unknown).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"TP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(classified.await.unwrap(), Carry::Http1);
    }

    #[tokio::test]
    async fn a_silent_client_is_tcp_after_the_sniff_window_only() {
        let (_client, server) = pair().await;
        let start = std::time::Instant::now();
        assert_eq!(classify(&server, Declared::Unknown).await, Carry::Tcp);
        let waited = start.elapsed();
        assert!(waited >= SNIFF_WINDOW, "{waited:?}");
        assert!(waited < SNIFF_WINDOW * 3, "{waited:?}");
    }

    #[tokio::test]
    async fn an_opaque_port_is_tcp_without_waiting_and_bytes_stay_unread() {
        let (mut client, server) = pair().await;
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(classify(&server, Declared::Opaque).await, Carry::Tcp);
        assert_eq!(classify(&server, Declared::Http).await, Carry::Http2);
        let mut buf = [0u8; 3];
        server.peek(&mut buf).await.unwrap();
        assert_eq!(&buf, b"PRI", "classifying consumed nothing");
    }

    #[tokio::test]
    async fn non_http_bytes_on_a_declared_http_port_are_tcp() {
        let (mut client, server) = pair().await;
        client.write_all(b"whoami\n").await.unwrap();
        assert_eq!(classify(&server, Declared::Http).await, Carry::Tcp);
    }
}
