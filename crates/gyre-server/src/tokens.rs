//! Personal API tokens, managed by the admin (`/api/gyre/v1/tokens`): a token is shown
//! once when created; only its SHA-256 is kept. Its `id` is the first 16 hex digits of
//! that hash, enough to name it in a list and to revoke it.

use crate::App;
use crate::api::{admin, time};
use crate::auth::{new_token, token_hash};
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{delete, get};
use axum::{Json, Router};
use gyre_store::Millis;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type S = State<Arc<App>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/gyre/v1/tokens", get(list).post(create))
        .route("/api/gyre/v1/tokens/{id}", delete(revoke))
}

const ID_LEN: usize = 16;

/// Why `login` cannot own a token, if it cannot.
pub fn check_login(login: &str) -> Result<(), String> {
    let ok = !login.is_empty()
        && login.len() <= 64
        && login
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid login {login:?}: 1-64 letters, digits and - _ . @"
        ))
    }
}

#[derive(Deserialize)]
struct NewToken {
    login: String,
}

async fn create(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin(&app, &headers, uri.query(), "manage API tokens").await?;
    let req: NewToken = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"login\": ...}}: {e}")))?;
    check_login(&req.login).map_err(ApiError::bad_request)?;
    let token = new_token();
    let hash = token_hash(&token);
    let now = Millis::now();
    app.store.create_api_token(&hash, &req.login, now).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": &hash[..ID_LEN], "login": req.login, "token": token,
                    "created_at": time(now)}),
        ),
    ))
}

async fn list(State(app): S, headers: HeaderMap, uri: Uri) -> ApiResult<Json<Value>> {
    admin(&app, &headers, uri.query(), "manage API tokens").await?;
    let items: Vec<Value> = app
        .store
        .api_tokens()
        .await?
        .iter()
        .map(|(hash, login, at)| {
            json!({"id": &hash[..ID_LEN.min(hash.len())], "login": login, "created_at": time(*at)})
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

async fn revoke(
    State(app): S,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    admin(&app, &headers, uri.query(), "manage API tokens").await?;
    let matching: Vec<String> = app
        .store
        .api_tokens()
        .await?
        .into_iter()
        .map(|(hash, _, _)| hash)
        .filter(|hash| id.len() >= 8 && hash.starts_with(&id))
        .collect();
    match matching.as_slice() {
        [hash] => {
            app.store.delete_api_token(hash).await?;
            Ok(Json(json!({"message": "Token revoked."})))
        }
        [] => Err(ApiError::not_found(format!("no API token {id}"))),
        _ => Err(ApiError::bad_request(format!(
            "{id} names more than one token: give more of its id"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins() {
        assert!(check_login("alice").is_ok());
        assert!(check_login("ci-bot@acme.example").is_ok());
        assert!(check_login("").is_err());
        assert!(check_login("a b").is_err());
        assert!(check_login(&"a".repeat(65)).is_err());
    }
}
