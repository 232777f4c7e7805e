//! Pipeline intake: from a trigger (webhook, API, generic push hook) to stored workflows
//! with their first tasks queued. Fetch the project's mirror, resolve the revision, read
//! `.circleci/config.yml` there, compile it with the pipeline's parameters and values,
//! and create one workflow run per workflow. A config that cannot be fetched or compiled
//! gives an `errored` pipeline with CircleCI's error shape.

use crate::orchestrate::{self, JobTemplate};
use crate::{App, git, ids};
use gyre_config::plan::{InstanceKind, Plan};
use gyre_config::yaml::Value;
use gyre_config::{NoOrbs, Options, OrbSource};
use gyre_core::spec::{executor_type, queue_class, task_spec};
use gyre_core::{PipelineStatus, Trigger, WorkflowState};
use gyre_protocol::{CheckoutSource, JobInfo, NodeInfo};
use gyre_store::{Millis, NewJob, NewPipeline, Pipeline, PipelineDetails, Project};
use serde_json::json;
use std::collections::BTreeSet;

/// The config file read at the revision.
pub const CONFIG_PATH: &str = ".circleci/config.yml";

/// What started a pipeline.
#[derive(Clone, Debug, Default)]
pub struct TriggerRequest {
    /// `webhook` or `api` (CircleCI's `trigger.type`).
    pub kind: String,
    /// Login of whoever triggered it.
    pub actor: String,
    pub actor_avatar: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// The commit; when `None` the branch or tag (else the default branch) is resolved.
    pub revision: Option<String>,
    /// The commit before the push, when the trigger says (`pipeline.git.base_revision`).
    pub before: Option<String>,
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Commit message and author, when the trigger carries them.
    pub commit: Option<git::CommitInfo>,
    /// URLs of the open pull requests this build belongs to (`CIRCLE_PULL_REQUEST(S)`).
    pub pull_requests: Vec<String>,
    /// Set when building a pull request from a fork.
    pub fork_pull_request: Option<gyre_protocol::ForkPullRequest>,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The branch, tag or revision does not exist in the repository.
    #[error("{0}")]
    NotFound(String),
    /// The repository could not be fetched.
    #[error("cannot fetch the repository of {slug}: {source}")]
    Fetch { slug: String, source: git::GitError },
    #[error(transparent)]
    Store(#[from] gyre_store::Error),
    #[error(transparent)]
    Apply(#[from] orchestrate::ApplyError),
    /// A bug in gyre (a panic while compiling); logged, answered 500.
    #[error("{0}")]
    Internal(String),
}

/// Creates the pipeline and, when its config compiles, its workflows.
pub async fn start(
    app: &App,
    project: &Project,
    req: TriggerRequest,
) -> Result<Pipeline, IntakeError> {
    let dir = app
        .mirrors
        .fetch(project.id.0, &project.repo_url)
        .await
        .map_err(|source| IntakeError::Fetch {
            slug: project.slug.clone(),
            source,
        })?;
    let fetch_err = |source| IntakeError::Fetch {
        slug: project.slug.clone(),
        source,
    };
    let mut branch = req.branch.clone();
    let tag = req.tag.clone();
    if branch.is_none() && tag.is_none() {
        branch = Some(project.default_branch.clone());
    }
    let wanted = match (&req.revision, &branch, &tag) {
        (Some(rev), _, _) => rev.clone(),
        (None, _, Some(t)) => format!("refs/tags/{t}"),
        (None, Some(b), None) => format!("refs/heads/{b}"),
        (None, None, None) => unreachable!("a branch was set above"),
    };
    let Some(revision) = git::resolve(&dir, &wanted).await.map_err(fetch_err)? else {
        let what = match (&req.revision, &tag) {
            (Some(r), _) => format!("Revision {r} not found"),
            (None, Some(t)) => format!("Tag {t} not found"),
            (None, None) => format!("Branch not found: {}", branch.clone().unwrap_or_default()),
        };
        return Err(IntakeError::NotFound(what));
    };
    let commit = match req.commit.clone() {
        Some(c) => c,
        None => git::commit_info(&dir, &revision).await.map_err(fetch_err)?,
    };
    let now = Millis::now();
    let pipeline = app
        .store
        .create_pipeline(
            &NewPipeline {
                project: project.id,
                trigger_kind: &req.kind,
                trigger_actor: &req.actor,
                branch: branch.as_deref(),
                tag: tag.as_deref(),
                revision: &revision,
            },
            now,
        )
        .await?;
    let base_revision = match req
        .before
        .as_deref()
        .filter(|b| b.bytes().any(|c| c != b'0'))
    {
        Some(b) => b.to_string(),
        None => match &branch {
            Some(b) => app
                .store
                .previous_on_branch(project.id, b, pipeline.number)
                .await?
                .map(|p| p.revision)
                .unwrap_or_default(),
            None => String::new(),
        },
    };
    let values = pipeline_values(project, &pipeline, &req, &commit, &base_revision);
    let vcs = json!({
        "commit": {"subject": commit.subject, "body": commit.body,
                   "author_name": commit.author_name, "author_email": commit.author_email},
        "actor": {"login": req.actor, "avatar_url": req.actor_avatar},
        "received_at": now.0,
        "base_revision": base_revision,
    });
    let mut details = PipelineDetails {
        parameters: Some(serde_json::Value::Object(req.parameters.clone())),
        vcs: Some(vcs),
        compiled: None,
        pipeline_values: Some(serde_json::Value::Object(
            values
                .iter()
                .map(|(k, v)| (k.clone(), value_json(v)))
                .collect(),
        )),
    };

    let Some(source) = git::show(&dir, &revision, CONFIG_PATH)
        .await
        .map_err(fetch_err)?
    else {
        app.store
            .set_pipeline_details(pipeline.id, &details)
            .await?;
        return errored(
            app,
            pipeline,
            "config-fetch",
            "No configuration was found in your project. Please refer to \
             https://circleci.com/docs/2.0/ to get started with your configuration.",
            None,
        )
        .await;
    };

    let opts = Options {
        file_name: CONFIG_PATH.to_string(),
        pipeline_parameters: req.parameters.clone(),
        pipeline_values: values.iter().cloned().collect(),
        ..Options::default()
    };
    let orb_dir = app.config.orb_dir.clone();
    let text = source.clone();
    let compiled = tokio::task::spawn_blocking(move || {
        let orbs: Box<dyn OrbSource> = match orb_dir {
            Some(dir) => Box::new(gyre_orbs::DirOrbSource::new(dir)),
            None => Box::new(NoOrbs),
        };
        let out = gyre_config::compile(&text, &opts, orbs.as_ref());
        let rendered = out.render_diagnostics();
        (out.has_errors(), rendered, out.processed_yaml(), out.plan)
    })
    .await
    .map_err(|e| IntakeError::Internal(format!("the config compiler crashed: {e}")))?;
    let (has_errors, rendered, processed, plan) = compiled;
    details.compiled = processed;
    app.store
        .set_pipeline_details(pipeline.id, &details)
        .await?;
    let plan = match plan {
        Some(plan) if !has_errors => plan,
        _ => return errored(app, pipeline, "config", &rendered, Some(&source)).await,
    };

    let trigger = Trigger {
        branch: branch.clone(),
        tag: tag.clone(),
        values: values.clone(),
    };
    let ctx = JobContext {
        project,
        pipeline: &pipeline,
        req: &req,
        checkout: CheckoutSource {
            repository: project.repo_url.clone(),
            revision: revision.clone(),
        },
        public_url: &app.config.public_url,
    };
    for workflow in plan.workflows.iter().filter(|w| w.schedules.is_empty()) {
        if let Err(message) = create_workflow(app, &plan, &workflow.name, &trigger, &ctx).await? {
            return errored(app, pipeline, "plan", &message, Some(&source)).await;
        }
    }
    app.store
        .set_pipeline_state(
            pipeline.id,
            PipelineStatus::Created,
            &json!([]),
            Some(&source),
        )
        .await?;
    autocancel(app, project, &pipeline, &req).await;
    Ok(Pipeline {
        state: PipelineStatus::Created,
        config: Some(source),
        ..pipeline
    })
}

/// "Auto-cancel redundant workflows" (the project's `autocancel_builds`): a new pipeline
/// of a push or an API trigger on a branch other than the default one cancels the
/// running workflows of the older pipelines on that branch. Failures are logged: the new
/// pipeline stands either way.
async fn autocancel(app: &App, project: &Project, pipeline: &Pipeline, req: &TriggerRequest) {
    let on = project.settings["autocancel_builds"].as_bool() == Some(true);
    let Some(branch) = pipeline.branch.as_deref() else {
        return;
    };
    if !on || branch == project.default_branch || req.fork_pull_request.is_some() {
        return;
    }
    let older = match app
        .store
        .live_workflows_on_branch(project.id, branch, pipeline.number)
        .await
    {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "finding redundant workflows");
            return;
        }
    };
    for wf in older {
        tracing::info!(workflow = %wf, pipeline = pipeline.number, "auto-canceling a redundant workflow");
        if let Err(e) = orchestrate::apply(app, wf, vec![gyre_core::Event::Cancel]).await {
            tracing::warn!(workflow = %wf, error = %e, "auto-cancel");
        }
    }
}

struct JobContext<'a> {
    project: &'a Project,
    pipeline: &'a Pipeline,
    req: &'a TriggerRequest,
    checkout: CheckoutSource,
    public_url: &'a str,
}

/// One workflow run: state, jobs with their task templates, first tasks; one transaction.
/// `Ok(Err(message))` when the workflow is not runnable as written.
async fn create_workflow(
    app: &App,
    plan: &Plan,
    name: &str,
    trigger: &Trigger,
    ctx: &JobContext<'_>,
) -> Result<Result<(), String>, IntakeError> {
    let (state, actions) = match WorkflowState::from_plan(plan, name, trigger) {
        Ok(x) => x,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if state.jobs().is_empty() {
        // Every job was filtered out: CircleCI shows no workflow at all.
        return Ok(Ok(()));
    }
    let mut templates = Vec::new();
    for job in state.jobs() {
        templates.push(match (&job.kind, &job.body) {
            (InstanceKind::Build, body) => {
                let key = body.as_deref().unwrap_or(&job.name);
                let contexts = plan
                    .workflows
                    .iter()
                    .find(|w| w.name == name)
                    .and_then(|w| w.jobs.iter().find(|i| i.name == job.name))
                    .map(|i| i.contexts.clone())
                    .unwrap_or_default();
                Some(template(
                    plan,
                    key,
                    &job.name,
                    &upstream(&state, &job.name),
                    contexts,
                    ctx,
                ))
            }
            _ => None,
        });
    }
    let values: Vec<Option<serde_json::Value>> = templates
        .iter()
        .map(|t| {
            t.as_ref()
                .map(|t| serde_json::to_value(t).expect("templates serialize"))
        })
        .collect();
    let jobs: Vec<(NewJob<'_>, Option<&serde_json::Value>)> = state
        .jobs()
        .iter()
        .zip(&values)
        .map(|(j, v)| {
            (
                NewJob {
                    name: &j.name,
                    status: j.status,
                    approval: j.kind == InstanceKind::Approval,
                },
                v.as_ref(),
            )
        })
        .collect();
    orchestrate::start_run(app, ctx.pipeline.id, name, &jobs, &state, &actions).await?;
    Ok(Ok(()))
}

/// Jobs whose workspace layers a job sees: its transitive requirements (§4.12).
fn upstream(state: &WorkflowState, name: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut work: Vec<usize> = state
        .jobs()
        .iter()
        .position(|j| j.name == name)
        .into_iter()
        .collect();
    while let Some(i) = work.pop() {
        for r in &state.jobs()[i].requires {
            let u = r.job.0 as usize;
            if seen.insert(u) {
                work.push(u);
            }
        }
    }
    seen.into_iter()
        .map(|i| state.jobs()[i].name.clone())
        .collect()
}

fn template(
    plan: &Plan,
    body: &str,
    name: &str,
    upstream: &[String],
    contexts: Vec<String>,
    ctx: &JobContext<'_>,
) -> JobTemplate {
    let Some(job) = plan.jobs.get(body) else {
        return JobTemplate::Unrunnable {
            reason: format!("the plan has no job '{body}'"),
        };
    };
    let (org, repo) = ctx
        .project
        .slug
        .splitn(3, '/')
        .skip(1)
        .collect::<Vec<_>>()
        .split_first()
        .map(|(o, r)| (o.to_string(), r.join("/")))
        .unwrap_or_default();
    let info = JobInfo {
        name: name.to_string(),
        branch: ctx.pipeline.branch.clone(),
        tag: ctx.pipeline.tag.clone(),
        sha1: ctx.checkout.revision.clone(),
        build_url: format!("{}/pipelines/{}", ctx.public_url, ctx.project.slug),
        pipeline_id: ids::pipeline(ctx.pipeline.id),
        organization_id: ids::project(0),
        project_id: ids::project(ctx.project.id.0),
        project_username: org,
        project_reponame: repo,
        repository_url: ctx.project.repo_url.clone(),
        username: ctx.req.actor.clone(),
        pull_requests: ctx.req.pull_requests.clone(),
        fork_pull_request: ctx.req.fork_pull_request.clone(),
        workspace_upstream: Some(upstream.to_vec()),
        contexts,
        ..JobInfo::default()
    };
    let total = job.parallelism.max(1);
    let build = |index| {
        task_spec(
            job,
            info.clone(),
            &[],
            Some(ctx.checkout.clone()),
            NodeInfo { index, total },
        )
    };
    match (build(0), build(1.min(total - 1))) {
        (Ok(node0), Ok(others)) => JobTemplate::Build {
            queue: queue_class(job),
            executor_type: executor_type(job).to_string(),
            resource_class: job
                .resource_class
                .clone()
                .unwrap_or_else(|| "medium".into()),
            node0: Box::new(node0),
            others: Box::new(others),
        },
        (Err(reason), _) | (_, Err(reason)) => JobTemplate::Unrunnable { reason },
    }
}

async fn errored(
    app: &App,
    pipeline: Pipeline,
    kind: &str,
    message: &str,
    source: Option<&str>,
) -> Result<Pipeline, IntakeError> {
    let errors = json!([{ "type": kind, "message": message }]);
    app.store
        .set_pipeline_state(pipeline.id, PipelineStatus::Errored, &errors, source)
        .await?;
    Ok(Pipeline {
        state: PipelineStatus::Errored,
        errors,
        config: source.map(str::to_string),
        ..pipeline
    })
}

/// Pipeline values of §2.7 / API spec §5.7.
fn pipeline_values(
    project: &Project,
    pipeline: &Pipeline,
    req: &TriggerRequest,
    commit: &git::CommitInfo,
    base_revision: &str,
) -> Vec<(String, Value)> {
    let s = |v: &str| Value::Str(v.to_string());
    let mut parts = project.slug.splitn(3, '/');
    let vcs = parts.next().unwrap_or_default();
    let owner = parts.next().unwrap_or_default();
    let repo = parts.next().unwrap_or_default();
    let project_type = match vcs {
        "gh" | "github" => "github",
        "bb" | "bitbucket" => "bitbucket",
        other => other,
    };
    let mut v = vec![
        ("pipeline.id", s(&ids::pipeline(pipeline.id))),
        ("pipeline.number", Value::Int(pipeline.number as i64)),
        ("pipeline.project.git_url", s(&project.repo_url)),
        ("pipeline.project.type", s(project_type)),
        ("pipeline.project.slug", s(&project.slug)),
        ("pipeline.trigger_source", s(&req.kind)),
        ("pipeline.trigger.type", s(&req.kind)),
        ("pipeline.in_setup", Value::Bool(false)),
        ("pipeline.git.revision", s(&pipeline.revision)),
        ("pipeline.git.base_revision", s(base_revision)),
        ("pipeline.git.repo_url", s(&project.repo_url)),
        ("pipeline.git.repo_name", s(repo)),
        ("pipeline.git.repo_owner", s(owner)),
        ("pipeline.git.commit.subject", s(&commit.subject)),
        ("pipeline.git.commit.body", s(&commit.body)),
        ("pipeline.git.commit.author_name", s(&commit.author_name)),
        ("pipeline.git.commit.author_email", s(&commit.author_email)),
        ("pipeline.git.commit.author_login", s(&req.actor)),
    ];
    if let Some(b) = &pipeline.branch {
        v.push(("pipeline.git.branch", s(b)));
        v.push((
            "pipeline.git.branch.is_default",
            Value::Bool(*b == project.default_branch),
        ));
    }
    if let Some(t) = &pipeline.tag {
        v.push(("pipeline.git.tag", s(t)));
    }
    v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f, _) => json!(f),
        Value::Str(s) => json!(s),
        Value::Seq(_) | Value::Map(_) => serde_json::Value::Null,
    }
}
