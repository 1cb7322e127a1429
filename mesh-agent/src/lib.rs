//! Weft's node agent as a library: the `mesh-agent` binary is only its CLI.
//! Modules follow docs/architecture.md ("The agent"), one concern each; `run` wires them into the agent.

pub mod admin;
pub mod check;
pub mod cli;
pub mod config;
pub mod ebpf;
pub mod identity;
pub mod netns;
pub mod policy;
pub mod proxy;
pub mod routing;
pub mod run;
pub mod state;
pub mod status;
pub mod telemetry;
