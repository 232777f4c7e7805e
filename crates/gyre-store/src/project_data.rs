//! Per-project data beyond the projects row: pull requests and environment variables.

use crate::error::query;
use crate::{Error, Millis, ProjectId, Store, get, get_u64, to_i64};
use sqlx::any::AnyRow;

/// A pull request as the last webhook described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequestRow {
    pub project: ProjectId,
    pub number: u64,
    pub url: String,
    pub head_branch: String,
    pub head_sha: String,
    /// `owner/repo` of the head repository (empty when a fork was deleted).
    pub head_repo: String,
    pub fork: bool,
    pub open: bool,
    pub updated_at: Millis,
}

/// A project environment variable; `sealed` is what gyre-secrets made of the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvVarRow {
    pub name: String,
    pub sealed: Vec<u8>,
    pub created_at: Millis,
}

const T_PR: &str = "pull_requests";
const T_ENV: &str = "project_env_vars";

fn pull_request(row: &AnyRow) -> Result<PullRequestRow, Error> {
    Ok(PullRequestRow {
        project: ProjectId(get_u64(row, T_PR, "project_id")?),
        number: get_u64(row, T_PR, "number")?,
        url: get(row, T_PR, "url")?,
        head_branch: get(row, T_PR, "head_branch")?,
        head_sha: get(row, T_PR, "head_sha")?,
        head_repo: get(row, T_PR, "head_repo")?,
        fork: get_u64(row, T_PR, "fork")? != 0,
        open: get_u64(row, T_PR, "is_open")? != 0,
        updated_at: Millis(get(row, T_PR, "updated_at")?),
    })
}

impl Store {
    /// Records what a `pull_request` delivery says about a pull request (insert or update).
    pub async fn upsert_pull_request(&self, pr: &PullRequestRow) -> Result<(), Error> {
        const OP: &str = "upsert_pull_request";
        sqlx::query(
            "INSERT INTO pull_requests (project_id, number, url, head_branch, head_sha, \
             head_repo, fork, is_open, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (project_id, number) DO UPDATE SET url = excluded.url, \
             head_branch = excluded.head_branch, head_sha = excluded.head_sha, \
             head_repo = excluded.head_repo, fork = excluded.fork, is_open = excluded.is_open, \
             updated_at = excluded.updated_at",
        )
        .bind(to_i64("project id", pr.project.0)?)
        .bind(to_i64("pull request number", pr.number)?)
        .bind(&pr.url)
        .bind(&pr.head_branch)
        .bind(&pr.head_sha)
        .bind(&pr.head_repo)
        .bind(i64::from(pr.fork))
        .bind(i64::from(pr.open))
        .bind(pr.updated_at.0)
        .execute(&self.pool)
        .await
        .map_err(query(OP))?;
        Ok(())
    }

    /// The open, same-repository pull requests whose head is `branch`, by number.
    pub async fn open_pull_requests(
        &self,
        project: ProjectId,
        branch: &str,
    ) -> Result<Vec<PullRequestRow>, Error> {
        const OP: &str = "open_pull_requests";
        let rows = sqlx::query(
            "SELECT project_id, number, url, head_branch, head_sha, head_repo, fork, is_open, \
             updated_at FROM pull_requests \
             WHERE project_id = $1 AND head_branch = $2 AND is_open = 1 AND fork = 0 \
             ORDER BY number",
        )
        .bind(to_i64("project id", project.0)?)
        .bind(branch)
        .fetch_all(&self.pool)
        .await
        .map_err(query(OP))?;
        rows.iter().map(pull_request).collect()
    }

    /// Whether the project already has a pipeline for `revision`.
    pub async fn has_pipeline_for(
        &self,
        project: ProjectId,
        revision: &str,
    ) -> Result<bool, Error> {
        const OP: &str = "has_pipeline_for";
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM pipelines WHERE project_id = $1 AND revision = $2",
        )
        .bind(to_i64("project id", project.0)?)
        .bind(revision)
        .fetch_one(&self.pool)
        .await
        .map_err(query(OP))?;
        Ok(get_u64(&row, "pipelines", "n")? > 0)
    }

    /// Workflows still running (not stopped) of the project's pipelines on `branch` with
    /// a number below `before`: what a newer pipeline makes redundant.
    pub async fn live_workflows_on_branch(
        &self,
        project: ProjectId,
        branch: &str,
        before: u64,
    ) -> Result<Vec<gyre_core::WorkflowId>, Error> {
        const OP: &str = "live_workflows_on_branch";
        let rows = sqlx::query(
            "SELECT w.id AS id FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id \
             WHERE p.project_id = $1 AND p.branch = $2 AND p.number < $3 \
             AND w.stopped_at IS NULL ORDER BY w.id",
        )
        .bind(to_i64("project id", project.0)?)
        .bind(branch)
        .bind(to_i64("pipeline number", before)?)
        .fetch_all(&self.pool)
        .await
        .map_err(query(OP))?;
        rows.iter()
            .map(|r| Ok(gyre_core::WorkflowId(get_u64(r, "workflows", "id")?)))
            .collect()
    }

    /// The project's environment variables, by name.
    pub async fn project_env_vars(&self, project: ProjectId) -> Result<Vec<EnvVarRow>, Error> {
        const OP: &str = "project_env_vars";
        let rows = sqlx::query(
            "SELECT name, value, created_at FROM project_env_vars WHERE project_id = $1 \
             ORDER BY name",
        )
        .bind(to_i64("project id", project.0)?)
        .fetch_all(&self.pool)
        .await
        .map_err(query(OP))?;
        rows.iter()
            .map(|row| {
                Ok(EnvVarRow {
                    name: get(row, T_ENV, "name")?,
                    sealed: get(row, T_ENV, "value")?,
                    created_at: Millis(get(row, T_ENV, "created_at")?),
                })
            })
            .collect()
    }

    /// Sets (adds or replaces) an environment variable; `sealed` is the sealed value.
    pub async fn set_project_env_var(
        &self,
        project: ProjectId,
        name: &str,
        sealed: &[u8],
        now: Millis,
    ) -> Result<(), Error> {
        const OP: &str = "set_project_env_var";
        sqlx::query(
            "INSERT INTO project_env_vars (project_id, name, value, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, name) DO UPDATE \
             SET value = excluded.value, created_at = excluded.created_at",
        )
        .bind(to_i64("project id", project.0)?)
        .bind(name)
        .bind(sealed)
        .bind(now.0)
        .execute(&self.pool)
        .await
        .map_err(query(OP))?;
        Ok(())
    }

    /// Deletes an environment variable; `false` when there was none.
    pub async fn delete_project_env_var(
        &self,
        project: ProjectId,
        name: &str,
    ) -> Result<bool, Error> {
        const OP: &str = "delete_project_env_var";
        let done = sqlx::query("DELETE FROM project_env_vars WHERE project_id = $1 AND name = $2")
            .bind(to_i64("project id", project.0)?)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(query(OP))?;
        Ok(done.rows_affected() > 0)
    }
}
