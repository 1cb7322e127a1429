//! `mesh-agent`: the command line. Everything it runs lives in the library.

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
    /// Print the version.
    Version,
    /// Validate configuration files, or dump a running agent's state.
    Config {
        #[command(subcommand)]
        command: mesh_agent::cli::config_cmd::ConfigCommand,
    },
    /// Show what a running agent holds (generation, workloads).
    Status(mesh_agent::cli::status::StatusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => println!("{}", env!("CARGO_PKG_VERSION")),
        Command::Config { command } => return mesh_agent::cli::config_cmd::run(command),
        Command::Status(args) => return mesh_agent::cli::status::run(args),
    }
    ExitCode::SUCCESS
}
