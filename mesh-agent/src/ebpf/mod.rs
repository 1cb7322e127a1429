//! The kernel side, seen from the agent (docs/architecture.md, "Kernel programs"): load the embedded programs,
//! attach them, pin maps and links under the agent's bpffs directory, re-adopt them
//! after a restart, and enrol or remove pods through typed map handles; hold back
//! pods not classified yet (the pod gate).

mod enrol;
mod gate;
mod load;
mod logs;
mod maps;
pub mod object;
mod pins;

pub use enrol::{InboundEnrolment, PodEnrolment};
pub use gate::KubepodsRoot;
pub use load::{KernelPrograms, LoadOptions, Origin, remove_pins};
pub use logs::forward_kernel_logs;
pub use maps::{KernelStats, MapHandles, orig_dst_to_socket_addr, port_key};
pub use pins::PinLayout;
