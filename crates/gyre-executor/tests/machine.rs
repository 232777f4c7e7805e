//! Machine executor: the same steps as host processes.

mod common;

use common::*;
use gyre_executor::{StepStatus, TaskStatus};
use gyre_protocol::{StepSpec, When};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_env_masking_and_halt() {
    let data = tempfile::tempdir().unwrap();
    let mut task = machine_task(vec![
        run(
            "echo \"bash=${BASH_VERSION:+yes} job=$CIRCLE_JOB home-is-fresh=$(test \"$PWD\" = \"$HOME/project\" && echo yes)\"",
        ),
        run("echo 'export CARRIED=over' >> \"$BASH_ENV\""),
        run("printf 'a=%s' \"${TOKEN%??????}\"; sleep 0.05; printf '%s\\n' \"${TOKEN#????????}\""),
        run("echo \"$CARRIED\"; circleci step halt"),
        run("echo not-after-halt"),
    ]);
    task.environment = vec![secret("TOKEN", "machine-secret")];
    let (outcome, sink) = execute(config("m-env", data.path()), &task).await;
    assert_eq!(
        outcome.status,
        TaskStatus::Success,
        "{:?}\n{}",
        outcome.message,
        sink.text()
    );
    assert_eq!(sink.step_text(0), "bash=yes job=build home-is-fresh=yes\n");
    assert_eq!(sink.step_text(2), "a=****\n");
    assert_eq!(sink.step_text(3), "over\n");
    assert_eq!(outcome.steps[4], StepStatus::Skipped);
    assert!(!sink.text().contains("machine-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_when_always_timeout_and_background() {
    let data = tempfile::tempdir().unwrap();
    let marker = data.path().join("background-was-killed");
    let task = machine_task(vec![
        run_with(
            &format!(
                "trap 'touch {}' TERM; sleep 100 & wait; echo finished-too-early",
                marker.display()
            ),
            |s| s.background = true,
        ),
        run("echo bg-running"),
        run_with("sleep 30", |s| s.no_output_timeout_ms = Some(700)),
        run("echo skipped"),
        run_with("echo always", |s| s.when = When::Always),
    ]);
    let started = std::time::Instant::now();
    let (outcome, sink) = execute(config("m-fail", data.path()), &task).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(outcome.status, TaskStatus::Failed);
    assert_eq!(
        outcome.steps,
        [
            StepStatus::Background,
            StepStatus::Success,
            StepStatus::Failed,
            StepStatus::Skipped,
            StepStatus::Success
        ]
    );
    assert!(
        sink.step_text(2)
            .contains("Too long with no output (exceeded 0.7s)"),
        "{}",
        sink.step_text(2)
    );
    assert_eq!(sink.step_text(4), "always\n");
    assert!(!sink.text().contains("finished-too-early"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_cache_and_workspace() {
    let data = tempfile::tempdir().unwrap();
    let (repo, sha) = fixture_repo("cache");
    let key = "m-{{ checksum \"lock.txt\" }}-{{ arch }}";
    let first = with_checkout(
        machine_task(vec![
            StepSpec::Checkout { path: None },
            run(
                "mkdir -p vendor && echo vendored > vendor/v.txt && mkdir -p out && echo artefact > out/a.txt",
            ),
            StepSpec::SaveCache {
                name: None,
                key: key.into(),
                paths: vec!["vendor".into()],
                when: When::OnSuccess,
            },
            StepSpec::PersistToWorkspace {
                root: ".".into(),
                paths: vec!["out".into()],
            },
        ]),
        repo.path(),
        &sha,
    );
    // Both tasks share one home, as on a machine image (paths in caches are absolute).
    let home = tempfile::tempdir().unwrap();
    let (outcome, sink) = execute(
        config("m-cache", data.path()).machine_home(home.path()),
        &first,
    )
    .await;
    assert_eq!(
        outcome.status,
        TaskStatus::Success,
        "{:?}\n{}",
        outcome.message,
        sink.text()
    );
    std::fs::remove_dir_all(home.path().join("project")).unwrap();
    let ws = tempfile::tempdir().unwrap();
    let second = with_checkout(
        machine_task(vec![
            StepSpec::Checkout { path: None },
            StepSpec::RestoreCache {
                name: None,
                keys: vec![key.into()],
            },
            StepSpec::AttachWorkspace {
                at: ws.path().to_string_lossy().into_owned(),
            },
            run("cat lock.txt vendor/v.txt"),
        ]),
        repo.path(),
        &sha,
    );
    let (outcome, sink) = execute(
        config("m-cache", data.path()).machine_home(home.path()),
        &second,
    )
    .await;
    assert_eq!(
        outcome.status,
        TaskStatus::Success,
        "{:?}\n{}",
        outcome.message,
        sink.text()
    );
    assert!(
        sink.step_text(1).contains("Found a cache from key m-"),
        "{}",
        sink.step_text(1)
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out/a.txt")).unwrap(),
        "artefact\n"
    );
    assert_eq!(
        sink.step_text(3),
        "dependency-a==1.0\ndependency-b==2.0\nvendored\n"
    );
}

/// Each machine task gets a fresh home: a cache of `~/...` saved by one task is restored
/// under the home of the next one, not under the first task's (gone) home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_cache_restores_under_the_new_home() {
    let data = tempfile::tempdir().unwrap();
    let save = machine_task(vec![
        run("mkdir -p ~/.toolcache && echo warm > ~/.toolcache/state && echo \"saved from $HOME\""),
        StepSpec::SaveCache {
            name: None,
            key: "home-v1".into(),
            paths: vec!["~/.toolcache".into()],
            when: When::OnSuccess,
        },
    ]);
    let (outcome, sink) = execute(config("m-home", data.path()), &save).await;
    assert_eq!(outcome.status, TaskStatus::Success, "{}", sink.text());
    let first_home = sink.step_text(0);
    let restore = machine_task(vec![
        StepSpec::RestoreCache {
            name: None,
            keys: vec!["home-v1".into()],
        },
        run("echo \"now $HOME\"; cat ~/.toolcache/state"),
    ]);
    let (outcome, sink) = execute(config("m-home", data.path()), &restore).await;
    assert_eq!(outcome.status, TaskStatus::Success, "{}", sink.text());
    let out = sink.step_text(1);
    assert!(
        out.ends_with("warm\n"),
        "the cache is not under the new home:\n{out}"
    );
    // Really two different homes, or this test proves nothing.
    let home = |s: &str, prefix: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
    };
    assert_ne!(
        home(&first_home, "saved from "),
        home(&out, "now "),
        "{first_home}\n{out}"
    );
}
