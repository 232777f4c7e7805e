//! API v2 (CircleCI-shaped, `../shared/spec/circleci-api-spec.md` §4–5), the v1.1 job
//! and step-output reads tools use for logs (§6), and gyre's own admin endpoints under
//! `/api/gyre/v1` (projects, agents, artifacts). Errors are `{"message": ...}`.

use crate::auth::{Caller, presented_token, same_token, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::intake::{IntakeError, TriggerRequest};
use crate::orchestrate::{self, ApplyError, JobTemplate};
use crate::{App, agent_api, ids, intake, logs, trigger};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use gyre_core::{Event, JobId, JobStatus, WorkflowId, WorkflowState};
use gyre_store::{JobRow, Millis, NewJob, NewProject, Pipeline, Project, TaskKey, WorkflowRow};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

type S = State<Arc<App>>;

/// Pipelines per page.
const PAGE: u32 = 20;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v2/me", get(me))
        .route("/api/v2/project/{vcs}/{org}/{repo}", get(project))
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/pipeline",
            get(project_pipelines).post(trigger_pipeline),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/pipeline/{number}",
            get(pipeline_by_number),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/job/{number}",
            get(job_details),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/{number}/artifacts",
            get(artifacts),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/{number}/tests",
            get(tests),
        )
        .route("/api/v2/pipeline/{id}", get(pipeline))
        .route("/api/v2/pipeline/{id}/config", get(pipeline_config))
        .route("/api/v2/pipeline/{id}/values", get(pipeline_values))
        .route("/api/v2/pipeline/{id}/workflow", get(pipeline_workflows))
        .route("/api/v2/workflow/{id}", get(workflow))
        .route("/api/v2/workflow/{id}/job", get(workflow_jobs))
        .route("/api/v2/workflow/{id}/approve/{request}", post(approve))
        .route("/api/v2/workflow/{id}/cancel", post(cancel))
        .route("/api/v2/workflow/{id}/rerun", post(rerun))
        .route(
            "/api/v1.1/project/{vcs}/{org}/{repo}/{number}",
            get(v1_build),
        )
        .route("/api/v1.1/output/{workflow}/{task}/{step}", get(v1_output))
        .route(
            "/api/gyre/v1/projects",
            get(list_projects).post(add_project),
        )
        .route("/api/gyre/v1/agents", get(list_agents))
        .route("/api/gyre/v1/agents/{id}/drain", post(drain_agent))
        .route("/api/gyre/v1/artifacts/{*key}", get(artifact_file))
}

/// The caller, who must be the admin (403 "only the admin can {what}" otherwise).
pub(crate) async fn admin(
    app: &App,
    headers: &HeaderMap,
    query: Option<&str>,
    what: &str,
) -> ApiResult<Caller> {
    let c = caller(app, headers, query).await?;
    if !c.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("only the admin can {what}"),
        ));
    }
    Ok(c)
}

/// The caller, from any token form; 401 otherwise.
pub async fn caller(app: &App, headers: &HeaderMap, query: Option<&str>) -> ApiResult<Caller> {
    let token = presented_token(headers, query).ok_or_else(ApiError::unauthorized)?;
    if same_token(&token, &app.config.admin_token) {
        return Ok(Caller {
            login: "admin".into(),
            admin: true,
        });
    }
    match app.store.api_token_login(&token_hash(&token)).await? {
        Some(login) => Ok(Caller {
            login,
            admin: false,
        }),
        None => Err(ApiError::unauthorized()),
    }
}

pub(crate) fn time(m: Millis) -> String {
    let secs = m.0.div_euclid(1000);
    let ms = m.0.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn opt_time(m: Option<Millis>) -> Value {
    m.map_or(Value::Null, |m| json!(time(m)))
}

/// `gh/org/repo` from any accepted spelling (`github/…`, `bb/…`, `bitbucket/…`).
pub fn normalize_slug(slug: &str) -> String {
    let (vcs, rest) = slug.split_once('/').unwrap_or((slug, ""));
    let vcs = match vcs {
        "github" => "gh",
        "bitbucket" => "bb",
        other => other,
    };
    format!("{vcs}/{rest}")
}

pub(crate) async fn project_of(app: &App, vcs: &str, org: &str, repo: &str) -> ApiResult<Project> {
    let slug = normalize_slug(&format!("{vcs}/{org}/{repo}"));
    app.store
        .project_by_slug(&slug)
        .await?
        .ok_or_else(|| ApiError::not_found("Project not found"))
}

async fn me(State(app): S, headers: HeaderMap, uri: Uri) -> ApiResult<Json<Value>> {
    let c = caller(&app, &headers, uri.query()).await?;
    Ok(Json(json!({
        "id": ids::user(0), "login": c.login, "name": c.login, "avatar_url": ""
    })))
}

pub(crate) fn project_json(p: &Project) -> Value {
    let mut parts = p.slug.splitn(3, '/');
    let vcs = parts.next().unwrap_or_default();
    let org = parts.next().unwrap_or_default();
    let repo = parts.next().unwrap_or_default();
    json!({
        "slug": p.slug, "name": repo, "id": ids::project(p.id.0),
        "organization_name": org, "organization_slug": format!("{vcs}/{org}"),
        "organization_id": ids::project(0),
        "vcs_info": {"vcs_url": p.repo_url, "provider": if vcs == "bb" { "Bitbucket" } else { "GitHub" },
                     "default_branch": p.default_branch},
    })
}

async fn project(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    Ok(Json(project_json(
        &project_of(&app, &vcs, &org, &repo).await?,
    )))
}

async fn pipeline_json(app: &App, p: &Pipeline, project: Option<&Project>) -> ApiResult<Value> {
    let project = match project {
        Some(pr) => pr.clone(),
        None => app
            .store
            .project(p.project)
            .await?
            .ok_or_else(|| ApiError::not_found("Project not found"))?,
    };
    let details = app.store.pipeline_details(p.id).await?;
    let vcs = details.vcs.unwrap_or(Value::Null);
    let mut vcs_json = json!({
        "provider_name": "GitHub",
        "origin_repository_url": project.repo_url,
        "target_repository_url": project.repo_url,
        "revision": p.revision,
        "commit": {
            "subject": vcs["commit"]["subject"].as_str().unwrap_or(""),
            "body": vcs["commit"]["body"].as_str().unwrap_or(""),
        },
    });
    if let Some(b) = &p.branch {
        vcs_json["branch"] = json!(b);
    }
    if let Some(t) = &p.tag {
        vcs_json["tag"] = json!(t);
    }
    Ok(json!({
        "id": ids::pipeline(p.id),
        "errors": p.errors,
        "project_slug": project.slug,
        "updated_at": time(p.created_at),
        "number": p.number,
        "state": p.state.as_str(),
        "created_at": time(p.created_at),
        "trigger": {
            "type": p.trigger_kind,
            "received_at": time(p.created_at),
            "actor": {"login": p.trigger_actor, "avatar_url": vcs["actor"]["avatar_url"].as_str().unwrap_or("")},
        },
        "vcs": vcs_json,
    }))
}

/// The trigger answer: `{id, state, number, created_at}`.
pub fn pipeline_creation(p: &Pipeline) -> Value {
    json!({
        "id": ids::pipeline(p.id), "state": p.state.as_str(), "number": p.number,
        "created_at": time(p.created_at),
    })
}

pub fn intake_error(e: IntakeError) -> ApiError {
    match e {
        IntakeError::NotFound(m) => ApiError::bad_request(m),
        IntakeError::Fetch { .. } => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
        IntakeError::Store(e) => e.into(),
        IntakeError::Apply(e) => ApiError::internal("creating workflows", e),
        IntakeError::Internal(e) => ApiError::internal("starting the pipeline", e),
    }
}

#[derive(Deserialize, Default)]
struct PageQuery {
    branch: Option<String>,
    #[serde(rename = "page-token")]
    page_token: Option<String>,
    #[serde(rename = "page_token")]
    page_token2: Option<String>,
}

async fn project_pipelines(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    let before = match q.page_token.or(q.page_token2) {
        None => None,
        Some(t) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("invalid page-token"))?,
        ),
    };
    let page = app
        .store
        .pipelines_page(project.id, q.branch.as_deref(), before, PAGE)
        .await?;
    let mut items = Vec::with_capacity(page.len());
    for p in &page {
        items.push(pipeline_json(&app, p, Some(&project)).await?);
    }
    let next = (page.len() == PAGE as usize)
        .then(|| page.last().map(|p| p.number))
        .flatten()
        .map(|n| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n.to_string()));
    Ok(Json(json!({"items": items, "next_page_token": next})))
}

async fn trigger_pipeline(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c = caller(&app, &headers, uri.query()).await?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    let t = trigger::parse_api_trigger(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let p = start_pipeline(&app, &project, c.login, t).await?;
    Ok((StatusCode::CREATED, Json(pipeline_creation(&p))))
}

/// Starts a pipeline of `project` for an API or UI trigger by `actor`.
pub(crate) async fn start_pipeline(
    app: &App,
    project: &Project,
    actor: String,
    t: trigger::ApiTrigger,
) -> ApiResult<Pipeline> {
    let req = TriggerRequest {
        kind: "api".into(),
        actor,
        branch: t.branch,
        tag: t.tag,
        parameters: t.parameters,
        ..TriggerRequest::default()
    };
    intake::start(app, project, req).await.map_err(intake_error)
}

pub(crate) async fn pipeline_by_id(app: &App, id: &str) -> ApiResult<Pipeline> {
    let id = ids::parse_pipeline(id).ok_or_else(|| ApiError::not_found("Pipeline not found"))?;
    app.store
        .pipeline(id)
        .await?
        .ok_or_else(|| ApiError::not_found("Pipeline not found"))
}

async fn pipeline_by_number(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo, number)): Path<(String, String, String, u64)>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    let p = app
        .store
        .pipeline_by_number(project.id, number)
        .await?
        .ok_or_else(|| ApiError::not_found("Pipeline not found"))?;
    Ok(Json(pipeline_json(&app, &p, Some(&project)).await?))
}

async fn pipeline(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let p = pipeline_by_id(&app, &id).await?;
    Ok(Json(pipeline_json(&app, &p, None).await?))
}

async fn pipeline_config(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let p = pipeline_by_id(&app, &id).await?;
    let d = app.store.pipeline_details(p.id).await?;
    Ok(Json(json!({
        "source": p.config.unwrap_or_default(),
        "compiled": d.compiled.unwrap_or_default(),
    })))
}

async fn pipeline_values(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let p = pipeline_by_id(&app, &id).await?;
    let d = app.store.pipeline_details(p.id).await?;
    Ok(Json(d.pipeline_values.unwrap_or_else(|| json!({}))))
}

async fn workflow_json(app: &App, w: &WorkflowRow) -> ApiResult<Value> {
    let p = app
        .store
        .pipeline(w.pipeline)
        .await?
        .ok_or_else(|| ApiError::not_found("Pipeline not found"))?;
    let project = app.store.project(p.project).await?;
    Ok(json!({
        "pipeline_id": ids::pipeline(p.id), "pipeline_number": p.number,
        "id": ids::workflow(w.id), "name": w.name,
        "project_slug": project.map(|p| p.slug).unwrap_or_default(),
        "status": w.status.as_str(), "started_by": ids::user(0),
        "created_at": time(w.created_at), "stopped_at": opt_time(w.stopped_at),
    }))
}

async fn pipeline_workflows(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let p = pipeline_by_id(&app, &id).await?;
    let mut items = Vec::new();
    for w in app.store.workflows_of(p.id).await? {
        items.push(workflow_json(&app, &w).await?);
    }
    Ok(Json(json!({"items": items, "next_page_token": null})))
}

async fn workflow_by_id(app: &App, id: &str) -> ApiResult<WorkflowRow> {
    let id = ids::parse_workflow(id).ok_or_else(|| ApiError::not_found("Workflow not found"))?;
    app.store
        .workflow(id)
        .await?
        .ok_or_else(|| ApiError::not_found("Workflow not found"))
}

async fn workflow(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let w = workflow_by_id(&app, &id).await?;
    Ok(Json(workflow_json(&app, &w).await?))
}

pub(crate) fn state_of(w: &WorkflowRow) -> ApiResult<WorkflowState> {
    let s = w
        .state
        .as_deref()
        .ok_or_else(|| ApiError::internal("workflow state", "missing"))?;
    serde_json::from_str(s).map_err(|e| ApiError::internal("workflow state", e))
}

async fn workflow_jobs(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let w = workflow_by_id(&app, &id).await?;
    let state = state_of(&w)?;
    let slug = project_slug_of(&app, &w).await?;
    let rows = app.store.job_rows(w.id).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            let js = state.job(r.job);
            let deps: Vec<String> = js
                .map(|j| j.requires.iter().map(|q| ids::job(w.id, q.job)).collect())
                .unwrap_or_default();
            let requires: serde_json::Map<String, Value> = js
                .map(|j| {
                    j.requires
                        .iter()
                        .map(|q| (ids::job(w.id, q.job), json!(q.statuses)))
                        .collect()
                })
                .unwrap_or_default();
            let approval = js.is_some_and(|j| j.kind == gyre_config::plan::InstanceKind::Approval);
            let mut v = json!({
                "id": ids::job(w.id, r.job), "name": r.name,
                "type": if approval { "approval" } else { "build" },
                "status": r.status.as_str(), "project_slug": slug,
                "dependencies": deps, "requires": requires,
                "started_at": opt_time(r.started_at), "stopped_at": opt_time(r.stopped_at),
            });
            if approval {
                v["approval_request_id"] = json!(ids::job(w.id, r.job));
                if let Some(by) = js.and_then(|j| j.approved_by.clone()) {
                    v["approved_by"] = json!(by);
                }
            } else if !orchestrate::waiting(r.status) && r.status != JobStatus::NotRun {
                v["job_number"] = json!(r.number);
            }
            v
        })
        .collect();
    Ok(Json(json!({"items": items, "next_page_token": null})))
}

async fn project_slug_of(app: &App, w: &WorkflowRow) -> ApiResult<String> {
    let p = app.store.pipeline(w.pipeline).await?;
    let project = match p {
        Some(p) => app.store.project(p.project).await?,
        None => None,
    };
    Ok(project.map(|p| p.slug).unwrap_or_default())
}

fn apply_error(e: ApplyError) -> ApiError {
    match e {
        ApplyError::Rejected(e) => ApiError::bad_request(e.to_string()),
        ApplyError::UnknownWorkflow(_) => ApiError::not_found("Workflow not found"),
        other => ApiError::internal("workflow", other),
    }
}

async fn approve(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((id, request)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c = caller(&app, &headers, uri.query()).await?;
    let w = workflow_by_id(&app, &id).await?;
    let (wf, job) = ids::parse_job(&request)
        .filter(|(wf, _)| *wf == w.id)
        .ok_or_else(|| ApiError::not_found("Approval request not found"))?;
    approve_job(&app, wf, job, c.login).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"message": "Accepted."}))))
}

/// Approves the approval job `job` of workflow `wf` on behalf of `by`.
pub(crate) async fn approve_job(
    app: &App,
    wf: WorkflowId,
    job: JobId,
    by: String,
) -> ApiResult<()> {
    orchestrate::apply(app, wf, vec![Event::Approve { job, by }])
        .await
        .map_err(apply_error)
}

/// Cancels workflow `wf` (its running tasks are canceled, waiting jobs never start).
pub(crate) async fn cancel_workflow(app: &App, wf: WorkflowId) -> ApiResult<()> {
    orchestrate::apply(app, wf, vec![Event::Cancel])
        .await
        .map_err(apply_error)
}

async fn cancel(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller(&app, &headers, uri.query()).await?;
    let w = workflow_by_id(&app, &id).await?;
    cancel_workflow(&app, w.id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"message": "Accepted."}))))
}

async fn rerun(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller(&app, &headers, uri.query()).await?;
    let w = workflow_by_id(&app, &id).await?;
    let req: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    if !req.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    if req.get("jobs").is_some() {
        return Err(ApiError::bad_request(
            "rerunning selected jobs is not supported yet",
        ));
    }
    let from_failed = req
        .get("from_failed")
        .or_else(|| req.get("fromFailed"))
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| ApiError::bad_request("from_failed must be a boolean"))
        })
        .transpose()?
        .unwrap_or(false);
    let new_id = rerun_workflow(&app, &w, from_failed).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"workflow_id": ids::workflow(new_id)})),
    ))
}

/// Reruns workflow `w` as a new run of the same pipeline, from the start or from its
/// failed jobs; returns the new run's id.
pub(crate) async fn rerun_workflow(
    app: &App,
    w: &WorkflowRow,
    from_failed: bool,
) -> ApiResult<WorkflowId> {
    let mut state = state_of(w)?;
    let event = if from_failed {
        Event::RerunFromFailed
    } else {
        Event::RerunFromStart
    };
    let actions = state
        .apply(event)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let old_jobs = app.store.job_rows(w.id).await?;
    let jobs: Vec<(NewJob<'_>, Option<&Value>)> = old_jobs
        .iter()
        .zip(state.jobs())
        .map(|(r, j)| {
            (
                NewJob {
                    name: &r.name,
                    status: j.status,
                    approval: j.kind == gyre_config::plan::InstanceKind::Approval,
                },
                r.spec.as_ref(),
            )
        })
        .collect();
    orchestrate::start_run(app, w.pipeline, &w.name, &jobs, &state, &actions)
        .await
        .map_err(apply_error)
}

pub(crate) async fn job_of(
    app: &App,
    vcs: &str,
    org: &str,
    repo: &str,
    number: u64,
) -> ApiResult<(Project, JobRow)> {
    let project = project_of(app, vcs, org, repo).await?;
    let job = app
        .store
        .job_by_number(project.id, number)
        .await?
        .ok_or_else(|| ApiError::not_found("Job not found"))?;
    Ok((project, job))
}

async fn job_details(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo, number)): Path<(String, String, String, u64)>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let (project, job) = job_of(&app, &vcs, &org, &repo, number).await?;
    let w = app
        .store
        .workflow(job.workflow)
        .await?
        .ok_or_else(|| ApiError::not_found("Job not found"))?;
    let tasks = app.store.tasks_of_job(job.workflow, job.job).await?;
    let template: Option<JobTemplate> = job
        .spec
        .clone()
        .and_then(|s| serde_json::from_value(s).ok());
    let (etype, class, parallelism, contexts) = match &template {
        Some(JobTemplate::Build {
            executor_type,
            resource_class,
            node0,
            ..
        }) => (
            executor_type.clone(),
            resource_class.clone(),
            node0.node.total,
            node0.job.contexts.clone(),
        ),
        _ => ("docker".into(), "medium".into(), 1, Vec::new()),
    };
    let contexts: Vec<Value> = contexts.iter().map(|c| json!({"name": c})).collect();
    // The latest attempt of each node.
    let mut runs: Vec<Value> = Vec::new();
    for n in 0..parallelism {
        if let Some(t) = tasks.iter().rev().find(|t| t.task.node_index == n) {
            runs.push(json!({"index": n, "status": t.task.status.as_str()}));
        }
    }
    let queued = tasks.first().map(|t| t.queued_at);
    let messages: Vec<Value> = tasks
        .iter()
        .filter_map(|t| {
            t.outcome
                .as_ref()?
                .get("message")?
                .as_str()
                .map(str::to_string)
        })
        .map(|m| json!({"type": "error", "message": m, "reason": ""}))
        .collect();
    let duration = match (job.started_at, job.stopped_at) {
        (Some(a), Some(b)) => json!(b.0 - a.0),
        _ => Value::Null,
    };
    let repo_name = project
        .slug
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Json(json!({
        "web_url": format!("{}/pipelines/{}", app.config.public_url, project.slug),
        "project": {"id": ids::project(project.id.0), "slug": project.slug, "name": repo_name,
                     "external_url": project.repo_url},
        "parallel_runs": runs,
        "started_at": opt_time(job.started_at),
        "queued_at": opt_time(queued),
        "created_at": time(w.created_at),
        "stopped_at": opt_time(job.stopped_at),
        "latest_workflow": {"id": ids::workflow(w.id), "name": w.name},
        "name": job.name,
        "executor": {"type": etype, "resource_class": class},
        "parallelism": parallelism,
        "status": job.status.as_str(),
        "number": number,
        "pipeline": {"id": ids::pipeline(w.pipeline)},
        "duration": duration,
        "messages": messages,
        "contexts": contexts,
        "organization": {"name": org},
    })))
}

async fn artifacts(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo, number)): Path<(String, String, String, u64)>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let items: Vec<Value> = reported(&app, (&vcs, &org, &repo), number, "artifacts")
        .await?
        .iter()
        .map(|a| {
            let key = a["key"].as_str().unwrap_or_default();
            json!({
                "path": a["path"], "node_index": a["node_index"],
                "url": format!("{}/api/gyre/v1/artifacts/{key}", app.config.public_url),
            })
        })
        .collect();
    Ok(Json(json!({"items": items, "next_page_token": null})))
}

async fn tests(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo, number)): Path<(String, String, String, u64)>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let items: Vec<Value> = reported(&app, (&vcs, &org, &repo), number, "tests")
        .await?
        .iter()
        .map(|c| {
            json!({
                "message": c["message"], "source": "unknown", "run_time": c["run_time"],
                "file": c["file"].as_str().unwrap_or(""), "result": c["result"],
                "name": c["name"], "classname": c["classname"],
            })
        })
        .collect();
    Ok(Json(json!({"items": items, "next_page_token": null})))
}

/// What the agents reported under `field` (`artifacts`, `tests`) for every task of a job.
async fn reported(
    app: &App,
    (vcs, org, repo): (&str, &str, &str),
    number: u64,
    field: &str,
) -> ApiResult<Vec<Value>> {
    let (_, job) = job_of(app, vcs, org, repo, number).await?;
    job_reports(app, &job, field).await
}

/// What the agents reported under `field` (`artifacts`, `tests`) for every task of `job`.
pub(crate) async fn job_reports(app: &App, job: &JobRow, field: &str) -> ApiResult<Vec<Value>> {
    let mut out = Vec::new();
    for t in app.store.tasks_of_job(job.workflow, job.job).await? {
        if let Some(list) = t
            .outcome
            .as_ref()
            .and_then(|o| o.get(field))
            .and_then(Value::as_array)
        {
            out.extend(list.iter().cloned());
        }
    }
    Ok(out)
}

async fn artifact_file(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    caller(&app, &headers, uri.query()).await?;
    if !key.starts_with("artifacts/") {
        return Err(ApiError::not_found("Artifact not found"));
    }
    agent_api::blob_response(&app, &key).await
}

/// Signature of a step-output URL (`output_url` is fetchable without a token, as
/// CircleCI's pre-signed URLs are).
fn output_signature(app: &App, path: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(app.config.admin_token.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(path.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn v1_build(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo, number)): Path<(String, String, String, u64)>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let (project, job) = job_of(&app, &vcs, &org, &repo, number).await?;
    let tasks = app.store.tasks_of_job(job.workflow, job.job).await?;
    // Steps by index, one action per node (its latest attempt).
    let mut steps: Vec<(String, Vec<Value>)> = Vec::new();
    let mut latest: Vec<&gyre_store::TaskRow> = Vec::new();
    for t in tasks.iter().rev() {
        if !latest
            .iter()
            .any(|l| l.task.node_index == t.task.node_index)
        {
            latest.push(t);
        }
    }
    latest.sort_by_key(|t| t.task.node_index);
    for t in latest {
        let key = t.task.key;
        let (events, _) = logs::read(&app, key, 0).await?;
        let mut by_step: std::collections::BTreeMap<u32, (String, Option<String>, bool, i64, i64)> =
            Default::default();
        for e in &events {
            let entry = by_step
                .entry(e.step)
                .or_insert_with(|| (String::new(), None, false, e.at_ms, e.at_ms));
            entry.4 = e.at_ms;
            match e.stream.as_str() {
                "step_started" => {
                    let v: Value = serde_json::from_str(&e.text).unwrap_or_default();
                    entry.0 = v["name"].as_str().unwrap_or_default().to_string();
                }
                "step_finished" => entry.1 = Some(e.text.clone()),
                _ => entry.2 = true,
            }
        }
        for (step, (name, status, has_output, start, end)) in by_step {
            let path = format!("/api/v1.1/output/{}/{}/{step}", key.workflow.0, key.task.0);
            let sig = output_signature(&app, &path);
            let status = status.unwrap_or_else(|| "running".into());
            let action = json!({
                "index": t.task.node_index, "step": step, "name": name,
                "type": "test", "status": status,
                "failed": if status == "failed" { json!(true) } else { Value::Null },
                "has_output": has_output,
                "output_url": format!("{}{path}?sig={sig}", app.config.public_url),
                "start_time": time(Millis(start)), "end_time": time(Millis(end)),
                "run_time_millis": end - start,
            });
            let i = step as usize;
            if steps.len() <= i {
                steps.resize(i + 1, (String::new(), Vec::new()));
            }
            steps[i].0 = name;
            steps[i].1.push(action);
        }
    }
    let w = app.store.workflow(job.workflow).await?;
    let steps: Vec<Value> = steps
        .into_iter()
        .filter(|(_, a)| !a.is_empty())
        .map(|(name, actions)| json!({"name": name, "actions": actions}))
        .collect();
    let outcome = job.status.is_terminal().then(|| job.status.as_str());
    Ok(Json(json!({
        "build_num": number, "job_name": job.name, "status": job.status.as_str(),
        "outcome": outcome, "lifecycle": if job.status.is_terminal() { "finished" } else { "running" },
        "vcs_url": project.repo_url, "reponame": project.slug.rsplit('/').next(),
        "username": org,
        "workflows": {"job_name": job.name, "job_id": ids::job(job.workflow, job.job),
                      "workflow_id": ids::workflow(job.workflow),
                      "workflow_name": w.map(|w| w.name).unwrap_or_default()},
        "steps": steps,
    })))
}

#[derive(Deserialize)]
struct SigQuery {
    sig: Option<String>,
}

/// The v1.1 `output_url` body: `[{type: out|err, time, message, truncated}]`.
async fn v1_output(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((workflow, task, step)): Path<(u64, u64, u32)>,
    Query(q): Query<SigQuery>,
) -> ApiResult<Json<Value>> {
    let path = format!("/api/v1.1/output/{workflow}/{task}/{step}");
    let signed = q
        .sig
        .is_some_and(|s| same_token(&s, &output_signature(&app, &path)));
    if !signed {
        caller(&app, &headers, uri.query()).await?;
    }
    let key = TaskKey {
        workflow: WorkflowId(workflow),
        task: gyre_core::TaskId(task),
    };
    if app.store.task(key).await?.is_none() {
        return Err(ApiError::not_found("Step not found"));
    }
    let (events, _) = logs::read(&app, key, 0).await?;
    let mut out: Vec<Value> = Vec::new();
    for e in events.iter().filter(|e| e.step == step) {
        let kind = match e.stream.as_str() {
            "stdout" | "system" => "out",
            "stderr" => "err",
            _ => continue,
        };
        // Adjacent output of one stream is one message, as CircleCI returns it.
        if let Some(last) = out.last_mut()
            && last["type"] == kind
        {
            let text = format!("{}{}", last["message"].as_str().unwrap_or_default(), e.text);
            last["message"] = json!(text);
            continue;
        }
        out.push(json!({"type": kind, "time": time(Millis(e.at_ms)), "message": e.text, "truncated": false}));
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
struct AddProject {
    slug: String,
    repo_url: String,
    #[serde(default)]
    default_branch: Option<String>,
    #[serde(default)]
    webhook_secret: Option<String>,
    #[serde(default)]
    settings: ProjectSettings,
}

/// Project settings gyre acts on, named as CircleCI's project settings API names them.
#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct ProjectSettings {
    /// Build pull requests from forks (as branch `pull/<n>`).
    #[serde(default)]
    build_fork_prs: bool,
    /// Give builds of forked pull requests the project's environment variables.
    #[serde(default)]
    forks_receive_secret_env_vars: bool,
    /// A new pipeline on a non-default branch cancels the older ones' running workflows.
    #[serde(default)]
    autocancel_builds: bool,
    /// Build pushes to branches other than the default one only when the branch has an
    /// open pull request; a newly opened pull request builds its head.
    #[serde(default)]
    build_prs_only: bool,
}

async fn list_projects(State(app): S, headers: HeaderMap, uri: Uri) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let items: Vec<Value> = app
        .store
        .projects()
        .await?
        .iter()
        .map(project_json)
        .collect();
    Ok(Json(json!({"items": items, "next_page_token": null})))
}

async fn add_project(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin(&app, &headers, uri.query(), "add projects").await?;
    let req: AddProject = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid project: {e}")))?;
    let slug = normalize_slug(req.slug.trim());
    let parts: Vec<&str> = slug.split('/').collect();
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && p != "."
            && p != ".."
    };
    if parts.len() != 3 || !parts.iter().all(|p| valid_part(p)) {
        return Err(ApiError::bad_request(format!(
            "invalid project slug {:?}: expected <vcs>/<org>/<repo>, e.g. gh/acme/api",
            req.slug
        )));
    }
    let url = req.repo_url.trim();
    if url.is_empty() || url.starts_with('-') || url.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid repository URL"));
    }
    let branch = req.default_branch.unwrap_or_else(|| "main".into());
    trigger::check_ref_name(&branch)
        .map_err(|why| ApiError::bad_request(format!("invalid default branch: {why}")))?;
    let settings = serde_json::to_value(&req.settings)
        .map_err(|e| ApiError::internal("project settings", e))?;
    let project = match app
        .store
        .create_project(
            &NewProject {
                slug: &slug,
                repo_url: url,
                default_branch: &branch,
                webhook_secret: req.webhook_secret.as_deref(),
                settings: &settings,
            },
            Millis::now(),
        )
        .await
    {
        Ok(p) => p,
        Err(gyre_store::Error::ProjectExists(s)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("project {s} already exists"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    Ok((StatusCode::CREATED, Json(project_json(&project))))
}

async fn list_agents(State(app): S, headers: HeaderMap, uri: Uri) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let running = app.store.running_tasks().await?;
    let items: Vec<Value> = app
        .store
        .agents()
        .await?
        .iter()
        .map(|a| {
            let tasks: Vec<String> = running
                .iter()
                .filter(|t| t.lease_owner == Some(a.id))
                .map(|t| t.key.to_string())
                .collect();
            json!({"id": a.id.0, "name": a.name, "status": a.status.as_str(),
                   "last_heartbeat": time(a.last_heartbeat), "running_tasks": tasks})
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

async fn drain_agent(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<u64>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin(&app, &headers, uri.query(), "drain agents").await?;
    if !app.store.drain_agent(gyre_core::AgentId(id)).await? {
        return Err(ApiError::not_found(format!("no agent {id}")));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": format!("agent {id} is draining")})),
    ))
}
