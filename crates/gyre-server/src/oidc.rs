//! OIDC ID tokens for jobs, as CircleCI issues them (`CIRCLE_OIDC_TOKEN` and
//! `CIRCLE_OIDC_TOKEN_V2`): RS256 JWTs valid one hour, minted when an agent claims a task
//! and never stored.
//!
//! The signing key is a 2048-bit RSA key kept in the database (`signing_keys`), its private
//! half sealed by gyre-secrets, so every replica signs with the same key: the oldest one.
//! The issuer is the server's public URL; clouds that trust it (AWS STS, GCP workload
//! identity, Vault's JWT auth) fetch `<issuer>/.well-known/openid-configuration` and the
//! keys at `<issuer>/.well-known/jwks-pub.json`, both public.

use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use gyre_protocol::JobInfo;
use gyre_store::{Millis, SigningKeyRow, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::App;
use crate::error::{ApiError, ApiResult};

/// How long a token is valid, in seconds (CircleCI: one hour).
pub const TOKEN_LIFETIME_SECS: u64 = 3600;

/// Where the key set is served, under the issuer.
const JWKS_PATH: &str = "/.well-known/jwks-pub.json";

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("this server has no secrets key configured to keep a signing key")]
    NoSecrets,
    #[error(transparent)]
    Store(#[from] gyre_store::Error),
    #[error("the signing key: {0}")]
    Secrets(#[from] gyre_secrets::Error),
    #[error("the signing key: {0}")]
    Key(String),
}

/// Signs job tokens with the oldest stored key; knows the public half of every key.
pub struct Signer {
    kid: String,
    key: KeyPair,
    /// `{"keys": [...]}`: every stored key's JWK.
    jwks: Value,
}

impl Signer {
    /// Loads the signing keys, first creating one if there is none.
    pub async fn load(
        store: &Store,
        secrets: Option<&gyre_secrets::Secrets>,
    ) -> Result<Signer, OidcError> {
        let secrets = secrets.ok_or(OidcError::NoSecrets)?;
        let mut rows = store.signing_keys().await?;
        if rows.is_empty() {
            let row = new_key(secrets).await?;
            // Another replica may have made one meanwhile: the oldest wins everywhere.
            store.add_signing_key(&row).await?;
            rows = store.signing_keys().await?;
        }
        let oldest = rows
            .first()
            .ok_or_else(|| OidcError::Key("none stored".to_owned()))?;
        let pkcs8 = secrets
            .open_for(&context(&oldest.kid), &oldest.sealed)
            .await?
            .plaintext;
        let key = KeyPair::from_pkcs8(&pkcs8).map_err(|e| OidcError::Key(e.to_string()))?;
        let keys: Vec<Value> = rows
            .iter()
            .map(|row| serde_json::from_str(&row.public_jwk))
            .collect::<Result<_, _>>()
            .map_err(|e| OidcError::Key(format!("a stored public key is not JSON: {e}")))?;
        tracing::info!(kid = %oldest.kid, keys = keys.len(), "OIDC signing key loaded");
        Ok(Signer {
            kid: oldest.kid.clone(),
            key,
            jwks: json!({ "keys": keys }),
        })
    }

    /// A signed JWT (`header.claims.signature`) carrying `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, OidcError> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|e| OidcError::Key(format!("signing failed: {e}")))?;
        Ok(format!("{input}.{}", B64.encode(signature)))
    }
}

/// What a sealed private key is bound to.
fn context(kid: &str) -> Vec<u8> {
    format!("oidc-signing-key:{kid}").into_bytes()
}

/// A fresh RSA-2048 key, sealed, with its JWK; its id is the JWK's RFC 7638 thumbprint.
async fn new_key(secrets: &gyre_secrets::Secrets) -> Result<SigningKeyRow, OidcError> {
    let (pkcs8, n, e) = tokio::task::spawn_blocking(|| {
        let key = KeyPair::generate(KeySize::Rsa2048).map_err(|e| e.to_string())?;
        let pkcs8 = key.as_der().map_err(|e| e.to_string())?.as_ref().to_vec();
        let (n, e) = rsa_public_numbers(key.public_key().as_ref())
            .ok_or("cannot read the new public key")?;
        Ok::<_, String>((pkcs8, n, e))
    })
    .await
    .map_err(|e| OidcError::Key(e.to_string()))?
    .map_err(OidcError::Key)?;
    let (n, e) = (B64.encode(n), B64.encode(e));
    // RFC 7638: the required members in lexicographic order, no whitespace.
    let thumbprint = Sha256::digest(format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
    let kid = B64.encode(thumbprint);
    let jwk = json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": e});
    let sealed = secrets.seal_for(&context(&kid), &pkcs8).await?;
    Ok(SigningKeyRow {
        kid,
        alg: "RS256".to_owned(),
        public_jwk: jwk.to_string(),
        sealed,
        created_at: Millis::now(),
    })
}

/// The modulus and exponent (big-endian, no leading zeros) of a DER `RSAPublicKey`
/// (`SEQUENCE { INTEGER n, INTEGER e }`, RFC 8017).
fn rsa_public_numbers(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (tag, body, _) = der_item(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag_n, n, rest) = der_item(body)?;
    let (tag_e, e, _) = der_item(rest)?;
    if tag_n != 0x02 || tag_e != 0x02 {
        return None;
    }
    let strip = |v: &[u8]| {
        let start = v.iter().position(|b| *b != 0).unwrap_or(v.len());
        v[start..].to_vec()
    };
    Some((strip(n), strip(e)))
}

/// One DER item: its tag, its contents and what follows it.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The issuer: the server's public URL.
pub fn issuer(app: &App) -> String {
    app.config.public_url.trim_end_matches('/').to_owned()
}

/// The claims of a job's two tokens (V1, V2), as CircleCI's (spec §12): `sub` names the
/// organization, project and user, V2 adds where the code came from. `context_ids`: the
/// API ids of the contexts the job got.
pub fn job_claims(
    issuer: &str,
    job: &JobInfo,
    context_ids: &[String],
    now_secs: u64,
) -> (Value, Value) {
    let user = if job.username.is_empty() {
        "unknown"
    } else {
        &job.username
    };
    let origin = vcs_origin(&job.repository_url);
    let vcs_ref = vcs_ref(job);
    let sub = format!(
        "org/{}/project/{}/user/{user}",
        job.organization_id, job.project_id
    );
    let claims = |sub: String| {
        json!({
            "iss": issuer,
            "sub": sub,
            "aud": job.organization_id,
            "iat": now_secs,
            "exp": now_secs + TOKEN_LIFETIME_SECS,
            "oidc.circleci.com/org-id": job.organization_id,
            "oidc.circleci.com/project-id": job.project_id,
            "oidc.circleci.com/pipeline-id": job.pipeline_id,
            "oidc.circleci.com/workflow-id": job.workflow_id,
            "oidc.circleci.com/job-id": job.workflow_job_id,
            "oidc.circleci.com/context-ids": context_ids,
            "oidc.circleci.com/vcs-origin": origin,
            "oidc.circleci.com/vcs-ref": vcs_ref,
            "oidc.circleci.com/ssh-rerun": false,
        })
    };
    let v2 = format!("{sub}/vcs-origin/{origin}/vcs-ref/{vcs_ref}");
    (claims(sub), claims(v2))
}

/// `github.com/org/repo` from `https://github.com/org/repo.git`, `git@github.com:org/repo`
/// or `ssh://git@github.com/org/repo`; anything else (a local path) as it is, without a
/// trailing `.git`.
fn vcs_origin(url: &str) -> String {
    let trimmed = url.trim_end_matches('/').trim_end_matches(".git");
    if let Some((_, rest)) = trimmed.split_once("://") {
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        return rest.to_owned();
    }
    if let Some((user_host, path)) = trimmed.split_once(':')
        && let Some((_, host)) = user_host.split_once('@')
    {
        return format!("{host}/{path}");
    }
    trimmed.to_owned()
}

/// The git ref the job built: `refs/tags/…`, `refs/pull/<n>/head` for a fork's pull
/// request, else `refs/heads/<branch>`.
fn vcs_ref(job: &JobInfo) -> String {
    if let Some(tag) = &job.tag {
        return format!("refs/tags/{tag}");
    }
    if let Some(pr) = &job.fork_pull_request {
        return format!("refs/pull/{}/head", pr.number);
    }
    format!("refs/heads/{}", job.branch.as_deref().unwrap_or_default())
}

/// The signer, loaded (or its key created) on first use.
pub async fn signer(app: &App) -> Result<&Signer, OidcError> {
    app.oidc
        .get_or_try_init(|| Signer::load(&app.store, app.config.secrets.as_ref()))
        .await
}

/// Mints the job's tokens (V1, V2).
pub async fn mint(
    app: &App,
    job: &JobInfo,
    context_ids: &[String],
) -> Result<(String, String), OidcError> {
    let signer = signer(app).await?;
    let now = Millis::now().0.max(0) as u64 / 1000;
    let (v1, v2) = job_claims(&issuer(app), job, context_ids, now);
    Ok((signer.sign(&v1)?, signer.sign(&v2)?))
}

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route(JWKS_PATH, get(jwks))
}

async fn discovery(State(app): State<Arc<App>>) -> Json<Value> {
    let issuer = issuer(&app);
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": [
            "aud", "exp", "iat", "iss", "sub",
            "oidc.circleci.com/org-id", "oidc.circleci.com/project-id",
            "oidc.circleci.com/pipeline-id", "oidc.circleci.com/workflow-id",
            "oidc.circleci.com/job-id", "oidc.circleci.com/context-ids",
            "oidc.circleci.com/vcs-origin", "oidc.circleci.com/vcs-ref",
            "oidc.circleci.com/ssh-rerun"
        ],
    }))
}

async fn jwks(State(app): State<Arc<App>>) -> ApiResult<Json<Value>> {
    let signer = signer(&app).await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("no signing keys: {e}"),
        )
    })?;
    Ok(Json(signer.jwks.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_refs() {
        for (url, origin) in [
            ("https://github.com/acme/app.git", "github.com/acme/app"),
            ("https://github.com/acme/app", "github.com/acme/app"),
            ("git@github.com:acme/app.git", "github.com/acme/app"),
            (
                "ssh://git@gitlab.example.com/acme/app",
                "gitlab.example.com/acme/app",
            ),
            ("/srv/git/app", "/srv/git/app"),
        ] {
            assert_eq!(vcs_origin(url), origin, "{url}");
        }
        let mut job = JobInfo {
            branch: Some("main".into()),
            ..JobInfo::default()
        };
        assert_eq!(vcs_ref(&job), "refs/heads/main");
        job.tag = Some("v1".into());
        assert_eq!(vcs_ref(&job), "refs/tags/v1");
    }

    #[test]
    fn der_public_numbers() {
        // SEQUENCE { INTEGER 0x00c3 (leading zero), INTEGER 0x010001 }
        let der = [
            0x30, 0x09, 0x02, 0x02, 0x00, 0xc3, 0x02, 0x03, 0x01, 0x00, 0x01,
        ];
        assert_eq!(
            rsa_public_numbers(&der),
            Some((vec![0xc3], vec![0x01, 0x00, 0x01]))
        );
        assert_eq!(rsa_public_numbers(&der[..6]), None);
        assert_eq!(rsa_public_numbers(&[0x31, 0x00]), None);
        assert_eq!(rsa_public_numbers(&[]), None);
    }
}
