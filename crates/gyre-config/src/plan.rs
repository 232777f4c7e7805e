//! The typed plan: what the rest of gyre runs (workflows of job instances, jobs with an
//! executor and typed steps). Built from the processed config; shape errors found here
//! (a `parallelism` that is not a number, an unknown key in a `run` step) are located
//! diagnostics like any other.

use crate::compile::{CompiledWorkflow, STATUSES, env_map};
use crate::diag::Reporter;
use crate::expr;
use crate::yaml::{Map, Node, Value};
use indexmap::IndexMap;
use serde::Serialize;

/// Everything a pipeline runs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Plan {
    /// `setup: true`: a setup config whose workflow continues the pipeline (§5.14).
    pub setup: bool,
    pub workflows: Vec<Workflow>,
    pub jobs: IndexMap<String, Job>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Workflow {
    pub name: String,
    pub jobs: Vec<JobInstance>,
    /// Cron schedules of a legacy scheduled workflow (never run on pushes).
    pub schedules: Vec<Schedule>,
    /// Automatic "rerun from failed" attempts (1-5), if set.
    pub max_auto_reruns: Option<u32>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Schedule {
    pub cron: String,
    pub branches: Option<FilterSpec>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JobInstance {
    /// Unique in its workflow; `CIRCLE_JOB`.
    pub name: String,
    /// Key into [`Plan::jobs`]; `None` for approval jobs.
    pub job: Option<String>,
    pub kind: InstanceKind,
    pub requires: Vec<Requirement>,
    pub filters: Filters,
    pub contexts: Vec<String>,
    pub serial_group: Option<String>,
    /// The matrix alias this job is an instance of (its name without the parameter
    /// values, or `matrix.alias`); `None` for a job without a matrix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matrix_alias: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InstanceKind {
    Build,
    Approval,
    NoOp,
}

/// A final status an upstream job may end in.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RequiredStatus {
    Success,
    Failed,
    Canceled,
    Unauthorized,
    NotRun,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Requirement {
    pub job: String,
    pub statuses: Vec<RequiredStatus>,
}

/// Branch and tag filters (map form) or an expression (§5.4).
#[derive(Clone, Debug, Serialize, PartialEq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Filters {
    #[default]
    None,
    Map {
        branches: Option<FilterSpec>,
        tags: Option<FilterSpec>,
    },
    Expression(String),
}

#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct FilterSpec {
    pub only: Vec<Pattern>,
    pub ignore: Vec<Pattern>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    Exact(String),
    Regex(String),
}

impl Pattern {
    fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == s,
            Pattern::Regex(r) => expr::regex_full_match(r, s).unwrap_or(false),
        }
    }
}

impl FilterSpec {
    /// `only` must match (when given), `ignore` must not.
    pub fn passes(&self, name: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|p| p.matches(name)))
            && !self.ignore.iter().any(|p| p.matches(name))
    }
}

impl Filters {
    /// Whether a job runs for a pipeline on `branch` or `tag` (spec §5.4, §16.1).
    /// `lookup` resolves pipeline values for expression filters.
    pub fn allows(
        &self,
        branch: Option<&str>,
        tag: Option<&str>,
        lookup: &mut dyn FnMut(&str) -> Option<Value>,
    ) -> bool {
        match self {
            Filters::None => tag.is_none(),
            Filters::Map { branches, tags } => match tag {
                Some(t) => tags.as_ref().is_some_and(|f| f.passes(t)),
                None => branches
                    .as_ref()
                    .is_none_or(|f| f.passes(branch.unwrap_or(""))),
            },
            Filters::Expression(e) => match expr::parse(e) {
                Some(e) => e
                    .eval(&mut |p| Ok(lookup(p).unwrap_or(Value::Str(String::new()))))
                    .map(|v| expr::truthy(&v))
                    .unwrap_or(false),
                None => false,
            },
        }
    }
}

/// A concrete job.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Job {
    pub executor: Executor,
    pub environment: Vec<(String, String)>,
    pub resource_class: Option<String>,
    pub parallelism: u32,
    /// As written (may start with `~`); default `~/project`.
    pub working_directory: String,
    pub shell: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Executor {
    Docker(Vec<DockerImage>),
    Machine(Machine),
    Macos {
        xcode: String,
    },
    /// `no-op` jobs run nothing.
    None,
}

#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct DockerImage {
    pub image: String,
    pub name: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub user: Option<String>,
    pub environment: Vec<(String, String)>,
    pub auth: Option<DockerAuth>,
    pub aws_auth: Option<AwsAuth>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DockerAuth {
    pub username: String,
    pub password: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum AwsAuth {
    Keys {
        access_key_id: String,
        secret_access_key: String,
    },
    Oidc {
        role_arn: String,
    },
}

#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct Machine {
    pub image: Option<String>,
    pub docker_layer_caching: bool,
}

/// When a step runs relative to earlier failures.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum When {
    #[default]
    OnSuccess,
    OnFail,
    Always,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Run(Run),
    /// `deploy`: a `run` that only node 0 executes.
    Deploy(Run),
    Checkout {
        path: Option<String>,
        method: Option<String>,
        /// `depth` of `method: shallow`; a value that is not a positive integer is an error.
        depth: Option<u32>,
    },
    SetupRemoteDocker {
        version: Option<String>,
        docker_layer_caching: bool,
    },
    SaveCache {
        name: Option<String>,
        key: String,
        paths: Vec<String>,
        when: When,
    },
    RestoreCache {
        name: Option<String>,
        keys: Vec<String>,
    },
    StoreArtifacts {
        name: Option<String>,
        path: String,
        destination: Option<String>,
    },
    StoreTestResults {
        name: Option<String>,
        path: String,
    },
    PersistToWorkspace {
        name: Option<String>,
        root: String,
        paths: Vec<String>,
    },
    AttachWorkspace {
        name: Option<String>,
        at: String,
    },
    AddSshKeys {
        fingerprints: Vec<String>,
    },
    InstallSigningBundle,
}

#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct Run {
    pub command: String,
    pub name: Option<String>,
    pub shell: Option<String>,
    pub background: bool,
    pub working_directory: Option<String>,
    /// Seconds; default 600.
    pub no_output_timeout_secs: f64,
    pub when: When,
    pub environment: Vec<(String, String)>,
    pub max_auto_reruns: Option<u32>,
    pub auto_rerun_delay_secs: Option<f64>,
}

/// Builds the plan from compiled workflows and the processed `jobs:` map.
pub fn build(workflows: &[CompiledWorkflow], processed: &Node, rep: &mut Reporter) -> Plan {
    let mut jobs = IndexMap::new();
    if let Some(m) = processed.get("jobs").and_then(Node::as_map) {
        for (name, node) in m.iter() {
            rep.context_push(format!("job '{name}'"));
            if let Some(job) = job(node, rep) {
                jobs.insert(name.to_string(), job);
            }
            rep.context_pop();
        }
    }
    let workflows = workflows
        .iter()
        .map(|wf| Workflow {
            name: wf.name.clone(),
            schedules: wf.triggers.as_ref().map(schedules).unwrap_or_default(),
            max_auto_reruns: wf.max_auto_reruns.as_ref().and_then(|n| match n.value {
                Value::Int(i @ 1..=5) => Some(i as u32),
                _ => None,
            }),
            jobs: wf
                .jobs
                .iter()
                .map(|i| JobInstance {
                    name: i.name.clone(),
                    job: i.job.clone(),
                    kind: if i.approval {
                        InstanceKind::Approval
                    } else if i
                        .job
                        .as_ref()
                        .and_then(|j| jobs.get(j))
                        .is_some_and(|j: &Job| j.executor == Executor::None)
                    {
                        InstanceKind::NoOp
                    } else {
                        InstanceKind::Build
                    },
                    requires: i
                        .requires
                        .iter()
                        .map(|(n, st)| Requirement {
                            job: n.clone(),
                            statuses: st.iter().filter_map(|s| status(s)).collect(),
                        })
                        .collect(),
                    filters: i.filters.as_ref().map(filters).unwrap_or_default(),
                    contexts: i.context.clone(),
                    serial_group: i.serial_group.clone(),
                    matrix_alias: i.matrix_alias.clone(),
                })
                .collect(),
        })
        .collect();
    let setup = matches!(
        processed.get("setup").map(|n| &n.value),
        Some(Value::Bool(true))
    );
    Plan {
        setup,
        workflows,
        jobs,
    }
}

fn status(s: &str) -> Option<RequiredStatus> {
    debug_assert!(STATUSES.contains(&s));
    Some(match s {
        "success" => RequiredStatus::Success,
        "failed" => RequiredStatus::Failed,
        "canceled" => RequiredStatus::Canceled,
        "unauthorized" => RequiredStatus::Unauthorized,
        "not_run" => RequiredStatus::NotRun,
        _ => return None,
    })
}

fn schedules(t: &Node) -> Vec<Schedule> {
    t.as_seq()
        .unwrap_or_default()
        .iter()
        .filter_map(|i| {
            let s = i.get("schedule")?;
            Some(Schedule {
                cron: s.get("cron")?.scalar_text()?,
                branches: s
                    .get("filters")
                    .and_then(|f| f.get("branches"))
                    .map(filter_spec),
            })
        })
        .collect()
}

/// Reads `filters` (already validated by the compiler).
pub fn filters(f: &Node) -> Filters {
    match &f.value {
        Value::Str(s) => Filters::Expression(s.clone()),
        Value::Map(m) => Filters::Map {
            branches: m.get("branches").filter(|n| !n.is_null()).map(filter_spec),
            tags: m.get("tags").filter(|n| !n.is_null()).map(filter_spec),
        },
        _ => Filters::None,
    }
}

fn filter_spec(n: &Node) -> FilterSpec {
    let list = |k: &str| -> Vec<Pattern> {
        let Some(v) = n.get(k) else { return Vec::new() };
        let items: Vec<&Node> = match &v.value {
            Value::Seq(s) => s.iter().collect(),
            Value::Null => Vec::new(),
            _ => vec![v],
        };
        items
            .into_iter()
            .filter_map(Node::scalar_text)
            .map(
                |t| match t.strip_prefix('/').and_then(|x| x.strip_suffix('/')) {
                    Some(re) if t.len() >= 2 => Pattern::Regex(re.to_string()),
                    _ => Pattern::Exact(t),
                },
            )
            .collect()
    };
    FilterSpec {
        only: list("only"),
        ignore: list("ignore"),
    }
}

fn text(n: &Node, what: &str, rep: &mut Reporter) -> Option<String> {
    match &n.value {
        Value::Map(_) | Value::Seq(_) => {
            rep.error(
                Some(n.span),
                format!("`{what}` must be a string, found {}", n.type_name()),
            );
            None
        }
        _ => n.scalar_text(),
    }
}

fn strings(n: &Node, what: &str, rep: &mut Reporter) -> Vec<String> {
    match &n.value {
        Value::Seq(items) => items.iter().filter_map(|i| text(i, what, rep)).collect(),
        Value::Null => Vec::new(),
        _ => text(n, what, rep).into_iter().collect(),
    }
}

fn env_list(n: &Node, rep: &mut Reporter) -> Vec<(String, String)> {
    if let Value::Str(s) = &n.value
        && s.contains('=')
    {
        // `environment: KEY=VALUE` as one string: CircleCI reads it as one variable.
        let (k, v) = s.split_once('=').unwrap_or((s, ""));
        return vec![(k.trim().to_string(), v.to_string())];
    }
    if !matches!(n.value, Value::Map(_) | Value::Seq(_) | Value::Null) {
        rep.error(
            Some(n.span),
            format!("`environment` must be a map, found {}", n.type_name()),
        );
        return Vec::new();
    }
    for item in n.as_seq().unwrap_or_default() {
        if !matches!(item.value, Value::Str(_) | Value::Map(_)) {
            rep.error(
                Some(item.span),
                format!(
                    "`environment` must be a map, or a list of KEY=VALUE strings or KEY: VALUE maps; found {} in the list",
                    item.type_name()
                ),
            );
        }
    }
    env_map(n)
        .entries
        .into_iter()
        .filter_map(|(k, v)| match &v.value {
            Value::Map(_) | Value::Seq(_) => {
                rep.error(
                    Some(v.span),
                    format!("environment variable {} must be a scalar", k.name),
                );
                None
            }
            Value::Null => Some((k.name, String::new())),
            _ => Some((k.name, v.scalar_text().unwrap_or_default())),
        })
        .collect()
}

/// Unknown keys are warnings: CircleCI runs configs that carry them.
fn check_keys(m: &Map, allowed: &[&str], what: &str, rep: &mut Reporter) {
    for (k, _) in &m.entries {
        if !allowed.contains(&k.name.as_str()) {
            rep.warning(
                Some(k.span),
                format!(
                    "unknown key `{}` in {what} (allowed: {})",
                    k.name,
                    allowed.join(", ")
                ),
            );
        }
    }
}

fn job(node: &Node, rep: &mut Reporter) -> Option<Job> {
    let m = node.as_map()?;
    check_keys(
        m,
        &[
            "docker",
            "machine",
            "macos",
            "windows",
            "executor",
            "steps",
            "type",
            "working_directory",
            "parallelism",
            "environment",
            "shell",
            "resource_class",
            "circleci_ip_ranges",
            "retention",
            "branches",
            "plan_name",
            "validation",
            "key",
        ],
        "a job",
        rep,
    );
    let executor = if let Some(d) = m.get("docker") {
        let Some(items) = d.as_seq().filter(|s| !s.is_empty()) else {
            rep.error(
                Some(d.span),
                format!(
                    "`docker` must be a non-empty list of images, found {}",
                    d.type_name()
                ),
            );
            return None;
        };
        Executor::Docker(items.iter().filter_map(|i| docker_image(i, rep)).collect())
    } else if let Some(mach) = m.get("machine") {
        Executor::Machine(machine(mach, rep))
    } else if let Some(mac) = m.get("macos") {
        Executor::Macos {
            xcode: mac
                .get("xcode")
                .and_then(Node::scalar_text)
                .unwrap_or_default(),
        }
    } else if let Some(w) = m.get("windows") {
        Executor::Machine(machine(w, rep))
    } else {
        Executor::None
    };
    let parallelism = match m.get("parallelism") {
        None => 1,
        Some(p) => match &p.value {
            Value::Int(n) if *n >= 1 && *n <= 1000 => *n as u32,
            Value::Str(s) if s.parse::<u32>().is_ok_and(|n| n >= 1) => s.parse().unwrap_or(1),
            _ => {
                rep.error(
                    Some(p.span),
                    format!(
                        "`parallelism` must be an integer from 1 to 1000, found {}",
                        p.scalar_text().unwrap_or_else(|| p.type_name().into())
                    ),
                );
                1
            }
        },
    };
    let steps = m
        .get("steps")
        .and_then(Node::as_seq)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            rep.context_push(format!("step {}", i + 1));
            let out = step(s, rep);
            rep.context_pop();
            out
        })
        .collect();
    Some(Job {
        executor,
        environment: m
            .get("environment")
            .map(|e| env_list(e, rep))
            .unwrap_or_default(),
        resource_class: m
            .get("resource_class")
            .and_then(|r| text(r, "resource_class", rep)),
        parallelism,
        working_directory: m
            .get("working_directory")
            .and_then(|w| text(w, "working_directory", rep))
            .unwrap_or_else(|| "~/project".into()),
        shell: m.get("shell").and_then(|s| text(s, "shell", rep)),
        steps,
    })
}

fn machine(n: &Node, rep: &mut Reporter) -> Machine {
    match &n.value {
        Value::Map(m) => {
            check_keys(
                m,
                &[
                    "image",
                    "docker_layer_caching",
                    "resource_class",
                    "shell",
                    "enabled",
                ],
                "`machine`",
                rep,
            );
            Machine {
                image: m.get("image").and_then(|i| text(i, "image", rep)),
                docker_layer_caching: m
                    .get("docker_layer_caching")
                    .is_some_and(|d| expr::truthy(&d.value)),
            }
        }
        Value::Bool(_) | Value::Null => Machine::default(),
        Value::Str(s) => Machine {
            image: Some(s.clone()),
            ..Machine::default()
        },
        _ => {
            rep.error(Some(n.span), "`machine` must be true or a map");
            Machine::default()
        }
    }
}

fn argv(n: &Node, rep: &mut Reporter) -> Vec<String> {
    match &n.value {
        Value::Str(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => strings(n, "command", rep),
    }
}

fn docker_image(n: &Node, rep: &mut Reporter) -> Option<DockerImage> {
    let Some(m) = n.as_map() else {
        rep.error(
            Some(n.span),
            format!(
                "a docker image must be a map with `image`, found {}",
                n.type_name()
            ),
        );
        return None;
    };
    check_keys(
        m,
        &[
            "image",
            "name",
            "entrypoint",
            "command",
            "user",
            "environment",
            "auth",
            "aws_auth",
            "gcp_auth",
        ],
        "a docker image",
        rep,
    );
    let Some(image) = m.get("image").and_then(|i| text(i, "image", rep)) else {
        rep.error(Some(n.span), "required key [image] not found");
        return None;
    };
    let auth = m.get("auth").and_then(|a| {
        let user = a.get("username").and_then(Node::scalar_text);
        let pass = a.get("password").and_then(Node::scalar_text);
        match (user, pass) {
            (Some(username), Some(password)) => Some(DockerAuth { username, password }),
            _ => {
                rep.error(Some(a.span), "`auth` needs `username` and `password`");
                None
            }
        }
    });
    let aws_auth = m.get("aws_auth").and_then(|a| {
        if let Some(role) = a.get("oidc_role_arn").and_then(Node::scalar_text) {
            return Some(AwsAuth::Oidc { role_arn: role });
        }
        let id = a.get("aws_access_key_id").and_then(Node::scalar_text);
        let secret = a.get("aws_secret_access_key").and_then(Node::scalar_text);
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Some(AwsAuth::Keys {
                access_key_id,
                secret_access_key,
            }),
            _ => {
                rep.error(
                    Some(a.span),
                    "`aws_auth` needs `aws_access_key_id` and `aws_secret_access_key`, or `oidc_role_arn`",
                );
                None
            }
        }
    });
    Some(DockerImage {
        image,
        name: m.get("name").and_then(|x| text(x, "name", rep)),
        entrypoint: m.get("entrypoint").map(|e| argv(e, rep)),
        command: m.get("command").map(|e| argv(e, rep)),
        user: m.get("user").and_then(|x| text(x, "user", rep)),
        environment: m
            .get("environment")
            .map(|e| env_list(e, rep))
            .unwrap_or_default(),
        auth,
        aws_auth,
    })
}

/// Parses `20m`, `1.5h`, `30s` into seconds.
pub fn duration_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        's' => (&s[..s.len() - 1], 1.0),
        'm' => (&s[..s.len() - 1], 60.0),
        'h' => (&s[..s.len() - 1], 3600.0),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n * mult)
}

fn when(n: Option<&Node>, rep: &mut Reporter) -> When {
    match n.and_then(Node::as_str) {
        None => {
            if let Some(n) = n {
                rep.error(Some(n.span), "`when` must be always, on_success or on_fail");
            }
            When::OnSuccess
        }
        Some("always") => When::Always,
        Some("on_success") => When::OnSuccess,
        Some("on_fail") => When::OnFail,
        Some(other) => {
            rep.error(
                n.map(|n| n.span),
                format!("invalid `when` value '{other}': use always, on_success or on_fail"),
            );
            When::OnSuccess
        }
    }
}

fn run(arg: &Node, rep: &mut Reporter) -> Option<Run> {
    if let Value::Str(cmd) = &arg.value {
        return Some(Run {
            command: cmd.clone(),
            no_output_timeout_secs: 600.0,
            ..Run::default()
        });
    }
    let Some(m) = arg.as_map() else {
        rep.error(
            Some(arg.span),
            format!(
                "`run` must be a command string or a map, found {}",
                arg.type_name()
            ),
        );
        return None;
    };
    check_keys(
        m,
        &[
            "command",
            "name",
            "shell",
            "background",
            "working_directory",
            "no_output_timeout",
            "when",
            "environment",
            "max_auto_reruns",
            "auto_rerun_delay",
        ],
        "a `run` step",
        rep,
    );
    let Some(command) = m.get("command").and_then(|c| text(c, "command", rep)) else {
        rep.error(Some(arg.span), "required key [command] not found in `run`");
        return None;
    };
    let no_output_timeout_secs = match m.get("no_output_timeout") {
        None => 600.0,
        Some(t) => match t.scalar_text().as_deref().and_then(duration_secs) {
            Some(s) => s,
            None => {
                rep.error(
                    Some(t.span),
                    "`no_output_timeout` must be a duration such as 20m, 1.5h or 30s",
                );
                600.0
            }
        },
    };
    let max_auto_reruns = match m.get("max_auto_reruns") {
        None => None,
        Some(n) => match n.value {
            Value::Int(i @ 1..=5) => Some(i as u32),
            _ => {
                rep.error(
                    Some(n.span),
                    "`max_auto_reruns` must be an integer from 1 to 5",
                );
                None
            }
        },
    };
    let background = m
        .get("background")
        .is_some_and(|b| matches!(b.value, Value::Bool(true)));
    if background && max_auto_reruns.is_some() {
        rep.error(
            Some(arg.span),
            "Background steps cannot use max_auto_reruns or auto_rerun_delay fields",
        );
    }
    Some(Run {
        command,
        name: m.get("name").and_then(|x| text(x, "name", rep)),
        shell: m.get("shell").and_then(|x| text(x, "shell", rep)),
        background,
        working_directory: m
            .get("working_directory")
            .and_then(|x| text(x, "working_directory", rep)),
        no_output_timeout_secs,
        when: when(m.get("when"), rep),
        environment: m
            .get("environment")
            .map(|e| env_list(e, rep))
            .unwrap_or_default(),
        max_auto_reruns,
        auto_rerun_delay_secs: m
            .get("auto_rerun_delay")
            .and_then(Node::scalar_text)
            .and_then(|d| duration_secs(&d)),
    })
}

fn step(s: &Node, rep: &mut Reporter) -> Option<Step> {
    let (name, arg) = match &s.value {
        Value::Str(n) => (n.as_str(), None),
        Value::Map(m) if m.len() == 1 => (m.entries[0].0.name.as_str(), Some(&m.entries[0].1)),
        _ => return None,
    };
    let empty = Map::default();
    let args = arg.and_then(Node::as_map).unwrap_or(&empty);
    let opt = |k: &str, rep: &mut Reporter| args.get(k).and_then(|v| text(v, k, rep));
    let need = |k: &str, rep: &mut Reporter| -> Option<String> {
        let v = opt(k, rep);
        if v.is_none() {
            rep.error(
                Some(arg.map_or(s.span, |a| a.span)),
                format!("required key [{k}] not found in `{name}`"),
            );
        }
        v
    };
    let allowed: &[&str] = match name {
        "checkout" => &["path", "method", "depth", "name"],
        "setup_remote_docker" => &[
            "version",
            "docker_layer_caching",
            "prefer_same_region",
            "name",
        ],
        "save_cache" => &["key", "paths", "name", "when"],
        "restore_cache" => &["key", "keys", "name"],
        "store_artifacts" => &["path", "destination", "name"],
        "store_test_results" => &["path", "name"],
        "persist_to_workspace" => &["root", "paths", "name"],
        "attach_workspace" => &["at", "name"],
        "add_ssh_keys" => &["fingerprints", "name"],
        _ => &[],
    };
    if !allowed.is_empty() {
        check_keys(args, allowed, &format!("a `{name}` step"), rep);
    }
    Some(match name {
        "run" | "deploy"
            if arg.is_some_and(|a| a.get("command").is_none() && a.as_map().is_some()) =>
        {
            let at = s.as_map().map_or(s.span, |m| m.entries[0].0.span);
            rep.error(
                Some(at),
                format!("required key [command] not found in `{name}`"),
            );
            return None;
        }
        "run" => Step::Run(run(arg?, rep)?),
        "deploy" => Step::Deploy(run(arg?, rep)?),
        "checkout" => Step::Checkout {
            path: opt("path", rep),
            method: opt("method", rep),
            depth: match opt("depth", rep) {
                None => None,
                Some(d) => match d.parse::<u32>() {
                    Ok(n) if n >= 1 => Some(n),
                    _ => {
                        rep.error(
                            args.get("depth").map(|n| n.span),
                            format!("`depth` must be a positive integer, found {d:?}"),
                        );
                        return None;
                    }
                },
            },
        },
        "setup_remote_docker" => Step::SetupRemoteDocker {
            version: opt("version", rep),
            docker_layer_caching: args
                .get("docker_layer_caching")
                .is_some_and(|d| expr::truthy(&d.value)),
        },
        "save_cache" => Step::SaveCache {
            name: opt("name", rep),
            key: need("key", rep)?,
            paths: match args.get("paths") {
                Some(p) => strings(p, "paths", rep),
                None => {
                    rep.error(
                        Some(s.span),
                        "required key [paths] not found in `save_cache`",
                    );
                    return None;
                }
            },
            when: when(args.get("when"), rep),
        },
        "restore_cache" => {
            let mut keys: Vec<String> = opt("key", rep).into_iter().collect();
            if let Some(k) = args.get("keys") {
                keys.extend(strings(k, "keys", rep));
            }
            if keys.is_empty() {
                rep.error(Some(s.span), "`restore_cache` needs `key` or `keys`");
                return None;
            }
            Step::RestoreCache {
                name: opt("name", rep),
                keys,
            }
        }
        "store_artifacts" => Step::StoreArtifacts {
            name: opt("name", rep),
            path: need("path", rep)?,
            destination: opt("destination", rep),
        },
        "store_test_results" => Step::StoreTestResults {
            name: opt("name", rep),
            path: need("path", rep)?,
        },
        "persist_to_workspace" => Step::PersistToWorkspace {
            name: opt("name", rep),
            root: opt("root", rep).unwrap_or_else(|| ".".into()),
            paths: match args.get("paths") {
                Some(p) => strings(p, "paths", rep),
                None => {
                    rep.error(
                        Some(s.span),
                        "required key [paths] not found in `persist_to_workspace`",
                    );
                    return None;
                }
            },
        },
        "attach_workspace" => Step::AttachWorkspace {
            name: opt("name", rep),
            at: need("at", rep)?,
        },
        "add_ssh_keys" => Step::AddSshKeys {
            fingerprints: args
                .get("fingerprints")
                .map(|f| strings(f, "fingerprints", rep))
                .unwrap_or_default(),
        },
        "install_signing_bundle" => Step::InstallSigningBundle,
        _ => return None,
    })
}
