//! Machine executor: the same steps as host processes.

mod common;

use common::*;
use gyre_executor::{StepStatus, TaskStatus};
use gyre_protocol::{StepSpec, When};
use std::time::Duration;

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
    assert_success(&outcome, &sink);
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
            StepSpec::Checkout {
                path: None,
                method: None,
                depth: None,
            },
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
    assert_success(&outcome, &sink);
    std::fs::remove_dir_all(home.path().join("project")).unwrap();
    let ws = tempfile::tempdir().unwrap();
    let second = with_checkout(
        machine_task(vec![
            StepSpec::Checkout {
                path: None,
                method: None,
                depth: None,
            },
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
    assert_success(&outcome, &sink);
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

/// A shell snippet that counts its runs in `file` and prints `attempt <n>`.
fn count_attempts(file: &std::path::Path) -> String {
    format!(
        "n=$(( $(cat '{0}' 2>/dev/null || echo 0) + 1 )); echo \"$n\" > '{0}'; echo \"attempt $n\"",
        file.display()
    )
}

fn runs(file: &std::path::Path) -> String {
    std::fs::read_to_string(file).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_step_reruns_until_it_succeeds() {
    let data = tempfile::tempdir().unwrap();
    let counter = data.path().join("runs");
    let task = machine_task(vec![
        run_with(
            &format!("{}; test \"$n\" -ge 3", count_attempts(&counter)),
            |s| s.max_auto_reruns = Some(3),
        ),
        run("echo after"),
    ]);
    let (outcome, sink) = execute(config("m-rerun-ok", data.path()), &task).await;
    assert_success(&outcome, &sink);
    assert_eq!(outcome.steps, [StepStatus::Success, StepStatus::Success]);
    assert_eq!(runs(&counter), "3\n");
    assert_eq!(
        sink.step_text(0),
        "attempt 1\n\
         Exited with code exit status 1\n\
         Step failed (attempt 1 of 4); rerunning now\n\
         attempt 2\n\
         Exited with code exit status 1\n\
         Step failed (attempt 2 of 4); rerunning now\n\
         attempt 3\n\
         Step succeeded (attempt 3 of 4)\n"
    );
    // One step in the log, started and finished once.
    assert_eq!(sink.started.iter().filter(|(s, _)| *s == 0).count(), 1);
    assert_eq!(sink.finished.iter().filter(|(s, _)| *s == 0).count(), 1);
    assert_eq!(sink.step_text(1), "after\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failing_step_runs_one_plus_max_times_after_the_delay() {
    let data = tempfile::tempdir().unwrap();
    let counter = data.path().join("runs");
    let delay = std::time::Duration::from_millis(800);
    let task = machine_task(vec![
        run_with(&format!("{}; exit 3", count_attempts(&counter)), |s| {
            s.max_auto_reruns = Some(2);
            s.auto_rerun_delay_ms = Some(delay.as_millis() as u64);
        }),
        run("echo skipped"),
        run_with("echo on-fail", |s| s.when = When::OnFail),
    ]);
    let started = std::time::Instant::now();
    let (outcome, sink) = execute(config("m-rerun-fail", data.path()), &task).await;
    let elapsed = started.elapsed();
    assert_eq!(outcome.status, TaskStatus::Failed, "{}", sink.text());
    assert_eq!(
        outcome.steps,
        [StepStatus::Failed, StepStatus::Skipped, StepStatus::Success]
    );
    assert_eq!(runs(&counter), "3\n");
    let log = sink.step_text(0);
    assert_eq!(
        log.matches("Exited with code exit status 3\n").count(),
        3,
        "{log}"
    );
    assert!(
        log.contains("Step failed (attempt 1 of 3); rerunning in 0.8s\nattempt 2\n"),
        "{log}"
    );
    assert!(
        log.contains("Step failed (attempt 2 of 3); rerunning in 0.8s\nattempt 3\n"),
        "{log}"
    );
    assert!(
        log.ends_with("attempt 3\nExited with code exit status 3\nStep failed (attempt 3 of 3)\n"),
        "{log}"
    );
    // Two waits before the two reruns; only a lower bound, which cannot flake.
    assert!(elapsed >= 2 * delay, "{elapsed:?}");
    assert!(
        outcome
            .message
            .as_deref()
            .is_some_and(|m| m.ends_with("Exited with code exit status 3")),
        "{:?}",
        outcome.message
    );
}

/// A no-output timeout is a failure like any other: the step reruns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_step_reruns() {
    let data = tempfile::tempdir().unwrap();
    let counter = data.path().join("runs");
    let task = machine_task(vec![run_with(
        &format!(
            "{}; if [ \"$n\" -lt 2 ]; then sleep 30; fi",
            count_attempts(&counter)
        ),
        |s| {
            s.no_output_timeout_ms = Some(500);
            s.max_auto_reruns = Some(1);
        },
    )]);
    let started = std::time::Instant::now();
    let (outcome, sink) = execute(config("m-rerun-timeout", data.path()), &task).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(outcome.status, TaskStatus::Success, "{}", sink.text());
    assert_eq!(runs(&counter), "2\n");
    let log = sink.step_text(0);
    assert!(
        log.contains(
            "Too long with no output (exceeded 0.5s): context deadline exceeded\n\
             Step failed (attempt 1 of 2); rerunning now\nattempt 2\n"
        ),
        "{log}"
    );
}

/// Background steps never rerun, even if the task asks for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_step_is_not_rerun() {
    let data = tempfile::tempdir().unwrap();
    let counter = data.path().join("runs");
    let task = machine_task(vec![
        run_with(&format!("{}; exit 1", count_attempts(&counter)), |s| {
            s.background = true;
            s.max_auto_reruns = Some(3);
        }),
        // Wait for the background step to have run (and failed) once.
        run(&format!(
            "for i in $(seq 100); do [ -s '{}' ] && break; sleep 0.05; done; sleep 0.5",
            counter.display()
        )),
    ]);
    let (outcome, sink) = execute(config("m-rerun-bg", data.path()), &task).await;
    assert_eq!(outcome.status, TaskStatus::Success, "{}", sink.text());
    assert_eq!(outcome.steps, [StepStatus::Background, StepStatus::Success]);
    assert_eq!(runs(&counter), "1\n");
    assert!(!sink.text().contains("rerunning"), "{}", sink.text());
}

/// The job runtime limit on the host: the step's process group is killed, later steps
/// (even `always`) do not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runtime_limit_kills_the_step() {
    let data = tempfile::tempdir().unwrap();
    let pid_file = data.path().join("pid");
    let task = machine_task(vec![
        run(&format!(
            "sleep 120 & echo $! > {}; echo started; wait",
            pid_file.display()
        )),
        run_with("echo always", |s| s.when = When::Always),
    ]);
    let config = config("runtime", data.path()).max_job_runtime(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let (outcome, sink) = execute(config, &task).await;
    assert_eq!(outcome.status, TaskStatus::TimedOut);
    assert_eq!(outcome.steps, [StepStatus::Failed, StepStatus::Skipped]);
    assert_eq!(
        sink.step_text(0),
        "started\nkilled: the job exceeded its maximum runtime of 2s\n"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // The step's `sleep` is gone (or a zombie waiting for init) once the task returned.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()));
    assert!(
        status.as_ref().map_or(true, |s| s.contains("State:\tZ")),
        "{status:?}"
    );
}

/// §4.13 on the host: no fingerprints adds every key; `ssh` itself picks them up from the
/// config; a fingerprint on an agent without keys fails clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_ssh_keys_all_and_ssh_uses_them() {
    let data = tempfile::tempdir().unwrap();
    let (keys_dir, [deploy, bare]) = ssh_key_dir();
    let task = machine_task(vec![
        StepSpec::AddSshKeys {
            fingerprints: vec![],
        },
        run(
            "ssh -F \"$HOME/.ssh/config\" -G example.com 2>/dev/null | grep '^identityfile .*id_rsa_' | sed \"s|$HOME|~|\"",
        ),
    ]);
    let with_keys = config("sshkeys", data.path()).ssh_keys_dir(keys_dir.path());
    let (outcome, sink) = execute(with_keys, &task).await;
    assert_success(&outcome, &sink);
    // `bare` sorts first in the directory.
    assert_eq!(
        sink.step_text(1),
        format!(
            "identityfile ~/.ssh/id_rsa_{}\nidentityfile ~/.ssh/id_rsa_{}\n",
            bare.md5.replace(':', ""),
            deploy.md5.replace(':', "")
        )
    );
    let without = machine_task(vec![StepSpec::AddSshKeys {
        fingerprints: vec![deploy.md5.clone()],
    }]);
    let (outcome, sink) = execute(config("nokeys", data.path()), &without).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    assert!(
        sink.step_text(0).contains("this agent has no SSH keys"),
        "{}",
        sink.text()
    );
}

/// `setup_remote_docker` on the host with `--remote-docker socket`: `DOCKER_HOST` names the
/// socket, and the engine answers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_remote_docker_names_the_host_socket() {
    let data = tempfile::tempdir().unwrap();
    let task = machine_task(vec![
        StepSpec::SetupRemoteDocker { version: None },
        run(
            "echo \"$DOCKER_HOST\"; curl -sS --unix-socket \"${DOCKER_HOST#unix://}\" http://docker/_ping; echo",
        ),
    ]);
    let config = config("remote", data.path()).remote_docker(gyre_executor::RemoteDocker::Socket(
        "/var/run/docker.sock".into(),
    ));
    let (outcome, sink) = execute(config, &task).await;
    assert_success(&outcome, &sink);
    assert_eq!(sink.step_text(1), "unix:///var/run/docker.sock\nOK\n");
}

/// §4.4 `method`: full copies every object, blobless leaves out the file versions of older
/// commits (and still checks out every file), shallow keeps `depth` commits; an unknown
/// method fails the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_methods() {
    let data = tempfile::tempdir().unwrap();
    let (repo, _first) = fixture_repo("checkout");
    commit_change(repo.path(), "README.md", "second version\n");
    let sha = commit_change(repo.path(), "README.md", "third version\n");
    let report = "for d in full blobless shallow; do \
        echo \"$d: commits=$(git -C $d rev-list --count HEAD) \
        missing=$(git -C $d rev-list --objects --all --missing=print | grep -c '^?') \
        shallow=$(git -C $d rev-parse --is-shallow-repository) \
        dirty=$(git -C $d status --porcelain | wc -l) readme=$(cat $d/README.md)\"; done";
    let task = with_checkout(
        machine_task(vec![
            checkout_step("full", Some("full"), None),
            checkout_step("blobless", Some("blobless"), None),
            checkout_step("shallow", Some("shallow"), Some(2)),
            run(report),
            checkout_step("bad", Some("sparse"), None),
        ]),
        repo.path(),
        &sha,
    );
    let (outcome, sink) = execute(config("methods", data.path()), &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed, "{}", sink.text());
    assert_eq!(
        outcome.steps[..5],
        [
            StepStatus::Success,
            StepStatus::Success,
            StepStatus::Success,
            StepStatus::Success,
            StepStatus::Failed
        ]
    );
    assert_eq!(
        sink.step_text(3),
        "full: commits=3 missing=0 shallow=false dirty=0 readme=third version\n\
         blobless: commits=3 missing=2 shallow=false dirty=0 readme=third version\n\
         shallow: commits=2 missing=0 shallow=true dirty=0 readme=third version\n"
    );
    assert!(
        sink.step_text(1).contains("(blobless)"),
        "{}",
        sink.step_text(1)
    );
    assert!(
        sink.step_text(4)
            .contains("checkout: unknown method \"sparse\" (expected full, blobless or shallow)"),
        "{}",
        sink.step_text(4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_holding_the_output_does_not_hold_the_step() {
    let data = tempfile::tempdir().unwrap();
    let task = machine_task(vec![
        // The subshell inherits stdout and stderr and outlives the step's shell.
        run("(sleep 30; echo too-late) & echo early"),
        run("echo next"),
    ]);
    let started = std::time::Instant::now();
    let (outcome, sink) = execute(config("m-grandchild", data.path()), &task).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_success(&outcome, &sink);
    assert_eq!(sink.step_text(0), "early\n");
    assert_eq!(sink.step_text(1), "next\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_output_on_both_streams_arrives_whole_and_masked() {
    let data = tempfile::tempdir().unwrap();
    // 8 MB on stdout and 2 MB on stderr at once, with the secret in every line.
    let mut task = machine_task(vec![run(
        "seq 1 200000 | sed 's/$/ heavy-secret-value/' & seq 1 50000 | sed 's/$/ heavy-secret-value/' >&2; wait",
    )]);
    task.environment = vec![secret("HEAVY", "heavy-secret-value")];
    let (outcome, sink) = execute(config("m-heavy", data.path()), &task).await;
    assert_success(&outcome, &sink);
    let (mut out, mut err) = (String::new(), String::new());
    for chunk in sink.chunks.iter().filter(|c| c.step == 0) {
        let text = String::from_utf8_lossy(&chunk.bytes);
        match chunk.stream {
            gyre_executor::Stream::Stdout => out.push_str(&text),
            gyre_executor::Stream::Stderr => err.push_str(&text),
            _ => {}
        }
    }
    let expect = |n: u32| -> String { (1..=n).map(|i| format!("{i} ****\n")).collect() };
    assert!(
        out == expect(200_000),
        "stdout differs ({} bytes)",
        out.len()
    );
    assert!(
        err == expect(50_000),
        "stderr differs ({} bytes)",
        err.len()
    );
}
