//! The job environment: built-in variables (§8.1) layered by precedence (§8.3).

use gyre_protocol::{EnvSource, TaskSpec};

/// Paths the environment refers to.
pub(crate) struct EnvPaths<'a> {
    pub task_dir: &'a str,
    pub bash_env: &'a str,
    pub home: &'a str,
    pub helper_bin_dir: &'a str,
}

/// Steps' environment and the secret values to mask.
pub(crate) struct JobEnv {
    pub vars: Vec<(String, String)>,
    pub secrets: Vec<String>,
}

/// `base` is the image's (or host's) environment, lowest precedence.
pub(crate) fn job_env(task: &TaskSpec, base: &[(String, String)], paths: &EnvPaths<'_>) -> JobEnv {
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, name: &str, value: String| {
        if let Some(slot) = vars.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
        } else {
            vars.push((name.to_owned(), value));
        }
    };
    for (name, value) in base {
        set(&mut vars, name, value.clone());
    }
    if !vars.iter().any(|(n, _)| n == "HOME") {
        set(&mut vars, "HOME", paths.home.to_owned());
    }
    let path = vars
        .iter()
        .find(|(n, _)| n == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()
        });
    set(
        &mut vars,
        "PATH",
        format!("{path}:{}", paths.helper_bin_dir),
    );

    for source in [EnvSource::Project, EnvSource::Context] {
        for var in task.environment.iter().filter(|v| v.source == source) {
            set(&mut vars, &var.name, var.value.clone());
        }
    }
    for (name, value) in builtins(task, paths) {
        set(&mut vars, name, value);
    }
    for var in task
        .environment
        .iter()
        .filter(|v| v.source == EnvSource::Job)
    {
        set(&mut vars, &var.name, var.value.clone());
    }
    let secrets = task
        .environment
        .iter()
        .filter(|v| v.secret)
        .map(|v| v.value.clone())
        .chain(task.job.oidc_token.clone())
        .chain(task.job.oidc_token_v2.clone())
        .collect();
    JobEnv { vars, secrets }
}

fn builtins(task: &TaskSpec, paths: &EnvPaths<'_>) -> Vec<(&'static str, String)> {
    let job = &task.job;
    let mut out = vec![
        ("CI", "true".to_owned()),
        ("CIRCLECI", "true".to_owned()),
        ("CIRCLE_SHA1", job.sha1.clone()),
        ("CIRCLE_BUILD_NUM", job.build_num.to_string()),
        ("CIRCLE_BUILD_URL", job.build_url.clone()),
        ("CIRCLE_JOB", job.name.clone()),
        ("CIRCLE_NODE_INDEX", task.node.index.to_string()),
        ("CIRCLE_NODE_TOTAL", task.node.total.to_string()),
        ("CIRCLE_WORKING_DIRECTORY", task.working_directory.clone()),
        ("CIRCLE_WORKFLOW_ID", job.workflow_id.clone()),
        ("CIRCLE_WORKFLOW_JOB_ID", job.workflow_job_id.clone()),
        (
            "CIRCLE_WORKFLOW_WORKSPACE_ID",
            job.workflow_workspace_id.clone(),
        ),
        ("CIRCLE_PIPELINE_ID", job.pipeline_id.clone()),
        ("CIRCLE_ORGANIZATION_ID", job.organization_id.clone()),
        ("CIRCLE_PROJECT_ID", job.project_id.clone()),
        ("CIRCLE_PROJECT_USERNAME", job.project_username.clone()),
        ("CIRCLE_PROJECT_REPONAME", job.project_reponame.clone()),
        ("CIRCLE_REPOSITORY_URL", job.repository_url.clone()),
        ("CIRCLE_USERNAME", job.username.clone()),
        ("CIRCLE_INTERNAL_TASK_DATA", paths.task_dir.to_owned()),
        ("BASH_ENV", paths.bash_env.to_owned()),
    ];
    if let Some(branch) = &job.branch {
        out.push(("CIRCLE_BRANCH", branch.clone()));
    }
    if let Some(tag) = &job.tag {
        out.push(("CIRCLE_TAG", tag.clone()));
    }
    if let Some(first) = job.pull_requests.first() {
        out.push(("CIRCLE_PULL_REQUEST", first.clone()));
        out.push(("CI_PULL_REQUEST", first.clone()));
        out.push(("CIRCLE_PULL_REQUESTS", job.pull_requests.join(",")));
        out.push(("CI_PULL_REQUESTS", job.pull_requests.join(",")));
    }
    if let Some(token) = &job.oidc_token {
        out.push(("CIRCLE_OIDC_TOKEN", token.clone()));
    }
    if let Some(token) = &job.oidc_token_v2 {
        out.push(("CIRCLE_OIDC_TOKEN_V2", token.clone()));
    }
    if let Some(pr) = &job.fork_pull_request {
        out.push(("CIRCLE_PR_NUMBER", pr.number.to_string()));
        out.push(("CIRCLE_PR_REPONAME", pr.reponame.clone()));
        out.push(("CIRCLE_PR_USERNAME", pr.username.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_protocol::{EnvVar, ExecutorSpec, JobInfo};

    fn machine_task(job: JobInfo, environment: Vec<EnvVar>) -> TaskSpec {
        TaskSpec {
            version: 1,
            job,
            executor: ExecutorSpec::Machine { image: None },
            working_directory: "~/project".into(),
            shell: None,
            environment,
            resources: Default::default(),
            node: Default::default(),
            checkout: None,
            steps: vec![],
        }
    }

    const PATHS: EnvPaths<'static> = EnvPaths {
        task_dir: "/t",
        bash_env: "/t/bash.env",
        home: "/root",
        helper_bin_dir: "/.gyre/bin",
    };

    #[test]
    fn precedence() {
        let var = |name: &str, value: &str, source, secret| EnvVar {
            name: name.into(),
            value: value.into(),
            secret,
            source,
        };
        let task = machine_task(
            JobInfo {
                name: "build".into(),
                branch: Some("main".into()),
                ..JobInfo::default()
            },
            vec![
                var("CIRCLE_JOB", "from-project", EnvSource::Project, true),
                var("CIRCLE_BRANCH", "from-job", EnvSource::Job, false),
                var("A", "project", EnvSource::Project, false),
                var("A", "context", EnvSource::Context, false),
            ],
        );
        let env = job_env(&task, &[("PATH".into(), "/bin".into())], &PATHS);
        let get = |n: &str| {
            env.vars
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("CIRCLE_JOB"), Some("build"));
        assert_eq!(get("CIRCLE_BRANCH"), Some("from-job"));
        assert_eq!(get("A"), Some("context"));
        assert_eq!(get("PATH"), Some("/bin:/.gyre/bin"));
        assert_eq!(get("HOME"), Some("/root"));
        assert_eq!(get("CIRCLE_NODE_TOTAL"), Some("1"));
        assert_eq!(env.secrets, ["from-project"]);
        assert_eq!(get("CIRCLE_PULL_REQUEST"), None);
        assert_eq!(get("CIRCLE_PR_NUMBER"), None);
    }

    #[test]
    fn pull_request_variables() {
        let mut task = machine_task(
            JobInfo {
                name: "build".into(),
                pull_requests: vec!["https://h/a/b/pull/1".into(), "https://h/a/b/pull/2".into()],
                fork_pull_request: Some(gyre_protocol::ForkPullRequest {
                    number: 7,
                    reponame: "b".into(),
                    username: "forker".into(),
                }),
                ..JobInfo::default()
            },
            vec![],
        );
        let env = job_env(&task, &[], &PATHS);
        let get = |n: &str| {
            env.vars
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("CIRCLE_PULL_REQUEST").as_deref(),
            Some("https://h/a/b/pull/1")
        );
        assert_eq!(
            get("CIRCLE_PULL_REQUESTS").as_deref(),
            Some("https://h/a/b/pull/1,https://h/a/b/pull/2")
        );
        assert_eq!(get("CIRCLE_PR_NUMBER").as_deref(), Some("7"));
        assert_eq!(get("CIRCLE_PR_REPONAME").as_deref(), Some("b"));
        assert_eq!(get("CIRCLE_PR_USERNAME").as_deref(), Some("forker"));
        task.job.fork_pull_request = None;
        let env = job_env(&task, &[], &PATHS);
        assert!(!env.vars.iter().any(|(k, _)| k.starts_with("CIRCLE_PR_")));
    }
}
