//! Agents: registration, heartbeats, draining, and which are down.

use crate::error::{is_unique_violation, query};
use crate::{Error, Millis, Store, get, get_parsed, get_u64, to_i64};
use gyre_core::AgentId;
use sqlx::any::AnyRow;
use std::fmt;
use std::str::FromStr;

/// Whether an agent takes work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentStatus {
    /// Heartbeating and taking work.
    Active,
    /// Finishing what it runs; [`Store::claim_task`] gives it nothing new.
    Draining,
    /// Missed its heartbeats ([`Store::mark_agents_down`]); a heartbeat revives it.
    Down,
}

impl AgentStatus {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Draining => "draining",
            AgentStatus::Down => "down",
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(AgentStatus::Active),
            "draining" => Ok(AgentStatus::Draining),
            "down" => Ok(AgentStatus::Down),
            _ => Err(format!("unknown agent status '{s}'")),
        }
    }
}

/// A registered agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub status: AgentStatus,
    pub registered_at: Millis,
    pub last_heartbeat: Millis,
}

const AGENT_COLS: &str = "id, name, status, registered_at, last_heartbeat";

impl Store {
    /// Registers an active agent. `token_hash` is a hash of its token (the store never
    /// sees tokens). [`Error::AgentExists`] if the name or the token hash is taken.
    pub async fn register_agent(
        &self,
        name: &str,
        token_hash: &str,
        now: Millis,
    ) -> Result<Agent, Error> {
        const OP: &str = "register_agent";
        let mut tx = self.begin_write(OP).await?;
        let id = Store::next_id(&mut tx, "agents", OP).await?;
        let inserted = sqlx::query(
            "INSERT INTO agents (id, name, token_hash, status, registered_at, last_heartbeat) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(to_i64("agent id", id)?)
        .bind(name)
        .bind(token_hash)
        .bind(AgentStatus::Active.as_str())
        .bind(now.0)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(Error::AgentExists(name.to_string())),
            other => other.map_err(query(OP))?,
        };
        tx.commit().await.map_err(query(OP))?;
        Ok(Agent {
            id: AgentId(id),
            name: name.to_string(),
            status: AgentStatus::Active,
            registered_at: now,
            last_heartbeat: now,
        })
    }

    /// The agent whose token hashes to `token_hash`, if any.
    pub async fn agent_by_token(&self, token_hash: &str) -> Result<Option<Agent>, Error> {
        let sql = format!("SELECT {AGENT_COLS} FROM agents WHERE token_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(query("agent_by_token"))?;
        row.as_ref().map(agent_from_row).transpose()
    }

    /// Records a heartbeat. A `down` agent becomes `active` again; a draining one stays
    /// draining. Returns the agent's status, `None` for an unknown agent.
    pub async fn heartbeat(
        &self,
        agent: AgentId,
        now: Millis,
    ) -> Result<Option<AgentStatus>, Error> {
        let row = sqlx::query(
            "UPDATE agents SET last_heartbeat = $2, \
             status = CASE WHEN status = 'down' THEN 'active' ELSE status END \
             WHERE id = $1 RETURNING status",
        )
        .bind(to_i64("agent id", agent.0)?)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(query("heartbeat"))?;
        row.as_ref()
            .map(|r| get_parsed(r, "agents", "status"))
            .transpose()
    }

    /// Puts an agent in `draining`: it takes no new tasks. `false` for an unknown agent.
    pub async fn drain_agent(&self, agent: AgentId) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE agents SET status = 'draining' WHERE id = $1")
            .bind(to_i64("agent id", agent.0)?)
            .execute(&self.pool)
            .await
            .map_err(query("drain_agent"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks `down` every active agent whose last heartbeat is before `stale_before`,
    /// and returns them, sorted.
    pub async fn mark_agents_down(&self, stale_before: Millis) -> Result<Vec<AgentId>, Error> {
        let rows = sqlx::query(
            "UPDATE agents SET status = 'down' WHERE status = 'active' \
             AND last_heartbeat < $1 RETURNING id",
        )
        .bind(stale_before.0)
        .fetch_all(&self.pool)
        .await
        .map_err(query("mark_agents_down"))?;
        let mut ids = rows
            .iter()
            .map(|r| get_u64(r, "agents", "id").map(AgentId))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }

    /// Every agent, by id.
    pub async fn agents(&self) -> Result<Vec<Agent>, Error> {
        let sql = format!("SELECT {AGENT_COLS} FROM agents ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(query("agents"))?;
        rows.iter().map(agent_from_row).collect()
    }
}

fn agent_from_row(row: &AnyRow) -> Result<Agent, Error> {
    const T: &str = "agents";
    Ok(Agent {
        id: AgentId(get_u64(row, T, "id")?),
        name: get(row, T, "name")?,
        status: get_parsed(row, T, "status")?,
        registered_at: Millis(get(row, T, "registered_at")?),
        last_heartbeat: Millis(get(row, T, "last_heartbeat")?),
    })
}
