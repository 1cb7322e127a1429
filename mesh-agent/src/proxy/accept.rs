//! The accept loop every listener shares: stop on the pod's listener token,
//! enforce the pod's connection cap, spawn one task per connection.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::pod::{ConnectionPermit, PodConnections};
use crate::telemetry::{Metrics, RefuseReason};

pub(super) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    pod: PodConnections,
    metrics: &Metrics,
    what: &'static str,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr, ConnectionPermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = pod.listeners_token().cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically out of descriptors: back off instead of spinning.
                warn!(pod = pod.name(), what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = pod.try_acquire() else {
            metrics.refused(RefuseReason::Limit);
            warn!(pod = pod.name(), what, %peer, "connection limit reached, refusing");
            super::reset(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(handle(stream, peer, permit));
    }
    debug!(pod = pod.name(), what, "listener stopped");
}
