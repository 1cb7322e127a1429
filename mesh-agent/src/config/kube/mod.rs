//! The cluster source: the API server is the control plane (docs/architecture.md,
//! "The cluster source"). One kube-rs watcher per kind feeds a [`Cache`]; after
//! every change (debounced) the accepted objects are built into a snapshot and
//! published to the same [`StateHandle`] the file source feeds.
//!
//! - Watch errors are retried with kube-rs's default backoff (0.8 s doubling to
//!   30 s, jittered); a `410 Gone` makes the watcher relist, and a relist is
//!   swapped in whole ([`mirror`]). A `410` restarts the backoff ([`backoff`]).
//!   Bookmarks are requested (kube-rs default).
//! - While the API server is unreachable nothing is published: the last good
//!   snapshot, and so the data path, stays as it is. Reconnecting relists.
//! - Routes, ReferenceGrants and policies get per-object verdicts ([`checked`]): an invalid one is
//!   refused alone, logged, counted in `weft_config_rejected_total{kind}` and
//!   listed by `mesh-agent status`.
//! - A kind the cluster does not serve (Gateway API CRDs not installed) counts as
//!   empty, with a warning, so it does not hold readiness back.

mod cache;
pub mod checked;
mod mirror;
mod trim;

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

pub use cache::Cache;
pub use checked::Refusal;
use checked::{Kept, check};
use mirror::Mirror;

use crate::state::{self, StateHandle};
use crate::telemetry::Metrics;

/// Changes closer together than this are published as one snapshot.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The kinds checked object by object: (group, version, kind).
const CHECKED_KINDS: [(&str, &str, &str); 5] = [
    ("gateway.networking.k8s.io", "v1", "HTTPRoute"),
    ("gateway.networking.k8s.io", "v1", "GRPCRoute"),
    ("gateway.networking.k8s.io", "v1beta1", "ReferenceGrant"),
    ("weft.dev", "v1alpha1", "AuthorizationPolicy"),
    ("weft.dev", "v1alpha1", "TrafficPolicy"),
];

/// What the rest of the agent sees of the running source.
#[derive(Clone)]
pub struct KubeSource {
    /// Turns `true` once every kind has been listed and the first snapshot built.
    pub synced: watch::Receiver<bool>,
    /// The objects refused at the last build.
    pub refusals: Arc<RwLock<Vec<Refusal>>>,
}

struct Shared {
    cache: Mutex<Cache>,
    changed: Notify,
    node: String,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Cache) -> bool) {
        let changed = f(&mut self.cache.lock().unwrap_or_else(PoisonError::into_inner));
        if changed {
            self.changed.notify_one();
        }
    }
}

/// Starts the watchers and the publisher; they run for the life of the runtime.
pub fn spawn(
    client: Client,
    node: String,
    state: StateHandle,
    metrics: Arc<Metrics>,
) -> KubeSource {
    let shared = Arc::new(Shared {
        cache: Mutex::new(Cache::new(CHECKED_KINDS.len())),
        changed: Notify::new(),
        node,
        metrics,
    });
    let (synced_tx, synced) = watch::channel(false);
    let refusals = Arc::new(RwLock::new(Vec::new()));

    let all = watcher::Config::default();
    spawn_watch(
        Api::<Namespace>::all(client.clone()),
        all.clone(),
        "Namespace",
        &shared,
        |c| &mut c.namespaces,
        |_, ns, _| Some(ns),
    );
    spawn_watch(
        Api::<Pod>::all(client.clone()),
        all.clone(),
        "Pod",
        &shared,
        |c| &mut c.pods,
        |s, pod, _| Some(trim::pod(pod, &s.node)),
    );
    spawn_watch(
        Api::<Service>::all(client.clone()),
        all.clone(),
        "Service",
        &shared,
        |c| &mut c.services,
        |_, s, _| Some(s),
    );
    spawn_watch(
        Api::<EndpointSlice>::all(client.clone()),
        all.clone(),
        "EndpointSlice",
        &shared,
        |c| &mut c.endpoint_slices,
        |_, s, _| Some(s),
    );
    for (i, (group, version, kind)) in CHECKED_KINDS.into_iter().enumerate() {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api_version = resource.api_version.clone();
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        let pick = picker(move |c: &mut Cache| &mut c.checked[i]);
        spawn_watch(
            api,
            all.clone(),
            kind,
            &shared,
            pick,
            move |s: &Shared, obj, previous: Option<&Kept>| {
                let kept = Kept::after(check(kind, &api_version, obj), previous);
                if kept.refusal_is_new(previous)
                    && let Some(r) = &kept.refusal
                {
                    s.metrics.config_rejected().with_label_values(&[kind]).inc();
                    let effect = if r.previous_in_force {
                        "object refused; its last valid version stays in force"
                    } else {
                        "object refused; the rest of the configuration applies"
                    };
                    warn!(resource = %r.resource(), errors = %r.errors.join("; "), "{effect}");
                }
                Some(kept)
            },
        );
    }
    tokio::spawn(publish(shared, state, synced_tx, refusals.clone()));
    KubeSource { synced, refusals }
}

/// One kind's watch loop: events into its mirror, errors logged (the watcher's
/// backoff spaces them out, which also bounds the log rate).
fn spawn_watch<K, T>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    shared: &Arc<Shared>,
    pick: impl for<'a> Fn(&'a mut Cache) -> &'a mut Mirror<T> + Send + 'static,
    store: impl Fn(&Shared, K, Option<&T>) -> Option<T> + Send + 'static,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: Send + 'static,
{
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut stream = backoff(watcher::watcher(api, config).boxed()).boxed();
        let mut absent_warned = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => shared.update(|c| {
                    pick(c).apply(
                        event,
                        |obj, previous| Some((key(&obj), store(&shared, obj, previous)?)),
                        key,
                    )
                }),
                Err(e) if is_not_served(&e) => {
                    if !absent_warned {
                        warn!(
                            kind,
                            "the cluster does not serve this kind (CRD not installed?); treating it as empty"
                        );
                        absent_warned = true;
                    }
                    shared.update(|c| pick(c).mark_absent());
                }
                Err(e) => {
                    warn!(kind, error = %e, "watch failed; the last state stays in force, retrying")
                }
            }
        }
    });
}

/// Ties the closure's output lifetime to its input (closures do not infer it).
fn picker<T>(
    f: impl for<'a> Fn(&'a mut Cache) -> &'a mut Mirror<T>,
) -> impl for<'a> Fn(&'a mut Cache) -> &'a mut Mirror<T> {
    f
}

fn key<K: Resource>(obj: &K) -> String {
    match obj.namespace() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Spaces out a watcher's retries with kube-rs's default backoff (0.8 s
/// doubling to 30 s, plus up to as much again of jitter; every event resets
/// it), except that a `410 Gone` starts it over. The watcher answers a 410 by
/// relisting, and the API server that sent it is up: after an outage the
/// watch that reconnects is usually answered 410 (its resource version is
/// older than the restarted watch cache), and with the backoff left at the
/// outage's delays the relist, and every change since, would wait up to
/// another minute. (client-go's reflector keeps two backoffs for the same
/// reason: one for connecting, one between relists.)
pub fn backoff<S, T>(stream: S) -> impl Stream<Item = watcher::Result<T>> + Send
where
    S: Stream<Item = watcher::Result<T>> + Send + Unpin,
    T: Send,
{
    let start = (stream, DefaultBackoff::default(), None);
    futures_util::stream::unfold(start, |(mut stream, mut backoff, delay)| async move {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let item = stream.next().await?;
        let delay = match &item {
            Ok(_) => {
                backoff.reset();
                None
            }
            Err(e) => Some(retry_delay(&mut backoff, e)),
        };
        Some((item, (stream, backoff, delay)))
    })
}

/// The wait after `error` before the watcher goes on.
fn retry_delay(backoff: &mut impl Backoff, error: &watcher::Error) -> Duration {
    // The watch event path only: kube-rs relists after it. (A 410 answering the
    // watch request itself would be retried from the same resource version.)
    if matches!(error, watcher::Error::WatchError(s) if s.code == 410) {
        backoff.reset();
    }
    // The default backoff never gives up.
    backoff.next().unwrap_or(Duration::from_secs(30))
}

fn is_not_served(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404)
}

/// Builds and publishes a snapshot after each (debounced) change, once every kind
/// has been listed.
async fn publish(
    shared: Arc<Shared>,
    state: StateHandle,
    synced: watch::Sender<bool>,
    refusals: Arc<RwLock<Vec<Refusal>>>,
) {
    loop {
        shared.changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
        let resources = {
            let cache = shared.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.synced().then(|| cache.resources())
        };
        let Some((set, refused)) = resources else {
            continue;
        };
        let pods = set.pods.len();
        let snapshot = match tokio::task::spawn_blocking(move || state::build(&set)).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "building the state failed; the last state stays in force");
                continue;
            }
        };
        let generation = state.replace(snapshot);
        *refusals.write().unwrap_or_else(PoisonError::into_inner) = refused;
        if !*synced.borrow() {
            info!(generation, pods, "cluster state synced");
        }
        synced.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_error(code: u16, reason: &str) -> watcher::Error {
        watcher::Error::WatchError(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            ..Default::default()
        }))
    }

    /// Six failures in a row (an API server away for 30 s or so).
    fn after_an_outage() -> DefaultBackoff {
        let mut backoff = DefaultBackoff::default();
        let down = watcher::Error::NoResourceVersion;
        let delays: Vec<Duration> = (0..6).map(|_| retry_delay(&mut backoff, &down)).collect();
        assert!(delays[0] < Duration::from_millis(1600), "{delays:?}");
        assert!(delays[5] >= Duration::from_millis(25_600), "{delays:?}");
        backoff
    }

    #[test]
    fn a_410_starts_the_backoff_over() {
        let mut backoff = after_an_outage();
        let relist = retry_delay(&mut backoff, &watch_error(410, "Expired"));
        assert!(relist < Duration::from_millis(1600), "{relist:?}");
    }

    #[test]
    fn other_errors_keep_backing_off() {
        let mut backoff = after_an_outage();
        let next = retry_delay(&mut backoff, &watch_error(500, "InternalError"));
        assert!(next >= Duration::from_secs(30), "{next:?}");
    }
}
