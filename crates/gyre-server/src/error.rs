//! Errors of HTTP handlers: a status and a `{"message": ...}` body, as CircleCI answers.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answer. Server-side failures are logged with their cause and answered with a
/// generic 500 message (no internals leak to clients).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "You must log in first.")
    }

    pub fn internal(context: &str, err: impl std::fmt::Display) -> ApiError {
        tracing::error!(%err, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{context}: internal error"),
        )
    }
}

impl From<gyre_store::Error> for ApiError {
    fn from(e: gyre_store::Error) -> ApiError {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        ApiError::internal("database", text)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Paths that speak JSON: their error answers are always `{"message": ...}`.
fn is_json_path(path: &str) -> bool {
    ["/api/", "/hooks/", "/agent/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// Middleware: an error answer on a JSON path that is not JSON (axum's own rejections:
/// an oversized body, a malformed JSON body, a wrong method, an unknown route) becomes
/// `{"message": ...}` with the same status.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let json_path = is_json_path(req.uri().path());
    let response = next.run(req).await;
    let status = response.status();
    if !json_path || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "The request body is too large: the limit is {} MiB.",
            crate::MAX_BODY / (1024 * 1024)
        ),
        StatusCode::NOT_FOUND => "Not found.".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "Method not allowed.".to_string(),
        _ => {
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body).trim().to_string();
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("Request failed")
                    .to_string()
            } else {
                text
            }
        }
    };
    ApiError::new(status, message).into_response()
}

/// Middleware run before routing: a project slug sent as one URL-encoded segment
/// (`gh%2Facme%2Fapp`, as some CircleCI clients send it) becomes three segments, so
/// `/api/v2/project/gh%2Facme%2Fapp/pipeline` routes like `/api/v2/project/gh/acme/app/pipeline`.
pub async fn decode_slugs(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(path) = decoded_slug_path(req.uri().path()) {
        let mut parts = req.uri().clone().into_parts();
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    next.run(req).await
}

/// The path with an encoded slug segment decoded, or `None` when there is none.
pub fn decoded_slug_path(path: &str) -> Option<String> {
    const PREFIXES: [&str; 3] = ["/api/v2/project/", "/api/v1.1/project/", "/hooks/push/"];
    let prefix = PREFIXES.iter().find(|p| path.starts_with(*p))?;
    let rest = &path[prefix.len()..];
    let (segment, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !segment.to_ascii_lowercase().contains("%2f") {
        return None;
    }
    let decoded = segment.replace("%2F", "/").replace("%2f", "/");
    Some(format!("{prefix}{decoded}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_slugs_are_split() {
        assert_eq!(
            decoded_slug_path("/api/v2/project/gh%2Facme%2Fapp/pipeline").as_deref(),
            Some("/api/v2/project/gh/acme/app/pipeline")
        );
        assert_eq!(
            decoded_slug_path("/api/v1.1/project/gh%2facme%2fapp").as_deref(),
            Some("/api/v1.1/project/gh/acme/app")
        );
        assert_eq!(
            decoded_slug_path("/hooks/push/gh%2Facme%2Fapp").as_deref(),
            Some("/hooks/push/gh/acme/app")
        );
        assert_eq!(decoded_slug_path("/api/v2/project/gh/acme/app"), None);
        assert_eq!(decoded_slug_path("/api/v2/pipeline/x%2Fy"), None);
    }
}
