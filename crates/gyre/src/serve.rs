//! `gyre up`, `gyre server`, `gyre agent`, `gyre project add` and `gyre admin nodes`.

use anyhow::{Context, bail};
use gyre_agent::{AgentConfig, JobNetwork};
use gyre_server::{App, ServerConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Where the server keeps its state.
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// Data directory: SQLite database, blobs, repository mirrors, admin token
    /// (default: $XDG_DATA_HOME/gyre or ~/.local/share/gyre).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Database URL: sqlite:PATH or postgres://… (default: SQLite in the data directory).
    #[arg(long, value_name = "URL", env = "GYRE_DATABASE_URL")]
    database: Option<String>,
    /// Object storage URL: file:///dir or s3://bucket/prefix?endpoint=… (default: the
    /// data directory's blobs/).
    #[arg(long, value_name = "URL", env = "GYRE_BLOBS_URL")]
    blobs: Option<String>,
    /// The URL users and agents reach this server at (default: http://<listen>).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// A directory of orbs configs may import.
    #[arg(long, value_name = "DIR")]
    orb_dir: Option<PathBuf>,
    /// Task lease length in seconds (a task whose agent stops renewing for this long is
    /// `infrastructure_fail` and retried once).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    lease_secs: u64,
    /// How often live log readers poll SQL when not woken (tests).
    #[arg(long, value_name = "SECS", default_value_t = 2, hide = true)]
    live_poll_secs: u64,
    /// Seal secrets with Vault's or OpenBao's transit engine at this address instead of
    /// the local master key (the data directory's master-key file).
    #[arg(long, value_name = "URL", env = "GYRE_VAULT_ADDR")]
    vault_addr: Option<String>,
    /// Token for --vault-addr.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "VAULT_TOKEN",
        hide_env_values = true
    )]
    vault_token: Option<String>,
    /// Transit key name (created when missing).
    #[arg(long, value_name = "NAME", default_value = "gyre")]
    vault_transit_key: String,
    /// Mount path of the transit engine.
    #[arg(long, value_name = "PATH", default_value = "transit")]
    vault_transit_mount: String,
    /// Let the web UI serve artifacts of unsafe types (HTML, CSS, JavaScript, XML) as
    /// themselves instead of as text/plain. Only when every job author is trusted.
    #[arg(long)]
    unsafe_artifacts: bool,
}

/// The agent side.
#[derive(clap::Args, Clone)]
pub struct AgentArgs {
    /// Network of Docker jobs: none (default), host, default, or a network name.
    #[arg(long, value_name = "NETWORK", default_value = "none")]
    job_network: String,
    /// The static in-job `circleci` helper (default: $GYRE_HELPER, else `circleci` next
    /// to the gyre binary).
    #[arg(long, value_name = "PATH")]
    helper: Option<PathBuf>,
    /// Tasks run at once.
    #[arg(long, value_name = "N", default_value_t = 1)]
    concurrency: usize,
    #[command(flatten)]
    executor: crate::executor_args::ExecutorArgs,
}

#[derive(clap::Args)]
pub struct AgentCmd {
    /// The server's URL.
    #[arg(long, env = "GYRE_SERVER")]
    server: String,
    /// The admin token (registers the agent).
    #[arg(long, env = "GYRE_TOKEN", hide_env_values = true)]
    token: String,
    /// This agent's unique name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Resource classes to run (default: docker when a Docker engine answers, and machine).
    #[arg(long = "resource-class", value_name = "CLASS")]
    resource_classes: Vec<String>,
    /// Working directory for temporary files.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    #[command(flatten)]
    agent: AgentArgs,
}

/// How CLI commands reach a server.
#[derive(clap::Args)]
pub struct Remote {
    /// The server's URL (default: $GYRE_SERVER, else http://127.0.0.1:8080).
    #[arg(
        long,
        env = "GYRE_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// API token (default: $GYRE_TOKEN, else the admin token `gyre up` saved).
    #[arg(long, env = "GYRE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(clap::Args)]
pub struct ProjectAdd {
    /// Project slug: gh/<org>/<repo>.
    slug: String,
    /// Repository URL gyre fetches from: https, ssh, a local path or file://.
    #[arg(long = "repo", value_name = "URL")]
    repo: String,
    #[arg(long, value_name = "BRANCH", default_value = "main")]
    default_branch: String,
    /// Secret that webhooks (GitHub, generic push) are signed with.
    #[arg(long, value_name = "SECRET")]
    webhook_secret: Option<String>,
    /// Build pull requests from forks (as branch `pull/<n>`), without the project's
    /// environment variables unless --forks-receive-secrets.
    #[arg(long)]
    build_fork_prs: bool,
    /// Give builds of forked pull requests the project's environment variables.
    #[arg(long, requires = "build_fork_prs")]
    forks_receive_secrets: bool,
    /// Auto-cancel redundant workflows: a new pipeline on a branch other than the
    /// default one cancels the running workflows of older pipelines on that branch.
    #[arg(long)]
    autocancel: bool,
    /// Only build pull requests: pushes to branches other than the default one are built
    /// only when the branch has an open pull request (GitHub).
    #[arg(long)]
    build_prs_only: bool,
    #[command(flatten)]
    remote: Remote,
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(x).join("gyre"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/gyre"))
}

/// Writes `content` to `path` readable by the owner only.
fn write_secret(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

/// The admin token: $GYRE_ADMIN_TOKEN, else the one saved in the data directory, else a
/// new one (saved, 0600, and printed once).
fn admin_token(data_dir: &Path) -> anyhow::Result<(String, bool)> {
    if let Ok(t) = std::env::var("GYRE_ADMIN_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok((t.trim().to_string(), false));
    }
    let path = data_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok((t.trim().to_string(), false));
    }
    let token = gyre_server::auth::new_token();
    write_secret(&path, &token)?;
    Ok((token, true))
}

struct Started {
    app: std::sync::Arc<App>,
    listener: tokio::net::TcpListener,
    url: String,
    token: String,
    new_token: bool,
    data_dir: PathBuf,
}

async fn start_server(args: &ServerArgs) -> anyhow::Result<Started> {
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let (token, new_token) = admin_token(&data_dir)?;
    let db = match &args.database {
        Some(u) => u.clone(),
        None => format!("sqlite:{}?mode=rwc", data_dir.join("gyre.db").display()),
    };
    let store = gyre_store::Store::connect(&db)
        .await
        .with_context(|| format!("opening the database {}", redact(&db)))?;
    store.migrate().await.context("migrating the database")?;
    let blobs_url = match &args.blobs {
        Some(u) => u.clone(),
        None => format!("file://{}", data_dir.join("blobs").display()),
    };
    let blobs = gyre_blob::BlobStore::open(&blobs_url)
        .with_context(|| format!("opening object storage {}", redact(&blobs_url)))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    let secrets = match &args.vault_addr {
        None => gyre_secrets::Secrets::local(&data_dir.join("master-key"))
            .context("opening the local master key")?,
        Some(addr) => {
            let token = args
                .vault_token
                .as_deref()
                .context("--vault-addr needs a token: --vault-token or VAULT_TOKEN")?;
            let s = gyre_secrets::Secrets::transit(addr, token, &args.vault_transit_key)
                .and_then(|s| s.with_mount(&args.vault_transit_mount))
                .context("configuring Vault transit")?;
            s.ensure_key()
                .await
                .context("checking the Vault transit key")?;
            s
        }
    };
    let mut config = ServerConfig::new(token.clone(), &data_dir, url.clone());
    config.secrets = Some(secrets);
    config.orb_dir = args.orb_dir.clone();
    config.lease = Duration::from_secs(args.lease_secs.max(1));
    config.live_poll = Duration::from_secs(args.live_poll_secs.max(1));
    config.unsafe_artifacts = args.unsafe_artifacts;
    let app = App::new(config, store, blobs);
    Ok(Started {
        app,
        listener,
        url,
        token,
        new_token,
        data_dir,
    })
}

/// What seals secrets, for the start-up banner.
fn secrets_of(app: &App) -> String {
    app.config
        .secrets
        .as_ref()
        .map_or_else(|| "nothing".to_string(), gyre_secrets::Secrets::describe)
}

/// A URL without its password.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn network(name: &str) -> JobNetwork {
    match name {
        "none" => JobNetwork::None,
        "host" => JobNetwork::Host,
        "default" => JobNetwork::Default,
        other => JobNetwork::Named(other.to_string()),
    }
}

async fn docker_answers() -> bool {
    let out = tokio::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    matches!(tokio::time::timeout(Duration::from_secs(5), out).await, Ok(Ok(s)) if s.success())
}

async fn default_classes() -> (Vec<String>, Option<&'static str>) {
    if docker_answers().await {
        (vec!["docker".into(), "machine".into()], None)
    } else {
        (
            vec!["machine".into()],
            Some("no Docker engine answers: running machine jobs only (Docker jobs stay queued)"),
        )
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (systemd, docker stop).
async fn ctrl_c() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `gyre up`: server + embedded agent, SQLite, local blobs, zero config.
pub fn up(server: ServerArgs, agent: AgentArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let s = start_server(&server).await?;
        let helper = crate::local::find_helper(agent.helper.as_deref())?;
        let (classes, note) = default_classes().await;
        println!("gyre is up at {}", s.url);
        println!("  web UI: {}/ (sign in with the admin token)", s.url);
        println!("  data directory: {}", s.data_dir.display());
        if s.new_token {
            println!(
                "  admin token (shown once; saved in {}/admin-token):",
                s.data_dir.display()
            );
            println!("    {}", s.token);
        } else {
            println!(
                "  admin token: $GYRE_ADMIN_TOKEN or {}/admin-token",
                s.data_dir.display()
            );
        }
        println!("  secrets: sealed with {}", secrets_of(&s.app));
        if let Some(n) = note {
            println!("  note: {n}");
        }
        println!("  agent: built in, resource classes {}", classes.join(", "));
        println!("Add a project:  gyre project add gh/<org>/<repo> --repo <git URL or path>");
        // The agent stops first (its running tasks finish and report to the server),
        // then the server.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (server_stop_tx, server_stop_rx) = tokio::sync::watch::channel(false);
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let server_task = tokio::spawn(gyre_server::serve(
            s.app.clone(),
            s.listener,
            wait(server_stop_rx),
        ));
        let config = AgentConfig::new(
            s.url.clone(),
            s.token.clone(),
            "local",
            s.data_dir.join("agent"),
            helper,
        )
        .resource_classes(classes)
        .job_network(network(&agent.job_network))
        .max_concurrent_tasks(agent.concurrency)
        .job_settings(agent.executor.settings());
        let agent_task = tokio::spawn(gyre_agent::run(config, wait(stop_rx.clone())));
        ctrl_c().await;
        println!("shutting down: running tasks finish first (Ctrl-C again to stop now)");
        let _ = stop_tx.send(true);
        tokio::select! {
            r = agent_task => { if let Ok(Err(e)) = r { eprintln!("agent: {e}"); } }
            _ = ctrl_c() => {}
        }
        let _ = server_stop_tx.send(true);
        let _ = server_task.await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `gyre server`: the server alone (agents connect with `gyre agent`).
pub fn server(server: ServerArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let s = start_server(&server).await?;
        println!("gyre server at {}", s.url);
        if s.new_token {
            println!(
                "  admin token (shown once; saved in {}/admin-token):",
                s.data_dir.display()
            );
            println!("    {}", s.token);
        }
        println!("  secrets: sealed with {}", secrets_of(&s.app));
        gyre_server::serve(s.app, s.listener, ctrl_c()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `gyre agent`: runs tasks for a server.
pub fn agent(cmd: AgentCmd) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let helper = crate::local::find_helper(cmd.agent.helper.as_deref())?;
        let classes = if cmd.resource_classes.is_empty() {
            let (c, note) = default_classes().await;
            if let Some(n) = note {
                eprintln!("note: {n}");
            }
            c
        } else {
            cmd.resource_classes.clone()
        };
        let name = match cmd.name {
            Some(n) => n,
            None => std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "agent".into()),
        };
        let work_dir = match cmd.work_dir {
            Some(d) => d,
            None => std::env::temp_dir().join(format!("gyre-agent-{name}")),
        };
        let config = AgentConfig::new(
            cmd.server.trim_end_matches('/'),
            cmd.token,
            name,
            work_dir,
            helper,
        )
        .resource_classes(classes)
        .job_network(network(&cmd.agent.job_network))
        .max_concurrent_tasks(cmd.agent.concurrency)
        .job_settings(cmd.agent.executor.settings());
        // First signal: take no more tasks, let running ones finish. Second: stop now
        // (dropping the agent removes its containers and kills its steps).
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let agent = gyre_agent::run(config, async {
            let _ = stop_rx.await;
        });
        tokio::pin!(agent);
        tokio::select! {
            r = &mut agent => { r?; return Ok(ExitCode::SUCCESS); }
            () = ctrl_c() => {}
        }
        println!("shutting down: running tasks finish first (Ctrl-C again to stop now)");
        let _ = stop_tx.send(());
        tokio::select! {
            r = &mut agent => r?,
            () = ctrl_c() => println!("stopping now"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn remote_token(remote: &Remote) -> anyhow::Result<String> {
    if let Some(t) = &remote.token {
        return Ok(t.clone());
    }
    let path = default_data_dir()?.join("admin-token");
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .with_context(|| {
            format!(
                "no --token or $GYRE_TOKEN, and no {} to read",
                path.display()
            )
        })
}

async fn call(
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let token = remote_token(remote)?;
    let url = format!("{}{path}", remote.server.trim_end_matches('/'));
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .header("Circle-Token", token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let json: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let msg = json["message"].as_str().unwrap_or("no message");
        bail!("{status}: {msg}");
    }
    Ok(json)
}

/// `gyre project add`.
pub fn project_add(p: ProjectAdd) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let body = serde_json::json!({
            "slug": p.slug, "repo_url": p.repo, "default_branch": p.default_branch,
            "webhook_secret": p.webhook_secret,
            "settings": {"build_fork_prs": p.build_fork_prs,
                         "forks_receive_secret_env_vars": p.forks_receive_secrets,
                         "autocancel_builds": p.autocancel,
                         "build_prs_only": p.build_prs_only},
        });
        let out = call(&p.remote, reqwest::Method::POST, "/api/gyre/v1/projects", Some(body)).await?;
        let slug = out["slug"].as_str().unwrap_or_default();
        println!("added {slug}");
        let base = p.remote.server.trim_end_matches('/');
        println!("  trigger a pipeline: curl -X POST -H \"Circle-Token: $GYRE_TOKEN\" {base}/api/v2/project/{slug}/pipeline");
        println!("  GitHub webhook URL: {base}/hooks/github (content type application/json, your secret)");
        println!("  generic push hook:  {base}/hooks/push/{slug}");
        Ok(ExitCode::SUCCESS)
    })
}

/// `gyre admin nodes [drain ID]`.
pub fn nodes(remote: Remote, drain: Option<u64>) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        if let Some(id) = drain {
            let out = call(
                &remote,
                reqwest::Method::POST,
                &format!("/api/gyre/v1/agents/{id}/drain"),
                None,
            )
            .await?;
            println!("{}", out["message"].as_str().unwrap_or_default());
            return Ok(ExitCode::SUCCESS);
        }
        let out = call(&remote, reqwest::Method::GET, "/api/gyre/v1/agents", None).await?;
        println!(
            "{:<6} {:<24} {:<10} {:<26} RUNNING",
            "ID", "NAME", "STATUS", "LAST HEARTBEAT"
        );
        for a in out["items"].as_array().into_iter().flatten() {
            let running: Vec<&str> = a["running_tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .collect();
            println!(
                "{:<6} {:<24} {:<10} {:<26} {}",
                a["id"],
                a["name"].as_str().unwrap_or_default(),
                a["status"].as_str().unwrap_or_default(),
                a["last_heartbeat"].as_str().unwrap_or_default(),
                if running.is_empty() {
                    "-".to_string()
                } else {
                    running.join(" ")
                }
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What `gyre admin token` does.
pub enum TokenAction {
    Create { login: String },
    List,
    Revoke { id: String },
}

/// `gyre admin token create|list|revoke`.
pub fn tokens(remote: Remote, action: TokenAction) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let path = "/api/gyre/v1/tokens";
        match action {
            TokenAction::Create { login } => {
                let body = serde_json::json!({ "login": login });
                let out = call(&remote, reqwest::Method::POST, path, Some(body)).await?;
                println!(
                    "token {} for {} (shown once):",
                    out["id"].as_str().unwrap_or_default(),
                    login
                );
                println!("  {}", out["token"].as_str().unwrap_or_default());
            }
            TokenAction::List => {
                let out = call(&remote, reqwest::Method::GET, path, None).await?;
                println!("{:<18} {:<26} LOGIN", "ID", "CREATED");
                for t in out["items"].as_array().into_iter().flatten() {
                    println!(
                        "{:<18} {:<26} {}",
                        t["id"].as_str().unwrap_or_default(),
                        t["created_at"].as_str().unwrap_or_default(),
                        t["login"].as_str().unwrap_or_default()
                    );
                }
            }
            TokenAction::Revoke { id } => {
                let out = call(
                    &remote,
                    reqwest::Method::DELETE,
                    &format!("{path}/{id}"),
                    None,
                )
                .await?;
                println!("{}", out["message"].as_str().unwrap_or_default());
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `gyre admin user set LOGIN`: the password is the first line of stdin (never an
/// argument, which other users of the machine could read).
/// `gyre admin user list`.
pub fn list_users(remote: Remote) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let out = call(&remote, reqwest::Method::GET, "/api/gyre/v1/users", None).await?;
        println!("{:<26} LOGIN", "CREATED");
        for u in out["items"].as_array().into_iter().flatten() {
            println!(
                "{:<26} {}",
                u["created_at"].as_str().unwrap_or_default(),
                u["login"].as_str().unwrap_or_default()
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `gyre admin user delete LOGIN`.
pub fn delete_user(remote: Remote, login: String) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let path = format!("/api/gyre/v1/users/{login}");
        call(&remote, reqwest::Method::DELETE, &path, None).await?;
        println!("user {login} deleted; their web sessions have ended");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn set_user(remote: Remote, login: String) -> anyhow::Result<ExitCode> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    runtime()?.block_on(async move {
        let body = serde_json::json!({ "password": password });
        let path = format!("/api/gyre/v1/users/{login}");
        call(&remote, reqwest::Method::PUT, &path, Some(body)).await?;
        println!("user {login} can sign in to the web UI");
        Ok(ExitCode::SUCCESS)
    })
}
