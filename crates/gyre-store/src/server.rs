//! What the server reads and writes beyond the basic tables: a workflow's state machine
//! applied in one transaction ([`WorkflowTx`]), pipeline details, the read side of the
//! API (jobs by number, tasks of a job), task outcomes, archived logs and API tokens.

use crate::error::query;
use crate::pipelines::{PIPELINE_COLS, PROJECT_COLS, pipeline_from_row, project_from_row};
use crate::queue::{TASK_COLS, task_from_row};
use crate::{
    Engine, Error, Millis, NewJob, NewTask, Pipeline, Project, ProjectId, Store, Task, TaskKey,
    get, get_opt_u64, get_parsed, get_u64, to_i64,
};
use gyre_core::{JobId, JobStatus, PipelineId, WorkflowId, WorkflowStatus};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

/// Trigger details of a pipeline (migration 0002), each a JSON value or text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelineDetails {
    pub parameters: Option<Value>,
    pub vcs: Option<Value>,
    pub compiled: Option<String>,
    pub pipeline_values: Option<Value>,
}

/// A stored workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowRow {
    pub id: WorkflowId,
    pub pipeline: PipelineId,
    pub name: String,
    pub status: WorkflowStatus,
    pub created_at: Millis,
    pub stopped_at: Option<Millis>,
    /// gyre-core's state, JSON.
    pub state: Option<String>,
}

/// A stored job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    pub workflow: WorkflowId,
    pub job: JobId,
    pub name: String,
    pub status: JobStatus,
    pub number: Option<u64>,
    pub started_at: Option<Millis>,
    pub stopped_at: Option<Millis>,
    pub spec: Option<Value>,
}

/// A stored task with what the read side shows.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    pub task: Task,
    pub queued_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub outcome: Option<Value>,
    pub log_key: Option<String>,
}

const WORKFLOW_COLS: &str = "id, pipeline_id, name, status, created_at, stopped_at, state";
const JOB_COLS: &str = "workflow_id, job_id, name, status, number, started_at, stopped_at, spec";

/// One workflow, locked for writing until [`commit`](WorkflowTx::commit): PostgreSQL
/// holds its row lock (`FOR UPDATE`), SQLite the single write lock. Every change an
/// event makes (state, jobs, tasks) commits together or not at all.
pub struct WorkflowTx {
    tx: Transaction<'static, Any>,
    pub workflow: WorkflowId,
}

impl Store {
    /// Creates a workflow with its jobs (job `i` is `JobId(i)`; numbers as in
    /// [`create_workflow`](Store::create_workflow)) and returns it locked, so the caller
    /// can enqueue its first tasks and save its state in the same transaction.
    pub async fn begin_workflow(
        &self,
        pipeline: PipelineId,
        name: &str,
        jobs: &[(NewJob<'_>, Option<&Value>)],
        now: Millis,
    ) -> Result<(WorkflowTx, Vec<Option<u64>>), Error> {
        const OP: &str = "begin_workflow";
        let pipeline_db = to_i64("pipeline id", pipeline.0)?;
        let n_numbered = jobs.iter().filter(|(j, _)| !j.approval).count() as u64;
        let mut tx = self.begin_write(OP).await?;
        let row = sqlx::query(
            "UPDATE projects SET last_job_number = last_job_number + $2 \
             WHERE id = (SELECT project_id FROM pipelines WHERE id = $1) \
             RETURNING last_job_number",
        )
        .bind(pipeline_db)
        .bind(to_i64("job count", n_numbered)?)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query(OP))?
        .ok_or(Error::NotFound {
            kind: "pipeline",
            id: pipeline.0,
        })?;
        let last = get_u64(&row, "projects", "last_job_number")?;
        let mut next = last + 1 - n_numbered;
        let id = Store::next_id(&mut tx, "workflows", OP).await?;
        let id_db = to_i64("workflow id", id)?;
        sqlx::query(
            "INSERT INTO workflows (id, pipeline_id, name, status, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_db)
        .bind(pipeline_db)
        .bind(name)
        .bind(WorkflowStatus::Running.as_str())
        .bind(now.0)
        .execute(&mut *tx)
        .await
        .map_err(query(OP))?;
        let mut numbers = Vec::with_capacity(jobs.len());
        for (i, (job, spec)) in jobs.iter().enumerate() {
            let number = (!job.approval).then(|| {
                next += 1;
                next - 1
            });
            sqlx::query(
                "INSERT INTO jobs (workflow_id, job_id, name, status, number, spec) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id_db)
            .bind(to_i64("job id", i as u64)?)
            .bind(job.name)
            .bind(job.status.as_str())
            .bind(number.map(|n| to_i64("job number", n)).transpose()?)
            .bind(spec.map(|s| s.to_string()))
            .execute(&mut *tx)
            .await
            .map_err(query(OP))?;
            numbers.push(number);
        }
        Ok((
            WorkflowTx {
                tx,
                workflow: WorkflowId(id),
            },
            numbers,
        ))
    }

    /// Locks a workflow and returns its stored state (JSON). `None` if there is no such
    /// workflow.
    pub async fn lock_workflow(
        &self,
        workflow: WorkflowId,
    ) -> Result<Option<(WorkflowTx, Option<String>)>, Error> {
        const OP: &str = "lock_workflow";
        let lock = match self.engine {
            Engine::Postgres => " FOR UPDATE",
            Engine::Sqlite => "",
        };
        let mut tx = self.begin_write(OP).await?;
        let sql = format!("SELECT state FROM workflows WHERE id = $1{lock}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("workflow id", workflow.0)?)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query(OP))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let state: Option<String> = get(&row, "workflows", "state")?;
        Ok(Some((WorkflowTx { tx, workflow }, state)))
    }
}

impl WorkflowTx {
    /// Stores the state machine's state and the workflow's status (stamping
    /// `stopped_at` when it is terminal).
    pub async fn save_state(
        &mut self,
        state: &str,
        status: WorkflowStatus,
        now: Millis,
    ) -> Result<(), Error> {
        let stopped = status.is_terminal().then_some(now.0);
        sqlx::query("UPDATE workflows SET state = $2, status = $3, stopped_at = $4 WHERE id = $1")
            .bind(to_i64("workflow id", self.workflow.0)?)
            .bind(state)
            .bind(status.as_str())
            .bind(stopped)
            .execute(&mut *self.tx)
            .await
            .map_err(query("save_state"))?;
        Ok(())
    }

    /// Sets a job's status; `started_at` is stamped when it first runs, `stopped_at`
    /// when it is terminal (and cleared when a rerun makes it live again).
    pub async fn set_job_status(
        &mut self,
        job: JobId,
        status: JobStatus,
        now: Millis,
    ) -> Result<(), Error> {
        let started = (status == JobStatus::Running).then_some(now.0);
        let stopped = status.is_terminal().then_some(now.0);
        let restart = matches!(status, JobStatus::Queued | JobStatus::Blocked);
        sqlx::query(
            "UPDATE jobs SET status = $3, \
             started_at = CASE WHEN $6 = 1 THEN NULL ELSE COALESCE(started_at, $4) END, \
             stopped_at = $5 WHERE workflow_id = $1 AND job_id = $2",
        )
        .bind(to_i64("workflow id", self.workflow.0)?)
        .bind(to_i64("job id", job.0)?)
        .bind(status.as_str())
        .bind(started)
        .bind(stopped)
        .bind(i64::from(restart))
        .execute(&mut *self.tx)
        .await
        .map_err(query("set_job_status"))?;
        Ok(())
    }

    /// The job's stored spec and number.
    pub async fn job(&mut self, job: JobId) -> Result<Option<JobRow>, Error> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE workflow_id = $1 AND job_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("workflow id", self.workflow.0)?)
            .bind(to_i64("job id", job.0)?)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(query("job"))?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Puts a task in the queue (see [`Store::enqueue_task`]).
    pub async fn enqueue_task(&mut self, new: &NewTask<'_>, now: Millis) -> Result<(), Error> {
        crate::queue::insert_task(&mut *self.tx, new, now).await
    }

    /// Cancels a queued or running task (see [`Store::cancel_task`]).
    pub async fn cancel_task(&mut self, key: TaskKey, now: Millis) -> Result<bool, Error> {
        crate::queue::cancel_live_task(&mut *self.tx, key, now).await
    }

    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await.map_err(query("commit workflow"))
    }
}

impl Store {
    /// Stores a pipeline's trigger details.
    pub async fn set_pipeline_details(
        &self,
        id: PipelineId,
        details: &PipelineDetails,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE pipelines SET parameters = $2, vcs = $3, compiled = $4, \
             pipeline_values = $5 WHERE id = $1",
        )
        .bind(to_i64("pipeline id", id.0)?)
        .bind(details.parameters.as_ref().map(Value::to_string))
        .bind(details.vcs.as_ref().map(Value::to_string))
        .bind(details.compiled.as_deref())
        .bind(details.pipeline_values.as_ref().map(Value::to_string))
        .execute(&self.pool)
        .await
        .map_err(query("set_pipeline_details"))?;
        Ok(())
    }

    pub async fn pipeline_details(&self, id: PipelineId) -> Result<PipelineDetails, Error> {
        let row = sqlx::query(
            "SELECT parameters, vcs, compiled, pipeline_values FROM pipelines WHERE id = $1",
        )
        .bind(to_i64("pipeline id", id.0)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("pipeline_details"))?
        .ok_or(Error::NotFound {
            kind: "pipeline",
            id: id.0,
        })?;
        const T: &str = "pipelines";
        Ok(PipelineDetails {
            parameters: opt_json(&row, T, "parameters")?,
            vcs: opt_json(&row, T, "vcs")?,
            compiled: get(&row, T, "compiled")?,
            pipeline_values: opt_json(&row, T, "pipeline_values")?,
        })
    }

    /// Every project, by slug.
    pub async fn projects(&self) -> Result<Vec<Project>, Error> {
        let sql = format!("SELECT {PROJECT_COLS} FROM projects ORDER BY slug");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(query("projects"))?;
        rows.iter().map(project_from_row).collect()
    }

    /// A page of a project's pipelines, newest first: numbers below `before` (all when
    /// `None`), on `branch` when given, at most `limit`.
    pub async fn pipelines_page(
        &self,
        project: ProjectId,
        branch: Option<&str>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Pipeline>, Error> {
        let sql = format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE project_id = $1 \
             AND ($2 IS NULL OR branch = $2) AND number < $3 \
             ORDER BY number DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("project id", project.0)?)
            .bind(branch)
            .bind(before.map_or(Ok(i64::MAX), |b| to_i64("pipeline number", b))?)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query("pipelines_page"))?;
        rows.iter().map(pipeline_from_row).collect()
    }

    pub async fn pipeline_by_number(
        &self,
        project: ProjectId,
        number: u64,
    ) -> Result<Option<Pipeline>, Error> {
        let sql =
            format!("SELECT {PIPELINE_COLS} FROM pipelines WHERE project_id = $1 AND number = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("project id", project.0)?)
            .bind(to_i64("pipeline number", number)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("pipeline_by_number"))?;
        row.as_ref().map(pipeline_from_row).transpose()
    }

    /// The newest pipeline of `project` on `branch` created before `number` (for
    /// `pipeline.git.base_revision`).
    pub async fn previous_on_branch(
        &self,
        project: ProjectId,
        branch: &str,
        number: u64,
    ) -> Result<Option<Pipeline>, Error> {
        let page = self
            .pipelines_page(project, Some(branch), Some(number), 1)
            .await?;
        Ok(page.into_iter().next())
    }

    pub async fn workflows_of(&self, pipeline: PipelineId) -> Result<Vec<WorkflowRow>, Error> {
        let sql =
            format!("SELECT {WORKFLOW_COLS} FROM workflows WHERE pipeline_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("pipeline id", pipeline.0)?)
            .fetch_all(&self.pool)
            .await
            .map_err(query("workflows_of"))?;
        rows.iter().map(workflow_from_row).collect()
    }

    pub async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowRow>, Error> {
        let sql = format!("SELECT {WORKFLOW_COLS} FROM workflows WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("workflow id", id.0)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("workflow"))?;
        row.as_ref().map(workflow_from_row).transpose()
    }

    /// Workflows not yet terminal (the server resumes them after a restart).
    pub async fn live_workflows(&self) -> Result<Vec<WorkflowRow>, Error> {
        let sql =
            format!("SELECT {WORKFLOW_COLS} FROM workflows WHERE stopped_at IS NULL ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(query("live_workflows"))?;
        rows.iter().map(workflow_from_row).collect()
    }

    pub async fn job_rows(&self, workflow: WorkflowId) -> Result<Vec<JobRow>, Error> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE workflow_id = $1 ORDER BY job_id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("workflow id", workflow.0)?)
            .fetch_all(&self.pool)
            .await
            .map_err(query("job_rows"))?;
        rows.iter().map(job_from_row).collect()
    }

    /// The job with this number in `project`.
    pub async fn job_by_number(
        &self,
        project: ProjectId,
        number: u64,
    ) -> Result<Option<JobRow>, Error> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs WHERE number = $2 AND workflow_id IN \
             (SELECT w.id FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id \
              WHERE p.project_id = $1)"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("project id", project.0)?)
            .bind(to_i64("job number", number)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("job_by_number"))?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Every task of a job, oldest first.
    pub async fn tasks_of_job(
        &self,
        workflow: WorkflowId,
        job: JobId,
    ) -> Result<Vec<TaskRow>, Error> {
        let sql = format!(
            "SELECT {TASK_COLS}, queued_at, started_at, finished_at, outcome, log_key \
             FROM tasks WHERE workflow_id = $1 AND job_id = $2 ORDER BY task_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("workflow id", workflow.0)?)
            .bind(to_i64("job id", job.0)?)
            .fetch_all(&self.pool)
            .await
            .map_err(query("tasks_of_job"))?;
        rows.iter().map(task_row_from_row).collect()
    }

    /// Records what the agent reported at a task's end.
    pub async fn set_task_outcome(&self, key: TaskKey, outcome: &Value) -> Result<(), Error> {
        sqlx::query("UPDATE tasks SET outcome = $3 WHERE workflow_id = $1 AND task_id = $2")
            .bind(to_i64("workflow id", key.workflow.0)?)
            .bind(to_i64("task id", key.task.0)?)
            .bind(outcome.to_string())
            .execute(&self.pool)
            .await
            .map_err(query("set_task_outcome"))?;
        Ok(())
    }

    /// Marks a task's log as archived under `log_key` and deletes its chunks, in one
    /// transaction (the archive must be stored before this is called).
    pub async fn archive_log(&self, key: TaskKey, log_key: &str) -> Result<(), Error> {
        const OP: &str = "archive_log";
        let mut tx = self.begin_write(OP).await?;
        let wf = to_i64("workflow id", key.workflow.0)?;
        let task = to_i64("task id", key.task.0)?;
        sqlx::query("UPDATE tasks SET log_key = $3 WHERE workflow_id = $1 AND task_id = $2")
            .bind(wf)
            .bind(task)
            .bind(log_key)
            .execute(&mut *tx)
            .await
            .map_err(query(OP))?;
        sqlx::query("DELETE FROM log_chunks WHERE workflow_id = $1 AND task_id = $2")
            .bind(wf)
            .bind(task)
            .execute(&mut *tx)
            .await
            .map_err(query(OP))?;
        tx.commit().await.map_err(query(OP))
    }

    /// Stores an API token's hash for `login`.
    pub async fn create_api_token(
        &self,
        token_hash: &str,
        login: &str,
        now: Millis,
    ) -> Result<(), Error> {
        sqlx::query("INSERT INTO api_tokens (token_hash, login, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(login)
            .bind(now.0)
            .execute(&self.pool)
            .await
            .map_err(query("create_api_token"))?;
        Ok(())
    }

    /// The login an API token belongs to.
    pub async fn api_token_login(&self, token_hash: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT login FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("api_token_login"))?;
        row.map(|r| get(&r, "api_tokens", "login")).transpose()
    }

    /// Every API token: `(hash, login, created_at)`, oldest first.
    pub async fn api_tokens(&self) -> Result<Vec<(String, String, Millis)>, Error> {
        let rows = sqlx::query(
            "SELECT token_hash, login, created_at FROM api_tokens ORDER BY created_at, token_hash",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query("api_tokens"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    get(r, "api_tokens", "token_hash")?,
                    get(r, "api_tokens", "login")?,
                    Millis(get(r, "api_tokens", "created_at")?),
                ))
            })
            .collect()
    }

    /// Deletes the API token with this hash; `false` when there was none.
    pub async fn delete_api_token(&self, token_hash: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(query("delete_api_token"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Running tasks per agent (for `gyre admin nodes`).
    pub async fn running_tasks(&self) -> Result<Vec<Task>, Error> {
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE status = 'running'");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(query("running_tasks"))?;
        rows.iter().map(task_from_row).collect()
    }
}

fn opt_json(row: &AnyRow, table: &'static str, col: &str) -> Result<Option<Value>, Error> {
    let s: Option<String> = get(row, table, col)?;
    s.map(|s| {
        serde_json::from_str(&s).map_err(|e| Error::Corrupt {
            table,
            detail: format!("column {col}: {e}"),
        })
    })
    .transpose()
}

fn opt_millis(row: &AnyRow, table: &'static str, col: &str) -> Result<Option<Millis>, Error> {
    let v: Option<i64> = get(row, table, col)?;
    Ok(v.map(Millis))
}

fn workflow_from_row(row: &AnyRow) -> Result<WorkflowRow, Error> {
    const T: &str = "workflows";
    Ok(WorkflowRow {
        id: WorkflowId(get_u64(row, T, "id")?),
        pipeline: PipelineId(get_u64(row, T, "pipeline_id")?),
        name: get(row, T, "name")?,
        status: get_parsed(row, T, "status")?,
        created_at: Millis(get(row, T, "created_at")?),
        stopped_at: opt_millis(row, T, "stopped_at")?,
        state: get(row, T, "state")?,
    })
}

fn job_from_row(row: &AnyRow) -> Result<JobRow, Error> {
    const T: &str = "jobs";
    Ok(JobRow {
        workflow: WorkflowId(get_u64(row, T, "workflow_id")?),
        job: JobId(get_u64(row, T, "job_id")?),
        name: get(row, T, "name")?,
        status: get_parsed(row, T, "status")?,
        number: get_opt_u64(row, T, "number")?,
        started_at: opt_millis(row, T, "started_at")?,
        stopped_at: opt_millis(row, T, "stopped_at")?,
        spec: opt_json(row, T, "spec")?,
    })
}

fn task_row_from_row(row: &AnyRow) -> Result<TaskRow, Error> {
    const T: &str = "tasks";
    Ok(TaskRow {
        task: task_from_row(row)?,
        queued_at: Millis(get(row, T, "queued_at")?),
        started_at: opt_millis(row, T, "started_at")?,
        finished_at: opt_millis(row, T, "finished_at")?,
        outcome: opt_json(row, T, "outcome")?,
        log_key: get(row, T, "log_key")?,
    })
}

impl Store {
    /// Registers `name` again with a new token (an agent restarted): it becomes active,
    /// the old token stops working. `None` if no agent has this name.
    pub async fn reregister_agent(
        &self,
        name: &str,
        token_hash: &str,
        now: Millis,
    ) -> Result<Option<gyre_core::AgentId>, Error> {
        let row = sqlx::query(
            "UPDATE agents SET token_hash = $2, status = 'active', last_heartbeat = $3 \
             WHERE name = $1 RETURNING id",
        )
        .bind(name)
        .bind(token_hash)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("reregister_agent"))?;
        row.map(|r| get_u64(&r, "agents", "id").map(gyre_core::AgentId))
            .transpose()
    }
}

impl Store {
    /// One task with what the read side shows.
    pub async fn task_row(&self, key: TaskKey) -> Result<Option<TaskRow>, Error> {
        let sql = format!(
            "SELECT {TASK_COLS}, queued_at, started_at, finished_at, outcome, log_key \
             FROM tasks WHERE workflow_id = $1 AND task_id = $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("workflow id", key.workflow.0)?)
            .bind(to_i64("task id", key.task.0)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("task_row"))?;
        row.as_ref().map(task_row_from_row).transpose()
    }
}
