//! Job, workflow and pipeline statuses, spelled exactly as CircleCI's API v2 spells them
//! (serde, [`as_str`](JobStatus::as_str) and [`FromStr`](std::str::FromStr) all use the
//! wire strings), and the transitions the state machine may make.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A string that is not one of a status enum's wire values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status '{value}'")]
pub struct UnknownStatus {
    /// `job`, `workflow` or `pipeline`.
    pub kind: &'static str,
    pub value: String,
}

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($(#[$vdoc:meta])* $variant:ident = $wire:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $wire)] $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, UnknownStatus> {
                match s {
                    $($wire => Ok($name::$variant),)*
                    _ => Err(UnknownStatus { kind: $kind, value: s.to_string() }),
                }
            }
        }
    };
}

wire_enum! {
    /// A job's status (API v2 `Job.status`, spec §12.1). Tasks (parallel runs) use the
    /// same values.
    JobStatus, "job" {
        /// All steps passed; an approval was approved; a no-op job was reached.
        Success = "success",
        Running = "running",
        /// Will never run: a requirement ended in a status it does not accept.
        NotRun = "not_run",
        /// A step failed.
        Failed = "failed",
        /// Superseded by a rerun. Not produced by the state machine.
        Retried = "retried",
        /// Ready; its tasks wait in the queue for an agent.
        Queued = "queued",
        /// Legacy pre-start state. Not produced by the state machine.
        NotRunning = "not_running",
        /// Lost agent (lease expired twice) or an agent-reported infrastructure error.
        InfrastructureFail = "infrastructure_fail",
        Timedout = "timedout",
        /// An approval job waiting for approval.
        OnHold = "on_hold",
        /// Lost task. Not produced by the state machine.
        TerminatedUnknown = "terminated-unknown",
        /// Waiting for its requirements to finish.
        Blocked = "blocked",
        Canceled = "canceled",
        /// A restricted context was denied. Not produced by the state machine yet.
        Unauthorized = "unauthorized",
    }
}

wire_enum! {
    /// A workflow's status (API v2 `Workflow.status`, spec §12.2).
    WorkflowStatus, "workflow" {
        Success = "success",
        Running = "running",
        /// Nothing to run: every job was filtered out.
        NotRun = "not_run",
        Failed = "failed",
        /// Internal error starting a job. Not produced by the state machine.
        Error = "error",
        /// A job failed while others still run or wait for approval.
        Failing = "failing",
        /// Only approval jobs wait.
        OnHold = "on_hold",
        Canceled = "canceled",
        Unauthorized = "unauthorized",
    }
}

wire_enum! {
    /// A pipeline's state (API v2 `Pipeline.state`).
    PipelineStatus, "pipeline" {
        /// Workflows were created from the compiled config.
        Created = "created",
        /// The config could not be fetched or compiled.
        Errored = "errored",
        /// A setup config's workflow has not continued the pipeline yet.
        SetupPending = "setup-pending",
        /// A setup config's workflow continued the pipeline.
        Setup = "setup",
        /// Just triggered: config being fetched and compiled.
        Pending = "pending",
    }
}

/// How a task (one parallel node of a job) ended, as the agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskResult {
    Success,
    Failed,
    InfrastructureFail,
    Timedout,
    Canceled,
}

impl TaskResult {
    /// Every value.
    pub const ALL: &'static [TaskResult] = &[
        TaskResult::Success,
        TaskResult::Failed,
        TaskResult::InfrastructureFail,
        TaskResult::Timedout,
        TaskResult::Canceled,
    ];

    /// The task status this result gives.
    pub fn status(self) -> JobStatus {
        match self {
            TaskResult::Success => JobStatus::Success,
            TaskResult::Failed => JobStatus::Failed,
            TaskResult::InfrastructureFail => JobStatus::InfrastructureFail,
            TaskResult::Timedout => JobStatus::Timedout,
            TaskResult::Canceled => JobStatus::Canceled,
        }
    }
}

impl JobStatus {
    /// Final: the job will not change again (except through a rerun).
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            JobStatus::Blocked
                | JobStatus::Queued
                | JobStatus::NotRunning
                | JobStatus::Running
                | JobStatus::OnHold
        )
    }

    /// A failure in the sense of `requires: [{x: failed}]` and of the workflow status:
    /// `failed`, `infrastructure_fail`, `timedout`, `terminated-unknown` (spec §12.1:
    /// "`failed` ⇐ failed, likely also infrastructure_fail, timedout").
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            JobStatus::Failed
                | JobStatus::InfrastructureFail
                | JobStatus::Timedout
                | JobStatus::TerminatedUnknown
        )
    }

    /// The status a `requires` entry matches this final status with, if any.
    pub fn as_required(self) -> Option<gyre_config::plan::RequiredStatus> {
        use gyre_config::plan::RequiredStatus as R;
        match self {
            JobStatus::Success => Some(R::Success),
            s if s.is_failure() => Some(R::Failed),
            JobStatus::Canceled => Some(R::Canceled),
            JobStatus::Unauthorized => Some(R::Unauthorized),
            JobStatus::NotRun => Some(R::NotRun),
            _ => None,
        }
    }

    /// Whether the state machine may move a job from `self` to `to` while a workflow
    /// runs. Reruns are the only way out of a terminal status (see
    /// [`Event::RerunFromStart`](crate::Event::RerunFromStart)).
    pub fn can_become(self, to: JobStatus) -> bool {
        use JobStatus::*;
        match self {
            Blocked => matches!(to, Queued | OnHold | Success | NotRun | Canceled),
            Queued | NotRunning => matches!(
                to,
                Running | Success | Failed | InfrastructureFail | Timedout | Canceled
            ),
            Running => matches!(
                to,
                Success | Failed | InfrastructureFail | Timedout | Canceled
            ),
            OnHold => matches!(to, Success | Canceled),
            _ => false,
        }
    }
}

impl WorkflowStatus {
    /// Final: nothing in the workflow will change again (except through a rerun).
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            WorkflowStatus::Running | WorkflowStatus::Failing | WorkflowStatus::OnHold
        )
    }

    /// The transitions of spec §12.2 (`queued` aside: serial groups are not modelled).
    pub fn can_become(self, to: WorkflowStatus) -> bool {
        use WorkflowStatus::*;
        match self {
            Running => matches!(
                to,
                Success | Failing | Failed | OnHold | Canceled | Error | Unauthorized
            ),
            Failing => matches!(to, Failed | Canceled),
            OnHold => matches!(to, Running | Success | Canceled),
            _ => false,
        }
    }
}
