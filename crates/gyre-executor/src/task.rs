//! The step loop shared by both executors (§4.3): decides which steps run, runs `run`
//! steps through the helper, and the other built-in steps through [`Target`] file transfer.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use gyre_protocol::helper::{Done, FrameKind, Request, RunRequest};
use gyre_protocol::{RunStep, StepSpec, TaskSpec, When};

use crate::env::JobEnv;
use crate::logs::{LogChunk, LogSink, Masker, StepStatus, Stream};
use crate::session::{Frame, Session};
use crate::storage::{self, Target};
use crate::{Error, ExecutorConfig, RemoteDocker, TaskOutcome, TaskStatus, ssh_keys, template};

/// Everything a running task needs.
pub(crate) struct Runner<'a> {
    pub task: &'a TaskSpec,
    pub config: &'a ExecutorConfig,
    pub session: Session,
    pub target: Target,
    pub sink: &'a mut dyn LogSink,
    pub env: JobEnv,
    /// Resolved job working directory.
    pub working_dir: String,
    pub task_dir: String,
    pub default_shell: String,
    /// helper request id -> step index, for background steps still talking.
    background: HashMap<u32, usize>,
    maskers: HashMap<(u32, u8), Masker>,
    tests: Vec<crate::TestCase>,
    artifacts: Vec<gyre_protocol::agent::Artifact>,
}

impl<'a> Runner<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        task: &'a TaskSpec,
        config: &'a ExecutorConfig,
        session: Session,
        target: Target,
        sink: &'a mut dyn LogSink,
        env: JobEnv,
        working_dir: String,
        task_dir: String,
    ) -> Runner<'a> {
        let default_shell = match &task.shell {
            Some(shell) => shell.clone(),
            None if session.hello.has_bash => "/bin/bash -eo pipefail".to_owned(),
            None => "/bin/sh -eo pipefail".to_owned(),
        };
        Runner {
            task,
            config,
            session,
            target,
            sink,
            env,
            working_dir,
            task_dir,
            default_shell,
            background: HashMap::new(),
            maskers: HashMap::new(),
            tests: Vec::new(),
            artifacts: Vec::new(),
        }
    }

    /// Creates the working directory and `$BASH_ENV`, then runs every step.
    pub async fn run(mut self) -> Result<(TaskOutcome, Session, Target), Error> {
        let id = self.session.next_id();
        let bash_env = format!("{}/bash.env", self.task_dir);
        let prepared = self
            .session
            .call(
                Request::Prepare {
                    id,
                    dirs: vec![self.working_dir.clone()],
                    files: vec![bash_env],
                },
                id,
            )
            .await?;
        if let Some(error) = prepared.error {
            let outcome = TaskOutcome {
                status: TaskStatus::Failed,
                message: Some(error),
                steps: vec![],
                tests: vec![],
                artifacts: vec![],
            };
            return Ok((outcome, self.session, self.target));
        }

        let mut failed = false;
        let mut halted = false;
        let mut killed = false;
        let mut message = None;
        let mut statuses = Vec::with_capacity(self.task.steps.len());
        let limit = self.config.job.max_job_runtime;
        let deadline = tokio::time::Instant::now().checked_add(limit);
        for (idx, step) in self.task.steps.iter().enumerate() {
            // A killed job runs nothing more, not even `when: always` steps (§4.3).
            let runs = !halted
                && !killed
                && match step.when() {
                    When::Always => true,
                    When::OnSuccess => !failed,
                    When::OnFail => failed,
                };
            let name = step.display_name();
            if !runs {
                self.sink.step_started(idx, &name, None);
                self.sink.step_finished(idx, StepStatus::Skipped);
                statuses.push(StepStatus::Skipped);
                continue;
            }
            let result = match deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.step(idx, &name, step)).await {
                        Ok(result) => result?,
                        Err(_elapsed) => {
                            killed = true;
                            tracing::warn!(step = idx, ?limit, "job runtime limit reached");
                            StepResult::failed(format!(
                                "killed: the job exceeded its maximum runtime of {}",
                                go_duration(limit)
                            ))
                        }
                    }
                }
                None => self.step(idx, &name, step).await?,
            };
            if let Some(text) = result.message.as_ref().filter(|_| !result.logged) {
                self.system(idx, text);
            }
            self.sink.step_finished(idx, result.status);
            if result.status == StepStatus::Failed {
                failed = true;
                message.get_or_insert_with(|| {
                    format!(
                        "step {:?}: {}",
                        name,
                        result.message.clone().unwrap_or_default()
                    )
                });
            }
            halted |= result.halted;
            statuses.push(result.status);
        }
        let outcome = TaskOutcome {
            status: if killed {
                TaskStatus::TimedOut
            } else if failed {
                TaskStatus::Failed
            } else {
                TaskStatus::Success
            },
            message,
            steps: statuses,
            tests: std::mem::take(&mut self.tests),
            artifacts: std::mem::take(&mut self.artifacts),
        };
        Ok((outcome, self.session, self.target))
    }

    /// Runs one step (it logs its own start).
    async fn step(&mut self, idx: usize, name: &str, step: &StepSpec) -> Result<StepResult, Error> {
        match step {
            StepSpec::Run(run) => self.run_step(idx, name, run).await,
            other => {
                self.sink.step_started(idx, name, None);
                Ok(match self.builtin_step(idx, other).await {
                    Ok(()) => StepResult::ok(),
                    Err(err) => StepResult::failed(format!("{err}")),
                })
            }
        }
    }

    fn system(&mut self, step: usize, text: &str) {
        self.sink.chunk(LogChunk {
            step,
            stream: Stream::System,
            timestamp: SystemTime::now(),
            bytes: format!("{text}\n").into_bytes(),
        });
    }

    /// Resolves a path of the config: `~` is the home, relative is under the working dir.
    pub fn resolve(&self, path: &str) -> String {
        resolve_path(&self.session.hello.home, &self.working_dir, path)
    }

    async fn run_step(
        &mut self,
        idx: usize,
        name: &str,
        run: &RunStep,
    ) -> Result<StepResult, Error> {
        let shell = run
            .shell
            .clone()
            .unwrap_or_else(|| self.default_shell.clone());
        self.sink
            .step_started(idx, name, Some(&format!("#!{shell}")));
        let mut env = self.env.vars.clone();
        for (key, value) in &run.environment {
            match env.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => env.push((key.clone(), value.clone())),
            }
        }
        let cwd = match &run.working_directory {
            Some(dir) => self.resolve(dir),
            None => self.working_dir.clone(),
        };
        let timeout = run
            .no_output_timeout_ms
            .unwrap_or(self.config.default_no_output_timeout.as_millis() as u64);
        let halt_file = format!("{}/halt", self.task_dir);
        let request = |id: u32| {
            Request::Run(RunRequest {
                id,
                argv: shell.split_whitespace().map(str::to_owned).collect(),
                script: run.command.clone(),
                env: env.clone(),
                cwd: cwd.clone(),
                no_output_timeout_ms: timeout,
                halt_file: Some(halt_file.clone()),
            })
        };
        if run.background {
            // Background steps never rerun (the compiler rejects `max_auto_reruns` there).
            let id = self.session.next_id();
            self.session.send(&request(id)).await?;
            self.background.insert(id, idx);
            return Ok(StepResult {
                status: StepStatus::Background,
                message: None,
                halted: false,
                logged: false,
            });
        }
        // §4.3: a failed step runs again, whole, up to `max_auto_reruns` more times.
        let attempts = run.max_auto_reruns.unwrap_or(0).saturating_add(1);
        let delay = Duration::from_millis(run.auto_rerun_delay_ms.unwrap_or(0));
        let mut attempt = 1;
        loop {
            let id = self.session.next_id();
            self.session.send(&request(id)).await?;
            let done = self.wait(id, idx).await?;
            let result = step_result(&done, timeout, self.task.resources.memory_bytes);
            // A halted step ends the job after it: nothing is rerun.
            let last = result.status != StepStatus::Failed || result.halted || attempt >= attempts;
            if attempts == 1 {
                return Ok(result);
            }
            // With reruns, each attempt ends with its own message and an attempt line.
            if let Some(text) = &result.message {
                self.system(idx, text);
            }
            if last {
                let outcome = if result.status == StepStatus::Failed {
                    "failed"
                } else {
                    "succeeded"
                };
                self.system(
                    idx,
                    &format!("Step {outcome} (attempt {attempt} of {attempts})"),
                );
                return Ok(StepResult {
                    logged: true,
                    ..result
                });
            }
            let when = if delay.is_zero() {
                "now".to_owned()
            } else {
                format!("in {}", go_duration(delay))
            };
            self.system(
                idx,
                &format!("Step failed (attempt {attempt} of {attempts}); rerunning {when}"),
            );
            self.pause(delay).await?;
            attempt += 1;
        }
    }

    /// Next frame from the helper; an error when it is gone.
    async fn next_frame(&mut self) -> Result<Frame, Error> {
        self.session
            .recv()
            .await
            .ok_or_else(|| Error::Helper("the helper exited during a step".to_owned()))?
    }

    /// Pumps frames until `Done` of `id`, routing output of background steps too.
    async fn wait(&mut self, id: u32, idx: usize) -> Result<Done, Error> {
        loop {
            let frame = self.next_frame().await?;
            if let Some(done) = self.route(frame, Some((id, idx)))? {
                return Ok(done);
            }
        }
    }

    /// Waits `delay` (before a rerun) while still taking the output of background steps, so
    /// they never block on a full pipe.
    async fn pause(&mut self, delay: Duration) -> Result<(), Error> {
        let Some(deadline) = tokio::time::Instant::now().checked_add(delay) else {
            // Beyond the clock's range: wait as long as the helper lives.
            loop {
                let frame = self.next_frame().await?;
                self.route(frame, None)?;
            }
        };
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Err(_elapsed) => return Ok(()),
                Ok(frame) => {
                    self.route(frame?, None)?;
                }
            }
        }
    }

    /// Logs one frame under its step: the foreground step `current` (request id, step
    /// index) or a background step. Returns `Done` of the foreground request.
    fn route(
        &mut self,
        frame: Frame,
        current: Option<(u32, usize)>,
    ) -> Result<Option<Done>, Error> {
        let step = match current {
            Some((id, idx)) if frame.id == id => Some(idx),
            _ => self.background.get(&frame.id).copied(),
        };
        let Some(step) = step else { return Ok(None) };
        match frame.kind {
            FrameKind::Stdout | FrameKind::Stderr => {
                let key = (frame.id, frame.kind as u8);
                let secrets = &self.env.secrets;
                let masker = self
                    .maskers
                    .entry(key)
                    .or_insert_with(|| Masker::new(secrets.iter().map(String::as_str)));
                let bytes = masker.push(&frame.payload);
                self.emit(step, frame.kind, bytes);
            }
            FrameKind::Done => {
                self.flush(frame.id, step);
                let done: Done = serde_json::from_slice(&frame.payload)
                    .map_err(|err| Error::Helper(format!("bad done frame: {err}")))?;
                if current.is_some_and(|(id, _)| id == frame.id) {
                    return Ok(Some(done));
                }
                self.background.remove(&frame.id);
                tracing::debug!(step, ?done, "background step ended");
            }
            FrameKind::Hello => {}
        }
        Ok(None)
    }

    fn flush(&mut self, id: u32, step: usize) {
        for kind in [FrameKind::Stdout, FrameKind::Stderr] {
            if let Some(mut masker) = self.maskers.remove(&(id, kind as u8)) {
                let rest = masker.flush();
                self.emit(step, kind, rest);
            }
        }
    }

    fn emit(&mut self, step: usize, kind: FrameKind, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let stream = if kind == FrameKind::Stderr {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        self.sink.chunk(LogChunk {
            step,
            stream,
            timestamp: SystemTime::now(),
            bytes,
        });
    }

    /// Runs a shell snippet for the executor's own needs (checksum files etc.).
    async fn builtin_step(&mut self, idx: usize, step: &StepSpec) -> Result<(), Error> {
        match step {
            StepSpec::Run(_) => Ok(()),
            StepSpec::Checkout {
                path,
                method,
                depth,
            } => {
                let method = storage::CheckoutMethod::parse(method.as_deref(), *depth)?;
                let Some(source) = self.task.checkout.clone() else {
                    return Err(Error::InvalidTask(
                        "checkout: the task has no checkout source".into(),
                    ));
                };
                let dest = self.resolve(path.as_deref().unwrap_or("."));
                let notes =
                    storage::checkout(&self.target, &self.session.hello, &source, &dest, method)
                        .await?;
                for note in notes {
                    self.system(idx, &note);
                }
                Ok(())
            }
            StepSpec::SaveCache { key, paths, .. } => {
                let key = self.render(key).await?;
                let paths: Vec<String> = paths.iter().map(|p| self.resolve(p)).collect();
                let home = self.session.hello.home.clone();
                let note =
                    storage::save_cache(&self.target, &*self.config.storage, &key, &paths, &home)
                        .await?;
                self.system(idx, &note);
                Ok(())
            }
            StepSpec::RestoreCache { keys, .. } => {
                let mut rendered = Vec::new();
                for key in keys {
                    rendered.push(self.render(key).await?);
                }
                let home = self.session.hello.home.clone();
                let note =
                    storage::restore_cache(&self.target, &*self.config.storage, &rendered, &home)
                        .await?;
                self.system(idx, &note);
                Ok(())
            }
            StepSpec::PersistToWorkspace { root, paths } => {
                let root = self.resolve(root);
                let note = storage::persist_workspace(
                    &self.target,
                    &*self.config.storage,
                    &self.task.job.workflow_workspace_id,
                    &self.task.job.name,
                    self.task.node.index,
                    &root,
                    paths,
                )
                .await?;
                self.system(idx, &note);
                Ok(())
            }
            StepSpec::AttachWorkspace { at } => {
                let at = self.resolve(at);
                let note = storage::attach_workspace(
                    &self.target,
                    &*self.config.storage,
                    &self.task.job.workflow_workspace_id,
                    self.task.job.workspace_upstream.as_deref(),
                    &at,
                )
                .await?;
                self.system(idx, &note);
                Ok(())
            }
            StepSpec::StoreArtifacts { path, destination } => {
                let source = self.resolve(path);
                let stored = storage::store_artifacts(
                    &self.target,
                    &self.config.storage,
                    &self.task.job,
                    self.task.node.index,
                    &source,
                    destination.as_deref(),
                )
                .await?;
                self.system(idx, &format!("Uploaded {} artifact(s)", stored.len()));
                self.artifacts.extend(stored);
                Ok(())
            }
            StepSpec::StoreTestResults { path } => {
                let source = self.resolve(path);
                let tests = storage::store_test_results(
                    &self.target,
                    &*self.config.storage,
                    &self.task.job.name,
                    &source,
                )
                .await?;
                self.system(idx, &format!("Found {} test case(s)", tests.len()));
                self.tests.extend(tests);
                Ok(())
            }
            StepSpec::AddSshKeys { fingerprints } => {
                let note = self.add_ssh_keys(fingerprints).await?;
                self.system(idx, &note);
                Ok(())
            }
            StepSpec::SetupRemoteDocker { version } => {
                let note = self.setup_remote_docker(version.as_deref())?;
                self.system(idx, &note);
                Ok(())
            }
        }
    }

    /// `setup_remote_docker` (§4.5): with `--remote-docker socket`, later steps get
    /// `DOCKER_HOST` naming the host's engine (mounted into Docker jobs); otherwise an error.
    fn setup_remote_docker(&mut self, version: Option<&str>) -> Result<String, Error> {
        let RemoteDocker::Socket(socket) = &self.config.job.remote_docker else {
            return Err(Error::Step(
                "setup_remote_docker: this agent gives jobs no Docker engine. Its operator can \
                 start it with `--remote-docker socket`, which gives jobs the host's Docker engine"
                    .to_owned(),
            ));
        };
        let path = match self.target {
            Target::Docker { .. } => crate::docker::REMOTE_DOCKER_SOCKET.to_owned(),
            Target::Machine => socket.display().to_string(),
        };
        let host = format!("unix://{path}");
        match self.env.vars.iter_mut().find(|(k, _)| k == "DOCKER_HOST") {
            Some(slot) => slot.1 = host.clone(),
            None => self.env.vars.push(("DOCKER_HOST".to_owned(), host.clone())),
        }
        let mut note = format!(
            "Remote Docker: the agent host's engine, DOCKER_HOST={host} for the next steps. \
             Like CircleCI's remote engine, its containers do not see this job's files or localhost"
        );
        if let Some(version) = version {
            note.push_str(&format!(
                " (version {version:?} asked for; the host's version is used)"
            ));
        }
        Ok(note)
    }

    /// `add_ssh_keys`: the requested keys (all when none is named) of the agent's key
    /// directory into `~/.ssh`, plus `IdentityFile` lines in `~/.ssh/config`.
    async fn add_ssh_keys(&mut self, fingerprints: &[String]) -> Result<String, Error> {
        let Some(dir) = &self.config.job.ssh_keys_dir else {
            if fingerprints.is_empty() {
                return Ok("No SSH keys are configured on this agent; nothing added".to_owned());
            }
            return Err(Error::Step(format!(
                "add_ssh_keys: this agent has no SSH keys (start it with --ssh-keys-dir); cannot add {}",
                fingerprints.join(", ")
            )));
        };
        let keys = ssh_keys::load(dir)?;
        let chosen = ssh_keys::select(&keys, fingerprints)?;
        let ssh_dir = format!("{}/.ssh", self.session.hello.home.trim_end_matches('/'));
        let config_path = format!("{ssh_dir}/config");
        let mut config = storage::read_file_if_any(&self.target, &config_path)
            .await?
            .unwrap_or_default();
        if !config.is_empty() && !config.ends_with(b"\n") {
            config.push(b'\n');
        }
        config.extend(ssh_keys::config_entries(&ssh_dir, &chosen).into_bytes());
        let mut entries = vec![storage::NewEntry {
            path: ssh_dir.clone(),
            mode: 0o700,
            contents: None,
        }];
        let mut names = Vec::new();
        for key in &chosen {
            names.push(format!("{} ({})", key.file_name(), key.md5));
            entries.push(storage::NewEntry {
                path: format!("{ssh_dir}/{}", key.file_name()),
                mode: 0o600,
                contents: Some(key.private.clone()),
            });
        }
        entries.push(storage::NewEntry {
            path: config_path,
            mode: 0o600,
            contents: Some(config),
        });
        let owner = (self.session.hello.uid, self.session.hello.gid);
        storage::write_entries(&self.target, owner, entries).await?;
        Ok(format!(
            "Added {} SSH key(s) to {ssh_dir}: {}",
            chosen.len(),
            names.join(", ")
        ))
    }

    /// Renders a cache key; `checksum` reads files through the target.
    async fn render(&mut self, key: &str) -> Result<String, Error> {
        let mut files = HashMap::new();
        for file in template::checksum_files(key) {
            let path = self.resolve(&file);
            let bytes = storage::read_file(&self.target, &path).await?;
            files.insert(file, bytes);
        }
        let env: HashMap<String, String> = self.env.vars.iter().cloned().collect();
        template::render_key(key, &env, &self.session.hello.arch, &files)
    }
}

/// `~`, `~/x`, absolute, or relative to `working_dir`.
pub(crate) fn resolve_path(home: &str, working_dir: &str, path: &str) -> String {
    let joined = if path == "~" {
        home.to_owned()
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{}/{rest}", home.trim_end_matches('/'))
    } else if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", working_dir.trim_end_matches('/'))
    };
    normalize(&joined)
}

fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

struct StepResult {
    status: StepStatus,
    message: Option<String>,
    halted: bool,
    /// `message` is already in the step's log.
    logged: bool,
}

impl StepResult {
    fn ok() -> StepResult {
        StepResult {
            status: StepStatus::Success,
            message: None,
            halted: false,
            logged: false,
        }
    }
    fn failed(message: String) -> StepResult {
        StepResult {
            status: StepStatus::Failed,
            message: Some(message),
            halted: false,
            logged: false,
        }
    }
}

/// `memory_limit`: the task's limit, named when the OOM killer ended the step.
fn step_result(done: &Done, timeout_ms: u64, memory_limit: Option<u64>) -> StepResult {
    let failed = |message: String| StepResult {
        halted: done.halted,
        ..StepResult::failed(message)
    };
    if let Some(error) = &done.error {
        return failed(error.clone());
    }
    if done.timed_out {
        return failed(format!(
            "Too long with no output (exceeded {}): context deadline exceeded",
            go_duration(Duration::from_millis(timeout_ms))
        ));
    }
    if done.oom_killed {
        return failed(match memory_limit {
            Some(limit) => format!("killed: out of memory (limit {})", human_bytes(limit)),
            None => "killed: out of memory".to_owned(),
        });
    }
    match (done.exit_code, done.signal) {
        (Some(0), _) => StepResult {
            halted: done.halted,
            ..StepResult::ok()
        },
        (Some(127), _) => failed("Exited with code exit status 127 (command not found)".to_owned()),
        (Some(code), _) => failed(format!("Exited with code exit status {code}")),
        (None, Some(9)) => failed("Killed by signal 9 (SIGKILL), exit status 137".to_owned()),
        (None, Some(signal)) => failed(format!("Killed by signal {signal}")),
        (None, None) => failed("the step ended without an exit status".to_owned()),
    }
}

/// `2 GiB`, `64 MiB`, `1.5 GiB`, `512 B`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in units {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            let text = format!("{value:.1}");
            return format!("{} {unit}", text.trim_end_matches(".0"));
        }
    }
    format!("{bytes} B")
}

/// Go's `time.Duration` text: `10m0s`, `5s`, `1h30m0s`, `1.5s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    let (h, m) = (ms / 3_600_000, (ms / 60_000) % 60);
    let s = (ms % 60_000) as f64 / 1000.0;
    let secs = if s.fract() == 0.0 {
        format!("{}s", s as u64)
    } else {
        format!("{s}s")
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_durations() {
        assert_eq!(resolve_path("/root", "/root/project", "."), "/root/project");
        assert_eq!(
            resolve_path("/root", "/root/project", "~/x/../y"),
            "/root/y"
        );
        assert_eq!(resolve_path("/root", "/w", "sub/dir"), "/w/sub/dir");
        assert_eq!(resolve_path("/root", "/w", "/abs/"), "/abs");
        assert_eq!(go_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(3900)), "1h5m0s");
        assert_eq!(human_bytes(2 << 30), "2 GiB");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(100), "100 B");
    }
}
