//! gyre-server: the HTTP server and its background loops.
//!
//! ```text
//! hooks (GitHub, generic push) ─┐
//! API v2 trigger ───────────────┼─► intake ─► store (pipelines, workflows, jobs, tasks)
//!                               │                 ▲
//! agents (claim/lease/events/finish) ─► orchestrate (gyre-core state machine, one tx)
//! readers (API v2, v1.1, SSE) ◄── store + blobs + live log hub
//! ```
//!
//! The server keeps no state of its own between requests beyond caches: everything is in
//! SQL and object storage, so a restart loses nothing that was acknowledged.

pub mod agent_api;
pub mod api;
pub mod auth;
pub mod contexts;
pub mod envvars;
pub mod error;
pub mod git;
pub mod github;
pub mod hooks;
pub mod ids;
pub mod intake;
pub mod logs;
pub mod oidc;
pub mod orchestrate;
pub mod tokens;
pub mod trigger;
pub mod ui;
pub mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use gyre_blob::BlobStore;
use gyre_store::{Millis, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Largest request body (webhooks, API); blob uploads from agents have their own limit.
pub const MAX_BODY: usize = 5 * 1024 * 1024;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The admin token: full access to the API and agent registration.
    pub admin_token: String,
    /// Where mirrors of project repositories are kept.
    pub data_dir: PathBuf,
    /// Orbs the compiler may import (`<ns>/<name>/<version>.yml`).
    pub orb_dir: Option<PathBuf>,
    /// The URL users and agents reach the server at (no trailing slash).
    pub public_url: String,
    /// How long a task lease lasts without renewal.
    pub lease: Duration,
    /// An agent that has not sent a heartbeat for this long is `down`.
    pub agent_timeout: Duration,
    /// Seals project environment variables at rest; without it they cannot be set.
    pub secrets: Option<gyre_secrets::Secrets>,
    /// How often a live log reader checks SQL for events without being woken (events
    /// stored by another replica wake it through PostgreSQL's NOTIFY at once).
    pub live_poll: Duration,
    /// Serve artifacts of unsafe types (HTML, CSS, JavaScript, XML) as themselves in the
    /// web UI. Default `false`: they are served as `text/plain`.
    ///
    /// # Security
    /// An HTML artifact rendered by the browser runs its scripts (in a sandbox, on
    /// gyre's origin); leave this off unless every job author is trusted.
    pub unsafe_artifacts: bool,
}

impl ServerConfig {
    pub fn new(admin_token: String, data_dir: impl Into<PathBuf>, public_url: String) -> Self {
        ServerConfig {
            admin_token,
            data_dir: data_dir.into(),
            orb_dir: None,
            public_url,
            lease: Duration::from_secs(30),
            agent_timeout: Duration::from_secs(60),
            secrets: None,
            live_poll: Duration::from_secs(2),
            unsafe_artifacts: false,
        }
    }
}

/// Shared state of all handlers.
pub struct App {
    pub config: ServerConfig,
    pub store: Store,
    pub blobs: BlobStore,
    pub mirrors: git::Mirrors,
    pub logs: logs::Hub,
    /// Woken when tasks are enqueued (long-polling claims wait on it).
    pub queue: Notify,
    /// Set when the server begins to shut down: long polls and live streams end, so
    /// the graceful shutdown does not wait on them.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// This replica's name in notifications to the others (random per process).
    pub instance: String,
    /// Signs jobs' OIDC tokens; loaded (or its key created) on first use.
    pub oidc: tokio::sync::OnceCell<oidc::Signer>,
}

impl App {
    pub fn new(config: ServerConfig, store: Store, blobs: BlobStore) -> Arc<App> {
        let mirrors = git::Mirrors::new(config.data_dir.join("git"));
        Arc::new(App {
            config,
            store,
            blobs,
            mirrors,
            logs: logs::Hub::default(),
            queue: Notify::new(),
            stopping: tokio::sync::watch::channel(false).0,
            instance: auth::new_token()[..12].to_string(),
            oidc: tokio::sync::OnceCell::new(),
        })
    }

    /// Resolves once the server is shutting down.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Task `key` has new log events or ended: wake the live readers of other replicas.
    pub async fn log_changed(&self, key: gyre_store::TaskKey) {
        if let Err(e) = self.store.notify_log(&self.instance, key).await {
            tracing::warn!(task = %key, error = %e, "notifying other replicas");
        }
    }

    /// Something changed in a workflow; `enqueued` when tasks were queued.
    pub fn changed(&self, enqueued: bool) {
        if enqueued {
            self.queue.notify_waiters();
        }
    }
}

/// Every route of the server.
pub fn router(app: Arc<App>) -> Router {
    let routes = Router::new()
        .merge(api::routes())
        .merge(envvars::routes())
        .merge(oidc::routes())
        .merge(contexts::routes())
        .merge(tokens::routes())
        .merge(hooks::routes())
        .merge(logs::routes())
        .merge(ui::routes())
        .merge(users::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .merge(agent_api::routes())
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(app);
    // Slugs are decoded before routing, so this layer wraps a router that only forwards.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(error::decode_slugs))
}

/// Background work: expire leases (tasks of dead agents become `infrastructure_fail`
/// and are retried), mark silent agents down. Runs until `shutdown` resolves.
pub async fn housekeeping(app: Arc<App>, shutdown: impl std::future::Future<Output = ()>) {
    let period = (app.config.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = housekeeping_once(&app).await {
            tracing::warn!(error = %e, "housekeeping");
        }
    }
}

async fn housekeeping_once(app: &App) -> Result<(), String> {
    let now = Millis::now();
    let expired = app
        .store
        .expire_leases(now)
        .await
        .map_err(|e| e.to_string())?;
    for key in expired {
        tracing::warn!(task = %key, "lease expired: infrastructure_fail");
        app.logs.end(key);
        app.log_changed(key).await;
        let event = gyre_core::Event::LeaseExpired { task: key.task };
        if let Err(e) = orchestrate::apply(app, key.workflow, vec![event]).await {
            tracing::error!(task = %key, error = %e, "applying an expired lease");
        }
    }
    let expired = app
        .store
        .expire_ui_sessions(now)
        .await
        .map_err(|e| e.to_string())?;
    if expired > 0 {
        tracing::debug!(expired, "web sessions expired");
    }
    let stale = Millis(now.0 - app.config.agent_timeout.as_millis() as i64);
    app.store
        .mark_agents_down(stale)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Serves on `listener` until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hk = tokio::spawn(housekeeping(app.clone(), {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }));
    let listener_task = tokio::spawn(logs::listen_to_replicas(app.clone()));
    let result = axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            app.stopping.send_replace(true);
        })
        .await;
    hk.abort();
    listener_task.abort();
    result
}
