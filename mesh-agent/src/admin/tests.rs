//! The admin endpoints on 127.0.0.1, port 0.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use crate::{
    admin::{client, serve},
    config::file::load_str,
    state::{Snapshot, StateHandle, Workload},
};

async fn start() -> (
    String,
    StateHandle,
    Arc<AtomicBool>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let snap = load_str("mesh.yaml", include_str!("../../../examples/mesh.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let handle = StateHandle::new(snap);
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(serve(listener, handle.clone(), ready.clone()));
    (addr, handle, ready, task)
}

#[tokio::test]
async fn ready_follows_the_flag() {
    let (addr, _h, ready, task) = start().await;
    assert_eq!(client::get(&addr, "/ready").await.expect("get").status, 503);
    ready.store(true, Ordering::Release);
    assert_eq!(client::get(&addr, "/ready").await.expect("get").status, 200);
    task.abort();
}

#[tokio::test]
async fn config_dump_is_the_snapshot() {
    let (addr, handle, _r, task) = start().await;
    let (dump, generation): (Snapshot, _) =
        client::get_json(&addr, "/config_dump").await.expect("dump");
    assert_eq!(generation, Some(1));
    assert_eq!(dump, *handle.current());
    handle.replace(Snapshot::default());
    let (dump, generation): (Snapshot, _) =
        client::get_json(&addr, "/config_dump").await.expect("dump");
    assert_eq!(generation, Some(2));
    assert_eq!(dump.generation, 2);
    assert_eq!(dump.workloads().count(), 0);
    task.abort();
}

#[tokio::test]
async fn workloads_and_unknown_paths() {
    let (addr, handle, _r, task) = start().await;
    let (list, _): (Vec<Workload>, _) = client::get_json(&addr, "/workloads")
        .await
        .expect("workloads");
    let want: Vec<Workload> = handle
        .current()
        .workloads()
        .map(|w| (**w).clone())
        .collect();
    assert_eq!(list, want);
    let r = client::get(&addr, "/nope").await.expect("get");
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("/config_dump"));
    task.abort();
}

#[tokio::test]
async fn status_table_lists_workloads() {
    let (addr, _h, ready, task) = start().await;
    ready.store(true, Ordering::Release);
    let (list, generation): (Vec<Workload>, _) = client::get_json(&addr, "/workloads")
        .await
        .expect("workloads");
    let table = crate::cli::status::format_status(true, generation, &list);
    assert!(
        table.starts_with("ready: yes\ngeneration: 1\nworkloads: 10 (7 meshed)\n"),
        "{table}"
    );
    assert!(table.contains("shop       frontend-7d9f-a"), "{table}");
    task.abort();
}

#[tokio::test]
async fn routes_are_the_status_verdicts_over_the_current_snapshot() {
    use crate::status::local::{RouteReport, routes};
    let (addr, handle, _r, task) = start().await;
    let (list, generation): (Vec<RouteReport>, _) =
        client::get_json(&addr, "/routes").await.expect("routes");
    assert_eq!(generation, Some(1));
    assert_eq!(list, routes(&handle.current()));
    assert!(!list.is_empty(), "examples/mesh.yaml has routes");
    handle.replace(Snapshot::default());
    let (list, _): (Vec<RouteReport>, _) =
        client::get_json(&addr, "/routes").await.expect("routes");
    assert!(list.is_empty());
    task.abort();
}
