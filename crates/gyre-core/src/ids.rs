//! Newtype ids, all made by one macro.
//!
//! Every id is a `u64`. `PipelineId`, `WorkflowId` and `AgentId` are assigned by the
//! store (row ids); they are global. `JobId` and `TaskId` are minted by the workflow
//! state machine and are **scoped to their workflow**: a job's id is its position in
//! [`WorkflowState::jobs`](crate::WorkflowState::jobs), a task's id counts the tasks the
//! workflow has enqueued (across reruns, never reused). The store keys them as
//! `(WorkflowId, JobId)` and `(WorkflowId, TaskId)`. Minting them here keeps the machine
//! deterministic: replaying a workflow's events gives the same ids.
//!
//! On the wire (serde) an id is its number; `Display` writes the number too.

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<u64> for $name {
            fn from(n: u64) -> Self {
                Self(n)
            }
        }
    )*};
}

ids! {
    /// A pipeline (one trigger of one project); assigned by the store.
    PipelineId;
    /// A workflow run; assigned by the store. A rerun is a new workflow run.
    WorkflowId;
    /// A job of a workflow: its index in [`WorkflowState::jobs`](crate::WorkflowState::jobs).
    JobId;
    /// One task (one parallel node, one attempt) of a workflow, minted in order.
    TaskId;
    /// A registered agent; assigned by the store.
    AgentId;
}
