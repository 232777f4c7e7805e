//! Projects, pipelines (numbered per project), workflows and their jobs, and webhook
//! delivery dedupe.

use crate::error::{is_unique_violation, query};
use crate::{Error, Millis, Store, get, get_json, get_opt_u64, get_parsed, get_u64, to_i64};
use gyre_core::{JobId, JobStatus, PipelineId, PipelineStatus, WorkflowId, WorkflowStatus};
use serde_json::Value;
use sqlx::any::AnyRow;
use std::fmt;

/// A project's row id. (gyre-core has no project id yet; it belongs there.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProjectId(pub u64);

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What [`Store::create_project`] needs.
#[derive(Clone, Debug)]
pub struct NewProject<'a> {
    /// `gh/org/repo`; unique.
    pub slug: &'a str,
    /// Where gyre fetches the code from (https, ssh, a local path or `file://`).
    pub repo_url: &'a str,
    pub default_branch: &'a str,
    /// The secret webhooks are signed with; `None`: webhooks are refused.
    pub webhook_secret: Option<&'a str>,
    /// Project settings, a JSON object.
    pub settings: &'a Value,
}

/// A stored project.
#[derive(Clone, Debug, PartialEq)]
pub struct Project {
    pub id: ProjectId,
    pub slug: String,
    pub repo_url: String,
    pub default_branch: String,
    pub webhook_secret: Option<String>,
    pub settings: Value,
    pub created_at: Millis,
}

/// What [`Store::create_pipeline`] needs.
#[derive(Clone, Debug)]
pub struct NewPipeline<'a> {
    pub project: ProjectId,
    /// `webhook`, `api`, `schedule`, …
    pub trigger_kind: &'a str,
    /// Who or what triggered it.
    pub trigger_actor: &'a str,
    pub branch: Option<&'a str>,
    pub tag: Option<&'a str>,
    /// The commit.
    pub revision: &'a str,
}

/// A stored pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub id: PipelineId,
    pub project: ProjectId,
    /// 1, 2, 3, … per project, in creation order.
    pub number: u64,
    pub trigger_kind: String,
    pub trigger_actor: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub revision: String,
    pub state: PipelineStatus,
    /// A JSON array of `{"type", "message"}` (CircleCI's `errors`).
    pub errors: Value,
    /// The config source, once fetched.
    pub config: Option<String>,
    pub created_at: Millis,
}

/// One job of a new workflow; its [`JobId`] is its index in the slice.
#[derive(Clone, Debug)]
pub struct NewJob<'a> {
    pub name: &'a str,
    pub status: JobStatus,
    /// Approval jobs get no job number.
    pub approval: bool,
}

pub(crate) const PROJECT_COLS: &str =
    "id, slug, repo_url, default_branch, webhook_secret, settings, created_at";
pub(crate) const PIPELINE_COLS: &str = "id, project_id, number, trigger_kind, trigger_actor, branch, tag, \
    revision, state, errors, config, created_at";

impl Store {
    /// Stores a new project. [`Error::ProjectExists`] if the slug is taken.
    pub async fn create_project(
        &self,
        new: &NewProject<'_>,
        now: Millis,
    ) -> Result<Project, Error> {
        const OP: &str = "create_project";
        let mut tx = self.begin_write(OP).await?;
        let id = Store::next_id(&mut tx, "projects", OP).await?;
        let inserted = sqlx::query(
            "INSERT INTO projects (id, slug, repo_url, default_branch, webhook_secret, settings, \
             last_pipeline_number, last_job_number, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0, $7)",
        )
        .bind(to_i64("project id", id)?)
        .bind(new.slug)
        .bind(new.repo_url)
        .bind(new.default_branch)
        .bind(new.webhook_secret)
        .bind(new.settings.to_string())
        .bind(now.0)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::ProjectExists(new.slug.to_string()));
            }
            other => other.map_err(query(OP))?,
        };
        tx.commit().await.map_err(query(OP))?;
        Ok(Project {
            id: ProjectId(id),
            slug: new.slug.to_string(),
            repo_url: new.repo_url.to_string(),
            default_branch: new.default_branch.to_string(),
            webhook_secret: new.webhook_secret.map(str::to_string),
            settings: new.settings.clone(),
            created_at: now,
        })
    }

    /// The project with this slug, if any.
    pub async fn project_by_slug(&self, slug: &str) -> Result<Option<Project>, Error> {
        let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE slug = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(slug)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("project_by_slug"))?;
        row.as_ref().map(project_from_row).transpose()
    }

    /// The project with this id, if any.
    pub async fn project(&self, id: ProjectId) -> Result<Option<Project>, Error> {
        let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("project id", id.0)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("project"))?;
        row.as_ref().map(project_from_row).transpose()
    }

    /// The project a workflow belongs to, if the workflow exists.
    pub async fn project_of_workflow(
        &self,
        workflow: WorkflowId,
    ) -> Result<Option<Project>, Error> {
        let cols: Vec<String> = PROJECT_COLS
            .split(", ")
            .map(|c| format!("p.{c} AS {c}"))
            .collect();
        let sql = format!(
            "SELECT {} FROM workflows w JOIN pipelines pl ON pl.id = w.pipeline_id \
             JOIN projects p ON p.id = pl.project_id WHERE w.id = $1",
            cols.join(", ")
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("workflow id", workflow.0)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("project_of_workflow"))?;
        row.as_ref().map(project_from_row).transpose()
    }

    /// Records a webhook delivery id. `true` the first time this id is seen, `false`
    /// for every repeat, also when repeats race each other.
    pub async fn record_delivery(&self, delivery_id: &str, now: Millis) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, received_at) VALUES ($1, $2) \
             ON CONFLICT (delivery_id) DO NOTHING",
        )
        .bind(delivery_id)
        .bind(now.0)
        .execute(&self.pool)
        .await
        .map_err(query("record_delivery"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets a delivery recorded by [`Store::record_delivery`] whose processing failed
    /// before anything was created, so the sender's redelivery is processed.
    pub async fn forget_delivery(&self, delivery_id: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM webhook_deliveries WHERE delivery_id = $1")
            .bind(delivery_id)
            .execute(&self.pool)
            .await
            .map_err(query("forget_delivery"))?;
        Ok(())
    }

    /// Creates a `pending` pipeline with the project's next number. Numbers are
    /// allocated atomically: concurrent calls get distinct, consecutive numbers.
    pub async fn create_pipeline(
        &self,
        new: &NewPipeline<'_>,
        now: Millis,
    ) -> Result<Pipeline, Error> {
        const OP: &str = "create_pipeline";
        let project = to_i64("project id", new.project.0)?;
        let mut tx = self.begin_write(OP).await?;
        let row = sqlx::query(
            "UPDATE projects SET last_pipeline_number = last_pipeline_number + 1 \
             WHERE id = $1 RETURNING last_pipeline_number",
        )
        .bind(project)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query(OP))?
        .ok_or_else(|| Error::UnknownProject(new.project.to_string()))?;
        let number = get_u64(&row, "projects", "last_pipeline_number")?;
        let id = Store::next_id(&mut tx, "pipelines", OP).await?;
        let state = PipelineStatus::Pending;
        sqlx::query(
            "INSERT INTO pipelines (id, project_id, number, trigger_kind, trigger_actor, branch, \
             tag, revision, state, errors, config, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, '[]', NULL, $10)",
        )
        .bind(to_i64("pipeline id", id)?)
        .bind(project)
        .bind(to_i64("pipeline number", number)?)
        .bind(new.trigger_kind)
        .bind(new.trigger_actor)
        .bind(new.branch)
        .bind(new.tag)
        .bind(new.revision)
        .bind(state.as_str())
        .bind(now.0)
        .execute(&mut *tx)
        .await
        .map_err(query(OP))?;
        tx.commit().await.map_err(query(OP))?;
        Ok(Pipeline {
            id: PipelineId(id),
            project: new.project,
            number,
            trigger_kind: new.trigger_kind.to_string(),
            trigger_actor: new.trigger_actor.to_string(),
            branch: new.branch.map(str::to_string),
            tag: new.tag.map(str::to_string),
            revision: new.revision.to_string(),
            state,
            errors: Value::Array(Vec::new()),
            config: None,
            created_at: now,
        })
    }

    /// Sets a pipeline's state, its errors (a JSON array) and, when given, its config
    /// source. [`Error::NotFound`] if there is no such pipeline.
    pub async fn set_pipeline_state(
        &self,
        id: PipelineId,
        state: PipelineStatus,
        errors: &Value,
        config: Option<&str>,
    ) -> Result<(), Error> {
        let done = sqlx::query(
            "UPDATE pipelines SET state = $2, errors = $3, config = COALESCE($4, config) \
             WHERE id = $1",
        )
        .bind(to_i64("pipeline id", id.0)?)
        .bind(state.as_str())
        .bind(errors.to_string())
        .bind(config)
        .execute(&self.pool)
        .await
        .map_err(query("set_pipeline_state"))?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                kind: "pipeline",
                id: id.0,
            });
        }
        Ok(())
    }

    /// The pipeline with this id, if any.
    pub async fn pipeline(&self, id: PipelineId) -> Result<Option<Pipeline>, Error> {
        let sql = format!("SELECT {PIPELINE_COLS} FROM pipelines WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("pipeline id", id.0)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("pipeline"))?;
        row.as_ref().map(pipeline_from_row).transpose()
    }

    /// A project's pipelines, newest first, at most `limit`.
    pub async fn pipelines(&self, project: ProjectId, limit: u32) -> Result<Vec<Pipeline>, Error> {
        let sql = format!(
            "SELECT {PIPELINE_COLS} FROM pipelines WHERE project_id = $1 \
             ORDER BY number DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64("project id", project.0)?)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query("pipelines"))?;
        rows.iter().map(pipeline_from_row).collect()
    }

    /// Creates a workflow of `pipeline` with its jobs (job `i` gets `JobId(i)`). Every
    /// non-approval job gets the project's next job number, in slice order. Returns the
    /// workflow id and each job's number.
    pub async fn create_workflow(
        &self,
        pipeline: PipelineId,
        name: &str,
        jobs: &[NewJob<'_>],
        now: Millis,
    ) -> Result<(WorkflowId, Vec<Option<u64>>), Error> {
        let jobs: Vec<(NewJob<'_>, Option<&Value>)> =
            jobs.iter().map(|j| (j.clone(), None)).collect();
        let (tx, numbers) = self.begin_workflow(pipeline, name, &jobs, now).await?;
        let id = tx.workflow;
        tx.commit().await?;
        Ok((id, numbers))
    }

    /// Sets a job's status, stamping `started_at` when it starts running and
    /// `stopped_at` when it becomes terminal. `false` if there is no such job.
    pub async fn set_job_status(
        &self,
        workflow: WorkflowId,
        job: JobId,
        status: JobStatus,
        now: Millis,
    ) -> Result<bool, Error> {
        let started = (status == JobStatus::Running).then_some(now.0);
        let stopped = status.is_terminal().then_some(now.0);
        let done = sqlx::query(
            "UPDATE jobs SET status = $3, started_at = COALESCE(started_at, $4), \
             stopped_at = $5 WHERE workflow_id = $1 AND job_id = $2",
        )
        .bind(to_i64("workflow id", workflow.0)?)
        .bind(to_i64("job id", job.0)?)
        .bind(status.as_str())
        .bind(started)
        .bind(stopped)
        .execute(&self.pool)
        .await
        .map_err(query("set_job_status"))?;
        Ok(done.rows_affected() == 1)
    }

    /// A workflow's jobs in [`JobId`] order: `(name, status, number)`.
    pub async fn jobs(
        &self,
        workflow: WorkflowId,
    ) -> Result<Vec<(String, JobStatus, Option<u64>)>, Error> {
        let rows = sqlx::query(
            "SELECT name, status, number FROM jobs WHERE workflow_id = $1 ORDER BY job_id",
        )
        .bind(to_i64("workflow id", workflow.0)?)
        .fetch_all(&self.pool)
        .await
        .map_err(query("jobs"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    get(r, "jobs", "name")?,
                    get_parsed(r, "jobs", "status")?,
                    get_opt_u64(r, "jobs", "number")?,
                ))
            })
            .collect()
    }

    /// Sets a workflow's status, stamping `stopped_at` when it is terminal. `false` if
    /// there is no such workflow.
    pub async fn set_workflow_status(
        &self,
        workflow: WorkflowId,
        status: WorkflowStatus,
        now: Millis,
    ) -> Result<bool, Error> {
        let stopped = status.is_terminal().then_some(now.0);
        let done = sqlx::query("UPDATE workflows SET status = $2, stopped_at = $3 WHERE id = $1")
            .bind(to_i64("workflow id", workflow.0)?)
            .bind(status.as_str())
            .bind(stopped)
            .execute(&self.pool)
            .await
            .map_err(query("set_workflow_status"))?;
        Ok(done.rows_affected() == 1)
    }
}

pub(crate) fn project_from_row(row: &AnyRow) -> Result<Project, Error> {
    const T: &str = "projects";
    Ok(Project {
        id: ProjectId(get_u64(row, T, "id")?),
        slug: get(row, T, "slug")?,
        repo_url: get(row, T, "repo_url")?,
        default_branch: get(row, T, "default_branch")?,
        webhook_secret: get(row, T, "webhook_secret")?,
        settings: get_json(row, T, "settings")?,
        created_at: Millis(get(row, T, "created_at")?),
    })
}

pub(crate) fn pipeline_from_row(row: &AnyRow) -> Result<Pipeline, Error> {
    const T: &str = "pipelines";
    Ok(Pipeline {
        id: PipelineId(get_u64(row, T, "id")?),
        project: ProjectId(get_u64(row, T, "project_id")?),
        number: get_u64(row, T, "number")?,
        trigger_kind: get(row, T, "trigger_kind")?,
        trigger_actor: get(row, T, "trigger_actor")?,
        branch: get(row, T, "branch")?,
        tag: get(row, T, "tag")?,
        revision: get(row, T, "revision")?,
        state: get_parsed(row, T, "state")?,
        errors: get_json(row, T, "errors")?,
        config: get(row, T, "config")?,
        created_at: Millis(get(row, T, "created_at")?),
    })
}
