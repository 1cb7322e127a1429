//! The status writer: while this replica leads, kube-rs watchers on the routes,
//! the policies, the Services and the ReferenceGrants feed the [`World`]; after each change
//! (debounced) the objects it marks are queued, and each is patched when its
//! computed status differs from the one it has, at most [`WRITES_PER_SECOND`].
//! Losing the lead drops the watchers and everything learnt from them.
//!
//! A write is a JSON merge patch of `status` (field manager `weft-ca`) carrying
//! the `resourceVersion` the status was computed from: if the object changed
//! since, the API server answers `409 Conflict`, and the watch brings the new
//! version, which is computed again. Other failures are retried after
//! [`RETRY_AFTER`]; their log lines are rate limited.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::FIELD_MANAGER;
use super::conditions::time;
use super::facts::GRANT_KIND;
use super::rate::RateLimit;
use super::world::{Kind, StatusPatch, Target, Update, World};
use crate::identity::ca_server::limit::LogLimiter;

/// Changes closer together than this are looked at together.
const DEBOUNCE: Duration = Duration::from_millis(100);
pub const WRITES_PER_SECOND: u32 = 20;
const WRITE_BURST: u32 = 50;
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// One log line per failure class per this long.
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// Writes status while `leader` says so, until the sender is dropped.
pub async fn run(client: Client, mut leader: watch::Receiver<bool>) {
    loop {
        if leader.wait_for(|leading| *leading).await.is_err() {
            return;
        }
        tokio::select! {
            () = lead(client.clone()) => {}
            lost = leader.wait_for(|leading| !*leading) => {
                if lost.is_err() {
                    return;
                }
            }
        }
        info!("status writer stopped: not the leader");
    }
}

/// The work of one term as leader.
async fn lead(client: Client) {
    let mut world = World::default();
    let mut updates = updates(&client);
    let mut queue = Queue::new(Instant::now());
    let errors = LogLimiter::new(LOG_WINDOW);
    let mut flush_at: Option<Instant> = None;
    let mut first = true;
    loop {
        let write_at = queue.ready_at(Instant::now());
        tokio::select! {
            update = updates.next() => {
                let Some(update) = update else { return };
                world.apply(update);
                if world.has_dirty() && flush_at.is_none() {
                    flush_at = Some(Instant::now() + DEBOUNCE);
                }
            }
            () = sleep(flush_at), if world.synced() => {
                flush_at = None;
                if first {
                    let [http, grpc, authz, traffic] = world.counts();
                    info!(http_routes = http, grpc_routes = grpc, authorization_policies = authz, traffic_policies = traffic, "status writer synced; writing what differs");
                    first = false;
                }
                queue.extend(world.take_dirty());
            }
            () = sleep(queue.retry_at) => {
                for target in queue.take_retries() {
                    world.mark_dirty(target);
                }
                flush_at.get_or_insert_with(Instant::now);
            }
            () = sleep(write_at) => {
                let Some(target) = queue.pop() else { continue };
                let patch = match world.patch(&target, &time(SystemTime::now())) {
                    Ok(Some(patch)) => patch,
                    Ok(None) => {
                        queue.written.remove(&target);
                        continue;
                    }
                    Err(e) => {
                        warn!(kind = ?target.0, object = %target.1, error = %e, "cannot compute status");
                        continue;
                    }
                };
                if queue.written.get(&target) == Some(&patch.body) {
                    continue; // already sent; the watch has not shown it yet
                }
                queue.limit.take(Instant::now());
                match write(&client, target.0, &patch).await {
                    Ok(Written::Done) => {
                        debug!(kind = ?target.0, object = %target.1, "status written");
                        queue.written.insert(target, patch.body);
                    }
                    Ok(Written::Stale) => {
                        debug!(kind = ?target.0, object = %target.1, "object changed or deleted since read; the watch brings it");
                    }
                    Err(failure) => {
                        if failure.retry {
                            queue.retry_later(target.clone(), Instant::now() + RETRY_AFTER);
                        }
                        if let Some(left_out) = errors.admit(&failure.class, Instant::now()) {
                            warn!(kind = ?target.0, object = %target.1, error = %failure.message, retry = failure.retry, similar_left_out = left_out, "cannot write status");
                        }
                    }
                }
            }
        }
    }
}

async fn sleep(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The objects to look at, in order, each once; what was last written to each;
/// the failed ones, to look at again.
struct Queue {
    order: VecDeque<Target>,
    queued: HashSet<Target>,
    written: HashMap<Target, Value>,
    limit: RateLimit,
    retries: Vec<Target>,
    retry_at: Option<Instant>,
}

impl Queue {
    fn new(now: Instant) -> Self {
        Queue {
            order: VecDeque::new(),
            queued: HashSet::new(),
            written: HashMap::new(),
            limit: RateLimit::new(WRITES_PER_SECOND, WRITE_BURST, now),
            retries: Vec::new(),
            retry_at: None,
        }
    }

    fn retry_later(&mut self, target: Target, at: Instant) {
        self.retries.push(target);
        self.retry_at.get_or_insert(at);
    }

    fn take_retries(&mut self) -> Vec<Target> {
        self.retry_at = None;
        std::mem::take(&mut self.retries)
    }

    fn extend(&mut self, targets: Vec<Target>) {
        for t in targets {
            if self.queued.insert(t.clone()) {
                self.order.push_back(t);
            }
        }
    }

    fn pop(&mut self) -> Option<Target> {
        let t = self.order.pop_front()?;
        self.queued.remove(&t);
        Some(t)
    }

    fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        (!self.order.is_empty()).then(|| self.limit.ready_at(now))
    }
}

enum Written {
    Done,
    /// The object changed since its status was computed, or is gone.
    Stale,
}

/// A failed write: whether to try again, and its class for log limiting.
struct Failure {
    retry: bool,
    class: String,
    message: String,
}

async fn write(client: &Client, kind: Kind, patch: &StatusPatch) -> Result<Written, Failure> {
    let resource = ApiResource::from_gvk(&kind.gvk());
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), &patch.namespace, &resource);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    let merge = Patch::Merge(&patch.body);
    let sent = api.patch_status(&patch.name, &params, &merge);
    match tokio::time::timeout(WRITE_TIMEOUT, sent).await {
        Ok(Ok(_)) => Ok(Written::Done),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 || s.code == 404 => Ok(Written::Stale),
        Ok(Err(kube::Error::Api(s))) => Err(Failure {
            // 422: the API server refuses what we computed; it would again.
            retry: s.code != 422,
            class: format!("{}", s.code),
            message: s.message.clone(),
        }),
        Ok(Err(e)) => Err(Failure {
            retry: true,
            class: "transport".into(),
            message: e.to_string(),
        }),
        Err(_) => Err(Failure {
            retry: true,
            class: "timeout".into(),
            message: format!("no answer within {WRITE_TIMEOUT:?}"),
        }),
    }
}

/// Every watcher's reports, as one stream.
fn updates(client: &Client) -> BoxStream<'static, Update> {
    let mut streams: Vec<BoxStream<'static, Update>> = Vec::new();
    for kind in Kind::ALL {
        let resource = ApiResource::from_gvk(&kind.gvk());
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        let mut warned = false;
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .filter_map(move |item| {
                let update = match item {
                    Ok(event) => Some(Update::Object(kind, event)),
                    Err(e) if is_not_served(&e) => {
                        if !warned {
                            warn!(kind = %kind.gvk().kind, "the cluster does not serve this kind (CRD not installed?); no status for it");
                            warned = true;
                        }
                        Some(Update::Absent(kind))
                    }
                    Err(e) => {
                        warn!(kind = %kind.gvk().kind, error = %e, "status writer's watch failed; retrying");
                        None
                    }
                };
                std::future::ready(update)
            });
        streams.push(events.boxed());
    }
    let services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(|item| {
        std::future::ready(match item {
            Ok(event) => Some(Update::Service(event)),
            Err(e) => {
                warn!(kind = "Service", error = %e, "status writer's watch failed; retrying");
                None
            }
        })
    });
    streams.push(services.boxed());
    streams.push(grants(client));
    stream::select_all(streams).boxed()
}

/// ReferenceGrants decide `RefNotPermitted`; a cluster without the CRD has none.
fn grants(client: &Client) -> BoxStream<'static, Update> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1beta1", GRANT_KIND);
    let api = Api::<DynamicObject>::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    let mut warned = false;
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |item| {
            std::future::ready(match item {
                Ok(event) => Some(Update::Grant(event)),
                Err(e) if is_not_served(&e) => {
                    if !warned {
                        warn!(kind = GRANT_KIND, "the cluster does not serve this kind (CRD not installed?); no cross-namespace backend is permitted");
                        warned = true;
                    }
                    Some(Update::GrantsAbsent)
                }
                Err(e) => {
                    warn!(kind = GRANT_KIND, error = %e, "status writer's watch failed; retrying");
                    None
                }
            })
        })
        .boxed()
}

fn is_not_served(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404)
}
