//! Shared by the end-to-end tests: the static in-job helper, built once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static in-job helper, built once (own target directory: no lock shared with the
/// cargo running the tests).
pub fn helper() -> PathBuf {
    static HELPER: OnceLock<PathBuf> = OnceLock::new();
    HELPER
        .get_or_init(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"))
                .join("gyre-helper");
            let status = Command::new(env!("CARGO"))
                .current_dir(workspace_root())
                .args([
                    "build",
                    "--release",
                    "-p",
                    "gyre-circleci",
                    "--target",
                    "x86_64-unknown-linux-gnu",
                ])
                .env("CARGO_TARGET_DIR", &target)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the static helper failed");
            target.join("x86_64-unknown-linux-gnu/release/circleci")
        })
        .clone()
}
