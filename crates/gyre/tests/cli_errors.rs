//! `gyre config validate|process` as a user runs them: every error case of the compiler
//! (`crates/gyre-config/tests/data/err`) exits 1 with `path:line:col: message` on stderr,
//! usage errors exit 2, a valid config exits 0.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gyre-config/tests/data")
}

fn gyre(args: &[&str], extra: &[std::ffi::OsString]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gyre"))
        .args(args)
        .args(extra)
        .output()
        .expect("run gyre")
}

/// The compiler test orbs (`<ns>/<name>@<version>.yml`) laid out as `--orb-dir` reads
/// them (`<ns>/<name>/<version>.yml`).
fn orb_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for ns in std::fs::read_dir(data().join("orbs")).expect("orbs dir") {
        let ns = ns.expect("entry").path();
        let ns_name = ns.file_name().expect("namespace name").to_owned();
        for file in std::fs::read_dir(&ns).expect("namespace dir") {
            let file = file.expect("entry").path();
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name");
            let (name, version) = stem.split_once('@').expect("name@version.yml");
            let target = dir.path().join(&ns_name).join(name);
            std::fs::create_dir_all(&target).expect("orb dir");
            std::fs::copy(&file, target.join(format!("{version}.yml"))).expect("copy orb");
        }
    }
    dir
}

/// The case's `# gyre:` directives as command-line flags.
fn directive_flags(text: &str) -> Vec<std::ffi::OsString> {
    let mut flags = Vec::new();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let Some(d) = line.strip_prefix("# gyre:").map(str::trim) else {
            continue;
        };
        if d == "allow-missing-orbs" {
            flags.push("--allow-missing-orbs".into());
        } else if let Some(json) = d.strip_prefix("pipeline-parameters=") {
            flags.push("--pipeline-parameters".into());
            flags.push(json.into());
        } else if let Some(json) = d.strip_prefix("pipeline-values=") {
            flags.push("--pipeline-values".into());
            flags.push(json.into());
        } else {
            panic!("unknown directive: {line}");
        }
    }
    flags
}

/// `path:line:col: ` at the start of a line, with numbers of at least 1.
fn located(line: &str, path: &str) -> bool {
    let Some(rest) = line.strip_prefix(path).and_then(|r| r.strip_prefix(':')) else {
        return false;
    };
    let mut parts = rest.splitn(3, ':');
    let number = |p: Option<&str>| {
        p.and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 1)
    };
    number(parts.next()) && number(parts.next()) && parts.next().is_some_and(|r| r.starts_with(' '))
}

/// Messages the compiler gives without a position (they are not about a place in the file).
const UNPOSITIONED: &[&str] = &[
    "Unexpected argument(s)",
    "Type error for argument",
    "Cannot find a job named `build`",
];

#[test]
fn every_error_case_fails_validation_with_a_located_message() {
    let orbs = orb_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(data().join("err"))
        .expect("err cases")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 55, "only {} error cases", files.len());
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("case text");
        let mut extra = directive_flags(&text);
        extra.push("--orb-dir".into());
        extra.push(orbs.path().into());
        extra.push(file.into());
        let out = gyre(&["config", "validate"], &extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let path = file.display().to_string();
        if out.status.code() != Some(1) {
            problems.push(format!(
                "{path}: exit {:?}, not 1:\n{stderr}",
                out.status.code()
            ));
            continue;
        }
        if !out.stdout.is_empty() {
            problems.push(format!(
                "{path}: printed on stdout: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        // Located in the config, or in the orb file the problem is in.
        let orb_root = orbs.path().display().to_string();
        let in_orb = |l: &str| {
            l.starts_with(&orb_root) && l.find(".yml:").is_some_and(|i| located(l, &l[..i + 4]))
        };
        let has_location = stderr.lines().any(|l| located(l, &path) || in_orb(l));
        let only_unpositioned = stderr
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with("error: config file"))
            .all(|l| UNPOSITIONED.iter().any(|m| l.starts_with(m)));
        if !has_location && !only_unpositioned {
            problems.push(format!("{path}: no `{path}:line:col: ` line in:\n{stderr}"));
        }
        if !stderr.contains("error: config file") {
            problems.push(format!("{path}: no summary line in:\n{stderr}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn located_lines_are_recognised() {
    assert!(located("a/b.yml:3:10: unknown orb 'x'", "a/b.yml"));
    assert!(!located("a/b.yml:0:10: x", "a/b.yml"));
    assert!(!located("a/b.yml:3: x", "a/b.yml"));
    assert!(!located("  3 | a/b.yml:3:1: x", "a/b.yml"));
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let out = gyre(&["config", "validate", "/nonexistent/gyre/config.yml"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read config file"), "{stderr}");
}

#[test]
fn bad_pipeline_parameters_are_a_usage_error() {
    let file = data().join("ok/basic-2-1.yml");
    for bad in ["{not json", "[1, 2]", "\"deploy\""] {
        let out = gyre(
            &["config", "validate", "--pipeline-parameters", bad],
            &[file.clone().into()],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--pipeline-parameters"), "{bad}: {stderr}");
    }
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let out = gyre(&["config", "validate", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_valid_config_validates() {
    let file = data().join("ok/basic-2-1.yml");
    let out = gyre(&["config", "validate"], &[file.clone().into()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim_end(),
        format!("Config file at {} is valid.", file.display())
    );
}

#[test]
fn process_prints_json() {
    let file = data().join("ok/basic-2-1.yml");
    let out = gyre(&["config", "process", "--format", "json"], &[file.into()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(json["version"], 2);
    assert!(json["jobs"].is_object(), "{json}");
    assert!(json["workflows"].is_object(), "{json}");
}

#[test]
fn process_of_an_invalid_config_prints_nothing_and_exits_1() {
    let file = data().join("err/undefined-job.yml");
    let out = gyre(
        &["config", "process", "--format", "json"],
        &[file.clone().into()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| located(l, &file.display().to_string())),
        "{stderr}"
    );
}
