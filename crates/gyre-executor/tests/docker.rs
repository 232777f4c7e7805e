//! Docker executor on the real engine (images from scripts/test-env.sh, network `none`).

mod common;

use common::*;
use gyre_executor::{StepStatus, Stream, TaskStatus, TestResult};
use gyre_protocol::{ContainerSpec, ExecutorSpec, StepSpec, When};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_steps_env_bash_env_and_masking() {
    let data = tempfile::tempdir().unwrap();
    let mut task = docker_task(
        &[DEBIAN],
        vec![
            run(
                "echo \"bash=${BASH_VERSION:+yes} job=$CIRCLE_JOB node=$CIRCLE_NODE_INDEX/$CIRCLE_NODE_TOTAL branch=$CIRCLE_BRANCH pwd=$PWD\"",
            ),
            run("echo 'export FROM_BASH_ENV=persisted' >> \"$BASH_ENV\""),
            run_with("echo \"$FROM_BASH_ENV $STEP_VAR $JOB_VAR\"", |s| {
                s.environment = vec![
                    ("STEP_VAR".into(), "step".into()),
                    ("JOB_VAR".into(), "step-wins".into()),
                ];
            }),
            // The secret leaves in pieces: printf of each half, no newline in between.
            run(
                "printf 'token=%s\\n' \"$API_TOKEN\"; printf 'split=%s' \"${API_TOKEN%??????}\"; sleep 0.05; printf '%s\\n' \"${API_TOKEN#??????}\"; echo \"err $API_TOKEN\" >&2",
            ),
            run("circleci env subst 'subst=${CIRCLE_JOB}'"),
        ],
    );
    task.environment = vec![
        secret("API_TOKEN", "s3cr3t-value"),
        gyre_protocol::EnvVar {
            name: "JOB_VAR".into(),
            value: "job".into(),
            secret: false,
            source: gyre_protocol::EnvSource::Job,
        },
    ];
    let (outcome, sink) = execute(config("env", data.path()), &task).await;
    assert_success(&outcome, &sink);
    assert_eq!(
        sink.step_text(0),
        "bash=yes job=build node=0/1 branch=main pwd=/root/project\n"
    );
    assert_eq!(sink.step_text(2), "persisted step step-wins\n");
    let secret_step = sink.step_text(3);
    // stdout alone: stderr may interleave anywhere.
    let stdout: Vec<u8> = sink
        .chunks
        .iter()
        .filter(|c| c.step == 3 && c.stream == Stream::Stdout)
        .flat_map(|c| c.bytes.clone())
        .collect();
    assert_eq!(
        String::from_utf8(stdout).unwrap(),
        "token=****\nsplit=****\n"
    );
    assert!(!sink.text().contains("s3cr3t-value"), "{secret_step}");
    assert!(secret_step.contains("err ****"), "{secret_step}");
    assert!(
        sink.chunks
            .iter()
            .any(|c| c.step == 3 && c.stream == Stream::Stderr)
    );
    assert_eq!(sink.step_text(4), "subst=build");
    assert_eq!(leftovers("env").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_step_skips_on_success_but_runs_always_and_on_fail() {
    let data = tempfile::tempdir().unwrap();
    let task = docker_task(
        &[BUSYBOX],
        vec![
            run("echo first"),
            run("echo before; exit 3"),
            run("echo should-not-run"),
            run_with("echo always-ran", |s| s.when = When::Always),
            run_with("echo on-fail-ran", |s| s.when = When::OnFail),
        ],
    );
    let (outcome, sink) = execute(config("fail", data.path()), &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    assert_eq!(
        outcome.steps,
        [
            StepStatus::Success,
            StepStatus::Failed,
            StepStatus::Skipped,
            StepStatus::Success,
            StepStatus::Success
        ]
    );
    assert!(
        sink.step_text(1).contains("Exited with code exit status 3"),
        "{}",
        sink.step_text(1)
    );
    assert!(!sink.text().contains("should-not-run"));
    assert_eq!(sink.step_text(3), "always-ran\n");
    assert_eq!(sink.step_text(4), "on-fail-ran\n");
    assert_eq!(leftovers("fail").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_without_bash_uses_sh_and_halt_ends_successfully() {
    let data = tempfile::tempdir().unwrap();
    let task = docker_task(
        &[BUSYBOX],
        vec![
            run("test ! -e /bin/bash && echo no-bash"),
            run("circleci step halt"),
            run("echo after-halt; exit 1"),
        ],
    );
    let executor = gyre_executor::Executor::for_task(&task, config("sh", data.path()))
        .await
        .unwrap();
    let mut sink = HeaderSink::default();
    let outcome = executor.run(&task, &mut sink).await.unwrap();
    assert_eq!(outcome.status, TaskStatus::Success, "{:?}", outcome.message);
    assert_eq!(sink.headers[0].as_deref(), Some("#!/bin/sh -eo pipefail"));
    assert_eq!(outcome.steps[2], StepStatus::Skipped);
    assert_eq!(sink.inner.step_text(0), "no-bash\n");
    assert_eq!(leftovers("sh").await, 0);
}

#[derive(Default)]
struct HeaderSink {
    headers: Vec<Option<String>>,
    inner: gyre_executor::MemorySink,
}

impl gyre_executor::LogSink for HeaderSink {
    fn step_started(&mut self, step: usize, name: &str, header: Option<&str>) {
        self.headers.push(header.map(str::to_owned));
        self.inner.step_started(step, name, header);
    }
    fn chunk(&mut self, chunk: gyre_executor::LogChunk) {
        self.inner.chunk(chunk);
    }
    fn step_finished(&mut self, step: usize, status: StepStatus) {
        self.inner.step_finished(step, status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_timeout_kills_the_step() {
    let data = tempfile::tempdir().unwrap();
    let task = docker_task(
        &[BUSYBOX],
        vec![
            run_with("echo start; sleep 60; echo never", |s| {
                s.no_output_timeout_ms = Some(1500)
            }),
            run_with("echo cleanup", |s| s.when = When::Always),
        ],
    );
    let started = std::time::Instant::now();
    let (outcome, sink) = execute(config("timeout", data.path()), &task).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(outcome.status, TaskStatus::Failed);
    let text = sink.step_text(0);
    assert!(
        text.contains("Too long with no output (exceeded 1.5s): context deadline exceeded"),
        "{text}"
    );
    assert!(!text.contains("never"));
    assert_eq!(sink.step_text(1), "cleanup\n");
    assert_eq!(leftovers("timeout").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_step_and_service_container_on_localhost() {
    let data = tempfile::tempdir().unwrap();
    let mut task = docker_task(
        &[BUSYBOX],
        vec![
            run_with(
                "mkdir -p /tmp/www && echo served-by-background > /tmp/www/index.html && httpd -f -p 127.0.0.1:8081 -h /tmp/www",
                |s| s.background = true,
            ),
            run(
                "for i in $(seq 1 100); do wget -q -O - http://127.0.0.1:8081/ 2>/dev/null && break; sleep 0.1; done",
            ),
            run(
                "for i in $(seq 1 100); do wget -q -O - http://localhost:8080/service.txt 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
            ),
            // The service's `name` is one more name for localhost.
            run("wget -q -O - http://web:8080/service.txt"),
        ],
    );
    let ExecutorSpec::Docker { images } = &mut task.executor else {
        unreachable!()
    };
    images.push(ContainerSpec {
        image: BUSYBOX.into(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        command: Some(vec![
            "mkdir -p /srv && echo \"service says $GREETING\" > /srv/service.txt && exec httpd -f -p 8080 -h /srv".into(),
        ]),
        environment: vec![("GREETING".into(), "hello".into())],
        name: Some("web".into()),
        ..ContainerSpec::default()
    });
    let (outcome, sink) = execute(config("service", data.path()), &task).await;
    assert_success(&outcome, &sink);
    assert_eq!(outcome.steps[0], StepStatus::Background);
    assert_eq!(sink.step_text(1), "served-by-background\n");
    assert_eq!(sink.step_text(2), "service says hello\n");
    assert_eq!(sink.step_text(3), "service says hello\n");
    assert_eq!(leftovers("service").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_into_an_image_without_git() {
    let data = tempfile::tempdir().unwrap();
    let (repo, sha) = fixture_repo("checkout");
    let task = with_checkout(
        docker_task(
            &[BUSYBOX],
            vec![
                StepSpec::Checkout {
                    path: None,
                    method: None,
                    depth: None,
                },
                run(
                    "test ! -e /usr/bin/git && cat README.md && sh src/hello.sh && test -f .git/HEAD",
                ),
                StepSpec::Checkout {
                    path: Some("sub".into()),
                    method: None,
                    depth: None,
                },
                run("ls sub"),
            ],
        ),
        repo.path(),
        &sha,
    );
    let (outcome, sink) = execute(config("checkout", data.path()), &task).await;
    assert_success(&outcome, &sink);
    assert_eq!(
        sink.step_text(1),
        "# fixture\nhello from the fixture repository\nhello from src\n"
    );
    assert_eq!(sink.step_text(3), "README.md\nsrc\n");
    assert_eq!(leftovers("checkout").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_round_trip_with_a_checksum_key() {
    let data = tempfile::tempdir().unwrap();
    let (repo, sha) = fixture_repo("cache");
    let key = "deps-v1-{{ .Branch }}-{{ checksum \"lock.txt\" }}";
    let save = with_checkout(
        docker_task(
            &[BUSYBOX],
            vec![
                StepSpec::Checkout {
                    path: None,
                    method: None,
                    depth: None,
                },
                run(
                    "mkdir -p deps/sub && echo cached-content > deps/sub/file.txt && ln -s sub/file.txt deps/link",
                ),
                StepSpec::SaveCache {
                    name: None,
                    key: key.into(),
                    paths: vec!["deps".into(), "~/absent".into()],
                    when: When::OnSuccess,
                },
                StepSpec::SaveCache {
                    name: None,
                    key: key.into(),
                    paths: vec!["deps".into()],
                    when: When::OnSuccess,
                },
            ],
        ),
        repo.path(),
        &sha,
    );
    let (outcome, sink) = execute(config("cache", data.path()), &save).await;
    assert_success(&outcome, &sink);
    assert!(
        sink.step_text(3).contains("cache already exists"),
        "{}",
        sink.step_text(3)
    );
    let restore = with_checkout(
        docker_task(
            &[BUSYBOX],
            vec![
                StepSpec::Checkout {
                    path: None,
                    method: None,
                    depth: None,
                },
                StepSpec::RestoreCache {
                    name: None,
                    keys: vec!["nothing-like-this".into(), key.into(), "deps-v1-".into()],
                },
                run("cat deps/sub/file.txt deps/link"),
                StepSpec::RestoreCache {
                    name: None,
                    keys: vec!["absent-".into()],
                },
            ],
        ),
        repo.path(),
        &sha,
    );
    let (outcome, sink) = execute(config("cache", data.path()), &restore).await;
    assert_success(&outcome, &sink);
    assert!(
        sink.step_text(1)
            .contains("Found a cache from key deps-v1-main-"),
        "{}",
        sink.step_text(1)
    );
    assert_eq!(sink.step_text(2), "cached-content\ncached-content\n");
    assert!(
        sink.step_text(3).contains("No cache is found"),
        "{}",
        sink.step_text(3)
    );
    assert_eq!(leftovers("cache").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_passed_between_two_tasks() {
    let data = tempfile::tempdir().unwrap();
    let first = docker_task(
        &[BUSYBOX],
        vec![
            run(
                "mkdir -p /tmp/ws/out/nested && echo built > /tmp/ws/out/nested/app.bin && echo skip > /tmp/ws/other.txt && echo yes > /tmp/ws/keep.txt",
            ),
            StepSpec::PersistToWorkspace {
                root: "/tmp/ws".into(),
                paths: vec!["out".into(), "*.txt".into()],
            },
        ],
    );
    let (outcome, sink) = execute(config("workspace", data.path()), &first).await;
    assert_success(&outcome, &sink);
    // A job that is not upstream of `deploy` persists a layer too.
    let mut lint = docker_task(
        &[BUSYBOX],
        vec![
            run("mkdir -p /tmp/l && echo linted > /tmp/l/lint.txt"),
            StepSpec::PersistToWorkspace {
                root: "/tmp/l".into(),
                paths: vec!["lint.txt".into()],
            },
        ],
    );
    lint.job.name = "lint".into();
    let (outcome, _) = execute(config("workspace", data.path()), &lint).await;
    assert_eq!(outcome.status, TaskStatus::Success);
    let mut second = docker_task(
        &[DEBIAN],
        vec![
            StepSpec::AttachWorkspace {
                at: "attached".into(),
            },
            run(
                "cat attached/out/nested/app.bin attached/keep.txt attached/other.txt; test ! -e attached/lint.txt",
            ),
        ],
    );
    second.job.name = "deploy".into();
    second.job.workspace_upstream = Some(vec!["build".into()]);
    let (outcome, sink) = execute(config("workspace", data.path()), &second).await;
    assert_success(&outcome, &sink);
    assert_eq!(sink.step_text(1), "built\nyes\nskip\n");
    // Without an upstream list, every layer is applied.
    let all = docker_task(
        &[BUSYBOX],
        vec![
            StepSpec::AttachWorkspace { at: "/w".into() },
            run("cat /w/lint.txt /w/keep.txt"),
        ],
    );
    let (outcome, sink) = execute(config("workspace", data.path()), &all).await;
    assert_eq!(outcome.status, TaskStatus::Success, "{}", sink.text());
    assert_eq!(sink.step_text(1), "linted\nyes\n");
    assert_eq!(leftovers("workspace").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_results_parsed_then_used_for_timing_split() {
    let data = tempfile::tempdir().unwrap();
    let (repo, sha) = fixture_repo("test-results");
    let first = with_checkout(
        docker_task(
            &[BUSYBOX],
            vec![
                StepSpec::Checkout {
                    path: None,
                    method: None,
                    depth: None,
                },
                run("mkdir -p results/pytest && cp junit.xml results/pytest/"),
                StepSpec::StoreTestResults {
                    path: "results".into(),
                },
                StepSpec::StoreArtifacts {
                    path: "results/pytest/junit.xml".into(),
                    destination: Some("reports".into()),
                },
            ],
        ),
        repo.path(),
        &sha,
    );
    let (outcome, sink) = execute(config("results", data.path()), &first).await;
    assert_success(&outcome, &sink);
    assert_eq!(outcome.tests.len(), 5);
    let failing = &outcome.tests[2];
    assert_eq!(
        (failing.name.as_str(), failing.classname.as_str()),
        ("test_c", "tests.test_c")
    );
    assert_eq!(failing.result, TestResult::Failure);
    assert_eq!(failing.message.as_deref(), Some("assert 1 == 2"));
    assert_eq!(failing.file.as_deref(), Some("tests/test_c.py"));
    assert_eq!(outcome.tests[0].time, 10.0);
    let artifacts: Vec<(&str, &str)> = outcome
        .artifacts
        .iter()
        .map(|a| (a.path.as_str(), a.key.as_str()))
        .collect();
    assert_eq!(artifacts, [("reports", "artifacts/build/42/0/reports")]);
    let stored = data.path().join("artifacts/build/42/0/reports");
    assert!(
        std::fs::read_to_string(stored)
            .unwrap()
            .contains("test_skip")
    );

    let split = "circleci tests glob 'tests/**/*.py' | circleci tests split --split-by=timings --total 2 --index";
    let second = with_checkout(
        docker_task(
            &[BUSYBOX],
            vec![
                StepSpec::Checkout {
                    path: None,
                    method: None,
                    depth: None,
                },
                run(&format!("{split} 0")),
                run(&format!("{split} 1")),
                run("circleci tests glob 'tests/*.py' | circleci tests split"),
                run(
                    "circleci tests glob 'tests/*.py' | circleci tests run --command 'xargs echo ran' --split-by=timings --index 1 --total 2",
                ),
                run("echo 'x y' | circleci-agent tests split --total 2 --index=1"),
            ],
        ),
        repo.path(),
        &sha,
    );
    let (outcome, sink) = execute(config("results", data.path()), &second).await;
    assert_success(&outcome, &sink);
    assert_eq!(sink.step_text(1), "tests/test_a.py\n");
    assert_eq!(
        sink.step_text(2),
        "tests/test_b.py\ntests/test_c.py\ntests/test_d.py\n"
    );
    assert_eq!(
        sink.step_text(3),
        "tests/test_a.py\ntests/test_b.py\ntests/test_c.py\ntests/test_d.py\n"
    );
    assert_eq!(
        sink.step_text(4),
        "ran tests/test_b.py tests/test_c.py tests/test_d.py\n"
    );
    assert_eq!(sink.step_text(5), "y\n");
    assert_eq!(leftovers("results").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_image_fails_with_its_name_and_leaves_nothing() {
    let data = tempfile::tempdir().unwrap();
    let task = docker_task(&[BUSYBOX, "gyre-test/no-such-image:1.0"], vec![run("true")]);
    let started = std::time::Instant::now();
    let (outcome, _sink) = execute(config("unknown", data.path()), &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    let message = outcome.message.unwrap();
    assert!(
        message.contains("image gyre-test/no-such-image:1.0 is not available"),
        "{message}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(leftovers("unknown").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_steps_fail_clearly() {
    let data = tempfile::tempdir().unwrap();
    let mut task = docker_task(
        &[BUSYBOX],
        vec![
            run_with("echo here", |s| {
                s.working_directory = Some("/does/not/exist".into())
            }),
            run_with("no-such-command --flag", |s| s.when = When::Always),
            run_with(
                "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo ${#x}",
                |s| s.when = When::Always,
            ),
            StepSpec::SetupRemoteDocker { version: None },
        ],
    );
    task.resources.memory_bytes = Some(64 * 1024 * 1024);
    let (outcome, sink) = execute(config("bad", data.path()), &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    assert_eq!(
        outcome.steps,
        [
            StepStatus::Failed,
            StepStatus::Failed,
            StepStatus::Failed,
            StepStatus::Skipped
        ]
    );
    assert!(
        sink.step_text(0)
            .contains("the working directory /does/not/exist does not exist"),
        "{}",
        sink.step_text(0)
    );
    assert!(
        sink.step_text(1)
            .contains("exit status 127 (command not found)"),
        "{}",
        sink.step_text(1)
    );
    assert!(
        sink.step_text(2)
            .contains("killed: out of memory (limit 64 MiB)"),
        "{}",
        sink.step_text(2)
    );
    assert!(outcome.message.unwrap().contains("does not exist"));
    assert_eq!(leftovers("bad").await, 0);
}

/// Without `--remote-docker` the step fails and says how to get an engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_remote_docker_without_an_engine_fails_clearly() {
    let data = tempfile::tempdir().unwrap();
    let task = docker_task(
        &[BUSYBOX],
        vec![StepSpec::SetupRemoteDocker { version: None }],
    );
    let (outcome, sink) = execute(config("remote", data.path()), &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    assert_eq!(
        sink.step_text(0),
        "setup_remote_docker: this agent gives jobs no Docker engine. Its operator can start it \
         with `--remote-docker socket`, which gives jobs the host's Docker engine\n"
    );
    assert_eq!(leftovers("remote").await, 0);
}

/// With `--remote-docker socket` later steps reach the host's engine through `DOCKER_HOST`
/// (a raw HTTP request with perl: the engine sees the job's own container); earlier steps
/// have no `DOCKER_HOST`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_remote_docker_gives_the_host_engine() {
    let data = tempfile::tempdir().unwrap();
    let request = r#"perl -MIO::Socket::UNIX -e '
        my $s = IO::Socket::UNIX->new(Peer => $ENV{DOCKER_HOST} =~ s{^unix://}{}r) or die "connect: $!";
        print $s "GET /containers/$ARGV[0]/json HTTP/1.0\r\n\r\n";
        local $/; my $answer = <$s>;
        print $answer =~ m{"Name":"(/[^"]+)"} ? "engine sees $1\n" : "no answer: $answer\n";
    ' "$(hostname)""#;
    let task = docker_task(
        &[DEBIAN],
        vec![
            run("echo \"before=${DOCKER_HOST:-unset}\""),
            StepSpec::SetupRemoteDocker {
                version: Some("20.10.24".into()),
            },
            run(&format!("echo \"$DOCKER_HOST\"; {request}")),
        ],
    );
    let config = config("remote-socket", data.path()).remote_docker(
        gyre_executor::RemoteDocker::Socket("/var/run/docker.sock".into()),
    );
    let (outcome, sink) = execute(config, &task).await;
    assert_success(&outcome, &sink);
    assert_eq!(sink.step_text(0), "before=unset\n");
    assert!(
        sink.step_text(1)
            .contains("DOCKER_HOST=unix:///.gyre/docker.sock"),
        "{}",
        sink.step_text(1)
    );
    let answer = sink.step_text(2);
    assert!(
        answer.starts_with("unix:///.gyre/docker.sock\nengine sees /gyre-build-0-"),
        "{answer}"
    );
    assert_eq!(leftovers("remote-socket").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_task_removes_its_containers() {
    let data = tempfile::tempdir().unwrap();
    let task = docker_task(&[BUSYBOX, BUSYBOX], vec![run("echo started; sleep 120")]);
    let executor = gyre_executor::Executor::for_task(&task, config("cancel", data.path()))
        .await
        .unwrap();
    let mut sink = gyre_executor::MemorySink::default();
    let run = executor.run(&task, &mut sink);
    let result = tokio::time::timeout(std::time::Duration::from_secs(15), run).await;
    assert!(result.is_err(), "the step should still be running");
    assert!(sink.text().contains("started"), "{}", sink.text());
    assert_eq!(leftovers("cancel").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_entrypoint_that_exits_ends_the_job() {
    let data = tempfile::tempdir().unwrap();
    let mut task = docker_task(&[BUSYBOX], vec![run("echo never")]);
    let ExecutorSpec::Docker { images } = &mut task.executor else {
        unreachable!()
    };
    images[0].entrypoint = Some(vec!["/bin/sh".into(), "-c".into(), "exit 3".into()]);
    let (outcome, sink) = execute(config("exits", data.path()), &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    let message = outcome.message.unwrap();
    assert!(
        message.contains("the primary container (gyre-test/busybox:latest) exited with code 3"),
        "{message}"
    );
    assert!(!sink.text().contains("never"));
    assert_eq!(leftovers("exits").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_refuses_a_non_empty_directory_that_is_not_a_repository() {
    let data = tempfile::tempdir().unwrap();
    let (repo, sha) = fixture_repo("checkout");
    let task = with_checkout(
        docker_task(
            &[BUSYBOX],
            vec![
                StepSpec::Checkout {
                    path: None,
                    method: None,
                    depth: None,
                },
                // A git repository is updated in place.
                StepSpec::Checkout {
                    path: None,
                    method: None,
                    depth: None,
                },
                run("mkdir -p /tmp/notgit && echo x > /tmp/notgit/f"),
                StepSpec::Checkout {
                    path: Some("/tmp/notgit".into()),
                    method: None,
                    depth: None,
                },
            ],
        ),
        repo.path(),
        &sha,
    );
    let (outcome, sink) = execute(config("notgit", data.path()), &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    assert_eq!(
        outcome.steps,
        [
            StepStatus::Success,
            StepStatus::Success,
            StepStatus::Success,
            StepStatus::Failed
        ]
    );
    assert!(
        sink.step_text(3)
            .contains("Directory (/tmp/notgit) you are trying to checkout to is not empty and not a git repository"),
        "{}",
        sink.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_as_the_configured_user_and_own_the_checkout() {
    let data = tempfile::tempdir().unwrap();
    let (repo, sha) = fixture_repo("checkout");
    let mut task = with_checkout(
        docker_task(
            &[BUSYBOX],
            vec![
                StepSpec::Checkout {
                    path: None,
                    method: None,
                    depth: None,
                },
                run(
                    "id -u; echo changed >> README.md && tail -n 1 README.md; echo 'export A=1' >> \"$BASH_ENV\"",
                ),
                // The helper (as nobody) opened the frame pipe, so its name is gone: no
                // step can open it and write into the frame stream.
                run("test -d /.gyre/io && test ! -e /.gyre/io/frames && echo frames-pipe-gone"),
            ],
        ),
        repo.path(),
        &sha,
    );
    task.working_directory = "/tmp/work".into();
    let ExecutorSpec::Docker { images } = &mut task.executor else {
        unreachable!()
    };
    images[0].user = Some("nobody".into());
    let (outcome, sink) = execute(config("user", data.path()), &task).await;
    assert_eq!(outcome.status, TaskStatus::Success, "{}", sink.text());
    assert_eq!(sink.step_text(1), "65534\nchanged\n");
    assert_eq!(sink.step_text(2), "frames-pipe-gone\n");
    assert_eq!(leftovers("user").await, 0);
}

/// §4.3 automatic step rerun in a container: two failures, then success after the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_step_reruns_after_the_delay_in_a_container() {
    let data = tempfile::tempdir().unwrap();
    let delay = std::time::Duration::from_secs(1);
    let task = docker_task(
        &[BUSYBOX],
        vec![
            run_with(
                "n=$(( $(cat /tmp/runs 2>/dev/null || echo 0) + 1 )); echo \"$n\" > /tmp/runs; echo \"attempt $n\"; test \"$n\" -ge 3",
                |s| {
                    s.max_auto_reruns = Some(3);
                    s.auto_rerun_delay_ms = Some(delay.as_millis() as u64);
                },
            ),
            run("echo \"runs=$(cat /tmp/runs)\""),
        ],
    );
    let started = std::time::Instant::now();
    let (outcome, sink) = execute(config("rerun", data.path()), &task).await;
    let elapsed = started.elapsed();
    assert_success(&outcome, &sink);
    assert_eq!(outcome.steps, [StepStatus::Success, StepStatus::Success]);
    assert_eq!(
        sink.step_text(0),
        "attempt 1\n\
         Exited with code exit status 1\n\
         Step failed (attempt 1 of 4); rerunning in 1s\n\
         attempt 2\n\
         Exited with code exit status 1\n\
         Step failed (attempt 2 of 4); rerunning in 1s\n\
         attempt 3\n\
         Step succeeded (attempt 3 of 4)\n"
    );
    assert_eq!(sink.step_text(1), "runs=3\n");
    // Two waits of the delay; a lower bound only.
    assert!(elapsed >= 2 * delay, "{elapsed:?}");
    assert_eq!(leftovers("rerun").await, 0);
}

/// The resource class's limits reach the container's cgroup (v1 or v2 file names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_limits_apply_to_the_container() {
    let data = tempfile::tempdir().unwrap();
    let mut task = docker_task(
        &[BUSYBOX],
        vec![run(
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
             cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max",
        )],
    );
    task.resources.memory_bytes = Some(96 << 20);
    task.resources.cpus = Some(0.5);
    let (outcome, sink) = execute(config("limits", data.path()), &task).await;
    assert_success(&outcome, &sink);
    assert_eq!(sink.step_text(0), format!("{}\n50000\n", 96 << 20));
    assert_eq!(leftovers("limits").await, 0);
}

/// The job runtime limit kills the running step, skips the rest (even `always`), and
/// removes the containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runtime_limit_kills_the_step_and_cleans_up() {
    let data = tempfile::tempdir().unwrap();
    let task = docker_task(
        &[BUSYBOX, BUSYBOX],
        vec![
            run("echo started; sleep 120; echo never"),
            run_with("echo always", |s| s.when = When::Always),
        ],
    );
    let config = config("runtime", data.path()).max_job_runtime(std::time::Duration::from_secs(3));
    let started = std::time::Instant::now();
    let (outcome, sink) = execute(config, &task).await;
    assert_eq!(outcome.status, TaskStatus::TimedOut);
    assert_eq!(outcome.steps, [StepStatus::Failed, StepStatus::Skipped]);
    assert_eq!(
        sink.step_text(0),
        "started\nkilled: the job exceeded its maximum runtime of 3s\n"
    );
    let message = outcome.message.unwrap();
    assert!(message.contains("maximum runtime of 3s"), "{message}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(leftovers("runtime").await, 0);
}

/// §4.13 on Docker: keys chosen by MD5 and SHA256 fingerprints land in `~/.ssh` (0600) with
/// `IdentityFile` lines; an unknown fingerprint fails the step, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_ssh_keys_by_fingerprint() {
    let data = tempfile::tempdir().unwrap();
    let (keys_dir, [deploy, bare]) = ssh_key_dir();
    let deploy_file = format!("id_rsa_{}", deploy.md5.replace(':', ""));
    let bare_file = format!("id_rsa_{}", bare.md5.replace(':', ""));
    let task = docker_task(
        &[BUSYBOX],
        vec![
            StepSpec::AddSshKeys {
                fingerprints: vec![deploy.md5.clone()],
            },
            StepSpec::AddSshKeys {
                fingerprints: vec![bare.sha256.clone()],
            },
            run(&format!(
                "cd ~/.ssh && stat -c '%a %u %n' . {deploy_file} {bare_file} && cat config && cat {bare_file}"
            )),
            StepSpec::AddSshKeys {
                fingerprints: vec!["SHA256:nosuchkey".into()],
            },
        ],
    );
    let config = config("sshkeys", data.path()).ssh_keys_dir(keys_dir.path());
    let (outcome, sink) = execute(config, &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed, "{}", sink.text());
    assert_eq!(
        outcome.steps,
        [
            StepStatus::Success,
            StepStatus::Success,
            StepStatus::Success,
            StepStatus::Failed
        ]
    );
    assert_eq!(
        sink.step_text(2),
        format!(
            "700 0 .\n600 0 {deploy_file}\n600 0 {bare_file}\n\
             Host *\n  IdentityFile /root/.ssh/{deploy_file}\n\
             Host *\n  IdentityFile /root/.ssh/{bare_file}\n{}",
            String::from_utf8(bare.private).unwrap()
        )
    );
    assert!(
        sink.step_text(3)
            .contains("no SSH key with fingerprint SHA256:nosuchkey is configured on this agent"),
        "{}",
        sink.step_text(3)
    );
    assert_eq!(leftovers("sshkeys").await, 0);
}

/// A blobless checkout in a container with git: the whole history is there, the working
/// tree is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobless_checkout_in_a_container() {
    let data = tempfile::tempdir().unwrap();
    let (repo, _first) = fixture_repo("checkout");
    let sha = commit_change(repo.path(), "README.md", "second version\n");
    let task = with_checkout(
        docker_task(
            &[DEBIAN],
            vec![
                checkout_step(".", Some("blobless"), None),
                run(
                    "git log --format=%s | tr '\\n' ' '; git status --porcelain | wc -l; cat README.md",
                ),
            ],
        ),
        repo.path(),
        &sha,
    );
    let (outcome, sink) = execute(config("blobless", data.path()), &task).await;
    assert_success(&outcome, &sink);
    assert_eq!(sink.step_text(1), "change fixture 0\nsecond version\n");
    assert_eq!(leftovers("blobless").await, 0);
}
