//! Contexts (API v2 `/context`, spec §4.7): an organization's named sets of environment
//! variables, sealed at rest like project variables and given to the jobs a workflow
//! names them for (`context: [org-global]`) when an agent claims the task, above project
//! variables and below the built-ins (§8.3), masked in output.
//!
//! The owner is the organization as a slug (`gh/acme`, also written `github/acme`); gyre
//! has no organization ids of its own, so `owner-id` is refused with a message saying to
//! use `owner-slug`. Restrictions (security groups, project and expression restrictions)
//! are not built: every project of the organization may use its contexts.

use crate::App;
use crate::api::{caller, time};
use crate::envvars::{MAX_VALUE, check_name, secrets};
use crate::error::{ApiError, ApiResult};
use crate::ids;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, put};
use axum::{Json, Router};
use gyre_protocol::{EnvSource, EnvVar};
use gyre_store::{ContextRow, Millis, Project};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type S = State<Arc<App>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v2/openapi.json", get(openapi))
        .route("/api/v2/context", get(list).post(create))
        .route("/api/v2/context/{id}", get(show).delete(remove))
        .route("/api/v2/context/{id}/environment-variable", get(list_vars))
        .route(
            "/api/v2/context/{id}/environment-variable/{name}",
            put(set_var).delete(remove_var),
        )
}

/// A minimal OpenAPI document. CircleCI's classic CLI fetches it on hosts other than
/// circleci.com and manages contexts over REST only when `paths` has `/context`.
async fn openapi() -> Json<Value> {
    Json(json!({
        "openapi": "3.0.3",
        "info": {
            "title": "gyre: the CircleCI API v2 subset listed in docs/api.md",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "paths": {
            "/context": {},
            "/context/{context-id}": {},
            "/context/{context-id}/environment-variable": {},
            "/context/{context-id}/environment-variable/{env-var-name}": {},
        },
    }))
}

/// `gh/acme` from `gh/acme`, `github/acme` or `bitbucket/acme` (`bb/acme`).
pub fn owner_slug(slug: &str) -> ApiResult<String> {
    let (vcs, org) = slug
        .split_once('/')
        .filter(|(v, o)| !v.is_empty() && !o.is_empty() && !o.contains('/'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "owner slug {slug:?} is not <vcs>/<organization>, e.g. gh/acme"
            ))
        })?;
    let vcs = match vcs {
        "github" => "gh",
        "bitbucket" => "bb",
        other => other,
    };
    Ok(format!("{vcs}/{org}"))
}

/// The organization of a project: the first two parts of its slug, normalized as owner
/// slugs are (`github/acme/app` belongs to `gh/acme`).
pub fn owner_of(project: &Project) -> String {
    let org = project
        .slug
        .splitn(3, '/')
        .take(2)
        .collect::<Vec<_>>()
        .join("/");
    owner_slug(&org).unwrap_or(org)
}

fn context_json(c: &ContextRow) -> Value {
    json!({"id": ids::context(c.id), "name": c.name, "created_at": time(c.created_at)})
}

async fn context_of(app: &App, id: &str) -> ApiResult<ContextRow> {
    let not_found = || ApiError::not_found("Context not found.");
    let id = ids::parse_context(id).ok_or_else(not_found)?;
    app.store.context(id).await?.ok_or_else(not_found)
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(rename = "owner-slug")]
    owner_slug: Option<String>,
    #[serde(rename = "owner-id")]
    owner_id: Option<String>,
}

async fn list(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let owner = match (q.owner_slug, q.owner_id) {
        (Some(slug), None) => owner_slug(&slug)?,
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "gyre has no organization ids: list contexts with owner-slug=<vcs>/<organization>",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of owner-slug and owner-id",
            ));
        }
    };
    let items: Vec<Value> = app
        .store
        .contexts(&owner)
        .await?
        .iter()
        .map(context_json)
        .collect();
    Ok(Json(json!({"items": items, "next_page_token": null})))
}

#[derive(Deserialize)]
struct NewContext {
    name: String,
    owner: Owner,
}

#[derive(Deserialize)]
struct Owner {
    slug: Option<String>,
    id: Option<String>,
}

async fn create(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let req: NewContext = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"name\": ..., \"owner\": {{\"slug\": \"<vcs>/<organization>\"}}}}: {e}"
        ))
    })?;
    let owner = match (req.owner.slug, req.owner.id) {
        (Some(slug), _) => owner_slug(&slug)?,
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "gyre has no organization ids: give the owner as {\"slug\": \"<vcs>/<organization>\"}",
            ));
        }
        (None, None) => return Err(ApiError::bad_request("the owner needs a slug")),
    };
    // CircleCI answers 200 here (its own client expects it).
    Ok(Json(context_json(
        &create_for(&app, &owner, &req.name).await?,
    )))
}

/// Creates a context for `owner` (a normalized slug); 400 for a bad name, 409 if taken.
pub async fn create_for(app: &App, owner: &str, name: &str) -> ApiResult<ContextRow> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "a context name has 1 to 200 characters, none of them control characters",
        ));
    }
    app.store
        .create_context(owner, name, Millis::now())
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("A context named {name} already exists for {owner}."),
            )
        })
}

/// The context `name` of `owner`; 404 if there is none.
pub async fn by_name(app: &App, owner: &str, name: &str) -> ApiResult<ContextRow> {
    app.store
        .contexts(owner)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::not_found("Context not found."))
}

async fn show(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    Ok(Json(context_json(&context_of(&app, &id).await?)))
}

async fn remove(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let context = context_of(&app, &id).await?;
    app.store.delete_context(context.id).await?;
    Ok(Json(json!({"message": "Context deleted."})))
}

fn var_json(context: &ContextRow, name: &str, created: Millis, updated: Millis) -> Value {
    json!({
        "variable": name,
        "context_id": ids::context(context.id),
        "created_at": time(created),
        "updated_at": time(updated),
    })
}

async fn list_vars(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let context = context_of(&app, &id).await?;
    let items: Vec<Value> = app
        .store
        .context_env_vars(context.id)
        .await?
        .iter()
        .map(|v| var_json(&context, &v.name, v.created_at, v.updated_at))
        .collect();
    Ok(Json(json!({"items": items, "next_page_token": null})))
}

#[derive(Deserialize)]
struct NewValue {
    value: String,
}

/// What a sealed context value is bound to.
fn bound_to(context: u64, name: &str) -> Vec<u8> {
    format!("context-env-var:{context}:{name}").into_bytes()
}

async fn set_var(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((id, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let context = context_of(&app, &id).await?;
    let req: NewValue = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"value\": ...}}: {e}")))?;
    let (created, updated) = set_var_of(&app, &context, &name, &req.value).await?;
    Ok(Json(var_json(&context, &name, created, updated)))
}

/// Adds or replaces a context's variable, sealed; its (created, updated) times.
pub async fn set_var_of(
    app: &App,
    context: &ContextRow,
    name: &str,
    value: &str,
) -> ApiResult<(Millis, Millis)> {
    check_name(name).map_err(ApiError::bad_request)?;
    if value.len() > MAX_VALUE {
        return Err(ApiError::bad_request(format!(
            "the value of {name} is longer than {MAX_VALUE} bytes"
        )));
    }
    let sealed = secrets(app)?
        .seal_for(&bound_to(context.id, name), value.as_bytes())
        .await
        .map_err(|e| ApiError::internal("sealing a context variable", e))?;
    let now = Millis::now();
    if !app
        .store
        .set_context_env_var(context.id, name, &sealed, now)
        .await?
    {
        return Err(ApiError::not_found("Context not found."));
    }
    let created = app
        .store
        .context_env_vars(context.id)
        .await?
        .into_iter()
        .find(|v| v.name == name)
        .map_or(now, |v| v.created_at);
    Ok((created, now))
}

async fn remove_var(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let context = context_of(&app, &id).await?;
    if app.store.delete_context_env_var(context.id, &name).await? {
        Ok(Json(json!({"message": "Environment variable deleted."})))
    } else {
        Err(ApiError::not_found("Environment variable not found."))
    }
}

/// The variables of the contexts a job names, in that order (a later context wins a
/// name), as context secrets, with the contexts' API ids. A context the organization does
/// not have is an error naming it; a value that cannot be opened is an error naming it
/// and its context.
pub async fn for_job(
    app: &App,
    project: &Project,
    names: &[String],
) -> ApiResult<(Vec<EnvVar>, Vec<String>)> {
    if names.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let owner = owner_of(project);
    let all = app.store.contexts(&owner).await?;
    let secrets = secrets(app)?;
    let mut vars = Vec::new();
    let mut context_ids = Vec::new();
    for name in names {
        let context = all.iter().find(|c| &c.name == name).ok_or_else(|| {
            ApiError::not_found(format!(
                "the job uses context {name}, which {owner} does not have"
            ))
        })?;
        context_ids.push(ids::context(context.id));
        for row in app.store.context_env_vars(context.id).await? {
            let opened = secrets
                .open_for(&bound_to(context.id, &row.name), &row.sealed)
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("context {name}, variable {}: {e}", row.name),
                    )
                })?;
            let value = String::from_utf8(opened.plaintext).map_err(|_| {
                ApiError::internal("context variable", format!("{} is not UTF-8", row.name))
            })?;
            vars.push(EnvVar {
                name: row.name,
                value,
                secret: true,
                source: EnvSource::Context,
            });
        }
    }
    Ok((vars, context_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_normalized() {
        assert_eq!(owner_slug("github/acme").unwrap(), "gh/acme");
        assert_eq!(owner_slug("bitbucket/acme").unwrap(), "bb/acme");
        assert_eq!(owner_slug("gh/acme").unwrap(), "gh/acme");
        for bad in ["acme", "gh/", "/acme", "gh/acme/app"] {
            assert!(owner_slug(bad).is_err(), "{bad}");
        }
        let project = |slug: &str| Project {
            id: gyre_store::ProjectId(1),
            slug: slug.to_owned(),
            repo_url: String::new(),
            default_branch: "main".to_owned(),
            webhook_secret: None,
            settings: Value::Null,
            created_at: Millis(0),
        };
        assert_eq!(owner_of(&project("github/acme/app")), "gh/acme");
        assert_eq!(owner_of(&project("gh/acme/app")), "gh/acme");
    }
}
