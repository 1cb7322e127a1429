//! The admin HTTP server (docs/architecture.md, "The agent", `127.0.0.1:15000`): `/ready`, `/config_dump`,
//! `/workloads`, `/routes` (route status over the snapshot), `/certs`, `/enrolment_failures`. Built on hyper 1 with a small [`Router`] rather than axum: three
//! read-only JSON endpoints do not need tower's middleware stack, and the proxy
//! already depends on hyper.

pub mod client;
mod failing;
mod router;
mod tap;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hyper::{StatusCode, header::HeaderValue, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use failing::{FailingPod, FailingPods, with_enrolment_failures, with_ready_detail};
pub use router::{Body, HandlerFuture, Router, json, text};
pub use tap::{parse_query as tap_query, with_tap};

use crate::identity::CertManager;
use crate::state::StateHandle;

/// Header carrying the snapshot generation on state endpoints.
pub const GENERATION_HEADER: &str = "x-weft-generation";

/// The kubelet's probes (`:15021`): `/ready` (200 once the agent has its state
/// and has enrolled the node's meshed pods) and `/healthz` (200 while it serves).
pub fn probes_router(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .get("/ready", move |_| {
            let ready = ready.load(Ordering::Acquire);
            async move {
                if ready {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
        })
        .get("/healthz", |_| async { text(StatusCode::OK, "ok\n") })
}

/// The standard endpoints. Add more with [`Router::get`] and serve with [`serve_router`].
pub fn router(handle: StateHandle, ready: Arc<AtomicBool>) -> Router {
    let h1 = handle.clone();
    let h2 = handle.clone();
    let h3 = handle;
    probes_router(ready)
        .get("/config_dump", move |_| {
            let snapshot = h1.current();
            async move { with_generation(json(&*snapshot), snapshot.generation) }
        })
        .get("/workloads", move |_| {
            let snapshot = h2.current();
            async move {
                let list: Vec<&crate::state::Workload> =
                    snapshot.workloads().map(|w| &**w).collect();
                with_generation(json(&list), snapshot.generation)
            }
        })
        .get("/routes", move |_| {
            let snapshot = h3.current();
            async move {
                let routes = crate::status::local::routes(&snapshot);
                with_generation(json(&routes), snapshot.generation)
            }
        })
}

/// Adds `/certs`: the workload certificates the agent holds (empty when the
/// tunnel runs without TLS).
pub fn with_certs(router: Router, certs: Option<Arc<CertManager>>) -> Router {
    router.get("/certs", move |_| {
        let list = certs.as_ref().map(|c| c.list()).unwrap_or_default();
        async move { json(&list) }
    })
}

/// Adds `/refused`: the objects of the cluster the agent refused, with why.
pub fn with_refusals(
    router: Router,
    refusals: Arc<std::sync::RwLock<Vec<crate::config::kube::Refusal>>>,
) -> Router {
    router.get("/refused", move |_| {
        let list = refusals
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        async move { json(&list) }
    })
}

fn with_generation(mut r: hyper::Response<Body>, generation: u64) -> hyper::Response<Body> {
    r.headers_mut()
        .insert(GENERATION_HEADER, HeaderValue::from(generation));
    r
}

/// Serves the standard endpoints on `listener` until an unrecoverable error.
pub async fn serve(
    listener: TcpListener,
    handle: StateHandle,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    serve_router(listener, router(handle, ready)).await
}

/// Serves any router (HTTP/1.1).
pub async fn serve_router(listener: TcpListener, router: Router) -> anyhow::Result<()> {
    let router = Arc::new(router);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin server listening");
    }
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let router = router.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let router = router.clone();
                async move { router.handle(req).await }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("admin connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests;
