//! Contexts: an organization's named sets of environment variables (values sealed).

use crate::error::query;
use crate::{Error, Millis, Store, get, get_u64, to_i64};
use sqlx::any::AnyRow;

/// A context's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextRow {
    pub id: u64,
    /// The owning organization, `<vcs>/<org>`.
    pub owner_slug: String,
    pub name: String,
    pub created_at: Millis,
}

/// A context's variable; `sealed` is what gyre-secrets made of the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextVarRow {
    pub name: String,
    pub sealed: Vec<u8>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

const T_CTX: &str = "contexts";
const T_VARS: &str = "context_env_vars";

fn context_row(row: &AnyRow) -> Result<ContextRow, Error> {
    Ok(ContextRow {
        id: get_u64(row, T_CTX, "id")?,
        owner_slug: get(row, T_CTX, "owner_slug")?,
        name: get(row, T_CTX, "name")?,
        created_at: Millis(get(row, T_CTX, "created_at")?),
    })
}

impl Store {
    /// Creates a context; `None` if the owner has one of that name.
    pub async fn create_context(
        &self,
        owner_slug: &str,
        name: &str,
        now: Millis,
    ) -> Result<Option<ContextRow>, Error> {
        const OP: &str = "create_context";
        let mut tx = self.begin_write(OP).await?;
        let taken = sqlx::query("SELECT id FROM contexts WHERE owner_slug = $1 AND name = $2")
            .bind(owner_slug)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query(OP))?;
        if taken.is_some() {
            return Ok(None);
        }
        let id = Store::next_id(&mut tx, "contexts", OP).await?;
        sqlx::query(
            "INSERT INTO contexts (id, owner_slug, name, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(to_i64("context id", id)?)
        .bind(owner_slug)
        .bind(name)
        .bind(now.0)
        .execute(&mut *tx)
        .await
        .map_err(query(OP))?;
        tx.commit().await.map_err(query(OP))?;
        Ok(Some(ContextRow {
            id,
            owner_slug: owner_slug.to_owned(),
            name: name.to_owned(),
            created_at: now,
        }))
    }

    /// The owner's contexts, by name.
    pub async fn contexts(&self, owner_slug: &str) -> Result<Vec<ContextRow>, Error> {
        let rows = sqlx::query(
            "SELECT id, owner_slug, name, created_at FROM contexts WHERE owner_slug = $1 \
             ORDER BY name",
        )
        .bind(owner_slug)
        .fetch_all(&self.pool)
        .await
        .map_err(query("contexts"))?;
        rows.iter().map(context_row).collect()
    }

    /// One context by id.
    pub async fn context(&self, id: u64) -> Result<Option<ContextRow>, Error> {
        let row =
            sqlx::query("SELECT id, owner_slug, name, created_at FROM contexts WHERE id = $1")
                .bind(to_i64("context id", id)?)
                .fetch_optional(&self.pool)
                .await
                .map_err(query("context"))?;
        row.as_ref().map(context_row).transpose()
    }

    /// Deletes a context and its variables; `false` if there was none.
    pub async fn delete_context(&self, id: u64) -> Result<bool, Error> {
        const OP: &str = "delete_context";
        let id = to_i64("context id", id)?;
        let mut tx = self.begin_write(OP).await?;
        sqlx::query("DELETE FROM context_env_vars WHERE context_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(query(OP))?;
        let done = sqlx::query("DELETE FROM contexts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(query(OP))?;
        tx.commit().await.map_err(query(OP))?;
        Ok(done.rows_affected() == 1)
    }

    /// A context's variables, by name.
    pub async fn context_env_vars(&self, context: u64) -> Result<Vec<ContextVarRow>, Error> {
        let rows = sqlx::query(
            "SELECT name, value, created_at, updated_at FROM context_env_vars \
             WHERE context_id = $1 ORDER BY name",
        )
        .bind(to_i64("context id", context)?)
        .fetch_all(&self.pool)
        .await
        .map_err(query("context_env_vars"))?;
        rows.iter()
            .map(|row| {
                Ok(ContextVarRow {
                    name: get(row, T_VARS, "name")?,
                    sealed: get(row, T_VARS, "value")?,
                    created_at: Millis(get(row, T_VARS, "created_at")?),
                    updated_at: Millis(get(row, T_VARS, "updated_at")?),
                })
            })
            .collect()
    }

    /// Adds or replaces a context's variable (a replaced one keeps its `created_at`);
    /// `false` if the context does not exist.
    pub async fn set_context_env_var(
        &self,
        context: u64,
        name: &str,
        sealed: &[u8],
        now: Millis,
    ) -> Result<bool, Error> {
        const OP: &str = "set_context_env_var";
        let context = to_i64("context id", context)?;
        let mut tx = self.begin_write(OP).await?;
        let exists = sqlx::query("SELECT id FROM contexts WHERE id = $1")
            .bind(context)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query(OP))?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO context_env_vars (context_id, name, value, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (context_id, name) DO UPDATE \
             SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(context)
        .bind(name)
        .bind(sealed)
        .bind(now.0)
        .execute(&mut *tx)
        .await
        .map_err(query(OP))?;
        tx.commit().await.map_err(query(OP))?;
        Ok(true)
    }

    /// Deletes a context's variable; `false` if there was none.
    pub async fn delete_context_env_var(&self, context: u64, name: &str) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM context_env_vars WHERE context_id = $1 AND name = $2")
            .bind(to_i64("context id", context)?)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(query("delete_context_env_var"))?;
        Ok(done.rows_affected() == 1)
    }
}
