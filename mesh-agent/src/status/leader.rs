//! Leader election with a `coordination.k8s.io/v1` Lease, so that one CA
//! replica writes status. kube-rs 5's runtime has no leader-election helper, so
//! this is client-go's algorithm, small:
//!
//! - every `renew_every` (5 s) each replica reads the Lease; the holder renews
//!   it (`renewTime`), a replica takes it over when it is free (no holder, as a
//!   leaving leader leaves it) or when its record has not changed for the
//!   lease's duration (15 s) *as seen by this replica's clock* (so clock skew
//!   between replicas does not matter);
//! - every write is a create or an update with the `resourceVersion` read: of
//!   two replicas racing, one gets `409 Conflict` and follows;
//! - a leader that could not renew for `renew_deadline` (10 s, under the lease
//!   duration) stops leading before anyone may take over;
//! - on stop, a leader frees the Lease, so the other replica takes over at its
//!   next look instead of after the lease duration.
//!
//! [`Elector`] is the decision (pure); [`spawn`] the loop around the API.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::FIELD_MANAGER;

/// Each API request of the loop gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// A failing loop logs once per this many rounds (a minute at 5 s).
const LOG_EVERY_FAILURES: u32 = 12;

#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    /// This replica: the pod name.
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
    pub renew_deadline: Duration,
}

impl LeaseOptions {
    /// 15 s leases, renewed every 5 s, given up after 10 s without renewal.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseOptions {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// What the elector needs of a Lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub duration_seconds: Option<i32>,
    pub resource_version: Option<String>,
}

impl LeaseView {
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        LeaseView {
            holder: spec.and_then(|s| s.holder_identity.clone()),
            duration_seconds: spec.and_then(|s| s.lease_duration_seconds),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What to do with the Lease this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// There is none: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// It is free or expired: take it.
    TakeOver,
    /// Someone else holds it.
    Follow(String),
}

/// The election's state in one replica. Pure: the caller gives the time.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    duration: Duration,
    renew_deadline: Duration,
    /// Another holder's record (by resource version) and when we first saw it.
    observed: Option<(Option<String>, Instant)>,
    /// When our last successful write was sent.
    renewed_at: Option<Instant>,
}

impl Elector {
    pub fn new(opts: &LeaseOptions) -> Self {
        Elector {
            identity: opts.identity.clone(),
            duration: opts.duration,
            renew_deadline: opts.renew_deadline,
            observed: None,
            renewed_at: None,
        }
    }

    pub fn step(&mut self, lease: Option<&LeaseView>, now: Instant) -> Step {
        let Some(lease) = lease else {
            return Step::Create;
        };
        let holder = match lease.holder.as_deref() {
            None | Some("") => return Step::TakeOver,
            Some(h) if h == self.identity => return Step::Renew,
            Some(h) => h,
        };
        let since = match &self.observed {
            Some((rv, at)) if *rv == lease.resource_version => *at,
            _ => {
                self.observed = Some((lease.resource_version.clone(), now));
                now
            }
        };
        let duration = lease
            .duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(self.duration, Duration::from_secs);
        if now.saturating_duration_since(since) >= duration {
            Step::TakeOver
        } else {
            Step::Follow(holder.to_owned())
        }
    }

    /// Our write (sent at `at`) went through: we hold the Lease.
    pub fn renewed(&mut self, at: Instant) {
        self.renewed_at = Some(at);
        self.observed = None;
    }

    /// Someone else holds the Lease.
    pub fn follow(&mut self) {
        self.renewed_at = None;
    }

    pub fn is_leader(&self, now: Instant) -> bool {
        self.renewed_at
            .is_some_and(|t| now.saturating_duration_since(t) < self.renew_deadline)
    }
}

/// The Lease to write for `step`, from the one read (`None` for `Follow`).
pub fn next_lease(
    step: &Step,
    current: Option<Lease>,
    opts: &LeaseOptions,
    now: SystemTime,
) -> Option<Lease> {
    let time = micro_time(now);
    let seconds = i32::try_from(opts.duration.as_secs()).unwrap_or(i32::MAX);
    match (step, current) {
        (Step::Follow(_), _) => None,
        (Step::Renew, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(time);
            spec.lease_duration_seconds = Some(seconds);
            Some(lease)
        }
        (Step::TakeOver | Step::Create, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = Some(opts.identity.clone());
            spec.acquire_time = Some(time.clone());
            spec.renew_time = Some(time);
            spec.lease_duration_seconds = Some(seconds);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            Some(lease)
        }
        (_, None) => Some(Lease {
            metadata: ObjectMeta {
                name: Some(opts.name.clone()),
                namespace: Some(opts.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(opts.identity.clone()),
                acquire_time: Some(time.clone()),
                renew_time: Some(time),
                lease_duration_seconds: Some(seconds),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        }),
    }
}

fn micro_time(now: SystemTime) -> MicroTime {
    let micros = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    MicroTime(Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Runs the election until `stop`; the receiver says whether we lead now.
pub fn spawn(
    client: Client,
    opts: LeaseOptions,
    stop: CancellationToken,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let api = Api::<Lease>::namespaced(client, &opts.namespace);
    let task = tokio::spawn(run(api, opts, tx, stop));
    (rx, task)
}

async fn run(
    api: Api<Lease>,
    opts: LeaseOptions,
    tx: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut elector = Elector::new(&opts);
    let mut tick = tokio::time::interval(opts.renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        // A leader past its deadline stops before asking again.
        publish(&tx, &opts, elector.is_leader(Instant::now()));
        let round = tokio::time::timeout(REQUEST_TIMEOUT, round(&api, &opts, &mut elector));
        let error = match round.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        match error {
            None => failures = 0,
            Some(error) => {
                if failures.is_multiple_of(LOG_EVERY_FAILURES) {
                    warn!(lease = %opts.name, %error, failures = failures + 1, "cannot read or renew the status Lease; retrying");
                }
                failures = failures.saturating_add(1);
            }
        }
        publish(&tx, &opts, elector.is_leader(Instant::now()));
    }
    if *tx.borrow() {
        publish(&tx, &opts, false);
        match tokio::time::timeout(REQUEST_TIMEOUT, release(&api, &opts)).await {
            Ok(Ok(())) => info!(lease = %opts.name, "status Lease released"),
            Ok(Err(e)) => warn!(lease = %opts.name, error = %e, "cannot release the status Lease"),
            Err(_) => warn!(lease = %opts.name, "cannot release the status Lease: no answer"),
        }
    }
}

fn publish(tx: &watch::Sender<bool>, opts: &LeaseOptions, leading: bool) {
    if *tx.borrow() == leading {
        return;
    }
    if leading {
        info!(lease = %format!("{}/{}", opts.namespace, opts.name), identity = %opts.identity, "elected: this replica writes route and policy status");
    } else {
        info!(lease = %format!("{}/{}", opts.namespace, opts.name), identity = %opts.identity, "no longer the status leader");
    }
    tx.send_replace(leading);
}

async fn round(
    api: &Api<Lease>,
    opts: &LeaseOptions,
    elector: &mut Elector,
) -> Result<(), kube::Error> {
    let sent = Instant::now();
    let lease = api.get_opt(&opts.name).await?;
    let step = elector.step(lease.as_ref().map(LeaseView::of).as_ref(), sent);
    let Some(next) = next_lease(&step, lease, opts, SystemTime::now()) else {
        elector.follow();
        return Ok(());
    };
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    let written = match step {
        Step::Create => api.create(&pp, &next).await,
        _ => api.replace(&opts.name, &pp, &next).await,
    };
    match written {
        Ok(_) => {
            elector.renewed(sent);
            Ok(())
        }
        // Another replica wrote first (created it, or updated it since we read).
        Err(kube::Error::Api(s)) if s.code == 409 => {
            elector.follow();
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Frees the Lease if we still hold it: no holder, a 1 s duration.
async fn release(api: &Api<Lease>, opts: &LeaseOptions) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&opts.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(opts.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(micro_time(SystemTime::now()));
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    api.replace(&opts.name, &pp, &lease).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(identity: &str) -> LeaseOptions {
        LeaseOptions::new("weft-system", "weft-ca-status", identity)
    }

    fn held_by(holder: &str, rv: &str) -> LeaseView {
        LeaseView {
            holder: Some(holder.into()),
            duration_seconds: Some(15),
            resource_version: Some(rv.into()),
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn no_lease_is_created_and_ours_is_renewed() {
        let mut e = Elector::new(&opts("a"));
        let t0 = Instant::now();
        assert_eq!(e.step(None, t0), Step::Create);
        assert_eq!(e.step(Some(&held_by("a", "1")), t0), Step::Renew);
    }

    #[test]
    fn a_free_lease_is_taken_at_once() {
        let mut e = Elector::new(&opts("a"));
        let free = LeaseView {
            holder: None,
            ..held_by("", "3")
        };
        assert_eq!(e.step(Some(&free), Instant::now()), Step::TakeOver);
        assert_eq!(
            e.step(Some(&held_by("", "3")), Instant::now()),
            Step::TakeOver
        );
    }

    #[test]
    fn another_holder_is_followed_while_it_renews_and_replaced_when_it_stops() {
        let mut e = Elector::new(&opts("b"));
        let t0 = Instant::now();
        assert_eq!(
            e.step(Some(&held_by("a", "1")), t0),
            Step::Follow("a".into())
        );
        // Renewed (a new resource version) at 10 s: the clock restarts.
        assert_eq!(
            e.step(Some(&held_by("a", "2")), t0 + 10 * S),
            Step::Follow("a".into())
        );
        assert_eq!(
            e.step(Some(&held_by("a", "2")), t0 + 24 * S),
            Step::Follow("a".into())
        );
        // Unchanged for the lease's 15 s, by our clock: expired.
        assert_eq!(
            e.step(Some(&held_by("a", "2")), t0 + 25 * S),
            Step::TakeOver
        );
    }

    #[test]
    fn the_lease_s_own_duration_counts() {
        let mut e = Elector::new(&opts("b"));
        let t0 = Instant::now();
        let short = LeaseView {
            duration_seconds: Some(1),
            ..held_by("a", "1")
        };
        e.step(Some(&short), t0);
        assert_eq!(e.step(Some(&short), t0 + S), Step::TakeOver);
    }

    #[test]
    fn a_leader_that_cannot_renew_stops_before_the_lease_expires() {
        let mut e = Elector::new(&opts("a"));
        let t0 = Instant::now();
        assert!(!e.is_leader(t0));
        e.renewed(t0);
        assert!(e.is_leader(t0 + 9 * S));
        assert!(
            !e.is_leader(t0 + 10 * S),
            "renew deadline 10 s < lease 15 s"
        );
        e.renewed(t0 + 10 * S);
        assert!(e.is_leader(t0 + 11 * S));
        e.follow();
        assert!(!e.is_leader(t0 + 11 * S), "someone else holds it now");
    }

    #[test]
    fn leases_written_for_each_step() {
        let o = opts("b");
        let now = SystemTime::UNIX_EPOCH + Duration::from_micros(1_500_000);
        let created = next_lease(&Step::Create, None, &o, now).expect("a lease");
        let spec = created.spec.clone().expect("a spec");
        assert_eq!(created.metadata.name.as_deref(), Some("weft-ca-status"));
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(
            (spec.lease_duration_seconds, spec.lease_transitions),
            (Some(15), Some(0))
        );
        assert_eq!(
            serde_json::to_value(spec.renew_time).unwrap(),
            "1970-01-01T00:00:01.500000Z"
        );

        let mut theirs = created.clone();
        theirs.metadata.resource_version = Some("9".into());
        if let Some(s) = theirs.spec.as_mut() {
            s.holder_identity = Some("a".into());
        }
        let taken = next_lease(&Step::TakeOver, Some(theirs.clone()), &o, now).expect("a lease");
        let spec = taken.spec.expect("a spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(
            taken.metadata.resource_version.as_deref(),
            Some("9"),
            "conditional on what was read"
        );

        let renewed = next_lease(&Step::Renew, Some(created), &o, now + S).expect("a lease");
        let spec = renewed.spec.expect("a spec");
        assert_eq!(
            (spec.holder_identity.as_deref(), spec.lease_transitions),
            (Some("b"), Some(0))
        );
        assert_eq!(
            next_lease(&Step::Follow("a".into()), Some(theirs), &o, now),
            None
        );
    }
}
