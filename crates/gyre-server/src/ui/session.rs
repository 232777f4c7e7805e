//! Sign-in sessions of the web UI, with the admin token, an API token, or a local user's
//! login and password (`crate::users`). A session id is a random token in an `HttpOnly`,
//! `SameSite=Strict` cookie; SQL keeps only its hash, with the login and the CSRF token
//! that every form posts back. Sign-in itself is protected by a double-submit cookie.

use super::{UiError, form, page_shell, password};
use crate::App;
use crate::auth::{new_token, same_token, token_hash};
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use gyre_store::{Millis, UiSession};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const COOKIE: &str = "gyre_session";
const SIGNIN_COOKIE: &str = "gyre_signin";
/// Verified against when the login is unknown (the password of no one).
const DUMMY_HASH: &str = "pbkdf2-sha256$210000$00000000000000000000000000000000$\
    0000000000000000000000000000000000000000000000000000000000000000";
/// How long a session lasts.
const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The signed-in user of a request. Extracting it from a request without a valid
/// session redirects to the sign-in page.
#[derive(Clone, Debug)]
pub struct Session {
    pub login: String,
    pub csrf: String,
    id_hash: String,
}

impl Session {
    /// The fields of a form this session posted; refused unless it carries the
    /// session's CSRF token.
    pub fn form(&self, body: &Bytes) -> Result<HashMap<String, String>, UiError> {
        let f = form(body);
        self.check_csrf(f.get("csrf").map(String::as_str))?;
        Ok(f)
    }

    /// Refuses a form whose CSRF token is not this session's.
    fn check_csrf(&self, posted: Option<&str>) -> Result<(), UiError> {
        match posted {
            Some(t) if same_token(t, &self.csrf) => Ok(()),
            _ => Err(UiError::new(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from gyre. Reload the page and try again.",
            )),
        }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn secure(app: &App) -> &'static str {
    if app.config.public_url.starts_with("https:") {
        "; Secure"
    } else {
        ""
    }
}

/// Where to go after signing in: a local path only.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let redirect = || {
            let to = format!(
                "/signin?next={}",
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            );
            Redirect::to(&to).into_response()
        };
        let Some(id) = cookie(&parts.headers, COOKIE) else {
            return Err(redirect());
        };
        let id_hash = token_hash(&id);
        match app.store.ui_session(&id_hash, Millis::now()).await {
            Ok(Some(s)) => Ok(Session {
                login: s.login,
                csrf: s.csrf,
                id_hash,
            }),
            Ok(None) => Err(redirect()),
            Err(e) => Err(UiError::from(e).into_response()),
        }
    }
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn signin_page(app: &App, next: &str, error: Option<&str>) -> Response {
    let token = new_token();
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", super::esc(e))
    });
    let body = format!(
        "<section class=\"signin\"><h1>Sign in to gyre</h1>{error}\
         <form method=\"post\" action=\"/signin\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label for=\"login\">Login <small>(local users; empty for a token)</small></label>\
         <input id=\"login\" name=\"login\" autocomplete=\"username\">\
         <label for=\"token\">Password, or admin or API token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">The admin token is printed by <code>gyre up</code> and kept in its data directory \
         (<code>admin-token</code>).</p></section>",
        super::esc(next)
    );
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut resp = (status, page_shell("Sign in", None, "", &body)).into_response();
    let c = format!(
        "{SIGNIN_COOKIE}={token}; Path=/signin; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        secure(app)
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

pub async fn signin_form(State(app): State<Arc<App>>, Query(q): Query<NextQuery>) -> Response {
    signin_page(&app, &local_path(q.next.as_deref()), None)
}

pub async fn signin(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, UiError> {
    let f = form(&body);
    let next = local_path(f.get("next").map(String::as_str));
    let double_submit = cookie(&headers, SIGNIN_COOKIE);
    match (double_submit, f.get("csrf")) {
        (Some(c), Some(p)) if same_token(&c, p) => {}
        _ => {
            return Ok(signin_page(
                &app,
                &next,
                Some("The sign-in form expired. Please try again."),
            ));
        }
    }
    let token = f.get("token").map(|t| t.trim()).unwrap_or_default();
    let user = f.get("login").map(|l| l.trim()).unwrap_or_default();
    let login = if !user.is_empty() {
        // A local user: the field holds the password.
        let stored = app.store.ui_user_password_hash(user).await?;
        let (password, user) = (token.to_string(), user.to_string());
        tokio::task::spawn_blocking(move || {
            // Unknown users cost a hash too, so timing does not tell who exists.
            let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_string());
            password::verify(&password, &stored).then_some(user)
        })
        .await
        .map_err(|e| UiError::from(crate::error::ApiError::internal("checking a password", e)))?
    } else if !token.is_empty() && same_token(token, &app.config.admin_token) {
        Some("admin".to_string())
    } else if token.is_empty() {
        None
    } else {
        app.store.api_token_login(&token_hash(token)).await?
    };
    let Some(login) = login else {
        return Ok(signin_page(
            &app,
            &next,
            Some("That token, or that login and password, is not valid."),
        ));
    };
    let id = new_token();
    let now = Millis::now();
    let session = UiSession {
        login,
        csrf: new_token(),
        expires_at: now.plus(LIFETIME),
    };
    app.store
        .create_ui_session(&token_hash(&id), &session, now)
        .await?;
    let mut resp = Redirect::to(&next).into_response();
    let c = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        secure(&app)
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

pub async fn signout(
    State(app): State<Arc<App>>,
    session: Session,
    body: Bytes,
) -> Result<Response, UiError> {
    session.form(&body)?;
    app.store
        .delete_ui_session(&session.id_hash, Millis::now())
        .await?;
    let mut resp = Redirect::to("/signin").into_response();
    let c = format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure(&app)
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        for (next, want) in [
            (Some("/project/gh/a/b"), "/project/gh/a/b"),
            (Some("//evil.example/"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/\\evil"), "/"),
            (None, "/"),
        ] {
            assert_eq!(local_path(next), want, "{next:?}");
        }
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; gyre_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
