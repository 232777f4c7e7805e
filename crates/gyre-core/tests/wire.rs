//! Statuses and ids on the wire: the exact strings of CircleCI's API v2.

use gyre_core::{
    Action, Event, JobId, JobStatus, PipelineStatus, TaskId, TaskResult, WorkflowStatus,
};
use std::str::FromStr;

fn wire<T: serde::Serialize>(v: T) -> String {
    serde_json::to_string(&v).expect("serialize")
}

/// Every value serializes to its API string, parses back from it with serde and
/// `FromStr`, and `Display`s as it.
fn roundtrip<T>(all: &[T], expected: &[&str])
where
    T: serde::Serialize + serde::de::DeserializeOwned + FromStr + std::fmt::Display,
    T: Copy + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    let got: Vec<String> = all.iter().map(|v| wire(*v)).collect();
    let want: Vec<String> = expected.iter().map(|s| format!("\"{s}\"")).collect();
    assert_eq!(got, want);
    for (v, s) in all.iter().zip(expected) {
        assert_eq!(v.to_string(), *s);
        assert_eq!(T::from_str(s).expect("from_str"), *v);
        let back: T = serde_json::from_str(&format!("\"{s}\"")).expect("deserialize");
        assert_eq!(back, *v);
    }
}

#[test]
fn job_statuses() {
    roundtrip(
        JobStatus::ALL,
        &[
            "success",
            "running",
            "not_run",
            "failed",
            "retried",
            "queued",
            "not_running",
            "infrastructure_fail",
            "timedout",
            "on_hold",
            "terminated-unknown",
            "blocked",
            "canceled",
            "unauthorized",
        ],
    );
}

#[test]
fn workflow_statuses() {
    roundtrip(
        WorkflowStatus::ALL,
        &[
            "success",
            "running",
            "not_run",
            "failed",
            "error",
            "failing",
            "on_hold",
            "canceled",
            "unauthorized",
        ],
    );
}

#[test]
fn pipeline_states() {
    roundtrip(
        PipelineStatus::ALL,
        &["created", "errored", "setup-pending", "setup", "pending"],
    );
}

#[test]
fn unknown_strings_are_errors() {
    let err = JobStatus::from_str("terminated_unknown").expect_err("underscore");
    assert_eq!(err.to_string(), "unknown job status 'terminated_unknown'");
    assert!(WorkflowStatus::from_str("queued").is_err());
    assert!(PipelineStatus::from_str("setup_pending").is_err());
    assert!(serde_json::from_str::<JobStatus>("\"Success\"").is_err());
}

#[test]
fn task_results_and_events() {
    let results: Vec<String> = TaskResult::ALL.iter().map(|r| wire(*r)).collect();
    assert_eq!(
        results,
        [
            "\"success\"",
            "\"failed\"",
            "\"infrastructure_fail\"",
            "\"timedout\"",
            "\"canceled\""
        ]
    );
    for r in TaskResult::ALL {
        assert_eq!(wire(r.status()), wire(*r));
    }
    let e = Event::TaskFinished {
        task: TaskId(3),
        result: TaskResult::Timedout,
    };
    assert_eq!(
        wire(&e),
        r#"{"type":"task_finished","task":3,"result":"timedout"}"#
    );
    let back: Event = serde_json::from_str(&wire(&e)).expect("event");
    assert_eq!(back, e);
    let a = Action::JobStatusChanged {
        job: JobId(1),
        from: JobStatus::Blocked,
        to: JobStatus::NotRun,
    };
    assert_eq!(
        wire(&a),
        r#"{"type":"job_status_changed","job":1,"from":"blocked","to":"not_run"}"#
    );
    assert_eq!(JobId(12).to_string(), "12");
}
