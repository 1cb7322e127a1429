//! The lab: a cluster on one machine (docs/architecture.md, "The lab").
//!
//! A node is a network namespace with a bridge for its pods; a pod is a network
//! namespace with a veth to its node's bridge and a cgroup of its own under the
//! lab's cgroup; nodes reach each other over an underlay bridge in a namespace of
//! its own. Agents run in their node's netns, attach to the lab cgroup and pin
//! under a private bpffs mount. Everything is torn down when the [`Lab`] is dropped,
//! even on panic; names are unique per lab so tests run in parallel, and only the
//! lab's own addresses are ever used.
//!
//! Addressing: node `n` (1-based) has pod subnet `10.88.n.0/24` with its bridge at
//! `10.88.n.1`, and underlay address `10.89.0.n/24`.

mod agent;
mod clean;
pub mod cluster;
mod exec;
pub mod http;
pub mod image;
pub mod kube;
mod lab;
mod mesh;
mod names;
mod node;
mod pod;
pub mod python;
mod topology;

pub use agent::{Agent, agent_binary, load_binary};
pub use clean::{clean_leftovers, leftovers};
pub use exec::run;
pub use lab::Lab;
pub use mesh::{MeshLab, example_config, metric_sum};
pub use node::Node;
pub use pod::Pod;
pub use topology::{LabConfig, NETNS_ANNOTATION};

/// Every lab object's name starts with this, so leftovers can be found and removed.
pub const PREFIX: &str = "wl";
