//! gyre-server: the HTTP server (API v2, hooks, agent protocol) and its background loops.

pub mod github;
pub mod trigger;
