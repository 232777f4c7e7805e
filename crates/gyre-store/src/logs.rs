//! Log chunks of running tasks: appended with a sequence number the agent picks, so a
//! retried append is a no-op, and read back in sequence order.

use crate::error::query;
use crate::{Error, Millis, Store, TaskKey, get, get_parsed, get_u64, to_i64};
use sqlx::any::AnyRow;
use std::fmt;
use std::str::FromStr;

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    /// gyre's own notes.
    System,
    /// A step began: `data` is JSON `{"name", "header"}`.
    StepStarted,
    /// A step ended: `data` is its status (`success`, `failed`, …).
    StepFinished,
}

impl Stream {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
            Stream::StepStarted => "step_started",
            Stream::StepFinished => "step_finished",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdout" => Ok(Stream::Stdout),
            "stderr" => Ok(Stream::Stderr),
            "system" => Ok(Stream::System),
            "step_started" => Ok(Stream::StepStarted),
            "step_finished" => Ok(Stream::StepFinished),
            _ => Err(format!("unknown stream '{s}'")),
        }
    }
}

/// One chunk of a task's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    /// The agent's sequence number for this task: 0, 1, 2, …
    pub seq: u64,
    /// The step's index in the job.
    pub step: u32,
    pub stream: Stream,
    /// When the agent read it.
    pub at: Millis,
    /// The raw bytes (not necessarily UTF-8; colours included).
    pub data: Vec<u8>,
}

impl Store {
    /// Stores a chunk of a stored task. `true` if it was stored now, `false` if the same
    /// chunk was already there (a retried append); [`Error::ChunkConflict`] if a chunk
    /// with this `seq` but other content is stored.
    pub async fn append_log_chunk(&self, key: TaskKey, chunk: &LogChunk) -> Result<bool, Error> {
        const OP: &str = "append_log_chunk";
        let workflow = to_i64("workflow id", key.workflow.0)?;
        let task = to_i64("task id", key.task.0)?;
        let seq = to_i64("log sequence number", chunk.seq)?;
        let done = sqlx::query(
            "INSERT INTO log_chunks (workflow_id, task_id, seq, step, stream, at, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (workflow_id, task_id, seq) DO NOTHING",
        )
        .bind(workflow)
        .bind(task)
        .bind(seq)
        .bind(i64::from(chunk.step))
        .bind(chunk.stream.as_str())
        .bind(chunk.at.0)
        .bind(chunk.data.as_slice())
        .execute(&self.pool)
        .await
        .map_err(query(OP))?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        let row = sqlx::query(
            "SELECT seq, step, stream, at, data FROM log_chunks \
             WHERE workflow_id = $1 AND task_id = $2 AND seq = $3",
        )
        .bind(workflow)
        .bind(task)
        .bind(seq)
        .fetch_one(&self.pool)
        .await
        .map_err(query(OP))?;
        let stored = chunk_from_row(&row)?;
        // The timestamp may differ on a retry; what was said may not.
        if (stored.step, stored.stream, &stored.data) == (chunk.step, chunk.stream, &chunk.data) {
            Ok(false)
        } else {
            Err(Error::ChunkConflict {
                task: key,
                seq: chunk.seq,
            })
        }
    }

    /// A task's chunks with `seq >= from_seq`, in sequence order, at most `limit`.
    pub async fn log_chunks(
        &self,
        key: TaskKey,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<LogChunk>, Error> {
        let rows = sqlx::query(
            "SELECT seq, step, stream, at, data FROM log_chunks \
             WHERE workflow_id = $1 AND task_id = $2 AND seq >= $3 ORDER BY seq LIMIT $4",
        )
        .bind(to_i64("workflow id", key.workflow.0)?)
        .bind(to_i64("task id", key.task.0)?)
        .bind(to_i64("log sequence number", from_seq)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query("log_chunks"))?;
        rows.iter().map(chunk_from_row).collect()
    }
}

pub(crate) fn chunk_from_row(row: &AnyRow) -> Result<LogChunk, Error> {
    const T: &str = "log_chunks";
    let step = get_u64(row, T, "step")?;
    Ok(LogChunk {
        seq: get_u64(row, T, "seq")?,
        step: u32::try_from(step).map_err(|_| Error::Corrupt {
            table: T,
            detail: format!("column step: {step} does not fit u32"),
        })?,
        stream: get_parsed(row, T, "stream")?,
        at: Millis(get(row, T, "at")?),
        data: get(row, T, "data")?,
    })
}
