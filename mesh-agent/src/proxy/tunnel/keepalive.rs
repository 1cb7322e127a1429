//! HTTP/2 PING keepalive: notices a peer that vanished without closing (node
//! crash, dropped path), so the pool stops handing out a dead connection and a
//! server stops holding streams for it.

use std::time::Duration;

use h2::{Ping, PingPong};
use tracing::{debug, warn};

/// Completes when the peer failed to answer a PING within `timeout`; never
/// completes when keepalive is off (`interval` is `None`) or unavailable.
pub(super) async fn keepalive(
    ping: Option<PingPong>,
    interval: Option<Duration>,
    timeout: Duration,
) {
    let (Some(mut ping), Some(interval)) = (ping, interval) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => {
                // The connection is failing anyway; its driver reports why.
                debug!(error = %e, "tunnel PING failed");
                return std::future::pending().await;
            }
            Err(_) => {
                warn!(
                    ?timeout,
                    "tunnel peer did not answer PING, closing the connection"
                );
                return;
            }
        }
    }
}
