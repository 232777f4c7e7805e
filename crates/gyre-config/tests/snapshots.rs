//! Data-driven compiler tests: every `tests/data/ok/*.yml` compiles and its processed
//! output is snapshotted; every `tests/data/err/*.yml` fails with located errors, and the
//! rendered errors are snapshotted. Adding a case is adding a file (then `cargo insta
//! review`, or `INSTA_UPDATE=always` and reading the new `.snap`).
//!
//! A case may start with directive comments:
//! `# gyre: pipeline-parameters={"deploy": true}`,
//! `# gyre: pipeline-values={"pipeline.git.branch": "main"}`,
//! `# gyre: allow-missing-orbs`.
//! Orbs come from `tests/data/orbs/<namespace>/<name>@<version>.yml`.

use gyre_config::{MemoryOrbs, Options, Severity, compile, yaml::Value};
use std::path::Path;

fn orbs() -> MemoryOrbs {
    let mut orbs = MemoryOrbs::default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/orbs");
    for ns in std::fs::read_dir(&root).expect("orbs dir") {
        let ns = ns.expect("entry").path();
        for file in std::fs::read_dir(&ns).expect("namespace dir") {
            let file = file.expect("entry").path();
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name");
            let text = std::fs::read_to_string(&file).expect("orb text");
            let ns_name = ns.file_name().and_then(|s| s.to_str()).expect("utf-8 name");
            orbs.insert(&format!("{ns_name}/{stem}"), text);
        }
    }
    orbs
}

fn options(path: &Path, text: &str) -> Options {
    let mut opts = Options {
        file_name: path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("config.yml")
            .to_string(),
        ..Options::default()
    };
    opts.pipeline_values
        .insert("pipeline.git.branch".into(), Value::Str("main".into()));
    opts.pipeline_values
        .insert("pipeline.number".into(), Value::Int(42));
    opts.pipeline_values.insert(
        "pipeline.id".into(),
        Value::Str("00000000-0000-0000-0000-000000000001".into()),
    );
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let Some(directive) = line.strip_prefix("# gyre:") else {
            continue;
        };
        let directive = directive.trim();
        if directive == "allow-missing-orbs" {
            opts.allow_missing_orbs = true;
        } else if let Some(json) = directive.strip_prefix("pipeline-parameters=") {
            opts.pipeline_parameters =
                serde_json::from_str(json).expect("pipeline-parameters JSON object");
        } else if let Some(json) = directive.strip_prefix("pipeline-values=") {
            let values: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(json).expect("JSON object");
            for (k, v) in values {
                let node = gyre_config::compile::json_to_node(&v, Default::default());
                opts.pipeline_values.insert(k, node.value);
            }
        } else {
            panic!("unknown directive in {}: {line}", path.display());
        }
    }
    opts
}

#[test]
fn ok_cases() {
    let orbs = orbs();
    insta::glob!("data/ok/*.yml", |path| {
        let text = std::fs::read_to_string(path).expect("case text");
        let out = compile(&text, &options(path, &text), &orbs);
        assert!(
            !out.has_errors(),
            "{} should compile:\n{}",
            path.display(),
            out.render_diagnostics()
        );
        let mut snap = String::new();
        let warnings = out.render_diagnostics();
        if !warnings.is_empty() {
            snap.push_str("## warnings\n");
            snap.push_str(&warnings);
        }
        let yaml = out.processed_yaml().expect("processed config");
        // The original config is echoed after this marker; the case file holds it.
        let yaml = yaml
            .split("\n# Original config.yml file:")
            .next()
            .unwrap_or_default();
        snap.push_str(yaml);
        // The processed config is itself a valid 2.0 config that compiles to the same.
        let again = compile(yaml, &Options::default(), &gyre_config::NoOrbs);
        assert!(
            !again.has_errors(),
            "processed output of {} does not compile:\n{}",
            path.display(),
            again.render_diagnostics()
        );
        insta::assert_snapshot!(snap);
    });
}

#[test]
fn err_cases() {
    let orbs = orbs();
    insta::glob!("data/err/*.yml", |path| {
        let text = std::fs::read_to_string(path).expect("case text");
        let out = compile(&text, &options(path, &text), &orbs);
        assert!(
            out.has_errors(),
            "{} should fail to compile",
            path.display()
        );
        assert!(out.processed.is_none() && out.plan.is_none());
        for d in out
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
        {
            assert!(
                d.span.is_some()
                    || d.message.starts_with("Unexpected argument(s)")
                    || d.message.starts_with("Type error for argument")
                    || d.message.starts_with("Cannot find a job named `build`"),
                "{}: error without a position: {}",
                path.display(),
                d.message
            );
        }
        insta::assert_snapshot!(out.render_diagnostics());
    });
}

/// At least the case counts the issue asks for, so cases are not lost silently.
#[test]
fn case_counts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let count = |sub: &str| {
        std::fs::read_dir(dir.join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let (ok, err) = (count("ok"), count("err"));
    assert!(ok + err >= 100, "only {} cases", ok + err);
    assert!(err >= 50, "only {err} error cases");
}
