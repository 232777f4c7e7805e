//! The `gyre` command-line binary. It parses arguments and wires the crates together;
//! the work happens in the libraries.

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

mod config_cmd;
mod executor_args;
mod local;
mod serve;

#[derive(Parser)]
#[command(
    name = "gyre",
    version,
    about = "A self-hosted CI server that runs CircleCI configs unchanged"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and process CircleCI configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work with orbs.
    #[command(subcommand)]
    Orb(OrbCommand),
    /// Run jobs on this machine.
    #[command(subcommand)]
    Local(LocalCommand),
    /// Start gyre on this machine: server, built-in agent, SQLite, local storage.
    Up {
        #[command(flatten)]
        server: serve::ServerArgs,
        #[command(flatten)]
        agent: serve::AgentArgs,
    },
    /// Run the server alone (agents connect with `gyre agent`).
    Server {
        #[command(flatten)]
        server: serve::ServerArgs,
    },
    /// Run an agent that takes tasks from a server.
    Agent(serve::AgentCmd),
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Administer a server.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Add a project (its repository and webhook secret).
    Add(serve::ProjectAdd),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List agents (active, draining, down) and what they run; `drain ID` drains one.
    Nodes {
        #[command(subcommand)]
        action: Option<NodesAction>,
        #[command(flatten)]
        remote: serve::Remote,
    },
    /// Local users of the web UI: `user set LOGIN` reads the password from stdin.
    User {
        #[command(subcommand)]
        action: UserCommand,
        #[command(flatten)]
        remote: serve::Remote,
    },
    /// Personal API tokens: create one for a login (shown once), list, revoke.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
        #[command(flatten)]
        remote: serve::Remote,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a local user, or set a new password; the password is the first line of stdin.
    Set { login: String },
    /// List local users.
    List,
    /// Delete a local user (their web sessions end).
    Delete { login: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for LOGIN; it is printed once.
    Create { login: String },
    /// List tokens (ids and logins; never the tokens).
    List,
    /// Revoke the token with this id (or a unique prefix of at least 8 digits).
    Revoke { id: String },
}

#[derive(Subcommand)]
enum NodesAction {
    /// Stop giving an agent new tasks; it finishes what it runs.
    Drain { id: u64 },
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Run a job or a workflow of the repository's config, here, with Docker or on the host.
    Execute(local::LocalArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the processed config (orbs, parameters, matrices and commands expanded).
    Process {
        #[command(flatten)]
        input: config_cmd::Input,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
    },
    /// Check a config; exits 0 when it is valid, 1 when it is not.
    Validate {
        #[command(flatten)]
        input: config_cmd::Input,
    },
}

#[derive(Subcommand)]
enum OrbCommand {
    /// Pack an unpacked orb source tree (a directory holding `@orb.yml`, or its parent with `src/`).
    Pack {
        /// The orb source directory.
        dir: std::path::PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GYRE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(ConfigCommand::Process { input, format }) => {
            config_cmd::process(&input, format)
        }
        Command::Config(ConfigCommand::Validate { input }) => config_cmd::validate(&input),
        Command::Orb(OrbCommand::Pack { dir }) => config_cmd::pack(&dir),
        Command::Local(LocalCommand::Execute(args)) => local::execute(args),
        Command::Up { server, agent } => serve::up(server, agent),
        Command::Server { server } => serve::server(server),
        Command::Agent(cmd) => serve::agent(cmd),
        Command::Project(ProjectCommand::Add(p)) => serve::project_add(p),
        Command::Admin(AdminCommand::Nodes { action, remote }) => {
            serve::nodes(remote, action.map(|NodesAction::Drain { id }| id))
        }
        Command::Admin(AdminCommand::User { action, remote }) => match action {
            UserCommand::Set { login } => serve::set_user(remote, login),
            UserCommand::List => serve::list_users(remote),
            UserCommand::Delete { login } => serve::delete_user(remote, login),
        },
        Command::Admin(AdminCommand::Token { action, remote }) => {
            let action = match action {
                TokenCommand::Create { login } => serve::TokenAction::Create { login },
                TokenCommand::List => serve::TokenAction::List,
                TokenCommand::Revoke { id } => serve::TokenAction::Revoke { id },
            };
            serve::tokens(remote, action)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
