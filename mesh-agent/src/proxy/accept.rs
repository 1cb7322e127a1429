//! The accept loop every listener shares: stop on the pod's listener token,
//! admit each connection under a budget (the pod's connection cap, or the
//! tunnel's handshake budget), spawn one task per connection.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::pod::{ConnectionPermit, PodConnections};
use crate::telemetry::{Metrics, RefuseReason};

/// At most one refusal warning per listener this often: peers trigger them.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub(super) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    pod: PodConnections,
    metrics: &Metrics,
    what: &'static str,
    handle: F,
) where
    F: FnMut(TcpStream, SocketAddr, ConnectionPermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept_loop_with(
        listener,
        pod,
        metrics,
        what,
        |pod, _| pod.try_acquire(),
        handle,
    )
    .await;
}

/// As `accept_loop`, with `admit` deciding the budget a connection takes;
/// `None` refuses it (counted as `RefuseReason::Limit`, reset at once).
pub(super) async fn accept_loop_with<A, P, F, Fut>(
    listener: TcpListener,
    pod: PodConnections,
    metrics: &Metrics,
    what: &'static str,
    admit: A,
    mut handle: F,
) where
    A: Fn(&PodConnections, SocketAddr) -> Option<P>,
    F: FnMut(TcpStream, SocketAddr, P) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut last_warning: Option<Instant> = None;
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
        let Some(permit) = admit(&pod, peer) else {
            metrics.refused(RefuseReason::Limit);
            if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                last_warning = Some(Instant::now());
                warn!(pod = pod.name(), what, %peer, "connection limit reached, refusing (logged once per 10 s)");
            } else {
                debug!(pod = pod.name(), what, %peer, "connection limit reached, refusing");
            }
            super::reset(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(handle(stream, peer, permit));
    }
    debug!(pod = pod.name(), what, "listener stopped");
}
