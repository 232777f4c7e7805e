//! The server end to end, as users run it: `gyre up` (SQLite, local blobs, built-in
//! agent) and `gyre server` + two `gyre agent` processes (PostgreSQL, S3-compatible
//! `s3s-fs`), a real git repository, a real Docker engine, GitHub webhooks signed with the
//! project's secret, everything read back through the API. Plus the fault cases: a bad
//! signature, 200 copies of one delivery, an agent killed with SIGKILL mid-job.

#[allow(dead_code)]
#[path = "../../gyre-secrets/tests/support/mod.rs"]
mod bao_support;
#[allow(dead_code)]
#[path = "../../gyre-blob/tests/support/mod.rs"]
mod blob_support;
mod common;
#[allow(dead_code)]
#[path = "../../gyre-store/tests/support/mod.rs"]
mod pg_support;

use common::{free_port, git};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "e2e-admin-token";
const SECRET: &str = "e2e-webhook-secret";

const CONFIG: &str = r#"version: 2.1
executors:
  bb:
    docker: [{image: gyre-test/busybox:latest}]
jobs:
  build:
    executor: bb
    steps:
      - checkout
      - run: mkdir -p out && echo "built $(cat README.md)" > out/artifact.txt
      - save_cache: {key: 'deps-{{ checksum "README.md" }}', paths: [out]}
      - persist_to_workspace: {root: out, paths: [artifact.txt]}
  test:
    parameters: {n: {type: integer}}
    executor: bb
    steps:
      - attach_workspace: {at: ws}
      - restore_cache: {keys: ['deps-']}
      - run: cat ws/artifact.txt && test -f out/artifact.txt && echo "node << parameters.n >> ok"
      - run: |
          mkdir -p results
          printf '<testsuite><testcase classname="t" name="case-<< parameters.n >>" time="0.1"/><testcase classname="t" name="broken-<< parameters.n >>" file="t.sh" time="0.2"><failure message="boom">trace</failure></testcase></testsuite>' > results/junit.xml
      - store_test_results: {path: results}
      - store_artifacts: {path: ws/artifact.txt, destination: art}
  deploy:
    executor: bb
    steps: [{run: echo deploying}]
  lint:
    executor: bb
    steps: [{run: echo linting; exit 1}]
  after-lint:
    executor: bb
    steps: [{run: echo never}]
  slow:
    executor: bb
    steps: [{run: "echo slow start; sleep << pipeline.parameters.sleep >>; echo slow done"}]
parameters:
  sleep: {type: integer, default: 0}
workflows:
  main:
    jobs:
      - build
      - test: {matrix: {parameters: {n: [1, 2]}}, requires: [build]}
      - hold: {type: approval, requires: [test]}
      - deploy: {requires: [hold]}
      - lint
      - after-lint: {requires: [lint]}
      - slow
"#;

/// A child process stopped when dropped (`common::stop`).
struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        common::stop(&mut self.0);
    }
}

fn gyre() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gyre"));
    c.env("GYRE_LOG", "info").env("GYRE_ADMIN_TOKEN", TOKEN);
    c
}

fn spawn(mut cmd: Command, log: &Path, what: &'static str) -> Proc {
    let file = std::fs::File::create(log).expect("log file");
    let child = cmd
        .stdout(file.try_clone().expect("clone"))
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn gyre");
    Proc(child, what)
}

/// A repository with the config; returns its head commit.
fn fixture_repo(dir: &Path) -> String {
    fixture_repo_with(dir, CONFIG)
}

/// A repository with `config`; returns its head commit.
fn fixture_repo_with(dir: &Path, config: &str) -> String {
    std::fs::create_dir_all(dir.join(".circleci")).expect("mkdir");
    std::fs::write(dir.join(".circleci/config.yml"), config).expect("config");
    std::fs::write(dir.join("README.md"), "e2e").expect("readme");
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "Add the pipeline\n\nWith a body."]);
    git(dir, &["rev-parse", "HEAD"])
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(port: u16) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Circle-Token", TOKEN)
            .send()
            .await
            .expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("JSON")
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// A request with the admin token; the status and the JSON answer (null if none).
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Circle-Token", TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.expect("the request is sent");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn wait_up(&self, procs: &mut [&mut Proc], logs: &[PathBuf]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for (p, log) in procs.iter_mut().zip(logs) {
                if let Ok(Some(status)) = p.0.try_wait() {
                    panic!(
                        "{} exited ({status}):\n{}",
                        p.1,
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
            if let Ok(r) = self
                .http
                .get(format!("{}/api/v2/me", self.base))
                .header("Circle-Token", TOKEN)
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "server did not come up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends a GitHub push webhook for `after` on `main`.
    async fn push_hook(&self, delivery: &str, after: &str, secret: &str) -> (u16, Value) {
        self.push_hook_to("acme/app", delivery, after, secret).await
    }

    /// Sends a GitHub push webhook for `after` on `main` of repository `full_name`.
    async fn push_hook_to(
        &self,
        full_name: &str,
        delivery: &str,
        after: &str,
        secret: &str,
    ) -> (u16, Value) {
        let body = push_body(full_name, "refs/heads/main", after);
        self.hook("push", delivery, body, secret).await
    }

    /// Sends a GitHub webhook `event` with `body`, signed with `secret`.
    async fn hook(&self, event: &str, delivery: &str, body: Value, secret: &str) -> (u16, Value) {
        let body = body.to_string();
        let sig = gyre_server::github::sign(secret.as_bytes(), body.as_bytes());
        let r = self
            .http
            .post(format!("{}/hooks/github", self.base))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", sig)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("webhook");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn jobs(&self, workflow: &str) -> Vec<(String, String)> {
        let v = self.get(&format!("/api/v2/workflow/{workflow}/job")).await;
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|j| {
                (
                    j["name"].as_str().unwrap().to_string(),
                    j["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    async fn wait_job(&self, workflow: &str, name: &str, status: &str, logs: &[PathBuf]) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let jobs = self.jobs(workflow).await;
            if jobs.iter().any(|(n, s)| n == name && s == status) {
                return;
            }
            if Instant::now() > deadline {
                let text: String = logs
                    .iter()
                    .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                    .collect();
                panic!("{name} never became {status}: {jobs:?}\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn add_project(&self, repo: &Path) {
        let (status, body) = self
            .post(
                "/api/gyre/v1/projects",
                json!({"slug": "gh/acme/app", "repo_url": repo.display().to_string(),
                       "default_branch": "main", "webhook_secret": SECRET}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// The output of job `number`'s first step whose name starts with `prefix`, read
    /// through the v1.1 build's pre-signed `output_url` (no token).
    async fn step_output(&self, number: u64, prefix: &str) -> String {
        self.try_step_output(number, prefix)
            .await
            .unwrap_or_else(|| panic!("job {number} has no step {prefix}"))
    }

    /// [`Api::step_output`], `None` while the step has not started.
    async fn try_step_output(&self, number: u64, prefix: &str) -> Option<String> {
        let build = self
            .get(&format!("/api/v1.1/project/gh/acme/app/{number}"))
            .await;
        let step = build["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"].as_str().unwrap().starts_with(prefix))?
            .clone();
        let url = step["actions"][0]["output_url"].as_str().unwrap();
        let out: Value = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Some(
            out.as_array()
                .map(|a| a.iter().filter_map(|m| m["message"].as_str()).collect())
                .unwrap_or_default(),
        )
    }

    /// The job number of `name` in `workflow`.
    async fn job_number(&self, workflow: &str, name: &str) -> u64 {
        let v = self.get(&format!("/api/v2/workflow/{workflow}/job")).await;
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap_or_else(|| panic!("no job {name}: {v}"))["job_number"]
            .as_u64()
            .unwrap()
    }

    /// Triggers a pipeline on `main` through the API; returns its first workflow's id.
    async fn trigger(&self, parameters: Value) -> String {
        self.trigger_on("main", parameters).await
    }

    /// Triggers a pipeline on `branch` through the API; returns its first workflow's id.
    async fn trigger_on(&self, branch: &str, parameters: Value) -> String {
        let (status, body) = self
            .post(
                "/api/v2/project/gh/acme/app/pipeline",
                json!({"branch": branch, "parameters": parameters}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let pipeline = body["id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let wfs = self
                .get(&format!("/api/v2/pipeline/{pipeline}/workflow"))
                .await;
            if let Some(id) = wfs["items"][0]["id"].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no workflow: {wfs}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until workflow `id` has `status`.
    async fn wait_workflow(&self, id: &str, status: &str, logs: &[PathBuf]) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let w = self.get(&format!("/api/v2/workflow/{id}")).await;
            if w["status"] == status {
                return;
            }
            if Instant::now() > deadline {
                let text: String = logs
                    .iter()
                    .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                    .collect();
                panic!("workflow {id} never became {status}: {w}\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn pipeline_count(&self) -> usize {
        let v = self.get("/api/v2/project/gh/acme/app/pipeline").await;
        v["items"].as_array().expect("items").len()
    }
}

/// A GitHub `push` delivery of `after` to `git_ref` of `full_name`.
fn push_body(full_name: &str, git_ref: &str, after: &str) -> Value {
    json!({
        "ref": git_ref, "before": "0".repeat(40), "after": after,
        "deleted": false,
        "repository": {"full_name": full_name, "html_url": "https://github.invalid/x"},
        "head_commit": {"id": after, "message": "Add the pipeline\n\nWith a body.",
                        "timestamp": "2026-11-28T00:00:00Z", "url": "",
                        "author": {"name": "E2E", "email": "e2e@example.com"}},
        "sender": {"login": "octocat", "avatar_url": ""},
    })
}

/// A GitHub `pull_request` delivery: `action` on PR `number` of `acme/app`, whose head
/// is `head_ref` at `head_sha` in repository `head_repo`.
fn pull_request_body(
    action: &str,
    number: u64,
    head_repo: &str,
    head_ref: &str,
    head_sha: &str,
    base_sha: &str,
) -> Value {
    json!({
        "action": action, "number": number,
        "repository": {"full_name": "acme/app"},
        "pull_request": {
            "html_url": format!("https://github.invalid/acme/app/pull/{number}"),
            "title": "A change", "draft": false,
            "head": {"ref": head_ref, "sha": head_sha, "repo": {"full_name": head_repo}},
            "base": {"ref": "main", "sha": base_sha},
        },
        "sender": {"login": head_repo.split('/').next().unwrap(), "avatar_url": ""},
    })
}

/// `gyre up` with its data under `dir`, listening on `port`.
fn up_cmd(dir: &Path, port: u16) -> Command {
    let mut cmd = gyre();
    cmd.args(["up", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--helper"])
        .arg(common::helper());
    cmd
}

/// `gyre up` (with `extra` arguments) under `dir`, up and answering; its log file.
async fn start_up(dir: &Path, extra: &[&str]) -> (Proc, Api, PathBuf) {
    let port = free_port();
    let log = dir.join("up.log");
    let mut cmd = up_cmd(dir, port);
    cmd.args(extra);
    let mut up = spawn(cmd, &log, "gyre up");
    let api = Api::new(port);
    api.wait_up(&mut [&mut up], std::slice::from_ref(&log))
        .await;
    (up, api, log)
}

/// `gyre project add gh/acme/app` for `repo` through the CLI, with `flags`.
fn cli_add_project(api: &Api, repo: &Path, flags: &[&str]) {
    let out = gyre()
        .args(["project", "add", "gh/acme/app", "--repo"])
        .arg(repo)
        .args(["--webhook-secret", SECRET])
        .args(flags)
        .args(["--server", &api.base, "--token", TOKEN])
        .output()
        .expect("gyre project add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `gyre server` on PostgreSQL and S3 with its data under `dir`.
fn server_cmd(dir: &Path, port: u16, database: &str, blobs: &str, lease_secs: u32) -> Command {
    let mut cmd = gyre();
    cmd.args(["server", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", database, "--blobs", blobs])
        .args(["--lease-secs", &lease_secs.to_string()]);
    cmd
}

/// `gyre agent` for the Docker executor, talking to `server`.
fn agent_cmd(server: &str, name: &str) -> Command {
    let mut cmd = gyre();
    cmd.args([
        "agent", "--server", server, "--token", TOKEN, "--name", name,
    ])
    .args(["--resource-class", "docker", "--helper"])
    .arg(common::helper());
    cmd
}

/// The full workflow through a webhook: fan-out (matrix), fan-in, workspace, cache,
/// approval, artifacts, test results, a failing job whose dependant is `not_run`.
async fn full_workflow(api: &Api, head: &str, logs: &[PathBuf]) {
    // A wrong signature: 401, nothing created.
    let (status, body) = api.push_hook("d-bad", head, "not-the-secret").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("signature"),
        "{body}"
    );
    assert_eq!(api.pipeline_count().await, 0);

    let (status, body) = api.push_hook("d-1", head, SECRET).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["state"], "created", "{body}");
    let pipeline = body["id"].as_str().unwrap().to_string();

    let p = api.get(&format!("/api/v2/pipeline/{pipeline}")).await;
    assert_eq!(p["vcs"]["revision"], head);
    assert_eq!(p["vcs"]["branch"], "main");
    assert_eq!(p["vcs"]["commit"]["subject"], "Add the pipeline");
    assert_eq!(p["trigger"]["type"], "webhook");
    assert_eq!(p["trigger"]["actor"]["login"], "octocat");
    let values = api
        .get(&format!("/api/v2/pipeline/{pipeline}/values"))
        .await;
    assert_eq!(values["pipeline.git.revision"], head);
    assert_eq!(values["pipeline.trigger_source"], "webhook");

    let wfs = api
        .get(&format!("/api/v2/pipeline/{pipeline}/workflow"))
        .await;
    let wf = wfs["items"][0]["id"].as_str().unwrap().to_string();
    api.wait_job(&wf, "hold", "on_hold", logs).await;
    let jobs = api.jobs(&wf).await;
    for (name, want) in [
        ("build", "success"),
        ("test-1", "success"),
        ("test-2", "success"),
        ("deploy", "blocked"),
        ("lint", "failed"),
        ("after-lint", "not_run"),
    ] {
        let got = jobs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_str());
        if want == "failed" || want == "not_run" {
            api.wait_job(&wf, name, want, logs).await;
        } else {
            assert_eq!(got, Some(want), "{name}: {jobs:?}");
        }
    }
    let w = api.get(&format!("/api/v2/workflow/{wf}")).await;
    assert!(
        matches!(w["status"].as_str(), Some("failing" | "on_hold")),
        "{w}"
    );

    // Approve the hold: deploy runs; the workflow ends failed (lint failed).
    let listed = api.get(&format!("/api/v2/workflow/{wf}/job")).await;
    let hold = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "hold")
        .unwrap()
        .clone();
    assert_eq!(hold["type"], "approval");
    let request = hold["approval_request_id"].as_str().unwrap();
    let (status, body) = api
        .post(
            &format!("/api/v2/workflow/{wf}/approve/{request}"),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    api.wait_job(&wf, "deploy", "success", logs).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let w = api.get(&format!("/api/v2/workflow/{wf}")).await;
        if w["status"] == "failed" {
            assert!(w["stopped_at"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "workflow never ended: {w}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Job details, test results, artifacts and step output of test-1.
    let listed = api.get(&format!("/api/v2/workflow/{wf}/job")).await;
    let number = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "test-1")
        .unwrap()["job_number"]
        .as_u64()
        .expect("job number");
    let job = api
        .get(&format!("/api/v2/project/gh/acme/app/job/{number}"))
        .await;
    assert_eq!(job["status"], "success");
    assert_eq!(job["executor"]["type"], "docker");
    assert!(job["duration"].as_i64().is_some(), "{job}");
    let tests = api
        .get(&format!("/api/v2/project/gh/acme/app/{number}/tests"))
        .await;
    let cases = tests["items"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "{tests}");
    let broken = cases
        .iter()
        .find(|c| c["result"] == "failure")
        .expect("a failure");
    assert_eq!(broken["name"], "broken-1");
    assert_eq!(broken["file"], "t.sh");
    assert!(
        broken["message"].as_str().unwrap().contains("boom"),
        "{broken}"
    );
    let arts = api
        .get(&format!("/api/v2/project/gh/acme/app/{number}/artifacts"))
        .await;
    let art = &arts["items"][0];
    assert_eq!(art["path"], "art");
    let bytes = api
        .http
        .get(art["url"].as_str().unwrap())
        .header("Circle-Token", TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(bytes, "built e2e\n");
    let text = api.step_output(number, "cat ws/artifact.txt").await;
    assert!(
        text.contains("built e2e") && text.contains("node 1 ok"),
        "{text}"
    );

    // A second identical delivery creates nothing.
    let (status, _) = api.push_hook("d-1", head, SECRET).await;
    assert_eq!(status, 200);
    assert_eq!(api.pipeline_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_gyre_up_runs_a_webhook_pipeline() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    let head = fixture_repo(&repo);
    let (_up, api, log) = start_up(tmp.path(), &[]).await;
    api.add_project(&repo).await;
    full_workflow(&api, &head, &[log]).await;
}

const PR_CONFIG: &str = r#"version: 2.1
jobs:
  env:
    docker: [{image: gyre-test/busybox:latest}]
    steps:
      - run:
          name: show
          command: echo "pr=[$CIRCLE_PULL_REQUEST] prs=[$CIRCLE_PULL_REQUESTS] num=[$CIRCLE_PR_NUMBER] user=[$CIRCLE_PR_USERNAME] repo=[$CIRCLE_PR_REPONAME] branch=[$CIRCLE_BRANCH] secret=[${DEPLOY_KEY:-unset}] oidc=[${CIRCLE_OIDC_TOKEN:+set}]"
workflows:
  main: {jobs: [env]}
"#;

/// Pull requests as GitHub sends them: a same-repository PR is recorded, and the next
/// push to its branch carries its URL; a PR from a fork is built as `pull/<n>` from the
/// project's own repository (`refs/pull/<n>/head`), with `CIRCLE_PR_*` and without the
/// project's secrets; a closed PR is no longer attached to pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pull_requests() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    let base = fixture_repo_with(&repo, PR_CONFIG);
    let (_up, api, log) = start_up(tmp.path(), &[]).await;
    let logs = [log];
    let (status, body) = api
        .post(
            "/api/gyre/v1/projects",
            json!({"slug": "gh/acme/app", "repo_url": repo.display().to_string(),
                   "default_branch": "main", "webhook_secret": SECRET,
                   "settings": {"build_fork_prs": true}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Project environment variables: write-only, masked, CircleCI's codes and messages.
    let envvar = "/api/v2/project/gh/acme/app/envvar";
    for (name, value) in [("DEPLOY_KEY", "hunter2-secret"), ("SHORT", "abc")] {
        let (status, body) = api
            .post(envvar, json!({"name": name, "value": value}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let list = api.get(envvar).await;
    assert_eq!(list["items"][0]["name"], "DEPLOY_KEY", "{list}");
    assert_eq!(list["items"][0]["value"], "xxxxcret", "{list}");
    assert_eq!(list["items"][1]["value"], "xxxx", "{list}");
    assert!(!list.to_string().contains("hunter2"), "{list}");
    let one = api.get(&format!("{envvar}/SHORT")).await;
    assert_eq!(
        (&one["name"], &one["value"]),
        (&json!("SHORT"), &json!("xxxx"))
    );
    let (status, body) = api
        .post(envvar, json!({"name": "1-BAD", "value": "x"}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.post(envvar, json!({"name": "X"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = api.delete(&format!("{envvar}/SHORT")).await;
    assert_eq!(status, 200);
    let (status, body) = api.delete(&format!("{envvar}/SHORT")).await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "Environment variable not found.");
    assert_eq!(
        api.get(envvar).await["items"].as_array().map(Vec::len),
        Some(1)
    );
    // Sealed at rest: the value is nowhere in the database files (WAL included), while
    // its name is (so this search does see what was written).
    let mut db = Vec::new();
    for entry in std::fs::read_dir(tmp.path().join("data")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("gyre.db")
        {
            db.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(
        db.windows(10).any(|w| w == b"DEPLOY_KEY"),
        "the search sees nothing"
    );
    assert!(
        !db.windows(7).any(|w| w == b"hunter2"),
        "plaintext in gyre.db"
    );

    let output_of = |pipeline: Value| {
        let api = &api;
        let logs = &logs;
        async move {
            let id = pipeline["id"].as_str().expect("pipeline id").to_string();
            let wfs = api.get(&format!("/api/v2/pipeline/{id}/workflow")).await;
            let wf = wfs["items"][0]["id"]
                .as_str()
                .expect("workflow")
                .to_string();
            api.wait_job(&wf, "env", "success", logs).await;
            let number = api.job_number(&wf, "env").await;
            api.step_output(number, "show").await
        }
    };

    // A same-repository PR: noted, nothing built; the push of its branch carries it.
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.join("feature.txt"), "1").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "A feature"]);
    let feature = git(&repo, &["rev-parse", "HEAD"]);
    let pr = pull_request_body("opened", 5, "acme/app", "feature", &feature, &base);
    let (status, body) = api.hook("pull_request", "pr-5", pr, SECRET).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (200, Some("pull request #5 noted"))
    );
    assert_eq!(api.pipeline_count().await, 0);
    let push = push_body("acme/app", "refs/heads/feature", &feature);
    let (status, body) = api.hook("push", "push-1", push, SECRET).await;
    assert_eq!(status, 201, "{body}");
    let out = output_of(body).await;
    let url5 = "https://github.invalid/acme/app/pull/5";
    assert!(
        out.contains(&format!(
            "pr=[{url5}] prs=[{url5}] num=[] user=[] repo=[] branch=[feature] secret=[****] oidc=[set]"
        )),
        "{out}"
    );

    // A PR from a fork: GitHub keeps its head at refs/pull/7/head of the base repository.
    let fork = tmp.path().join("fork");
    git(
        tmp.path(),
        &["clone", "-q", &repo.display().to_string(), "fork"],
    );
    git(&fork, &["checkout", "-q", "-b", "patch-1", "origin/main"]);
    std::fs::write(fork.join("fork.txt"), "from a fork").unwrap();
    git(&fork, &["add", "-A"]);
    git(&fork, &["commit", "-qm", "A fork's change"]);
    let forked = git(&fork, &["rev-parse", "HEAD"]);
    git(
        &repo,
        &[
            "fetch",
            "-q",
            &fork.display().to_string(),
            "patch-1:refs/pull/7/head",
        ],
    );
    let pr = pull_request_body("opened", 7, "forker/app", "patch-1", &forked, &base);
    let (status, body) = api.hook("pull_request", "pr-7", pr, SECRET).await;
    assert_eq!(status, 201, "{body}");
    let pipeline = api
        .get(&format!(
            "/api/v2/pipeline/{}",
            body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(pipeline["vcs"]["branch"], "pull/7", "{pipeline}");
    assert_eq!(pipeline["vcs"]["revision"], forked.as_str(), "{pipeline}");
    let out = output_of(body).await;
    let url7 = "https://github.invalid/acme/app/pull/7";
    assert!(
        out.contains(&format!(
            "pr=[{url7}] prs=[{url7}] num=[7] user=[forker] repo=[app] branch=[pull/7] secret=[unset] oidc=[]"
        )),
        "{out}"
    );

    // Closed: the next push of the branch has no pull request.
    let pr = pull_request_body("closed", 5, "acme/app", "feature", &feature, &base);
    let (status, _) = api.hook("pull_request", "pr-5-closed", pr, SECRET).await;
    assert_eq!(status, 200);
    std::fs::write(repo.join("feature.txt"), "2").unwrap();
    git(&repo, &["commit", "-qam", "More"]);
    let again = git(&repo, &["rev-parse", "HEAD"]);
    let push = push_body("acme/app", "refs/heads/feature", &again);
    let (status, body) = api.hook("push", "push-2", push, SECRET).await;
    assert_eq!(status, 201, "{body}");
    let out = output_of(body).await;
    assert!(out.contains("pr=[] prs=[] num=[]"), "{out}");

    // Sealed values are bound to their project and name: one copied onto another variable
    // (by someone who can write the database but holds no key) does not open there. The
    // list still shows it, and a job that would get it fails saying which variable.
    let (status, body) = api
        .post(envvar, json!({"name": "OTHER", "value": "other-value"}))
        .await;
    assert_eq!(status, 201, "{body}");
    copy_sealed_value(&tmp.path().join("data/gyre.db"), "DEPLOY_KEY", "OTHER").await;
    let list = api.get(envvar).await;
    let names: Vec<(&str, &str)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["value"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("DEPLOY_KEY", "xxxxcret"), ("OTHER", "xxxx")]);
    std::fs::write(repo.join("feature.txt"), "3").unwrap();
    git(&repo, &["commit", "-qam", "Even more"]);
    let third = git(&repo, &["rev-parse", "HEAD"]);
    let push = push_body("acme/app", "refs/heads/feature", &third);
    let (status, body) = api.hook("push", "push-3", push, SECRET).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("pipeline id").to_string();
    let wfs = api.get(&format!("/api/v2/pipeline/{id}/workflow")).await;
    let wf = wfs["items"][0]["id"]
        .as_str()
        .expect("workflow")
        .to_string();
    api.wait_job(&wf, "env", "failed", &logs).await;
    let number = api.job_number(&wf, "env").await;
    let out = api
        .step_output(number, "Preparing environment variables")
        .await;
    assert!(
        out.contains("project environment variable OTHER: cannot open the secret"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
}

/// Overwrites the sealed value of variable `to` with that of `from` (same project), in the
/// SQLite database the server is using.
async fn copy_sealed_value(db: &Path, from: &str, to: &str) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .expect("open gyre.db");
    let done = sqlx::query(
        "UPDATE project_env_vars SET value = \
         (SELECT value FROM project_env_vars WHERE name = $1) WHERE name = $2",
    )
    .bind(from)
    .bind(to)
    .execute(&mut conn)
    .await
    .expect("copy the sealed value");
    assert_eq!(done.rows_affected(), 1);
}

const OIDC_CONFIG: &str = r#"version: 2.1
jobs:
  oidc:
    docker: [{image: gyre-test/busybox:latest}]
    steps:
      - run:
          name: tokens
          command: |
            echo "masked=[$CIRCLE_OIDC_TOKEN]"
            # Printed in halves, so the masking of the whole token does not apply.
            for t in "$CIRCLE_OIDC_TOKEN" "$CIRCLE_OIDC_TOKEN_V2"; do
              half=$(( ${#t} / 2 ))
              echo "head=$(echo "$t" | cut -c1-$half)"
              echo "tail=$(echo "$t" | cut -c$(( half + 1 ))-)"
            done
workflows:
  main: {jobs: [oidc]}
"#;

/// Jobs get CircleCI's OIDC tokens (`CIRCLE_OIDC_TOKEN`, `_V2`, masked): RS256 JWTs
/// that verify against the key set the server publishes under its issuer URL, with
/// CircleCI's claims. Checked here with aws-lc-rs, as a cloud provider would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_jobs_get_oidc_tokens_the_server_signs() {
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    fixture_repo_with(&repo, OIDC_CONFIG);
    let (_up, api, log) = start_up(tmp.path(), &[]).await;
    let logs = [log];
    api.add_project(&repo).await;
    let wf = api.trigger(json!({})).await;
    api.wait_job(&wf, "oidc", "success", &logs).await;
    let out = api
        .step_output(api.job_number(&wf, "oidc").await, "tokens")
        .await;
    assert!(out.contains("masked=[****]"), "{out}");
    let field = |key: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
            .collect()
    };
    let (heads, tails) = (field("head="), field("tail="));
    assert_eq!((heads.len(), tails.len()), (2, 2), "{out}");
    let tokens: Vec<String> = heads
        .iter()
        .zip(&tails)
        .map(|(h, t)| format!("{h}{t}"))
        .collect();

    // What a cloud provider reads: discovery, then the key set, both without credentials.
    let public = reqwest::Client::new();
    let discovery: Value = public
        .get(format!("{}/.well-known/openid-configuration", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], api.base.as_str(), "{discovery}");
    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
    assert_eq!(jwks_uri, format!("{}/.well-known/jwks-pub.json", api.base));
    let jwks: Value = public
        .get(jwks_uri)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (&key["kty"], &key["alg"]),
        (&json!("RSA"), &json!("RS256")),
        "{jwks}"
    );
    let decode = |s: &str| b64.decode(s).expect("base64url");
    let public_key = RsaPublicKeyComponents {
        n: decode(key["n"].as_str().unwrap()),
        e: decode(key["e"].as_str().unwrap()),
    };
    assert_eq!(public_key.n.len(), 256, "a 2048-bit key");
    let verify = |token: &str| -> Option<Value> {
        let (input, signature) = token.rsplit_once('.')?;
        public_key
            .verify(
                &RSA_PKCS1_2048_8192_SHA256,
                input.as_bytes(),
                &decode(signature),
            )
            .ok()?;
        let (header, claims) = input.split_once('.')?;
        let header: Value = serde_json::from_slice(&decode(header)).ok()?;
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], key["kid"]);
        serde_json::from_slice(&decode(claims)).ok()
    };
    let v1 = verify(&tokens[0]).unwrap_or_else(|| panic!("V1 does not verify: {}", tokens[0]));
    let v2 = verify(&tokens[1]).unwrap_or_else(|| panic!("V2 does not verify: {}", tokens[1]));
    // The signature covers the claims: one changed character and it no longer verifies.
    let mut forged = tokens[0].clone().into_bytes();
    let at = forged.iter().position(|b| *b == b'.').unwrap() + 5;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    assert!(verify(&String::from_utf8(forged).unwrap()).is_none());

    let project = api.get("/api/v2/project/gh/acme/app").await;
    let org = project["organization_id"].as_str().expect("org id");
    let project_id = project["id"].as_str().expect("project id");
    for claims in [&v1, &v2] {
        assert_eq!(claims["iss"], api.base.as_str(), "{claims}");
        assert_eq!(claims["aud"], org, "{claims}");
        assert_eq!(
            claims["oidc.circleci.com/project-id"], project_id,
            "{claims}"
        );
        assert_eq!(
            claims["oidc.circleci.com/vcs-ref"], "refs/heads/main",
            "{claims}"
        );
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
    }
    let sub = v1["sub"].as_str().unwrap();
    assert!(
        sub.starts_with(&format!("org/{org}/project/{project_id}/user/")),
        "{sub}"
    );
    let origin = v1["oidc.circleci.com/vcs-origin"].as_str().unwrap();
    assert_eq!(
        v2["sub"].as_str().unwrap(),
        format!("{sub}/vcs-origin/{origin}/vcs-ref/refs/heads/main")
    );
}

const CONTEXT_CONFIG: &str = r#"version: 2.1
jobs:
  uses:
    docker: [{image: gyre-test/busybox:latest}]
    steps:
      - run:
          name: show
          # Values are masked whole; their pieces show which value each variable has.
          command: |
            echo "masked=[$REGION]"
            echo "region=$(echo "$REGION" | cut -c1-2) token=$(echo "$DEPLOY_TOKEN" | cut -c1-6) from=$(echo "$FROM_PROJECT" | cut -c6-9)"
workflows:
  main:
    jobs:
      - uses: {context: [org-global, deploy]}
      - uses: {name: missing, context: nowhere}
"#;

/// Contexts through API v2 (CircleCI's codes and messages), given to the jobs that name
/// them (masked, above project variables, a later context winning a name); a job naming
/// a context the organization does not have fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_contexts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    fixture_repo_with(&repo, CONTEXT_CONFIG);
    let (_up, api, log) = start_up(tmp.path(), &[]).await;
    let logs = [log];
    api.add_project(&repo).await;
    let openapi = api.get("/api/v2/openapi.json").await;
    assert!(openapi["paths"].get("/context").is_some(), "{openapi}");
    let mut ids = Vec::new();
    for (name, slug) in [("org-global", "gh/acme"), ("deploy", "github/acme")] {
        let (status, body) = api
            .post(
                "/api/v2/context",
                json!({"name": name, "owner": {"slug": slug, "type": "organization"}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["name"], name);
        ids.push(body["id"].as_str().expect("id").to_string());
    }
    let (status, body) = api
        .post(
            "/api/v2/context",
            json!({"name": "deploy", "owner": {"slug": "gh/acme"}}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = api
        .post(
            "/api/v2/context",
            json!({"name": "x", "owner": {"id": "some-uuid"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("owner"),
        "{body}"
    );
    let list = api.get("/api/v2/context?owner-slug=gh/acme").await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["deploy", "org-global"], "{list}");
    let (global, deploy) = (&ids[0], &ids[1]);
    for (context, name, value) in [
        (global, "REGION", "eu-west-1"),
        (global, "DEPLOY_TOKEN", "global-token-value"),
        (deploy, "DEPLOY_TOKEN", "deploy-token-value"),
        (global, "FROM_PROJECT", "from-context"),
    ] {
        let (status, body) = api
            .put(
                &format!("/api/v2/context/{context}/environment-variable/{name}"),
                json!({"value": value}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (&body["variable"], &body["context_id"]),
            (&json!(name), &json!(context))
        );
    }
    let vars = api
        .get(&format!("/api/v2/context/{global}/environment-variable"))
        .await;
    assert_eq!(vars["items"].as_array().map(Vec::len), Some(3), "{vars}");
    assert!(!vars.to_string().contains("global-token-value"), "{vars}");
    let (status, body) = api
        .put(
            &format!("/api/v2/context/{global}/environment-variable/1BAD"),
            json!({"value": "x"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .post(
            "/api/v2/project/gh/acme/app/envvar",
            json!({"name": "FROM_PROJECT", "value": "from-project"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let wf = api.trigger(json!({})).await;
    api.wait_job(&wf, "uses", "success", &logs).await;
    api.wait_job(&wf, "missing", "failed", &logs).await;
    let out = api
        .step_output(api.job_number(&wf, "uses").await, "show")
        .await;
    assert_eq!(
        out.trim_end(),
        "masked=[****]\nregion=eu token=deploy from=cont",
        "masked; a context's value, the later context's token, the context over the project"
    );
    let out = api
        .step_output(
            api.job_number(&wf, "missing").await,
            "Preparing environment variables",
        )
        .await;
    assert!(
        out.contains("the job uses context nowhere, which gh/acme does not have"),
        "{out}"
    );
    let job = api
        .get(&format!(
            "/api/v2/project/gh/acme/app/job/{}",
            api.job_number(&wf, "uses").await
        ))
        .await;
    assert_eq!(
        job["contexts"],
        json!([{"name": "org-global"}, {"name": "deploy"}]),
        "{job}"
    );

    let (status, body) = api
        .delete(&format!(
            "/api/v2/context/{deploy}/environment-variable/DEPLOY_TOKEN"
        ))
        .await;
    assert_eq!(
        (status, &body["message"]),
        (200, &json!("Environment variable deleted."))
    );
    let (status, _) = api
        .delete(&format!(
            "/api/v2/context/{deploy}/environment-variable/DEPLOY_TOKEN"
        ))
        .await;
    assert_eq!(status, 404);
    let (status, body) = api.delete(&format!("/api/v2/context/{deploy}")).await;
    assert_eq!(
        (status, &body["message"]),
        (200, &json!("Context deleted."))
    );
    let (status, body) = api.delete(&format!("/api/v2/context/{deploy}")).await;
    assert_eq!(
        (status, &body["message"]),
        (404, &json!("Context not found."))
    );
}

const SLOW_CONFIG: &str = r#"version: 2.1
jobs:
  slow:
    docker: [{image: gyre-test/busybox:latest}]
    steps:
      - run: {name: slow, command: "echo started; sleep 3; echo finished"}
workflows:
  main: {jobs: [slow]}
"#;

/// SIGTERM to `gyre up` while a job runs and a reader follows its live log: the job
/// finishes and is recorded, the reader's stream ends, and gyre exits 0. Started again
/// on the same data directory, it shows the job `success` with its whole output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_gyre_up_stops_gracefully() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    fixture_repo_with(&repo, SLOW_CONFIG);
    let port = free_port();
    let log = tmp.path().join("up.log");
    let up_cmd = || up_cmd(tmp.path(), port);
    let mut up = spawn(up_cmd(), &log, "gyre up");
    let api = Api::new(port);
    api.wait_up(&mut [&mut up], std::slice::from_ref(&log))
        .await;
    api.add_project(&repo).await;
    let wf = api.trigger(json!({})).await;
    api.wait_job(&wf, "slow", "running", std::slice::from_ref(&log))
        .await;
    let number = api.job_number(&wf, "slow").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api
        .try_step_output(number, "slow")
        .await
        .is_some_and(|o| o.contains("started"))
    {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A live reader of the task's log.
    let agents = api.get("/api/gyre/v1/agents").await;
    let task = agents["items"][0]["running_tasks"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no running task: {agents}"))
        .to_string();
    let mut reader = api
        .http
        .get(format!("{}/api/gyre/v1/tasks/{task}/log", api.base))
        .header("Circle-Token", TOKEN)
        .send()
        .await
        .expect("SSE");
    assert_eq!(reader.status().as_u16(), 200);

    let pid = up.0.id().to_string();
    let sent = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(status) = up.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "gyre up did not stop:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "gyre up exited {status}");
    // The reader's stream ended (it did not hold the shutdown up).
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = reader.chunk().await {}
    })
    .await;
    assert!(drained.is_ok(), "the live log stream did not end");

    let mut up = spawn(up_cmd(), &tmp.path().join("up-2.log"), "gyre up (again)");
    api.wait_up(&mut [&mut up], std::slice::from_ref(&log))
        .await;
    let jobs = api.jobs(&wf).await;
    assert!(
        jobs.iter().any(|(n, s)| n == "slow" && s == "success"),
        "the job finished during the shutdown: {jobs:?}"
    );
    let out = api.step_output(number, "slow").await;
    assert!(out.contains("started") && out.contains("finished"), "{out}");
}

/// "Only build pull requests": a push to a branch without an open pull request is not
/// built; opening one builds its head (with its URL); later pushes to the branch are
/// built; the default branch always is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_build_prs_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    let base = fixture_repo_with(&repo, PR_CONFIG);
    let (_up, api, log) = start_up(tmp.path(), &[]).await;
    let logs = [log];
    cli_add_project(&api, &repo, &["--build-prs-only"]);

    git(&repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.join("feature.txt"), "1").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "A feature"]);
    let feature = git(&repo, &["rev-parse", "HEAD"]);
    let push = push_body("acme/app", "refs/heads/feature", &feature);
    let (status, body) = api.hook("push", "p-1", push, SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no open pull request"),
        "{body}"
    );
    assert_eq!(api.pipeline_count().await, 0);

    let pr = pull_request_body("opened", 9, "acme/app", "feature", &feature, &base);
    let (status, body) = api.hook("pull_request", "pr-9", pr, SECRET).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let wfs = api.get(&format!("/api/v2/pipeline/{id}/workflow")).await;
    let wf = wfs["items"][0]["id"].as_str().unwrap().to_string();
    api.wait_job(&wf, "env", "success", &logs).await;
    let out = api
        .step_output(api.job_number(&wf, "env").await, "show")
        .await;
    let url = "https://github.invalid/acme/app/pull/9";
    assert!(
        out.contains(&format!("pr=[{url}]")) && out.contains("branch=[feature]"),
        "{out}"
    );
    // Reopened at the same commit: already built, nothing new.
    let pr = pull_request_body("reopened", 9, "acme/app", "feature", &feature, &base);
    let (status, _) = api.hook("pull_request", "pr-9b", pr, SECRET).await;
    assert_eq!(status, 200);
    assert_eq!(api.pipeline_count().await, 1);

    std::fs::write(repo.join("feature.txt"), "2").unwrap();
    git(&repo, &["commit", "-qam", "More"]);
    let next = git(&repo, &["rev-parse", "HEAD"]);
    let push = push_body("acme/app", "refs/heads/feature", &next);
    let (status, body) = api.hook("push", "p-2", push, SECRET).await;
    assert_eq!(
        status, 201,
        "a branch with an open pull request builds: {body}"
    );
    let push = push_body("acme/app", "refs/heads/main", &base);
    let (status, body) = api.hook("push", "p-3", push, SECRET).await;
    assert_eq!(status, 201, "the default branch always builds: {body}");
    assert_eq!(api.pipeline_count().await, 3);
}

const AUTOCANCEL_CONFIG: &str = r#"version: 2.1
parameters:
  sleep: {type: integer, default: 60}
jobs:
  work:
    docker: [{image: gyre-test/busybox:latest}]
    steps: [{run: {name: work, command: "sleep << pipeline.parameters.sleep >>; echo done"}}]
workflows:
  main: {jobs: [work]}
"#;

/// Auto-cancel redundant workflows: with the project's `autocancel_builds` on, a new
/// pipeline on a feature branch cancels the running workflow of the older one on that
/// branch; on the default branch nothing is canceled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_autocancel_redundant_workflows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    fixture_repo_with(&repo, AUTOCANCEL_CONFIG);
    git(&repo, &["branch", "feature"]);
    let (_up, api, log) = start_up(tmp.path(), &["--concurrency", "2"]).await;
    let logs = [log];
    cli_add_project(&api, &repo, &["--autocancel"]);

    let older = api.trigger_on("feature", json!({})).await;
    api.wait_job(&older, "work", "running", &logs).await;
    let newer = api.trigger_on("feature", json!({"sleep": 0})).await;
    api.wait_workflow(&older, "canceled", &logs).await;
    api.wait_workflow(&newer, "success", &logs).await;

    // The default branch keeps every pipeline's workflows.
    let first = api.trigger_on("main", json!({})).await;
    api.wait_job(&first, "work", "running", &logs).await;
    let second = api.trigger_on("main", json!({"sleep": 0})).await;
    api.wait_workflow(&second, "success", &logs).await;
    let w = api.get(&format!("/api/v2/workflow/{first}")).await;
    assert_eq!(w["status"], "running", "{w}");
    let (status, _) = api
        .post(&format!("/api/v2/workflow/{first}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202);
    api.wait_workflow(&first, "canceled", &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_s3_two_agents_survive_a_killed_agent() {
    let db = pg_support::postgres().await;
    let blobs = blob_support::s3();
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    let head = fixture_repo(&repo);
    let port = free_port();
    let server_log = tmp.path().join("server.log");
    let cmd = server_cmd(tmp.path(), port, &db.url, &blobs.url, 4);
    let mut server = spawn(cmd, &server_log, "gyre server");
    let api = Api::new(port);
    api.wait_up(&mut [&mut server], std::slice::from_ref(&server_log))
        .await;
    let agent = |name: &'static str| {
        let log = tmp.path().join(format!("{name}.log"));
        (spawn(agent_cmd(&api.base, name), &log, name), log)
    };
    let (a1, log1) = agent("agent-1");
    let (a2, log2) = agent("agent-2");
    let logs = vec![server_log.clone(), log1, log2];
    api.add_project(&repo).await;

    // 200 copies of one delivery at once: one pipeline.
    let mut sends = Vec::new();
    for _ in 0..200 {
        sends.push(api.push_hook("dup-1", &head, SECRET));
    }
    let results = futures_util::future::join_all(sends).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(
        created,
        1,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(results.iter().all(|(s, _)| *s == 201 || *s == 200));
    assert_eq!(api.pipeline_count().await, 1);
    let wfs = api.get("/api/v2/project/gh/acme/app/pipeline").await;
    let pipeline = wfs["items"][0]["id"].as_str().unwrap().to_string();
    let wfs = api
        .get(&format!("/api/v2/pipeline/{pipeline}/workflow"))
        .await;
    let wf = wfs["items"][0]["id"].as_str().unwrap().to_string();
    api.wait_job(&wf, "hold", "on_hold", &logs).await;
    api.wait_job(&wf, "after-lint", "not_run", &logs).await;

    // Admin view: both agents active.
    let nodes = api.get("/api/gyre/v1/agents").await;
    let names: Vec<&str> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"agent-1") && names.contains(&"agent-2"),
        "{nodes}"
    );

    // An agent killed mid-job: infrastructure_fail within the lease, retried on the
    // other agent, and the job succeeds.
    let wf2 = api.trigger(json!({"sleep": 20})).await;
    api.wait_job(&wf2, "slow", "running", &logs).await;
    let mut holder = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while holder.is_none() {
        let nodes = api.get("/api/gyre/v1/agents").await;
        for a in nodes["items"].as_array().unwrap() {
            let tasks = a["running_tasks"].as_array().unwrap();
            if !tasks.is_empty() {
                // The slow task is the only one left running after the others end.
                let jobs = api.jobs(&wf2).await;
                let others_running = jobs
                    .iter()
                    .filter(|(n, s)| n != "slow" && s == "running")
                    .count();
                if others_running == 0 && tasks.len() == 1 {
                    holder = Some(a["name"].as_str().unwrap().to_string());
                }
            }
        }
        assert!(Instant::now() < deadline, "no agent runs the slow job");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut a1, mut a2) = (a1, a2);
    let victim = if holder.as_deref() == Some("agent-1") {
        &mut a1
    } else {
        &mut a2
    };
    // SIGKILL: no goodbye, no cleanup.
    victim.0.kill().expect("kill -9");
    let killed_at = Instant::now();
    // Retried on the other agent: the job ends success (the sleep is 20 s).
    api.wait_job(&wf2, "slow", "success", &logs).await;
    let job = api.jobs(&wf2).await;
    assert!(job.iter().any(|(n, s)| n == "slow" && s == "success"));
    assert!(
        killed_at.elapsed() > Duration::from_secs(4),
        "the lease must expire first"
    );
    let number = api.job_number(&wf2, "slow").await;
    let details = api
        .get(&format!("/api/v2/project/gh/acme/app/job/{number}"))
        .await;
    assert_eq!(
        details["parallel_runs"][0]["status"], "success",
        "{details}"
    );

    // Leftover containers of the killed agent carry its name; remove them (only them:
    // other tests run their own containers meanwhile).
    let victim_name = holder.expect("the victim");
    let left = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=gyre.agent={victim_name}"),
        ])
        .output()
        .expect("docker ps");
    assert!(
        !String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "the killed agent's container carries its name"
    );
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!(
                "docker ps -aq --filter label=gyre.agent={victim_name} | xargs -r docker rm -f >/dev/null 2>&1"
            ),
        ])
        .status();
}

const RESTART_CONFIG: &str = r#"version: 2.1
jobs:
  count:
    docker: [{image: gyre-test/busybox:latest}]
    steps:
      - run:
          name: count
          command: for i in $(seq 1 << pipeline.parameters.lines >>); do echo "line $i"; sleep 0.1; done
  after:
    docker: [{image: gyre-test/busybox:latest}]
    steps:
      - run: {name: after, command: 'echo "after the restart key=[$DEPLOY_KEY]"; test "$DEPLOY_KEY" = "hunter2-secret" && echo the key matches'}
parameters:
  lines: {type: integer, default: 80}
workflows:
  main:
    jobs:
      - count
      - after: {requires: [count]}
"#;

/// The server is killed with SIGKILL while a job prints, and started again on the same
/// PostgreSQL: the agent keeps the job, the workflow completes, and the log holds every
/// line exactly once, in order, including every line a reader saw before the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_server_restart_mid_workflow_loses_nothing() {
    const LINES: usize = 80;
    let db = pg_support::postgres().await;
    let blobs = blob_support::s3();
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    fixture_repo_with(&repo, RESTART_CONFIG);
    let port = free_port();
    let server_log = tmp.path().join("server.log");
    let second_log = tmp.path().join("server-2.log");
    let agent_log = tmp.path().join("agent.log");
    let logs = vec![server_log.clone(), second_log.clone(), agent_log.clone()];
    // Secrets sealed by OpenBao's transit engine, as in production.
    let bao = bao_support::Bao::start().await;
    let server_cmd = || {
        let mut cmd = server_cmd(tmp.path(), port, &db.url, &blobs.url, 8);
        cmd.args(["--vault-addr", &bao.addr])
            .env("VAULT_TOKEN", &bao.token);
        cmd
    };
    let mut server = spawn(server_cmd(), &server_log, "gyre server");
    let api = Api::new(port);
    api.wait_up(&mut [&mut server], std::slice::from_ref(&server_log))
        .await;
    let _agent = spawn(agent_cmd(&api.base, "agent-r"), &agent_log, "gyre agent");
    api.add_project(&repo).await;
    let (status, body) = api
        .post(
            "/api/v2/project/gh/acme/app/envvar",
            json!({"name": "DEPLOY_KEY", "value": "hunter2-secret"}),
        )
        .await;
    assert_eq!(
        (status, &body["value"]),
        (201, &json!("xxxxcret")),
        "{body}"
    );
    let wf = api.trigger(json!({"lines": LINES})).await;
    api.wait_job(&wf, "count", "running", &logs).await;
    let number = api.job_number(&wf, "count").await;

    // Wait until a reader sees some lines, then crash the server mid-job.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let text = api
            .try_step_output(number, "count")
            .await
            .unwrap_or_default();
        if text.lines().filter(|l| l.starts_with("line ")).count() >= 10 {
            break text;
        }
        assert!(Instant::now() < deadline, "no output:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !seen.contains(&format!("line {LINES}\n")),
        "the job ended before the crash; make it longer:\n{seen}"
    );
    server.0.kill().expect("kill -9 the server");
    let _ = server.0.wait();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut server = spawn(server_cmd(), &second_log, "gyre server (restarted)");
    api.wait_up(&mut [&mut server], std::slice::from_ref(&second_log))
        .await;

    // The workflow goes on: the job finishes on the same agent and its dependant runs.
    api.wait_job(&wf, "after", "success", &logs).await;
    let jobs = api.jobs(&wf).await;
    assert!(
        jobs.iter().any(|(n, s)| n == "count" && s == "success"),
        "{jobs:?}"
    );
    let workflow = api.get(&format!("/api/v2/workflow/{wf}")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = workflow["status"].clone();
    while status != "success" {
        assert!(Instant::now() < deadline, "workflow is {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = api.get(&format!("/api/v2/workflow/{wf}")).await["status"].clone();
    }

    // Every line once, in order; what was seen before the crash is a prefix of it.
    let text = api.step_output(number, "count").await;
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("line ")).collect();
    let expected: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "the log after the restart:\n{text}");
    let seen_lines: Vec<&str> = seen.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(
        &lines[..seen_lines.len()],
        &seen_lines[..],
        "a line acknowledged before the crash changed"
    );
    // The secret reached the job (sealed by transit, opened by the restarted server)
    // and never its log.
    let after = api.job_number(&wf, "after").await;
    let out = api.step_output(after, "after").await;
    assert!(
        out.contains("key=[****]") && out.contains("the key matches"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
    // The agent did see the outage (the crash happened while it was sending).
    let agent_text = std::fs::read_to_string(&agent_log).unwrap_or_default();
    assert!(
        agent_text.contains("sending step events failed; retrying"),
        "{agent_text}"
    );
}

/// Two `gyre server` replicas on one PostgreSQL: the agent talks to replica A, a reader
/// follows the job's live log on replica B. Readers poll SQL only every 60 s here, so B's
/// reader gets every line before the job ends only because A's NOTIFY wakes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_share_live_logs() {
    const LINES: usize = 30;
    let db = pg_support::postgres().await;
    let blobs = blob_support::s3();
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    fixture_repo_with(&repo, RESTART_CONFIG);
    let (port_a, port_b) = (free_port(), free_port());
    let logs: Vec<PathBuf> = ["a.log", "b.log", "agent.log"]
        .iter()
        .map(|n| tmp.path().join(n))
        .collect();
    let replica = |port: u16, dir: &str, log: &Path, what: &'static str| {
        let mut cmd = server_cmd(&tmp.path().join(dir), port, &db.url, &blobs.url, 30);
        cmd.args(["--live-poll-secs", "60"]);
        spawn(cmd, log, what)
    };
    let mut a = replica(port_a, "a", &logs[0], "replica A");
    let mut b = replica(port_b, "b", &logs[1], "replica B");
    let (api_a, api_b) = (Api::new(port_a), Api::new(port_b));
    api_a.wait_up(&mut [&mut a], &logs[..1]).await;
    api_b.wait_up(&mut [&mut b], &logs[1..2]).await;
    let _agent = spawn(agent_cmd(&api_a.base, "agent-a"), &logs[2], "gyre agent");
    api_a.add_project(&repo).await;
    let wf = api_a.trigger(json!({"lines": LINES})).await;
    api_b.wait_job(&wf, "count", "running", &logs).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let task = loop {
        let agents = api_b.get("/api/gyre/v1/agents").await;
        if let Some(t) = agents["items"][0]["running_tasks"][0].as_str() {
            break t.to_string();
        }
        assert!(Instant::now() < deadline, "no running task: {agents}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut reader = api_b
        .http
        .get(format!("{}/api/gyre/v1/tasks/{task}/log", api_b.base))
        .header("Circle-Token", TOKEN)
        .send()
        .await
        .expect("SSE on replica B");
    assert_eq!(reader.status().as_u16(), 200);
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(40), async {
        while let Some(chunk) = reader.chunk().await.expect("SSE chunk") {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: end") {
                return;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "replica B's reader was not woken:\n{text}\n{}",
        logs.iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<String>()
    );
    let lines: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["stream"] == "stdout")
        .flat_map(|e| {
            e["text"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| l.starts_with("line "))
        .collect();
    let expected: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "{text}");
}

/// Bad input gets a 4xx with a JSON message, and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    let head = fixture_repo(&repo);
    let port = free_port();
    let log = tmp.path().join("server.log");
    let mut cmd = gyre();
    cmd.args(["server", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    let mut server = spawn(cmd, &log, "gyre server");
    let api = Api::new(port);
    api.wait_up(&mut [&mut server], std::slice::from_ref(&log))
        .await;
    api.add_project(&repo).await;

    let raw = |method: reqwest::Method, path: &str| {
        api.http.request(method, format!("{}{path}", api.base))
    };
    let check = |status: u16, want: u16, body: &Value| {
        assert_eq!(status, want, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    };
    // No token, a wrong token.
    let r = raw(reqwest::Method::GET, "/api/v2/me")
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, 401, &r.json().await.unwrap());
    let r = raw(reqwest::Method::GET, "/api/v2/me")
        .header("Circle-Token", "nope")
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, 401, &r.json().await.unwrap());
    // Unknown project, unknown pipeline id, malformed id.
    let (s, b) = api
        .post("/api/v2/project/gh/acme/nope/pipeline", json!({}))
        .await;
    check(s, 404, &b);
    let r = raw(reqwest::Method::GET, "/api/v2/pipeline/not-a-uuid")
        .header("Circle-Token", TOKEN)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, 404, &r.json().await.unwrap());
    // Trigger bodies: branch and tag, a non-scalar parameter, an unknown branch.
    let (s, b) = api
        .post(
            "/api/v2/project/gh/acme/app/pipeline",
            json!({"branch": "main", "tag": "v1"}),
        )
        .await;
    check(s, 400, &b);
    let (s, b) = api
        .post(
            "/api/v2/project/gh/acme/app/pipeline",
            json!({"parameters": {"sleep": [1]}}),
        )
        .await;
    check(s, 400, &b);
    let (s, b) = api
        .post(
            "/api/v2/project/gh/acme/app/pipeline",
            json!({"branch": "no-such-branch"}),
        )
        .await;
    check(s, 400, &b);
    assert_eq!(api.pipeline_count().await, 0);
    // An undeclared and a mistyped parameter: the pipeline is created errored, with the
    // compiler's message (as on CircleCI).
    for (params, needle) in [
        (json!({"nope": 1}), "nope"),
        (json!({"sleep": "soon"}), "sleep"),
    ] {
        let (s, b) = api
            .post(
                "/api/v2/project/gh/acme/app/pipeline",
                json!({"parameters": params}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["state"], "errored", "{b}");
        let p = api
            .get(&format!("/api/v2/pipeline/{}", b["id"].as_str().unwrap()))
            .await;
        assert_eq!(p["errors"][0]["type"], "config", "{p}");
        assert!(
            p["errors"][0]["message"].as_str().unwrap().contains(needle),
            "{p}"
        );
    }
    // Webhooks: malformed JSON (signed), unknown project, oversized body.
    let body = b"{not json".to_vec();
    let sig = gyre_server::github::sign(SECRET.as_bytes(), &body);
    let r = raw(reqwest::Method::POST, "/hooks/github")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "m-1")
        .header("X-Hub-Signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, 400, &r.json().await.unwrap());
    let r = raw(reqwest::Method::POST, "/hooks/github")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "m-2")
        .body(json!({"ref": "refs/heads/main", "after": "a".repeat(40), "repository": {"full_name": "x/y"}}).to_string())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, 404, &r.json().await.unwrap());
    // Its own client: the server answers before reading the body, then closes the
    // connection, which a pooled client would try to reuse.
    let r = reqwest::Client::new()
        .post(format!("{}/hooks/github", api.base))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "m-3")
        .body(vec![b' '; 6 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, 413, &r.json().await.unwrap());
    // A trigger body that is not JSON, a wrong method, an unknown API route: JSON too.
    let r = raw(
        reqwest::Method::POST,
        "/api/v2/project/gh/acme/app/pipeline",
    )
    .header("Circle-Token", TOKEN)
    .header("Content-Type", "application/json")
    .body("{nope")
    .send()
    .await
    .unwrap();
    let s = r.status().as_u16();
    check(s, 400, &r.json().await.unwrap());
    let r = raw(reqwest::Method::DELETE, "/api/v2/me")
        .header("Circle-Token", TOKEN)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, 405, &r.json().await.unwrap());
    let r = raw(reqwest::Method::GET, "/api/v2/no/such/route")
        .header("Circle-Token", TOKEN)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, 404, &r.json().await.unwrap());
    assert_eq!(api.pipeline_count().await, 2);
    // A delivery whose repository cannot be fetched is not remembered: GitHub's
    // redelivery of it, once the repository is there, makes the pipeline.
    let late = tmp.path().join("late");
    let (s, b) = api
        .post(
            "/api/gyre/v1/projects",
            json!({"slug": "gh/acme/late", "repo_url": late.display().to_string(),
                   "default_branch": "main", "webhook_secret": SECRET}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api.push_hook_to("acme/late", "late-1", &head, SECRET).await;
    check(s, 502, &b);
    git(
        tmp.path(),
        &["clone", "-q", &repo.display().to_string(), "late"],
    );
    let (s, b) = api.push_hook_to("acme/late", "late-1", &head, SECRET).await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = api.push_hook_to("acme/late", "late-1", &head, SECRET).await;
    assert_eq!(s, 200, "a processed delivery is remembered");
    // Personal API tokens through the CLI: created (shown once), used, listed, revoked.
    let admin = |args: &[&str]| {
        let out = gyre()
            .args(["admin", "token"])
            .args(args)
            .args(["--server", &api.base, "--token", TOKEN])
            .output()
            .expect("gyre admin token");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let created = admin(&["create", "alice"]);
    let token = created
        .lines()
        .nth(1)
        .expect("the token line")
        .trim()
        .to_string();
    let id = created
        .split_whitespace()
        .nth(1)
        .expect("the id")
        .to_string();
    let as_alice = |method: reqwest::Method, path: &str| {
        raw(method, path).header("Circle-Token", token.clone())
    };
    let me: Value = as_alice(reqwest::Method::GET, "/api/v2/me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["login"], "alice", "{me}");
    let r = as_alice(reqwest::Method::POST, "/api/gyre/v1/tokens")
        .json(&json!({"login": "mallory"}))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, 403, &r.json().await.unwrap());
    let listed = admin(&["list"]);
    assert!(listed.contains(&id) && listed.contains("alice"), "{listed}");
    assert!(
        !listed.contains(&token),
        "a listed token is never shown again"
    );
    admin(&["revoke", &id]);
    let r = as_alice(reqwest::Method::GET, "/api/v2/me")
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, 401, &r.json().await.unwrap());
    let (s, b) = api
        .post("/api/gyre/v1/tokens", json!({"login": "no spaces"}))
        .await;
    check(s, 400, &b);
    // Local web users through the CLI; the password comes on stdin.
    let set_user = |login: &str, password: &str| {
        use std::io::Write as _;
        let mut child = gyre()
            .args(["admin", "user", "set", login])
            .args(["--server", &api.base, "--token", TOKEN])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gyre admin user set");
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().expect("wait")
    };
    let out = set_user("ada", "correct horse battery");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("user ada"));
    let out = set_user("bob", "short");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 8 characters"), "{err}");
    let user_cmd = |args: &[&str]| {
        gyre()
            .args(["admin", "user"])
            .args(args)
            .args(["--server", &api.base, "--token", TOKEN])
            .output()
            .expect("gyre admin user")
    };
    let out = user_cmd(&["list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && listed.contains(" ada"), "{listed}");
    assert!(!listed.contains("bob"), "{listed}");
    let out = user_cmd(&["delete", "ada"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = user_cmd(&["delete", "ada"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("User not found."), "{err}");
    let users = api.get("/api/gyre/v1/users").await;
    assert_eq!(users["items"], json!([]), "{users}");
    // A slug sent as one encoded segment routes like the plain one.
    let encoded = api.get("/api/v2/project/gh%2Facme%2Fapp/pipeline").await;
    assert_eq!(
        encoded["items"].as_array().map(Vec::len),
        Some(2),
        "{encoded}"
    );
    let project = api.get("/api/v2/project/gh%2Facme%2Fapp").await;
    assert_eq!(project["slug"], "gh/acme/app", "{project}");
    // The server is still up.
    api.get("/api/v2/me").await;
}
