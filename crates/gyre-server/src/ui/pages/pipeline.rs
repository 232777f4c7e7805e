//! The pipeline page: each workflow run as a graph and a table of jobs; approve, cancel
//! and rerun.

use super::*;

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
    // Matrix instances are grouped under their alias (kept by the compiler).
    let groups: Vec<Option<String>> = rows
        .iter()
        .map(|r| job_state(r.job).and_then(|j| j.matrix_alias.clone()))
        .collect();
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

pub async fn approve(
    State(app): S,
    session: Session,
    Path((id, job)): Path<(u64, u64)>,
    body: Bytes,
) -> UiResult<Response> {
    session.form(&body)?;
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
    session.form(&body)?;
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
    let f = session.form(&body)?;
    let w = workflow_of(&app, id).await?;
    let from_failed = f.get("from_failed").is_some_and(|v| v == "true");
    api::rerun_workflow(&app, &w, from_failed).await?;
    Ok(Redirect::to(&pipeline_page_of(&app, &w).await?).into_response())
}
