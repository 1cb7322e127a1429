//! The HBONE-style tunnel: HTTP/2 `CONNECT` with `:authority = <ip>:<port>` over
//! an already established transport (plain TCP now, rustls later), carrying
//! many streams per connection (docs/architecture.md, "The agent").
//!
//! Built on the `h2` crate directly rather than hyper: a CONNECT tunnel needs
//! none of hyper's request/body machinery, and `h2` gives the stream's flow
//! control and the connection's concurrency limits to us without the extra
//! upgrade channel and buffering layer hyper puts in front of them.

mod client;
mod expiry;
mod keepalive;
mod pool;
mod server;
mod stream;

use std::io;
use std::sync::Arc;
use std::time::Duration;

pub use client::TunnelClient;
pub use expiry::PeerCertificate;
pub use pool::Pool;
pub use server::{Refusal, StreamHandler, serve_connection, serve_connection_until};
pub use stream::TunnelStream;

/// HTTP/2 and pooling knobs for both ends of the tunnel.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// Initial flow-control window per stream (both directions advertise it).
    pub stream_window: u32,
    /// Initial flow-control window per connection.
    pub connection_window: u32,
    /// Largest DATA frame we accept.
    pub max_frame_size: u32,
    /// Largest header block we accept (a CONNECT carries four headers).
    pub max_header_list_size: u32,
    /// Bytes h2 may queue per stream before a writer waits.
    pub max_send_buffer: usize,
    /// Concurrent streams a server accepts per connection.
    pub max_concurrent_streams: u32,
    /// Streams a pooled client connection carries before the pool dials another.
    pub max_streams_per_connection: usize,
    /// A pooled connection with no stream for this long is closed (within 2×).
    pub pool_idle_timeout: Duration,
    /// A client connection older than this takes no new stream, and closes
    /// once its streams are done: it was authenticated with certificates that
    /// have since been renewed, so it must not live on for ever.
    pub max_connection_age: Option<Duration>,
    /// A client connection that has carried this many streams takes no more
    /// (`None`: no limit; 1 means a new connection per stream).
    pub max_connection_streams: Option<u64>,
    /// Bound on dial + handshake, and on waiting for a CONNECT response.
    pub connect_timeout: Duration,
    /// Server side: bound on the peer's TLS handshake, and on its HTTP/2
    /// preface after it (docs/security.md: a slow peer holds a handshake slot).
    pub handshake_timeout: Duration,
    /// The server closes (GOAWAY) a connection that has carried no stream for
    /// this long, so a peer cannot hold a slot without using it; the client
    /// pool's own idle timeout is the longer `pool_idle_timeout`, and it
    /// redials when the server closed first.
    pub server_idle_timeout: Duration,
    /// Send an HTTP/2 PING this often on every tunnel connection (`None`: off)…
    pub keepalive_interval: Option<Duration>,
    /// …and close the connection if the answer takes longer than this.
    pub keepalive_timeout: Duration,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            // What a peer can make the agent buffer: a stream window per
            // stream (until read), a connection window per connection
            // (docs/security.md); large enough for a bulk stream on a LAN.
            stream_window: 512 * 1024,
            connection_window: 2 * 1024 * 1024,
            max_frame_size: 64 * 1024,
            max_header_list_size: 16 * 1024,
            max_send_buffer: 256 * 1024,
            max_concurrent_streams: 200,
            // `limits::CLIENT_STREAMS_PER_CONNECTION` sizes per-peer budgets by it.
            max_streams_per_connection: 100,
            // Shorter than the server's `server_idle_timeout` even at 2×, so the
            // client lets an idle connection go before the server does.
            pool_idle_timeout: Duration::from_secs(30),
            max_connection_age: Some(Duration::from_secs(60 * 60)),
            max_connection_streams: None,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(3),
            server_idle_timeout: Duration::from_secs(90),
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Why a tunnel stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// Dialling or the HTTP/2 handshake failed (shared by every request that
    /// waited on the same dial).
    #[error("tunnel connection failed: {0}")]
    Dial(Arc<io::Error>),
    /// The peer answered the CONNECT with a non-200 status.
    #[error("tunnel CONNECT refused with status {0}")]
    Status(http::StatusCode),
    /// The connection or stream failed while opening the stream.
    #[error("tunnel stream failed: {0}")]
    Stream(#[from] h2::Error),
    /// No CONNECT response within the connect timeout.
    #[error("timed out waiting for the CONNECT response")]
    Timeout,
    /// The connection is closed or carries its maximum number of streams.
    #[error("tunnel connection unavailable")]
    Unavailable,
}

impl TunnelError {
    /// The peer's answer, when it refused the CONNECT.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            TunnelError::Status(s) => Some(*s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
