//! Every real-world config in `tests/corpus/configs` is validated by the `gyre` binary
//! against the corpus orbs, strictly and with `--allow-missing-orbs`. The configs that
//! fail are listed in `tests/corpus/expected-failures.tsv` with a reason; this test
//! fails when the list and the real outcomes differ, and when fewer than 95% of the
//! configs pass with `--allow-missing-orbs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

fn validate(file: &Path, lenient: bool) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gyre"));
    cmd.args(["config", "validate"])
        .arg(file)
        .arg("--orb-dir")
        .arg(corpus().join("orbs"));
    if lenient {
        cmd.arg("--allow-missing-orbs");
    }
    let out = cmd.output().expect("run gyre");
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(1)),
        "{}: gyre exited with {code:?} (crash or usage error):\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        code == Some(0),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn corpus_validates_as_listed() {
    let listed: BTreeMap<String, String> =
        std::fs::read_to_string(corpus().join("expected-failures.tsv"))
            .expect("expected-failures.tsv")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let mut cols = l.splitn(3, '\t');
                let file = cols.next().unwrap_or_default().to_string();
                let mode = cols.next().unwrap_or_default().to_string();
                let reason = cols.next().unwrap_or_default();
                assert!(
                    matches!(mode.as_str(), "strict" | "always"),
                    "bad mode in line: {l}"
                );
                assert!(reason.len() > 10, "no reason given in line: {l}");
                (file, mode)
            })
            .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus().join("configs"))
        .expect("corpus configs")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 149,
        "corpus has only {} configs",
        files.len()
    );
    let mut mismatches = Vec::new();
    let mut lenient_ok = 0;
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let (strict, strict_err) = validate(file, false);
        let (lenient, lenient_err) = validate(file, true);
        if lenient {
            lenient_ok += 1;
        }
        let actual = match (strict, lenient) {
            (true, true) => None,
            (false, true) => Some("strict"),
            (_, false) => Some("always"),
        };
        let expected = listed.get(&name).map(String::as_str);
        if actual != expected {
            let err = if lenient { strict_err } else { lenient_err };
            mismatches.push(format!(
                "{name}: listed as {expected:?}, actually fails {actual:?}\n{}",
                err.lines().take(6).collect::<Vec<_>>().join("\n")
            ));
        }
    }
    for name in listed.keys() {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "listed config {name} is not in the corpus"
        );
    }
    assert!(
        mismatches.is_empty(),
        "expected-failures.tsv is wrong:\n{}",
        mismatches.join("\n\n")
    );
    let share = lenient_ok as f64 / files.len() as f64;
    assert!(
        share >= 0.95,
        "only {lenient_ok}/{} corpus configs validate with --allow-missing-orbs",
        files.len()
    );
}
