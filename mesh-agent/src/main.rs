//! `mesh-agent`: the command line. Everything it runs lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mesh-agent", version, about = "Weft's node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: load the kernel programs, capture meshed pods, proxy their traffic.
    Run(Box<mesh_agent::run::RunArgs>),
    /// Check this node's kernel prerequisites, or with --kubeconfig an installed
    /// mesh (CRDs, agents, CA, clocks); prints a pass/fail table.
    Check(mesh_agent::check::CheckArgs),
    /// Show what a running agent holds (generation, workloads).
    Status(mesh_agent::cli::status::StatusArgs),
    /// Show a running agent's HTTPRoutes and GRPCRoutes with their status
    /// (Accepted, ResolvedRefs), as the cluster's route status would say.
    Routes(mesh_agent::cli::routes::RoutesArgs),
    /// Stream a running agent's HTTP/gRPC requests as they finish, like `linkerd viz tap`.
    Tap(mesh_agent::cli::tap::TapArgs),
    /// Validate configuration files, or dump a running agent's state.
    Config {
        #[command(subcommand)]
        command: mesh_agent::cli::config_cmd::ConfigCommand,
    },
    /// List the workload certificates a running agent holds, with their renewal.
    Certs(mesh_agent::cli::certs::CertsArgs),
    /// Certificate authority: `ca init DIR` creates a local root.
    Ca {
        #[command(subcommand)]
        command: mesh_agent::cli::certs::CaCommand,
    },
    /// Print Weft's CustomResourceDefinitions as YAML, generated from its types.
    Crds(mesh_agent::cli::crds::CrdsArgs),
    /// Detach and remove everything an agent pinned (uninstall); pods stop being captured.
    Reset {
        #[arg(long, default_value = mesh_agent::run::DEFAULT_BPFFS_DIR)]
        bpffs_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    mesh_agent::identity::tls::install_process_provider();
    let result = match Cli::parse().command {
        Command::Run(args) => mesh_agent::run::main(*args).map(|()| ExitCode::SUCCESS),
        Command::Check(args) => mesh_agent::check::main(args),
        Command::Status(args) => Ok(mesh_agent::cli::status::run(args)),
        Command::Routes(args) => Ok(mesh_agent::cli::routes::run(args)),
        Command::Tap(args) => Ok(mesh_agent::cli::tap::run(args)),
        Command::Config { command } => Ok(mesh_agent::cli::config_cmd::run(command)),
        Command::Certs(args) => Ok(mesh_agent::cli::certs::run(args)),
        Command::Ca { command } => Ok(mesh_agent::cli::certs::ca(command)),
        Command::Crds(args) => {
            mesh_agent::cli::crds::run(args);
            Ok(ExitCode::SUCCESS)
        }
        Command::Reset { bpffs_dir } => {
            mesh_agent::ebpf::remove_pins(&mesh_agent::ebpf::PinLayout::new(bpffs_dir))
                .map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
