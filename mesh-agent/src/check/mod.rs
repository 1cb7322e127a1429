//! `mesh-agent check`. On a node: the kernel prerequisites (`kernel`). With
//! `--kubeconfig` (or `--cluster`): a mesh installed on a cluster, seen from a
//! workstation through the API server, like `linkerd check` (`cluster`).
//! Either way a table of checks, each with a verdict, what was found and the
//! fix, and an exit code that fails only when a check failed.

pub mod cluster;
mod kernel;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

pub use kernel::{find_cgroup2, run_checks};
pub use report::{Check, Report, Verdict};

use crate::cli::Output;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// bpffs directory the agent would pin under (kernel checks).
    #[arg(long, default_value = crate::run::DEFAULT_BPFFS_DIR)]
    pub bpffs_dir: PathBuf,
    /// Check the mesh installed on a cluster instead of this machine's kernel,
    /// with this kubeconfig; without a path: $KUBECONFIG or ~/.kube/config, else
    /// the in-cluster service account.
    #[arg(
        long,
        visible_alias = "cluster",
        value_name = "PATH",
        num_args = 0..=1,
        conflicts_with = "bpffs_dir"
    )]
    pub kubeconfig: Option<Option<PathBuf>>,
    #[command(flatten)]
    pub cluster: cluster::ClusterOptions,
}

pub fn main(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let report = match args.kubeconfig {
        Some(kubeconfig) => cluster::run(kubeconfig, &args.cluster)?,
        None => run_checks(&args.bpffs_dir),
    };
    report.print(args.output)?;
    Ok(report.exit_code())
}
