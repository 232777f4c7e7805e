//! The store's one error type.

use crate::{Engine, TaskKey};

/// Why a store operation failed. Database failures carry the operation that failed and
/// the driver's error as their source; conflicts the caller can act on have their own
/// variants (never found by matching error text).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL names no engine gyre supports.
    #[error("unsupported database URL '{0}': expected sqlite:PATH or postgres://…")]
    UnsupportedUrl(String),
    /// Opening the pool failed.
    #[error("cannot connect to the {engine} database")]
    Connect {
        engine: Engine,
        #[source]
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("migrating the {engine} database failed")]
    Migrate {
        engine: Engine,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A statement failed; `op` names the store method.
    #[error("{op} failed")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// `create_project` with a slug that exists.
    #[error("project '{0}' already exists")]
    ProjectExists(String),
    /// A project id or slug that is not stored.
    #[error("no project {0}")]
    UnknownProject(String),
    /// A pipeline or workflow the operation needs is not stored.
    #[error("no {kind} {id}")]
    NotFound { kind: &'static str, id: u64 },
    /// `register_agent` with a name or token hash already in use.
    #[error("agent name '{0}' or its token is already registered")]
    AgentExists(String),
    /// A task key that is already queued (`enqueue_task` twice).
    #[error("task {0} is already enqueued")]
    TaskExists(TaskKey),
    /// A retried log chunk whose content differs from the stored one.
    #[error("log chunk {seq} of task {task} was already stored with other content")]
    ChunkConflict { task: TaskKey, seq: u64 },
    /// A number that does not fit the database's signed 64-bit integers.
    #[error("{what} {value} is out of range")]
    OutOfRange { what: &'static str, value: u64 },
    /// A stored row the store cannot read back (a bad status string, bad JSON, …).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

/// `map_err` helper: wraps a driver error with the operation's name.
pub(crate) fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Query { op, source }
}

/// Whether a driver error is a unique-constraint violation (by its SQLSTATE kind).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
