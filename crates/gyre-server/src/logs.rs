//! Task logs: live fan-out to readers, archiving to object storage when a task ends, and
//! reading back (live or archived) for the API.
//!
//! - Agents send step events (`agent_api`); each stored event is published to the
//!   [`Hub`], which keeps one broadcast channel per running task.
//! - `GET /api/gyre/v1/tasks/{workflow}/{task}/log?from=N` is a Server-Sent Events stream:
//!   every stored event from sequence number `N` on, then live ones as they arrive, then
//!   an `end` event when the task's log is complete. Each `data:` is one JSON [`Live`].
//! - When a task ends its events are written as one JSON array to the blob
//!   `logs/<workflow>/<task>.json` and then deleted from SQL.

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

/// What the archive blob holds per event (bytes exact, base64).
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

pub fn archive_key(key: TaskKey) -> String {
    format!("logs/{}/{}.json", key.workflow.0, key.task.0)
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
    let all: Vec<Archived> = chunks
        .iter()
        .map(|c| Archived {
            seq: c.seq,
            step: c.step,
            stream: c.stream.as_str().to_string(),
            at_ms: c.at.0,
            data: base64::engine::general_purpose::STANDARD.encode(&c.data),
        })
        .collect();
    let body = match serde_json::to_vec(&all) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(task = %key, error = %e, "encoding a log archive");
            return;
        }
    };
    let blob = archive_key(key);
    if let Err(e) = app.blobs.put(&blob, body.into()).await {
        tracing::error!(task = %key, error = %e, "storing a log archive");
        return;
    }
    if let Err(e) = app.store.archive_log(key, &blob).await {
        tracing::error!(task = %key, error = %e, "marking a log archived");
    }
}

/// Every event of a task's log from `from` on: archived or still in SQL. The flag says
/// whether the log is complete (archived).
pub async fn read(app: &App, key: TaskKey, from: u64) -> ApiResult<(Vec<Live>, bool)> {
    let task = app.store.task_row(key).await?;
    if let Some(blob) = task.and_then(|t| t.log_key) {
        let bytes = app
            .blobs
            .get(&blob)
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
        return Ok((out, true));
    }
    let chunks = stored_chunks(app, key, from).await?;
    Ok((chunks.iter().map(Live::from_chunk).collect(), false))
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
    // Subscribe first, then read what is stored: nothing falls between the two.
    let mut rx = app.logs.subscribe(key);
    let (stored, complete) = read(&app, key, q.from).await?;
    let app2 = app.clone();
    let stream = async_stream(move |tx| async move {
        let mut last = q.from.checked_sub(1);
        for e in stored {
            last = Some(e.seq);
            if tx.send(sse(&e)).await.is_err() {
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
                    if tx.send(sse(&e)).await.is_err() {
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
                        if tx.send(sse(&e)).await.is_err() {
                            return;
                        }
                    }
                    complete = done;
                }
            }
        }
        let _ = tx.send(SseEvent::default().event("end").data("{}")).await;
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn sse(e: &Live) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .json_data(e)
        .unwrap_or_else(|_| SseEvent::default().data("{}"))
}

/// A stream fed by a task through a bounded channel.
fn async_stream<F, Fut>(f: F) -> impl FStream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}
