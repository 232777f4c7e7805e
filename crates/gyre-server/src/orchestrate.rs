//! The IO shell around gyre-core's workflow state machine: an event is applied to the
//! stored state inside one workflow transaction, and every action it answers (enqueue or
//! cancel a task, a job's new status) is written in that same transaction. A crash
//! before the commit loses the event as a whole; after it, nothing is lost.

use crate::App;
use gyre_core::{
    Action, Event, JobId, JobStatus, PipelineId, TaskResult, WorkflowId, WorkflowState,
};
use gyre_protocol::{NodeInfo, TaskSpec};
use gyre_store::{Millis, NewJob, NewTask, TaskKey, WorkflowTx};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What the server keeps per job to build its tasks (`jobs.spec`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobTemplate {
    /// A build job: the task of node 0 and of the other nodes (they differ only in
    /// `deploy` steps, which run on node 0).
    Build {
        queue: String,
        executor_type: String,
        resource_class: String,
        node0: Box<TaskSpec>,
        others: Box<TaskSpec>,
    },
    /// The job cannot run anywhere (e.g. a macOS job): its tasks fail at once.
    Unrunnable { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Rejected(gyre_core::Error),
    #[error("no workflow {0}")]
    UnknownWorkflow(WorkflowId),
    #[error("stored state of workflow {0} is unreadable: {1}")]
    Corrupt(WorkflowId, String),
    #[error(transparent)]
    Store(#[from] gyre_store::Error),
}

/// Applies `events` in order to workflow `id`. On a rejected event nothing is written.
pub async fn apply(app: &App, id: WorkflowId, events: Vec<Event>) -> Result<(), ApplyError> {
    let Some((mut tx, state)) = app.store.lock_workflow(id).await? else {
        return Err(ApplyError::UnknownWorkflow(id));
    };
    let state = state.ok_or_else(|| ApplyError::Corrupt(id, "no state stored".into()))?;
    let mut state: WorkflowState =
        serde_json::from_str(&state).map_err(|e| ApplyError::Corrupt(id, e.to_string()))?;
    let now = Millis::now();
    let enqueued = drain(&mut tx, &mut state, events.into(), now).await?;
    save(&mut tx, &state, now).await?;
    tx.commit().await?;
    app.changed(enqueued);
    Ok(())
}

/// Stores a new workflow run (a pipeline's workflow, or a rerun): its jobs, the
/// `actions` its state answered when it was made, and the state; one transaction.
pub async fn start_run(
    app: &App,
    pipeline: PipelineId,
    name: &str,
    jobs: &[(NewJob<'_>, Option<&serde_json::Value>)],
    state: &WorkflowState,
    actions: &[Action],
) -> Result<WorkflowId, ApplyError> {
    let mut state = state.clone();
    let now = Millis::now();
    let (mut tx, _numbers) = app.store.begin_workflow(pipeline, name, jobs, now).await?;
    let mut follow_up = VecDeque::new();
    let mut enqueued = carry_out(&mut tx, &state, actions, now, &mut follow_up).await?;
    // Jobs that did not start blocked or queued (no-op jobs succeed, approvals wait,
    // a rerun keeps successful jobs): stamp their times as the state says.
    for (i, job) in state.jobs().iter().enumerate() {
        if job.status != JobStatus::Blocked && job.status != JobStatus::Queued {
            tx.set_job_status(JobId(i as u64), job.status, now).await?;
        }
    }
    enqueued |= drain(&mut tx, &mut state, follow_up, now).await?;
    save(&mut tx, &state, now).await?;
    let id = tx.workflow;
    tx.commit().await?;
    app.changed(enqueued);
    Ok(id)
}

/// Applies queued events, and the events their actions add, until none is left.
async fn drain(
    tx: &mut WorkflowTx,
    state: &mut WorkflowState,
    mut queue: VecDeque<Event>,
    now: Millis,
) -> Result<bool, ApplyError> {
    let mut enqueued = false;
    while let Some(event) = queue.pop_front() {
        let actions = state.apply(event).map_err(ApplyError::Rejected)?;
        enqueued |= carry_out(tx, state, &actions, now, &mut queue).await?;
    }
    Ok(enqueued)
}

/// Writes what `actions` ask for. Tasks of unrunnable jobs fail at once: their
/// `TaskStarted` and `TaskFinished` events are pushed onto `follow_up`. Returns whether a
/// task was enqueued.
pub async fn carry_out(
    tx: &mut WorkflowTx,
    state: &WorkflowState,
    actions: &[Action],
    now: Millis,
    follow_up: &mut VecDeque<Event>,
) -> Result<bool, ApplyError> {
    let mut enqueued = false;
    for action in actions {
        match *action {
            Action::EnqueueTask {
                task,
                job,
                node_index,
                attempt,
            } => {
                let row = tx.job(job).await?;
                let template = row
                    .as_ref()
                    .and_then(|r| r.spec.clone())
                    .and_then(|s| serde_json::from_value::<JobTemplate>(s).ok());
                let total = state.job(job).map_or(1, |j| j.parallelism);
                let (queue, payload) = match template {
                    Some(JobTemplate::Build {
                        queue,
                        node0,
                        others,
                        ..
                    }) => {
                        let mut spec = if node_index == 0 { *node0 } else { *others };
                        spec.node = NodeInfo {
                            index: node_index,
                            total,
                        };
                        spec.job.build_num = row.as_ref().and_then(|r| r.number).unwrap_or(0);
                        spec.job.workflow_id = crate::ids::workflow(tx.workflow);
                        spec.job.workflow_job_id = crate::ids::job(tx.workflow, job);
                        spec.job.workflow_workspace_id = crate::ids::workflow(tx.workflow);
                        let payload = serde_json::to_value(&spec).map_err(|e| {
                            ApplyError::Corrupt(tx.workflow, format!("task spec: {e}"))
                        })?;
                        (queue, payload)
                    }
                    Some(JobTemplate::Unrunnable { reason }) => {
                        follow_up.push_back(Event::TaskStarted { task });
                        follow_up.push_back(Event::TaskFinished {
                            task,
                            result: TaskResult::InfrastructureFail,
                        });
                        ("none".to_string(), serde_json::json!({ "error": reason }))
                    }
                    None => {
                        // Approval and no-op jobs have no tasks; anything else without a
                        // template is a bug in intake.
                        return Err(ApplyError::Corrupt(
                            tx.workflow,
                            format!("job {job} has no task template"),
                        ));
                    }
                };
                tx.enqueue_task(
                    &NewTask {
                        key: TaskKey {
                            workflow: tx.workflow,
                            task,
                        },
                        job,
                        node_index,
                        attempt,
                        resource_class: &queue,
                        payload: &payload,
                    },
                    now,
                )
                .await?;
                enqueued = true;
            }
            Action::CancelTask { task } => {
                let key = TaskKey {
                    workflow: tx.workflow,
                    task,
                };
                tx.cancel_task(key, now).await?;
            }
            Action::JobStatusChanged { job, to, .. } => {
                tx.set_job_status(job, to, now).await?;
            }
            Action::WorkflowStatusChanged { .. } => {}
        }
    }
    Ok(enqueued)
}

pub async fn save(
    tx: &mut WorkflowTx,
    state: &WorkflowState,
    now: Millis,
) -> Result<(), ApplyError> {
    let json = serde_json::to_string(state)
        .map_err(|e| ApplyError::Corrupt(tx.workflow, e.to_string()))?;
    tx.save_state(&json, state.status(), now).await?;
    Ok(())
}

/// Job statuses CircleCI reports as a job that is waiting to start.
pub fn waiting(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Blocked | JobStatus::Queued | JobStatus::NotRunning
    )
}
