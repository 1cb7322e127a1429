//! The sources that feed [`crate::state`], over shared resource types
//! ([`resources`]) and validators ([`validate`]): a YAML file of Kubernetes-shaped
//! resources ([`file`], whole-file semantics, hot-reloaded) and the Kubernetes API
//! server ([`kube`], one verdict per object).

pub mod errors;
pub mod file;
pub mod kube;
pub mod parse;
pub mod resources;
pub mod validate;
mod watch;
pub mod yaml;

pub use errors::{ConfigError, ConfigErrors};

#[cfg(test)]
mod tests;
