//! `gyre local execute`: compiles the config of the git repository at hand and runs one
//! job or a whole workflow on this machine, with the executors the agents use.
//!
//! Workflows run job by job in `requires` order; `requires` statuses and branch/tag
//! filters are honoured, approval jobs are approved with a note, caches and workspaces
//! live in a local data directory, parallel jobs run their nodes one after the other.

use crate::config_cmd::{Input, compile_input};
use anyhow::{Context, bail};
use gyre_config::plan::{self, InstanceKind, JobInstance, RequiredStatus};
use gyre_config::yaml::Value;
use gyre_executor::{
    Executor, ExecutorConfig, JobNetwork, LogChunk, LogSink, StepStatus, TaskStatus,
};
use gyre_protocol::{CheckoutSource, EnvSource, EnvVar, JobInfo, NodeInfo, TaskSpec};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Arguments of `gyre local execute`.
#[derive(clap::Args)]
pub struct LocalArgs {
    /// The config file (default: .circleci/config.yml of the repository).
    #[arg(long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run this job alone (a workflow job name, or a job of `jobs:`).
    #[arg(long, conflicts_with = "workflow")]
    job: Option<String>,
    /// Run this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// An environment variable for the jobs, like a project variable (masked in output).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// A directory of orbs (see `gyre config process --help`).
    #[arg(long, value_name = "DIR")]
    orb_dir: Option<PathBuf>,
    /// Pipeline parameters as a JSON object.
    #[arg(long, value_name = "JSON")]
    pipeline_parameters: Option<String>,
    /// Where caches, workspaces, artifacts and test results are kept
    /// (default: ~/.cache/gyre/local).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Network of Docker jobs: none (default), host, default, or a network name.
    #[arg(long, value_name = "NETWORK", default_value = "none")]
    job_network: String,
    /// The static in-job `circleci` helper (default: $GYRE_HELPER, else `circleci` next to
    /// the gyre binary).
    #[arg(long, value_name = "PATH")]
    helper: Option<PathBuf>,
    #[command(flatten)]
    executor: crate::executor_args::ExecutorArgs,
}

/// How a job of the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failed,
    NotRun,
    /// Filtered out for this branch or tag.
    Skipped,
}

pub fn execute(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let repo = git(Path::new("."), &["rev-parse", "--show-toplevel"]).context(
        "gyre local execute runs in a git repository (git rev-parse --show-toplevel failed)",
    )?;
    let repo = PathBuf::from(repo);
    let revision =
        git(&repo, &["rev-parse", "HEAD"]).context("the repository has no commit yet")?;
    let branch = git(&repo, &["rev-parse", "--abbrev-ref", "HEAD"])
        .ok()
        .filter(|b| b != "HEAD");
    let tag = git(&repo, &["describe", "--tags", "--exact-match"]).ok();
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| repo.join(".circleci/config.yml"));
    let input = Input {
        file: config,
        orb_dir: args.orb_dir.clone(),
        pipeline_parameters: args.pipeline_parameters.clone(),
        pipeline_values: None,
        allow_missing_orbs: false,
    };
    let out = compile_input(&input)?;
    eprint!("{}", out.render_diagnostics());
    if out.has_errors() {
        return Ok(ExitCode::from(1));
    }
    let plan = out.plan.context("no plan from a config that compiled")?;
    let env = parse_env(&args.env)?;
    let helper = find_helper(args.helper.as_deref())?;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let network = match args.job_network.as_str() {
        "none" => JobNetwork::None,
        "host" => JobNetwork::Host,
        "default" => JobNetwork::Default,
        name => JobNetwork::Named(name.to_string()),
    };
    let run_id = format!(
        "local-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let ctx = RunContext {
        plan: &plan,
        env,
        checkout: CheckoutSource {
            repository: repo.display().to_string(),
            revision: revision.clone(),
        },
        branch: branch.clone(),
        tag: tag.clone(),
        config: ExecutorConfig::new(&data_dir, helper)
            .job_network(network)
            .job_settings(args.executor.settings()),
        run_id,
        project: repo
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };

    // What to run: a job, a workflow, or the only workflow.
    let (title, instances) = select(&plan, args.job.as_deref(), args.workflow.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("cannot start the async runtime")?;
    println!(
        "gyre local execute: {title} at {} ({})",
        short(&revision),
        branch.as_deref().or(tag.as_deref()).unwrap_or("detached")
    );
    // Ctrl-C (or SIGTERM) drops the run: containers are removed and machine steps killed
    // on the way out (the executors clean up when their task is dropped).
    let results = runtime.block_on(async {
        tokio::select! {
            results = run_instances(&ctx, &instances) => Some(results),
            () = interrupted() => None,
        }
    });
    let Some(results) = results else {
        drop(runtime);
        eprintln!("\ngyre local execute: interrupted; the job's containers and processes are gone");
        return Ok(ExitCode::from(130));
    };
    let results = results?;
    println!("\nSummary:");
    let mut ok = true;
    for (name, outcome, secs) in &results {
        let word = match outcome {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::NotRun => "not run",
            Outcome::Skipped => "skipped (filtered out)",
        };
        if matches!(outcome, Outcome::Failed | Outcome::NotRun) {
            ok = false;
        }
        println!("  {name:<40} {word:<24} {secs:>7.1}s");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        // No handler could be installed: the default action (exit) stays.
        _ => std::future::pending().await,
    }
}

struct RunContext<'p> {
    plan: &'p plan::Plan,
    env: Vec<EnvVar>,
    checkout: CheckoutSource,
    branch: Option<String>,
    tag: Option<String>,
    config: ExecutorConfig,
    run_id: String,
    project: String,
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!("git {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn parse_env(items: &[String]) -> anyhow::Result<Vec<EnvVar>> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("-e {kv}: expected KEY=VALUE"))?;
            if !gyre_config::params::is_env_var_name(k) {
                bail!("-e {kv}: '{k}' is not a valid environment variable name");
            }
            Ok(EnvVar {
                name: k.to_string(),
                value: v.to_string(),
                secret: true,
                source: EnvSource::Project,
            })
        })
        .collect()
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(x).join("gyre/local"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".cache/gyre/local"))
}

/// The static in-job helper: `--helper`, `$GYRE_HELPER`, or `circleci` beside `gyre`.
pub(crate) fn find_helper(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidate = match (flag, std::env::var_os("GYRE_HELPER")) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => std::env::current_exe()
            .context("cannot locate the gyre binary")?
            .with_file_name("circleci"),
    };
    if !candidate.is_file() {
        bail!(
            "the in-job helper {} is missing. Build it (static) with scripts/build-helper.sh, \
             then pass --helper PATH or set GYRE_HELPER",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// The instances to run and a title for them.
fn select(
    plan: &plan::Plan,
    job: Option<&str>,
    workflow: Option<&str>,
) -> anyhow::Result<(String, Vec<JobInstance>)> {
    if let Some(job) = job {
        let found = plan
            .workflows
            .iter()
            .flat_map(|w| w.jobs.iter())
            .find(|i| i.name == job && i.job.is_some())
            .cloned()
            .or_else(|| {
                plan.jobs.contains_key(job).then(|| JobInstance {
                    name: job.to_string(),
                    job: Some(job.to_string()),
                    kind: InstanceKind::Build,
                    requires: Vec::new(),
                    filters: plan::Filters::None,
                    contexts: Vec::new(),
                    serial_group: None,
                    matrix_alias: None,
                })
            });
        let Some(mut inst) = found else {
            let names: Vec<&str> = plan.jobs.keys().map(String::as_str).collect();
            bail!("no job named '{job}'; jobs: {}", names.join(", "));
        };
        // One job alone: its requirements and filters do not apply.
        inst.requires.clear();
        inst.filters = plan::Filters::None;
        return Ok((format!("job '{job}'"), vec![inst]));
    }
    let runnable: Vec<&plan::Workflow> = plan
        .workflows
        .iter()
        .filter(|w| w.schedules.is_empty())
        .collect();
    let wf = match workflow {
        Some(name) => plan
            .workflows
            .iter()
            .find(|w| w.name == name)
            .with_context(|| {
                let names: Vec<&str> = plan.workflows.iter().map(|w| w.name.as_str()).collect();
                format!(
                    "no workflow named '{name}'; workflows: {}",
                    names.join(", ")
                )
            })?,
        None if runnable.len() == 1 => runnable[0],
        None => {
            let names: Vec<&str> = plan.workflows.iter().map(|w| w.name.as_str()).collect();
            bail!(
                "the config has {} workflows ({}): choose one with --workflow, or a job with --job",
                names.len(),
                names.join(", ")
            );
        }
    };
    Ok((format!("workflow '{}'", wf.name), wf.jobs.clone()))
}

/// Runs instances in `requires` order (they are already listed in a valid order or
/// are ordered here), returning `(name, outcome, seconds)` per instance.
async fn run_instances(
    ctx: &RunContext<'_>,
    instances: &[JobInstance],
) -> anyhow::Result<Vec<(String, Outcome, f64)>> {
    let mut done: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut results = Vec::new();
    let mut pending: Vec<&JobInstance> = instances.iter().collect();
    let mut build_num = 1u64;
    while !pending.is_empty() {
        let Some(pos) = pending
            .iter()
            .position(|i| i.requires.iter().all(|r| done.contains_key(&r.job)))
        else {
            bail!("the workflow's requires cannot be ordered");
        };
        let inst = pending.remove(pos);
        let lookup = &mut |p: &str| match p {
            "pipeline.git.branch" => ctx.branch.clone().map(Value::Str),
            "pipeline.git.tag" => ctx.tag.clone().map(Value::Str),
            _ => None,
        };
        let outcome;
        let started = Instant::now();
        if !inst
            .filters
            .allows(ctx.branch.as_deref(), ctx.tag.as_deref(), lookup)
        {
            outcome = Outcome::Skipped;
        } else if !requirements_met(inst, &done) {
            outcome = Outcome::NotRun;
        } else {
            outcome = match inst.kind {
                InstanceKind::Approval => {
                    println!(
                        "\n=== {}: approval job, approved automatically (local run)",
                        inst.name
                    );
                    Outcome::Success
                }
                InstanceKind::NoOp => Outcome::Success,
                InstanceKind::Build => {
                    let job = inst
                        .job
                        .as_ref()
                        .and_then(|j| ctx.plan.jobs.get(j))
                        .with_context(|| format!("job '{}' has no body", inst.name))?;
                    let upstream =
                        (instances.len() > 1).then(|| upstream_of(instances, &inst.name));
                    let o = run_job(ctx, &inst.name, job, build_num, upstream).await?;
                    build_num += 1;
                    o
                }
            };
        }
        done.insert(inst.name.clone(), outcome);
        results.push((inst.name.clone(), outcome, started.elapsed().as_secs_f64()));
    }
    Ok(results)
}

/// Spec §5.3: every upstream must end in an allowed status; upstreams filtered out do
/// not count, unless all of them were filtered out.
fn requirements_met(inst: &JobInstance, done: &BTreeMap<String, Outcome>) -> bool {
    if inst.requires.is_empty() {
        return true;
    }
    let mut any_ran = false;
    for r in &inst.requires {
        let status = match done.get(&r.job) {
            Some(Outcome::Skipped) | None => continue,
            Some(Outcome::Success) => RequiredStatus::Success,
            Some(Outcome::Failed) => RequiredStatus::Failed,
            Some(Outcome::NotRun) => RequiredStatus::NotRun,
        };
        any_ran = true;
        if !r.statuses.contains(&status) {
            return false;
        }
    }
    any_ran
}

/// The transitive upstream of a job in the workflow: whose workspace layers it sees.
fn upstream_of(instances: &[JobInstance], name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        if let Some(inst) = instances.iter().find(|i| i.name == n) {
            for r in &inst.requires {
                if !out.contains(&r.job) {
                    out.push(r.job.clone());
                    todo.push(r.job.clone());
                }
            }
        }
    }
    out
}

async fn run_job(
    ctx: &RunContext<'_>,
    name: &str,
    job: &plan::Job,
    build_num: u64,
    upstream: Option<Vec<String>>,
) -> anyhow::Result<Outcome> {
    let total = job.parallelism.max(1);
    let mut outcome = Outcome::Success;
    for index in 0..total {
        let task = match task_spec(
            ctx,
            name,
            job,
            build_num,
            NodeInfo { index, total },
            upstream.clone(),
        ) {
            Ok(t) => t,
            Err(why) => {
                println!("\n=== {name}: cannot run locally: {why}");
                return Ok(Outcome::Failed);
            }
        };
        let node = if total > 1 {
            format!(" (node {}/{total})", index + 1)
        } else {
            String::new()
        };
        println!("\n=== {name}{node}");
        let executor = match Executor::for_task(&task, ctx.config.clone()).await {
            Ok(e) => e,
            Err(err) => {
                println!("    {name}: {err}");
                return Ok(Outcome::Failed);
            }
        };
        let mut sink = ConsoleSink::default();
        match executor.run(&task, &mut sink).await {
            Ok(o) if o.status == TaskStatus::Success => {}
            Ok(o) => {
                if let Some(m) = o.message {
                    println!("    {name}: {m}");
                }
                outcome = Outcome::Failed;
            }
            Err(err) => {
                println!("    {name}: {err}");
                outcome = Outcome::Failed;
            }
        }
    }
    Ok(outcome)
}

/// The task for one node of a job.
fn task_spec(
    ctx: &RunContext<'_>,
    name: &str,
    job: &plan::Job,
    build_num: u64,
    node: NodeInfo,
    workspace_upstream: Option<Vec<String>>,
) -> Result<TaskSpec, String> {
    let info = JobInfo {
        name: name.to_string(),
        branch: ctx.branch.clone(),
        tag: ctx.tag.clone(),
        sha1: ctx.checkout.revision.clone(),
        build_num,
        workflow_id: ctx.run_id.clone(),
        workflow_job_id: format!("{}-{build_num}", ctx.run_id),
        workflow_workspace_id: ctx.run_id.clone(),
        pipeline_id: ctx.run_id.clone(),
        project_reponame: ctx.project.clone(),
        repository_url: ctx.checkout.repository.clone(),
        workspace_upstream,
        ..JobInfo::default()
    };
    gyre_core::spec::task_spec(job, info, &ctx.env, Some(ctx.checkout.clone()), node)
}

/// Prints step headers, live output and step results on the terminal.
#[derive(Default)]
struct ConsoleSink {
    started: Option<Instant>,
}

impl LogSink for ConsoleSink {
    fn step_started(&mut self, _step: usize, name: &str, header: Option<&str>) {
        self.started = Some(Instant::now());
        println!("--> {name}");
        if let Some(h) = header {
            println!("{h}");
        }
    }

    fn chunk(&mut self, chunk: LogChunk) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&chunk.bytes);
        let _ = out.flush();
    }

    fn step_finished(&mut self, _step: usize, status: StepStatus) {
        let secs = self
            .started
            .take()
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let word = match status {
            StepStatus::Success => "success",
            StepStatus::Failed => "FAILED",
            StepStatus::Skipped => "skipped",
            StepStatus::Background => "running in the background",
        };
        println!("<-- {word} ({secs:.1}s)");
    }
}
