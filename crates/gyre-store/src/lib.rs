//! gyre-store: everything gyre keeps in SQL, through one code path for SQLite (the
//! embedded default) and PostgreSQL ≥ 12, with one migration set.
//!
//! [`Store`] wraps a sqlx `AnyPool`. Every statement is plain runtime SQL with `$N`
//! placeholders that both engines accept; the schema (`migrations/`) uses only portable
//! types (BIGINT, TEXT, BYTEA) and gets row ids from a counter table. The two places
//! where the engines must differ are written out in [`Store::claim_task`] (PostgreSQL
//! `FOR UPDATE SKIP LOCKED`) and in how a writing transaction starts (SQLite
//! `BEGIN IMMEDIATE`, so a transaction holds the single write lock from its first
//! statement and never fails on a lock upgrade).
//!
//! No hidden clock: every method that stamps a time takes it as a [`Millis`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), gyre_store::Error> {
//! use gyre_store::{Millis, NewProject, Store};
//! let store = Store::connect("sqlite:/var/lib/gyre/gyre.db?mode=rwc").await?;
//! store.migrate().await?;
//! let settings = serde_json::json!({});
//! let project = store
//!     .create_project(
//!         &NewProject {
//!             slug: "gh/acme/api",
//!             repo_url: "https://git.example/acme/api.git",
//!             default_branch: "main",
//!             webhook_secret: None,
//!             settings: &settings,
//!         },
//!         Millis::now(),
//!     )
//!     .await?;
//! # Ok(()) }
//! ```

mod agents;
mod contexts;
mod error;
mod keys;
mod logs;
mod notify;
mod pipelines;
mod project_data;
mod queue;
mod server;
mod ui;

pub use agents::{Agent, AgentStatus};
pub use contexts::{ContextRow, ContextVarRow};
pub use error::Error;
pub use keys::SigningKeyRow;
pub use logs::{LogChunk, Stream};
pub use notify::LogListener;
pub use pipelines::{NewJob, NewPipeline, NewProject, Pipeline, Project, ProjectId};
pub use project_data::{EnvVarRow, PullRequestRow};
pub use queue::{NewTask, Task, TaskKey};
pub use server::{JobRow, PipelineDetails, TaskRow, WorkflowRow, WorkflowTx};
pub use ui::UiSession;

use error::query;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Row, SqlSafeStr, Transaction};
use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The migration set, in order: `(version, description, SQL)`. The files live in
/// `migrations/`; a test checks that this list and the directory agree.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "server", include_str!("../migrations/0002_server.sql")),
    (
        3,
        "project_data",
        include_str!("../migrations/0003_project_data.sql"),
    ),
    (4, "ui", include_str!("../migrations/0004_ui.sql")),
    (
        5,
        "signing_keys",
        include_str!("../migrations/0005_signing_keys.sql"),
    ),
    (
        6,
        "contexts",
        include_str!("../migrations/0006_contexts.sql"),
    ),
];

/// The SQL engine behind a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
        })
    }
}

impl Engine {
    /// The engine a database URL names: `sqlite:` or `postgres://`/`postgresql://`.
    pub fn of_url(url: &str) -> Result<Engine, Error> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Engine::Postgres)
        } else {
            Err(Error::UnsupportedUrl(url.to_string()))
        }
    }
}

/// A point in time: milliseconds since the Unix epoch (UTC). Stored as BIGINT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Millis {
    /// The system clock now (for callers; the store itself never reads the clock).
    pub fn now() -> Millis {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Millis(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Millis {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Millis(self.0.saturating_add(ms))
    }
}

/// The SQL store: a connection pool and the engine it talks to. Cheap to clone (the
/// pool is shared).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// The URL connected to (PostgreSQL listeners open their own connection).
    url: std::sync::Arc<str>,
}

impl fmt::Debug for Store {
    // Not the URL: it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a pool for `url`: `sqlite:PATH` (add `?mode=rwc` to create the file) or
    /// `postgres://user@host:port/db`. (Not `sqlite::memory:`: each pooled connection
    /// would get its own empty database.) SQLite databases are switched to WAL mode so
    /// readers never wait for the writer. Run [`Store::migrate`] before anything else.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        let engine = Engine::of_url(url)?;
        sqlx::any::install_default_drivers();
        let max_connections = match engine {
            Engine::Sqlite => 8,
            Engine::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(|source| Error::Connect { engine, source })?;
        if engine == Engine::Sqlite {
            // Persistent in the file; needs no other connection open, so do it first.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_all(&pool)
                .await
                .map_err(|source| Error::Connect { engine, source })?;
        }
        Ok(Store {
            pool,
            engine,
            url: url.into(),
        })
    }

    /// The engine this store talks to.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Applies the migrations not applied yet (safe to call on every start; on
    /// PostgreSQL concurrent callers wait for each other).
    pub async fn migrate(&self) -> Result<(), Error> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await
            .map_err(|source| Error::Migrate {
                engine: self.engine,
                source,
            })
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction that will write. SQLite: `BEGIN IMMEDIATE` takes the write
    /// lock now (waiting up to the busy timeout), so the transaction cannot deadlock on a
    /// read-to-write upgrade. PostgreSQL: a plain `BEGIN` (READ COMMITTED; row locks do
    /// the rest).
    async fn begin_write(&self, op: &'static str) -> Result<Transaction<'static, Any>, Error> {
        let statement = match self.engine {
            Engine::Sqlite => "BEGIN IMMEDIATE",
            Engine::Postgres => "BEGIN",
        };
        self.pool.begin_with(statement).await.map_err(query(op))
    }

    /// Hands out the next row id of `table` inside `tx`.
    async fn next_id(
        tx: &mut Transaction<'static, Any>,
        table: &'static str,
        op: &'static str,
    ) -> Result<u64, Error> {
        let row = sqlx::query(
            "UPDATE id_counters SET last_id = last_id + 1 WHERE name = $1 RETURNING last_id",
        )
        .bind(table)
        .fetch_one(&mut **tx)
        .await
        .map_err(query(op))?;
        get_u64(&row, "id_counters", "last_id")
    }
}

/// A `u64` as the database's BIGINT.
pub(crate) fn to_i64(what: &'static str, value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::OutOfRange { what, value })
}

/// Reads a column, mapping a decode failure to [`Error::Corrupt`].
pub(crate) fn get<'r, T>(row: &'r AnyRow, table: &'static str, col: &str) -> Result<T, Error>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(col).map_err(|e| Error::Corrupt {
        table,
        detail: format!("column {col}: {e}"),
    })
}

/// Reads a non-negative BIGINT column as `u64`.
pub(crate) fn get_u64(row: &AnyRow, table: &'static str, col: &str) -> Result<u64, Error> {
    let v: i64 = get(row, table, col)?;
    u64::try_from(v).map_err(|_| Error::Corrupt {
        table,
        detail: format!("column {col}: negative value {v}"),
    })
}

/// Reads a nullable non-negative BIGINT column.
pub(crate) fn get_opt_u64(
    row: &AnyRow,
    table: &'static str,
    col: &str,
) -> Result<Option<u64>, Error> {
    let v: Option<i64> = get(row, table, col)?;
    v.map(|v| {
        u64::try_from(v).map_err(|_| Error::Corrupt {
            table,
            detail: format!("column {col}: negative value {v}"),
        })
    })
    .transpose()
}

/// Reads a TEXT column through `FromStr` (status strings).
pub(crate) fn get_parsed<T>(row: &AnyRow, table: &'static str, col: &str) -> Result<T, Error>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    let s: String = get(row, table, col)?;
    s.parse().map_err(|e: T::Err| Error::Corrupt {
        table,
        detail: format!("column {col}: {e}"),
    })
}

/// Reads a TEXT column holding JSON.
pub(crate) fn get_json(
    row: &AnyRow,
    table: &'static str,
    col: &str,
) -> Result<serde_json::Value, Error> {
    let s: String = get(row, table, col)?;
    serde_json::from_str(&s).map_err(|e| Error::Corrupt {
        table,
        detail: format!("column {col}: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in `migrations/` is in `MIGRATIONS` under its number, in order, and
    /// nothing else is: a new migration file cannot be forgotten.
    #[test]
    fn migration_list_matches_the_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("read migrations/")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|(version, description, _)| format!("{version:04}_{description}.sql"))
            .collect();
        assert_eq!(files, listed);
        for (file, (_, _, sql)) in files.iter().zip(MIGRATIONS) {
            let on_disk = std::fs::read_to_string(dir.join(file)).expect("read migration");
            assert_eq!(&on_disk, sql, "{file}");
        }
    }

    #[test]
    fn engine_of_url() {
        assert_eq!(Engine::of_url("sqlite:/tmp/x.db").unwrap(), Engine::Sqlite);
        assert_eq!(Engine::of_url("sqlite::memory:").unwrap(), Engine::Sqlite);
        assert_eq!(
            Engine::of_url("postgres://u@h/db").unwrap(),
            Engine::Postgres
        );
        assert_eq!(
            Engine::of_url("postgresql://u@h/db").unwrap(),
            Engine::Postgres
        );
        for bad in ["mysql://u@h/db", "", "/var/lib/gyre.db"] {
            assert!(
                matches!(Engine::of_url(bad), Err(Error::UnsupportedUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_beyond_i64_are_refused() {
        assert!(matches!(
            to_i64("task id", u64::MAX),
            Err(Error::OutOfRange {
                value: u64::MAX,
                ..
            })
        ));
        assert_eq!(to_i64("task id", 7).unwrap(), 7);
    }

    #[test]
    fn millis_plus_saturates() {
        assert_eq!(
            Millis(1_000).plus(Duration::from_millis(500)),
            Millis(1_500)
        );
        assert_eq!(
            Millis(i64::MAX - 1).plus(Duration::from_secs(10)),
            Millis(i64::MAX)
        );
    }
}
