//! Shared pieces of the integration tests: the static helper, fixture repositories, tasks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use gyre_executor::{Executor, ExecutorConfig, MemorySink, TaskOutcome, TaskStatus};
use gyre_protocol::{
    CheckoutSource, ContainerSpec, EnvSource, EnvVar, ExecutorSpec, JobInfo, RunStep, StepSpec,
    TASK_SPEC_VERSION, TaskSpec,
};

pub const BUSYBOX: &str = "gyre-test/busybox:latest";
pub const DEBIAN: &str = "gyre-test/debian:bookworm";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The static `circleci` helper, built once per test binary (its own target directory, so
/// no lock is shared with the cargo running the tests).
pub fn helper() -> PathBuf {
    static HELPER: OnceLock<PathBuf> = OnceLock::new();
    HELPER
        .get_or_init(|| {
            let root = workspace_root();
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"))
                .join("gyre-helper");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--release", "-p", "gyre-circleci"])
                .args(["--target", "x86_64-unknown-linux-gnu"])
                .env("CARGO_TARGET_DIR", &target_dir)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env_remove("CARGO_BUILD_RUSTFLAGS")
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the static helper failed");
            target_dir.join("x86_64-unknown-linux-gnu/release/circleci")
        })
        .clone()
}

/// A fresh git repository with the files of `tests/fixtures/<scenario>`; returns (dir, sha).
pub fn fixture_repo(scenario: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let src = workspace_root().join("tests/fixtures").join(scenario);
    copy_tree(&src, dir.path());
    let git = |args: &[&str]| git_in(dir.path(), args);
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "fixture"]);
    let sha = git(&["rev-parse", "HEAD"]).trim().to_owned();
    (dir, sha)
}

/// Runs git in `dir` (as a fixed committer); its stdout.
fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=gyre",
            "-c",
            "user.email=gyre@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn copy_tree(src: &Path, dest: &Path) {
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

pub fn run(command: &str) -> StepSpec {
    StepSpec::Run(RunStep {
        command: command.to_owned(),
        ..RunStep::default()
    })
}

pub fn run_with(command: &str, f: impl FnOnce(&mut RunStep)) -> StepSpec {
    let mut step = RunStep {
        command: command.to_owned(),
        ..RunStep::default()
    };
    f(&mut step);
    StepSpec::Run(step)
}

pub fn docker_task(images: &[&str], steps: Vec<StepSpec>) -> TaskSpec {
    let images = images
        .iter()
        .map(|image| ContainerSpec {
            image: image.to_string(),
            ..ContainerSpec::default()
        })
        .collect();
    task(ExecutorSpec::Docker { images }, steps)
}

pub fn machine_task(steps: Vec<StepSpec>) -> TaskSpec {
    task(ExecutorSpec::Machine { image: None }, steps)
}

fn task(executor: ExecutorSpec, steps: Vec<StepSpec>) -> TaskSpec {
    TaskSpec {
        version: TASK_SPEC_VERSION,
        job: JobInfo {
            name: "build".into(),
            branch: Some("main".into()),
            sha1: "0123456789abcdef0123456789abcdef01234567".into(),
            build_num: 42,
            workflow_id: "wf-1".into(),
            workflow_workspace_id: "ws-1".into(),
            project_reponame: "demo".into(),
            ..JobInfo::default()
        },
        executor,
        working_directory: "~/project".into(),
        shell: None,
        environment: vec![],
        resources: Default::default(),
        node: Default::default(),
        checkout: None,
        steps,
    }
}

pub fn secret(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: value.into(),
        secret: true,
        source: EnvSource::Project,
    }
}

pub fn with_checkout(mut task: TaskSpec, repo: &Path, sha: &str) -> TaskSpec {
    task.checkout = Some(CheckoutSource {
        repository: repo.to_string_lossy().into_owned(),
        revision: sha.to_owned(),
    });
    task
}

/// A config whose containers carry a label unique to the test, and a data directory.
pub fn config(label: &str, data_dir: &Path) -> ExecutorConfig {
    let mut config = ExecutorConfig::new(data_dir, helper());
    config.label = run_label(label);
    config
}

/// Runs a task with a generous overall timeout (a hang fails the test, never blocks CI).
pub async fn execute(config: ExecutorConfig, task: &TaskSpec) -> (TaskOutcome, MemorySink) {
    let executor = Executor::for_task(task, config).await.expect("executor");
    let mut sink = MemorySink::default();
    let outcome = tokio::time::timeout(Duration::from_secs(180), executor.run(task, &mut sink))
        .await
        .expect("the task finished in time")
        .expect("the executor did not fail");
    (outcome, sink)
}

/// Containers (running or not) carrying the test's label.
pub async fn leftovers(label: &str) -> usize {
    let docker = bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let filters = std::collections::HashMap::from([("label".to_string(), vec![run_label(label)])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker.list_containers(Some(options)).await.unwrap().len()
}

/// The container label of one test in this test process: unique across processes, so
/// concurrent runs on one Docker daemon never count each other's containers.
pub fn run_label(label: &str) -> String {
    format!("gyre.test.{}.{label}", std::process::id())
}

/// Fails with the task's message and whole log unless it succeeded.
pub fn assert_success(outcome: &TaskOutcome, sink: &MemorySink) {
    assert_eq!(
        outcome.status,
        TaskStatus::Success,
        "{:?}\n{}",
        outcome.message,
        sink.text()
    );
}

/// One key of [`ssh_key_dir`], with the fingerprints `ssh-keygen -l` gives.
pub struct TestKey {
    pub md5: String,
    pub sha256: String,
    pub private: Vec<u8>,
}

/// A key directory like an agent's `--ssh-keys-dir`, made by `ssh-keygen`: `deploy` with
/// its `deploy.pub`, and `bare`, an OpenSSH key without one.
pub fn ssh_key_dir() -> (tempfile::TempDir, [TestKey; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let keygen = |args: &[&str]| {
        let out = Command::new("ssh-keygen").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let key = |name: &str| {
        let path = dir.path().join(name);
        let path = path.to_str().unwrap();
        keygen(&["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path]);
        // "256 MD5:aa:bb:… comment (ED25519)"
        let field = |hash: &str| {
            keygen(&["-l", "-E", hash, "-f", path])
                .split(' ')
                .nth(1)
                .unwrap()
                .to_owned()
        };
        TestKey {
            md5: field("md5").trim_start_matches("MD5:").to_owned(),
            sha256: field("sha256"),
            private: std::fs::read(path).unwrap(),
        }
    };
    let keys = [key("deploy"), key("bare")];
    std::fs::remove_file(dir.path().join("bare.pub")).unwrap();
    std::fs::write(dir.path().join("README"), "not a key\n").unwrap();
    (dir, keys)
}

/// Commits a new version of `file` in `repo`; returns the new sha.
pub fn commit_change(repo: &Path, file: &str, text: &str) -> String {
    std::fs::write(repo.join(file), text).unwrap();
    let git = |args: &[&str]| git_in(repo, args);
    git(&["commit", "-q", "-am", "change"]);
    git(&["rev-parse", "HEAD"]).trim().to_owned()
}

pub fn checkout_step(path: &str, method: Option<&str>, depth: Option<u32>) -> StepSpec {
    StepSpec::Checkout {
        path: Some(path.to_owned()),
        method: method.map(str::to_owned),
        depth,
    }
}
