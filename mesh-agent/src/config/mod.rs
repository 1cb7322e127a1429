//! The sources that feed [`crate::state`]. Today: a YAML file of Kubernetes-shaped
//! resources ([`file`]), validated ([`validate`]) and hot-reloaded.

pub mod errors;
pub mod file;
pub mod parse;
pub mod resources;
pub mod validate;
mod watch;
pub mod yaml;

pub use errors::{ConfigError, ConfigErrors};

#[cfg(test)]
mod tests;
