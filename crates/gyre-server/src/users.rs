//! Local users of the web UI, managed by the admin: `PUT /api/gyre/v1/users/{login}` with
//! `{"password": …}` adds the user or sets a new password, `GET /api/gyre/v1/users` lists
//! them, `DELETE /api/gyre/v1/users/{login}` removes one and ends their web sessions. They
//! sign in to the UI with their login and password (the API keeps using tokens). Only a
//! PBKDF2 hash is kept (`ui::password`).

use crate::App;
use crate::api::{admin, time};
use crate::error::{ApiError, ApiResult};
use crate::tokens::check_login;
use crate::ui::password;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::{get, put};
use axum::{Json, Router};
use gyre_store::Millis;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 8;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/gyre/v1/users", get(list_users))
        .route(
            "/api/gyre/v1/users/{login}",
            put(set_user).delete(delete_user),
        )
}

#[derive(Deserialize)]
struct NewPassword {
    password: String,
}

async fn set_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
    Path(login): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    admin(&app, &headers, uri.query(), "manage users").await?;
    check_login(&login).map_err(ApiError::bad_request)?;
    if login == "admin" {
        return Err(ApiError::bad_request(
            "the login admin is the admin token's",
        ));
    }
    let req: NewPassword = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"password\": ...}}: {e}")))?;
    if req.password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::bad_request(format!(
            "the password must have at least {MIN_PASSWORD} characters"
        )));
    }
    let hash = tokio::task::spawn_blocking(move || password::hash(&req.password))
        .await
        .map_err(|e| ApiError::internal("hashing a password", e))?;
    app.store.set_ui_user(&login, &hash, Millis::now()).await?;
    Ok(Json(json!({"login": login})))
}

async fn list_users(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    admin(&app, &headers, uri.query(), "manage users").await?;
    let items: Vec<Value> = app
        .store
        .ui_users()
        .await?
        .into_iter()
        .map(|(login, created_at)| json!({"login": login, "created_at": time(created_at)}))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn delete_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
    Path(login): Path<String>,
) -> ApiResult<Json<Value>> {
    admin(&app, &headers, uri.query(), "manage users").await?;
    if app.store.delete_ui_user(&login).await? {
        Ok(Json(json!({"message": "User deleted."})))
    } else {
        Err(ApiError::not_found("User not found."))
    }
}
