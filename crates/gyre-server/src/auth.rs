//! API authentication: every form CircleCI clients present a token in (API spec §2.2):
//! `Circle-Token` header, `Authorization: Bearer`, a raw `Authorization` value, HTTP
//! Basic with the token as user name, and the `circle-token` query parameter.

use axum::http::HeaderMap;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub login: String,
    pub admin: bool,
}

/// The token presented, if any, in the order of the forms above.
pub fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers.get("circle-token").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
        if let Some(b) = v.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let user = text.split(':').next().unwrap_or_default();
            return Some(user.to_string());
        }
        return Some(v.to_string());
    }
    let query = query?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "circle-token")
        .map(|(_, v)| v.into_owned())
}

/// The hash under which tokens are stored (hex SHA-256).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two tokens (compares their hashes).
pub fn same_token(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// A new random token: 32 bytes, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn every_token_form_is_read() {
        let empty = HeaderMap::new();
        assert_eq!(
            presented_token(&headers("circle-token", "abc"), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers("authorization", "Bearer abc"), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers("authorization", "abc"), None).as_deref(),
            Some("abc")
        );
        // base64("abc:")
        assert_eq!(
            presented_token(&headers("authorization", "Basic YWJjOg=="), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&empty, Some("x=1&circle-token=abc")).as_deref(),
            Some("abc")
        );
        assert_eq!(presented_token(&empty, Some("x=1")), None);
        assert_eq!(
            presented_token(&headers("authorization", "Basic !!!"), None),
            None
        );
    }

    #[test]
    fn tokens_compare_and_are_fresh() {
        assert!(same_token("a", "a") && !same_token("a", "b"));
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 64);
    }
}
