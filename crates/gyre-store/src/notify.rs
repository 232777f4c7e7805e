//! Wake-ups between server replicas: when one replica stores a task's log events it
//! notifies the others (PostgreSQL `NOTIFY gyre_logs`), so their live readers read the
//! new events at once instead of at their next poll. SQLite has one process: nothing to
//! do. A notification carries no data, only "task K has news, from replica R"; readers
//! always read the events themselves from SQL.

use crate::error::query;
use crate::{Engine, Error, Store, TaskKey};
use gyre_core::{TaskId, WorkflowId};

const CHANNEL: &str = "gyre_logs";

/// Notifications from other replicas (PostgreSQL only).
pub struct LogListener {
    inner: sqlx::postgres::PgListener,
}

impl LogListener {
    /// The next notification: the replica that sent it and the task. Reconnects by itself
    /// when the connection drops (notifications sent meanwhile are lost, so readers also
    /// poll). Malformed payloads are skipped.
    pub async fn recv(&mut self) -> Result<(String, TaskKey), Error> {
        loop {
            let n = self.inner.recv().await.map_err(query("listen"))?;
            if let Some(parsed) = parse(n.payload()) {
                return Ok(parsed);
            }
        }
    }
}

fn parse(payload: &str) -> Option<(String, TaskKey)> {
    let (origin, key) = payload.split_once(' ')?;
    let (w, t) = key.split_once('/')?;
    Some((
        origin.to_string(),
        TaskKey {
            workflow: WorkflowId(w.parse().ok()?),
            task: TaskId(t.parse().ok()?),
        },
    ))
}

impl Store {
    /// Tells other replicas that task `key` has new log events (or ended). `origin`
    /// names this replica, so it can ignore its own notifications.
    pub async fn notify_log(&self, origin: &str, key: TaskKey) -> Result<(), Error> {
        if self.engine != Engine::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{origin} {key}"))
            .execute(&self.pool)
            .await
            .map_err(query("notify_log"))?;
        Ok(())
    }

    /// Listens for [`Store::notify_log`] of every replica; `None` on SQLite.
    pub async fn log_listener(&self) -> Result<Option<LogListener>, Error> {
        if self.engine != Engine::Postgres {
            return Ok(None);
        }
        let mut inner = sqlx::postgres::PgListener::connect(&self.url)
            .await
            .map_err(query("listen"))?;
        inner.listen(CHANNEL).await.map_err(query("listen"))?;
        Ok(Some(LogListener { inner }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        let (origin, key) = parse("r1 12/3").unwrap();
        assert_eq!(origin, "r1");
        assert_eq!((key.workflow.0, key.task.0), (12, 3));
        assert!(parse("r1").is_none());
        assert!(parse("r1 12").is_none());
        assert!(parse("r1 x/3").is_none());
    }
}
