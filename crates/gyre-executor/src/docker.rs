//! Docker executor (§11.1) through the Docker Engine API.
//!
//! The primary container runs `circleci __keepalive` as its process (the image's ENTRYPOINT
//! and CMD are ignored unless the config sets `entrypoint`/`command`); the helper binary is
//! copied into `/.gyre` before the container starts; one `docker exec` starts the step
//! helper. Secondary containers join the primary's network namespace, so services answer on
//! `localhost`. Every container is removed at the end, also on error or when the future is
//! dropped ([`Cleanup`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use gyre_protocol::{ContainerSpec, ExecutorSpec, StepSpec, TaskSpec};
use tokio::sync::mpsc;

use crate::env::{EnvPaths, job_env};
use crate::logs::LogSink;
use crate::session::{Frame, FramePump, Session};
use crate::storage::{self, Target};
use crate::task::{Runner, resolve_path};
use crate::{Error, ExecutorConfig, RemoteDocker, TaskOutcome, TaskStatus, registry};

const GYRE_DIR: &str = "/.gyre";
const TASK_DIR: &str = "/.gyre/task";
/// Bind-mounted host directory holding the frame socket.
const IO_DIR: &str = "/.gyre/io";
const FRAMES: &str = "frames";
/// Where the host's Docker socket appears in the primary container (`--remote-docker`).
pub(crate) const REMOTE_DOCKER_SOCKET: &str = "/.gyre/docker.sock";

/// Network of the primary container (agent setting `--job-network`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum JobNetwork {
    /// Docker's default network (a bridge).
    Default,
    /// No network but loopback.
    #[default]
    None,
    /// The host's network.
    Host,
    /// A named Docker network.
    Named(String),
}

impl JobNetwork {
    fn mode(&self) -> Option<String> {
        match self {
            JobNetwork::Default => None,
            JobNetwork::None => Some("none".to_owned()),
            JobNetwork::Host => Some("host".to_owned()),
            JobNetwork::Named(name) => Some(name.clone()),
        }
    }
}

/// When images are pulled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull only images that are not present.
    #[default]
    IfMissing,
    /// Never pull: a missing image fails the task.
    Never,
}

/// Runs tasks in containers.
pub struct DockerExecutor {
    docker: Docker,
    config: ExecutorConfig,
}

impl DockerExecutor {
    /// Connects to the local engine (`DOCKER_HOST` or the unix socket) and negotiates the
    /// API version.
    pub async fn connect(config: ExecutorConfig) -> Result<DockerExecutor, Error> {
        let docker = Docker::connect_with_local_defaults().map_err(|source| Error::Docker {
            context: "connecting to the Docker engine".to_owned(),
            source,
        })?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|source| Error::Docker {
                context: "negotiating the Docker API version (is dockerd running?)".to_owned(),
                source,
            })?;
        Ok(DockerExecutor { docker, config })
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Runs `task`; see [`crate::Executor::run`].
    pub async fn run(&self, task: &TaskSpec, sink: &mut dyn LogSink) -> Result<TaskOutcome, Error> {
        let ExecutorSpec::Docker { images } = &task.executor else {
            return Err(Error::InvalidTask("not a docker task".to_owned()));
        };
        if images.is_empty() {
            return Err(Error::InvalidTask(
                "a docker executor needs at least one image".to_owned(),
            ));
        }
        // `image` and `auth` values may name the task's variables (§8.2); `aws_auth` with
        // `oidc_role_arn` takes the job's OIDC token.
        let oidc = task
            .job
            .oidc_token
            .as_ref()
            .map(|t| ("CIRCLE_OIDC_TOKEN".to_owned(), t.clone()));
        let vars: Vec<(String, String)> = task
            .environment
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .chain(oidc)
            .collect();
        let images: Vec<ContainerSpec> = images
            .iter()
            .map(|spec| ContainerSpec {
                image: registry::image(spec, &vars),
                ..spec.clone()
            })
            .collect();
        let images = images.as_slice();
        let cleanup = Cleanup::new(self.docker.clone());
        let result = self.run_inner(task, images, &vars, sink, &cleanup).await;
        let result = match result {
            Err(err @ (Error::Docker { .. } | Error::Helper(_))) => {
                // An entrypoint or command that exits ends the job (§3.4): say so.
                match self.primary_exit(&cleanup).await {
                    Some(code) => Ok(failed(format!(
                        "the primary container ({}) exited with code {code}: its entrypoint/command ended, which ends the job ({err})",
                        images[0].image
                    ))),
                    None => Err(err),
                }
            }
            other => other,
        };
        cleanup.remove_all().await;
        match result {
            Ok(outcome) => Ok(outcome),
            Err(err @ Error::ImageUnavailable { .. }) => Ok(failed(err.to_string())),
            Err(err) => Err(err),
        }
    }

    /// Exit code of the primary container if it stopped (waiting up to 2 s for a container
    /// that is still going down).
    async fn primary_exit(&self, cleanup: &Cleanup) -> Option<i64> {
        let primary = cleanup.first()?;
        for _ in 0..10 {
            let inspect = self
                .docker
                .inspect_container(
                    &primary,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .ok()?;
            let state = inspect.state?;
            if state.running == Some(false) {
                return Some(state.exit_code.unwrap_or(-1));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        None
    }

    async fn run_inner(
        &self,
        task: &TaskSpec,
        images: &[ContainerSpec],
        vars: &[(String, String)],
        sink: &mut dyn LogSink,
        cleanup: &Cleanup,
    ) -> Result<TaskOutcome, Error> {
        let mut image_env = Vec::new();
        for (i, spec) in images.iter().enumerate() {
            let env = self.ensure_image(spec, vars).await?;
            if i == 0 {
                image_env = env;
            }
        }
        let task_id = task_label(task);
        let io = FramePipe::new()?;
        let primary = self
            .create_primary(task, &images[0], &task_id, cleanup, io.as_ref())
            .await?;
        self.install_helper(&primary).await?;
        self.start(&primary).await?;
        for (i, spec) in images.iter().enumerate().skip(1) {
            let id = self
                .create_secondary(task, spec, i, &primary, &task_id, cleanup)
                .await?;
            self.start(&id).await?;
        }
        let session = self
            .start_helper(&primary, images[0].user.as_deref(), io)
            .await?;
        let home = session.hello.home.clone();
        let working_dir = resolve_path(&home, &home, &task.working_directory);
        let bash_env = format!("{TASK_DIR}/bash.env");
        let env = job_env(
            task,
            &image_env,
            &EnvPaths {
                task_dir: TASK_DIR,
                bash_env: &bash_env,
                home: &home,
                helper_bin_dir: "/.gyre/bin",
            },
        );
        let target = Target::Docker {
            docker: self.docker.clone(),
            container: primary.clone(),
        };
        let owner = (session.hello.uid, session.hello.gid);
        storage::install_timings(
            &target,
            &*self.config.storage,
            &task.job.name,
            TASK_DIR,
            owner,
        )
        .await?;
        let runner = Runner::new(
            task,
            &self.config,
            session,
            target,
            sink,
            env,
            working_dir,
            TASK_DIR.to_owned(),
        );
        let (outcome, session, _target) = runner.run().await?;
        session.close().await;
        Ok(outcome)
    }

    /// Makes sure the image is present (pulling it if allowed); returns its environment.
    async fn ensure_image(
        &self,
        spec: &ContainerSpec,
        vars: &[(String, String)],
    ) -> Result<Vec<(String, String)>, Error> {
        if let Ok(image) = self.docker.inspect_image(&spec.image).await {
            return Ok(split_env(
                image.config.and_then(|c| c.env).unwrap_or_default(),
            ));
        }
        if self.config.pull == PullPolicy::Never {
            return Err(Error::ImageUnavailable {
                image: spec.image.clone(),
                reason: "pulling is disabled".to_owned(),
            });
        }
        let credentials = registry::credentials(spec, &spec.image, vars, &self.config.aws).await?;
        let (name, tag) = split_reference(&spec.image);
        let mut options = CreateImageOptionsBuilder::default().from_image(name);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        tracing::info!(image = %spec.image, authenticated = credentials.is_some(), "pulling");
        let mut pull = self
            .docker
            .create_image(Some(options.build()), None, credentials);
        while let Some(progress) = pull.next().await {
            if let Err(err) = progress {
                return Err(Error::ImageUnavailable {
                    image: spec.image.clone(),
                    reason: err.to_string(),
                });
            }
        }
        match self.docker.inspect_image(&spec.image).await {
            Ok(image) => Ok(split_env(
                image.config.and_then(|c| c.env).unwrap_or_default(),
            )),
            Err(err) => Err(Error::ImageUnavailable {
                image: spec.image.clone(),
                reason: err.to_string(),
            }),
        }
    }

    fn host_config(&self, task: &TaskSpec, network_mode: Option<String>) -> HostConfig {
        let memory = task.resources.memory_bytes.map(|m| m as i64);
        HostConfig {
            network_mode,
            memory,
            memory_swap: memory,
            nano_cpus: task.resources.cpus.map(|c| (c * 1e9) as i64),
            ..Default::default()
        }
    }

    async fn create_primary(
        &self,
        task: &TaskSpec,
        spec: &ContainerSpec,
        task_id: &str,
        cleanup: &Cleanup,
        io: Option<&FramePipe>,
    ) -> Result<String, Error> {
        let configured = spec.entrypoint.is_some() || spec.command.is_some();
        let (entrypoint, cmd) = if configured {
            (spec.entrypoint.clone(), spec.command.clone())
        } else {
            (
                Some(vec![
                    format!("{GYRE_DIR}/bin/circleci"),
                    "__keepalive".to_owned(),
                ]),
                Some(vec![]),
            )
        };
        let mut host_config = self.host_config(task, self.config.job_network.mode());
        let mut binds = Vec::new();
        if let Some(io) = io {
            binds.push(format!("{}:{IO_DIR}", io.dir.path().display()));
        }
        // `setup_remote_docker` with `--remote-docker socket`: the host engine's socket.
        if let RemoteDocker::Socket(socket) = &self.config.job.remote_docker
            && task
                .steps
                .iter()
                .any(|s| matches!(s, StepSpec::SetupRemoteDocker { .. }))
        {
            binds.push(format!("{}:{REMOTE_DOCKER_SOCKET}", socket.display()));
        }
        if !binds.is_empty() {
            host_config.binds = Some(binds);
        }
        // All containers share the primary's network namespace: a service's `name` is
        // one more name for localhost (the host network has its own /etc/hosts).
        let names: Vec<String> = task_images(task)
            .iter()
            .skip(1)
            .filter_map(|c| c.name.as_ref())
            .map(|name| format!("{name}:127.0.0.1"))
            .collect();
        if !names.is_empty() && self.config.job_network != JobNetwork::Host {
            host_config.extra_hosts = Some(names);
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint,
            cmd,
            user: spec.user.clone(),
            env: Some(
                spec.environment
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            hostname: spec.name.clone(),
            labels: Some(self.labels(task_id)),
            host_config: Some(host_config),
            ..Default::default()
        };
        self.create(&format!("{task_id}-0"), body, cleanup).await
    }

    async fn create_secondary(
        &self,
        task: &TaskSpec,
        spec: &ContainerSpec,
        index: usize,
        primary: &str,
        task_id: &str,
        cleanup: &Cleanup,
    ) -> Result<String, Error> {
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.command.clone(),
            user: spec.user.clone(),
            env: Some(
                spec.environment
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            labels: Some(self.labels(task_id)),
            host_config: Some(self.host_config(task, Some(format!("container:{primary}")))),
            ..Default::default()
        };
        self.create(&format!("{task_id}-{index}"), body, cleanup)
            .await
    }

    async fn create(
        &self,
        name: &str,
        body: ContainerCreateBody,
        cleanup: &Cleanup,
    ) -> Result<String, Error> {
        let image = body.image.clone().unwrap_or_default();
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|source| Error::Docker {
                context: format!("creating a container from {image}"),
                source,
            })?;
        cleanup.add(&created.id);
        Ok(created.id)
    }

    /// The labels of the task's containers: the task label and the configured extras.
    fn labels(&self, task_id: &str) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> =
            self.config.extra_labels.iter().cloned().collect();
        labels.insert(self.config.label.clone(), task_id.to_owned());
        labels
    }

    async fn start(&self, id: &str) -> Result<(), Error> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|source| Error::Docker {
                context: "starting a container".to_owned(),
                source,
            })
    }

    /// Copies the helper to `/.gyre/bin/circleci` (+ `circleci-agent`) and creates the task
    /// directory (mode 1777, so any `user` can write it).
    async fn install_helper(&self, container: &str) -> Result<(), Error> {
        let helper = std::fs::read(&self.config.helper).map_err(|e| {
            Error::io(
                format!("reading the helper {}", self.config.helper.display()),
                e,
            )
        })?;
        let mut builder = tar::Builder::new(Vec::new());
        let dir = |builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(mode);
            header.set_size(0);
            builder.append_data(&mut header, path, std::io::empty())
        };
        let built = (|| -> std::io::Result<Vec<u8>> {
            dir(&mut builder, ".gyre", 0o755)?;
            dir(&mut builder, ".gyre/bin", 0o755)?;
            dir(&mut builder, ".gyre/task", 0o1777)?;
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o755);
            header.set_size(helper.len() as u64);
            builder.append_data(&mut header, ".gyre/bin/circleci", helper.as_slice())?;
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_mode(0o777);
            link.set_size(0);
            builder.append_link(&mut link, ".gyre/bin/circleci-agent", "circleci")?;
            builder.into_inner()
        })()
        .map_err(|e| Error::io("packing the helper", e))?;
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        self.docker
            .upload_to_container(container, Some(options), bollard::body_full(built.into()))
            .await
            .map_err(|source| Error::Docker {
                context: "copying the helper into the container".to_owned(),
                source,
            })
    }

    async fn start_helper(
        &self,
        container: &str,
        user: Option<&str>,
        io: Option<FramePipe>,
    ) -> Result<Session, Error> {
        let mut cmd = vec![format!("{GYRE_DIR}/bin/circleci"), "__agent".to_owned()];
        if io.is_some() {
            cmd.extend(["--frames".to_owned(), format!("{IO_DIR}/{FRAMES}")]);
        }
        let exec = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd),
                    user: user.map(str::to_owned),
                    ..Default::default()
                },
            )
            .await
            .map_err(|source| Error::Docker {
                context: "starting the step helper".to_owned(),
                source,
            })?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|source| Error::Docker {
                context: "attaching to the step helper".to_owned(),
                source,
            })?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(Error::Helper("the helper exec did not attach".to_owned()));
        };
        let (tx, rx) = mpsc::channel::<Result<Frame, Error>>(64);
        // The helper sends frames through exactly one of the pipe and its stdout.
        if let Some(io) = io {
            let tx = tx.clone();
            tokio::spawn(async move { io.pump(tx).await });
        }
        tokio::spawn(async move {
            let mut pump = FramePump::new(tx);
            while let Some(item) = output.next().await {
                match item {
                    Ok(bollard::container::LogOutput::StdOut { message }) => {
                        if !pump.push(&message).await {
                            return;
                        }
                    }
                    Ok(other) => {
                        tracing::debug!(output = %String::from_utf8_lossy(&other.into_bytes()), "helper stderr");
                    }
                    Err(err) => return pump.fail(format!("helper stream: {err}")).await,
                }
            }
        });
        Session::start(input, rx).await
    }
}

/// A named pipe (FIFO) in a host directory bind-mounted into the primary container: the
/// helper writes frames there, a plain kernel copy, instead of through the engine's exec
/// stream (which costs ~10 ns a byte). A pipe rather than a unix socket: it holds 1 MiB
/// (a socket's send buffer is capped at ~208 KiB without `CAP_NET_ADMIN`), so heavy output
/// passes with fewer wake-ups. When the engine is on another host the helper cannot open
/// it and falls back to stdout.
struct FramePipe {
    dir: tempfile::TempDir,
    receiver: tokio::net::unix::pipe::Receiver,
}

impl FramePipe {
    /// `None` when no pipe can be made here (the exec stream is used then).
    fn new() -> Result<Option<FramePipe>, Error> {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("gyre-io-")
            .tempdir()
            .map_err(|e| Error::io("creating the frame pipe directory", e))?;
        let path = dir.path().join(FRAMES);
        if let Err(err) = mknodat(CWD, &path, FileType::Fifo, Mode::from_raw_mode(0o600), 0) {
            tracing::debug!(%err, "no frame pipe; using the exec stream");
            return Ok(None);
        }
        // Any container user must be able to open it.
        for (p, mode) in [(dir.path(), 0o755), (path.as_path(), 0o666)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("frame pipe permissions", e))?;
        }
        // Opened now (non-blocking, no writer needed), so the helper's open never waits.
        let receiver = match tokio::net::unix::pipe::OpenOptions::new().open_receiver(&path) {
            Ok(receiver) => receiver,
            Err(err) => {
                tracing::debug!(%err, "no frame pipe; using the exec stream");
                return Ok(None);
            }
        };
        // Best effort: heavy output comes in rounds of up to 1 MiB.
        let _ = rustix::pipe::fcntl_setpipe_size(&receiver, 1 << 20);
        Ok(Some(FramePipe { dir, receiver }))
    }

    /// Forwards the helper's frames until it closes the pipe; nothing if it never writes
    /// within 30 s (it fell back to stdout). Once the helper has written, the pipe's name
    /// is removed, so job processes cannot open it and write into the frame stream.
    async fn pump(self, tx: mpsc::Sender<Result<Frame, Error>>) {
        let FramePipe { dir, receiver } = self;
        let first =
            tokio::time::timeout(std::time::Duration::from_secs(30), receiver.readable()).await;
        if matches!(first, Ok(Ok(()))) {
            // The helper has it open: nothing else in the container may open it now.
            let _ = std::fs::remove_file(dir.path().join(FRAMES));
            FramePump::new(tx)
                .run(receiver, 1 << 20, "frame pipe")
                .await;
        }
        drop(dir);
    }
}

fn task_images(task: &TaskSpec) -> &[ContainerSpec] {
    match &task.executor {
        ExecutorSpec::Docker { images } => images,
        ExecutorSpec::Machine { .. } => &[],
    }
}

fn failed(message: String) -> TaskOutcome {
    TaskOutcome {
        status: TaskStatus::Failed,
        message: Some(message),
        steps: vec![],
        tests: vec![],
        artifacts: vec![],
    }
}

/// (name, tag) of an image reference for a pull: `latest` when it names no tag (the
/// engine would pull every tag), none for a digest (`name@sha256:…` is pulled as is).
fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => (
            &image[..last_slash + colon],
            Some(&image[last_slash + colon + 1..]),
        ),
        None => (image, Some("latest")),
    }
}

fn split_env(env: Vec<String>) -> Vec<(String, String)> {
    env.into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// A unique, docker-safe name for the task's containers.
fn task_label(task: &TaskSpec) -> String {
    let job: String = task
        .job
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("gyre-{job}-{}-{nanos}", task.node.index)
}

/// Removes the task's containers: explicitly at the end, or from `Drop` if the task's
/// future was dropped (cancel, timeout), on a thread of its own.
struct Cleanup {
    docker: Docker,
    ids: Arc<Mutex<Vec<String>>>,
}

impl Cleanup {
    fn new(docker: Docker) -> Cleanup {
        Cleanup {
            docker,
            ids: Arc::default(),
        }
    }

    fn add(&self, id: &str) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id.to_owned());
        }
    }

    fn first(&self) -> Option<String> {
        self.ids.lock().ok()?.first().cloned()
    }

    fn take(&self) -> Vec<String> {
        self.ids
            .lock()
            .map(|mut ids| std::mem::take(&mut *ids))
            .unwrap_or_default()
    }

    async fn remove_all(&self) {
        remove(&self.docker, self.take()).await;
    }
}

async fn remove(docker: &Docker, ids: Vec<String>) {
    for id in ids.iter().rev() {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(err) = docker.remove_container(id, Some(options)).await {
            tracing::warn!(container = %id, %err, "could not remove a container");
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = self.take();
        if ids.is_empty() {
            return;
        }
        // The runtime may be shutting down: use a thread and a runtime of our own.
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(docker) = Docker::connect_with_local_defaults()
                    && let Ok(docker) = docker.negotiate_version().await
                {
                    remove(&docker, ids).await;
                }
            });
        });
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_for_pulls() {
        assert_eq!(split_reference("busybox"), ("busybox", Some("latest")));
        assert_eq!(
            split_reference("cimg/node:20.1"),
            ("cimg/node", Some("20.1"))
        );
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app", Some("latest"))
        );
        assert_eq!(
            split_reference("localhost:5000/app:v2"),
            ("localhost:5000/app", Some("v2"))
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app@sha256:abc", None));
    }
}
