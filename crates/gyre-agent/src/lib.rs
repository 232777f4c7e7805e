//! The gyre agent: dials the server (agent protocol v1, [`gyre_protocol::agent`]), claims
//! tasks and runs them with gyre-executor.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gyre_agent::Error> {
//! use gyre_agent::AgentConfig;
//! let config = AgentConfig::new(
//!     "https://gyre.example.com",
//!     "join-token",
//!     "agent-1",
//!     "/var/lib/gyre-agent",
//!     "/usr/lib/gyre/circleci",
//! )
//! .resource_classes(["docker/medium", "machine"]);
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! gyre_agent::run(config, async { stopped.await.ok(); }).await
//! # }
//! ```
//!
//! [`run`] registers, then loops: a heartbeat task keeps the agent known (and tells it
//! when it drains); the main loop long-polls claims while fewer than
//! `max_concurrent_tasks` run; each claimed task runs on its own tokio task (module
//! `task`: lease renewal, cancel, events, finish). Every request is retried on network
//! errors and 5xx answers with capped backoff.
//!
//! Needs the multi-thread tokio runtime: the step log sink applies back-pressure with
//! `block_in_place` (module `events`).

mod blobs;
mod client;
mod events;
mod task;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use blobs::HttpStorage;
pub use events::EventSink;
pub use gyre_executor::{JobNetwork, JobSettings, RemoteDocker};

use client::{Backoff, Client, retry};

/// How long one claim waits on the server for a task.
const CLAIM_WAIT: Duration = Duration::from_secs(20);
/// The shortest lease period the agent accepts from the server (renewals every third).
const MIN_LEASE: Duration = Duration::from_secs(3);

/// Settings of an agent.
#[derive(Clone)]
pub struct AgentConfig {
    /// Base URL of the server (`https://gyre.example.com`).
    pub server: String,
    /// Admin or agent join token, used once to register.
    pub token: String,
    /// Unique name of this agent; registering again under it replaces the old registration.
    pub name: String,
    /// Resource classes this agent runs (`docker/medium`, `machine`, …). Default: none,
    /// which claims nothing.
    pub resource_classes: Vec<String>,
    /// The executor's data directory. Blobs go to the server, so nothing is kept here
    /// yet; temporary files use the system temporary directory.
    pub work_dir: PathBuf,
    /// The static `circleci` helper binary (crate `gyre-circleci`).
    pub helper: PathBuf,
    /// Network of Docker jobs' primary containers. Default [`JobNetwork::None`].
    /// # Security
    /// `Host` gives job code the agent's network.
    pub job_network: JobNetwork,
    /// Tasks run at once. Default 1.
    pub max_concurrent_tasks: usize,
    /// Runtime limit, SSH keys and remote Docker of the jobs this agent runs. Default
    /// [`JobSettings::default`] (5 hours, no keys, no Docker engine).
    /// # Security
    /// Every job can ask for any of the keys; [`RemoteDocker::Socket`] gives job code root
    /// on the agent's host.
    pub job: JobSettings,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("resource_classes", &self.resource_classes)
            .field("work_dir", &self.work_dir)
            .field("helper", &self.helper)
            .field("job_network", &self.job_network)
            .field("max_concurrent_tasks", &self.max_concurrent_tasks)
            .field("job", &self.job)
            .finish()
    }
}

impl AgentConfig {
    pub fn new(
        server: impl Into<String>,
        token: impl Into<String>,
        name: impl Into<String>,
        work_dir: impl Into<PathBuf>,
        helper: impl Into<PathBuf>,
    ) -> AgentConfig {
        AgentConfig {
            server: server.into(),
            token: token.into(),
            name: name.into(),
            resource_classes: vec![],
            work_dir: work_dir.into(),
            helper: helper.into(),
            job_network: JobNetwork::None,
            max_concurrent_tasks: 1,
            job: JobSettings::default(),
        }
    }

    pub fn job_settings(mut self, settings: JobSettings) -> Self {
        self.job = settings;
        self
    }

    pub fn resource_classes<S: Into<String>>(
        mut self,
        classes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.resource_classes = classes.into_iter().map(Into::into).collect();
        self
    }

    pub fn job_network(mut self, network: JobNetwork) -> Self {
        self.job_network = network;
        self
    }

    /// At least 1.
    pub fn max_concurrent_tasks(mut self, n: usize) -> Self {
        self.max_concurrent_tasks = n.max(1);
        self
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL is not an http(s) URL.
    #[error("invalid server URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The server could not be reached, or a connection broke, or its answer was not
    /// the expected JSON.
    #[error("{context}: {source}")]
    Http {
        context: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status (401: bad token; 409: the task's lease is
    /// lost; 426: another protocol version).
    #[error("{context}: HTTP {status}: {message}")]
    Status {
        context: String,
        status: u16,
        message: String,
    },
    /// The task's lease is gone.
    #[error("the task's lease is lost")]
    LeaseLost,
    /// The server broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Local files.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Worth trying again: network trouble, 5xx, 408 and 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http { source, .. } => !source.is_builder(),
            Error::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            _ => false,
        }
    }

    /// The server no longer gives this agent the task (409).
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Error::LeaseLost | Error::Status { status: 409, .. })
    }
}

/// Runs the agent until `shutdown` resolves, then lets running tasks end and returns.
///
/// Registration and claims are retried on network errors and 5xx answers until they
/// succeed; another error answer (a bad token, another protocol version) ends the agent
/// with that error, after its running tasks end. A claim in flight when `shutdown`
/// resolves is completed (at most the 20 s long-poll), so no task is claimed and then
/// abandoned. Dropping the returned future instead stops everything at once (containers
/// are removed; the server retries the tasks after their leases expire).
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let config = Arc::new(config);
    let client = Client::new(&config.server, &config.token)?;
    tokio::pin!(shutdown);

    let registered = tokio::select! {
        registered = retry("registering", None, || client.register(&config.name)) => registered?,
        () = &mut shutdown => return Ok(()),
    };
    tracing::info!(agent_id = registered.agent_id, name = %config.name, "registered");
    let client = client.with_token(&registered.token);
    let lease = Duration::from_millis(registered.lease_ms).max(MIN_LEASE);

    let draining = Arc::new(AtomicBool::new(false));
    let heartbeat = tokio::spawn(heartbeat(client.clone(), lease / 3, Arc::clone(&draining)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut stopping = false;
    let mut failure = None;
    let mut backoff = Backoff::new(Duration::from_secs(30));
    while !stopping {
        while let Some(joined) = tasks.try_join_next() {
            log_join(joined);
        }
        if tasks.len() >= config.max_concurrent_tasks || draining.load(Ordering::Relaxed) {
            tokio::select! {
                () = &mut shutdown => stopping = true,
                Some(joined) = tasks.join_next() => log_join(joined),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let claim = client.claim(&config.resource_classes, CLAIM_WAIT);
        tokio::pin!(claim);
        let claimed = tokio::select! {
            claimed = &mut claim => claimed,
            () = &mut shutdown => {
                stopping = true;
                claim.await
            }
        };
        match claimed {
            Ok(Some(assignment)) => {
                backoff = Backoff::new(Duration::from_secs(30));
                tracing::info!(
                    workflow = assignment.task.workflow_id,
                    task = assignment.task.task_id,
                    "claimed a task"
                );
                tasks.spawn(task::run(
                    client.clone(),
                    Arc::clone(&config),
                    lease,
                    assignment,
                ));
            }
            Ok(None) => backoff = Backoff::new(Duration::from_secs(30)),
            Err(err) if err.is_retryable() => {
                let delay = backoff.next_delay();
                tracing::warn!(%err, ?delay, "claim failed; retrying");
                if !stopping {
                    tokio::select! {
                        () = &mut shutdown => stopping = true,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, "claim refused; stopping");
                failure = Some(err);
                stopping = true;
            }
        }
    }
    if !tasks.is_empty() {
        tracing::info!(running = tasks.len(), "stopping: waiting for running tasks");
    }
    while let Some(joined) = tasks.join_next().await {
        log_join(joined);
    }
    heartbeat.abort();
    tracing::info!("stopped");
    failure.map_or(Ok(()), Err)
}

/// Agent heartbeats every `period`; publishes whether the server drains this agent.
async fn heartbeat(client: Client, period: Duration, draining: Arc<AtomicBool>) {
    loop {
        match client.heartbeat().await {
            Ok(answer) => {
                let now = answer.status == "draining";
                if draining.swap(now, Ordering::Relaxed) != now {
                    tracing::info!(status = %answer.status, "agent status changed");
                }
            }
            Err(err) => tracing::warn!(%err, "heartbeat failed"),
        }
        tokio::time::sleep(period).await;
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(err) = joined {
        tracing::error!(%err, "a task runner panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_status() {
        let status = |status| Error::Status {
            context: String::new(),
            status,
            message: String::new(),
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!status(409).is_retryable());
        assert!(status(409).is_lease_lost());
        assert!(Error::LeaseLost.is_lease_lost());
        assert!(!status(500).is_lease_lost());
    }

    #[test]
    fn config_defaults_and_debug_hides_the_token() {
        let config = AgentConfig::new("http://s", "secret", "a", "/w", "/h")
            .resource_classes(["docker/medium"])
            .max_concurrent_tasks(0);
        assert_eq!(config.max_concurrent_tasks, 1);
        assert_eq!(config.job_network, JobNetwork::None);
        assert_eq!(config.job.max_job_runtime, Duration::from_secs(5 * 3600));
        assert_eq!(config.job.remote_docker, RemoteDocker::Off);
        assert_eq!(config.resource_classes, ["docker/medium"]);
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[tokio::test]
    async fn an_unusable_url_fails_before_any_request() {
        let config = AgentConfig::new("ftp://s", "t", "a", "/w", "/h");
        assert!(matches!(
            run(config, std::future::pending()).await,
            Err(Error::InvalidUrl { .. })
        ));
    }
}
