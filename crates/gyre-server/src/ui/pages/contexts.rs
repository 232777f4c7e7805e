//! An organization's contexts: list and create them; per context, its variables (names
//! and dates only: values are write-only), add, replace and delete them, delete the
//! context. The same cores as API v2 `/context` (`crate::contexts`).

use super::settings::envvar_editor;
use super::*;
use crate::contexts;
use gyre_store::ContextRow;

pub(in crate::ui) type OrgPath = Path<(String, String)>;
pub(in crate::ui) type ContextPath = Path<(String, String, String)>;

/// `/organization/<vcs>/<org>/contexts`.
fn org_url(owner: &str) -> String {
    format!("/organization/{owner}/contexts")
}

/// A context's page; its name percent-encoded as one path segment.
fn context_url(owner: &str, name: &str) -> String {
    let mut segment = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            segment.push(b as char);
        } else {
            let _ = write!(segment, "%{b:02X}");
        }
    }
    format!("{}/{segment}", org_url(owner))
}

fn owner(vcs: &str, org: &str) -> UiResult<String> {
    Ok(contexts::owner_slug(&format!("{vcs}/{org}"))?)
}

fn crumbs(owner: &str, context: Option<&str>) -> String {
    let mut out = crumb(&org_url(owner), &format!("{owner} contexts"));
    if let Some(name) = context {
        let _ = write!(out, " / {}", crumb(&context_url(owner, name), name));
    }
    out
}

pub async fn org_contexts(
    State(app): S,
    session: Session,
    headers: HeaderMap,
    Path((vcs, org)): OrgPath,
) -> UiResult<Response> {
    let owner = owner(&vcs, &org)?;
    let csrf = csrf_field(&session);
    let now = Millis::now().0;
    let mut rows = String::new();
    for c in app.store.contexts(&owner).await? {
        let _ = write!(
            rows,
            "<tr data-context=\"{name}\"><td><a href=\"{href}\">{name}</a></td><td>{}</td></tr>",
            age(c.created_at.0, now),
            name = esc(&c.name),
            href = esc(&context_url(&owner, &c.name)),
        );
    }
    let table = if rows.is_empty() {
        "<p class=\"empty\">No contexts.</p>".to_string()
    } else {
        format!(
            "<div class=\"scroll\"><table class=\"contexts\"><thead><tr><th scope=\"col\">Name</th>\
             <th scope=\"col\">Created</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    };
    let body = format!(
        "<h1>Contexts of {owner_e}</h1>\
         <p class=\"hint\">A workflow job with <code>context: [name]</code> gets the context's \
         variables, masked in its output.</p>{table}\
         <form method=\"post\" action=\"{url}\" class=\"inline\" autocomplete=\"off\">{csrf}\
         <label for=\"context-name\">Name</label><input id=\"context-name\" name=\"name\" required maxlength=\"200\">\
         <button type=\"submit\">Create context</button></form>",
        owner_e = esc(&owner),
        url = esc(&org_url(&owner)),
    );
    Ok(Page {
        title: format!("{owner} contexts"),
        session: &session,
        crumbs: crumbs(&owner, None),
        before: body,
        live: String::new(),
        after: String::new(),
    }
    .respond(&headers))
}

pub async fn create_context(
    State(app): S,
    session: Session,
    Path((vcs, org)): OrgPath,
    body: Bytes,
) -> UiResult<Response> {
    let f = session.form(&body)?;
    let owner = owner(&vcs, &org)?;
    let context =
        contexts::create_for(&app, &owner, f.get("name").map_or("", String::as_str)).await?;
    Ok(Redirect::to(&context_url(&owner, &context.name)).into_response())
}

async fn context_of(app: &App, vcs: &str, org: &str, name: &str) -> UiResult<(String, ContextRow)> {
    let owner = owner(vcs, org)?;
    let context = contexts::by_name(app, &owner, name).await?;
    Ok((owner, context))
}

pub async fn context_page(
    State(app): S,
    session: Session,
    headers: HeaderMap,
    Path((vcs, org, name)): ContextPath,
) -> UiResult<Response> {
    let (owner, context) = context_of(&app, &vcs, &org, &name).await?;
    let page_url = context_url(&owner, &context.name);
    let url = esc(&page_url);
    let csrf = csrf_field(&session);
    let now = Millis::now().0;
    let rows: Vec<(String, Vec<String>)> = app
        .store
        .context_env_vars(context.id)
        .await?
        .into_iter()
        .map(|v| {
            let cells = vec![age(v.created_at.0, now), age(v.updated_at.0, now)];
            (v.name, cells)
        })
        .collect();
    let editor = envvar_editor(
        &format!("{page_url}/envvars"),
        &session,
        &["Added", "Updated"],
        &rows,
    );
    let body = format!(
        "<h1>Context {name}</h1>\
         <p class=\"hint\">Values are write-only: stored encrypted, never shown, given to the jobs \
         that name this context. Adding a name that exists replaces its value.</p>{editor}\
         <section><h2>Delete this context</h2>\
         <form method=\"post\" action=\"{url}/delete\" class=\"inline\">{csrf}\
         <button type=\"submit\" class=\"danger\" id=\"delete-context\">Delete context {name}</button></form></section>",
        name = esc(&context.name),
    );
    Ok(Page {
        title: format!("{} context", context.name),
        session: &session,
        crumbs: crumbs(&owner, Some(&context.name)),
        before: body,
        live: String::new(),
        after: String::new(),
    }
    .respond(&headers))
}

pub async fn delete_context(
    State(app): S,
    session: Session,
    Path((vcs, org, name)): ContextPath,
    body: Bytes,
) -> UiResult<Response> {
    session.form(&body)?;
    let (owner, context) = context_of(&app, &vcs, &org, &name).await?;
    app.store.delete_context(context.id).await?;
    Ok(Redirect::to(&org_url(&owner)).into_response())
}

pub async fn set_context_var(
    State(app): S,
    session: Session,
    Path((vcs, org, name)): ContextPath,
    body: Bytes,
) -> UiResult<Response> {
    let f = session.form(&body)?;
    let (owner, context) = context_of(&app, &vcs, &org, &name).await?;
    let var = f.get("name").map_or("", |n| n.trim());
    let value = f.get("value").map_or("", String::as_str);
    contexts::set_var_of(&app, &context, var, value).await?;
    Ok(Redirect::to(&context_url(&owner, &context.name)).into_response())
}

pub async fn delete_context_var(
    State(app): S,
    session: Session,
    Path((vcs, org, name)): ContextPath,
    body: Bytes,
) -> UiResult<Response> {
    let f = session.form(&body)?;
    let (owner, context) = context_of(&app, &vcs, &org, &name).await?;
    app.store
        .delete_context_env_var(context.id, f.get("name").map_or("", String::as_str))
        .await?;
    Ok(Redirect::to(&context_url(&owner, &context.name)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_are_one_path_segment() {
        assert_eq!(
            context_url("gh/acme", "org-global"),
            "/organization/gh/acme/contexts/org-global"
        );
        assert_eq!(
            context_url("gh/acme", "a b/c%<"),
            "/organization/gh/acme/contexts/a%20b%2Fc%25%3C"
        );
    }
}
