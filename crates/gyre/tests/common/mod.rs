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

/// A free loopback port (free when asked; the caller binds it soon after).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Runs git in `dir` as a test author; its trimmed stdout. Panics when git fails.
#[allow(dead_code)]
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=E2E", "-c", "user.email=e2e@example.com"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Stops a gyre process as an operator would: SIGTERM (running tasks may finish), SIGTERM
/// again (stop now: containers removed, steps killed), SIGKILL if it is still there after
/// 10 s. Tests that end with jobs still running leave nothing behind this way.
#[allow(dead_code)] // not every test binary stops processes
pub fn stop(child: &mut std::process::Child) {
    use std::time::{Duration, Instant};
    let pid = child.id().to_string();
    let ended = |child: &mut std::process::Child, within: Duration| {
        let until = Instant::now() + within;
        loop {
            if !matches!(child.try_wait(), Ok(None)) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for within in [Duration::from_millis(300), Duration::from_secs(10)] {
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if ended(child, within) {
            return;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}
