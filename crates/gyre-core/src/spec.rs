//! From the typed plan to the task an agent runs: one [`TaskSpec`] per parallel node of
//! a build job. Shared by the server and `gyre local execute`, so both run jobs alike.

use gyre_config::plan::{self, Executor as PlanExecutor, Step};
use gyre_protocol::{
    AwsAuth, CheckoutSource, ContainerSpec, EnvSource, EnvVar, ExecutorSpec, JobInfo, NodeInfo,
    RegistryAuth, Resources, RunStep, StepSpec, TASK_SPEC_VERSION, TaskSpec, When,
};

/// CPU and memory of a resource class (spec §3.8, Docker x86 sizes).
pub fn resources(class: Option<&str>) -> Resources {
    let (cpus, gb) = match class.map(|c| c.trim_end_matches(".gen2")) {
        Some("small") => (1.0, 2),
        Some("medium") => (2.0, 4),
        Some("medium+") => (3.0, 6),
        Some("large") => (4.0, 8),
        Some("xlarge") => (8.0, 16),
        Some("2xlarge") => (16.0, 32),
        Some("2xlarge+") => (20.0, 40),
        _ => return Resources::default(),
    };
    Resources {
        cpus: Some(cpus),
        memory_bytes: Some(gb << 30),
    }
}

/// The queue a job's tasks wait in: `docker` or `machine` by executor, or the job's
/// `resource_class` itself when it names a self-hosted runner class (`namespace/name`).
/// Agents claim by these names.
pub fn queue_class(job: &plan::Job) -> String {
    if let Some(class) = job.resource_class.as_deref().filter(|c| c.contains('/')) {
        return class.to_string();
    }
    executor_type(job).to_string()
}

/// The executor's type as the API shows it: `docker`, `machine` or `macos`.
pub fn executor_type(job: &plan::Job) -> &'static str {
    match job.executor {
        PlanExecutor::Machine(_) => "machine",
        PlanExecutor::Macos { .. } => "macos",
        PlanExecutor::Docker(_) | PlanExecutor::None => "docker",
    }
}

/// The task for one node of `job`. `info` carries the identity fields (name, branch,
/// build number, ids …); `env` the project and context variables, lowest precedence first.
/// The job's own `environment` is appended. `Err` says why the job cannot run anywhere.
pub fn task_spec(
    job: &plan::Job,
    info: JobInfo,
    env: &[EnvVar],
    checkout: Option<CheckoutSource>,
    node: NodeInfo,
) -> Result<TaskSpec, String> {
    let executor = match &job.executor {
        PlanExecutor::Docker(images) => ExecutorSpec::Docker {
            images: images
                .iter()
                .map(|i| ContainerSpec {
                    image: i.image.clone(),
                    name: i.name.clone(),
                    entrypoint: i.entrypoint.clone(),
                    command: i.command.clone(),
                    user: i.user.clone(),
                    environment: i.environment.clone(),
                    auth: i.auth.as_ref().map(|a| RegistryAuth {
                        username: a.username.clone(),
                        password: a.password.clone(),
                    }),
                    aws_auth: i.aws_auth.as_ref().map(aws_auth),
                })
                .collect(),
        },
        PlanExecutor::Machine(m) => ExecutorSpec::Machine {
            image: m.image.clone(),
        },
        PlanExecutor::Macos { .. } => return Err("macOS jobs need a macOS agent".into()),
        PlanExecutor::None => return Err("the job has no executor".into()),
    };
    let mut environment = env.to_vec();
    environment.extend(job.environment.iter().map(|(k, v)| EnvVar {
        name: k.clone(),
        value: v.clone(),
        secret: false,
        source: EnvSource::Job,
    }));
    let steps = job
        .steps
        .iter()
        .filter_map(|s| step_spec(s, node))
        .collect();
    Ok(TaskSpec {
        version: TASK_SPEC_VERSION,
        job: info,
        executor,
        working_directory: job.working_directory.clone(),
        shell: job.shell.clone(),
        environment,
        resources: resources(job.resource_class.as_deref()),
        node,
        checkout,
        steps,
    })
}

fn aws_auth(auth: &plan::AwsAuth) -> AwsAuth {
    match auth {
        plan::AwsAuth::Keys {
            access_key_id,
            secret_access_key,
        } => AwsAuth::Keys {
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
        },
        plan::AwsAuth::Oidc { role_arn } => AwsAuth::Oidc {
            role_arn: role_arn.clone(),
        },
    }
}

fn when(w: plan::When) -> When {
    match w {
        plan::When::Always => When::Always,
        plan::When::OnSuccess => When::OnSuccess,
        plan::When::OnFail => When::OnFail,
    }
}

/// A plan `run` step as the executor takes it.
pub fn run_step(r: &plan::Run) -> RunStep {
    RunStep {
        name: r.name.clone(),
        command: r.command.clone(),
        shell: r.shell.clone(),
        background: r.background,
        working_directory: r.working_directory.clone(),
        no_output_timeout_ms: Some((r.no_output_timeout_secs * 1000.0) as u64),
        when: when(r.when),
        environment: r.environment.clone(),
        max_auto_reruns: r.max_auto_reruns,
        // The compiler allows at most 10m; `as` saturates anything odd (negative, NaN → 0).
        auto_rerun_delay_ms: r.auto_rerun_delay_secs.map(|s| (s * 1000.0) as u64),
    }
}

/// A plan step as the executor takes it; `None` for steps that do nothing here.
fn step_spec(s: &Step, node: NodeInfo) -> Option<StepSpec> {
    Some(match s {
        Step::Run(r) => StepSpec::Run(run_step(r)),
        // `deploy` runs only on node 0 (spec §4.14).
        Step::Deploy(r) => {
            if node.index != 0 {
                return None;
            }
            StepSpec::Run(run_step(r))
        }
        Step::Checkout {
            path,
            method,
            depth,
        } => StepSpec::Checkout {
            path: path.clone(),
            method: method.clone(),
            depth: *depth,
        },
        Step::SetupRemoteDocker { version, .. } => StepSpec::SetupRemoteDocker {
            version: version.clone(),
        },
        Step::SaveCache {
            name,
            key,
            paths,
            when: w,
        } => StepSpec::SaveCache {
            name: name.clone(),
            key: key.clone(),
            paths: paths.clone(),
            when: when(*w),
        },
        Step::RestoreCache { name, keys } => StepSpec::RestoreCache {
            name: name.clone(),
            keys: keys.clone(),
        },
        Step::StoreArtifacts {
            path, destination, ..
        } => StepSpec::StoreArtifacts {
            path: path.clone(),
            destination: destination.clone(),
        },
        Step::StoreTestResults { path, .. } => StepSpec::StoreTestResults { path: path.clone() },
        Step::PersistToWorkspace { root, paths, .. } => StepSpec::PersistToWorkspace {
            root: root.clone(),
            paths: paths.clone(),
        },
        Step::AttachWorkspace { at, .. } => StepSpec::AttachWorkspace { at: at.clone() },
        Step::AddSshKeys { fingerprints } => StepSpec::AddSshKeys {
            fingerprints: fingerprints.clone(),
        },
        Step::InstallSigningBundle => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_step_carries_auto_reruns() {
        let plan = plan::Run {
            command: "make test".into(),
            no_output_timeout_secs: 600.0,
            max_auto_reruns: Some(3),
            auto_rerun_delay_secs: Some(120.0),
            ..plan::Run::default()
        };
        let step = run_step(&plan);
        assert_eq!(step.max_auto_reruns, Some(3));
        assert_eq!(step.auto_rerun_delay_ms, Some(120_000));
        let plain = run_step(&plan::Run {
            command: "make".into(),
            ..plan::Run::default()
        });
        assert_eq!(
            (plain.max_auto_reruns, plain.auto_rerun_delay_ms),
            (None, None)
        );
    }
}
