//! Weft's node agent as a library: the `mesh-agent` binary is only its CLI.
//! Modules follow DESIGN §3, one concern each.

pub mod check;
pub mod cli;
pub mod ebpf;
pub mod netns;
pub mod proxy;
pub mod telemetry;
