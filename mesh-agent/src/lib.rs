//! Weft's node agent as a library: the `mesh-agent` binary is only its CLI.
//! Modules follow DESIGN §3, one concern each.

pub mod admin;
pub mod cli;
pub mod config;
pub mod state;
