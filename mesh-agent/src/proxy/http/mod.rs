//! HTTP in the data path (issue 14, in progress): protocol detection for now.
//! The HTTP/1.1 and HTTP/2 handlers that apply `routing` per request come
//! next (docs/architecture.md, "L7 routing").

pub mod detect;
