//! The server's signing keys (job OIDC tokens), stored sealed.

use crate::error::query;
use crate::{Error, Millis, Store, get};

/// A signing key; `sealed` is what gyre-secrets made of the private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub kid: String,
    /// JOSE algorithm name, e.g. `RS256`.
    pub alg: String,
    /// The public key as a JWK (JSON text), for the JWKS.
    pub public_jwk: String,
    pub sealed: Vec<u8>,
    pub created_at: Millis,
}

const T_KEYS: &str = "signing_keys";

impl Store {
    /// Every signing key, oldest first (the oldest is the one to sign with).
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>, Error> {
        const OP: &str = "signing_keys";
        let rows = sqlx::query(
            "SELECT kid, alg, public_jwk, sealed, created_at FROM signing_keys \
             ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query(OP))?;
        rows.iter()
            .map(|row| {
                Ok(SigningKeyRow {
                    kid: get(row, T_KEYS, "kid")?,
                    alg: get(row, T_KEYS, "alg")?,
                    public_jwk: get(row, T_KEYS, "public_jwk")?,
                    sealed: get(row, T_KEYS, "sealed")?,
                    created_at: Millis(get(row, T_KEYS, "created_at")?),
                })
            })
            .collect()
    }

    /// Adds a signing key; `false` if one with this `kid` exists (nothing changes then).
    pub async fn add_signing_key(&self, key: &SigningKeyRow) -> Result<bool, Error> {
        const OP: &str = "add_signing_key";
        let done = sqlx::query(
            "INSERT INTO signing_keys (kid, alg, public_jwk, sealed, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kid) DO NOTHING",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.public_jwk)
        .bind(key.sealed.as_slice())
        .bind(key.created_at.0)
        .execute(&self.pool)
        .await
        .map_err(query(OP))?;
        Ok(done.rows_affected() == 1)
    }
}
