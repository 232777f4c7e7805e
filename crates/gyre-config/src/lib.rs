//! gyre-config
