//! The durable task queue: enqueue, claim with a lease, renew, expire, finish, cancel.
//!
//! A task is `queued` until an active agent claims it; then `running` under a lease
//! (`lease_owner`, `lease_expires_at`) that the agent renews by heartbeat; then final
//! (`success`, `failed`, `timedout`, `infrastructure_fail`, `canceled`). Every
//! transition is one conditional `UPDATE`, so two callers can never both win it: two
//! claims never get the same task, a result that arrives after the lease expired is
//! refused, an expired lease is reported once.

use crate::error::{is_unique_violation, query};
use crate::{
    Engine, Error, Millis, Store, get, get_json, get_opt_u64, get_parsed, get_u64, to_i64,
};
use gyre_core::{AgentId, JobId, JobStatus, TaskId, TaskResult, WorkflowId};
use serde_json::Value;
use sqlx::any::AnyRow;
use std::fmt;
use std::time::Duration;

/// A task's key: gyre-core mints task ids per workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub workflow: WorkflowId,
    pub task: TaskId,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.workflow, self.task)
    }
}

/// What [`Store::enqueue_task`] needs (gyre-core's `Action::EnqueueTask` plus what the
/// agent needs to run it).
#[derive(Clone, Debug)]
pub struct NewTask<'a> {
    pub key: TaskKey,
    /// The job it belongs to; the job must be stored.
    pub job: JobId,
    pub node_index: u32,
    pub attempt: u32,
    /// Only agents that offer this resource class claim the task.
    pub resource_class: &'a str,
    /// What the agent runs (the task spec), as JSON.
    pub payload: &'a Value,
}

/// A stored task.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub key: TaskKey,
    pub job: JobId,
    pub node_index: u32,
    pub attempt: u32,
    /// `queued`, `running` or final.
    pub status: JobStatus,
    pub resource_class: String,
    pub payload: Value,
    /// The agent holding (or that last held) the lease.
    pub lease_owner: Option<AgentId>,
    pub lease_expires_at: Option<Millis>,
}

pub(crate) const TASK_COLS: &str = "workflow_id, task_id, job_id, node_index, attempt, status, \
    resource_class, payload, lease_owner, lease_expires_at";

impl Store {
    /// Puts a task in the queue. [`Error::TaskExists`] if its key is already stored.
    pub async fn enqueue_task(&self, new: &NewTask<'_>, now: Millis) -> Result<(), Error> {
        insert_task(&self.pool, new, now).await
    }

    /// Claims the oldest queued task whose resource class is one of `resource_classes`
    /// for `agent`, with a lease until `now + lease`. `None` when nothing fits, or when
    /// the agent is not `active` (draining, down or unknown agents take no work).
    ///
    /// PostgreSQL picks the row with `FOR UPDATE SKIP LOCKED`, so concurrent claimers
    /// take different rows without waiting for each other; SQLite runs the claim in a
    /// `BEGIN IMMEDIATE` transaction, one writer at a time. Either way one task goes to
    /// one agent.
    pub async fn claim_task(
        &self,
        agent: AgentId,
        resource_classes: &[&str],
        now: Millis,
        lease: Duration,
    ) -> Result<Option<Task>, Error> {
        const OP: &str = "claim_task";
        if resource_classes.is_empty() {
            return Ok(None);
        }
        // $1 agent, $2 lease end, $3 now, $4.. the resource classes.
        let classes = (0..resource_classes.len())
            .map(|i| format!("${}", i + 4))
            .collect::<Vec<_>>()
            .join(", ");
        let lock = self.row_lock();
        let sql = format!(
            "UPDATE tasks SET status = 'running', lease_owner = $1, lease_expires_at = $2, \
             started_at = $3 \
             WHERE status = 'queued' \
             AND (workflow_id, task_id) = (SELECT workflow_id, task_id FROM tasks \
                 WHERE status = 'queued' AND resource_class IN ({classes}) \
                 ORDER BY queued_at, workflow_id, task_id LIMIT 1{lock}) \
             AND EXISTS (SELECT 1 FROM agents WHERE id = $1 AND status = 'active') \
             RETURNING {TASK_COLS}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("agent id", agent.0)?)
            .bind(now.plus(lease).0)
            .bind(now.0);
        for class in resource_classes {
            q = q.bind(*class);
        }
        let mut tx = self.begin_write(OP).await?;
        let row = q.fetch_optional(&mut *tx).await.map_err(query(OP))?;
        tx.commit().await.map_err(query(OP))?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// Extends `agent`'s lease on a running task to `until`. `false` when the agent no
    /// longer holds it (expired, canceled or finished): the agent must stop the task.
    pub async fn renew_lease(
        &self,
        key: TaskKey,
        agent: AgentId,
        until: Millis,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE tasks SET lease_expires_at = $4 WHERE workflow_id = $1 AND task_id = $2 \
             AND status = 'running' AND lease_owner = $3",
        )
        .bind(to_i64("workflow id", key.workflow.0)?)
        .bind(to_i64("task id", key.task.0)?)
        .bind(to_i64("agent id", agent.0)?)
        .bind(until.0)
        .execute(&self.pool)
        .await
        .map_err(query("renew_lease"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks every running task whose lease ended at or before `now` as
    /// `infrastructure_fail` and returns their keys, sorted. Each expired task is
    /// returned by exactly one call, also when several servers call concurrently; the
    /// caller feeds them to the workflow state machine as `LeaseExpired`.
    pub async fn expire_leases(&self, now: Millis) -> Result<Vec<TaskKey>, Error> {
        const OP: &str = "expire_leases";
        // PostgreSQL: skip rows another expirer (or a renewal) holds, so concurrent
        // callers never wait for, or deadlock on, each other's row locks.
        let sql = format!(
            "UPDATE tasks SET status = $2, finished_at = $1 \
             WHERE status = 'running' AND (workflow_id, task_id) IN ( \
                 SELECT workflow_id, task_id FROM tasks \
                 WHERE status = 'running' AND lease_expires_at <= $1{lock}) \
             RETURNING workflow_id, task_id",
            lock = self.row_lock()
        );
        let mut tx = self.begin_write(OP).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now.0)
            .bind(JobStatus::InfrastructureFail.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(query(OP))?;
        tx.commit().await.map_err(query(OP))?;
        let mut keys = rows
            .iter()
            .map(key_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort();
        Ok(keys)
    }

    /// Records the result `agent` reports for a task it holds. `false` (nothing
    /// changed) when it does not hold the task any more: a late or repeated report.
    pub async fn finish_task(
        &self,
        key: TaskKey,
        agent: AgentId,
        result: TaskResult,
        now: Millis,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE tasks SET status = $4, finished_at = $5 WHERE workflow_id = $1 \
             AND task_id = $2 AND status = 'running' AND lease_owner = $3",
        )
        .bind(to_i64("workflow id", key.workflow.0)?)
        .bind(to_i64("task id", key.task.0)?)
        .bind(to_i64("agent id", agent.0)?)
        .bind(result.status().as_str())
        .bind(now.0)
        .execute(&self.pool)
        .await
        .map_err(query("finish_task"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Cancels a queued or running task (gyre-core's `CancelTask`). A queued task
    /// leaves the queue; the agent of a running one learns it when its next
    /// [`renew_lease`](Store::renew_lease) answers `false`. `false` if the task had
    /// already ended.
    pub async fn cancel_task(&self, key: TaskKey, now: Millis) -> Result<bool, Error> {
        cancel_live_task(&self.pool, key, now).await
    }

    /// The task with this key, if any.
    pub async fn task(&self, key: TaskKey) -> Result<Option<Task>, Error> {
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE workflow_id = $1 AND task_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("workflow id", key.workflow.0)?)
            .bind(to_i64("task id", key.task.0)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("task"))?;
        row.as_ref().map(task_from_row).transpose()
    }
}

impl Store {
    /// The clause that makes a row-picking subquery skip rows other transactions hold:
    /// `FOR UPDATE SKIP LOCKED` on PostgreSQL; nothing on SQLite, where the writing
    /// transaction already excludes every other writer.
    pub(crate) fn row_lock(&self) -> &'static str {
        match self.engine {
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
            Engine::Sqlite => "",
        }
    }
}

fn key_from_row(row: &AnyRow) -> Result<TaskKey, Error> {
    Ok(TaskKey {
        workflow: WorkflowId(get_u64(row, "tasks", "workflow_id")?),
        task: TaskId(get_u64(row, "tasks", "task_id")?),
    })
}

fn get_u32(row: &AnyRow, col: &str) -> Result<u32, Error> {
    let v = get_u64(row, "tasks", col)?;
    u32::try_from(v).map_err(|_| Error::Corrupt {
        table: "tasks",
        detail: format!("column {col}: {v} does not fit u32"),
    })
}

pub(crate) fn task_from_row(row: &AnyRow) -> Result<Task, Error> {
    const T: &str = "tasks";
    let lease_expires_at: Option<i64> = get(row, T, "lease_expires_at")?;
    Ok(Task {
        key: key_from_row(row)?,
        job: JobId(get_u64(row, T, "job_id")?),
        node_index: get_u32(row, "node_index")?,
        attempt: get_u32(row, "attempt")?,
        status: get_parsed(row, T, "status")?,
        resource_class: get(row, T, "resource_class")?,
        payload: get_json(row, T, "payload")?,
        lease_owner: get_opt_u64(row, T, "lease_owner")?.map(AgentId),
        lease_expires_at: lease_expires_at.map(Millis),
    })
}

/// The `INSERT` of [`Store::enqueue_task`], on a pool or inside a transaction.
pub(crate) async fn insert_task<'c, E>(db: E, new: &NewTask<'_>, now: Millis) -> Result<(), Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "INSERT INTO tasks (workflow_id, task_id, job_id, node_index, attempt, status, \
         resource_class, payload, queued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(to_i64("workflow id", new.key.workflow.0)?)
    .bind(to_i64("task id", new.key.task.0)?)
    .bind(to_i64("job id", new.job.0)?)
    .bind(i64::from(new.node_index))
    .bind(i64::from(new.attempt))
    .bind(JobStatus::Queued.as_str())
    .bind(new.resource_class)
    .bind(new.payload.to_string())
    .bind(now.0)
    .execute(db)
    .await;
    match done {
        Err(e) if is_unique_violation(&e) => Err(Error::TaskExists(new.key)),
        other => other.map(|_| ()).map_err(query("enqueue_task")),
    }
}

/// The `UPDATE` of [`Store::cancel_task`], on a pool or inside a transaction.
pub(crate) async fn cancel_live_task<'c, E>(db: E, key: TaskKey, now: Millis) -> Result<bool, Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "UPDATE tasks SET status = $3, finished_at = $4 WHERE workflow_id = $1 \
         AND task_id = $2 AND status IN ('queued', 'running')",
    )
    .bind(to_i64("workflow id", key.workflow.0)?)
    .bind(to_i64("task id", key.task.0)?)
    .bind(JobStatus::Canceled.as_str())
    .bind(now.0)
    .execute(db)
    .await
    .map_err(query("cancel_task"))?;
    Ok(done.rows_affected() == 1)
}
