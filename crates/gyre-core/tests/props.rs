//! Property tests: random DAG workflows (build, approval and no-op jobs, parallelism,
//! status requires, branch filters) under random event orders, including invalid
//! events. After every event the invariants below must hold; at the end the workflow is
//! driven to completion and replayed.

use gyre_config::plan::{
    FilterSpec, Filters, InstanceKind, JobInstance, Pattern, RequiredStatus, Requirement, Workflow,
};
use gyre_core::{
    Action, Event, JobId, JobStatus, TaskId, TaskResult, Trigger, WorkflowState, WorkflowStatus,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

const STATUSES: [RequiredStatus; 5] = [
    RequiredStatus::Success,
    RequiredStatus::Failed,
    RequiredStatus::Canceled,
    RequiredStatus::Unauthorized,
    RequiredStatus::NotRun,
];

#[derive(Clone, Debug)]
struct JobSpec {
    kind: InstanceKind,
    parallelism: u32,
    filtered: bool,
    /// (upstream index below this one, bit set of accepted statuses)
    requires: Vec<(usize, u8)>,
}

fn job_spec(i: usize) -> impl Strategy<Value = JobSpec> {
    let kind = prop_oneof![
        6 => Just(InstanceKind::Build),
        2 => Just(InstanceKind::Approval),
        1 => Just(InstanceKind::NoOp),
    ];
    let reqs = if i == 0 {
        Just(Vec::new()).boxed()
    } else {
        prop::collection::vec((0..i, prop_oneof![3 => Just(1u8), 1 => 1u8..32]), 0..3).boxed()
    };
    (kind, 1u32..4, prop::bool::weighted(0.15), reqs).prop_map(
        |(kind, parallelism, filtered, requires)| JobSpec {
            kind,
            parallelism,
            filtered,
            requires,
        },
    )
}

fn specs() -> impl Strategy<Value = (Vec<JobSpec>, bool)> {
    (1usize..8)
        .prop_flat_map(|n| (0..n).map(job_spec).collect::<Vec<_>>())
        .prop_flat_map(|specs| (Just(specs), any::<bool>()))
}

/// The plan workflow; listed in reverse when `reverse` (the machine must not rely on
/// the listing order).
fn workflow(specs: &[JobSpec], reverse: bool) -> (Workflow, BTreeMap<String, u32>) {
    let mut jobs: Vec<JobInstance> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| JobInstance {
            name: format!("j{i}"),
            job: (s.kind != InstanceKind::Approval).then(|| format!("j{i}")),
            kind: s.kind,
            requires: s
                .requires
                .iter()
                .map(|&(u, bits)| Requirement {
                    job: format!("j{u}"),
                    statuses: STATUSES
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| bits & (1 << k) != 0)
                        .map(|(_, s)| *s)
                        .collect(),
                })
                .collect(),
            filters: if s.filtered {
                Filters::Map {
                    branches: Some(FilterSpec {
                        only: vec![Pattern::Exact("main".into())],
                        ignore: Vec::new(),
                    }),
                    tags: None,
                }
            } else {
                Filters::None
            },
            contexts: Vec::new(),
            serial_group: None,
            matrix_alias: None,
        })
        .collect();
    if reverse {
        jobs.reverse();
    }
    let parallelism = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("j{i}"), s.parallelism))
        .collect();
    let wf = Workflow {
        name: "w".into(),
        jobs,
        schedules: Vec::new(),
        max_auto_reruns: None,
    };
    (wf, parallelism)
}

/// The events that make sense now, plus a few that do not; `pick` chooses one.
fn candidates(state: &WorkflowState, pick: u32) -> Vec<Event> {
    let mut out = Vec::new();
    for (i, job) in state.jobs().iter().enumerate() {
        for &task in &job.tasks {
            let Some(t) = state.task(task) else { continue };
            if t.status.is_terminal() {
                continue;
            }
            out.push(Event::TaskStarted { task });
            for &result in TaskResult::ALL {
                out.push(Event::TaskFinished { task, result });
            }
            out.push(Event::TaskFinished {
                task,
                result: TaskResult::Success,
            });
            out.push(Event::LeaseExpired { task });
        }
        if job.status == JobStatus::OnHold {
            out.push(Event::Approve {
                job: JobId(i as u64),
                by: "p".into(),
            });
        }
        if pick.is_multiple_of(7) {
            out.push(Event::CancelJob {
                job: JobId(i as u64),
            });
        }
    }
    if pick.is_multiple_of(11) {
        out.push(Event::Cancel);
    }
    if state.status().is_terminal() || pick.is_multiple_of(13) {
        out.push(Event::RerunFromStart);
        out.push(Event::RerunFromFailed);
        out.push(Event::RerunFromFailed);
    }
    if pick.is_multiple_of(17) || out.is_empty() {
        // Stale and unknown ids.
        out.push(Event::TaskStarted {
            task: TaskId(u64::from(pick % 5)),
        });
        out.push(Event::TaskFinished {
            task: TaskId(1000),
            result: TaskResult::Failed,
        });
        out.push(Event::Approve {
            job: JobId(u64::from(pick % 9)),
            by: "p".into(),
        });
        out.push(Event::LeaseExpired {
            task: TaskId(u64::MAX),
        });
    }
    out
}

fn accepted(state: &WorkflowState, job: usize) -> (bool, bool) {
    let mut terminal = true;
    let mut ok = true;
    for r in &state.jobs()[job].requires {
        let up = state.job(r.job).expect("requirement in the run").status;
        terminal &= up.is_terminal();
        ok &= up.as_required().is_some_and(|s| r.statuses.contains(&s));
    }
    (terminal, ok)
}

/// Mirrors what the shell knows from the actions alone, and counts attempts.
#[derive(Default)]
struct Shell {
    jobs: Vec<JobStatus>,
    workflow: Option<WorkflowStatus>,
    /// (run, job, node) → attempts enqueued
    attempts: BTreeMap<(u32, JobId, u32), u32>,
    expired: Vec<TaskId>,
}

fn check_event(
    before: &WorkflowState,
    event: &Event,
    after: &WorkflowState,
    actions: &[Action],
    shell: &mut Shell,
) -> Result<(), TestCaseError> {
    let rerun = matches!(event, Event::RerunFromStart | Event::RerunFromFailed);
    let mut started = Vec::new();
    if let Event::LeaseExpired { task } = event {
        shell.expired.push(*task);
    }
    for a in actions {
        match *a {
            Action::JobStatusChanged { job, from, to } => {
                let j = job.0 as usize;
                prop_assert_eq!(shell.jobs[j], from, "from is the status the shell knows");
                let legal = from.can_become(to)
                    || (rerun && from.is_terminal() && to == JobStatus::Blocked);
                prop_assert!(legal, "{} -> {} on {:?}", from, to, event);
                if from == JobStatus::Blocked && to != JobStatus::Canceled {
                    started.push((j, to));
                }
                shell.jobs[j] = to;
            }
            Action::WorkflowStatusChanged { from, to } => {
                prop_assert_eq!(shell.workflow, Some(from));
                prop_assert!(
                    from.can_become(to) || (rerun && from.is_terminal()),
                    "{} -> {}",
                    from,
                    to
                );
                shell.workflow = Some(to);
            }
            Action::EnqueueTask {
                task,
                job,
                node_index,
                attempt,
            } => {
                let t = after.task(task).expect("enqueued task exists");
                prop_assert_eq!((t.job, t.node_index, t.attempt), (job, node_index, attempt));
                let j = after.job(job).expect("job");
                prop_assert!(node_index < j.parallelism);
                let n = shell.attempts.entry((t.run, job, node_index)).or_default();
                *n += 1;
                prop_assert!(*n <= 2, "at most one automatic retry per node");
                prop_assert_eq!(attempt + 1, *n);
                if attempt == 1 {
                    let first = before.jobs()[job.0 as usize].tasks[node_index as usize];
                    prop_assert!(
                        shell.expired.contains(&first),
                        "retry only after a lost lease"
                    );
                    prop_assert_eq!(event, &Event::LeaseExpired { task: first });
                }
            }
            Action::CancelTask { task } => {
                prop_assert!(!before.task(task).expect("task").status.is_terminal());
            }
        }
    }
    // The actions tell the shell every change.
    let now: Vec<JobStatus> = after.jobs().iter().map(|j| j.status).collect();
    prop_assert_eq!(&shell.jobs, &now);
    prop_assert_eq!(shell.workflow, Some(after.status()));
    // No job starts before its requirements ended in accepted statuses; not_run only
    // when one did not.
    for (j, to) in started {
        let (terminal, ok) = accepted(after, j);
        prop_assert!(
            terminal,
            "job {} became {} before its requirements ended",
            j,
            to
        );
        prop_assert_eq!(ok, to != JobStatus::NotRun, "job {} became {}", j, to);
    }
    if *event == Event::RerunFromFailed {
        for (j, job) in before.jobs().iter().enumerate() {
            if job.status == JobStatus::Success {
                prop_assert_eq!(after.jobs()[j].status, JobStatus::Success);
                prop_assert_eq!(
                    &after.jobs()[j].tasks,
                    &job.tasks,
                    "a successful job is not rerun"
                );
            }
        }
    }
    check_state(after)
}

fn check_state(state: &WorkflowState) -> Result<(), TestCaseError> {
    for (j, job) in state.jobs().iter().enumerate() {
        let live = job
            .tasks
            .iter()
            .filter(|t| !state.task(**t).expect("task").status.is_terminal())
            .count();
        if job.status.is_terminal() {
            prop_assert_eq!(live, 0, "job {} is {} with live tasks", j, job.status);
        }
        if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
            prop_assert_eq!(job.tasks.len() as u32, job.parallelism);
            prop_assert!(live > 0);
        }
        if job.status == JobStatus::Blocked {
            prop_assert!(
                !accepted(state, j).0,
                "job {} blocked with all requirements ended",
                j
            );
        }
    }
    if !state.jobs().is_empty() {
        let all_done = state.jobs().iter().all(|j| j.status.is_terminal());
        prop_assert_eq!(
            state.status().is_terminal(),
            all_done,
            "workflow {}",
            state.status()
        );
    } else {
        prop_assert_eq!(state.status(), WorkflowStatus::NotRun);
    }
    Ok(())
}

fn apply(
    state: &mut WorkflowState,
    event: Event,
    shell: &mut Shell,
    log: &mut Vec<Event>,
) -> Result<(), TestCaseError> {
    let before = state.clone();
    match state.apply(event.clone()) {
        Ok(actions) => {
            log.push(event.clone());
            check_event(&before, &event, state, &actions, shell)
        }
        Err(_) => {
            prop_assert_eq!(&*state, &before, "an error leaves the state unchanged");
            Ok(())
        }
    }
}

/// Drives the workflow to its end: tasks finish with `results` in turn, approvals are
/// approved. Then every job must be terminal.
fn finish(
    state: &mut WorkflowState,
    shell: &mut Shell,
    log: &mut Vec<Event>,
    results: &[TaskResult],
) -> Result<(), TestCaseError> {
    for k in 0..500 {
        if state.status().is_terminal() {
            break;
        }
        let next = state.jobs().iter().enumerate().find_map(|(i, j)| {
            if j.status == JobStatus::OnHold {
                return Some(Event::Approve {
                    job: JobId(i as u64),
                    by: "p".into(),
                });
            }
            j.tasks
                .iter()
                .find(|t| !state.task(**t).expect("task").status.is_terminal())
                .map(|&task| Event::TaskFinished {
                    task,
                    result: results[k % results.len()],
                })
        });
        let Some(event) = next else {
            return Err(TestCaseError::fail(format!("stuck: {state:?}")));
        };
        apply(state, event, shell, log)?;
    }
    prop_assert!(state.status().is_terminal(), "did not finish: {:?}", state);
    for j in state.jobs() {
        prop_assert!(j.status.is_terminal(), "{} ended {}", j.name, j.status);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_workflows_keep_the_invariants(
        (specs, reverse) in specs(),
        picks in prop::collection::vec(any::<u32>(), 0..60),
        results in prop::collection::vec(prop_oneof![4 => Just(TaskResult::Success), 1 => Just(TaskResult::Failed), 1 => Just(TaskResult::Canceled)], 1..8),
        from_failed in any::<bool>(),
    ) {
        let (wf, par) = workflow(&specs, reverse);
        let trigger = Trigger { branch: Some("dev".into()), ..Trigger::default() };
        let (mut state, initial) = WorkflowState::new(&wf, &|b| par.get(b).copied(), &trigger)
            .expect("a DAG is a valid workflow");
        // Filters: nothing filtered is in the run; requirements stay inside the run.
        for (i, s) in specs.iter().enumerate() {
            if s.filtered {
                let name = format!("j{i}");
                prop_assert!(state.job_by_name(&name).is_none());
            }
        }
        prop_assert_eq!(state.jobs().len() + state.filtered().len(), specs.len());
        let mut shell = Shell {
            jobs: state.jobs().iter().map(|j| j.status).collect(),
            workflow: Some(state.status()),
            ..Shell::default()
        };
        for a in &initial {
            let Action::EnqueueTask { task, job, node_index, .. } = *a else {
                return Err(TestCaseError::fail("new returns only EnqueueTask"));
            };
            prop_assert_eq!(state.jobs()[job.0 as usize].tasks[node_index as usize], task);
            *shell.attempts.entry((0, job, node_index)).or_default() += 1;
        }
        for (j, job) in state.jobs().iter().enumerate() {
            if job.status != JobStatus::Blocked {
                prop_assert!(accepted(&state, j).0);
            }
        }
        check_state(&state)?;

        let mut log = Vec::new();
        // Two rounds: random events, then drive to the end; between them a rerun.
        let (first, second) = picks.split_at(picks.len() / 2);
        for (round, picks) in [first, second].into_iter().enumerate() {
            if round == 1 {
                let event = if from_failed { Event::RerunFromFailed } else { Event::RerunFromStart };
                apply(&mut state, event, &mut shell, &mut log)?;
            }
            for &pick in picks {
                let c = candidates(&state, pick);
                let event = c[pick as usize % c.len()].clone();
                apply(&mut state, event, &mut shell, &mut log)?;
            }
            finish(&mut state, &mut shell, &mut log, &results)?;
        }

        // Deterministic: replaying the accepted events gives the same state.
        let (mut replay, _) = WorkflowState::new(&wf, &|b| par.get(b).copied(), &trigger)
            .expect("valid");
        for e in log {
            prop_assert!(replay.apply(e).is_ok());
        }
        prop_assert_eq!(&replay, &state);

        // Stored as JSON between events (the server does): the state read back is the
        // same, and behaves the same (rerun, then every task ends).
        let json = serde_json::to_string(&state).expect("serialize");
        let mut back: WorkflowState = serde_json::from_str(&json).expect("deserialize");
        prop_assert_eq!(&back, &state);
        let mut again = state.clone();
        let a = again.apply(Event::RerunFromStart);
        let b = back.apply(Event::RerunFromStart);
        prop_assert_eq!(a, b);
        prop_assert_eq!(&back, &again);
    }

    #[test]
    fn arbitrary_events_never_panic(
        (specs, reverse) in specs(),
        raw in prop::collection::vec((0u8..8, 0u64..40, 0usize..5), 0..60),
    ) {
        let (wf, par) = workflow(&specs, reverse);
        let trigger = Trigger { branch: Some("dev".into()), ..Trigger::default() };
        let (mut state, _) = WorkflowState::new(&wf, &|b| par.get(b).copied(), &trigger)
            .expect("valid");
        for (kind, id, r) in raw {
            let event = match kind {
                0 => Event::TaskStarted { task: TaskId(id) },
                1 => Event::TaskFinished { task: TaskId(id), result: TaskResult::ALL[r] },
                2 => Event::LeaseExpired { task: TaskId(id) },
                3 => Event::Approve { job: JobId(id), by: String::new() },
                4 => Event::CancelJob { job: JobId(id) },
                5 => Event::Cancel,
                6 => Event::RerunFromStart,
                _ => Event::RerunFromFailed,
            };
            let before = state.clone();
            if state.apply(event).is_err() {
                prop_assert_eq!(&state, &before);
            }
            check_state(&state)?;
        }
    }
}
