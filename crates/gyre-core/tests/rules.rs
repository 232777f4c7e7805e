//! Table-driven tests, one table per rule of the state machine. A workflow is written
//! as `name[*N|!|~][<req[:status/status],…]` items separated by `;` (`*N` parallelism,
//! `!` approval, `~` no-op); a script as steps separated by `;`:
//! `ok|fail|infra|timeout|aborted|start|expire JOB[.NODE]` (no node: every live task
//! of the job), `approve JOB`, `canceljob JOB`, `cancel`, `rerun`, `rerun-failed`.
//! The expectation is `workflow_status: job=status …`.

use gyre_config::plan::{
    Filters, InstanceKind, JobInstance, RequiredStatus, Requirement, Workflow,
};
use gyre_core::{
    Action, Error, Event, JobId, JobStatus, TaskId, TaskResult, Trigger, WorkflowState,
    WorkflowStatus,
};
use std::collections::BTreeMap;

fn workflow(spec: &str) -> (Workflow, BTreeMap<String, u32>) {
    let mut jobs = Vec::new();
    let mut parallelism = BTreeMap::new();
    for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (head, reqs) = item.split_once('<').unwrap_or((item, ""));
        let (mut name, mut kind, mut n) = (head, InstanceKind::Build, 1);
        if let Some(s) = head.strip_suffix('!') {
            (name, kind) = (s, InstanceKind::Approval);
        } else if let Some(s) = head.strip_suffix('~') {
            (name, kind) = (s, InstanceKind::NoOp);
        } else if let Some((s, k)) = head.split_once('*') {
            (name, n) = (s, k.parse().expect("parallelism"));
        }
        let requires = reqs
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| {
                let (job, statuses) = r.split_once(':').unwrap_or((r, "success"));
                let statuses = statuses
                    .split('/')
                    .flat_map(|s| match s {
                        "success" => vec![RequiredStatus::Success],
                        "failed" => vec![RequiredStatus::Failed],
                        "canceled" => vec![RequiredStatus::Canceled],
                        "not_run" => vec![RequiredStatus::NotRun],
                        "terminal" => vec![
                            RequiredStatus::Success,
                            RequiredStatus::Failed,
                            RequiredStatus::Canceled,
                            RequiredStatus::Unauthorized,
                            RequiredStatus::NotRun,
                        ],
                        other => panic!("status {other}"),
                    })
                    .collect();
                Requirement {
                    job: job.to_string(),
                    statuses,
                }
            })
            .collect();
        parallelism.insert(name.to_string(), n);
        jobs.push(JobInstance {
            name: name.to_string(),
            job: (kind != InstanceKind::Approval).then(|| name.to_string()),
            kind,
            requires,
            filters: Filters::None,
            contexts: Vec::new(),
            serial_group: None,
            matrix_alias: None,
        });
    }
    let wf = Workflow {
        name: "w".into(),
        jobs,
        schedules: Vec::new(),
        max_auto_reruns: None,
    };
    (wf, parallelism)
}

fn on_main() -> Trigger {
    Trigger {
        branch: Some("main".into()),
        ..Trigger::default()
    }
}

fn start(spec: &str) -> (WorkflowState, Vec<Action>) {
    let (wf, par) = workflow(spec);
    WorkflowState::new(&wf, &|b| par.get(b).copied(), &on_main()).expect("valid workflow")
}

fn job(state: &WorkflowState, name: &str) -> JobId {
    state
        .job_by_name(name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

/// Runs a script; returns every action, or the first error with the state as it was.
fn run(spec: &str, script: &str) -> (WorkflowState, Result<Vec<Action>, Error>) {
    let (mut state, mut actions) = start(spec);
    for step in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (verb, arg) = step.split_once(' ').unwrap_or((step, ""));
        let (name, node) = match arg.split_once('.') {
            Some((n, i)) => (n, Some(i.parse::<usize>().expect("node"))),
            None => (arg, None),
        };
        let events: Vec<Event> = match verb {
            "approve" => vec![Event::Approve {
                job: job(&state, name),
                by: "alice".into(),
            }],
            "canceljob" => vec![Event::CancelJob {
                job: job(&state, name),
            }],
            "cancel" => vec![Event::Cancel],
            "rerun" => vec![Event::RerunFromStart],
            "rerun-failed" => vec![Event::RerunFromFailed],
            "raw-task" => vec![Event::TaskStarted {
                task: TaskId(arg.parse().expect("task id")),
            }],
            "raw-job" => vec![Event::CancelJob {
                job: JobId(arg.parse().expect("job id")),
            }],
            _ => {
                let j = state.job(job(&state, name)).expect("job");
                let tasks: Vec<TaskId> = match node {
                    Some(i) => vec![j.tasks[i]],
                    None => j
                        .tasks
                        .iter()
                        .copied()
                        .filter(|t| !state.task(*t).expect("task").status.is_terminal())
                        .collect(),
                };
                tasks
                    .into_iter()
                    .flat_map(|task| match verb {
                        "start" => vec![Event::TaskStarted { task }],
                        "expire" => vec![Event::LeaseExpired { task }],
                        _ => {
                            let result = match verb {
                                "ok" => TaskResult::Success,
                                "fail" => TaskResult::Failed,
                                "infra" => TaskResult::InfrastructureFail,
                                "timeout" => TaskResult::Timedout,
                                "aborted" => TaskResult::Canceled,
                                other => panic!("verb {other}"),
                            };
                            vec![
                                Event::TaskStarted { task },
                                Event::TaskFinished { task, result },
                            ]
                        }
                    })
                    .collect()
            }
        };
        for e in events {
            let before = state.clone();
            match state.apply(e) {
                Ok(a) => actions.extend(a),
                Err(err) => {
                    assert_eq!(state, before, "an error must leave the state unchanged");
                    return (state, Err(err));
                }
            }
        }
    }
    (state, Ok(actions))
}

fn summary(state: &WorkflowState) -> String {
    let jobs: Vec<String> = state
        .jobs()
        .iter()
        .map(|j| format!("{}={}", j.name, j.status))
        .collect();
    format!("{}: {}", state.status(), jobs.join(" "))
}

fn check(cases: &[(&str, &str, &str)]) {
    for (spec, script, expect) in cases {
        let (state, result) = run(spec, script);
        if let Err(e) = result {
            panic!("{spec} / {script}: {e}");
        }
        assert_eq!(
            summary(&state),
            *expect,
            "workflow `{spec}`, script `{script}`"
        );
    }
}

#[test]
fn initial_statuses() {
    check(&[
        ("a; b<a", "", "running: a=queued b=blocked"),
        ("h!; b<h", "", "on_hold: h=on_hold b=blocked"),
        ("a; h!<a; b<h", "", "running: a=queued h=blocked b=blocked"),
        ("n~; b<n", "", "running: n=success b=queued"),
        ("n~", "", "success: n=success"),
        ("b<a; a", "", "running: b=blocked a=queued"),
    ]);
}

#[test]
fn requires_plain_names_need_success() {
    check(&[
        ("a; b<a", "ok a", "running: a=success b=queued"),
        ("a; b<a", "ok a; ok b", "success: a=success b=success"),
        (
            "a; b<a; c<b",
            "fail a",
            "failed: a=failed b=not_run c=not_run",
        ),
        ("a; b<a", "aborted a", "canceled: a=canceled b=not_run"),
        (
            "a; b; c<a,b",
            "ok a",
            "running: a=success b=queued c=blocked",
        ),
        (
            "a; b; c<a,b",
            "ok a; fail b",
            "failed: a=success b=failed c=not_run",
        ),
    ]);
}

#[test]
fn requires_with_statuses() {
    // Spec §16.6 and §5.3: a job waits for every requirement to end, then runs only if
    // each ended in an accepted status.
    let wf = "deploy; rollback<deploy:failed/canceled; cleanup<deploy:terminal";
    check(&[
        (
            wf,
            "ok deploy",
            "running: deploy=success rollback=not_run cleanup=queued",
        ),
        (
            wf,
            "ok deploy; ok cleanup",
            "success: deploy=success rollback=not_run cleanup=success",
        ),
        (
            wf,
            "fail deploy",
            "failing: deploy=failed rollback=queued cleanup=queued",
        ),
        (
            wf,
            "aborted deploy",
            "running: deploy=canceled rollback=queued cleanup=queued",
        ),
        ("a; b<a:failed", "timeout a", "failing: a=timedout b=queued"),
        (
            "a; b<a:failed",
            "infra a",
            "failing: a=infrastructure_fail b=queued",
        ),
        ("a; b<a:failed", "ok a", "success: a=success b=not_run"),
        (
            "a; b<a; c<b:not_run",
            "fail a",
            "failing: a=failed b=not_run c=queued",
        ),
        (
            "a; b; c<a:terminal,b",
            "fail a",
            "failing: a=failed b=queued c=blocked",
        ),
        (
            "a; b; c<a:terminal,b",
            "fail a; ok b",
            "failing: a=failed b=success c=queued",
        ),
        (
            "a; b; c<a:terminal,b",
            "fail a; ok b; ok c",
            "failed: a=failed b=success c=success",
        ),
    ]);
}

#[test]
fn workflow_status() {
    check(&[
        ("a; b", "fail a", "failing: a=failed b=queued"),
        ("a; b", "fail a; ok b", "failed: a=failed b=success"),
        ("a; h!", "ok a", "on_hold: a=success h=on_hold"),
        ("a; h!", "fail a", "failing: a=failed h=on_hold"),
        ("a; h!", "fail a; approve h", "failed: a=failed h=success"),
        ("a; h!", "start a", "running: a=running h=on_hold"),
        (
            "a; b<a:canceled",
            "canceljob a",
            "running: a=canceled b=queued",
        ),
        (
            "a; b<a:canceled",
            "canceljob a; ok b",
            "canceled: a=canceled b=success",
        ),
        ("a; b", "aborted a; fail b", "failed: a=canceled b=failed"),
    ]);
}

#[test]
fn approvals() {
    let wf = "a; h!<a; d<h";
    check(&[
        (wf, "ok a", "on_hold: a=success h=on_hold d=blocked"),
        (
            wf,
            "ok a; approve h",
            "running: a=success h=success d=queued",
        ),
        (
            wf,
            "ok a; approve h; ok d",
            "success: a=success h=success d=success",
        ),
        (
            wf,
            "ok a; canceljob h",
            "canceled: a=success h=canceled d=not_run",
        ),
        (wf, "fail a", "failed: a=failed h=not_run d=not_run"),
        (
            "h!; d<h:canceled",
            "canceljob h",
            "running: h=canceled d=queued",
        ),
    ]);
    let (state, _) = run(wf, "ok a; approve h");
    let h = state.job(job(&state, "h")).expect("h");
    assert_eq!(h.approved_by.as_deref(), Some("alice"));
}

#[test]
fn no_op_jobs_succeed_when_reached() {
    check(&[
        (
            "a; n~<a; b<n",
            "ok a",
            "running: a=success n=success b=queued",
        ),
        (
            "a; n~<a; b<n",
            "fail a",
            "failed: a=failed n=not_run b=not_run",
        ),
    ]);
}

#[test]
fn parallelism() {
    let (state, actions) = start("a*3; b<a");
    let enqueued: Vec<(u32, u32)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::EnqueueTask {
                node_index,
                attempt,
                ..
            } => Some((*node_index, *attempt)),
            _ => None,
        })
        .collect();
    assert_eq!(enqueued, [(0, 0), (1, 0), (2, 0)]);
    assert_eq!(state.jobs()[0].tasks.len(), 3);
    let (state, actions) = start("a*5000");
    assert_eq!(state.jobs()[0].parallelism, gyre_core::MAX_PARALLELISM);
    assert_eq!(actions.len(), 1000);
    check(&[
        ("a*3; b<a", "ok a", "running: a=success b=queued"),
        // A failing node does not cancel the others; the job waits for all of them.
        ("a*3; b<a", "fail a.0", "running: a=running b=blocked"),
        (
            "a*3; b<a",
            "fail a.0; ok a.1",
            "running: a=running b=blocked",
        ),
        (
            "a*3; b<a",
            "fail a.0; ok a.1; ok a.2",
            "failed: a=failed b=not_run",
        ),
        ("a*2", "timeout a.0; fail a.1", "failed: a=failed"),
        ("a*2", "timeout a.0; infra a.1", "failed: a=timedout"),
        (
            "a*2",
            "aborted a.0; infra a.1",
            "failed: a=infrastructure_fail",
        ),
        ("a*2", "aborted a.0; ok a.1", "canceled: a=canceled"),
        ("a*0", "ok a", "success: a=success"),
    ]);
}

#[test]
fn lost_lease_is_retried_once() {
    check(&[
        (
            "a; b<a",
            "start a.0; expire a.0",
            "running: a=running b=blocked",
        ),
        ("a; b<a", "expire a.0", "running: a=queued b=blocked"),
        (
            "a; b<a",
            "start a.0; expire a.0; ok a.0",
            "running: a=success b=queued",
        ),
        (
            "a; b<a",
            "start a.0; expire a.0; start a.0; expire a.0",
            "failed: a=infrastructure_fail b=not_run",
        ),
        (
            "a; b<a:failed",
            "expire a; expire a",
            "failing: a=infrastructure_fail b=queued",
        ),
        // An infrastructure failure the agent reports itself is final.
        (
            "a; b<a",
            "infra a.0",
            "failed: a=infrastructure_fail b=not_run",
        ),
        // Each node has its own retry.
        ("a*2", "expire a.0; expire a.1; ok a", "success: a=success"),
    ]);
    let (state, result) = run("a", "start a.0; expire a.0");
    let actions = result.expect("ok");
    let task0 = state.task(TaskId(0)).expect("first attempt");
    assert_eq!(task0.status, JobStatus::InfrastructureFail);
    assert!(actions.contains(&Action::EnqueueTask {
        task: TaskId(1),
        job: JobId(0),
        node_index: 0,
        attempt: 1,
    }));
    assert_eq!(state.jobs()[0].tasks, [TaskId(1)]);
}

#[test]
fn stale_task_events_are_ignored() {
    // The first attempt after its lease expired, a repeated result, a result after
    // cancel: accepted, no effect.
    for (script, late) in [
        (
            "expire a.0",
            Event::TaskFinished {
                task: TaskId(0),
                result: TaskResult::Success,
            },
        ),
        (
            "ok a.0",
            Event::TaskFinished {
                task: TaskId(0),
                result: TaskResult::Failed,
            },
        ),
        ("ok a.0", Event::LeaseExpired { task: TaskId(0) }),
        (
            "start a.0; cancel",
            Event::TaskFinished {
                task: TaskId(0),
                result: TaskResult::Success,
            },
        ),
        ("start a.0; cancel", Event::TaskStarted { task: TaskId(0) }),
    ] {
        let (mut state, result) = run("a; b<a", script);
        result.expect("script");
        let before = state.clone();
        assert_eq!(
            state.apply(late.clone()),
            Ok(vec![]),
            "{script} then {late:?}"
        );
        assert_eq!(state, before);
    }
}

#[test]
fn cancel() {
    check(&[
        (
            "a; b<a; h!",
            "start a; cancel",
            "canceled: a=canceled b=canceled h=canceled",
        ),
        ("a; b", "fail a; cancel", "canceled: a=failed b=canceled"),
        (
            "a; b<a; c<a:canceled",
            "canceljob a",
            "running: a=canceled b=not_run c=queued",
        ),
        ("a; b<a", "canceljob b", "running: a=queued b=canceled"),
        (
            "a; b<a",
            "canceljob b; ok a",
            "canceled: a=success b=canceled",
        ),
    ]);
    let (_, result) = run("a*2; b", "start a.0; cancel");
    let cancels: Vec<Action> = result
        .expect("ok")
        .into_iter()
        .filter(|a| matches!(a, Action::CancelTask { .. }))
        .collect();
    // a's two tasks and b's one, each once.
    assert_eq!(
        cancels,
        [TaskId(0), TaskId(1), TaskId(2)].map(|task| Action::CancelTask { task })
    );
}

#[test]
fn reruns() {
    let wf = "a; b; c<a; d<b";
    check(&[
        (
            wf,
            "ok a; ok c; fail b; rerun-failed",
            "running: a=success b=queued c=success d=blocked",
        ),
        (
            wf,
            "ok a; ok c; fail b; rerun-failed; ok b; ok d",
            "success: a=success b=success c=success d=success",
        ),
        (
            wf,
            "ok a; ok c; fail b; rerun",
            "running: a=queued b=queued c=blocked d=blocked",
        ),
        (
            "a; b<a:terminal",
            "fail a; ok b; rerun-failed",
            "running: a=queued b=success",
        ),
        (
            "a; h!<a",
            "ok a; canceljob h; rerun-failed",
            "on_hold: a=success h=on_hold",
        ),
        (
            "a; h!<a",
            "ok a; approve h; rerun",
            "running: a=queued h=blocked",
        ),
        (
            "a; b<a",
            "start a; cancel; rerun-failed",
            "running: a=queued b=blocked",
        ),
        // A fresh automatic retry in the new run.
        (
            "a",
            "expire a; fail a; rerun-failed; expire a; ok a",
            "success: a=success",
        ),
    ]);
    let (state, _) = run(wf, "ok a; ok c; fail b; rerun-failed");
    assert_eq!(state.run_number(), 1);
    let b = state.job(job(&state, "b")).expect("b");
    let task = state.task(b.tasks[0]).expect("task");
    assert_eq!((task.run, task.attempt, task.id), (1, 0, TaskId(3)));
}

#[test]
fn errors_leave_the_state_unchanged() {
    type Expect = fn(&Error) -> bool;
    let cases: &[(&str, &str, Expect)] = &[
        ("a", "raw-task 7", |e| {
            matches!(e, Error::UnknownTask(TaskId(7)))
        }),
        ("a", "raw-job 3", |e| {
            matches!(e, Error::UnknownJob(JobId(3)))
        }),
        ("a", "approve a", |e| matches!(e, Error::NotApproval { .. })),
        ("a; h!<a", "approve h", |e| {
            matches!(
                e,
                Error::NotOnHold {
                    status: JobStatus::Blocked,
                    ..
                }
            )
        }),
        ("h!", "approve h; approve h", |e| {
            matches!(e, Error::WorkflowFinished(_) | Error::NotOnHold { .. })
        }),
        ("a", "ok a; canceljob a", |e| {
            matches!(
                e,
                Error::JobFinished {
                    status: JobStatus::Success,
                    ..
                }
            )
        }),
        ("a", "ok a; cancel", |e| {
            matches!(e, Error::WorkflowFinished(WorkflowStatus::Success))
        }),
        ("a", "rerun", |e| {
            matches!(e, Error::NotFinished(WorkflowStatus::Running))
        }),
        ("a", "ok a; rerun-failed", |e| {
            matches!(e, Error::NothingToRerun)
        }),
        ("a; h!", "fail a; rerun", |e| {
            matches!(e, Error::NotFinished(WorkflowStatus::Failing))
        }),
    ];
    for (spec, script, expect) in cases {
        let (_, result) = run(spec, script);
        match result {
            Err(e) => assert!(expect(&e), "{spec} / {script}: unexpected error {e}"),
            Ok(_) => panic!("{spec} / {script}: expected an error"),
        }
    }
}

#[test]
fn invalid_workflows_are_errors() {
    let build = |spec: &str| {
        let (wf, par) = workflow(spec);
        WorkflowState::new(&wf, &|b| par.get(b).copied(), &on_main()).map(|_| ())
    };
    assert!(
        matches!(build("a<b"), Err(Error::UnknownRequirement { required, .. }) if required == "b")
    );
    assert!(matches!(build("a<b; b<a"), Err(Error::Cycle { .. })));
    assert!(matches!(build("a; b<b"), Err(Error::Cycle { job, .. }) if job == "b"));
    assert!(matches!(build("a; a"), Err(Error::DuplicateJob { job, .. }) if job == "a"));
    let (wf, _) = workflow("a");
    assert!(matches!(
        WorkflowState::new(&wf, &|_| None, &on_main()),
        Err(Error::UnknownJobBody { body, .. }) if body == "a"
    ));
}
