//! The web UI: pages rendered on the server, a little JavaScript for live updates, every
//! asset embedded in the binary (nothing is loaded from elsewhere).
//!
//! | path | page |
//! |---|---|
//! | `/` | dashboard: projects and their latest pipelines |
//! | `/signin`, `/signout` | sign-in with the admin token or an API token ([`session`]) |
//! | `/project/{vcs}/{org}/{repo}` | pipelines, by branch, paginated, trigger button |
//! | `…/pipelines/{number}` | workflow graphs, approve / cancel / rerun, config errors |
//! | `…/jobs/{number}` | steps and log tail (live), parallel tabs, tests, artifacts |
//! | `…/settings` | environment variables (masked), webhook, default branch |
//! | `/organization/{vcs}/{org}/contexts[/{name}]` | contexts and their variables (names only) |
//!
//! Live updates: an element with `data-live` is refreshed by polling its page with
//! `X-Gyre-Fragment: live` (the server answers that part alone); a running job's log
//! follows `/ui/task/{workflow}/{task}/live` (Server-Sent Events of rendered HTML).
//! Every form posts the session's CSRF token; every user-provided string is escaped.

pub mod graph;
pub mod html;
mod pages;
pub mod password;
pub mod session;

use crate::App;
use crate::error::ApiError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
pub use html::esc;
use session::Session;
use std::collections::HashMap;
use std::sync::Arc;

pub fn routes() -> Router<Arc<App>> {
    let project = "/project/{vcs}/{org}/{repo}";
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/signin", get(session::signin_form).post(session::signin))
        .route("/signout", post(session::signout))
        .route("/ui/assets/{name}", get(asset))
        .route(project, get(pages::project))
        .route(&format!("{project}/trigger"), post(pages::trigger))
        .route(
            &format!("{project}/settings"),
            get(pages::settings).post(pages::save_settings),
        )
        .route(
            &format!("{project}/settings/envvars"),
            post(pages::add_envvar),
        )
        .route(
            &format!("{project}/settings/envvars/delete"),
            post(pages::delete_envvar),
        )
        .route(
            &format!("{project}/pipelines/{{number}}"),
            get(pages::pipeline),
        )
        .route(&format!("{project}/jobs/{{number}}"), get(pages::job))
        .route(
            "/organization/{vcs}/{org}/contexts",
            get(pages::org_contexts).post(pages::create_context),
        )
        .route(
            "/organization/{vcs}/{org}/contexts/{name}",
            get(pages::context_page),
        )
        .route(
            "/organization/{vcs}/{org}/contexts/{name}/delete",
            post(pages::delete_context),
        )
        .route(
            "/organization/{vcs}/{org}/contexts/{name}/envvars",
            post(pages::set_context_var),
        )
        .route(
            "/organization/{vcs}/{org}/contexts/{name}/envvars/delete",
            post(pages::delete_context_var),
        )
        .route("/ui/workflow/{id}/approve/{job}", post(pages::approve))
        .route("/ui/workflow/{id}/cancel", post(pages::cancel))
        .route("/ui/workflow/{id}/rerun", post(pages::rerun))
        .route("/ui/task/{workflow}/{task}/log", get(pages::earlier_log))
        .route("/ui/task/{workflow}/{task}/live", get(pages::live_log))
        .route("/ui/task/{workflow}/{task}/raw", get(pages::raw_log))
        .route("/ui/artifacts/{*key}", get(pages::artifact))
        .layer(axum::middleware::map_response(security_headers))
}

/// Every UI answer: loads only from gyre itself, is never framed, sends no referrer
/// elsewhere. (Artifacts set their own, stricter policy.)
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                 base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
        );
    }
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    resp
}

/// An error page: the status and a message, as HTML.
#[derive(Debug)]
pub struct UiError(ApiError);

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> UiError {
        UiError(ApiError::new(status, message))
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        UiError(e)
    }
}

impl From<gyre_store::Error> for UiError {
    fn from(e: gyre_store::Error) -> UiError {
        UiError(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let body = format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">Back to the dashboard</a></p>",
            self.0.status.as_u16(),
            esc(&self.0.message)
        );
        (self.0.status, page_shell("Error", None, "", &body)).into_response()
    }
}

pub type UiResult<T> = Result<T, UiError>;

/// The fields of a form body (`application/x-www-form-urlencoded`).
pub fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A whole page: header (with sign-out when signed in), breadcrumbs, content.
pub fn page_shell(
    title: &str,
    session: Option<&Session>,
    crumbs: &str,
    body: &str,
) -> Html<String> {
    let user = session.map_or(String::new(), |s| {
        format!(
            "<form method=\"post\" action=\"/signout\" class=\"signout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <span class=\"who\">{}</span> <button type=\"submit\">Sign out</button></form>",
            esc(&s.csrf),
            esc(&s.login)
        )
    });
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · gyre</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/gyre.css\">\
         <link rel=\"icon\" href=\"/ui/assets/favicon.svg\" type=\"image/svg+xml\">\
         <script src=\"/ui/assets/gyre.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><a class=\"brand\" href=\"/\">gyre</a>\
         <nav aria-label=\"Breadcrumb\" class=\"crumbs\">{crumbs}</nav>{user}</header>\
         <main id=\"main\" tabindex=\"-1\">{body}</main></body></html>",
        esc(title)
    ))
}

/// A page with a part that refreshes live: a request with `X-Gyre-Fragment: live` gets
/// that part alone.
pub struct Page<'a> {
    pub title: String,
    pub session: &'a Session,
    pub crumbs: String,
    pub before: String,
    pub live: String,
    pub after: String,
}

impl Page<'_> {
    pub fn respond(self, headers: &HeaderMap) -> Response {
        if headers
            .get("x-gyre-fragment")
            .is_some_and(|v| v.as_bytes() == b"live")
        {
            return Html(self.live).into_response();
        }
        let body = format!(
            "{}<div id=\"live\" data-live>{}</div>{}",
            self.before, self.live, self.after
        );
        page_shell(&self.title, Some(self.session), &self.crumbs, &body).into_response()
    }
}

const CSS: &str = include_str!("assets/gyre.css");
const JS: &str = include_str!("assets/gyre.js");
const FAVICON: &str = include_str!("assets/favicon.svg");

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "gyre.css" => (CSS, "text/css; charset=utf-8"),
        "gyre.js" => (JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (FAVICON, "image/svg+xml"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The content type an artifact is served with, after CircleCI Server's rule: safe types
/// as themselves; HTML, CSS, JavaScript and XML as `text/plain` unless the operator
/// allows unsafe types; anything else as a download (`application/octet-stream`).
pub fn artifact_type(path: &str, allow_unsafe: bool) -> (&'static str, bool) {
    let ext = path
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let safe = match ext.as_str() {
        "txt" | "log" | "text" | "md" | "csv" | "out" => Some("text/plain; charset=utf-8"),
        "json" => Some("application/json"),
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "bmp" => Some("image/bmp"),
        "webm" => Some("video/webm"),
        "ogv" => Some("video/ogg"),
        "mp4" => Some("video/mp4"),
        "aac" => Some("audio/aac"),
        "m4a" => Some("audio/mp4"),
        "mp3" => Some("audio/mpeg"),
        "ogg" | "oga" => Some("audio/ogg"),
        "wav" => Some("audio/wav"),
        _ => None,
    };
    if let Some(t) = safe {
        return (t, true);
    }
    let unsafe_type = match ext.as_str() {
        "html" | "htm" => Some("text/html; charset=utf-8"),
        "css" => Some("text/css; charset=utf-8"),
        "js" | "mjs" => Some("text/javascript; charset=utf-8"),
        "es" => Some("application/ecmascript"),
        "xml" => Some("text/xml; charset=utf-8"),
        _ => None,
    };
    match unsafe_type {
        Some(t) if allow_unsafe => (t, true),
        Some(_) => ("text/plain; charset=utf-8", true),
        None => ("application/octet-stream", false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_content_types_follow_the_safe_list() {
        for (path, allow, want, inline) in [
            ("art/report.txt", false, "text/plain; charset=utf-8", true),
            ("a/b.JSON", false, "application/json", true),
            ("shot.png", false, "image/png", true),
            ("clip.mp4", false, "video/mp4", true),
            ("index.html", false, "text/plain; charset=utf-8", true),
            ("index.html", true, "text/html; charset=utf-8", true),
            ("app.js", false, "text/plain; charset=utf-8", true),
            ("feed.xml", false, "text/plain; charset=utf-8", true),
            ("image.svg", false, "application/octet-stream", false),
            ("bin/tool", false, "application/octet-stream", false),
        ] {
            assert_eq!(artifact_type(path, allow), (want, inline), "{path} {allow}");
        }
    }
}
