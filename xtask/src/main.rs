//! `cargo xtask`: the project's own automation. Each subcommand does its own set-up.

mod bench;
mod bench_kube;
mod demo;
mod demo_kube;
mod fuzz;
mod image;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need, only what is missing (idempotent).
    Setup,
    /// Everything CI runs: set-up, format and lint checks, the whole test suite,
    /// and a check that the lab left nothing behind.
    Test,
    /// Build everything and show Weft working in a lab of two nodes.
    Demo {
        /// Weft on a local Kubernetes control plane instead: installed from
        /// manifests/, a namespace opted in, mTLS, `mesh-agent check --kubeconfig`.
        #[arg(long)]
        kube: bool,
    },
    /// Measure the performance budgets (ratios against baselines taken in the same run).
    Bench(bench::BenchArgs),
    /// Build the agent's container image as an OCI archive, without a container engine.
    Image(image::ImageArgs),
    /// Fuzz the untrusted parsers (fuzz/, cargo-fuzz on nightly) from the committed seeds.
    Fuzz(fuzz::FuzzArgs),
    /// The netns lab.
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Remove what a crashed test or demo left behind (namespaces, cgroups, mounts).
    Clean,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Test => test::run(),
        Command::Demo { kube: false } => demo::run(),
        Command::Demo { kube: true } => demo_kube::run(),
        Command::Bench(args) => bench::run(&args),
        Command::Image(args) => image::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Lab {
            command: LabCommand::Clean,
        } => {
            let removed = lab::clean_leftovers()?;
            if removed.is_empty() {
                println!("nothing to clean");
            }
            for item in removed {
                println!("removed {item}");
            }
            Ok(())
        }
    }
}

/// Runs a command in the workspace root, streaming its output; fails if it fails.
pub fn step(description: &str, cmd: &mut std::process::Command) -> Result<()> {
    println!("\n==> {description}");
    let status = cmd
        .current_dir(workspace_root())
        .status()
        .map_err(|e| anyhow::anyhow!("{description}: cannot start {:?}: {e}", cmd.get_program()))?;
    if !status.success() {
        anyhow::bail!("{description} failed ({status})");
    }
    Ok(())
}

/// Removes what a crashed earlier run left in the lab, saying so.
pub fn remove_lab_leftovers() -> Result<()> {
    let removed = lab::clean_leftovers()?;
    if !removed.is_empty() {
        println!("removed leftovers of an earlier run: {removed:?}");
    }
    Ok(())
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn cargo() -> std::process::Command {
    std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}
