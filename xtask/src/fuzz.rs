//! `cargo xtask fuzz`: runs the fuzz targets of `fuzz/` (cargo-fuzz on rustup
//! nightly; its own workspace) against the committed seeds in
//! `fuzz/corpus/<target>/`. What the run finds is kept in
//! `fuzz/target/corpus/<target>/` (not committed); a crash is written to
//! `fuzz/artifacts/<target>/` and fails the run.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::{step, workspace_root};

/// One per untrusted parser (docs/security.md).
pub const TARGETS: &[&str] = &["config_yaml", "tunnel_connect"];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Run only this target (default: each in turn).
    #[arg(long)]
    target: Option<String>,
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Build without optimizations (builds in a fraction of the time, runs
    /// slower): what the short run in `cargo xtask test` uses.
    #[arg(long)]
    dev: bool,
}

/// How the targets are built.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Optimized, one codegen unit: for long runs.
    Release,
    /// Unoptimized: for the short run in CI.
    Dev,
}

/// Installs what fuzzing needs, only if missing: rustup's nightly toolchain and
/// cargo-fuzz.
pub fn tools() -> Result<()> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "cargo", "--version"])) {
        step(
            "install the rustup nightly toolchain (for cargo fuzz)",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    if !succeeds(nightly_cargo().args(["fuzz", "--version"])) {
        step(
            "install cargo-fuzz",
            crate::cargo().args(["install", "--locked", "cargo-fuzz"]),
        )?;
    }
    Ok(())
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let targets: Vec<&str> = match args.target.as_deref() {
        None => TARGETS.to_vec(),
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!(
            "no fuzz target {t:?}: the targets are {}",
            TARGETS.join(", ")
        ),
    };
    let build = if args.dev { Build::Dev } else { Build::Release };
    run_targets(&targets, args.seconds, build)
}

/// Builds the targets once, then runs each for `seconds`.
pub fn run_targets(targets: &[&str], seconds: u64, build: Build) -> Result<()> {
    tools()?;
    let flags = build_flags(build);
    step(
        "build the fuzz targets (cargo fuzz, nightly)",
        fuzz_cmd().arg("build").args(&flags),
    )?;
    for t in targets {
        let found = Path::new("fuzz/target/corpus").join(t);
        std::fs::create_dir_all(workspace_root().join(&found))?;
        let seeds = Path::new("fuzz/corpus").join(t);
        step(
            &format!("fuzz {t} for {seconds} s"),
            fuzz_cmd()
                .arg("run")
                .args(&flags)
                .arg(t)
                .arg(&found)
                .arg(&seeds)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                // Inputs up to 64 KiB; one input may take 10 s or 2 GiB at most
                // (a hang or unbounded growth is a finding, like a panic).
                .args(["-max_len=65536", "-timeout=10", "-rss_limit_mb=2048"])
                .arg("-print_final_stats=1"),
        )?;
    }
    Ok(())
}

/// The build lives outside the clone (like the Kubernetes binaries) when it
/// can, so a CI run on a fresh clone rebuilds only what changed: the
/// instrumented dependency tree takes many minutes on two cores.
fn build_flags(build: Build) -> Vec<String> {
    let mut flags = vec!["--sanitizer".to_owned(), "none".to_owned()];
    let cache = Path::new("/var/cache/weft/fuzz-target");
    if std::fs::create_dir_all(cache).is_ok() {
        flags.extend(["--target-dir".to_owned(), cache.display().to_string()]);
    }
    if build == Build::Dev {
        flags.push("--dev".to_owned());
    }
    flags
}

fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]);
    // What `cargo xtask` runs under is stable's cargo: do not let it leak in.
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn fuzz_cmd() -> Command {
    let mut cmd = nightly_cargo();
    cmd.args(["fuzz"]);
    // The kernel object is embedded in the agent, and fuzzing never loads it:
    // reuse the one the main build made rather than build it again.
    let object = workspace_root().join("target/bpf/bpfel-unknown-none/release/mesh-ebpf");
    if object.is_file() && std::env::var_os("WEFT_EBPF_OBJECT").is_none() {
        cmd.env("WEFT_EBPF_OBJECT", object);
    }
    cmd
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}
