//! One claimed task: run it with gyre-executor while holding its lease, stream its events,
//! then report how it ended.
//!
//! The lease is renewed by its own tokio task every third of the lease period and
//! published on a `watch` channel: `Canceled` (the server said so) stops the executor
//! and the task finishes as `canceled`; `Lost` (409, or no successful renewal for a whole
//! period) stops everything without a finish, since the server has already decided. The
//! executor is stopped by dropping its future, which removes the task's containers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gyre_executor::{Executor, ExecutorConfig, TaskOutcome, TaskStatus, TestResult};
use gyre_protocol::agent::{Assignment, Finish, TaskEnd, TaskRef, TestCase};
use tokio::sync::watch;
use tracing::Instrument;

use crate::blobs::HttpStorage;
use crate::client::{Client, retry};
use crate::events::{self, EventSink};
use crate::{AgentConfig, Error};

/// What the lease keeper knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaseState {
    Held,
    /// The server canceled the task; the lease is still held (and renewed).
    Canceled,
    /// The lease is gone: report nothing more.
    Lost,
}

/// How the executor part ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Ran(Result<TaskOutcome, gyre_executor::Error>),
    Canceled,
    Lost,
}

/// Runs `assignment` to its end (never fails: problems are logged and reported).
pub(crate) async fn run(
    client: Client,
    config: Arc<AgentConfig>,
    lease: Duration,
    assignment: Assignment,
) {
    let task = assignment.task;
    let span = tracing::info_span!(
        "task",
        workflow = task.workflow_id,
        task = task.task_id,
        job = %assignment.spec.job.name,
        node = assignment.spec.node.index,
    );
    run_inner(client, config, lease, assignment)
        .instrument(span)
        .await;
}

async fn run_inner(
    client: Client,
    config: Arc<AgentConfig>,
    lease: Duration,
    assignment: Assignment,
) {
    let task = assignment.task;
    tracing::info!("task started");
    let (state_tx, mut state) = watch::channel(LeaseState::Held);
    let keeper = tokio::spawn(keep_lease(client.clone(), task, lease, state_tx));
    let (mut sink, rx, budget) = events::channel();
    let uploader = tokio::spawn(events::upload(client.clone(), task, rx, budget, lease));

    let executor_config = ExecutorConfig::new(&config.work_dir, &config.helper)
        .job_network(config.job_network.clone())
        .label("gyre.agent", config.name.clone())
        .job_settings(config.job.clone())
        .storage(Arc::new(HttpStorage::from_client(client.clone())));
    let ended = execute(&assignment, executor_config, &mut sink, &mut state).await;

    let finish = match ended {
        Ended::Lost => {
            tracing::warn!("lease lost: stopped the task, reporting nothing more");
            drop(sink);
            uploader.abort();
            keeper.abort();
            return;
        }
        Ended::Canceled => {
            sink.system("Canceled.");
            canceled()
        }
        Ended::Ran(Err(ref err)) => {
            tracing::error!(%err, "the executor failed");
            sink.system(&format!("Error: {err}"));
            finish_for(&ended)
        }
        Ended::Ran(Ok(_)) => finish_for(&ended),
    };
    drop(sink);

    // Everything logged must be stored before the task ends.
    let flushed = tokio::select! {
        joined = uploader => joined.unwrap_or_else(|err| Err(Error::Protocol(format!("the log upload panicked: {err}")))),
        () = lost(&mut state) => Err(Error::LeaseLost),
    };
    match flushed {
        Ok(()) => {}
        Err(err) if err.is_lease_lost() => {
            tracing::warn!("lease lost while sending step events; reporting nothing more");
            keeper.abort();
            return;
        }
        Err(err) => tracing::error!(%err, "some step events could not be sent"),
    }
    let reported = tokio::select! {
        reported = retry("finishing the task", Some(lease), || client.finish(task, &finish)) => reported,
        () = lost(&mut state) => Err(Error::LeaseLost),
    };
    keeper.abort();
    match reported {
        Ok(()) => tracing::info!(result = ?finish.result, "task finished"),
        Err(err) if err.is_lease_lost() => {
            tracing::warn!("lease lost before the task's end was reported")
        }
        Err(err) => tracing::error!(%err, "could not report the task's end"),
    }
}

/// Runs the executor until it ends or the lease says stop.
async fn execute(
    assignment: &Assignment,
    config: ExecutorConfig,
    sink: &mut EventSink,
    state: &mut watch::Receiver<LeaseState>,
) -> Ended {
    let spec = &assignment.spec;
    let work = async {
        let executor = Executor::for_task(spec, config).await?;
        executor.run(spec, sink).await
    };
    tokio::select! {
        result = work => Ended::Ran(result),
        stop = stopped(state) => match stop {
            LeaseState::Canceled => Ended::Canceled,
            _ => Ended::Lost,
        },
    }
}

/// Resolves when the lease is no longer plainly held; returns the state.
async fn stopped(state: &mut watch::Receiver<LeaseState>) -> LeaseState {
    match state.wait_for(|s| *s != LeaseState::Held).await {
        Ok(s) => *s,
        // The keeper ended without saying: it cannot renew any more.
        Err(_) => LeaseState::Lost,
    }
}

/// Resolves when the lease is lost.
async fn lost(state: &mut watch::Receiver<LeaseState>) {
    let _ = state.wait_for(|s| *s == LeaseState::Lost).await;
}

/// Renews the lease every third of `lease` until aborted or the lease is lost.
async fn keep_lease(
    client: Client,
    task: TaskRef,
    lease: Duration,
    state: watch::Sender<LeaseState>,
) {
    let period = lease / 3;
    let mut renewed_at = Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let budget = lease.saturating_sub(renewed_at.elapsed());
        match retry("renewing the lease", Some(budget), || {
            client.renew_lease(task)
        })
        .await
        {
            Ok(answer) => {
                renewed_at = Instant::now();
                if answer.cancel && *state.borrow() == LeaseState::Held {
                    tracing::info!("the server canceled the task");
                    state.send_replace(LeaseState::Canceled);
                }
            }
            Err(err) => {
                tracing::warn!(%err, "the lease is lost");
                state.send_replace(LeaseState::Lost);
                return;
            }
        }
    }
}

/// The report for a task that ran (or could not run).
pub(crate) fn finish_for(ended: &Ended) -> Finish {
    match ended {
        Ended::Ran(Ok(outcome)) => Finish {
            result: match outcome.status {
                TaskStatus::Success => TaskEnd::Success,
                TaskStatus::Failed => TaskEnd::Failed,
                TaskStatus::TimedOut => TaskEnd::Timedout,
            },
            message: outcome.message.clone(),
            tests: outcome.tests.iter().map(test_case).collect(),
            artifacts: outcome.artifacts.clone(),
        },
        Ended::Ran(Err(err)) => Finish {
            result: TaskEnd::InfrastructureFail,
            message: Some(err.to_string()),
            tests: vec![],
            artifacts: vec![],
        },
        Ended::Canceled | Ended::Lost => canceled(),
    }
}

fn canceled() -> Finish {
    Finish {
        result: TaskEnd::Canceled,
        message: Some("canceled".to_owned()),
        tests: vec![],
        artifacts: vec![],
    }
}

pub(crate) fn test_case(case: &gyre_executor::TestCase) -> TestCase {
    TestCase {
        name: case.name.clone(),
        classname: case.classname.clone(),
        file: case.file.clone(),
        result: match case.result {
            TestResult::Success => "success",
            TestResult::Failure => "failure",
            TestResult::Error => "error",
            TestResult::Skipped => "skipped",
        }
        .to_owned(),
        run_time: case.time,
        message: case.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_protocol::agent::Artifact;

    fn outcome(status: TaskStatus) -> TaskOutcome {
        TaskOutcome {
            status,
            message: (status == TaskStatus::Failed).then(|| "step \"test\": exit 1".to_owned()),
            steps: vec![],
            tests: vec![gyre_executor::TestCase {
                name: "t1".into(),
                classname: "suite".into(),
                file: Some("a_test.py".into()),
                result: TestResult::Failure,
                time: 1.5,
                message: Some("boom".into()),
            }],
            artifacts: vec![Artifact {
                path: "reports/a.txt".into(),
                key: "artifacts/build/1/0/reports/a.txt".into(),
                node_index: 0,
            }],
        }
    }

    #[test]
    fn outcomes_map_to_task_ends() {
        let ok = finish_for(&Ended::Ran(Ok(outcome(TaskStatus::Success))));
        assert_eq!(ok.result, TaskEnd::Success);
        assert_eq!(ok.message, None);
        assert_eq!(ok.artifacts[0].key, "artifacts/build/1/0/reports/a.txt");
        assert_eq!(
            ok.tests,
            [TestCase {
                name: "t1".into(),
                classname: "suite".into(),
                file: Some("a_test.py".into()),
                result: "failure".into(),
                run_time: 1.5,
                message: Some("boom".into()),
            }]
        );

        let failed = finish_for(&Ended::Ran(Ok(outcome(TaskStatus::Failed))));
        assert_eq!(failed.result, TaskEnd::Failed);
        assert_eq!(failed.message.as_deref(), Some("step \"test\": exit 1"));
        let timed_out = finish_for(&Ended::Ran(Ok(outcome(TaskStatus::TimedOut))));
        assert_eq!(timed_out.result, TaskEnd::Timedout);

        let broken = finish_for(&Ended::Ran(Err(gyre_executor::Error::Helper(
            "went away".into(),
        ))));
        assert_eq!(broken.result, TaskEnd::InfrastructureFail);
        assert_eq!(broken.message.as_deref(), Some("step helper: went away"));

        assert_eq!(finish_for(&Ended::Canceled).result, TaskEnd::Canceled);
    }

    #[test]
    fn every_test_result_has_its_wire_name() {
        for (result, name) in [
            (TestResult::Success, "success"),
            (TestResult::Failure, "failure"),
            (TestResult::Error, "error"),
            (TestResult::Skipped, "skipped"),
        ] {
            let case = gyre_executor::TestCase {
                name: String::new(),
                classname: String::new(),
                file: None,
                result,
                time: 0.0,
                message: None,
            };
            assert_eq!(test_case(&case).result, name);
        }
    }

    #[tokio::test]
    async fn a_dropped_lease_keeper_counts_as_lost() {
        let (tx, mut rx) = watch::channel(LeaseState::Held);
        tx.send_replace(LeaseState::Canceled);
        assert_eq!(stopped(&mut rx).await, LeaseState::Canceled);
        drop(tx);
        lost(&mut rx).await;
        let (tx, mut rx) = watch::channel(LeaseState::Held);
        drop(tx);
        assert_eq!(stopped(&mut rx).await, LeaseState::Lost);
    }
}
