//! The crate dependency graph is a design decision (ARCHITECTURE.md); this test keeps
//! it true. A new edge between workspace crates, or an IO/async dependency in a pure
//! crate, fails here until ARCHITECTURE.md and this table are changed together.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Workspace crate → the workspace crates it may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("gyre-config", &[]),
    ("gyre-orbs", &["gyre-config"]),
    ("gyre-core", &["gyre-config", "gyre-protocol"]),
    ("gyre-store", &["gyre-core"]),
    ("gyre-blob", &[]),
    ("gyre-secrets", &[]),
    ("gyre-protocol", &[]),
    ("gyre-executor", &["gyre-protocol"]),
    ("gyre-circleci", &["gyre-protocol"]),
    ("gyre-agent", &["gyre-protocol", "gyre-executor"]),
    (
        "gyre-server",
        &[
            "gyre-config",
            "gyre-orbs",
            "gyre-core",
            "gyre-protocol",
            "gyre-store",
            "gyre-blob",
            "gyre-secrets",
        ],
    ),
    (
        "gyre",
        &[
            "gyre-config",
            "gyre-orbs",
            "gyre-core",
            "gyre-protocol",
            "gyre-executor",
            "gyre-agent",
            "gyre-server",
            "gyre-store",
            "gyre-blob",
            "gyre-secrets",
        ],
    ),
];

/// Pure crates: no IO, no async runtime. Their only third-party dependencies.
const PURE: &[(&str, &[&str])] = &[
    (
        "gyre-config",
        &[
            "fancy-regex",
            "indexmap",
            "saphyr-parser",
            "serde",
            "serde_json",
            "thiserror",
        ],
    ),
    ("gyre-protocol", &["serde", "serde_json"]),
    ("gyre-core", &["serde", "thiserror"]),
];

/// Third-party crates that exactly one workspace crate may use: only gyre-store knows SQL,
/// only gyre-blob knows object storage, only gyre-secrets does cryptography on secrets.
const ONLY_IN: &[(&str, &str)] = &[
    ("sqlx", "gyre-store"),
    ("object_store", "gyre-blob"),
    ("bollard", "gyre-executor"),
    ("axum", "gyre-server"),
    ("aes-gcm", "gyre-secrets"),
];

#[test]
fn crate_graph_matches_architecture() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let workspace: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut graph: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for p in packages {
        let name = p["name"].as_str().expect("name");
        let (internal, external) = graph.entry(name).or_default();
        for d in p["dependencies"].as_array().expect("dependencies") {
            if !d["kind"].is_null() {
                continue; // dev- and build-dependencies are free
            }
            let dep = d["name"].as_str().expect("dependency name");
            if workspace.contains(dep) {
                internal.insert(dep);
            } else {
                external.insert(dep);
            }
        }
    }
    for (name, (internal, _)) in &graph {
        let allowed = ALLOWED
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| {
                panic!("crate {name} is not in ARCHITECTURE.md's graph (tests/architecture.rs)")
            })
            .1;
        for dep in internal {
            assert!(
                allowed.contains(dep),
                "{name} must not depend on {dep} (see ARCHITECTURE.md)"
            );
        }
    }
    for (name, (_, external)) in &graph {
        for (dep, owner) in ONLY_IN {
            assert!(
                !external.contains(dep) || name == owner,
                "{name} must not depend on {dep}: only {owner} may (see ARCHITECTURE.md)"
            );
        }
    }
    for (name, allowed) in PURE {
        if let Some((_, external)) = graph.get(name) {
            for dep in external {
                assert!(
                    allowed.contains(dep),
                    "pure crate {name} must not depend on {dep}: pure crates do no IO and run no async runtime"
                );
            }
        }
    }
}
