//! `cargo xtask test`: what CI runs, set-up included.

use anyhow::{Result, bail};

use crate::{cargo, setup, step};

pub fn run() -> Result<()> {
    setup::run()?;
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "cargo clippy (warnings are errors)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // Offline schema check of the install (the API server's dry run is in the
    // Kubernetes tier of the tests).
    let kubectl = lab::kube::bin_dir()?.join("kubectl");
    step(
        "kubernetes-validate: manifests/ against Kubernetes 1.37's schemas",
        std::process::Command::new("bash")
            .arg("manifests/validate.sh")
            .env("KUBECTL", kubectl),
    )?;
    // The end-to-end tests run the binaries that this build leaves in target/.
    step(
        "build the agent and the lab's tools",
        cargo().args(["build", "--workspace", "--bins"]),
    )?;
    crate::remove_lab_leftovers()?;
    step(
        "cargo test (unit and end-to-end)",
        cargo().args(["test", "--workspace"]),
    )?;
    // A short run of every fuzz target from the committed seeds (the long runs
    // are `cargo xtask fuzz --seconds N`).
    crate::fuzz::run_targets(crate::fuzz::TARGETS, 30, crate::fuzz::Build::Dev)?;
    let left = lab::leftovers();
    if !left.is_empty() {
        bail!("the test suite left lab objects behind: {left:?}");
    }
    step(
        "nothing left behind: no lab namespace, cgroup, mount or Weft BPF program",
        cargo().args([
            "test",
            "-p",
            "mesh-tests",
            "--test",
            "leftovers",
            "--",
            "--ignored",
        ]),
    )?;
    Ok(())
}
