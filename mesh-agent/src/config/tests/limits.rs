//! Size limits of the file source (docs/config.md, "Limits"): a file that would
//! expand past them is refused quickly, with the file, the line and the limit, and
//! a running watcher keeps its last good state without growing.

use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::{
    config::{
        file::{MAX_FILE_BYTES, load, load_resources, watch},
        yaml::tests::billion_laughs,
    },
    state::StateHandle,
};

const GOOD: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {weft.dev/mesh: enabled}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: shop}\nspec: {nodeName: node-a, containers: []}\nstatus: {podIP: 10.88.1.1}\n";

/// Peak resident set of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn billion_laughs_file_is_refused_with_file_line_and_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("laughs.yaml");
    std::fs::write(&path, billion_laughs(9)).expect("write");
    let start = Instant::now();
    let errors = load_resources(std::slice::from_ref(&path)).expect_err("refused");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(errors.len(), 1, "{errors}");
    let text = errors.to_string();
    assert!(text.contains("laughs.yaml:"), "{text}");
    assert!(
        text.contains("YAML too large: expands to more than 1000000 nodes"),
        "{text}"
    );
    assert!(text.contains("use fewer aliases"), "{text}");
}

#[test]
fn oversized_file_is_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge.yaml");
    // Sparse: 1 GiB of NULs that take no disk, and must not be read into memory.
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(1 << 30))
        .expect("sparse file");
    let errors = load_resources(std::slice::from_ref(&path)).expect_err("refused");
    let text = errors.to_string();
    assert!(
        text.contains(&format!(
            "huge.yaml: larger than {} MiB",
            MAX_FILE_BYTES >> 20
        )),
        "{text}"
    );
    // Just under the limit is read (and here refused for what it holds, not its size).
    std::fs::write(
        &path,
        format!("{GOOD}#{}\n", "x".repeat(MAX_FILE_BYTES - GOOD.len() - 2)),
    )
    .expect("write");
    load_resources(std::slice::from_ref(&path)).expect("at the limit is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_keeps_last_good_state_and_stays_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, GOOD).expect("write");
    let handle = StateHandle::new(load(std::slice::from_ref(&path)).expect("valid"));
    let good = handle.current().generation;
    let counter = IntCounter::new("weft_config_errors_total", "test").expect("counter");
    let task = tokio::spawn(watch(vec![path.clone()], handle.clone(), counter.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let before = peak_rss_kib();
    std::fs::write(&path, billion_laughs(9)).expect("write");
    let deadline = Instant::now() + Duration::from_secs(3);
    while counter.get() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert_eq!(counter.get(), 1, "the file was not refused within 3 s");
    assert_eq!(handle.current().generation, good);
    assert_eq!(handle.current().workloads().count(), 1);
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 128 * 1024, "peak RSS grew by {grown} KiB");
}
