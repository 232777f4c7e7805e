//! The pages and form actions of the web UI (see the table in the module above): the
//! dashboard and project pages here, the rest in one module per page.

mod contexts;
mod job;
mod pipeline;
mod settings;

pub use contexts::{
    context_page, create_context, delete_context, delete_context_var, org_contexts, set_context_var,
};
pub use job::{artifact, earlier_log, job, live_log, raw_log};
pub use pipeline::{approve, cancel, pipeline, rerun};
pub use settings::{add_envvar, delete_envvar, save_settings, settings};

use super::graph::{self, Node};
use super::html::{Ansi, age, duration, esc, exit_code};
use super::session::Session;
use super::{Page, UiError, UiResult, artifact_type};
use crate::api::{self, job_reports, project_of};
use crate::envvars::{self, mask};
use crate::logs::{self, Live};
use crate::{App, agent_api, trigger};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::StreamExt as _;
use gyre_config::plan::InstanceKind;
use gyre_core::{JobId, JobStatus, PipelineStatus, TaskId, WorkflowId, WorkflowStatus};
use gyre_store::{JobRow, Millis, Pipeline, Project, TaskKey, TaskRow, WorkflowRow};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

pub(super) type S = State<Arc<App>>;
pub(super) type ProjectPath = Path<(String, String, String)>;

/// Pipelines per page of the project page; the dashboard shows fewer per project.
const PAGE: u32 = 20;
const DASHBOARD_PAGE: u32 = 5;
/// Output a job page renders at first (per request for earlier parts): the rest stays on
/// the server until asked for.
pub(super) const TAIL_BYTES: u64 = 512 * 1024;

pub(super) fn project_url(p: &Project) -> String {
    format!("/project/{}", p.slug)
}

pub(super) fn crumb(href: &str, text: &str) -> String {
    format!("<a href=\"{}\">{}</a>", esc(href), esc(text))
}

pub(super) fn badge(status: &str) -> String {
    let s = esc(status);
    format!(
        "<span class=\"badge {s}\" data-status=\"{s}\">{}</span>",
        s.replace('_', " ")
    )
}

pub(super) fn csrf_field(s: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

/// The status a pipeline is shown with: its config error, else its most telling
/// workflow status, else its own state.
fn pipeline_status(p: &Pipeline, workflows: &[WorkflowRow]) -> String {
    if p.state == PipelineStatus::Errored {
        return "errored".into();
    }
    // Latest run of each workflow name.
    let mut latest: BTreeMap<&str, &WorkflowRow> = BTreeMap::new();
    for w in workflows {
        latest.insert(&w.name, w);
    }
    const ORDER: [WorkflowStatus; 8] = [
        WorkflowStatus::Failed,
        WorkflowStatus::Error,
        WorkflowStatus::Failing,
        WorkflowStatus::OnHold,
        WorkflowStatus::Running,
        WorkflowStatus::Canceled,
        WorkflowStatus::Unauthorized,
        WorkflowStatus::Success,
    ];
    ORDER
        .iter()
        .find(|s| latest.values().any(|w| w.status == **s))
        .map_or_else(|| p.state.as_str().to_string(), |s| s.as_str().to_string())
}

/// One table of pipelines (dashboard and project page).
async fn pipeline_table(app: &App, project: &Project, page: &[Pipeline]) -> UiResult<String> {
    let now = Millis::now().0;
    let mut rows = String::new();
    for p in page {
        let workflows = app.store.workflows_of(p.id).await?;
        let details = app.store.pipeline_details(p.id).await?;
        let vcs = details.vcs.unwrap_or(Value::Null);
        let subject = vcs["commit"]["subject"].as_str().unwrap_or("");
        let author = vcs["commit"]["author_name"]
            .as_str()
            .filter(|a| !a.is_empty())
            .unwrap_or(&p.trigger_actor);
        let status = pipeline_status(p, &workflows);
        let end = if workflows.iter().all(|w| w.stopped_at.is_some()) {
            workflows.iter().filter_map(|w| w.stopped_at).max()
        } else {
            None
        };
        let took = match (workflows.is_empty(), end) {
            (true, _) => String::new(),
            (false, Some(e)) => duration(e.0 - p.created_at.0),
            (false, None) => format!("{}…", duration(now - p.created_at.0)),
        };
        let git_ref = match (&p.branch, &p.tag) {
            (_, Some(t)) => format!("<span class=\"tag\">tag {}</span>", esc(t)),
            (Some(b), None) => format!("<span class=\"branch\">{}</span>", esc(b)),
            _ => String::new(),
        };
        let href = format!("{}/pipelines/{}", project_url(project), p.number);
        let _ = write!(
            rows,
            "<tr data-pipeline=\"{n}\"><td><a href=\"{}\">#{n}</a></td><td>{git_ref}</td>\
             <td class=\"subject\">{}<div class=\"sha\">{}</div></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{took}</td><td><time datetime=\"{}\">{}</time></td></tr>",
            esc(&href),
            esc(subject),
            esc(p.revision.get(..8).unwrap_or(&p.revision)),
            esc(author),
            esc(&p.trigger_kind),
            badge(&status),
            crate::api::time(p.created_at),
            age(p.created_at.0, now),
            n = p.number,
        );
    }
    if rows.is_empty() {
        return Ok("<p class=\"empty\">No pipelines yet.</p>".into());
    }
    Ok(format!(
        "<div class=\"scroll\"><table class=\"pipelines\"><thead><tr><th scope=\"col\">Pipeline</th>\
         <th scope=\"col\">Branch / tag</th><th scope=\"col\">Commit</th><th scope=\"col\">Author</th>\
         <th scope=\"col\">Trigger</th><th scope=\"col\">Status</th><th scope=\"col\">Duration</th>\
         <th scope=\"col\">Started</th></tr></thead><tbody>{rows}</tbody></table></div>"
    ))
}

pub async fn dashboard(State(app): S, session: Session, headers: HeaderMap) -> UiResult<Response> {
    let mut live = String::new();
    let projects = app.store.projects().await?;
    if projects.is_empty() {
        live.push_str(
            "<p class=\"empty\">No projects yet. Add one with <code>gyre project add</code>.</p>",
        );
    }
    for p in &projects {
        let page = app
            .store
            .pipelines_page(p.id, None, None, DASHBOARD_PAGE)
            .await?;
        let _ = write!(
            live,
            "<section class=\"project\"><h2><a href=\"{}\">{}</a></h2>{}</section>",
            esc(&project_url(p)),
            esc(&p.slug),
            pipeline_table(&app, p, &page).await?
        );
    }
    Ok(Page {
        title: "Dashboard".into(),
        session: &session,
        crumbs: String::new(),
        before: "<h1>Projects</h1>".into(),
        live,
        after: String::new(),
    }
    .respond(&headers))
}

#[derive(Deserialize, Default)]
pub struct ProjectQuery {
    branch: Option<String>,
    before: Option<u64>,
}

pub async fn project(
    State(app): S,
    session: Session,
    headers: HeaderMap,
    Path((vcs, org, repo)): ProjectPath,
    Query(q): Query<ProjectQuery>,
) -> UiResult<Response> {
    let project = project_of(&app, &vcs, &org, &repo).await?;
    let branch = q.branch.filter(|b| !b.is_empty());
    let page = app
        .store
        .pipelines_page(project.id, branch.as_deref(), q.before, PAGE)
        .await?;
    let url = project_url(&project);
    let branch_q = branch.as_deref().map_or(String::new(), |b| {
        format!(
            "&branch={}",
            url::form_urlencoded::byte_serialize(b.as_bytes()).collect::<String>()
        )
    });
    let mut nav = String::new();
    if q.before.is_some() {
        let _ = write!(
            nav,
            "<a href=\"{}?{}\">Newest</a> ",
            esc(&url),
            esc(branch_q.trim_start_matches('&'))
        );
    }
    if page.len() == PAGE as usize
        && let Some(last) = page.last()
    {
        let _ = write!(
            nav,
            "<a rel=\"next\" href=\"{}?before={}{}\">Older pipelines</a>",
            esc(&url),
            last.number,
            esc(&branch_q)
        );
    }
    let live = format!(
        "{}<nav class=\"pages\" aria-label=\"Pages\">{nav}</nav>",
        pipeline_table(&app, &project, &page).await?
    );
    let before = format!(
        "<div class=\"titlebar\"><h1>{slug}</h1><a class=\"button secondary\" href=\"{url}/settings\">Project settings</a></div>\
         <div class=\"toolbar\">\
         <form method=\"post\" action=\"{url}/trigger\" class=\"inline\">{csrf}\
         <label for=\"trigger-branch\">Branch</label>\
         <input id=\"trigger-branch\" name=\"branch\" value=\"{default}\" size=\"14\">\
         <button type=\"submit\" id=\"trigger\">Trigger pipeline</button></form>\
         <form method=\"get\" action=\"{url}\" class=\"inline\" role=\"search\">\
         <label for=\"filter-branch\">Filter by branch</label>\
         <input id=\"filter-branch\" name=\"branch\" value=\"{current}\" size=\"14\">\
         <button type=\"submit\" class=\"secondary\">Filter</button></form></div>",
        slug = esc(&project.slug),
        url = esc(&url),
        csrf = csrf_field(&session),
        default = esc(&project.default_branch),
        current = esc(branch.as_deref().unwrap_or("")),
    );
    Ok(Page {
        title: project.slug.clone(),
        session: &session,
        crumbs: crumb(&url, &project.slug),
        before,
        live,
        after: String::new(),
    }
    .respond(&headers))
}

pub async fn trigger(
    State(app): S,
    session: Session,
    Path((vcs, org, repo)): ProjectPath,
    body: Bytes,
) -> UiResult<Response> {
    let f = session.form(&body)?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    let branch = f
        .get("branch")
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty());
    if let Some(b) = &branch {
        trigger::check_ref_name(b).map_err(|why| {
            UiError::new(StatusCode::BAD_REQUEST, format!("invalid branch: {why}"))
        })?;
    }
    let t = trigger::ApiTrigger {
        branch,
        ..Default::default()
    };
    let p = api::start_pipeline(&app, &project, session.login.clone(), t).await?;
    Ok(Redirect::to(&format!("{}/pipelines/{}", project_url(&project), p.number)).into_response())
}

/// Where a workflow's pipeline page is.
pub(super) async fn pipeline_page_of(app: &App, w: &WorkflowRow) -> UiResult<String> {
    let p = app
        .store
        .pipeline(w.pipeline)
        .await?
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, "Pipeline not found"))?;
    let project = app
        .store
        .project(p.project)
        .await?
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, "Project not found"))?;
    Ok(format!("{}/pipelines/{}", project_url(&project), p.number))
}

pub(super) async fn workflow_of(app: &App, id: u64) -> UiResult<WorkflowRow> {
    app.store
        .workflow(WorkflowId(id))
        .await?
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, "Workflow not found"))
}
