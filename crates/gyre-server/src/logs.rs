//! Task logs: live fan-out to readers, archiving to object storage when a task ends, and
//! reading back (live or archived) for the API.
//!
//! - Agents send step events (`agent_api`); each stored event is published to the
//!   [`Hub`], which keeps one broadcast channel per running task.
//! - `GET /api/gyre/v1/tasks/{workflow}/{task}/log?from=N` is a Server-Sent Events stream:
//!   every stored event from sequence number `N` on, then live ones as they arrive, then
//!   an `end` event when the task's log is complete. Each `data:` is one JSON [`Live`].
//! - When a task ends its log is written to object storage and then deleted from SQL, as
//!   two blobs: `logs/<workflow>/<task>.log`, the output bytes (stdout, stderr, system) in
//!   order, and `logs/<workflow>/<task>.idx.json`, an [`Index`] with one entry per event
//!   (its offset and length in the output, and the text of non-output events). A reader
//!   of a long log's tail loads the index and one byte range ([`tail`]), never the whole
//!   log. Archives of the first format (one JSON array, `….json`) are still read.

use crate::App;
use crate::error::{ApiError, ApiResult};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use base64::Engine as _;
use futures_util::Stream as FStream;
use futures_util::StreamExt as _;
use gyre_core::{TaskId, WorkflowId};
use gyre_store::{LogChunk, TaskKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// One log event as readers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub seq: u64,
    pub step: u32,
    /// `stdout`, `stderr`, `system`, `step_started`, `step_finished`.
    pub stream: String,
    pub at_ms: i64,
    /// Output as text (lossy UTF-8); for `step_started` JSON `{name, header}`, for
    /// `step_finished` the status.
    pub text: String,
}

impl Live {
    pub fn from_chunk(c: &LogChunk) -> Live {
        Live {
            seq: c.seq,
            step: c.step,
            stream: c.stream.as_str().to_string(),
            at_ms: c.at.0,
            text: String::from_utf8_lossy(&c.data).into_owned(),
        }
    }
}

/// What the first archive format (one JSON array) held per event (bytes exact, base64).
#[derive(Serialize, Deserialize)]
struct Archived {
    seq: u64,
    step: u32,
    stream: String,
    at_ms: i64,
    data: String,
}

#[derive(Clone, Debug)]
enum Msg {
    Event(Live),
    /// Another replica stored events of the task (or ended it): read them from SQL.
    Wake,
    End,
}

/// Live channels of running tasks.
#[derive(Default)]
pub struct Hub {
    channels: Mutex<HashMap<TaskKey, broadcast::Sender<Msg>>>,
}

impl Hub {
    fn sender(&self, key: TaskKey) -> broadcast::Sender<Msg> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| broadcast::channel(4096).0)
            .clone()
    }

    fn subscribe(&self, key: TaskKey) -> broadcast::Receiver<Msg> {
        self.sender(key).subscribe()
    }

    pub fn publish(&self, key: TaskKey, event: Live) {
        let _ = self.sender(key).send(Msg::Event(event));
    }

    /// Another replica has news of task `key`: wake its readers here, if any.
    pub fn wake(&self, key: TaskKey) {
        let map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&key) {
            let _ = s.send(Msg::Wake);
        }
    }

    /// The task's log is complete: readers get `end`, the channel goes away.
    pub fn end(&self, key: TaskKey) {
        let sender = {
            let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&key)
        };
        if let Some(s) = sender {
            let _ = s.send(Msg::End);
        }
    }
}

/// Wakes this replica's live readers when another replica stores events (PostgreSQL
/// LISTEN; returns at once on SQLite). Reconnects after errors; runs until aborted.
pub async fn listen_to_replicas(app: Arc<App>) {
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        match app.store.log_listener().await {
            Ok(None) => return,
            Ok(Some(mut listener)) => loop {
                delay = std::time::Duration::from_millis(500);
                match listener.recv().await {
                    Ok((origin, key)) if origin != app.instance => app.logs.wake(key),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "listening to other replicas");
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "listening to other replicas"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
    }
}

/// The blob holding a task's archived output bytes.
pub fn archive_key(key: TaskKey) -> String {
    format!("logs/{}/{}.log", key.workflow.0, key.task.0)
}

/// The blob holding a task's archive [`Index`] (the task's `log_key`).
pub fn index_key(key: TaskKey) -> String {
    format!("logs/{}/{}.idx.json", key.workflow.0, key.task.0)
}

/// The index of an archived log (format version 2).
#[derive(Serialize, Deserialize)]
pub struct Index {
    pub version: u32,
    /// Every event in order.
    pub events: Vec<IndexEntry>,
}

/// One event of an archived log: `(seq, step, stream, at_ms, offset, len, text)`. Output
/// events (`stdout`, `stderr`, `system`) are `len` bytes at `offset` of the output blob;
/// `text` holds the text of every non-output event and of `system` events.
#[derive(Clone, Serialize, Deserialize)]
pub struct IndexEntry(u64, u32, String, i64, u64, u64, Option<String>);

fn is_output(stream: &str) -> bool {
    matches!(stream, "stdout" | "stderr" | "system")
}

/// Splits events into the output blob and its index.
fn build_archive(events: &[LogChunk]) -> (Vec<u8>, Index) {
    let mut data = Vec::new();
    let mut entries = Vec::with_capacity(events.len());
    for c in events {
        let stream = c.stream.as_str();
        let output = is_output(stream);
        let off = data.len() as u64;
        let len = if output { c.data.len() as u64 } else { 0 };
        let text =
            (!output || stream == "system").then(|| String::from_utf8_lossy(&c.data).into_owned());
        if output {
            data.extend_from_slice(&c.data);
        }
        entries.push(IndexEntry(
            c.seq,
            c.step,
            stream.into(),
            c.at.0,
            off,
            len,
            text,
        ));
    }
    (
        data,
        Index {
            version: 2,
            events: entries,
        },
    )
}

/// Moves a finished task's log to object storage. Failures are logged; the chunks then
/// stay in SQL, where readers still find them.
pub async fn archive(app: &App, key: TaskKey) {
    app.logs.end(key);
    store_archive(app, key).await;
    // Readers on other replicas see the log complete once it is archived.
    app.log_changed(key).await;
}

async fn store_archive(app: &App, key: TaskKey) {
    let chunks = match stored_chunks(app, key, 0).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(task = %key, error = %e, "reading a log to archive");
            return;
        }
    };
    let (data, index) = build_archive(&chunks);
    drop(chunks);
    let index = match serde_json::to_vec(&index) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(task = %key, error = %e, "encoding a log archive");
            return;
        }
    };
    // The output first: an index is only ever stored, and named, once its output is.
    for (blob, body) in [(archive_key(key), data), (index_key(key), index)] {
        if let Err(e) = app.blobs.put(&blob, body.into()).await {
            tracing::error!(task = %key, error = %e, "storing a log archive");
            return;
        }
    }
    if let Err(e) = app.store.archive_log(key, &index_key(key)).await {
        tracing::error!(task = %key, error = %e, "marking a log archived");
    }
}

/// Every event of a task's log from `from` on: archived or still in SQL. The flag says
/// whether the log is complete (archived).
pub async fn read(app: &App, key: TaskKey, from: u64) -> ApiResult<(Vec<Live>, bool)> {
    match archived(app, key).await? {
        Some(Archive::V2(index)) => {
            let start = index.events.partition_point(|e| e.0 < from);
            let events = read_entries(app, key, &index.events[start..]).await?;
            Ok((events, true))
        }
        Some(Archive::V1(blob)) => Ok((read_v1(app, &blob, from).await?, true)),
        None => {
            let chunks = stored_chunks(app, key, from).await?;
            Ok((chunks.iter().map(Live::from_chunk).collect(), false))
        }
    }
}

/// Where a finished task's log is.
enum Archive {
    /// The first format: one JSON array under this key.
    V1(String),
    V2(Index),
}

async fn archived(app: &App, key: TaskKey) -> ApiResult<Option<Archive>> {
    let task = app.store.task_row(key).await?;
    let Some(blob) = task.and_then(|t| t.log_key) else {
        return Ok(None);
    };
    if blob.ends_with(".idx.json") {
        let bytes = app
            .blobs
            .get(&blob)
            .await
            .map_err(|e| ApiError::internal("reading a log index", e))?;
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::internal("log index", e))?;
        return Ok(Some(Archive::V2(index)));
    }
    Ok(Some(Archive::V1(blob)))
}

/// The events of `entries` (consecutive entries of an index), their output read as one
/// byte range.
async fn read_entries(app: &App, key: TaskKey, entries: &[IndexEntry]) -> ApiResult<Vec<Live>> {
    let outputs = entries.iter().filter(|e| is_output(&e.2));
    let start = outputs.clone().map(|e| e.4).min().unwrap_or(0);
    let end = outputs.map(|e| e.4 + e.5).max().unwrap_or(0);
    let bytes = app
        .blobs
        .get_range(&archive_key(key), start..end)
        .await
        .map_err(|e| ApiError::internal("reading a log archive", e))?;
    Ok(entries
        .iter()
        .map(|e| {
            let text = if is_output(&e.2) {
                let (a, b) = ((e.4 - start) as usize, (e.4 + e.5 - start) as usize);
                String::from_utf8_lossy(bytes.get(a..b).unwrap_or_default()).into_owned()
            } else {
                e.6.clone().unwrap_or_default()
            };
            Live {
                seq: e.0,
                step: e.1,
                stream: e.2.clone(),
                at_ms: e.3,
                text,
            }
        })
        .collect())
}

async fn read_v1(app: &App, blob: &str, from: u64) -> ApiResult<Vec<Live>> {
    {
        let bytes = app
            .blobs
            .get(blob)
            .await
            .map_err(|e| ApiError::internal("reading a log archive", e))?;
        let all: Vec<Archived> =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::internal("log archive", e))?;
        let out = all
            .into_iter()
            .filter(|a| a.seq >= from)
            .map(|a| Live {
                seq: a.seq,
                step: a.step,
                stream: a.stream,
                at_ms: a.at_ms,
                text: String::from_utf8_lossy(
                    &base64::engine::general_purpose::STANDARD
                        .decode(a.data)
                        .unwrap_or_default(),
                )
                .into_owned(),
            })
            .collect();
        Ok(out)
    }
}

/// The end of a task's log: the events before `before` (the end when `None`) holding at
/// most about `max_bytes` of output (at least one event).
pub struct Tail {
    pub events: Vec<Live>,
    /// Events before these exist (load them with `before` = the first one's `seq`).
    pub more_before: bool,
    /// The log is complete (archived).
    pub complete: bool,
    /// The sequence number after the last event (where a live reader goes on).
    pub next_seq: u64,
}

/// How many events, counted from the end of `lens` (output sizes, in order), make up a
/// tail of at most `max_bytes` (but at least one event when there is one).
pub fn tail_len(lens: impl DoubleEndedIterator<Item = u64>, max_bytes: u64) -> usize {
    let mut total = 0u64;
    let mut n = 0;
    for len in lens.rev() {
        if n > 0 && total + len > max_bytes {
            break;
        }
        total += len;
        n += 1;
    }
    n
}

/// The tail of a task's log (see [`Tail`]): for an archived log one index read and one
/// byte range; for a running one, SQL pages read backwards.
pub async fn tail(app: &App, key: TaskKey, before: Option<u64>, max_bytes: u64) -> ApiResult<Tail> {
    let before = before.unwrap_or(u64::MAX);
    let (events, more_before, complete) = match archived(app, key).await? {
        Some(Archive::V2(index)) => {
            let end = index.events.partition_point(|e| e.0 < before);
            let head = &index.events[..end];
            let n = tail_len(head.iter().map(|e| e.5), max_bytes);
            let events = read_entries(app, key, &head[end - n..]).await?;
            (events, n < end, true)
        }
        Some(Archive::V1(blob)) => {
            let mut all = read_v1(app, &blob, 0).await?;
            all.retain(|e| e.seq < before);
            let n = tail_len(all.iter().map(|e| e.text.len() as u64), max_bytes);
            let more = n < all.len();
            (all.split_off(all.len() - n), more, true)
        }
        None => {
            let mut rev: Vec<LogChunk> = Vec::new();
            let mut total = 0u64;
            let mut cursor = before;
            let mut more = false;
            // Small pages first: events are up to 64 KiB each, and a tail needs few.
            let mut limit = 16;
            'pages: loop {
                let page = app.store.log_chunks_before(key, cursor, limit).await?;
                let full = page.len() == limit as usize;
                limit = (limit * 4).min(1024);
                for c in page {
                    let len = c.data.len() as u64;
                    if !rev.is_empty() && total + len > max_bytes {
                        more = true;
                        break 'pages;
                    }
                    total += len;
                    cursor = c.seq;
                    rev.push(c);
                }
                if !full {
                    break;
                }
            }
            rev.reverse();
            (rev.iter().map(Live::from_chunk).collect(), more, false)
        }
    };
    let next_seq = events.last().map_or(0, |e| e.seq + 1);
    Ok(Tail {
        events,
        more_before,
        complete,
        next_seq,
    })
}

/// The events of a task's log that are not job output, plus `system` notes: enough to
/// list its steps with their status, times and exit codes.
pub async fn markers(app: &App, key: TaskKey) -> ApiResult<Vec<Live>> {
    Ok(match archived(app, key).await? {
        Some(Archive::V2(index)) => index
            .events
            .into_iter()
            .filter(|e| e.6.is_some())
            .map(|e| Live {
                seq: e.0,
                step: e.1,
                stream: e.2,
                at_ms: e.3,
                text: e.6.unwrap_or_default(),
            })
            .collect(),
        Some(Archive::V1(blob)) => {
            let mut all = read_v1(app, &blob, 0).await?;
            all.retain(|e| !matches!(e.stream.as_str(), "stdout" | "stderr"));
            all
        }
        None => app
            .store
            .log_markers(key)
            .await?
            .iter()
            .map(Live::from_chunk)
            .collect(),
    })
}

/// A task's chunks still in SQL from `from` on, read a page at a time.
async fn stored_chunks(
    app: &App,
    key: TaskKey,
    from: u64,
) -> Result<Vec<LogChunk>, gyre_store::Error> {
    let mut out: Vec<LogChunk> = Vec::new();
    let mut next = from;
    loop {
        let page = app.store.log_chunks(key, next, 10_000).await?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        next = last.seq + 1;
        out.extend(page);
    }
}

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/api/gyre/v1/tasks/{workflow}/{task}/log", get(stream_log))
}

#[derive(Deserialize)]
struct FromQuery {
    #[serde(default)]
    from: u64,
}

async fn stream_log(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path((workflow, task)): Path<(u64, u64)>,
    Query(q): Query<FromQuery>,
) -> ApiResult<Sse<impl FStream<Item = Result<SseEvent, Infallible>>>> {
    crate::api::caller(&app, &headers, uri.query()).await?;
    let key = TaskKey {
        workflow: WorkflowId(workflow),
        task: TaskId(task),
    };
    if app.store.task(key).await?.is_none() {
        return Err(ApiError::not_found(format!("no task {workflow}/{task}")));
    }
    let stream = follow(app, key, q.from).await?.map(|e| {
        Ok(match e {
            Some(e) => sse(&e),
            None => SseEvent::default().event("end").data("{}"),
        })
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A task's log from `from` on: every stored event, then live ones as they arrive, then
/// `None` once the log is complete.
pub async fn follow(
    app: Arc<App>,
    key: TaskKey,
    from: u64,
) -> ApiResult<impl FStream<Item = Option<Live>> + Send + 'static> {
    // Subscribe first, then read what is stored: nothing falls between the two.
    let mut rx = app.logs.subscribe(key);
    let (stored, complete) = read(&app, key, from).await?;
    let app2 = app.clone();
    Ok(async_stream(move |tx| async move {
        let mut last = from.checked_sub(1);
        for e in stored {
            last = Some(e.seq);
            if tx.send(Some(e)).await.is_err() {
                return;
            }
        }
        let mut complete = complete;
        while !complete {
            let next = tokio::select! {
                // The server is stopping: the client reconnects (with `from`) elsewhere.
                () = app2.stopped() => return,
                next = tokio::time::timeout(app2.config.live_poll, rx.recv()) => next,
            };
            match next {
                Ok(Ok(Msg::Event(e))) => {
                    if last.is_some_and(|l| e.seq <= l) {
                        continue;
                    }
                    last = Some(e.seq);
                    if tx.send(Some(e)).await.is_err() {
                        return;
                    }
                }
                Ok(Ok(Msg::End)) | Ok(Err(broadcast::error::RecvError::Closed)) => {
                    complete = true;
                }
                Ok(Ok(Msg::Wake)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => {
                    // Woken by another replica, fell behind, or quiet: catch up from the
                    // store (also notices a task finished on another server).
                    let from = last.map_or(0, |l| l + 1);
                    let Ok((more, done)) = read(&app2, key, from).await else {
                        return;
                    };
                    for e in more {
                        last = Some(e.seq);
                        if tx.send(Some(e)).await.is_err() {
                            return;
                        }
                    }
                    complete = done;
                }
            }
        }
        let _ = tx.send(None).await;
    }))
}

fn sse(e: &Live) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .json_data(e)
        .unwrap_or_else(|_| SseEvent::default().data("{}"))
}

/// A stream fed by a task through a bounded channel.
fn async_stream<T: Send + 'static, F, Fut>(f: F) -> impl FStream<Item = T> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_store::{Millis, Stream};

    #[test]
    fn tails_hold_at_most_the_budget_but_at_least_one_event() {
        for (lens, max, want) in [
            (vec![10, 10, 10], 25, 2),
            (vec![10, 10, 10], 30, 3),
            (vec![10, 10, 100], 25, 1),
            (vec![], 25, 0),
            (vec![0, 0, 5], 5, 3),
        ] {
            assert_eq!(
                tail_len(lens.clone().into_iter(), max),
                want,
                "{lens:?} {max}"
            );
        }
    }

    #[test]
    fn archives_split_output_from_markers() {
        let chunk = |seq, stream, data: &[u8]| LogChunk {
            seq,
            step: 1,
            stream,
            at: Millis(seq as i64),
            data: data.to_vec(),
        };
        let (data, index) = build_archive(&[
            chunk(0, Stream::StepStarted, br#"{"name":"x"}"#),
            chunk(1, Stream::Stdout, b"hello "),
            chunk(2, Stream::Stderr, b"world"),
            chunk(3, Stream::System, b"Exited with code exit status 1"),
            chunk(4, Stream::StepFinished, b"failed"),
        ]);
        assert_eq!(data, b"hello worldExited with code exit status 1");
        let offsets: Vec<(u64, u64, bool)> = index
            .events
            .iter()
            .map(|e| (e.4, e.5, e.6.is_some()))
            .collect();
        assert_eq!(
            offsets,
            vec![
                (0, 0, true),
                (0, 6, false),
                (6, 5, false),
                (11, 30, true),
                (41, 0, true)
            ]
        );
    }
}
