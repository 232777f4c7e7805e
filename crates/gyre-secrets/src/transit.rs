//! The transit wrapper: Vault's or OpenBao's transit engine wraps each data key
//! (`POST /v1/{mount}/encrypt/{key}` and `/decrypt/{key}`); the master key never leaves
//! the server.

use crate::error::{Error, Result};
use crate::format::KEY_LEN;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use std::time::Duration;
use zeroize::{Zeroize, Zeroizing};

/// The mount path of the transit engine unless `with_mount` says otherwise.
pub(crate) const DEFAULT_MOUNT: &str = "transit";
/// Timeout of one request to Vault.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Vault's error messages are cut to this many characters in our errors.
const MAX_MESSAGE_LEN: usize = 300;

/// A transit client for one key.
#[derive(Clone)]
pub(crate) struct Transit {
    /// `scheme://host:port[/prefix]`, without a trailing slash.
    pub(crate) addr: String,
    pub(crate) mount: String,
    pub(crate) key: String,
    /// The `X-Vault-Token` header, marked sensitive.
    token: HeaderValue,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Response<T> {
    data: T,
}

#[derive(Deserialize)]
struct EncryptData {
    ciphertext: String,
}

#[derive(Deserialize)]
struct DecryptData {
    plaintext: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

impl Transit {
    pub(crate) fn new(addr: &str, token: &str, key: &str) -> Result<Transit> {
        let config_error = |reason: String| Error::TransitConfig { reason };
        let mut url = url::Url::parse(addr)
            .map_err(|e| config_error(format!("address {addr:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            if url.password().is_some() {
                let _ = url.set_password(Some("REDACTED"));
            }
            return Err(config_error(format!(
                "address {:?} must be http(s)://host[:port] with no credentials, query or fragment",
                url.as_str()
            )));
        }
        check_name("key name", key, false)?;
        let mut token = HeaderValue::from_str(token).map_err(|_| {
            config_error("the token has characters not allowed in an HTTP header".to_owned())
        })?;
        if token.is_empty() {
            return Err(config_error("the token is empty".to_owned()));
        }
        token.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| config_error(format!("building the HTTP client: {e}")))?;
        Ok(Transit {
            addr: url.as_str().trim_end_matches('/').to_owned(),
            mount: DEFAULT_MOUNT.to_owned(),
            key: key.to_owned(),
            token,
            http,
        })
    }

    pub(crate) fn set_mount(&mut self, mount: &str) -> Result<()> {
        let mount = mount.trim_matches('/');
        check_name("mount path", mount, true)?;
        self.mount = mount.to_owned();
        Ok(())
    }

    /// Creates the key (`aes256-gcm96`) unless it exists.
    pub(crate) async fn ensure_key(&self) -> Result<()> {
        let url = format!("{}/v1/{}/keys/{}", self.addr, self.mount, self.key);
        let op = "read key";
        let response = self
            .http
            .get(&url)
            .header("X-Vault-Token", self.token.clone())
            .send()
            .await
            .map_err(|source| self.request_error(op, source))?;
        if response.status() != StatusCode::NOT_FOUND {
            self.check(op, response).await?;
            return Ok(());
        }
        let body = serde_json::to_vec(&serde_json::json!({ "type": "aes256-gcm96" }))
            .expect("a JSON object serializes");
        self.post("create key", "keys", body).await?;
        Ok(())
    }

    /// Wraps a data key; the result is Vault's `vault:vN:…` ciphertext.
    pub(crate) async fn wrap(&self, data_key: &[u8; KEY_LEN]) -> Result<Vec<u8>> {
        let op = "encrypt";
        // Best effort: the request body itself is owned by the HTTP client once sent.
        let plaintext = Zeroizing::new(BASE64.encode(data_key));
        let body = serde_json::to_vec(&serde_json::json!({ "plaintext": plaintext.as_str() }))
            .expect("a JSON object serializes");
        let bytes = self.post(op, "encrypt", body).await?;
        let response: Response<EncryptData> =
            serde_json::from_slice(&bytes).map_err(|_| self.response_error(op, "not JSON"))?;
        Ok(response.data.ciphertext.into_bytes())
    }

    /// Unwraps a data key from Vault's ciphertext.
    pub(crate) async fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let op = "decrypt";
        let ciphertext = std::str::from_utf8(wrapped).map_err(|_| Error::Malformed {
            reason: "transit-wrapped data key is not text",
        })?;
        let body = serde_json::to_vec(&serde_json::json!({ "ciphertext": ciphertext }))
            .expect("a JSON object serializes");
        let bytes = Zeroizing::new(self.post(op, "decrypt", body).await?);
        let mut response: Response<DecryptData> = serde_json::from_slice(&bytes)
            .map_err(|_| self.response_error(op, "not JSON with data.plaintext"))?;
        let decoded = Zeroizing::new(BASE64.decode(&response.data.plaintext).unwrap_or_default());
        response.data.plaintext.zeroize();
        if decoded.len() != KEY_LEN {
            return Err(self.response_error(op, "the data key is not 32 bytes of base64"));
        }
        let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
        data_key.copy_from_slice(&decoded);
        Ok(data_key)
    }

    /// `POST {addr}/v1/{mount}/{action}/{key}`; the body of a successful answer.
    async fn post(&self, op: &'static str, action: &str, body: Vec<u8>) -> Result<Vec<u8>> {
        let url = format!("{}/v1/{}/{action}/{}", self.addr, self.mount, self.key);
        let response = self
            .http
            .post(&url)
            .header("X-Vault-Token", self.token.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|source| self.request_error(op, source))?;
        self.check(op, response).await
    }

    /// Maps an error status to an error; otherwise returns the body.
    async fn check(&self, op: &'static str, response: reqwest::Response) -> Result<Vec<u8>> {
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| self.request_error(op, source))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(Error::TransitDenied {
                op,
                addr: self.addr.clone(),
                key: self.key.clone(),
                status: status.as_u16(),
            });
        }
        let mut message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.errors.join("; "))
            .unwrap_or_default();
        if message.is_empty() {
            message = status.canonical_reason().unwrap_or("no message").to_owned();
        }
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_LEN) {
            message.truncate(cut);
            message.push('…');
        }
        Err(Error::TransitStatus {
            op,
            addr: self.addr.clone(),
            key: self.key.clone(),
            status: status.as_u16(),
            message,
        })
    }

    fn request_error(&self, op: &'static str, source: reqwest::Error) -> Error {
        Error::TransitRequest {
            op,
            addr: self.addr.clone(),
            source,
        }
    }

    fn response_error(&self, op: &'static str, reason: &'static str) -> Error {
        Error::TransitResponse {
            op,
            addr: self.addr.clone(),
            reason,
        }
    }
}

/// Key names and mount paths go into URL paths: letters, digits, `_`, `-` and `.` only
/// (and `/` between segments of a mount path).
fn check_name(what: &str, name: &str, slashes: bool) -> Result<()> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let ok = if slashes {
        name.split('/').all(segment_ok)
    } else {
        segment_ok(name)
    };
    if ok {
        Ok(())
    } else {
        Err(Error::TransitConfig {
            reason: format!(
                "{what} {name:?} must be non-empty and use only letters, digits, `_`, `-` and `.`"
            ),
        })
    }
}
