//! The `gyre` command-line binary. It parses arguments and wires the crates together;
//! the work happens in the libraries.

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

mod config_cmd;
mod local;

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
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
