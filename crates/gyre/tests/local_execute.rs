//! `gyre local execute` end to end: a real git repository, a real Docker engine (images
//! built offline by scripts/test-env.sh), the machine executor, and the static helper.

use std::path::Path;
use std::process::Command;

mod common;
use common::helper;

const CONFIG: &str = r#"version: 2.1
jobs:
  build:
    docker:
      - image: gyre-test/busybox:latest
    steps:
      - checkout
      - run: test -f README && echo "built on $CIRCLE_BRANCH"
      - run: mkdir -p out && echo artifact > out/result.txt
      - persist_to_workspace: {root: ., paths: [out]}
  test:
    machine: true
    parallelism: 2
    steps:
      - attach_workspace: {at: ws}
      - run: echo "node $CIRCLE_NODE_INDEX/$CIRCLE_NODE_TOTAL got $(cat ws/out/result.txt) token=$TOKEN"
  deploy:
    docker: [{image: gyre-test/busybox:latest}]
    steps:
      - run: echo deploying; exit 3
      - run:
          when: on_fail
          command: echo cleaning up
  after-deploy:
    docker: [{image: gyre-test/busybox:latest}]
    steps:
      - run: echo must not run
  isolated:
    machine: true
    steps:
      - attach_workspace: {at: ws}
      - run: test ! -e ws/out/result.txt && echo "isolated sees no upstream layer"
workflows:
  main:
    jobs:
      - build
      - isolated
      - test: {requires: [build]}
      - hold: {type: approval, requires: [test]}
      - deploy: {requires: [hold]}
      - after-deploy: {requires: [deploy]}
"#;

fn repo() -> tempfile::TempDir {
    repo_with(CONFIG)
}

fn repo_with(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join(".circleci")).expect("mkdir");
    std::fs::write(dir.path().join(".circleci/config.yml"), config).expect("config");
    std::fs::write(dir.path().join("README"), "hello\n").expect("readme");
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.email=ci@example.invalid", "-c", "user.name=ci"])
            .args(args)
            .current_dir(dir.path())
            .status()
            .expect("git")
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "init"]);
    dir
}

fn gyre(repo: &Path, data: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gyre"))
        .args(["local", "execute", "--data-dir"])
        .arg(data)
        .arg("--helper")
        .arg(helper())
        .args(args)
        .current_dir(repo)
        .output()
        .expect("gyre runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn summary_line<'a>(out: &'a str, job: &str) -> &'a str {
    out.lines()
        .skip_while(|l| !l.starts_with("Summary:"))
        .find(|l| l.split_whitespace().next() == Some(job))
        .unwrap_or_else(|| panic!("no summary line for {job} in:\n{out}"))
}

#[test]
fn workflow_runs_in_order_with_workspace_approval_failure_and_not_run() {
    let repo = repo();
    let data = tempfile::tempdir().expect("data dir");
    let (code, out) = gyre(repo.path(), data.path(), &["-e", "TOKEN=s3cr3t-value"]);
    assert_eq!(code, 1, "a failed job fails the run:\n{out}");
    assert!(out.contains("built on main"), "{out}");
    assert!(
        out.contains("node 0/2 got artifact token=****"),
        "workspace and masking:\n{out}"
    );
    assert!(out.contains("node 1/2 got artifact token=****"), "{out}");
    assert!(!out.contains("s3cr3t-value"), "secret leaked:\n{out}");
    assert!(out.contains("approved automatically"), "{out}");
    assert!(out.contains("Exited with code exit status 3"), "{out}");
    assert!(out.contains("cleaning up"), "on_fail step runs:\n{out}");
    assert!(!out.contains("must not run"), "{out}");
    assert!(summary_line(&out, "build").contains("success"));
    assert!(summary_line(&out, "test").contains("success"));
    assert!(summary_line(&out, "deploy").contains("failed"));
    assert!(summary_line(&out, "after-deploy").contains("not run"));
    assert!(
        out.contains("isolated sees no upstream layer"),
        "workspace layers leak to a job that does not require build:\n{out}"
    );
    assert!(summary_line(&out, "isolated").contains("success"));
}

#[test]
fn single_job_and_bad_input() {
    let repo = repo();
    let data = tempfile::tempdir().expect("data dir");
    let (code, out) = gyre(repo.path(), data.path(), &["--job", "build"]);
    assert_eq!(code, 0, "{out}");
    assert!(summary_line(&out, "build").contains("success"));

    let (code, out) = gyre(repo.path(), data.path(), &["--job", "nope"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no job named 'nope'"), "{out}");

    let (code, out) = gyre(repo.path(), data.path(), &["-e", "not-a-pair"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("expected KEY=VALUE"), "{out}");
}

#[test]
fn max_job_runtime_kills_a_slow_job() {
    let repo = repo_with(
        "version: 2.1\njobs:\n  slow:\n    machine: true\n    steps:\n      - run: echo started; sleep 120\nworkflows:\n  w: {jobs: [slow]}\n",
    );
    let data = tempfile::tempdir().expect("data dir");
    let started = std::time::Instant::now();
    let (code, out) = gyre(
        repo.path(),
        data.path(),
        &["--job", "slow", "--max-job-runtime", "2s"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("started"), "{out}");
    assert!(
        out.contains("killed: the job exceeded its maximum runtime of 2s"),
        "{out}"
    );
    assert!(summary_line(&out, "slow").contains("failed"), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));

    let (code, out) = gyre(repo.path(), data.path(), &["--max-job-runtime", "soon"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a duration like 90s, 30m or 5h"), "{out}");
}

/// Starts `gyre local execute --job JOB`, waits for the line `started` (the step's own
/// output, not its header), sends SIGINT.
/// Returns the exit code and the whole output.
fn interrupt_after_start(repo: &Path, data: &Path, job: &str) -> (i32, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut child = Command::new(env!("CARGO_BIN_EXE_gyre"))
        .args(["local", "execute", "--data-dir"])
        .arg(data)
        .arg("--helper")
        .arg(helper())
        .args(["--job", job])
        .current_dir(repo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gyre runs");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut out = String::new();
    loop {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).expect("read");
        out.push_str(&line);
        assert!(n > 0, "gyre ended before the step started:\n{out}");
        if line.trim_end() == "started" {
            break;
        }
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gyre did not stop on SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    stdout.read_to_string(&mut out).expect("read");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut out)
        .expect("read");
    (status.code().unwrap_or(-1), out)
}

#[test]
fn ctrl_c_removes_containers_and_kills_machine_steps() {
    let pid_file = tempfile::NamedTempFile::new().expect("pid file");
    let config = format!(
        r#"version: 2.1
jobs:
  sigint-probe:
    docker:
      - image: gyre-test/busybox:latest
      - image: gyre-test/busybox:latest
        command: ["sleep", "600"]
    steps:
      - run: echo started; sleep 600
  sigint-machine:
    machine: true
    steps:
      - run: sleep 600 & echo $! > {}; echo started; wait
workflows:
  w: {{jobs: [sigint-probe, sigint-machine]}}
"#,
        pid_file.path().display()
    );
    let repo = repo_with(&config);
    let data = tempfile::tempdir().expect("data dir");

    let (code, out) = interrupt_after_start(repo.path(), data.path(), "sigint-probe");
    assert_eq!(code, 130, "{out}");
    assert!(out.contains("interrupted"), "{out}");
    let left = Command::new("docker")
        .args(["ps", "-a", "--filter", "label=gyre.task"])
        .args(["--format", "{{.Label \"gyre.task\"}}"])
        .output()
        .expect("docker ps");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with("gyre-sigint-probe-")),
        "containers left behind:\n{left}"
    );

    let (code, out) = interrupt_after_start(repo.path(), data.path(), "sigint-machine");
    assert_eq!(code, 130, "{out}");
    let pid = std::fs::read_to_string(pid_file.path()).expect("pid");
    // The helper kills the step's process group once gyre has gone; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while Path::new(&format!("/proc/{}", pid.trim())).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the machine step's process {} outlived gyre",
            pid.trim()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
