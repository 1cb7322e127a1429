//! Hot reload under a running watcher: valid edits apply within a second, invalid
//! ones change nothing and are counted.

use std::{path::Path, time::Duration};

use prometheus::IntCounter;

use crate::{
    config::file::{load, watch},
    state::StateHandle,
};

const BASE: &str =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {weft.dev/mesh: enabled}}\n";

fn pods(n: usize) -> String {
    (1..=n)
        .map(|i| format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: shop}}\nspec: {{nodeName: node-a, containers: []}}\nstatus: {{podIP: 10.88.1.{i}}}\n"))
        .collect()
}

/// Writes like an editor that saves to a temporary file and renames it over.
fn replace_by_rename(path: &Path, content: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, content).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Waits until the published state holds `want` workloads: the edit is in force.
async fn wait_workloads(
    handle: &StateHandle,
    rx: &mut tokio::sync::watch::Receiver<u64>,
    want: usize,
) -> Duration {
    let start = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(1), async {
        while handle.current().workloads().count() != want {
            if rx.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "{want} workloads not in force within 1 s (generation {})",
        handle.current().generation
    );
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_within_a_second_and_invalid_ones_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, format!("{BASE}{}", pods(1))).expect("write");
    let handle = StateHandle::new(load(std::slice::from_ref(&path)).expect("valid"));
    let counter = IntCounter::new("weft_config_errors_total", "test").expect("counter");
    let task = tokio::spawn(watch(vec![path.clone()], handle.clone(), counter.clone()));
    let mut rx = handle.subscribe();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A valid in-place edit.
    std::fs::write(&path, format!("{BASE}{}", pods(2))).expect("write");
    wait_workloads(&handle, &mut rx, 2).await;

    // A valid edit by rename.
    replace_by_rename(&path, &format!("{BASE}{}", pods(3)));
    wait_workloads(&handle, &mut rx, 3).await;
    let good = handle.current().generation;

    // An invalid edit: two pods on one IP. Nothing changes; the error is counted.
    let bad = format!("{BASE}{}", pods(3)).replace("10.88.1.3", "10.88.1.1");
    std::fs::write(&path, bad).expect("write");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(counter.get(), 1);
    assert_eq!(handle.current().generation, good);
    assert_eq!(handle.current().workloads().count(), 3);

    // A YAML syntax error: counted too, still nothing changes.
    replace_by_rename(&path, "apiVersion: v1\nkind: [\n");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(counter.get(), 2);
    assert_eq!(handle.current().generation, good);

    // Fixing it applies again.
    std::fs::write(&path, format!("{BASE}{}", pods(4))).expect("write");
    wait_workloads(&handle, &mut rx, 4).await;
    task.abort();
}
