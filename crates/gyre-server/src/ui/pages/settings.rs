//! Project settings: environment variables (masked), webhook, default branch.

use super::*;

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
         <section><h2>Environment variables</h2>{envvars}\
         <p>Variables shared by the organization's projects: <a id=\"org-contexts\" \
         href=\"/organization/{org}/contexts\">contexts of {org}</a>.</p></section>\
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
        org = esc(&crate::contexts::owner_of(&project)),
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
    let rows: Vec<(String, Vec<String>)> = vars
        .iter()
        .map(|v| {
            let cells = vec![
                format!("<code>{}</code>", esc(&v.masked)),
                age(v.created_at.0, now),
            ];
            (v.name.clone(), cells)
        })
        .collect();
    let editor = envvar_editor(
        &format!("{}/settings/envvars", project_url(project)),
        session,
        &["Value", "Added"],
        &rows,
    );
    Ok(format!(
        "<p class=\"hint\">Values are write-only: stored encrypted, shown masked, given to jobs.</p>{editor}"
    ))
}

/// Environment variables as a table (`columns` after the name; `rows` are names and their
/// cells, already HTML), each row with a delete form posting to `{action}/delete`, then a
/// form adding (or replacing) one, posting to `action`.
pub(super) fn envvar_editor(
    action: &str,
    session: &Session,
    columns: &[&str],
    rows: &[(String, Vec<String>)],
) -> String {
    let action = esc(action);
    let csrf = csrf_field(session);
    let mut body = String::new();
    for (name, cells) in rows {
        let name = esc(name);
        let _ = write!(
            body,
            "<tr data-envvar=\"{name}\"><td><code>{name}</code></td>"
        );
        for cell in cells {
            let _ = write!(body, "<td>{cell}</td>");
        }
        let _ = write!(
            body,
            "<td><form method=\"post\" action=\"{action}/delete\">{csrf}\
             <input type=\"hidden\" name=\"name\" value=\"{name}\">\
             <button type=\"submit\" class=\"secondary\">Delete <span class=\"sr\">{name}</span></button></form></td></tr>"
        );
    }
    let table = if body.is_empty() {
        "<p class=\"empty\">No environment variables.</p>".to_string()
    } else {
        let head: String = columns
            .iter()
            .map(|c| format!("<th scope=\"col\">{}</th>", esc(c)))
            .collect();
        format!(
            "<div class=\"scroll\"><table class=\"envvars\"><thead><tr><th scope=\"col\">Name</th>{head}\
             <th scope=\"col\"><span class=\"sr\">Actions</span></th></tr></thead><tbody>{body}</tbody></table></div>"
        )
    };
    format!(
        "{table}<form method=\"post\" action=\"{action}\" class=\"inline\" autocomplete=\"off\">{csrf}\
         <label for=\"env-name\">Name</label><input id=\"env-name\" name=\"name\" required pattern=\"[A-Za-z_][A-Za-z0-9_]*\">\
         <label for=\"env-value\">Value</label><input id=\"env-value\" name=\"value\" type=\"password\" required>\
         <button type=\"submit\">Add variable</button></form>"
    )
}

pub async fn add_envvar(
    State(app): S,
    session: Session,
    Path((vcs, org, repo)): ProjectPath,
    body: Bytes,
) -> UiResult<Response> {
    let f = session.form(&body)?;
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
    let f = session.form(&body)?;
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
    let f = session.form(&body)?;
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
