//! Bookkeeping of the pods the agent could not enrol: why, how many attempts in
//! a row, and when to try again (exponential backoff, 1 s doubling to 60 s),
//! independent of config changes. Pure: the pod manager passes the time in.
//! See docs/architecture.md, "Enrolment failures".

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGaugeVec, Opts, Registry};

use crate::admin::FailingPod;
use crate::state::WorkloadKey;

pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// The wait after `attempts` failed attempts in a row (`attempts` ≥ 1).
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

#[derive(Clone, Debug, PartialEq)]
struct Failure {
    reason: String,
    attempts: u32,
    next_retry: Instant,
    closed: bool,
}

#[derive(Default)]
pub struct EnrolFailures {
    pods: HashMap<WorkloadKey, Failure>,
}

impl EnrolFailures {
    /// Records a failed attempt; returns the attempts in a row and the wait
    /// before the next one.
    pub fn failed(
        &mut self,
        key: &WorkloadKey,
        reason: String,
        closed: bool,
        now: Instant,
    ) -> (u32, Duration) {
        let attempts = self.pods.get(key).map_or(0, |f| f.attempts) + 1;
        let wait = backoff(attempts);
        self.pods.insert(
            key.clone(),
            Failure {
                reason,
                attempts,
                next_retry: now + wait,
                closed,
            },
        );
        (attempts, wait)
    }

    /// The pod is enrolled: returns how many attempts had failed before.
    pub fn succeeded(&mut self, key: &WorkloadKey) -> u32 {
        self.pods.remove(key).map_or(0, |f| f.attempts)
    }

    /// Forgets a pod's failures: its next attempt is due at once.
    pub fn forget(&mut self, key: &WorkloadKey) {
        self.pods.remove(key);
    }

    /// Whether an attempt is due: the pod never failed, or its wait is over.
    pub fn due(&self, key: &WorkloadKey, now: Instant) -> bool {
        self.pods.get(key).is_none_or(|f| f.next_retry <= now)
    }

    /// Forgets the pods no longer to be enrolled.
    pub fn retain(&mut self, wanted: &HashSet<&WorkloadKey>) {
        self.pods.retain(|k, _| wanted.contains(k));
    }

    /// When the earliest retry is due.
    pub fn next_retry(&self) -> Option<Instant> {
        self.pods.values().map(|f| f.next_retry).min()
    }

    /// Pods failing and held closed by the kernel.
    pub fn closed(&self) -> usize {
        self.pods.values().filter(|f| f.closed).count()
    }

    /// Whether every failing pod is held closed (nothing of it flows unmeshed).
    pub fn all_closed(&self) -> bool {
        self.pods.values().all(|f| f.closed)
    }

    /// What `status` and `/ready` show, sorted.
    pub fn reports(&self, now: Instant) -> Vec<FailingPod> {
        let mut rows: Vec<FailingPod> = self
            .pods
            .iter()
            .map(|(key, f)| FailingPod {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                reason: f.reason.clone(),
                attempts: f.attempts,
                next_retry_secs: f.next_retry.saturating_duration_since(now).as_secs_f64(),
                closed: f.closed,
            })
            .collect();
        rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        rows
    }
}

/// `weft_enrolment_failures{closed}` (pods failing now; `closed="false"`: not
/// even held closed) and `weft_enrolment_failed_attempts_total`.
pub struct FailureMetrics {
    failing: IntGaugeVec,
    attempts: IntCounter,
}

impl FailureMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let failing = IntGaugeVec::new(
            Opts::new(
                "weft_enrolment_failures",
                "Pods of this node the agent cannot enrol, by whether the kernel holds them closed",
            ),
            &["closed"],
        )?;
        registry.register(Box::new(failing.clone()))?;
        let attempts = IntCounter::new(
            "weft_enrolment_failed_attempts_total",
            "Failed attempts to enrol a pod",
        )?;
        registry.register(Box::new(attempts.clone()))?;
        Ok(FailureMetrics { failing, attempts })
    }

    pub fn set_failing(&self, failures: &EnrolFailures) {
        let closed = failures.closed();
        self.failing.with_label_values(&["true"]).set(closed as i64);
        self.failing
            .with_label_values(&["false"])
            .set((failures.pods.len() - closed) as i64);
    }

    pub fn attempt_failed(&self) {
        self.attempts.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let secs: Vec<u64> = (1..=8).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn a_failing_pod_is_retried_after_its_wait_and_forgotten_once_enrolled() {
        let t0 = Instant::now();
        let mut f = EnrolFailures::default();
        let a = key("a");
        assert!(f.due(&a, t0));
        assert_eq!(f.failed(&a, "busy".into(), true, t0), (1, FIRST_RETRY));
        assert!(!f.due(&a, t0));
        assert!(f.due(&a, t0 + Duration::from_secs(1)));
        assert_eq!(f.next_retry(), Some(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(f.failed(&a, "busy".into(), true, t1).0, 2);
        assert!(!f.due(&a, t1 + Duration::from_millis(1999)));
        assert!(f.due(&a, t1 + Duration::from_secs(2)));
        assert_eq!((f.closed(), f.all_closed()), (1, true));
        let rows = f.reports(t1);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].attempts, rows[0].next_retry_secs), (2, 2.0));
        assert_eq!(f.succeeded(&a), 2);
        assert!(f.due(&a, t1) && f.next_retry().is_none() && f.reports(t1).is_empty());
        f.failed(&a, "busy".into(), true, t1);
        f.forget(&a);
        assert!(f.due(&a, t1));
    }

    #[test]
    fn a_pod_not_held_closed_is_reported_so_and_gone_pods_are_forgotten() {
        let t0 = Instant::now();
        let mut f = EnrolFailures::default();
        let (a, b) = (key("a"), key("b"));
        f.failed(&a, "no netns".into(), false, t0);
        f.failed(&b, "busy".into(), true, t0);
        assert_eq!((f.closed(), f.all_closed()), (1, false));
        assert!(!f.due(&a, t0) && !f.due(&b, t0));
        f.retain(&HashSet::from([&b]));
        assert!(f.due(&a, t0) && !f.due(&b, t0));
        assert!(f.all_closed());
    }
}
