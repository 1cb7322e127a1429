//! `mesh-agent`: the command line. Everything it runs lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mesh_agent::cli::Output;

#[derive(Parser)]
#[command(name = "mesh-agent", version, about = "Weft's node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every kernel prerequisite and print a pass/fail table.
    Check {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
        /// bpffs directory the agent would pin under.
        #[arg(long, default_value = "/sys/fs/bpf/weft")]
        bpffs_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { output, bpffs_dir } => mesh_agent::check::main(output, &bpffs_dir),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
