//! The typed plan, as the rest of gyre consumes it: job instances, requires, filters
//! (the decision table of spec §16.1), executors and typed steps.

use gyre_config::plan::{Executor, Filters, InstanceKind, RequiredStatus, Step, When};
use gyre_config::{NoOrbs, Options, Plan, compile, yaml::Value};

fn plan(text: &str) -> Plan {
    let out = compile(text, &Options::default(), &NoOrbs);
    assert!(!out.has_errors(), "{}", out.render_diagnostics());
    out.plan.expect("plan")
}

fn filters(yaml: &str) -> Filters {
    let text = format!(
        "version: 2.1\njobs:\n  j:\n    docker: [{{image: x}}]\n    steps: [checkout]\nworkflows:\n  w:\n    jobs:\n      - j:\n          filters: {yaml}\n"
    );
    plan(&text).workflows[0].jobs[0].filters.clone()
}

#[test]
fn filter_decision_table() {
    let none = &mut |_: &str| None;
    // (filters, branch main, branch feat/x, tag v1.2) as in spec §16.1
    let table: &[(&str, [bool; 3])] = &[
        ("{}", [true, true, false]),
        ("{branches: {only: main}}", [true, false, false]),
        (r"{branches: {ignore: /feat\/.*/}}", [true, false, false]),
        ("{tags: {only: /^v.*/}}", [true, true, true]),
        (
            "{tags: {only: /^v.*/}, branches: {ignore: /.*/}}",
            [false, false, true],
        ),
        ("{tags: {ignore: /.*/}}", [true, true, false]),
        (
            "{branches: {only: main, ignore: main}}",
            [false, false, false],
        ),
        ("{branches: {only: [dev, /ma.n/]}}", [true, false, false]),
        ("{branches: {only: /ma/}}", [false, false, false]),
    ];
    for (yaml, [main, feat, tag]) in table {
        let f = filters(yaml);
        assert_eq!(f.allows(Some("main"), None, none), *main, "{yaml} on main");
        assert_eq!(
            f.allows(Some("feat/x"), None, none),
            *feat,
            "{yaml} on feat/x"
        );
        assert_eq!(
            f.allows(None, Some("v1.2"), none),
            *tag,
            "{yaml} on tag v1.2"
        );
    }
}

#[test]
fn expression_filters_read_pipeline_values() {
    let f = filters(r#"'pipeline.git.branch == "main" or pipeline.git.tag starts-with "v"'"#);
    let mut on_main = |p: &str| (p == "pipeline.git.branch").then(|| Value::Str("main".into()));
    assert!(f.allows(Some("main"), None, &mut on_main));
    let mut on_tag = |p: &str| (p == "pipeline.git.tag").then(|| Value::Str("v2".into()));
    assert!(f.allows(None, Some("v2"), &mut on_tag));
    let mut on_dev = |p: &str| (p == "pipeline.git.branch").then(|| Value::Str("dev".into()));
    assert!(!f.allows(Some("dev"), None, &mut on_dev));
}

#[test]
fn instances_requires_and_kinds() {
    let p = plan(
        r#"
version: 2.1
setup: true
jobs:
  build: {docker: [{image: a}], steps: [checkout]}
  noop: {type: no-op}
workflows:
  w:
    max_auto_reruns: 2
    jobs:
      - build
      - hold: {type: approval, requires: [build]}
      - noop: {requires: [{hold: [success, canceled]}]}
      - build:
          name: cleanup
          requires: [{build: terminal}]
          context: [org-global, deploy]
          serial-group: deploys
"#,
    );
    assert!(p.setup);
    let w = &p.workflows[0];
    assert_eq!(w.max_auto_reruns, Some(2));
    let kinds: Vec<(&str, InstanceKind)> =
        w.jobs.iter().map(|j| (j.name.as_str(), j.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("build", InstanceKind::Build),
            ("hold", InstanceKind::Approval),
            ("noop", InstanceKind::NoOp),
            ("cleanup", InstanceKind::Build)
        ]
    );
    assert_eq!(
        w.jobs[2].requires[0].statuses,
        [RequiredStatus::Success, RequiredStatus::Canceled]
    );
    assert_eq!(w.jobs[3].requires[0].job, "build");
    assert_eq!(w.jobs[3].requires[0].statuses.len(), 5);
    assert_eq!(w.jobs[3].contexts, ["org-global", "deploy"]);
    assert_eq!(w.jobs[3].serial_group.as_deref(), Some("deploys"));
    assert!(w.jobs[1].job.is_none());
}

#[test]
fn jobs_executor_env_parallelism_and_steps() {
    let p = plan(
        r#"
version: 2.1
executors:
  e:
    parameters: {tag: {type: string, default: "16"}}
    docker:
      - image: node:<< parameters.tag >>
        user: circleci
        environment: {ONLY_FOR: service}
      - image: postgres:15
        name: db
    environment: {A: "1", B: "1"}
    working_directory: /w
jobs:
  test:
    parameters:
      n: {type: integer, default: 3}
      flag: {type: boolean, default: true}
    executor: {name: e, tag: "20"}
    parallelism: << parameters.n >>
    environment: {B: "2", FLAG: << parameters.flag >>}
    steps:
      - checkout: {path: src}
      - run: make
      - run:
          command: ./slow
          no_output_timeout: 1.5h
          when: always
          background: true
          environment: {X: y}
      - save_cache: {key: 'v1-{{ checksum "f" }}', paths: [~/.npm]}
      - restore_cache: {keys: [v1-a, v1-]}
      - persist_to_workspace: {root: ., paths: [dist]}
      - attach_workspace: {at: /tmp/ws}
      - store_artifacts: {path: out, destination: art}
      - store_test_results: {path: reports}
      - deploy: {command: ./ship}
workflows:
  w: {jobs: [test]}
"#,
    );
    let job = &p.jobs["test"];
    let Executor::Docker(images) = &job.executor else {
        panic!("docker executor")
    };
    assert_eq!(images[0].image, "node:20");
    assert_eq!(images[0].user.as_deref(), Some("circleci"));
    assert_eq!(images[1].name.as_deref(), Some("db"));
    assert_eq!(job.parallelism, 3);
    assert_eq!(job.working_directory, "/w");
    let env: Vec<(&str, &str)> = job
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "1"), ("B", "2"), ("FLAG", "1")]);
    assert!(matches!(&job.steps[0], Step::Checkout { path: Some(p), .. } if p == "src"));
    let Step::Run(slow) = &job.steps[2] else {
        panic!("run step")
    };
    assert_eq!(slow.no_output_timeout_secs, 5400.0);
    assert_eq!(slow.when, When::Always);
    assert!(slow.background);
    let Step::Run(make) = &job.steps[1] else {
        panic!("run step")
    };
    assert_eq!(make.no_output_timeout_secs, 600.0);
    assert!(matches!(&job.steps[4], Step::RestoreCache { keys, .. } if keys == &["v1-a", "v1-"]));
    assert!(matches!(&job.steps[9], Step::Deploy(r) if r.command == "./ship"));
    assert_eq!(job.steps.len(), 10);
}

#[test]
fn checkout_method_and_depth() {
    let p = plan(
        r#"
version: 2.1
jobs:
  a:
    machine: true
    steps:
      - checkout: {method: shallow, depth: 3}
      - checkout: {method: blobless}
workflows:
  w: {jobs: [a]}
"#,
    );
    let steps = &p.jobs["a"].steps;
    assert!(matches!(
        &steps[0],
        Step::Checkout { method: Some(m), depth: Some(3), .. } if m == "shallow"
    ));
    assert!(matches!(
        &steps[1],
        Step::Checkout { method: Some(m), depth: None, .. } if m == "blobless"
    ));
}

#[test]
fn matrix_instances_keep_their_alias() {
    let p = plan(
        r#"version: 2.1
jobs:
  test:
    parameters: {n: {type: integer}}
    docker: [{image: x}]
    steps: [{run: echo << parameters.n >>}]
workflows:
  w:
    jobs:
      - test: {matrix: {parameters: {n: [1, 2]}}}
      - test: {name: plain, n: 3}
      - test: {matrix: {alias: suite, parameters: {n: [4]}}, requires: [test]}
"#,
    );
    let got: Vec<(&str, Option<&str>)> = p.workflows[0]
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.matrix_alias.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("test-1", Some("test")),
            ("test-2", Some("test")),
            ("plain", None),
            ("test-4", Some("suite")),
        ]
    );
}
