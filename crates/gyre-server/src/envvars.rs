//! Project environment variables (API spec §3, `/project/{slug}/envvar`): write-only
//! values, sealed at rest by gyre-secrets, listed masked as CircleCI does (`xxxx` and the
//! last four characters), handed to a job's tasks when an agent claims them, and masked
//! in its output.

use crate::App;
use crate::api::{caller, project_of, time};
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::get;
use axum::{Json, Router};
use gyre_protocol::{EnvSource, EnvVar};
use gyre_store::{EnvVarRow, Millis, Project, ProjectId};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type S = State<Arc<App>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/envvar",
            get(list).post(create),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/envvar/{name}",
            get(one).delete(remove),
        )
}

/// Longest value accepted (CircleCI documents none; this keeps rows and tasks small).
pub const MAX_VALUE: usize = 64 * 1024;

/// A variable as clients see it: the value masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskedVar {
    pub name: String,
    pub masked: String,
    pub created_at: Millis,
}

impl MaskedVar {
    pub fn json(&self) -> Value {
        json!({"name": self.name, "value": self.masked,
               "created_at": time(self.created_at), "created-at": time(self.created_at)})
    }
}

/// CircleCI's mask: `xxxx` and the last four characters; only `xxxx` for a value of
/// four characters or fewer (its last four would be all of it).
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 4 {
        return "xxxx".to_string();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("xxxx{tail}")
}

/// Why `name` cannot be an environment variable name, if it cannot.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || name.len() > 256 {
        return Err(format!(
            "invalid environment variable name {name:?}: use letters, digits and _, not starting with a digit"
        ));
    }
    Ok(())
}

pub(crate) fn secrets(app: &App) -> ApiResult<&gyre_secrets::Secrets> {
    app.config.secrets.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server has no secrets key configured",
        )
    })
}

/// The project's variables, masked.
pub async fn list_masked(app: &App, project: &Project) -> ApiResult<Vec<MaskedVar>> {
    let rows = app.store.project_env_vars(project.id).await?;
    let secrets = secrets(app)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(masked(secrets, project.id, row).await?);
    }
    Ok(out)
}

/// One variable, masked; `None` when the project has none of that name. Only that
/// variable is opened.
pub async fn get_masked(app: &App, project: &Project, name: &str) -> ApiResult<Option<MaskedVar>> {
    let row = app
        .store
        .project_env_vars(project.id)
        .await?
        .into_iter()
        .find(|r| r.name == name);
    match row {
        Some(row) => Ok(Some(masked(secrets(app)?, project.id, row).await?)),
        None => Ok(None),
    }
}

async fn masked(
    secrets: &gyre_secrets::Secrets,
    project: ProjectId,
    row: EnvVarRow,
) -> ApiResult<MaskedVar> {
    // A value that does not open (altered, or moved from another row) is still listed, so
    // it can be seen and replaced or deleted.
    let masked = match open(secrets, project, &row).await {
        Ok(value) => mask(&value),
        Err(err) => {
            tracing::error!(%project, name = %row.name, error = %err.message, "cannot open an environment variable");
            mask("")
        }
    };
    Ok(MaskedVar {
        name: row.name,
        masked,
        created_at: row.created_at,
    })
}

/// Adds or replaces a variable; answers it masked.
pub async fn set(app: &App, project: &Project, name: &str, value: &str) -> ApiResult<MaskedVar> {
    check_name(name).map_err(ApiError::bad_request)?;
    if value.len() > MAX_VALUE {
        return Err(ApiError::bad_request(format!(
            "the value of {name} is longer than {MAX_VALUE} bytes"
        )));
    }
    let sealed = secrets(app)?
        .seal_for(&context(project.id, name), value.as_bytes())
        .await
        .map_err(|e| ApiError::internal("sealing an environment variable", e))?;
    let now = Millis::now();
    app.store
        .set_project_env_var(project.id, name, &sealed, now)
        .await?;
    Ok(MaskedVar {
        name: name.to_string(),
        masked: mask(value),
        created_at: now,
    })
}

/// Deletes a variable; `false` when there was none.
pub async fn delete(app: &App, project: &Project, name: &str) -> ApiResult<bool> {
    Ok(app.store.delete_project_env_var(project.id, name).await?)
}

/// What a sealed value is bound to: its project and name. A value copied to another row
/// (by someone who can write the database but has no key) does not open there.
fn context(project: ProjectId, name: &str) -> Vec<u8> {
    format!("project-env-var:{project}:{name}").into_bytes()
}

async fn open(
    secrets: &gyre_secrets::Secrets,
    project: ProjectId,
    row: &EnvVarRow,
) -> ApiResult<String> {
    let name = &row.name;
    let opened = secrets
        .open_for(&context(project, name), &row.sealed)
        .await
        .map_err(|e| {
            // The secrets crate's errors never hold plaintext or keys: safe to show.
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("project environment variable {name}: {e}"),
            )
        })?;
    if opened.unbound {
        tracing::warn!(
            %project,
            name = %name,
            "environment variable sealed before values were bound to their row; set it again to bind it"
        );
    }
    String::from_utf8(opened.plaintext)
        .map_err(|_| ApiError::internal("environment variable", format!("{name} is not UTF-8")))
}

/// What a job of `project` gets: every variable, opened, as a project secret (masked in
/// its output). Whether the job gets secrets at all is the caller's decision
/// (`agent_api::add_secrets`: not forks' builds by default).
pub async fn for_job(app: &App, project: &Project) -> ApiResult<Vec<EnvVar>> {
    let rows = app.store.project_env_vars(project.id).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let secrets = secrets(app)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let value = open(secrets, project.id, &row).await?;
        out.push(EnvVar {
            name: row.name,
            value,
            secret: true,
            source: EnvSource::Project,
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct NewVar {
    name: String,
    value: String,
}

async fn list(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    let items: Vec<Value> = list_masked(&app, &project)
        .await?
        .iter()
        .map(MaskedVar::json)
        .collect();
    Ok(Json(json!({"items": items, "next_page_token": null})))
}

async fn create(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller(&app, &headers, uri.query()).await?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    let req: NewVar = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"name\": ..., \"value\": ...}} with two strings: {e}"
        ))
    })?;
    let var = set(&app, &project, &req.name, &req.value).await?;
    Ok((StatusCode::CREATED, Json(var.json())))
}

async fn one(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo, name)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    get_masked(&app, &project, &name)
        .await?
        .map(|v| Json(v.json()))
        .ok_or_else(|| ApiError::not_found("Environment variable not found."))
}

async fn remove(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path((vcs, org, repo, name)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller(&app, &headers, uri.query()).await?;
    let project = project_of(&app, &vcs, &org, &repo).await?;
    if !delete(&app, &project, &name).await? {
        return Err(ApiError::not_found("Environment variable not found."));
    }
    Ok(Json(json!({"message": "Environment variable deleted."})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_as_circleci_does() {
        assert_eq!(mask("hunter2-secret"), "xxxxcret");
        assert_eq!(mask("12345"), "xxxx2345");
        assert_eq!(mask("1234"), "xxxx");
        assert_eq!(mask(""), "xxxx");
        assert_eq!(mask("пароль-ключ"), "xxxxключ");
    }

    #[test]
    fn names() {
        for ok in ["A", "_x", "AWS_SECRET_ACCESS_KEY", "a1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
