//! Pods whose enrolment is failing, as the pod manager last saw them: written
//! after each reconcile, read by `/ready` (its detail) and `/enrolment_failures`
//! (`mesh-agent status`). A failing pod is enrolled closed where the kernel
//! allows it (docs/architecture.md, "Enrolment failures").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use hyper::StatusCode;

use super::{Router, json, text};

/// One pod the agent could not enrol.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FailingPod {
    pub namespace: String,
    pub name: String,
    /// The last attempt's error.
    pub reason: String,
    /// Failed attempts in a row.
    pub attempts: u32,
    /// Seconds until the next attempt.
    pub next_retry_secs: f64,
    /// Whether the kernel holds the pod closed (inbound dropped, outbound
    /// refused); `false`: the closed enrolment failed too.
    pub closed: bool,
}

/// The shared list (cheap to clone).
#[derive(Clone, Default)]
pub struct FailingPods(Arc<RwLock<Vec<FailingPod>>>);

impl FailingPods {
    pub fn set(&self, pods: Vec<FailingPod>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = pods;
    }

    pub fn get(&self) -> Vec<FailingPod> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The readiness body: the verdict, then one line per failing pod. A pod that
/// fails closed does not make the agent unready (it is safe: nothing of it
/// flows unmeshed), but the detail says so.
pub fn ready_body(ready: bool, failing: &[FailingPod]) -> String {
    let mut out = if ready { "ready\n" } else { "not ready\n" }.to_owned();
    for p in failing {
        out.push_str(&format!(
            "enrolment failing{}: {}/{}: {} (attempt {}, next in {:.0} s)\n",
            if p.closed { " (closed)" } else { "" },
            p.namespace,
            p.name,
            p.reason,
            p.attempts,
            p.next_retry_secs
        ));
    }
    out
}

/// Replaces `/ready` by one with the failing pods in its body (the probes'
/// port and the admin port both serve it).
pub fn with_ready_detail(router: Router, ready: Arc<AtomicBool>, failing: FailingPods) -> Router {
    router.get("/ready", move |_| {
        let ready = ready.load(Ordering::Acquire);
        let body = ready_body(ready, &failing.get());
        async move {
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, &body)
        }
    })
}

/// Adds `/enrolment_failures`: the failing pods as JSON (`mesh-agent status`).
pub fn with_enrolment_failures(router: Router, failing: FailingPods) -> Router {
    router.get("/enrolment_failures", move |_| {
        let pods = failing.get();
        async move { json(&pods) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_body_names_failing_pods() {
        let pod = FailingPod {
            namespace: "payments".into(),
            name: "p-1".into(),
            reason: "listen on 0.0.0.0:15006: address in use".into(),
            attempts: 3,
            next_retry_secs: 4.0,
            closed: true,
        };
        assert_eq!(ready_body(true, &[]), "ready\n");
        assert_eq!(
            ready_body(true, &[pod]),
            "ready\nenrolment failing (closed): payments/p-1: listen on 0.0.0.0:15006: address in use (attempt 3, next in 4 s)\n"
        );
    }
}
