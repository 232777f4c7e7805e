//! What the web UI needs beyond the API's reads: sign-in sessions and local users
//! (migration 0004), the
//! end of a running task's log, and its step markers (so a page renders a log's tail
//! without reading all of it).

use crate::error::query;
use crate::{Error, LogChunk, Millis, ProjectId, Store, TaskKey, get, to_i64};

/// A signed-in browser session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UiSession {
    pub login: String,
    /// The token every form of this session must post back.
    pub csrf: String,
    pub expires_at: Millis,
}

impl Store {
    /// Stores a session under the hash of its id (the cookie value is never stored).
    pub async fn create_ui_session(
        &self,
        id_hash: &str,
        session: &UiSession,
        now: Millis,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO ui_sessions (id_hash, login, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(&session.login)
        .bind(&session.csrf)
        .bind(now.0)
        .bind(session.expires_at.0)
        .execute(&self.pool)
        .await
        .map_err(query("create_ui_session"))?;
        Ok(())
    }

    /// The session with this id hash, unless it expired by `now`.
    pub async fn ui_session(&self, id_hash: &str, now: Millis) -> Result<Option<UiSession>, Error> {
        let row = sqlx::query(
            "SELECT login, csrf, expires_at FROM ui_sessions \
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("ui_session"))?;
        const T: &str = "ui_sessions";
        row.map(|r| {
            Ok(UiSession {
                login: get(&r, T, "login")?,
                csrf: get(&r, T, "csrf")?,
                expires_at: Millis(get(&r, T, "expires_at")?),
            })
        })
        .transpose()
    }

    /// Ends a session (sign-out) and drops every session expired by `now`.
    pub async fn delete_ui_session(&self, id_hash: &str, now: Millis) -> Result<(), Error> {
        sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1 OR expires_at <= $2")
            .bind(id_hash)
            .bind(now.0)
            .execute(&self.pool)
            .await
            .map_err(query("delete_ui_session"))?;
        Ok(())
    }

    /// Drops every session expired by `now` (housekeeping); how many.
    pub async fn expire_ui_sessions(&self, now: Millis) -> Result<u64, Error> {
        let done = sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
            .bind(now.0)
            .execute(&self.pool)
            .await
            .map_err(query("expire_ui_sessions"))?;
        Ok(done.rows_affected())
    }

    /// Adds a local user, or sets an existing one's password hash.
    pub async fn set_ui_user(
        &self,
        login: &str,
        password_hash: &str,
        now: Millis,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO ui_users (login, password_hash, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (login) DO UPDATE SET password_hash = excluded.password_hash",
        )
        .bind(login)
        .bind(password_hash)
        .bind(now.0)
        .execute(&self.pool)
        .await
        .map_err(query("set_ui_user"))?;
        Ok(())
    }

    /// Every local user's login and when it was added, by login.
    pub async fn ui_users(&self) -> Result<Vec<(String, Millis)>, Error> {
        let rows = sqlx::query("SELECT login, created_at FROM ui_users ORDER BY login")
            .fetch_all(&self.pool)
            .await
            .map_err(query("ui_users"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    get(r, "ui_users", "login")?,
                    Millis(get(r, "ui_users", "created_at")?),
                ))
            })
            .collect()
    }

    /// Deletes a local user and ends their web sessions; `false` if there was none.
    pub async fn delete_ui_user(&self, login: &str) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await.map_err(query("delete_ui_user"))?;
        let done = sqlx::query("DELETE FROM ui_users WHERE login = $1")
            .bind(login)
            .execute(&mut *tx)
            .await
            .map_err(query("delete_ui_user"))?;
        sqlx::query("DELETE FROM ui_sessions WHERE login = $1")
            .bind(login)
            .execute(&mut *tx)
            .await
            .map_err(query("delete_ui_user"))?;
        tx.commit().await.map_err(query("delete_ui_user"))?;
        Ok(done.rows_affected() == 1)
    }

    /// A local user's password hash.
    pub async fn ui_user_password_hash(&self, login: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT password_hash FROM ui_users WHERE login = $1")
            .bind(login)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("ui_user_password_hash"))?;
        row.map(|r| get(&r, "ui_users", "password_hash"))
            .transpose()
    }

    /// Changes a project's default branch; `false` if there is no such project.
    pub async fn set_project_default_branch(
        &self,
        project: ProjectId,
        branch: &str,
    ) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE projects SET default_branch = $2 WHERE id = $1")
            .bind(to_i64("project id", project.0)?)
            .bind(branch)
            .execute(&self.pool)
            .await
            .map_err(query("set_project_default_branch"))?;
        Ok(done.rows_affected() == 1)
    }

    /// A task's chunks with `seq < before_seq`, newest first, at most `limit`: the end of a
    /// log still in SQL, read backwards a page at a time.
    pub async fn log_chunks_before(
        &self,
        key: TaskKey,
        before_seq: u64,
        limit: u32,
    ) -> Result<Vec<LogChunk>, Error> {
        let rows = sqlx::query(
            "SELECT seq, step, stream, at, data FROM log_chunks \
             WHERE workflow_id = $1 AND task_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4",
        )
        .bind(to_i64("workflow id", key.workflow.0)?)
        .bind(to_i64("task id", key.task.0)?)
        .bind(i64::try_from(before_seq).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query("log_chunks_before"))?;
        rows.iter().map(crate::logs::chunk_from_row).collect()
    }

    /// A task's chunks that are not job output (`step_started`, `step_finished`,
    /// `system`), in sequence order: enough to list its steps.
    pub async fn log_markers(&self, key: TaskKey) -> Result<Vec<LogChunk>, Error> {
        let rows = sqlx::query(
            "SELECT seq, step, stream, at, data FROM log_chunks \
             WHERE workflow_id = $1 AND task_id = $2 \
             AND stream IN ('step_started', 'step_finished', 'system') ORDER BY seq",
        )
        .bind(to_i64("workflow id", key.workflow.0)?)
        .bind(to_i64("task id", key.task.0)?)
        .fetch_all(&self.pool)
        .await
        .map_err(query("log_markers"))?;
        rows.iter().map(crate::logs::chunk_from_row).collect()
    }
}
