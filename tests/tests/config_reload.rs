//! Editing the configuration under a running agent (issue 3): a valid edit is in
//! force within a second; an invalid one changes nothing, is logged with the
//! resource and field, and counted in `weft_config_errors_total`.

use std::time::Duration;

use anyhow::Result;
use lab::{MeshLab, metric_sum};

#[test]
fn valid_edits_apply_within_a_second_and_invalid_ones_change_nothing() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let first = mesh.generation("node-a")?;

    // A valid edit: a new label on a pod.
    mesh.config
        .set_label("Pod", "shop", "frontend-7d9f-a", "tier", Some("web"))?;
    mesh.config.save()?;
    let took = mesh.wait_for_generation(first + 1, Duration::from_secs(1))?;
    eprintln!("valid edit in force after {took:?}");

    // An invalid edit: an opt-out label with a value Weft does not know.
    let from = mesh.agent("node-a")?.log_len();
    mesh.config.set_label(
        "Pod",
        "shop",
        "frontend-7d9f-a",
        "weft.dev/mesh",
        Some("maybe"),
    )?;
    mesh.config.save()?;
    mesh.agent("node-a")?
        .wait_for_log("Pod shop/frontend-7d9f-a", from, Duration::from_secs(3))?;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        mesh.generation("node-a")?,
        first + 1,
        "the invalid edit changed nothing"
    );
    let log = mesh.agent("node-a")?.log();
    assert!(
        log.contains("metadata.labels.weft.dev/mesh"),
        "the error names the field:\n{log}"
    );
    assert_eq!(
        metric_sum(&mesh.metrics("node-a")?, "weft_config_errors_total", &[]),
        1.0,
        "counted once"
    );

    // Still serving: traffic flows under the last good state.
    mesh.ping("frontend-7d9f-a", "10.96.1.10:443")?;
    Ok(())
}
