//! Filters decide which jobs are part of a run (spec §5.3 "filtered-out dependencies",
//! §5.4, §16.1): compiled from real configs, run on a branch and on a tag.

use gyre_config::yaml::Value;
use gyre_config::{NoOrbs, Options, Plan, compile};
use gyre_core::{JobStatus, Trigger, WorkflowState, WorkflowStatus};

fn plan(workflow_jobs: &str) -> Plan {
    let mut text = String::from("version: 2.1\njobs:\n");
    for j in ["a", "b", "c", "d"] {
        text += &format!("  {j}: {{docker: [{{image: x}}], steps: [checkout]}}\n");
    }
    text += "workflows:\n  w:\n    jobs:\n";
    text += workflow_jobs;
    let out = compile(&text, &Options::default(), &NoOrbs);
    assert!(!out.has_errors(), "{}", out.render_diagnostics());
    out.plan.expect("plan")
}

fn branch(b: &str) -> Trigger {
    Trigger {
        branch: Some(b.into()),
        ..Trigger::default()
    }
}

fn tag(t: &str) -> Trigger {
    Trigger {
        tag: Some(t.into()),
        ..Trigger::default()
    }
}

/// `(jobs in the run with their statuses, filtered names)`.
fn outcome(plan: &Plan, trigger: &Trigger) -> (String, String) {
    let (state, _) = WorkflowState::from_plan(plan, "w", trigger).expect("state");
    let jobs: Vec<String> = state
        .jobs()
        .iter()
        .map(|j| format!("{}={}", j.name, j.status))
        .collect();
    (jobs.join(" "), state.filtered().join(" "))
}

const TAGS: &str = "filters: {tags: {only: /^v.*/}}";

#[test]
fn filtered_requirements() {
    // (workflow jobs, trigger, jobs in the run, filtered jobs)
    let cases: &[(String, Trigger, &str, &str)] = &[
        // Branch pipelines: a filtered requirement is ignored…
        (
            "      - a: {filters: {branches: {only: main}}}\n      - b\n      - c: {requires: [a, b]}\n".into(),
            branch("dev"),
            "b=queued c=blocked",
            "a",
        ),
        // …unless every requirement was filtered; transitively.
        (
            "      - a: {filters: {branches: {only: main}}}\n      - b: {requires: [a]}\n      - c: {requires: [b]}\n      - d\n".into(),
            branch("dev"),
            "d=queued",
            "a b c",
        ),
        (
            "      - a: {filters: {branches: {only: main}}}\n      - b: {requires: [a]}\n".into(),
            branch("main"),
            "a=queued b=blocked",
            "",
        ),
        // Tag pipelines: jobs without a tags filter are skipped…
        (
            format!("      - a: {{{TAGS}}}\n      - b\n"),
            tag("v1.2"),
            "a=queued",
            "b",
        ),
        // …and a job requiring a skipped job is skipped, even with other requirements.
        (
            format!("      - a: {{{TAGS}}}\n      - b\n      - c: {{requires: [a, b], {TAGS}}}\n"),
            tag("v1.2"),
            "a=queued",
            "b c",
        ),
        (
            format!("      - a: {{{TAGS}}}\n      - b: {{{TAGS}}}\n      - c: {{requires: [a, b], {TAGS}}}\n"),
            tag("v1.2"),
            "a=queued b=queued c=blocked",
            "",
        ),
        (
            format!("      - a: {{{TAGS}}}\n      - c: {{requires: [a], {TAGS}}}\n"),
            tag("x1"),
            "",
            "a c",
        ),
        // Approval jobs follow the same rules.
        (
            format!("      - hold: {{type: approval}}\n      - a: {{requires: [hold], {TAGS}}}\n"),
            tag("v1"),
            "",
            "hold a",
        ),
        (
            format!("      - hold: {{type: approval, {TAGS}}}\n      - a: {{requires: [hold], {TAGS}}}\n"),
            tag("v1"),
            "hold=on_hold a=blocked",
            "",
        ),
        // Expression filters.
        (
            "      - a: {filters: 'pipeline.git.branch == \"main\"'}\n      - b\n".into(),
            branch("main"),
            "a=queued b=queued",
            "",
        ),
        (
            "      - a: {filters: 'pipeline.git.branch == \"main\"'}\n      - b\n".into(),
            branch("dev"),
            "b=queued",
            "a",
        ),
        (
            "      - a: {filters: 'pipeline.git.tag starts-with \"v\"'}\n".into(),
            tag("v3"),
            "a=queued",
            "",
        ),
    ];
    for (jobs, trigger, run, filtered) in cases {
        let p = plan(jobs);
        assert_eq!(
            outcome(&p, trigger),
            (run.to_string(), filtered.to_string()),
            "{jobs} on {trigger:?}"
        );
    }
}

#[test]
fn requirements_on_filtered_jobs_are_dropped() {
    let p = plan(
        "      - a: {filters: {branches: {only: main}}}\n      - b\n      - c: {requires: [a, b]}\n",
    );
    let (state, _) = WorkflowState::from_plan(&p, "w", &branch("dev")).expect("state");
    let c = state.job(state.job_by_name("c").expect("c")).expect("c");
    let b = state.job_by_name("b").expect("b");
    assert_eq!(c.requires.len(), 1);
    assert_eq!(c.requires[0].job, b);
}

#[test]
fn expression_filters_see_other_pipeline_values() {
    let p = plan("      - a: {filters: 'pipeline.trigger_source == \"api\"'}\n      - b\n");
    let mut t = branch("main");
    assert_eq!(outcome(&p, &t).1, "a");
    t.values
        .push(("pipeline.trigger_source".into(), Value::Str("api".into())));
    assert_eq!(outcome(&p, &t).1, "");
}

#[test]
fn nothing_left_to_run_is_not_run() {
    let p = plan("      - a: {filters: {branches: {only: main}}}\n");
    let (state, actions) = WorkflowState::from_plan(&p, "w", &branch("dev")).expect("state");
    assert_eq!(state.status(), WorkflowStatus::NotRun);
    assert!(actions.is_empty());
    assert!(state.jobs().is_empty());
}

#[test]
fn from_plan_reads_parallelism_and_unknown_workflows_are_errors() {
    let mut p = plan("      - a\n");
    p.jobs.get_mut("a").expect("a").parallelism = 4;
    let (state, actions) = WorkflowState::from_plan(&p, "w", &branch("main")).expect("state");
    assert_eq!(actions.len(), 4);
    assert_eq!(state.jobs()[0].status, JobStatus::Queued);
    assert!(matches!(
        WorkflowState::from_plan(&p, "nope", &branch("main")),
        Err(gyre_core::Error::UnknownWorkflow(w)) if w == "nope"
    ));
}
