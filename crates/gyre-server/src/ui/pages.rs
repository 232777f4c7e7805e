//! The pages and form actions of the web UI (see the table in the module above).

use super::graph::{self, Node};
use super::html::{Ansi, age, duration, esc, exit_code};
use super::session::Session;
use super::{Page, UiError, UiResult, artifact_type, form};
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

type S = State<Arc<App>>;
type ProjectPath = Path<(String, String, String)>;

/// Pipelines per page of the project page; the dashboard shows fewer per project.
const PAGE: u32 = 20;
const DASHBOARD_PAGE: u32 = 5;
/// Output a job page renders at first (per request for earlier parts): the rest stays on
/// the server until asked for.
const TAIL_BYTES: u64 = 512 * 1024;

fn project_url(p: &Project) -> String {
    format!("/project/{}", p.slug)
}

fn crumb(href: &str, text: &str) -> String {
    format!("<a href=\"{}\">{}</a>", esc(href), esc(text))
}

fn badge(status: &str) -> String {
    let s = esc(status);
    format!(
        "<span class=\"badge {s}\" data-status=\"{s}\">{}</span>",
        s.replace('_', " ")
    )
}

fn csrf_field(s: &Session) -> String {
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
    let f = form(&body);
    session.check_csrf(f.get("csrf").map(String::as_str))?;
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
async fn pipeline_page_of(app: &App, w: &WorkflowRow) -> UiResult<String> {
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

pub async fn pipeline(
    State(app): S,
    session: Session,
    headers: HeaderMap,
    Path((vcs, org, repo, number)): Path<(String, String, String, u64)>,
) -> UiResult<Response> {
    let project = project_of(&app, &vcs, &org, &repo).await?;
    let p = app
        .store
        .pipeline_by_number(project.id, number)
        .await?
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, "Pipeline not found"))?;
    let details = app.store.pipeline_details(p.id).await?;
    let vcs_json = details.vcs.unwrap_or(Value::Null);
    let now = Millis::now().0;
    let git_ref = match (&p.branch, &p.tag) {
        (_, Some(t)) => format!("tag <span class=\"tag\">{}</span>", esc(t)),
        (Some(b), None) => format!("branch <span class=\"branch\">{}</span>", esc(b)),
        _ => String::new(),
    };
    let before = format!(
        "<h1>Pipeline #{number}</h1><p class=\"meta\">{git_ref} · <span class=\"subject\">{}</span> \
         · <code>{}</code> · by {} · {} · {}</p>",
        esc(vcs_json["commit"]["subject"].as_str().unwrap_or("")),
        esc(p.revision.get(..12).unwrap_or(&p.revision)),
        esc(vcs_json["commit"]["author_name"]
            .as_str()
            .unwrap_or(&p.trigger_actor)),
        esc(&p.trigger_kind),
        age(p.created_at.0, now),
    );
    let mut live = String::new();
    if let Some(errors) = p.errors.as_array().filter(|e| !e.is_empty()) {
        live.push_str(
            "<section class=\"errors\" role=\"alert\"><h2>This pipeline did not start</h2>",
        );
        for e in errors {
            let _ = write!(
                live,
                "<p>{} error:</p><pre class=\"config-error\">{}</pre>",
                esc(e["type"].as_str().unwrap_or("config")),
                esc(e["message"].as_str().unwrap_or(""))
            );
        }
        live.push_str("</section>");
    }
    let workflows = app.store.workflows_of(p.id).await?;
    let url = project_url(&project);
    for (run, w) in workflows.iter().enumerate() {
        live.push_str(&workflow_section(&app, &session, &url, w, run, &workflows).await?);
    }
    if workflows.is_empty() && p.errors.as_array().is_none_or(|e| e.is_empty()) {
        live.push_str("<p class=\"empty\">No workflows.</p>");
    }
    Ok(Page {
        title: format!("{} #{number}", project.slug),
        session: &session,
        crumbs: format!(
            "{} / {}",
            crumb(&url, &project.slug),
            crumb(&format!("{url}/pipelines/{number}"), &format!("#{number}"))
        ),
        before,
        live,
        after: String::new(),
    }
    .respond(&headers))
}

async fn workflow_section(
    app: &App,
    session: &Session,
    project_url: &str,
    w: &WorkflowRow,
    run: usize,
    all: &[WorkflowRow],
) -> UiResult<String> {
    // A workflow whose state is unreadable still shows its jobs (without edges).
    let state = api::state_of(w).ok();
    let job_state = |j: JobId| state.as_ref().and_then(|s| s.job(j));
    let rows = app.store.job_rows(w.id).await?;
    let jobs: Vec<(String, Vec<usize>)> = rows
        .iter()
        .map(|r| {
            let requires = job_state(r.job)
                .map(|j| j.requires.iter().map(|q| q.job.0 as usize).collect())
                .unwrap_or_default();
            (r.name.clone(), requires)
        })
        .collect();
    let groups = graph::matrix_groups(&jobs);
    let job_href = |r: &JobRow| r.number.map(|n| format!("{project_url}/jobs/{n}"));
    let nodes: Vec<Node> = rows
        .iter()
        .zip(groups)
        .zip(jobs)
        .map(|((r, group), (_, requires))| Node {
            name: r.name.clone(),
            group,
            requires,
            status: r.status.as_str().to_string(),
            href: started(r).then(|| job_href(r)).flatten(),
        })
        .collect();
    let is_rerun = all[..run].iter().any(|o| o.name == w.name);
    let csrf = csrf_field(session);
    let mut actions = String::new();
    if w.stopped_at.is_none() {
        let _ = write!(
            actions,
            "<form method=\"post\" action=\"/ui/workflow/{id}/cancel\">{csrf}\
             <button type=\"submit\" class=\"secondary\">Cancel workflow</button></form>",
            id = w.id.0
        );
    } else {
        let _ = write!(
            actions,
            "<form method=\"post\" action=\"/ui/workflow/{id}/rerun\">{csrf}\
             <button type=\"submit\" class=\"secondary\">Rerun from start</button></form>",
            id = w.id.0
        );
        if matches!(w.status, WorkflowStatus::Failed | WorkflowStatus::Error) {
            let _ = write!(
                actions,
                "<form method=\"post\" action=\"/ui/workflow/{id}/rerun\">{csrf}\
                 <input type=\"hidden\" name=\"from_failed\" value=\"true\">\
                 <button type=\"submit\">Rerun from failed</button></form>",
                id = w.id.0
            );
        }
    }
    let now = Millis::now().0;
    let mut table = String::new();
    for r in &rows {
        let approval = job_state(r.job).is_some_and(|j| j.kind == InstanceKind::Approval);
        let name = match job_href(r).filter(|_| started(r)) {
            Some(h) => crumb(&h, &r.name),
            None => esc(&r.name),
        };
        let took = match (r.started_at, r.stopped_at) {
            (Some(a), Some(b)) => duration(b.0 - a.0),
            (Some(a), None) => format!("{}…", duration(now - a.0)),
            _ => String::new(),
        };
        let mut act = String::new();
        if approval && r.status == JobStatus::OnHold {
            let _ = write!(
                act,
                "<form method=\"post\" action=\"/ui/workflow/{}/approve/{}\">{csrf}\
                 <button type=\"submit\" data-approve=\"{}\">Approve</button></form>",
                w.id.0,
                r.job.0,
                esc(&r.name)
            );
        } else if let Some(by) = job_state(r.job).and_then(|j| j.approved_by.as_deref()) {
            let _ = write!(act, "approved by {}", esc(by));
        }
        let _ = write!(
            table,
            "<tr data-job=\"{}\"><td>{name}</td><td>{}</td><td>{}</td><td>{took}</td><td>{act}</td></tr>",
            esc(&r.name),
            if approval { "approval" } else { "build" },
            badge(r.status.as_str()),
        );
    }
    Ok(format!(
        "<section class=\"workflow\" data-workflow=\"{id}\" data-status=\"{status}\">\
         <div class=\"titlebar\"><h2>{name}{rerun} {badge}</h2><div class=\"actions\">{actions}</div></div>\
         <div class=\"scroll\">{svg}</div>\
         <div class=\"scroll\"><table class=\"jobs\"><thead><tr><th scope=\"col\">Job</th><th scope=\"col\">Type</th>\
         <th scope=\"col\">Status</th><th scope=\"col\">Duration</th><th scope=\"col\"><span class=\"sr\">Actions</span></th></tr></thead>\
         <tbody>{table}</tbody></table></div></section>",
        id = w.id.0,
        status = esc(w.status.as_str()),
        name = esc(&w.name),
        rerun = if is_rerun {
            " <small>(rerun)</small>"
        } else {
            ""
        },
        badge = badge(w.status.as_str()),
        svg = graph::svg(&nodes, &format!("workflow {}", w.name)),
    ))
}

/// A job that has (or had) tasks, so its page has something to show.
fn started(r: &JobRow) -> bool {
    !matches!(
        r.status,
        JobStatus::Blocked | JobStatus::NotRun | JobStatus::OnHold
    )
}

async fn workflow_of(app: &App, id: u64) -> UiResult<WorkflowRow> {
    app.store
        .workflow(WorkflowId(id))
        .await?
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, "Workflow not found"))
}

pub async fn approve(
    State(app): S,
    session: Session,
    Path((id, job)): Path<(u64, u64)>,
    body: Bytes,
) -> UiResult<Response> {
    session.check_csrf(form(&body).get("csrf").map(String::as_str))?;
    let w = workflow_of(&app, id).await?;
    api::approve_job(&app, w.id, JobId(job), session.login.clone()).await?;
    Ok(Redirect::to(&pipeline_page_of(&app, &w).await?).into_response())
}

pub async fn cancel(
    State(app): S,
    session: Session,
    Path(id): Path<u64>,
    body: Bytes,
) -> UiResult<Response> {
    session.check_csrf(form(&body).get("csrf").map(String::as_str))?;
    let w = workflow_of(&app, id).await?;
    api::cancel_workflow(&app, w.id).await?;
    Ok(Redirect::to(&pipeline_page_of(&app, &w).await?).into_response())
}

pub async fn rerun(
    State(app): S,
    session: Session,
    Path(id): Path<u64>,
    body: Bytes,
) -> UiResult<Response> {
    let f = form(&body);
    session.check_csrf(f.get("csrf").map(String::as_str))?;
    let w = workflow_of(&app, id).await?;
    let from_failed = f.get("from_failed").is_some_and(|v| v == "true");
    api::rerun_workflow(&app, &w, from_failed).await?;
    Ok(Redirect::to(&pipeline_page_of(&app, &w).await?).into_response())
}

#[derive(Deserialize, Default)]
pub struct JobQuery {
    node: Option<u32>,
    tab: Option<String>,
}

/// One step of a task, from its markers.
#[derive(Default)]
struct Step {
    name: String,
    status: Option<String>,
    start: i64,
    end: i64,
    exit: Option<i32>,
}

fn steps_of(markers: &[Live]) -> BTreeMap<u32, Step> {
    let mut steps: BTreeMap<u32, Step> = BTreeMap::new();
    for e in markers {
        let s = steps.entry(e.step).or_insert_with(|| Step {
            start: e.at_ms,
            ..Step::default()
        });
        s.end = e.at_ms;
        match e.stream.as_str() {
            "step_started" => {
                let v: Value = serde_json::from_str(&e.text).unwrap_or_default();
                s.name = v["name"].as_str().unwrap_or_default().to_string();
                s.start = e.at_ms;
            }
            "step_finished" => s.status = Some(e.text.clone()),
            _ => s.exit = exit_code(&e.text).or(s.exit),
        }
    }
    steps
}

/// Events rendered to HTML per step, each step's colours carried from event to event.
fn render_by_step(events: &[Live]) -> BTreeMap<u32, String> {
    let mut ansi: HashMap<u32, Ansi> = HashMap::new();
    let mut out: BTreeMap<u32, String> = BTreeMap::new();
    for e in events {
        if let Some(html) = render_event(&mut ansi, e) {
            out.entry(e.step).or_default().push_str(&html);
        }
    }
    out
}

fn render_event(ansi: &mut HashMap<u32, Ansi>, e: &Live) -> Option<String> {
    match e.stream.as_str() {
        "stdout" => Some(ansi.entry(e.step).or_default().render(&e.text)),
        "stderr" => Some(format!(
            "<span class=\"stderr\">{}</span>",
            ansi.entry(e.step).or_default().render(&e.text)
        )),
        "system" => Some(format!("<span class=\"system\">{}</span>", esc(&e.text))),
        _ => None,
    }
}

fn latest_per_node(tasks: &[TaskRow]) -> Vec<&TaskRow> {
    let mut latest: BTreeMap<u32, &TaskRow> = BTreeMap::new();
    for t in tasks {
        latest.insert(t.task.node_index, t);
    }
    latest.into_values().collect()
}

pub async fn job(
    State(app): S,
    session: Session,
    headers: HeaderMap,
    Path((vcs, org, repo, number)): Path<(String, String, String, u64)>,
    Query(q): Query<JobQuery>,
) -> UiResult<Response> {
    let (project, job) = api::job_of(&app, &vcs, &org, &repo, number).await?;
    let w = workflow_of(&app, job.workflow.0).await?;
    let pipeline_href = pipeline_page_of(&app, &w).await?;
    let tasks = app.store.tasks_of_job(job.workflow, job.job).await?;
    let nodes = latest_per_node(&tasks);
    let node = q.node.unwrap_or(0);
    let tab = q.tab.as_deref().unwrap_or("steps");
    let url = format!("{}/jobs/{number}", project_url(&project));
    let now = Millis::now().0;
    let took = match (job.started_at, job.stopped_at) {
        (Some(a), Some(b)) => duration(b.0 - a.0),
        (Some(a), None) => format!("{}…", duration(now - a.0)),
        _ => String::new(),
    };
    let task = nodes.iter().find(|t| t.task.node_index == node).copied();
    let live = format!(
        "<p class=\"meta\">{} {took}<span hidden data-reload=\"{}\"></span></p>",
        badge(job.status.as_str()),
        task.map_or("none".to_string(), |t| format!(
            "{}/{}",
            t.task.key.workflow.0, t.task.key.task.0
        )),
    );
    let tests = job_reports(&app, &job, "tests").await?;
    let artifacts = job_reports(&app, &job, "artifacts").await?;
    let failed_tests = tests.iter().filter(|t| is_failure(t)).count();
    let mut before = format!("<h1>{} <small>#{number}</small></h1>", esc(&job.name));
    if nodes.len() > 1 {
        before.push_str("<nav class=\"tabs nodes\" aria-label=\"Parallel tasks\">");
        for t in &nodes {
            let n = t.task.node_index;
            let _ = write!(
                before,
                "<a href=\"{}?node={n}\"{}>Task {n} {}</a>",
                esc(&url),
                if n == node {
                    " aria-current=\"page\""
                } else {
                    ""
                },
                badge(t.task.status.as_str())
            );
        }
        before.push_str("</nav>");
    }
    let tab_link = |id: &str, label: String| {
        format!(
            "<a href=\"{}?node={node}&amp;tab={id}\"{}>{label}</a>",
            esc(&url),
            if tab == id {
                " aria-current=\"page\""
            } else {
                ""
            }
        )
    };
    let _ = write!(
        before,
        "<nav class=\"tabs\" aria-label=\"Job\">{}{}{}</nav>",
        tab_link("steps", "Steps".into()),
        tab_link(
            "tests",
            format!("Tests ({} failed of {})", failed_tests, tests.len())
        ),
        tab_link("artifacts", format!("Artifacts ({})", artifacts.len())),
    );
    let after = match tab {
        "tests" => tests_tab(&tests),
        "artifacts" => artifacts_tab(&artifacts),
        _ => match task {
            Some(t) => steps_tab(&app, t).await?,
            None => "<p class=\"empty\">This job has not started yet.</p>".into(),
        },
    };
    Ok(Page {
        title: format!("{} #{number}", job.name),
        session: &session,
        crumbs: format!(
            "{} / {} / {}",
            crumb(&project_url(&project), &project.slug),
            crumb(&pipeline_href, "pipeline"),
            crumb(&url, &job.name)
        ),
        before,
        live,
        after,
    }
    .respond(&headers))
}

async fn steps_tab(app: &App, t: &TaskRow) -> UiResult<String> {
    let key = t.task.key;
    let tail = logs::tail(app, key, None, TAIL_BYTES).await?;
    let markers = logs::markers(app, key).await?;
    let steps = steps_of(&markers);
    let html = render_by_step(&tail.events);
    let mut out = format!(
        "<div class=\"logbar\"><a class=\"button secondary\" href=\"/ui/task/{wf}/{task}/raw\" download>Download raw log</a>{}</div>\
         <div id=\"log\" data-task=\"{wf}/{task}\" data-next=\"{}\" data-first=\"{}\" data-complete=\"{}\">",
        if tail.more_before {
            "<button type=\"button\" id=\"earlier\" class=\"secondary\">Load earlier output</button>"
        } else {
            ""
        },
        tail.next_seq,
        tail.events.first().map_or(0, |e| e.seq),
        tail.complete,
        wf = key.workflow.0,
        task = key.task.0,
    );
    let last = steps.keys().next_back().copied();
    for (i, s) in &steps {
        let status = s.status.as_deref().unwrap_or("running");
        let open = status == "failed" || Some(*i) == last || status == "running";
        let exit = s.exit.map_or(String::new(), |c| {
            format!(" <span class=\"exit\">exit {c}</span>")
        });
        let _ = write!(
            out,
            "<details class=\"step\" id=\"step-{i}\" data-step=\"{i}\"{}><summary><span class=\"name\">{}</span> \
             {}<span class=\"took\">{}</span>{exit}</summary><pre class=\"log\" id=\"log-{i}\">{}</pre></details>",
            if open { " open" } else { "" },
            esc(&s.name),
            badge(status),
            if s.status.is_some() {
                duration(s.end - s.start)
            } else {
                String::new()
            },
            html.get(i).map_or("", String::as_str),
        );
    }
    out.push_str("</div>");
    if steps.is_empty() {
        out.push_str("<p class=\"empty\" id=\"no-steps\">No output yet.</p>");
    }
    Ok(out)
}

fn is_failure(t: &Value) -> bool {
    !matches!(t["result"].as_str(), Some("success" | "skipped"))
}

fn tests_tab(tests: &[Value]) -> String {
    if tests.is_empty() {
        return "<p class=\"empty\">No test results were stored.</p>".into();
    }
    let mut sorted: Vec<&Value> = tests.iter().collect();
    sorted.sort_by_key(|t| !is_failure(t));
    let mut rows = String::new();
    for t in sorted {
        let result = t["result"].as_str().unwrap_or("");
        let message = t["message"].as_str().unwrap_or("");
        let _ = write!(
            rows,
            "<tr class=\"{}\"><td>{}</td><td><span class=\"test-name\">{}</span><div class=\"classname\">{}</div></td>\
             <td>{}</td><td>{}</td></tr>",
            if is_failure(t) { "failure" } else { "pass" },
            badge(result),
            esc(t["name"].as_str().unwrap_or("")),
            esc(t["classname"].as_str().unwrap_or("")),
            esc(t["file"].as_str().unwrap_or("")),
            if message.is_empty() {
                String::new()
            } else {
                format!("<pre class=\"test-message\">{}</pre>", esc(message))
            },
        );
    }
    format!(
        "<div class=\"scroll\"><table class=\"tests\"><thead><tr><th scope=\"col\">Result</th><th scope=\"col\">Test</th>\
         <th scope=\"col\">File</th><th scope=\"col\">Message</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
}

fn artifacts_tab(artifacts: &[Value]) -> String {
    if artifacts.is_empty() {
        return "<p class=\"empty\">No artifacts were stored.</p>".into();
    }
    let mut out = String::from("<ul class=\"artifacts\">");
    for a in artifacts {
        let key = a["key"].as_str().unwrap_or_default();
        let _ = write!(
            out,
            "<li><a href=\"/ui/artifacts/{}\">{}</a> <small>task {}</small></li>",
            esc(key),
            esc(a["path"].as_str().unwrap_or(key)),
            a["node_index"].as_u64().unwrap_or(0)
        );
    }
    out.push_str("</ul>");
    out
}

fn task_key(workflow: u64, task: u64) -> TaskKey {
    TaskKey {
        workflow: WorkflowId(workflow),
        task: TaskId(task),
    }
}

async fn existing_task(app: &App, key: TaskKey) -> UiResult<()> {
    match app.store.task(key).await? {
        Some(_) => Ok(()),
        None => Err(UiError::new(StatusCode::NOT_FOUND, "Task not found")),
    }
}

#[derive(Deserialize)]
pub struct BeforeQuery {
    before: u64,
}

/// Output before `before`, rendered per step: `{steps: [{step, html}], first, more}`.
pub async fn earlier_log(
    State(app): S,
    _session: Session,
    Path((workflow, task)): Path<(u64, u64)>,
    Query(q): Query<BeforeQuery>,
) -> UiResult<Response> {
    let key = task_key(workflow, task);
    existing_task(&app, key).await?;
    let tail = logs::tail(&app, key, Some(q.before), TAIL_BYTES).await?;
    let steps: Vec<Value> = render_by_step(&tail.events)
        .into_iter()
        .map(|(step, html)| json!({"step": step, "html": html}))
        .collect();
    Ok(axum::Json(json!({
        "steps": steps,
        "first": tail.events.first().map_or(q.before, |e| e.seq),
        "more": tail.more_before,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct FromQuery {
    #[serde(default)]
    from: u64,
}

/// The log from `from` on as Server-Sent Events of rendered HTML:
/// `{seq, step, kind: "start" | "output" | "finish", name?, status?, html?}`, then `end`.
/// A browser reconnecting (the server stopped) sends `Last-Event-ID` and goes on after it.
pub async fn live_log(
    State(app): S,
    _session: Session,
    headers: HeaderMap,
    Path((workflow, task)): Path<(u64, u64)>,
    Query(q): Query<FromQuery>,
) -> UiResult<Response> {
    let key = task_key(workflow, task);
    existing_task(&app, key).await?;
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |seq| seq + 1);
    let mut ansi: HashMap<u32, Ansi> = HashMap::new();
    let stream = logs::follow(app, key, q.from.max(resumed))
        .await?
        .map(move |e| {
            let Some(e) = e else {
                return Ok::<_, std::convert::Infallible>(
                    SseEvent::default().event("end").data("{}"),
                );
            };
            let data = match e.stream.as_str() {
                "step_started" => {
                    let v: Value = serde_json::from_str(&e.text).unwrap_or_default();
                    json!({"seq": e.seq, "step": e.step, "kind": "start", "name": v["name"]})
                }
                "step_finished" => {
                    json!({"seq": e.seq, "step": e.step, "kind": "finish", "status": e.text})
                }
                _ => json!({"seq": e.seq, "step": e.step, "kind": "output",
                        "html": render_event(&mut ansi, &e).unwrap_or_default()}),
            };
            Ok(SseEvent::default()
                .id(e.seq.to_string())
                .data(data.to_string()))
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The task's whole output as a text file.
pub async fn raw_log(
    State(app): S,
    _session: Session,
    Path((workflow, task)): Path<(u64, u64)>,
) -> UiResult<Response> {
    let key = task_key(workflow, task);
    existing_task(&app, key).await?;
    let archived_v2 = app
        .store
        .task_row(key)
        .await?
        .and_then(|t| t.log_key)
        .is_some_and(|k| k.ends_with(".idx.json"));
    let mut resp = if archived_v2 {
        agent_api::blob_response(&app, &logs::archive_key(key)).await?
    } else {
        let (events, _) = logs::read(&app, key, 0).await?;
        let text: String = events
            .iter()
            .filter(|e| matches!(e.stream.as_str(), "stdout" | "stderr" | "system"))
            .map(|e| e.text.as_str())
            .collect();
        Body::from(text).into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"task-{workflow}-{task}.log\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

/// An artifact, with the content type the operations guide allows (see
/// [`artifact_type`]), never sniffed, sandboxed when rendered.
pub async fn artifact(
    State(app): S,
    _session: Session,
    Path(key): Path<String>,
) -> UiResult<Response> {
    if !key.starts_with("artifacts/") {
        return Err(UiError::new(StatusCode::NOT_FOUND, "Artifact not found"));
    }
    let (kind, inline) = artifact_type(&key, app.config.unsafe_artifacts);
    let mut resp = agent_api::blob_response(&app, &key).await?;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; img-src 'self'; media-src 'self'"),
    );
    if !inline {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    Ok(resp)
}

#[derive(Deserialize, Default)]
pub struct SettingsQuery {
    reveal: Option<String>,
}

pub async fn settings(
    State(app): S,
    session: Session,
    headers: HeaderMap,
    Path((vcs, org, repo)): ProjectPath,
    Query(q): Query<SettingsQuery>,
) -> UiResult<Response> {
    let project = project_of(&app, &vcs, &org, &repo).await?;
    let url = project_url(&project);
    let csrf = csrf_field(&session);
    let secret = match (&project.webhook_secret, q.reveal.is_some()) {
        (None, _) => "<em>none: webhooks are refused</em>".to_string(),
        (Some(s), true) => format!("<code id=\"webhook-secret\">{}</code>", esc(s)),
        (Some(s), false) => format!(
            "<code id=\"webhook-secret\">{}</code> <a href=\"{}/settings?reveal=1\">Reveal</a>",
            esc(&mask(s)),
            esc(&url)
        ),
    };
    let body = format!(
        "<h1>Settings of {slug}</h1>\
         <section><h2>Environment variables</h2>{envvars}</section>\
         <section><h2>Webhook</h2><dl>\
         <dt>GitHub webhook URL</dt><dd><code id=\"webhook-url\">{public}/hooks/github</code></dd>\
         <dt>Generic push hook URL</dt><dd><code>{public}/hooks/push/{slug}</code></dd>\
         <dt>Secret</dt><dd>{secret}</dd></dl></section>\
         <section><h2>Default branch</h2>\
         <form method=\"post\" action=\"{url}/settings\" class=\"inline\">{csrf}\
         <label for=\"default-branch\">Default branch</label>\
         <input id=\"default-branch\" name=\"default_branch\" value=\"{branch}\" required>\
         <button type=\"submit\">Save</button></form></section>",
        slug = esc(&project.slug),
        envvars = envvar_section(&app, &project, &session).await?,
        public = esc(&app.config.public_url),
        url = esc(&url),
        branch = esc(&project.default_branch),
    );
    Ok(Page {
        title: format!("{} settings", project.slug),
        session: &session,
        crumbs: format!(
            "{} / {}",
            crumb(&url, &project.slug),
            crumb(&format!("{url}/settings"), "settings")
        ),
        before: body,
        live: String::new(),
        after: String::new(),
    }
    .respond(&headers))
}

/// The project's environment variables, masked, with forms to add and delete them.
async fn envvar_section(app: &App, project: &Project, session: &Session) -> UiResult<String> {
    let url = esc(&project_url(project));
    let csrf = csrf_field(session);
    let add = format!(
        "<form method=\"post\" action=\"{url}/settings/envvars\" class=\"inline\" autocomplete=\"off\">{csrf}\
         <label for=\"env-name\">Name</label><input id=\"env-name\" name=\"name\" required pattern=\"[A-Za-z_][A-Za-z0-9_]*\">\
         <label for=\"env-value\">Value</label><input id=\"env-value\" name=\"value\" type=\"password\" required>\
         <button type=\"submit\">Add variable</button></form>"
    );
    let vars = match envvars::list_masked(app, project).await {
        Ok(v) => v,
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
            return Ok(format!(
                "<p class=\"empty\">{}: environment variables cannot be stored.</p>",
                esc(&e.message)
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let now = Millis::now().0;
    let mut rows = String::new();
    for v in &vars {
        let _ = write!(
            rows,
            "<tr data-envvar=\"{name}\"><td><code>{name}</code></td><td><code>{}</code></td><td>{}</td>\
             <td><form method=\"post\" action=\"{url}/settings/envvars/delete\">{csrf}\
             <input type=\"hidden\" name=\"name\" value=\"{name}\">\
             <button type=\"submit\" class=\"secondary\">Delete <span class=\"sr\">{name}</span></button></form></td></tr>",
            esc(&v.masked),
            age(v.created_at.0, now),
            name = esc(&v.name),
        );
    }
    let table = if rows.is_empty() {
        "<p class=\"empty\">No environment variables.</p>".to_string()
    } else {
        format!(
            "<div class=\"scroll\"><table class=\"envvars\"><thead><tr><th scope=\"col\">Name</th>\
             <th scope=\"col\">Value</th><th scope=\"col\">Added</th><th scope=\"col\"><span class=\"sr\">Actions</span></th>\
             </tr></thead><tbody>{rows}</tbody></table></div>"
        )
    };
    Ok(format!(
        "<p class=\"hint\">Values are write-only: stored encrypted, shown masked, given to jobs.</p>{table}{add}"
    ))
}

pub async fn add_envvar(
    State(app): S,
    session: Session,
    Path((vcs, org, repo)): ProjectPath,
    body: Bytes,
) -> UiResult<Response> {
    let f = form(&body);
    session.check_csrf(f.get("csrf").map(String::as_str))?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    let name = f.get("name").map_or("", |n| n.trim());
    let value = f.get("value").map_or("", String::as_str);
    envvars::set(&app, &project, name, value).await?;
    Ok(Redirect::to(&format!("{}/settings", project_url(&project))).into_response())
}

pub async fn delete_envvar(
    State(app): S,
    session: Session,
    Path((vcs, org, repo)): ProjectPath,
    body: Bytes,
) -> UiResult<Response> {
    let f = form(&body);
    session.check_csrf(f.get("csrf").map(String::as_str))?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    envvars::delete(&app, &project, f.get("name").map_or("", String::as_str)).await?;
    Ok(Redirect::to(&format!("{}/settings", project_url(&project))).into_response())
}

pub async fn save_settings(
    State(app): S,
    session: Session,
    Path((vcs, org, repo)): ProjectPath,
    body: Bytes,
) -> UiResult<Response> {
    let f = form(&body);
    session.check_csrf(f.get("csrf").map(String::as_str))?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    if let Some(branch) = f.get("default_branch").map(|b| b.trim()) {
        trigger::check_ref_name(branch).map_err(|why| {
            UiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid default branch: {why}"),
            )
        })?;
        app.store
            .set_project_default_branch(project.id, branch)
            .await?;
    }
    Ok(Redirect::to(&format!("{}/settings", project_url(&project))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(seq: u64, step: u32, stream: &str, text: &str) -> Live {
        Live {
            seq,
            step,
            stream: stream.into(),
            at_ms: seq as i64 * 1000,
            text: text.into(),
        }
    }

    #[test]
    fn steps_come_from_markers() {
        let markers = [
            live(0, 0, "step_started", r#"{"name":"Checkout code"}"#),
            live(1, 0, "step_finished", "success"),
            live(2, 1, "step_started", r#"{"name":"make"}"#),
            live(4, 1, "system", "Exited with code exit status 2"),
            live(5, 1, "step_finished", "failed"),
        ];
        let steps = steps_of(&markers);
        assert_eq!(steps[&0].name, "Checkout code");
        assert_eq!(steps[&1].status.as_deref(), Some("failed"));
        assert_eq!(steps[&1].exit, Some(2));
        assert_eq!(steps[&1].end - steps[&1].start, 3000);
    }

    #[test]
    fn output_renders_per_step_with_colours_carried() {
        let events = [
            live(0, 0, "stdout", "\u{1b}[31mred"),
            live(1, 1, "stderr", "<err>"),
            live(2, 0, "stdout", " still red\u{1b}[0m"),
        ];
        let html = render_by_step(&events);
        assert_eq!(
            html[&0],
            "<span class=\"f1\">red</span><span class=\"f1\"> still red</span>"
        );
        assert_eq!(html[&1], "<span class=\"stderr\">&lt;err&gt;</span>");
    }
}
