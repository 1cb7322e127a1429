//! Route and policy status, written by the CA Deployment's elected leader so
//! that `kubectl get` shows whether an object took effect (agents never write).
//!
//! - [`leader`]: leader election with the Lease `weft-ca-status` in the CA's
//!   namespace (15 s leases, renewed every 5 s);
//! - [`routes`], [`policies`]: the status of one object (pure), from the
//!   [`facts`] read off it (the agents' own verdict, its references);
//! - [`local`]: the same route verdicts over an agent's own snapshot, for
//!   `mesh-agent routes`;
//! - [`world`]: the watched objects and Services, and which statuses to look
//!   at again after a change (pure); [`store`] one kind's objects;
//! - [`writer`]: while leading, the watchers and the rate-limited writes
//!   ([`rate`]).
//!
//! It runs beside the CA's serving path and never stops it: every failure here
//! is logged and retried.

pub mod conditions;
pub mod facts;
pub mod leader;
pub mod local;
pub mod policies;
pub mod rate;
pub mod routes;
pub mod store;
pub mod world;
pub mod writer;

use std::time::Duration;

use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use leader::LeaseOptions;
pub use routes::CONTROLLER_NAME;

/// The field manager of every write (Lease and status), as the CA's other writes.
pub const FIELD_MANAGER: &str = "weft-ca";
/// The Lease the CA replicas elect the status writer with.
pub const DEFAULT_LEASE: &str = "weft-ca-status";
/// How long [`StatusTask::stop`] waits for the Lease to be released.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What `ca serve --write-status` is told.
#[derive(Clone, Debug)]
pub struct StatusOptions {
    /// This replica in the Lease: the pod name.
    pub identity: String,
    /// The Lease's namespace (the CA's) and name.
    pub namespace: String,
    pub lease: String,
}

/// The running election and writer.
pub struct StatusTask {
    stop: CancellationToken,
    election: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// Starts the election; the writer works while this replica leads.
pub fn spawn(client: Client, opts: &StatusOptions) -> StatusTask {
    let stop = CancellationToken::new();
    let lease = LeaseOptions::new(&opts.namespace, &opts.lease, &opts.identity);
    tracing::info!(lease = %format!("{}/{}", opts.namespace, opts.lease), identity = %opts.identity, "route and policy status: electing a writer");
    let (leading, election) = leader::spawn(client.clone(), lease, stop.clone());
    let writer = tokio::spawn(writer::run(client, leading));
    StatusTask {
        stop,
        election,
        writer,
    }
}

impl StatusTask {
    /// Stops writing and frees the Lease if held, so that another replica
    /// takes over at once (bounded: a shutdown does not wait on the API server).
    pub async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_TIMEOUT, self.election)
            .await
            .is_err()
        {
            tracing::warn!("status Lease not released in time");
        }
        self.writer.abort();
    }
}
