//! Runs one task ([`gyre_protocol::TaskSpec`]): a CircleCI job's steps on one parallel node.
//!
//! ```no_run
//! # async fn demo(task: gyre_protocol::TaskSpec) -> Result<(), gyre_executor::Error> {
//! use gyre_executor::{Executor, ExecutorConfig, MemorySink};
//! let config = ExecutorConfig::new("/var/lib/gyre", "/usr/lib/gyre/circleci");
//! let executor = Executor::for_task(&task, config).await?;
//! let mut sink = MemorySink::default();
//! let outcome = executor.run(&task, &mut sink).await?;
//! println!("{:?}: {}", outcome.status, sink.text());
//! # Ok(()) }
//! ```
//!
//! Steps run through a helper process (`circleci __agent`, crate `gyre-circleci`) started
//! once per task: inside the primary container by one `docker exec`, or on the host. The
//! executor sends it requests and receives framed output, so a step costs a process spawn
//! rather than a `docker exec` round trip.

mod docker;
mod env;
mod junit;
mod logs;
mod machine;
mod registry;
mod session;
mod ssh_keys;
mod storage;
mod task;
mod template;
mod unpack;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use docker::{DockerExecutor, JobNetwork, PullPolicy};
pub use junit::{TestCase, TestResult, parse_junit};
pub use logs::{LogChunk, LogSink, Masker, MemorySink, NullSink, StepStatus, Stream};
pub use machine::MachineExecutor;
pub use storage::{LocalStorage, Storage, StorageFuture};
pub use template::render_key;

use gyre_protocol::agent::Artifact;
use gyre_protocol::{ExecutorSpec, TaskSpec};

/// Errors that stop the executor itself (as opposed to a failing job, which is a
/// [`TaskOutcome`] with [`TaskStatus::Failed`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Docker engine could not be reached or refused a request.
    #[error("docker: {context}")]
    Docker {
        context: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// A container image is not there and could not be pulled.
    #[error("image {image} is not available locally and could not be pulled: {reason}")]
    ImageUnavailable { image: String, reason: String },
    /// The step helper misbehaved or went away.
    #[error("step helper: {0}")]
    Helper(String),
    /// Local file system (data directory, temporary files, the helper binary).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The task cannot run as specified.
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// A built-in step cannot do what it was asked (an unknown SSH key fingerprint, no
    /// Docker engine to offer...): the step fails with this message.
    #[error("{0}")]
    Step(String),
    /// A storage backend failed.
    #[error("storage: {0}")]
    Storage(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Settings of an executor. Defaults are safe: network `none` for Docker jobs,
/// pulls only when an image is missing, a 10 minute no-output timeout.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// The directory [`ExecutorConfig::new`] puts the default [`LocalStorage`] in.
    pub data_dir: PathBuf,
    /// Where caches, workspaces, artifacts and test results are stored.
    /// Default: a [`LocalStorage`] on `data_dir`.
    pub storage: Arc<dyn Storage>,
    /// The static `circleci` binary (crate `gyre-circleci`), copied into containers and
    /// run on the host by the machine executor.
    pub helper: PathBuf,
    /// Network of the primary container. Default [`JobNetwork::None`].
    /// # Security
    /// `Host` gives job code the agent's network.
    pub job_network: JobNetwork,
    /// Default [`PullPolicy::IfMissing`].
    pub pull: PullPolicy,
    /// No-output timeout of `run` steps that set none. Default 10 minutes.
    pub default_no_output_timeout: Duration,
    /// Machine executor: the `HOME` of steps. Default: a fresh directory per task.
    pub machine_home: Option<PathBuf>,
    /// Label put on every container, with the task's own id, so leftovers can be found.
    pub label: String,
    /// More labels for every container (e.g. the agent's name).
    pub extra_labels: Vec<(String, String)>,
    /// Runtime limit, SSH keys and remote Docker: see [`JobSettings`].
    pub job: JobSettings,
    /// Endpoints of the AWS services `aws_auth` calls. Default: AWS's own.
    pub aws: AwsEndpoints,
}

/// What jobs may use and for how long: the operator's settings of an agent (or of
/// `gyre local execute`), the same for every task it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSettings {
    /// Longest time a task's steps may take (CircleCI's job runtime limit); then the
    /// running step is killed and the task fails. Default 5 hours.
    pub max_job_runtime: Duration,
    /// Directory of SSH private keys that `add_ssh_keys` hands to jobs (each key with
    /// its `.pub` next to it, or in OpenSSH format). Default: none.
    /// # Security
    /// Every job can ask for any of these keys.
    pub ssh_keys_dir: Option<PathBuf>,
    /// What `setup_remote_docker` gives jobs. Default [`RemoteDocker::Off`].
    pub remote_docker: RemoteDocker,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            max_job_runtime: Duration::from_secs(5 * 3600),
            ssh_keys_dir: None,
            remote_docker: RemoteDocker::Off,
        }
    }
}

/// What `setup_remote_docker` does (agent setting `--remote-docker`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RemoteDocker {
    /// The step fails, saying that this agent offers no Docker engine.
    #[default]
    Off,
    /// The host's Docker engine socket (this path) is given to the job: mounted into
    /// Docker jobs' primary container, and named by `DOCKER_HOST` after the step.
    /// # Security
    /// The Docker socket gives job code root on the host.
    Socket(PathBuf),
}

/// Where `aws_auth` sends its requests: `None` is AWS's regional endpoint
/// (`https://api.ecr.<region>.amazonaws.com/`, `https://sts.<region>.amazonaws.com/`).
/// Tests point these at a local stub.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsEndpoints {
    pub ecr: Option<String>,
    pub sts: Option<String>,
}

impl ExecutorConfig {
    pub fn new(data_dir: impl Into<PathBuf>, helper: impl Into<PathBuf>) -> ExecutorConfig {
        let data_dir = data_dir.into();
        ExecutorConfig {
            storage: Arc::new(LocalStorage::new(&data_dir)),
            data_dir,
            helper: helper.into(),
            job_network: JobNetwork::None,
            pull: PullPolicy::IfMissing,
            default_no_output_timeout: Duration::from_secs(600),
            machine_home: None,
            label: "gyre.task".to_owned(),
            extra_labels: Vec::new(),
            job: JobSettings::default(),
            aws: AwsEndpoints::default(),
        }
    }

    pub fn job_settings(mut self, settings: JobSettings) -> Self {
        self.job = settings;
        self
    }

    pub fn max_job_runtime(mut self, limit: Duration) -> Self {
        self.job.max_job_runtime = limit;
        self
    }

    pub fn ssh_keys_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.job.ssh_keys_dir = Some(dir.into());
        self
    }

    pub fn remote_docker(mut self, remote: RemoteDocker) -> Self {
        self.job.remote_docker = remote;
        self
    }

    /// Replaces the default [`LocalStorage`] on the data directory.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    pub fn job_network(mut self, network: JobNetwork) -> Self {
        self.job_network = network;
        self
    }

    pub fn pull(mut self, pull: PullPolicy) -> Self {
        self.pull = pull;
        self
    }

    pub fn default_no_output_timeout(mut self, timeout: Duration) -> Self {
        self.default_no_output_timeout = timeout;
        self
    }

    /// Adds a label to every container.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_labels.push((key.into(), value.into()));
        self
    }

    pub fn machine_home(mut self, home: impl Into<PathBuf>) -> Self {
        self.machine_home = Some(home.into());
        self
    }
}

/// The closed set of executors.
pub enum Executor {
    Docker(DockerExecutor),
    Machine(MachineExecutor),
}

impl Executor {
    /// The executor the task asks for (connects to Docker for Docker tasks).
    pub async fn for_task(task: &TaskSpec, config: ExecutorConfig) -> Result<Executor, Error> {
        Ok(match task.executor {
            ExecutorSpec::Docker { .. } => Executor::Docker(DockerExecutor::connect(config).await?),
            ExecutorSpec::Machine { .. } => Executor::Machine(MachineExecutor::new(config)),
        })
    }

    /// Runs the task to its end; every container is removed whatever happens, also when
    /// this future is dropped.
    pub async fn run(&self, task: &TaskSpec, sink: &mut dyn LogSink) -> Result<TaskOutcome, Error> {
        match self {
            Executor::Docker(docker) => docker.run(task, sink).await,
            Executor::Machine(machine) => machine.run(task, sink).await,
        }
    }
}

/// Final status of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    Success,
    Failed,
    /// Killed by the job runtime limit (CircleCI's `timedout`).
    TimedOut,
}

/// What a task did.
#[derive(Clone, Debug)]
pub struct TaskOutcome {
    pub status: TaskStatus,
    /// Why the task failed, when it failed before or outside a step (e.g. a missing image)
    /// or in a step (the step's failure message).
    pub message: Option<String>,
    /// Per step, in order.
    pub steps: Vec<StepStatus>,
    /// Test cases from `store_test_results`.
    pub tests: Vec<TestCase>,
    /// Artifacts stored: the path shown (`destination/relative/path`), its storage key
    /// (`artifacts/<job>/<build>/<node>/<path>`) and the node.
    pub artifacts: Vec<Artifact>,
}
