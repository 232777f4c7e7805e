//! The agent protocol: JSON over HTTP, agents dial out to the server (no inbound ports).
//! `docs/agent-protocol.md` is the prose version; this module is the contract.
//!
//! Every request but [`Register`] carries `Authorization: Bearer <agent token>` (the token
//! [`Registered`] returned). Errors are 4xx/5xx with a JSON [`ErrorBody`].
//!
//! | Method and path                                   | Body → answer                        |
//! |---------------------------------------------------|--------------------------------------|
//! | `POST /agent/v1/register` (admin or join token)   | [`Register`] → [`Registered`]        |
//! | `POST /agent/v1/claim`                            | [`Claim`] → 200 [`Assignment`] / 204 |
//! | `POST /agent/v1/heartbeat`                        | – → [`AgentHeartbeat`]               |
//! | `POST /agent/v1/tasks/{workflow}/{task}/lease`    | – → [`Lease`] (409: lease lost)      |
//! | `POST /agent/v1/tasks/{workflow}/{task}/events`   | [`Events`] → [`EventsAck`]           |
//! | `POST /agent/v1/tasks/{workflow}/{task}/finish`   | [`Finish`] → 204                     |
//! | `PUT  /agent/v1/blobs/{key}?only_new=true`        | bytes → [`BlobStored`]               |
//! | `GET  /agent/v1/blobs/{key}`                      | – → bytes / 404                      |
//! | `GET  /agent/v1/blobs?prefix=P`                   | – → [`BlobList`]                     |

use serde::{Deserialize, Serialize};

use crate::TaskSpec;

/// Version of this protocol; the server rejects agents speaking another one (426).
pub const AGENT_PROTOCOL_VERSION: u32 = 1;

/// Longest long-poll a claim may ask for.
pub const MAX_CLAIM_WAIT_MS: u64 = 30_000;

/// Error body of every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// An agent introduces itself. Sent with the admin token or an agent join token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    pub protocol: u32,
    /// Unique name; registering the same name again replaces the old registration
    /// (its running tasks' leases then expire as usual).
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub agent_id: u64,
    /// Bearer token for every later request; the server keeps only its hash.
    pub token: String,
    /// How long a task lease lasts; renew well before (a third of it is a good period).
    pub lease_ms: u64,
}

/// Ask for one task; the server holds the request up to `wait_ms` until one is queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Resource classes this agent runs (`docker`/`medium`, `machine`, …); see
    /// `docs/agent-protocol.md` for the class names.
    pub resource_classes: Vec<String>,
    #[serde(default)]
    pub wait_ms: u64,
}

/// Identity of a task on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub workflow_id: u64,
    pub task_id: u64,
}

/// A claimed task: the agent holds its lease until `lease_expires_at_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: TaskRef,
    pub lease_expires_at_ms: i64,
    pub spec: TaskSpec,
}

/// Answer to an agent heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHeartbeat {
    /// `active` or `draining` (a draining agent must not claim).
    pub status: String,
}

/// Answer to a lease renewal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub lease_expires_at_ms: i64,
    /// The task was canceled: stop it and finish with `canceled`.
    pub cancel: bool,
}

/// A batch of step events. `seq` numbers start at 0 for each task attempt and increase by
/// one per event; the server stores each `seq` once, so resending a batch after a lost
/// answer is safe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<StepEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEvent {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Index of the step in the task spec's step list.
    pub step: u32,
    #[serde(flatten)]
    pub kind: StepEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepEventKind {
    Started {
        name: String,
        /// The shell line for `run` steps.
        #[serde(default)]
        header: Option<String>,
    },
    /// Output, already masked. `data` is base64 (standard alphabet).
    Output {
        stream: OutputStream,
        data: String,
    },
    Finished {
        status: StepOutcome,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
    /// gyre's own notes (errors, cache hits, …).
    System,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Success,
    Failed,
    Skipped,
    Background,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsAck {
    /// Every event up to and including this `seq` is stored (durable).
    pub stored_through: Option<u64>,
}

/// How the task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEnd {
    Success,
    Failed,
    /// The agent could not run it (image missing, executor broken, …).
    InfrastructureFail,
    Timedout,
    Canceled,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub result: TaskEnd,
    #[serde(default)]
    pub message: Option<String>,
    /// Test cases from `store_test_results`.
    #[serde(default)]
    pub tests: Vec<TestCase>,
    /// Artifacts stored (blob keys under `artifacts/`), as `(path shown, blob key)`.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    pub name: String,
    #[serde(default)]
    pub classname: String,
    #[serde(default)]
    pub file: Option<String>,
    /// `success`, `failure`, `error` or `skipped`.
    pub result: String,
    #[serde(default)]
    pub run_time: f64,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The artifact's path as CircleCI shows it (`destination/relative/path`).
    pub path: String,
    /// Where its bytes are (`GET /agent/v1/blobs/{key}` or object storage).
    pub key: String,
    pub node_index: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStored {
    /// `false` when `only_new` was asked and the key already existed.
    pub stored: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobList {
    pub blobs: Vec<BlobEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    pub key: String,
    /// Last modification, ms since the Unix epoch.
    pub modified_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_events_have_a_flat_tagged_shape() {
        let e = StepEvent {
            seq: 3,
            at_ms: 10,
            step: 1,
            kind: StepEventKind::Output {
                stream: OutputStream::Stderr,
                data: "aGk=".into(),
            },
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq": 3, "at_ms": 10, "step": 1, "type": "output",
                "stream": "stderr", "data": "aGk="})
        );
        let back: StepEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn finish_defaults_optional_fields() {
        let f: Finish = serde_json::from_str(r#"{"result":"infrastructure_fail"}"#).unwrap();
        assert_eq!(f.result, TaskEnd::InfrastructureFail);
        assert!(f.tests.is_empty() && f.artifacts.is_empty() && f.message.is_none());
    }
}
