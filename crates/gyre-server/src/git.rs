//! The server's view of project repositories: one bare mirror per project under the data
//! directory, fetched from the project's configured URL (never from a URL a webhook
//! names), read with `git` plumbing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {what} failed: {stderr}")]
    Failed { what: String, stderr: String },
    #[error("cannot run git: {0}")]
    Spawn(#[from] std::io::Error),
}

/// What the UI and pipeline values show of a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitInfo {
    pub subject: String,
    pub body: String,
    pub author_name: String,
    pub author_email: String,
}

pub struct Mirrors {
    root: PathBuf,
    locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Mirrors {
    pub fn new(root: impl Into<PathBuf>) -> Mirrors {
        Mirrors {
            root: root.into(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Brings the project's mirror up to date with `url` (branches and tags) and returns
    /// its path. Fetches of one project are serialized.
    pub async fn fetch(&self, project: u64, url: &str) -> Result<PathBuf, GitError> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(project).or_default().clone()
        };
        let _guard = lock.lock().await;
        let dir = self.root.join(format!("{project}.git"));
        if !dir.join("HEAD").exists() {
            tokio::fs::create_dir_all(&dir).await?;
            git(&dir, &["init", "--quiet", "--bare"]).await?;
        }
        git(
            &dir,
            &[
                "fetch",
                "--quiet",
                "--prune",
                "--force",
                "--",
                url,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
                // GitHub's pull request heads, forks included (absent elsewhere: fine).
                "+refs/pull/*/head:refs/pull/*/head",
            ],
        )
        .await?;
        Ok(dir)
    }
}

/// The commit `rev` names, if it names one.
pub async fn resolve(dir: &Path, rev: &str) -> Result<Option<String>, GitError> {
    if rev.starts_with('-') {
        return Ok(None);
    }
    match git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .await
    {
        Ok(out) => Ok(Some(out.trim().to_string())),
        Err(GitError::Failed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The text of `path` at `rev`; `None` when the file is not there.
pub async fn show(dir: &Path, rev: &str, path: &str) -> Result<Option<String>, GitError> {
    match git(dir, &["show", &format!("{rev}:{path}")]).await {
        Ok(text) => Ok(Some(text)),
        Err(GitError::Failed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn commit_info(dir: &Path, rev: &str) -> Result<CommitInfo, GitError> {
    let out = git(
        dir,
        &["log", "-1", "--format=%an%x00%ae%x00%s%x00%b", rev, "--"],
    )
    .await?;
    let mut parts = out.splitn(4, '\0');
    let mut next = || parts.next().unwrap_or_default().trim().to_string();
    Ok(CommitInfo {
        author_name: next(),
        author_email: next(),
        subject: next(),
        body: next(),
    })
}

async fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        return Err(GitError::Failed {
            what: args.first().copied().unwrap_or_default().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
