//! Machine executor (§11.2): the same steps as host processes, through the same helper
//! (`circleci __agent`) run as a child process, in a fresh task directory.
//!
//! # Security
//! Steps run with the agent's own user and privileges on the host.

use std::process::Stdio;

use gyre_protocol::TaskSpec;
use tokio::sync::mpsc;

use crate::env::{EnvPaths, job_env};
use crate::logs::LogSink;
use crate::session::{Frame, FramePump, Session};
use crate::storage::{self, Target};
use crate::task::{Runner, resolve_path};
use crate::{Error, ExecutorConfig, TaskOutcome};

/// Host variables passed to machine steps (everything else is the job's own).
const HOST_VARS: &[&str] = &[
    "PATH", "LANG", "LC_ALL", "TERM", "USER", "LOGNAME", "SHELL", "TMPDIR",
];

/// Runs tasks on the host.
pub struct MachineExecutor {
    config: ExecutorConfig,
}

impl MachineExecutor {
    pub fn new(config: ExecutorConfig) -> MachineExecutor {
        MachineExecutor { config }
    }

    /// Runs `task`; see [`crate::Executor::run`]. Background steps are killed at the end.
    pub async fn run(&self, task: &TaskSpec, sink: &mut dyn LogSink) -> Result<TaskOutcome, Error> {
        let scratch = tempfile::Builder::new()
            .prefix("gyre-task-")
            .tempdir()
            .map_err(|e| Error::io("creating the task directory", e))?;
        let task_dir = scratch.path().join("task");
        let bin_dir = scratch.path().join("bin");
        let home = match &self.config.machine_home {
            Some(home) => home.clone(),
            None => scratch.path().join("home"),
        };
        for dir in [&task_dir, &bin_dir, &home] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let helper = std::fs::canonicalize(&self.config.helper).map_err(|e| {
            Error::io(
                format!("finding the helper {}", self.config.helper.display()),
                e,
            )
        })?;
        for name in ["circleci", "circleci-agent"] {
            std::os::unix::fs::symlink(&helper, bin_dir.join(name))
                .map_err(|e| Error::io("linking the helper", e))?;
        }
        let to_str = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let (task_dir, bin_dir, home) = (to_str(&task_dir), to_str(&bin_dir), to_str(&home));

        let mut child = tokio::process::Command::new(&helper)
            .arg("__agent")
            .env_clear()
            .env("HOME", &home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Not in our process group: a terminal's Ctrl-C must not kill it before it
            // kills the steps (it does when its stdin closes, as we go).
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io(format!("starting the helper {}", helper.display()), e))?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Helper("the helper has no pipes".to_owned()));
        };
        // Heavy output arrives in rounds of up to 1 MiB: a pipe that holds one spares the
        // helper many blocked writes. Best effort.
        let _ = rustix::pipe::fcntl_setpipe_size(&output, 1 << 20);
        let (tx, rx) = mpsc::channel::<Result<Frame, Error>>(64);
        tokio::spawn(FramePump::new(tx).run(output, 1 << 20, "helper output"));
        let session = Session::start(Box::pin(input), rx).await?;
        let base: Vec<(String, String)> = HOST_VARS
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v)))
            .chain([("HOME".to_owned(), home.clone())])
            .collect();
        let bash_env = format!("{task_dir}/bash.env");
        let env = job_env(
            task,
            &base,
            &EnvPaths {
                task_dir: &task_dir,
                bash_env: &bash_env,
                home: &home,
                helper_bin_dir: &bin_dir,
            },
        );
        let working_dir = resolve_path(&home, &home, &task.working_directory);
        let owner = (session.hello.uid, session.hello.gid);
        storage::install_timings(
            &Target::Machine,
            &*self.config.storage,
            &task.job.name,
            &task_dir,
            owner,
        )
        .await?;
        let runner = Runner::new(
            task,
            &self.config,
            session,
            Target::Machine,
            sink,
            env,
            working_dir,
            task_dir,
        );
        let result = runner.run().await;
        let outcome = match result {
            Ok((outcome, session, _)) => {
                session.close().await;
                Ok(outcome)
            }
            Err(err) => Err(err),
        };
        // Stdin is closed (or dropped): the helper kills background steps and exits.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
        let _ = child.start_kill();
        drop(scratch);
        outcome
    }
}
