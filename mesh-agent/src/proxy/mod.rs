//! The data path, independent of network namespaces (DESIGN §3 `proxy`): byte
//! copying, the HTTP/2 CONNECT tunnel, and the outbound and inbound connection
//! handlers. Sockets come in from, and go out through, traits the agent's
//! netns layer implements.

pub mod copy;
pub mod tunnel;
