//! Wire types of gyre's job runtime. Serde only, no IO.
//!
//! - [`TaskSpec`]: one task (one parallel node of one job) for an agent to run: executor,
//!   environment, checkout source and typed steps. Produced by the server (or `gyre local
//!   execute`) from the compiled config, consumed by `gyre-executor`. Versioned by
//!   [`TaskSpec::version`]; readers reject versions they do not know.
//! - [`helper`]: the framing between the executor and the in-job helper process
//!   (`circleci __agent`) that runs the steps inside the container or on the host.

pub mod agent;
pub mod helper;

use serde::{Deserialize, Serialize};

/// Version of [`TaskSpec`] this crate reads and writes.
pub const TASK_SPEC_VERSION: u32 = 1;

/// One task: a job's steps on one parallel node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Always [`TASK_SPEC_VERSION`] when written by this crate.
    pub version: u32,
    /// Identity of the job, used for the built-in `CIRCLE_*` variables (§8.1).
    pub job: JobInfo,
    pub executor: ExecutorSpec,
    /// The job's `working_directory` as written (may start with `~`); default `~/project`.
    #[serde(default = "default_working_directory")]
    pub working_directory: String,
    /// The job's `shell`; `None` means `/bin/bash -eo pipefail`, or `/bin/sh -eo pipefail`
    /// when the primary container has no `/bin/bash`.
    #[serde(default)]
    pub shell: Option<String>,
    /// Project, context and job variables, lowest precedence first (§8.3: project, contexts,
    /// job/executor `environment`). Built-ins are inserted by the executor between contexts
    /// and job variables: see [`EnvVar::source`].
    #[serde(default)]
    pub environment: Vec<EnvVar>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub node: NodeInfo,
    /// Where `checkout` steps take the code from.
    #[serde(default)]
    pub checkout: Option<CheckoutSource>,
    pub steps: Vec<StepSpec>,
}

fn default_working_directory() -> String {
    "~/project".to_owned()
}

/// Identity of the job and pipeline; every field feeds a built-in variable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobInfo {
    /// `CIRCLE_JOB`.
    pub name: String,
    /// `CIRCLE_BRANCH` (unset on tag builds).
    pub branch: Option<String>,
    /// `CIRCLE_TAG` (tag builds only).
    pub tag: Option<String>,
    /// `CIRCLE_SHA1`.
    pub sha1: String,
    /// `CIRCLE_BUILD_NUM`.
    pub build_num: u64,
    pub build_url: String,
    pub workflow_id: String,
    pub workflow_job_id: String,
    pub workflow_workspace_id: String,
    pub pipeline_id: String,
    pub organization_id: String,
    pub project_id: String,
    pub project_username: String,
    pub project_reponame: String,
    pub repository_url: String,
    pub username: String,
    /// URLs of the associated pull requests (`CIRCLE_PULL_REQUEST(S)`).
    pub pull_requests: Vec<String>,
    /// Set when the job builds a pull request from a fork (`CIRCLE_PR_*`); such jobs get
    /// no project secrets unless the project allows it.
    pub fork_pull_request: Option<ForkPullRequest>,
    /// Jobs whose workspace layers `attach_workspace` applies: the job's transitive
    /// upstream in the workflow (§4.12). `None` applies every layer of the workspace.
    pub workspace_upstream: Option<Vec<String>>,
    /// The contexts the workflow gives the job (`context:`), by name; the server adds their
    /// variables when an agent claims the task.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<String>,
    /// OIDC ID tokens of the job (`CIRCLE_OIDC_TOKEN`, `CIRCLE_OIDC_TOKEN_V2`; masked in
    /// output), minted by the server when an agent claims the task and never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc_token_v2: Option<String>,
}

/// A pull request from a fork, as its job sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkPullRequest {
    /// `CIRCLE_PR_NUMBER`.
    pub number: u64,
    /// `CIRCLE_PR_REPONAME`: the fork's repository name.
    pub reponame: String,
    /// `CIRCLE_PR_USERNAME`: who opened the pull request.
    pub username: String,
}

/// One environment variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    /// Project or context secret: masked as `****` in step output (§8.4).
    #[serde(default)]
    pub secret: bool,
    /// Where it comes from; decides its precedence against the built-ins.
    #[serde(default)]
    pub source: EnvSource,
}

/// Origin of an [`EnvVar`] (§8.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvSource {
    /// Project settings: below the built-ins.
    Project,
    /// A context: below the built-ins, above project variables.
    Context,
    /// Job (or executor) `environment`: above the built-ins.
    #[default]
    Job,
}

/// Where and how the steps run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecutorSpec {
    /// Containers; the first image is the primary, where steps run.
    Docker { images: Vec<ContainerSpec> },
    /// Steps run as host processes on the agent's machine.
    Machine {
        #[serde(default)]
        image: Option<String>,
    },
}

/// One container of a Docker executor (§3.4).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerSpec {
    pub image: String,
    /// Extra hostname for the container.
    pub name: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub user: Option<String>,
    /// The container's own process environment (not the steps').
    pub environment: Vec<(String, String)>,
    pub auth: Option<RegistryAuth>,
    /// `aws_auth`: credentials for an ECR image; the executor exchanges them for a
    /// registry password before pulling.
    pub aws_auth: Option<AwsAuth>,
}

/// `aws_auth` of a docker image (§3.4). Values may hold `$VAR`s, expanded from the task's
/// environment at pull time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsAuth {
    /// Static keys (`aws_access_key_id`, `aws_secret_access_key`).
    Keys {
        access_key_id: String,
        secret_access_key: String,
    },
    /// `oidc_role_arn`: a role assumed with the job's OIDC token.
    Oidc { role_arn: String },
}

/// `auth` of a docker image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

/// Limits from the resource class, shared by the task's containers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
}

/// Parallel node (§10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub index: u32,
    pub total: u32,
}

impl Default for NodeInfo {
    fn default() -> Self {
        NodeInfo { index: 0, total: 1 }
    }
}

/// The code `checkout` takes: a git repository readable by the agent, at a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSource {
    /// Path or URL of the repository, as `git clone` takes it.
    pub repository: String,
    /// Commit to check out (a sha or any revision git resolves).
    pub revision: String,
}

/// When a step runs (§4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    Always,
    #[default]
    OnSuccess,
    OnFail,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepSpec {
    Run(RunStep),
    Checkout {
        #[serde(default)]
        path: Option<String>,
        /// `full` (default), `blobless` or `shallow` (§4.4).
        #[serde(default)]
        method: Option<String>,
        /// History depth of `method: shallow` (default 1).
        #[serde(default)]
        depth: Option<u32>,
    },
    SaveCache {
        #[serde(default)]
        name: Option<String>,
        key: String,
        paths: Vec<String>,
        #[serde(default)]
        when: When,
    },
    RestoreCache {
        #[serde(default)]
        name: Option<String>,
        keys: Vec<String>,
    },
    PersistToWorkspace {
        root: String,
        paths: Vec<String>,
    },
    AttachWorkspace {
        at: String,
    },
    StoreArtifacts {
        path: String,
        #[serde(default)]
        destination: Option<String>,
    },
    StoreTestResults {
        path: String,
    },
    AddSshKeys {
        #[serde(default)]
        fingerprints: Vec<String>,
    },
    /// Gives the job a Docker engine when the agent offers one (`--remote-docker`);
    /// otherwise the step fails saying so.
    SetupRemoteDocker {
        #[serde(default)]
        version: Option<String>,
    },
}

/// A `run` step (§4.1).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunStep {
    /// Title; `None` means the command text.
    pub name: Option<String>,
    pub command: String,
    pub shell: Option<String>,
    pub background: bool,
    /// Relative to the job's working directory.
    pub working_directory: Option<String>,
    /// Milliseconds without output before the step is killed; `None` means 10 minutes.
    pub no_output_timeout_ms: Option<u64>,
    pub when: When,
    /// Step environment: highest precedence.
    pub environment: Vec<(String, String)>,
    /// `max_auto_reruns`: how many more times a failed step (non-zero exit, no-output
    /// timeout) runs again; the step's status is its last attempt's. `None` (or `0`) never
    /// reruns. Ignored for background steps.
    pub max_auto_reruns: Option<u32>,
    /// `auto_rerun_delay` in milliseconds: the wait before each rerun; `None` reruns at once.
    pub auto_rerun_delay_ms: Option<u64>,
}

impl StepSpec {
    /// The title shown for the step.
    pub fn display_name(&self) -> String {
        match self {
            StepSpec::Run(run) => run.name.clone().unwrap_or_else(|| run.command.clone()),
            StepSpec::Checkout { .. } => "Checkout code".to_owned(),
            StepSpec::SaveCache { name, .. } => {
                name.clone().unwrap_or_else(|| "Saving Cache".to_owned())
            }
            StepSpec::RestoreCache { name, .. } => {
                name.clone().unwrap_or_else(|| "Restoring Cache".to_owned())
            }
            StepSpec::PersistToWorkspace { .. } => "Persisting to Workspace".to_owned(),
            StepSpec::AttachWorkspace { .. } => "Attaching Workspace".to_owned(),
            StepSpec::StoreArtifacts { .. } => "Uploading artifacts".to_owned(),
            StepSpec::StoreTestResults { .. } => "Uploading test results".to_owned(),
            StepSpec::AddSshKeys { .. } => "Add SSH keys".to_owned(),
            StepSpec::SetupRemoteDocker { .. } => "Setup a remote Docker engine".to_owned(),
        }
    }

    /// When the step runs; `store_*` steps run even after a failure (§4.3).
    pub fn when(&self) -> When {
        match self {
            StepSpec::Run(run) => run.when,
            StepSpec::SaveCache { when, .. } => *when,
            StepSpec::StoreArtifacts { .. } | StepSpec::StoreTestResults { .. } => When::Always,
            _ => When::OnSuccess,
        }
    }
}

impl TaskSpec {
    /// Reads a task from JSON, rejecting unknown versions.
    pub fn from_json(text: &str) -> Result<TaskSpec, String> {
        let task: TaskSpec = serde_json::from_str(text).map_err(|err| err.to_string())?;
        if task.version != TASK_SPEC_VERSION {
            return Err(format!(
                "task spec version {} is not supported (this agent reads version {TASK_SPEC_VERSION})",
                task.version
            ));
        }
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_version() {
        let json = r#"{"version":1,"job":{"name":"build","sha1":"abc"},
            "executor":{"type":"docker","images":[{"image":"busybox"}]},
            "steps":[{"type":"run","command":"echo hi","when":"always"},
                     {"type":"restore_cache","keys":["v1-"]}]}"#;
        let task = TaskSpec::from_json(json).unwrap();
        assert_eq!(task.working_directory, "~/project");
        assert_eq!(task.node, NodeInfo { index: 0, total: 1 });
        assert_eq!(task.steps[0].when(), When::Always);
        assert_eq!(task.steps[0].display_name(), "echo hi");
        let again = serde_json::to_string(&task).unwrap();
        assert_eq!(TaskSpec::from_json(&again).unwrap(), task);
        let err = TaskSpec::from_json(&json.replace("\"version\":1", "\"version\":9")).unwrap_err();
        assert!(err.contains("version 9 is not supported"), "{err}");
    }

    #[test]
    fn run_step_reruns_default_to_none_and_round_trip() {
        let json = r#"{"version":1,"job":{"name":"build"},"executor":{"type":"machine"},
            "steps":[{"type":"run","command":"a"},
                     {"type":"run","command":"b","max_auto_reruns":3,"auto_rerun_delay_ms":2000}]}"#;
        let task = TaskSpec::from_json(json).unwrap();
        let StepSpec::Run(plain) = &task.steps[0] else {
            panic!("not a run step")
        };
        assert_eq!(
            (plain.max_auto_reruns, plain.auto_rerun_delay_ms),
            (None, None)
        );
        let StepSpec::Run(retried) = &task.steps[1] else {
            panic!("not a run step")
        };
        assert_eq!(
            (retried.max_auto_reruns, retried.auto_rerun_delay_ms),
            (Some(3), Some(2000))
        );
        let again = serde_json::to_string(&task).unwrap();
        assert_eq!(TaskSpec::from_json(&again).unwrap(), task);
    }
}
