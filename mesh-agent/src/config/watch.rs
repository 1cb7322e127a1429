//! Hot reload of the file source. The parent directories are watched (`notify`), so
//! editors that write a temporary file and rename it over the original are seen;
//! events are debounced, and a slow metadata poll backs up lost events. A reload
//! whose content is unchanged does nothing; an invalid one is logged and counted,
//! and the previous snapshot stays in force.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use prometheus::IntCounter;
use tokio::sync::mpsc;

use super::file::{load, read_bounded};
use crate::state::StateHandle;

const DEBOUNCE: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(500);

/// Watches `paths` and publishes a new snapshot into `handle` after every valid
/// change (within a second). Runs until dropped.
pub async fn watch(paths: Vec<PathBuf>, handle: StateHandle, errors_counter: IntCounter) {
    let paths: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let watcher = start_watcher(&paths, tx);
    let mut rx = watcher.as_ref().map(|_| rx);
    let mut content = content_hash(&paths);
    let mut meta = meta_fingerprint(&paths);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let notified = tokio::select! {
            ev = recv(&mut rx) => {
                if ev.is_none() {
                    tracing::warn!("file watcher stopped; polling the configuration files");
                    rx = None;
                    continue;
                }
                settle(&paths, &mut rx).await;
                true
            }
            _ = tick.tick() => false,
        };
        let m = meta_fingerprint(&paths);
        if !notified && m == meta {
            continue;
        }
        meta = m;
        let c = content_hash(&paths);
        if c == content {
            continue;
        }
        content = c;
        let load_paths = paths.clone();
        match tokio::task::spawn_blocking(move || load(&load_paths)).await {
            Ok(Ok(snapshot)) => {
                let generation = handle.replace(snapshot);
                tracing::info!(generation, "configuration reloaded");
            }
            Ok(Err(errors)) => {
                errors_counter.inc();
                tracing::error!(
                    errors = errors.len(),
                    "configuration rejected, previous state kept:\n{errors}"
                );
            }
            Err(e) => {
                errors_counter.inc();
                tracing::error!("configuration reload failed: {e}");
            }
        }
    }
}

/// Waits until the files stop changing: an in-place write truncates before it
/// writes, and loading in between would apply a half-written (often empty, hence
/// valid) configuration. Bounded, so a file rewritten non-stop is still loaded.
async fn settle(paths: &[PathBuf], rx: &mut Option<mpsc::UnboundedReceiver<()>>) {
    let mut last = content_hash(paths);
    for _ in 0..10 {
        tokio::time::sleep(DEBOUNCE).await;
        if let Some(r) = rx.as_mut() {
            while r.try_recv().is_ok() {}
        }
        let now = content_hash(paths);
        if now == last {
            return;
        }
        last = now;
    }
}

async fn recv(rx: &mut Option<mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn start_watcher(paths: &[PathBuf], tx: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
    let names: Vec<PathBuf> = paths.to_vec();
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev)
            if may_change_content(&ev.kind)
                && ev.paths.iter().any(|p| names.iter().any(|n| n == p)) =>
        {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("file watch error: {e}"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch configuration files ({e}); polling instead");
            return None;
        }
    };
    let mut dirs: Vec<&Path> = paths.iter().filter_map(|p| p.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!("cannot watch {} ({e}); polling instead", d.display());
            return None;
        }
    }
    Some(watcher)
}

/// Whether an event can mean new content. Reads are not: the watcher's own
/// reads of the files raise open/read/close events, and taking those as changes
/// made it re-read its configuration over and over, for ever.
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Hashes what `load` would read (no more: a huge file is not read whole just to
/// be refused) and the length.
fn content_hash(paths: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in paths {
        read_bounded(p).ok().hash(&mut h);
        std::fs::metadata(p).ok().map(|m| m.len()).hash(&mut h);
    }
    h.finish()
}

fn meta_fingerprint(paths: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// The lead spawns `watch` on the multi-threaded runtime: it must stay `Send`.
#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>(_: &T) {}
    let handle = StateHandle::new(crate::state::Snapshot::default());
    let counter = IntCounter::new("x", "x").ok();
    if let Some(c) = counter {
        is_send(&watch(Vec::new(), handle, c));
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RemoveKind};

    use super::*;

    #[test]
    fn reads_are_not_changes() {
        for read in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(!may_change_content(&read), "{read:?}");
        }
        for change in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
        ] {
            assert!(may_change_content(&change), "{change:?}");
        }
    }

    /// The watcher's own reads must not wake it: after start-up it reads the
    /// files only on its slow metadata poll, never in a loop.
    #[tokio::test]
    async fn own_reads_do_not_trigger_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, "").expect("write");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watcher = start_watcher(std::slice::from_ref(&path), tx).expect("watcher");
        // Reading the file, as content_hash does, raises no change event.
        for _ in 0..3 {
            content_hash(std::slice::from_ref(&path));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "a read was taken for a change");
        std::fs::write(&path, "# edited").expect("edit");
        let seen = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(matches!(seen, Ok(Some(()))), "an edit was not seen");
    }
}
