//! Network namespaces: the agent lives in the node's netns but makes its listening
//! and outgoing sockets inside each meshed pod's netns (docs/architecture.md, "One connection, in the code"). A socket stays
//! in the netns it was created in, so traffic leaves with the pod's own IP.

pub mod discover;
mod handle;
pub mod routing;
mod sockets;
pub mod transparent;

pub use handle::Netns;
pub use sockets::{bind_listener, connect_marked, netns_cookie};
pub use transparent::{
    Prepared, ReplyRoutes, SourcePorts, TransparentError, app_source, connect_transparent,
};
