//! The workflow state machine: one workflow run, advanced by events, answering with
//! actions for the IO shell (enqueue or cancel tasks, record status changes).
//!
//! ```text
//! WorkflowState::new(plan workflow, parallelism, trigger) ─► (state, EnqueueTask…)
//! state.apply(Event) ─► Ok(actions) | Err(Error)   (on Err the state is unchanged)
//! ```
//!
//! Rules (spec §5.3, §5.4, §5.6, §10, §12), and the choices made where the spec is silent:
//! - **Filters** decide which jobs are part of the run; a filtered job is absent (listed
//!   by [`WorkflowState::filtered`]). On a branch pipeline, a requirement on a filtered
//!   job is dropped, and a job whose requirements were *all* filtered is filtered too.
//!   On a tag pipeline, a job with *any* filtered requirement is filtered (§5.4.3, §16.1
//!   "downstream rule"). Both apply transitively.
//! - **Requires**: a `blocked` job waits until every requirement is terminal, then runs
//!   if each final status is accepted (`failed` accepts `infrastructure_fail`,
//!   `timedout`, `terminated-unknown` too), else it becomes `not_run`, which its own
//!   dependants see like any other status.
//! - **Starting** a job: a build job becomes `queued` with one task per parallel node; an
//!   approval job becomes `on_hold`; a no-op job becomes `success` at once.
//! - **Parallelism**: a job is `running` from its first started task until its last
//!   task ends. A failing task does not cancel its siblings (their test results and
//!   artifacts are worth having); the job's status is decided when all have ended:
//!   `success` if all succeeded, else the first of `failed`, `timedout`,
//!   `infrastructure_fail`, `canceled` found among its tasks.
//! - **Lease expiry** makes the task `infrastructure_fail` and enqueues the same node
//!   once more (attempt 1); the job keeps its status meanwhile. A second expiry of that
//!   node is final. An `infrastructure_fail` the agent reports itself is final at once.
//! - **Stale task events** (for a task already ended or superseded, e.g. a result that
//!   arrives after a cancel, or a repeated report) are accepted and ignored: no actions.
//!   Events for tasks or jobs this workflow never had are errors.
//! - **Cancel** (the workflow): every unfinished job becomes `canceled` at once, blocked
//!   ones included, and each unfinished task gets a `CancelTask`. **CancelJob** cancels
//!   one job (an approval's "cancel", or a job's cancel in the API); its dependants are
//!   then evaluated as usual (so `not_run` unless they accept `canceled`).
//! - **Workflow status**, recomputed after every event: `not_run` with no jobs;
//!   `canceled` after Cancel; when every job is terminal: `failed` if any failed, else
//!   `unauthorized` if any was, else `canceled` if any was, else `success`; otherwise
//!   `failing` if any failed, `running` if a job is queued or running, else `on_hold`.
//! - **Reruns** apply to a finished workflow. CircleCI makes a rerun a new workflow run:
//!   the caller keeps the old state as history, clones it, and applies the rerun event to
//!   the clone (stored under a new `WorkflowId`). From start: every job starts over.
//!   From failed: every job that did not end `success` starts over (failed, canceled,
//!   not_run, …); successful jobs keep their status, even when they depend on a job
//!   that runs again. Each rerun allows a fresh automatic retry per node.

use crate::ids::{JobId, TaskId};
use crate::status::{JobStatus, TaskResult, WorkflowStatus};
use gyre_config::Plan;
use gyre_config::plan::{InstanceKind, RequiredStatus, Workflow};
use gyre_config::yaml::Value;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The largest parallelism a job gets (the compiler's bound too); larger values are
/// clamped, 0 counts as 1.
pub const MAX_PARALLELISM: u32 = 1000;

/// What the pipeline was triggered for: filters are evaluated against it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trigger {
    pub branch: Option<String>,
    /// Set for tag pipelines.
    pub tag: Option<String>,
    /// Further pipeline values (`pipeline.trigger_source`, …) for expression filters;
    /// `pipeline.git.branch` and `pipeline.git.tag` come from the fields above.
    pub values: Vec<(String, Value)>,
}

/// Something that happened to the workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An agent claimed the task and started it.
    TaskStarted { task: TaskId },
    /// The agent reported the task's end.
    TaskFinished { task: TaskId, result: TaskResult },
    /// The agent holding the task stopped renewing its lease.
    LeaseExpired { task: TaskId },
    /// An approval job was approved.
    Approve { job: JobId, by: String },
    /// One job is canceled (for an approval job: the approval is canceled).
    CancelJob { job: JobId },
    /// The whole workflow is canceled.
    Cancel,
    /// Run every job again (the workflow must have finished).
    RerunFromStart,
    /// Run again every job that did not succeed (the workflow must have finished).
    RerunFromFailed,
}

/// What the IO shell must do, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Put a task in the queue (`CIRCLE_NODE_INDEX` = `node_index`).
    EnqueueTask {
        task: TaskId,
        job: JobId,
        node_index: u32,
        /// 0 for the first attempt, 1 for the automatic retry after a lost lease.
        attempt: u32,
    },
    /// Take the task off the queue, or tell its agent to stop it.
    CancelTask { task: TaskId },
    JobStatusChanged {
        job: JobId,
        from: JobStatus,
        to: JobStatus,
    },
    WorkflowStatusChanged {
        from: WorkflowStatus,
        to: WorkflowStatus,
    },
}

/// Why a workflow could not be built or an event not applied. The state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `from_plan` was given a workflow name the plan does not have.
    #[error("the plan has no workflow named '{0}'")]
    UnknownWorkflow(String),
    /// Two job instances of the workflow have the same name.
    #[error("workflow '{workflow}' has two jobs named '{job}'")]
    DuplicateJob { workflow: String, job: String },
    /// A `requires` entry names no job of the workflow.
    #[error(
        "workflow '{workflow}': job '{job}' requires '{required}', which is not in the workflow"
    )]
    UnknownRequirement {
        workflow: String,
        job: String,
        required: String,
    },
    /// A build job's body is missing from the plan.
    #[error("workflow '{workflow}': job '{job}' runs '{body}', which the plan does not define")]
    UnknownJobBody {
        workflow: String,
        job: String,
        body: String,
    },
    /// The `requires` graph has a cycle.
    #[error("workflow '{workflow}': requires form a cycle through '{job}'")]
    Cycle { workflow: String, job: String },
    #[error("no task {0} in this workflow")]
    UnknownTask(TaskId),
    #[error("no job {0} in this workflow")]
    UnknownJob(JobId),
    #[error("job '{job}' is not an approval job")]
    NotApproval { job: String },
    /// Approving a job that is not waiting for approval (blocked, or already decided).
    #[error("job '{job}' is {status}, not on_hold")]
    NotOnHold { job: String, status: JobStatus },
    #[error("job '{job}' already finished ({status})")]
    JobFinished { job: String, status: JobStatus },
    /// Cancel of a workflow that already finished.
    #[error("the workflow already finished ({0})")]
    WorkflowFinished(WorkflowStatus),
    /// Rerun of a workflow that has not finished.
    #[error("the workflow is {0}; only a finished workflow can be rerun")]
    NotFinished(WorkflowStatus),
    /// Rerun from failed of a workflow whose jobs all succeeded.
    #[error("nothing to rerun from failed: every job succeeded")]
    NothingToRerun,
}

/// One requirement of a job, on a job of the same run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requires {
    pub job: JobId,
    /// Accepted final statuses (non-empty; `terminal` is all five).
    pub statuses: Vec<RequiredStatus>,
}

/// A job of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// The instance name (`CIRCLE_JOB`), unique in the workflow.
    pub name: String,
    /// Key into [`Plan::jobs`]; `None` for approval jobs.
    pub body: Option<String>,
    pub kind: InstanceKind,
    /// Requirements left after filtering.
    pub requires: Vec<Requires>,
    /// Number of tasks (≥ 1; 1 for approval and no-op jobs).
    pub parallelism: u32,
    pub status: JobStatus,
    /// The current task of each node, by node index; empty until the job is queued.
    pub tasks: Vec<TaskId>,
    pub approved_by: Option<String>,
    /// The matrix alias this job is an instance of (for grouping in views).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix_alias: Option<String>,
}

/// One task: one node of one job, one attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub job: JobId,
    pub node_index: u32,
    pub attempt: u32,
    /// `queued`, `running`, or the task's final status.
    pub status: JobStatus,
    /// The workflow run the task belongs to: 0, then 1, 2, … after reruns.
    pub run: u32,
}

/// The state of one workflow run. Deterministic: the same plan, trigger and events give
/// the same state, ids and actions, so replaying a stored event log rebuilds it.
///
/// Serialized with serde (the server stores it as JSON between events); deserializing
/// rebuilds the derived indexes and checks that every reference is in range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredState")]
pub struct WorkflowState {
    name: String,
    jobs: Vec<JobState>,
    filtered: Vec<String>,
    /// Every task ever enqueued, indexed by `TaskId`.
    tasks: Vec<Task>,
    status: WorkflowStatus,
    canceled: bool,
    run: u32,
    /// `dependants[j]`: jobs requiring job `j`.
    #[serde(skip)]
    dependants: Vec<Vec<usize>>,
}

/// The serialized fields of [`WorkflowState`], checked before use.
#[derive(Deserialize)]
struct StoredState {
    name: String,
    jobs: Vec<JobState>,
    filtered: Vec<String>,
    tasks: Vec<Task>,
    status: WorkflowStatus,
    canceled: bool,
    run: u32,
}

impl TryFrom<StoredState> for WorkflowState {
    type Error = String;

    fn try_from(s: StoredState) -> Result<WorkflowState, String> {
        let n = s.jobs.len() as u64;
        let mut dependants = vec![Vec::new(); s.jobs.len()];
        for (j, job) in s.jobs.iter().enumerate() {
            for r in &job.requires {
                if r.job.0 >= n {
                    return Err(format!("job {j} requires unknown job {}", r.job));
                }
                let u = r.job.0 as usize;
                if !dependants[u].contains(&j) {
                    dependants[u].push(j);
                }
            }
            if job.tasks.iter().any(|t| t.0 >= s.tasks.len() as u64) {
                return Err(format!("job {j} names an unknown task"));
            }
        }
        if s.tasks.iter().any(|t| t.job.0 >= n) {
            return Err("a task names an unknown job".into());
        }
        Ok(WorkflowState {
            name: s.name,
            jobs: s.jobs,
            filtered: s.filtered,
            tasks: s.tasks,
            status: s.status,
            canceled: s.canceled,
            run: s.run,
            dependants,
        })
    }
}

impl WorkflowState {
    /// Starts a run of `workflow`: filters applied, roots started. `parallelism` gives
    /// the parallelism of a job body by its plan key (`None`: no such job). The actions
    /// are the first `EnqueueTask`s; every other initial fact is in the state.
    pub fn new(
        workflow: &Workflow,
        parallelism: &dyn Fn(&str) -> Option<u32>,
        trigger: &Trigger,
    ) -> Result<(WorkflowState, Vec<Action>), Error> {
        let wf = &workflow.name;
        let instances = &workflow.jobs;
        let mut index = BTreeMap::new();
        for (i, inst) in instances.iter().enumerate() {
            if index.insert(inst.name.as_str(), i).is_some() {
                return Err(Error::DuplicateJob {
                    workflow: wf.clone(),
                    job: inst.name.clone(),
                });
            }
        }
        let mut upstream: Vec<Vec<usize>> = Vec::with_capacity(instances.len());
        for inst in instances {
            let mut ups = Vec::new();
            for r in &inst.requires {
                let Some(&u) = index.get(r.job.as_str()) else {
                    return Err(Error::UnknownRequirement {
                        workflow: wf.clone(),
                        job: inst.name.clone(),
                        required: r.job.clone(),
                    });
                };
                ups.push(u);
            }
            upstream.push(ups);
        }
        let order = topological_order(&upstream).map_err(|i| Error::Cycle {
            workflow: wf.clone(),
            job: instances[i].name.clone(),
        })?;

        // Filters, with the requirement rules, in dependency order.
        let on_tag = trigger.tag.is_some();
        let mut lookup = |path: &str| match path {
            "pipeline.git.branch" => trigger.branch.clone().map(Value::Str),
            "pipeline.git.tag" => trigger.tag.clone().map(Value::Str),
            _ => trigger
                .values
                .iter()
                .find(|(k, _)| k == path)
                .map(|(_, v)| v.clone()),
        };
        let mut included = vec![false; instances.len()];
        for &i in &order {
            let inst = &instances[i];
            let passes = inst.filters.allows(
                trigger.branch.as_deref(),
                trigger.tag.as_deref(),
                &mut lookup,
            );
            let ups = &upstream[i];
            included[i] = passes
                && (ups.is_empty()
                    || if on_tag {
                        ups.iter().all(|&u| included[u])
                    } else {
                        ups.iter().any(|&u| included[u])
                    });
        }

        let mut new_id = vec![usize::MAX; instances.len()];
        let mut jobs = Vec::new();
        let mut filtered = Vec::new();
        for (i, inst) in instances.iter().enumerate() {
            if !included[i] {
                filtered.push(inst.name.clone());
                continue;
            }
            new_id[i] = jobs.len();
            let n = match inst.kind {
                InstanceKind::Build => {
                    let body = inst.job.as_deref().unwrap_or(&inst.name);
                    parallelism(body).ok_or_else(|| Error::UnknownJobBody {
                        workflow: wf.clone(),
                        job: inst.name.clone(),
                        body: body.to_string(),
                    })?
                }
                InstanceKind::Approval | InstanceKind::NoOp => 1,
            };
            jobs.push(JobState {
                name: inst.name.clone(),
                body: inst.job.clone(),
                kind: inst.kind,
                requires: Vec::new(),
                parallelism: n.clamp(1, MAX_PARALLELISM),
                status: JobStatus::Blocked,
                tasks: Vec::new(),
                approved_by: None,
                matrix_alias: inst.matrix_alias.clone(),
            });
        }
        let mut dependants = vec![Vec::new(); jobs.len()];
        for (i, inst) in instances.iter().enumerate() {
            if !included[i] {
                continue;
            }
            let j = new_id[i];
            for (r, &u) in inst.requires.iter().zip(&upstream[i]) {
                if !included[u] {
                    continue;
                }
                let statuses = if r.statuses.is_empty() {
                    vec![RequiredStatus::Success]
                } else {
                    r.statuses.clone()
                };
                jobs[j].requires.push(Requires {
                    job: JobId(new_id[u] as u64),
                    statuses,
                });
                if !dependants[new_id[u]].contains(&j) {
                    dependants[new_id[u]].push(j);
                }
            }
        }

        let mut state = WorkflowState {
            name: wf.clone(),
            jobs,
            filtered,
            tasks: Vec::new(),
            status: WorkflowStatus::Running,
            canceled: false,
            run: 0,
            dependants,
        };
        let mut out = Vec::new();
        let all: Vec<usize> = (0..state.jobs.len()).collect();
        state.evaluate(all, &mut out);
        state.status = state.derive_status();
        out.retain(|a| matches!(a, Action::EnqueueTask { .. }));
        Ok((state, out))
    }

    /// [`new`](Self::new) for the workflow named `workflow` of `plan`.
    pub fn from_plan(
        plan: &Plan,
        workflow: &str,
        trigger: &Trigger,
    ) -> Result<(WorkflowState, Vec<Action>), Error> {
        let wf = plan
            .workflows
            .iter()
            .find(|w| w.name == workflow)
            .ok_or_else(|| Error::UnknownWorkflow(workflow.to_string()))?;
        let parallelism = |body: &str| plan.jobs.get(body).map(|j| j.parallelism);
        WorkflowState::new(wf, &parallelism, trigger)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn status(&self) -> WorkflowStatus {
        self.status
    }

    /// The jobs of the run; a job's [`JobId`] is its index here.
    pub fn jobs(&self) -> &[JobState] {
        &self.jobs
    }

    pub fn job(&self, id: JobId) -> Option<&JobState> {
        self.jobs.get(usize::try_from(id.0).ok()?)
    }

    /// The job named `name`, if it is part of the run.
    pub fn job_by_name(&self, name: &str) -> Option<JobId> {
        self.jobs
            .iter()
            .position(|j| j.name == name)
            .map(|i| JobId(i as u64))
    }

    /// Names of the workflow's jobs that filters left out of the run.
    pub fn filtered(&self) -> &[String] {
        &self.filtered
    }

    /// Every task ever enqueued; a task's [`TaskId`] is its index here.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(usize::try_from(id.0).ok()?)
    }

    /// 0 for the first run, then 1, 2, … after each rerun.
    pub fn run_number(&self) -> u32 {
        self.run
    }

    /// Applies one event. On `Err` nothing changed.
    pub fn apply(&mut self, event: Event) -> Result<Vec<Action>, Error> {
        let mut out = Vec::new();
        match event {
            Event::TaskStarted { task } => {
                let Some(t) = self.live_task(task)? else {
                    return Ok(out);
                };
                if self.tasks[t].status == JobStatus::Queued {
                    self.tasks[t].status = JobStatus::Running;
                }
                let j = self.tasks[t].job.0 as usize;
                if self.jobs[j].status == JobStatus::Queued {
                    self.set_job(j, JobStatus::Running, &mut out);
                }
            }
            Event::TaskFinished { task, result } => {
                let Some(t) = self.live_task(task)? else {
                    return Ok(out);
                };
                self.tasks[t].status = result.status();
                self.task_ended(t, &mut out);
            }
            Event::LeaseExpired { task } => {
                let Some(t) = self.live_task(task)? else {
                    return Ok(out);
                };
                self.tasks[t].status = JobStatus::InfrastructureFail;
                if self.tasks[t].attempt == 0 {
                    let (j, node) = (self.tasks[t].job.0 as usize, self.tasks[t].node_index);
                    self.enqueue(j, node, 1, &mut out);
                } else {
                    self.task_ended(t, &mut out);
                }
            }
            Event::Approve { job, by } => {
                let j = self.job_index(job)?;
                let state = &self.jobs[j];
                if state.kind != InstanceKind::Approval {
                    return Err(Error::NotApproval {
                        job: state.name.clone(),
                    });
                }
                if state.status != JobStatus::OnHold {
                    return Err(Error::NotOnHold {
                        job: state.name.clone(),
                        status: state.status,
                    });
                }
                self.jobs[j].approved_by = Some(by);
                self.set_job(j, JobStatus::Success, &mut out);
                self.evaluate(self.dependants[j].clone(), &mut out);
            }
            Event::CancelJob { job } => {
                let j = self.job_index(job)?;
                let state = &self.jobs[j];
                if state.status.is_terminal() {
                    return Err(Error::JobFinished {
                        job: state.name.clone(),
                        status: state.status,
                    });
                }
                self.cancel_job(j, &mut out);
                self.evaluate(self.dependants[j].clone(), &mut out);
            }
            Event::Cancel => {
                if self.status.is_terminal() {
                    return Err(Error::WorkflowFinished(self.status));
                }
                self.canceled = true;
                for j in 0..self.jobs.len() {
                    if !self.jobs[j].status.is_terminal() {
                        self.cancel_job(j, &mut out);
                    }
                }
            }
            Event::RerunFromStart | Event::RerunFromFailed => {
                if !self.status.is_terminal() {
                    return Err(Error::NotFinished(self.status));
                }
                let from_failed = event == Event::RerunFromFailed;
                let reset: Vec<usize> = (0..self.jobs.len())
                    .filter(|&j| !from_failed || self.jobs[j].status != JobStatus::Success)
                    .collect();
                if from_failed && reset.is_empty() {
                    return Err(Error::NothingToRerun);
                }
                self.run += 1;
                self.canceled = false;
                for &j in &reset {
                    let from = self.jobs[j].status;
                    let job = &mut self.jobs[j];
                    job.status = JobStatus::Blocked;
                    job.tasks.clear();
                    job.approved_by = None;
                    out.push(Action::JobStatusChanged {
                        job: JobId(j as u64),
                        from,
                        to: JobStatus::Blocked,
                    });
                }
                self.evaluate(reset, &mut out);
            }
        }
        let status = self.derive_status();
        if status != self.status {
            out.push(Action::WorkflowStatusChanged {
                from: self.status,
                to: status,
            });
            self.status = status;
        }
        Ok(out)
    }

    /// The task's index if it is its node's current, unfinished attempt; `None` for a
    /// stale task; an error for a task this workflow never had.
    fn live_task(&self, id: TaskId) -> Result<Option<usize>, Error> {
        let Some(task) = self.task(id) else {
            return Err(Error::UnknownTask(id));
        };
        let current = self
            .jobs
            .get(task.job.0 as usize)
            .and_then(|j| j.tasks.get(task.node_index as usize))
            == Some(&id);
        Ok((current && !task.status.is_terminal()).then_some(id.0 as usize))
    }

    fn job_index(&self, id: JobId) -> Result<usize, Error> {
        self.job(id)
            .map(|_| id.0 as usize)
            .ok_or(Error::UnknownJob(id))
    }

    fn set_job(&mut self, j: usize, to: JobStatus, out: &mut Vec<Action>) {
        let from = self.jobs[j].status;
        if from != to {
            self.jobs[j].status = to;
            out.push(Action::JobStatusChanged {
                job: JobId(j as u64),
                from,
                to,
            });
        }
    }

    fn enqueue(&mut self, j: usize, node_index: u32, attempt: u32, out: &mut Vec<Action>) {
        let id = TaskId(self.tasks.len() as u64);
        self.tasks.push(Task {
            id,
            job: JobId(j as u64),
            node_index,
            attempt,
            status: JobStatus::Queued,
            run: self.run,
        });
        let slot = node_index as usize;
        let tasks = &mut self.jobs[j].tasks;
        if slot < tasks.len() {
            tasks[slot] = id;
        } else {
            tasks.push(id);
        }
        out.push(Action::EnqueueTask {
            task: id,
            job: JobId(j as u64),
            node_index,
            attempt,
        });
    }

    /// A task reached its final status: decide the job once all its tasks have.
    fn task_ended(&mut self, t: usize, out: &mut Vec<Action>) {
        let j = self.tasks[t].job.0 as usize;
        let statuses: Vec<JobStatus> = self.jobs[j]
            .tasks
            .iter()
            .map(|id| self.tasks[id.0 as usize].status)
            .collect();
        if !statuses.iter().all(|s| s.is_terminal()) {
            return;
        }
        let status = [
            JobStatus::Failed,
            JobStatus::Timedout,
            JobStatus::InfrastructureFail,
            JobStatus::Canceled,
        ]
        .into_iter()
        .find(|s| statuses.contains(s))
        .unwrap_or(JobStatus::Success);
        self.set_job(j, status, out);
        self.evaluate(self.dependants[j].clone(), out);
    }

    fn cancel_job(&mut self, j: usize, out: &mut Vec<Action>) {
        for k in 0..self.jobs[j].tasks.len() {
            let id = self.jobs[j].tasks[k];
            let task = &mut self.tasks[id.0 as usize];
            if !task.status.is_terminal() {
                task.status = JobStatus::Canceled;
                out.push(Action::CancelTask { task: id });
            }
        }
        self.set_job(j, JobStatus::Canceled, out);
    }

    /// Starts or marks `not_run` every blocked job of `work` whose requirements have all
    /// ended, and then their dependants, until nothing changes.
    fn evaluate(&mut self, work: Vec<usize>, out: &mut Vec<Action>) {
        let mut work: VecDeque<usize> = work.into();
        while let Some(j) = work.pop_front() {
            if self.jobs[j].status != JobStatus::Blocked {
                continue;
            }
            let mut ready = true;
            let mut accepted = true;
            for r in &self.jobs[j].requires {
                let up = self.jobs[r.job.0 as usize].status;
                if !up.is_terminal() {
                    ready = false;
                    break;
                }
                accepted &= up.as_required().is_some_and(|s| r.statuses.contains(&s));
            }
            if !ready {
                continue;
            }
            if !accepted {
                self.set_job(j, JobStatus::NotRun, out);
                work.extend(&self.dependants[j]);
                continue;
            }
            match self.jobs[j].kind {
                InstanceKind::Build => {
                    self.jobs[j].tasks.clear();
                    for node in 0..self.jobs[j].parallelism {
                        self.enqueue(j, node, 0, out);
                    }
                    self.set_job(j, JobStatus::Queued, out);
                }
                InstanceKind::Approval => self.set_job(j, JobStatus::OnHold, out),
                InstanceKind::NoOp => {
                    self.set_job(j, JobStatus::Success, out);
                    work.extend(&self.dependants[j]);
                }
            }
        }
    }

    fn derive_status(&self) -> WorkflowStatus {
        let any = |f: fn(JobStatus) -> bool| self.jobs.iter().any(|j| f(j.status));
        if self.jobs.is_empty() {
            WorkflowStatus::NotRun
        } else if self.canceled {
            WorkflowStatus::Canceled
        } else if self.jobs.iter().all(|j| j.status.is_terminal()) {
            if any(JobStatus::is_failure) {
                WorkflowStatus::Failed
            } else if any(|s| s == JobStatus::Unauthorized) {
                WorkflowStatus::Unauthorized
            } else if any(|s| s == JobStatus::Canceled) {
                WorkflowStatus::Canceled
            } else {
                WorkflowStatus::Success
            }
        } else if any(JobStatus::is_failure) {
            WorkflowStatus::Failing
        } else if any(|s| matches!(s, JobStatus::Queued | JobStatus::Running)) {
            WorkflowStatus::Running
        } else {
            WorkflowStatus::OnHold
        }
    }
}

/// Kahn's algorithm over `upstream[i]` (the jobs `i` requires). `Err(i)`: `i` is on or
/// behind a cycle.
fn topological_order(upstream: &[Vec<usize>]) -> Result<Vec<usize>, usize> {
    let n = upstream.len();
    let mut pending: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut down = vec![Vec::new(); n];
    for (i, ups) in upstream.iter().enumerate() {
        for &u in ups {
            down[u].push(i);
        }
    }
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &d in &down[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    match (0..n).find(|&i| pending[i] > 0) {
        Some(i) => Err(i),
        None => Ok(order),
    }
}
