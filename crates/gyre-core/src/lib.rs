//! gyre-core: gyre's domain types and the workflow state machine.
//!
//! Pure: no IO, no async, no clock (nothing here needs the time; the IO shell stamps
//! `started_at`/`stopped_at` when it applies the actions). Inputs are the typed plan
//! from `gyre-config`, the trigger's branch or tag, and events; outputs are the new
//! state and the actions the shell carries out.
//!
//! ```
//! use gyre_config::{compile, NoOrbs, Options};
//! use gyre_core::{Action, Event, JobStatus, TaskResult, Trigger, WorkflowState, WorkflowStatus};
//!
//! let config = "version: 2.1
//! jobs:
//!   build: {docker: [{image: busybox}], steps: [checkout]}
//!   test: {docker: [{image: busybox}], parallelism: 2, steps: [checkout]}
//! workflows:
//!   main:
//!     jobs: [build, {test: {requires: [build]}}]
//! ";
//! let plan = compile(config, &Options::default(), &NoOrbs).plan.unwrap();
//! let trigger = Trigger { branch: Some("main".into()), ..Trigger::default() };
//! let (mut wf, actions) = WorkflowState::from_plan(&plan, "main", &trigger).unwrap();
//! let Action::EnqueueTask { task, .. } = actions[0] else { unreachable!() };
//! wf.apply(Event::TaskStarted { task }).unwrap();
//! let actions = wf.apply(Event::TaskFinished { task, result: TaskResult::Success }).unwrap();
//! // build succeeded: test's two tasks are enqueued.
//! let enqueued = actions.iter().filter(|a| matches!(a, Action::EnqueueTask { .. })).count();
//! assert_eq!(enqueued, 2);
//! assert_eq!(wf.jobs()[1].status, JobStatus::Queued);
//! assert_eq!(wf.status(), WorkflowStatus::Running);
//! ```

pub mod ids;
pub mod spec;
pub mod status;
pub mod workflow;

pub use ids::{AgentId, JobId, PipelineId, TaskId, WorkflowId};
pub use status::{JobStatus, PipelineStatus, TaskResult, UnknownStatus, WorkflowStatus};
pub use workflow::{
    Action, Error, Event, JobState, MAX_PARALLELISM, Requires, Task, Trigger, WorkflowState,
};
