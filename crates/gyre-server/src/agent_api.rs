//! The agent protocol's server side (`docs/agent-protocol.md`, types in
//! `gyre_protocol::agent`): registration, long-poll claims, leases, step events, results
//! and blobs. Agents never touch the database; everything goes through here.

use crate::auth::{new_token, presented_token, same_token, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::{App, logs, orchestrate};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures_util::StreamExt;
use gyre_core::{Event, TaskId, TaskResult, WorkflowId};
use gyre_protocol::agent::{
    AGENT_PROTOCOL_VERSION, AgentHeartbeat, Assignment, BlobEntry, BlobList, BlobStored, Claim,
    Events, EventsAck, Finish, Lease, MAX_CLAIM_WAIT_MS, OutputStream, Register, Registered,
    StepEventKind, StepOutcome, TaskEnd, TaskRef,
};
use gyre_store::{Agent, LogChunk, Millis, Project, Stream, TaskKey};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

type S = State<Arc<App>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/agent/v1/register", post(register))
        .route("/agent/v1/heartbeat", post(heartbeat))
        .route("/agent/v1/claim", post(claim))
        .route("/agent/v1/tasks/{workflow}/{task}/lease", post(lease))
        .route("/agent/v1/tasks/{workflow}/{task}/events", post(events))
        .route("/agent/v1/tasks/{workflow}/{task}/finish", post(finish))
        .route("/agent/v1/blobs", get(list_blobs))
        .route("/agent/v1/blobs/{*key}", get(get_blob).put(put_blob))
}

async fn agent(app: &App, headers: &HeaderMap) -> ApiResult<Agent> {
    let token = presented_token(headers, None).ok_or_else(ApiError::unauthorized)?;
    app.store
        .agent_by_token(&token_hash(&token))
        .await?
        .ok_or_else(ApiError::unauthorized)
}

async fn register(
    State(app): S,
    headers: HeaderMap,
    Json(req): Json<Register>,
) -> ApiResult<Json<Registered>> {
    let token = presented_token(&headers, None).ok_or_else(ApiError::unauthorized)?;
    if !same_token(&token, &app.config.admin_token) {
        return Err(ApiError::unauthorized());
    }
    if req.protocol != AGENT_PROTOCOL_VERSION {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "agent protocol {} is not supported; this server speaks {AGENT_PROTOCOL_VERSION}",
                req.protocol
            ),
        ));
    }
    let name = req.name.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "agent name must be 1-128 printable characters",
        ));
    }
    let agent_token = new_token();
    let hash = token_hash(&agent_token);
    let now = Millis::now();
    let id = match app.store.reregister_agent(name, &hash, now).await? {
        Some(id) => id,
        None => app.store.register_agent(name, &hash, now).await?.id,
    };
    tracing::info!(agent = name, id = id.0, "agent registered");
    Ok(Json(Registered {
        agent_id: id.0,
        token: agent_token,
        lease_ms: app.config.lease.as_millis() as u64,
    }))
}

async fn heartbeat(State(app): S, headers: HeaderMap) -> ApiResult<Json<AgentHeartbeat>> {
    let agent = agent(&app, &headers).await?;
    let status = app
        .store
        .heartbeat(agent.id, Millis::now())
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    Ok(Json(AgentHeartbeat {
        status: status.to_string(),
    }))
}

async fn claim(State(app): S, headers: HeaderMap, Json(req): Json<Claim>) -> ApiResult<Response> {
    let agent = agent(&app, &headers).await?;
    let classes: Vec<&str> = req.resource_classes.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_millis(req.wait_ms.min(MAX_CLAIM_WAIT_MS));
    loop {
        // Register interest before looking, so an enqueue between the two still wakes us.
        let notified = app.queue.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = Millis::now();
        if let Some(task) = app
            .store
            .claim_task(agent.id, &classes, now, app.config.lease)
            .await?
        {
            let mut spec: gyre_protocol::TaskSpec = serde_json::from_value(task.payload.clone())
                .map_err(|e| ApiError::internal("stored task spec", e))?;
            let project = app
                .store
                .project_of_workflow(task.key.workflow)
                .await?
                .ok_or_else(|| ApiError::internal("claiming a task", "its project is gone"))?;
            if let Err(why) = add_secrets(&app, &project, &mut spec).await {
                // The job cannot have what it is owed (the key service is down, a value
                // was altered, a context is missing): it fails saying why, rather than
                // the claim failing and leaving the task leased to an agent without it.
                fail_unstarted(&app, agent.id, task.key, &why).await?;
                continue;
            }
            let event = Event::TaskStarted {
                task: task.key.task,
            };
            orchestrate::apply(&app, task.key.workflow, vec![event])
                .await
                .map_err(|e| ApiError::internal("starting a task", e))?;
            tracing::info!(task = %task.key, agent = agent.id.0, "task claimed");
            let assignment = Assignment {
                task: TaskRef {
                    workflow_id: task.key.workflow.0,
                    task_id: task.key.task.0,
                },
                lease_expires_at_ms: now.plus(app.config.lease).0,
                spec,
            };
            return Ok(Json(assignment).into_response());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // Other servers may enqueue too: look again at least every second.
        tokio::select! {
            () = app.stopped() => return Ok(StatusCode::NO_CONTENT.into_response()),
            _ = tokio::time::timeout(left.min(Duration::from_secs(1)), notified) => {}
        }
    }
}

/// What a task gets only when an agent claims it, never stored with it: the project's
/// variables, the variables of the contexts it names and its OIDC tokens. A build of a
/// forked pull request gets none of them unless the project passes secrets to forks, as
/// on CircleCI (§12). The error says why the task cannot have them.
async fn add_secrets(
    app: &App,
    project: &Project,
    spec: &mut gyre_protocol::TaskSpec,
) -> Result<(), String> {
    let fork_pr = spec.job.fork_pull_request.is_some();
    if fork_pr && project.settings["forks_receive_secret_env_vars"].as_bool() != Some(true) {
        return Ok(());
    }
    let vars = crate::envvars::for_job(app, project)
        .await
        .map_err(|e| e.message)?;
    spec.environment.extend(vars);
    let (vars, context_ids) = crate::contexts::for_job(app, project, &spec.job.contexts)
        .await
        .map_err(|e| e.message)?;
    spec.environment.extend(vars);
    match crate::oidc::mint(app, &spec.job, &context_ids).await {
        Ok((v1, v2)) => {
            spec.job.oidc_token = Some(v1);
            spec.job.oidc_token_v2 = Some(v2);
        }
        // A server without a secrets key (embedded uses) issues none.
        Err(crate::oidc::OidcError::NoSecrets) => {}
        Err(err) => return Err(format!("cannot issue the job's OIDC token: {err}")),
    }
    Ok(())
}

/// Ends a task just claimed by `agent` as failed before it ran: a log with one step saying
/// `why`, then the usual finish.
async fn fail_unstarted(
    app: &Arc<App>,
    agent: gyre_core::AgentId,
    key: TaskKey,
    why: &str,
) -> ApiResult<()> {
    tracing::error!(task = %key, why, "task failed before it started");
    orchestrate::apply(
        app,
        key.workflow,
        vec![Event::TaskStarted { task: key.task }],
    )
    .await
    .map_err(|e| ApiError::internal("starting a task", e))?;
    let at = Millis::now();
    let chunks = [
        (
            Stream::StepStarted,
            json!({"name": "Preparing environment variables", "header": null}).to_string(),
        ),
        (Stream::System, format!("{why}\n")),
        (Stream::StepFinished, "failed".to_owned()),
    ];
    for (seq, (stream, data)) in chunks.into_iter().enumerate() {
        let chunk = LogChunk {
            seq: seq as u64,
            step: 0,
            stream,
            at,
            data: data.into_bytes(),
        };
        app.store.append_log_chunk(key, &chunk).await?;
    }
    let outcome = json!({"result": "failed", "message": why});
    finish_task(app.clone(), agent, key, TaskResult::Failed, outcome).await?;
    Ok(())
}

fn key(workflow: u64, task: u64) -> TaskKey {
    TaskKey {
        workflow: WorkflowId(workflow),
        task: TaskId(task),
    }
}

async fn lease(
    State(app): S,
    headers: HeaderMap,
    Path((workflow, task)): Path<(u64, u64)>,
) -> ApiResult<Json<Lease>> {
    let agent = agent(&app, &headers).await?;
    let key = key(workflow, task);
    let until = Millis::now().plus(app.config.lease);
    if app.store.renew_lease(key, agent.id, until).await? {
        return Ok(Json(Lease {
            lease_expires_at_ms: until.0,
            cancel: false,
        }));
    }
    match app.store.task(key).await? {
        Some(t)
            if t.status == gyre_core::JobStatus::Canceled && t.lease_owner == Some(agent.id) =>
        {
            Ok(Json(Lease {
                lease_expires_at_ms: until.0,
                cancel: true,
            }))
        }
        // This agent's own result is already in (a renewal racing its finish): nothing
        // is lost, the agent must not think so.
        Some(t)
            if t.lease_owner == Some(agent.id)
                && t.status.is_terminal()
                && t.status != gyre_core::JobStatus::InfrastructureFail =>
        {
            Ok(Json(Lease {
                lease_expires_at_ms: until.0,
                cancel: false,
            }))
        }
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("task {key} is not leased to this agent"),
        )),
    }
}

async fn events(
    State(app): S,
    headers: HeaderMap,
    Path((workflow, task)): Path<(u64, u64)>,
    Json(batch): Json<Events>,
) -> ApiResult<Json<EventsAck>> {
    let agent = agent(&app, &headers).await?;
    let key = key(workflow, task);
    let stored = app
        .store
        .task(key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task {key}")))?;
    if stored.lease_owner != Some(agent.id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("task {key} is not leased to this agent"),
        ));
    }
    let mut through = None;
    let mut stored_any = false;
    for e in batch.events {
        let (stream, data) = match e.kind {
            StepEventKind::Started { name, header } => (
                Stream::StepStarted,
                serde_json::to_vec(&serde_json::json!({"name": name, "header": header}))
                    .unwrap_or_default(),
            ),
            StepEventKind::Output { stream, data } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.as_bytes())
                    .map_err(|_| {
                        ApiError::bad_request(format!("event {}: data is not base64", e.seq))
                    })?;
                let s = match stream {
                    OutputStream::Stdout => Stream::Stdout,
                    OutputStream::Stderr => Stream::Stderr,
                    OutputStream::System => Stream::System,
                };
                (s, bytes)
            }
            StepEventKind::Finished { status } => (
                Stream::StepFinished,
                step_outcome(status).as_bytes().to_vec(),
            ),
        };
        let chunk = LogChunk {
            seq: e.seq,
            step: e.step,
            stream,
            at: Millis(e.at_ms),
            data,
        };
        match app.store.append_log_chunk(key, &chunk).await {
            Ok(true) => {
                stored_any = true;
                app.logs.publish(key, logs::Live::from_chunk(&chunk));
            }
            Ok(false) => {}
            Err(gyre_store::Error::ChunkConflict { seq, .. }) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("event {seq} was already stored with other content"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        through = Some(through.map_or(e.seq, |t: u64| t.max(e.seq)));
    }
    if stored_any {
        app.log_changed(key).await;
    }
    Ok(Json(EventsAck {
        stored_through: through,
    }))
}

pub fn step_outcome(s: StepOutcome) -> &'static str {
    match s {
        StepOutcome::Success => "success",
        StepOutcome::Failed => "failed",
        StepOutcome::Skipped => "skipped",
        StepOutcome::Background => "background",
    }
}

async fn finish(
    State(app): S,
    headers: HeaderMap,
    Path((workflow, task)): Path<(u64, u64)>,
    Json(req): Json<Finish>,
) -> ApiResult<StatusCode> {
    let agent = agent(&app, &headers).await?;
    let key = key(workflow, task);
    let result = match req.result {
        TaskEnd::Success => TaskResult::Success,
        TaskEnd::Failed => TaskResult::Failed,
        TaskEnd::InfrastructureFail => TaskResult::InfrastructureFail,
        TaskEnd::Timedout => TaskResult::Timedout,
        TaskEnd::Canceled => TaskResult::Canceled,
    };
    let outcome = serde_json::to_value(&req).map_err(|e| ApiError::internal("outcome", e))?;
    // Run to the end even if the agent hangs up mid-request: once the task row says it
    // finished, the workflow must hear it.
    tokio::spawn(finish_task(app, agent.id, key, result, outcome))
        .await
        .map_err(|e| ApiError::internal("finishing a task", e))?
}

async fn finish_task(
    app: Arc<App>,
    agent: gyre_core::AgentId,
    key: TaskKey,
    result: TaskResult,
    outcome: serde_json::Value,
) -> ApiResult<StatusCode> {
    if !app
        .store
        .finish_task(key, agent, result, Millis::now())
        .await?
    {
        // Not held any more: canceled meanwhile, or a repeated report. Keep what it
        // says about tests and artifacts if the task was canceled under it.
        if let Some(t) = app.store.task(key).await?
            && t.lease_owner == Some(agent)
            && t.status == gyre_core::JobStatus::Canceled
        {
            app.store.set_task_outcome(key, &outcome).await?;
            logs::archive(&app, key).await;
        }
        return Ok(StatusCode::NO_CONTENT);
    }
    app.store.set_task_outcome(key, &outcome).await?;
    logs::archive(&app, key).await;
    orchestrate::apply(
        &app,
        key.workflow,
        vec![Event::TaskFinished {
            task: key.task,
            result,
        }],
    )
    .await
    .map_err(|e| ApiError::internal("finishing a task", e))?;
    tracing::info!(task = %key, ?result, "task finished");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PrefixQuery {
    #[serde(default)]
    prefix: String,
}

async fn list_blobs(
    State(app): S,
    headers: HeaderMap,
    Query(q): Query<PrefixQuery>,
) -> ApiResult<Json<BlobList>> {
    agent(&app, &headers).await?;
    // Object stores list whole path segments; agents ask for string prefixes
    // (`caches/v1-deps` must find `caches/v1-deps-abc.tar.zst`).
    let dir = q.prefix.rsplit_once('/').map_or("", |(d, _)| d);
    let listed = match app.blobs.list(dir).await {
        Ok(l) => l,
        Err(gyre_blob::Error::InvalidKey { reason, .. }) => {
            return Err(ApiError::bad_request(format!("invalid prefix: {reason}")));
        }
        Err(e) => return Err(ApiError::internal("listing blobs", e)),
    };
    let blobs = listed
        .into_iter()
        .filter(|m| m.key.starts_with(&q.prefix))
        .map(|m| BlobEntry {
            modified_ms: m
                .last_modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            key: m.key,
        })
        .collect();
    Ok(Json(BlobList { blobs }))
}

async fn get_blob(
    State(app): S,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    agent(&app, &headers).await?;
    blob_response(&app, &key).await
}

/// Streams a blob from a temporary copy (object stores give no seekable local file).
pub async fn blob_response(app: &App, key: &str) -> ApiResult<Response> {
    let tmp = tempfile::NamedTempFile::new().map_err(|e| ApiError::internal("temp file", e))?;
    match app.blobs.get_to_file(key, tmp.path()).await {
        Ok(_) => {}
        Err(gyre_blob::Error::NotFound { .. }) => {
            return Err(ApiError::not_found(format!("no blob {key}")));
        }
        Err(gyre_blob::Error::InvalidKey { reason, .. }) => {
            return Err(ApiError::bad_request(format!("invalid blob key: {reason}")));
        }
        Err(e) => return Err(ApiError::internal("reading a blob", e)),
    }
    let (file, path) = tmp.into_parts();
    let file = tokio::fs::File::from_std(file);
    // The file's name is gone once opened; the open handle keeps its data.
    drop(path);
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    Ok(Body::from_stream(stream).into_response())
}

#[derive(Deserialize)]
struct PutQuery {
    #[serde(default)]
    only_new: bool,
}

async fn put_blob(
    State(app): S,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<PutQuery>,
    body: Body,
) -> ApiResult<Json<BlobStored>> {
    agent(&app, &headers).await?;
    gyre_blob::validate_key(&key)
        .map_err(|e| ApiError::bad_request(format!("invalid blob key: {e}")))?;
    if q.only_new && app.blobs.head(&key).await.is_ok() {
        return Ok(Json(BlobStored { stored: false }));
    }
    let tmp = tempfile::NamedTempFile::new().map_err(|e| ApiError::internal("temp file", e))?;
    let mut file = tokio::fs::File::create(tmp.path())
        .await
        .map_err(|e| ApiError::internal("temp file", e))?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal("temp file", e))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal("temp file", e))?;
    drop(file);
    app.blobs
        .put_file(&key, tmp.path())
        .await
        .map_err(|e| ApiError::internal("storing a blob", e))?;
    Ok(Json(BlobStored { stored: true }))
}
