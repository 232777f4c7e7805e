//! Inbound hooks that start pipelines.
//!
//! - `POST /hooks/github`: GitHub webhooks (`push` for branches and tags; `ping`;
//!   `pull_request`: recorded, and forks built as `pull/<n>`, see [`pull_request`]). Verified with
//!   `X-Hub-Signature-256` against the project's webhook secret, deduplicated by
//!   `X-GitHub-Delivery`, `[ci skip]`/`[skip ci]` honoured. The project is found by
//!   `repository.full_name` (`gh/<full_name>`) and always fetched from its configured URL.
//! - `POST /hooks/push/{vcs}/{org}/{repo}`: the generic push hook for any git server
//!   (`trigger::GenericPush`), signed the same way in `X-Gyre-Signature-256`.

use crate::error::{ApiError, ApiResult};
use crate::intake::{self, TriggerRequest};
use crate::{App, api, github, trigger};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use gyre_store::{Millis, Project};
use serde_json::{Value, json};
use std::sync::Arc;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/hooks/github", post(github_hook))
        .route("/hooks/push/{vcs}/{org}/{repo}", post(generic_hook))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn verify(project: &Project, body: &[u8], signature: Option<&str>) -> ApiResult<()> {
    let Some(secret) = project.webhook_secret.as_deref() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "project {} has no webhook secret; hooks are refused",
                project.slug
            ),
        ));
    };
    github::verify_signature(secret.as_bytes(), body, signature)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

async fn github_hook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let event = header(&headers, "x-github-event")
        .ok_or_else(|| ApiError::bad_request("missing X-GitHub-Event header"))?
        .to_string();
    let delivery = header(&headers, "x-github-delivery")
        .ok_or_else(|| ApiError::bad_request("missing X-GitHub-Delivery header"))?
        .to_string();
    if delivery.is_empty() || delivery.len() > 200 {
        return Err(ApiError::bad_request(
            "X-GitHub-Delivery must be 1-200 characters",
        ));
    }
    let hook = github::parse(&event, &body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let full_name = match &hook {
        github::Hook::Ping => return Ok((StatusCode::OK, Json(json!({"message": "pong"})))),
        github::Hook::Ignored { reason, .. } => {
            return Ok((StatusCode::OK, Json(json!({ "message": reason }))));
        }
        github::Hook::PullRequest(pr) => pr.repo_full_name.clone(),
        github::Hook::Push(p) => p.repo_full_name.clone(),
    };
    let slug = format!("gh/{full_name}");
    let project = app
        .store
        .project_by_slug(&slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no project {slug}")))?;
    // Authenticate before anything is recorded.
    verify(&project, &body, header(&headers, "x-hub-signature-256"))?;
    if let github::Hook::Push(push) = &hook
        && let Err(why) = push.should_build()
    {
        return Ok((StatusCode::OK, Json(json!({ "message": why }))));
    }
    if !app.store.record_delivery(&delivery, Millis::now()).await? {
        return Ok((
            StatusCode::OK,
            Json(json!({"message": format!("delivery {delivery} already processed")})),
        ));
    }
    let req = match hook {
        github::Hook::Push(push) => {
            let req = push_request(&app, &project, &push).await?;
            if let Some(branch) = req.branch.as_deref()
                && prs_only(&project)
                && branch != project.default_branch
                && req.pull_requests.is_empty()
            {
                return Ok((
                    StatusCode::OK,
                    Json(json!({"message": format!(
                        "not built: branch {branch} has no open pull request (only build pull requests)"
                    )})),
                ));
            }
            req
        }
        github::Hook::PullRequest(pr) => match pull_request(&app, &project, &pr).await? {
            Some(req) => req,
            None => {
                return Ok((
                    StatusCode::OK,
                    Json(json!({"message": format!("pull request #{} noted", pr.number)})),
                ));
            }
        },
        _ => unreachable!("answered above"),
    };
    let pipeline = match intake::start(&app, &project, req).await {
        Ok(p) => p,
        Err(e) => {
            // The repository could not be fetched or the revision is not there (yet):
            // nothing was created, and GitHub's redelivery must not be ignored.
            let before_create = matches!(
                e,
                intake::IntakeError::Fetch { .. } | intake::IntakeError::NotFound(_)
            );
            if before_create && let Err(forget) = app.store.forget_delivery(&delivery).await {
                tracing::error!(%delivery, error = %forget, "forgetting a failed delivery");
            }
            return Err(api::intake_error(e));
        }
    };
    Ok((StatusCode::CREATED, Json(api::pipeline_creation(&pipeline))))
}

/// A branch or tag push: its pipeline, with the open pull requests of the branch.
async fn push_request(
    app: &App,
    project: &Project,
    push: &github::Push,
) -> ApiResult<TriggerRequest> {
    let commit = push
        .head_commit
        .as_ref()
        .map(|c| commit_info(&c.message, &c.author_name, &c.author_email));
    let pull_requests = match push.git_ref.branch() {
        Some(branch) => app
            .store
            .open_pull_requests(project.id, branch)
            .await?
            .into_iter()
            .map(|pr| pr.url)
            .collect(),
        None => Vec::new(),
    };
    Ok(TriggerRequest {
        kind: "webhook".into(),
        actor: push.sender.login.clone(),
        actor_avatar: push.sender.avatar_url.clone(),
        branch: push.git_ref.branch().map(str::to_string),
        tag: push.git_ref.tag().map(str::to_string),
        revision: Some(push.after.clone()),
        before: Some(push.before.clone()),
        commit,
        pull_requests,
        ..TriggerRequest::default()
    })
}

/// A `pull_request` delivery: its metadata is recorded (later pushes to the branch carry
/// its URL). Only a pull request from a fork is built from the event itself, as branch
/// `pull/<number>`, and only when the project's `build_fork_prs` setting is on (as on
/// CircleCI); a same-repository pull request is built by the push of its branch.
async fn pull_request(
    app: &App,
    project: &Project,
    pr: &github::PullRequest,
) -> ApiResult<Option<TriggerRequest>> {
    let open = !matches!(pr.action.as_str(), "closed");
    app.store
        .upsert_pull_request(&gyre_store::PullRequestRow {
            project: project.id,
            number: pr.number,
            url: pr.url.clone(),
            head_branch: pr.head_ref.clone(),
            head_sha: pr.head_sha.clone(),
            head_repo: pr.head_repo_full_name.clone().unwrap_or_default(),
            fork: pr.is_fork(),
            open,
            updated_at: Millis::now(),
        })
        .await?;
    let builds = matches!(pr.action.as_str(), "opened" | "reopened" | "synchronize");
    if builds && !pr.is_fork() {
        // With "only build pull requests", the pushes of a branch without a pull request
        // were not built: a newly opened one builds its head.
        let opened = matches!(pr.action.as_str(), "opened" | "reopened");
        if !(opened && prs_only(project))
            || app.store.has_pipeline_for(project.id, &pr.head_sha).await?
        {
            return Ok(None);
        }
        let pull_requests = app
            .store
            .open_pull_requests(project.id, &pr.head_ref)
            .await?
            .into_iter()
            .map(|p| p.url)
            .collect();
        return Ok(Some(TriggerRequest {
            kind: "webhook".into(),
            actor: pr.sender.login.clone(),
            actor_avatar: pr.sender.avatar_url.clone(),
            branch: Some(pr.head_ref.clone()),
            revision: Some(pr.head_sha.clone()),
            pull_requests,
            ..TriggerRequest::default()
        }));
    }
    let build_forks = project.settings["build_fork_prs"].as_bool() == Some(true);
    if !(builds && pr.is_fork() && build_forks) {
        return Ok(None);
    }
    let reponame = pr
        .head_repo_full_name
        .as_deref()
        .and_then(|n| n.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    Ok(Some(TriggerRequest {
        kind: "webhook".into(),
        actor: pr.sender.login.clone(),
        actor_avatar: pr.sender.avatar_url.clone(),
        branch: Some(format!("pull/{}", pr.number)),
        revision: Some(pr.head_sha.clone()),
        before: Some(pr.base_sha.clone()),
        pull_requests: vec![pr.url.clone()],
        fork_pull_request: Some(gyre_protocol::ForkPullRequest {
            number: pr.number,
            reponame,
            username: pr.sender.login.clone(),
        }),
        ..TriggerRequest::default()
    }))
}

/// The project's "only build pull requests" setting (`build_prs_only`).
fn prs_only(project: &Project) -> bool {
    project.settings["build_prs_only"].as_bool() == Some(true)
}

async fn generic_hook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let slug = api::normalize_slug(&format!("{vcs}/{org}/{repo}"));
    let project = app
        .store
        .project_by_slug(&slug)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no project {slug}")))?;
    verify(&project, &body, header(&headers, "x-gyre-signature-256"))?;
    let push =
        trigger::parse_generic_push(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Err(why) = push.should_build() {
        return Ok((StatusCode::OK, Json(json!({ "message": why }))));
    }
    let commit = push.commit_message.as_ref().map(|m| {
        commit_info(
            m,
            push.author_name.as_deref().unwrap_or_default(),
            push.author_email.as_deref().unwrap_or_default(),
        )
    });
    let req = TriggerRequest {
        kind: "webhook".into(),
        actor: push.actor.clone().unwrap_or_default(),
        branch: push.git_ref.branch().map(str::to_string),
        tag: push.git_ref.tag().map(str::to_string),
        revision: Some(push.revision.clone()),
        before: push.before.clone(),
        commit,
        ..TriggerRequest::default()
    };
    let pipeline = intake::start(&app, &project, req)
        .await
        .map_err(api::intake_error)?;
    Ok((StatusCode::CREATED, Json(api::pipeline_creation(&pipeline))))
}

/// A commit as a hook describes it: the message's first line is the subject.
fn commit_info(message: &str, author_name: &str, author_email: &str) -> crate::git::CommitInfo {
    let (subject, body) = message.split_once('\n').unwrap_or((message, ""));
    crate::git::CommitInfo {
        subject: subject.trim().to_string(),
        body: body.trim().to_string(),
        author_name: author_name.to_string(),
        author_email: author_email.to_string(),
    }
}
