//! The shared, atomically swapped current snapshot.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::Snapshot;

/// A clone-able handle on the current snapshot. Readers never block.
#[derive(Clone)]
pub struct StateHandle {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<Snapshot>,
    /// The last generation published; held while publishing so that snapshots
    /// are stored in generation order.
    last_generation: Mutex<u64>,
    notify: watch::Sender<u64>,
}

impl StateHandle {
    /// Publishes `initial` as generation 1.
    pub fn new(mut initial: Snapshot) -> Self {
        initial.generation = 1;
        let (notify, _) = watch::channel(1);
        StateHandle {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(initial),
                last_generation: Mutex::new(1),
                notify,
            }),
        }
    }

    /// The current snapshot (lock-free).
    pub fn current(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Publishes `snapshot` under the next generation number and returns it.
    pub fn replace(&self, mut snapshot: Snapshot) -> u64 {
        let mut last = self
            .inner
            .last_generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *last += 1;
        let generation = *last;
        snapshot.generation = generation;
        self.inner.current.store(Arc::new(snapshot));
        self.inner.notify.send_replace(generation);
        generation
    }

    /// Notified with the generation of each newly published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.notify.subscribe()
    }
}

impl std::fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateHandle")
            .field("generation", &self.current().generation)
            .finish()
    }
}
