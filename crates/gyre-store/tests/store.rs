//! The store suite. Every test here runs twice, on SQLite and on PostgreSQL (see
//! `support`), through `both_engines!`: the same assertions hold on both engines.

mod support;

use gyre_core::{AgentId, JobId, JobStatus, PipelineStatus, TaskId, TaskResult, WorkflowStatus};
use gyre_store::{
    AgentStatus, Error, LogChunk, Millis, NewJob, NewPipeline, NewProject, NewTask, ProjectId,
    SigningKeyRow, Store, Stream, TaskKey, UiSession,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = crate::support::sqlite().await;
                super::$name(db.store.clone()).await;
                db.store.close().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let db = crate::support::postgres().await;
                super::$name(db.store.clone()).await;
                db.store.close().await;
            }
        }
    )*};
}

both_engines!(
    migrate_is_idempotent,
    projects,
    pipeline_numbers_under_concurrency,
    pipeline_state_and_workflows,
    duplicate_delivery_recorded_once,
    concurrent_claims_never_share_a_task,
    claim_rules,
    lease_expiry_returns_exactly_the_expired,
    cancel_task,
    log_chunks_idempotent_and_ordered,
    agents,
    pull_requests,
    env_vars,
    ui_sessions_and_log_tails,
    signing_keys,
    ui_users,
    contexts,
);

const T0: Millis = Millis(1_700_000_000_000);
const LEASE: Duration = Duration::from_secs(30);

async fn new_project(store: &Store, slug: &str) -> ProjectId {
    let settings = json!({"build_fork_prs": false});
    store
        .create_project(
            &NewProject {
                slug,
                repo_url: "file:///srv/git/repo",
                default_branch: "main",
                webhook_secret: Some("s3cret"),
                settings: &settings,
            },
            T0,
        )
        .await
        .expect("create project")
        .id
}

fn pipeline_for(project: ProjectId) -> NewPipeline<'static> {
    NewPipeline {
        project,
        trigger_kind: "webhook",
        trigger_actor: "alice",
        branch: Some("main"),
        tag: None,
        revision: "0123456789abcdef0123456789abcdef01234567",
    }
}

/// A project, a pipeline and a workflow with `n_jobs` jobs; returns the workflow.
async fn workflow(store: &Store, slug: &str, n_jobs: usize) -> gyre_core::WorkflowId {
    let project = new_project(store, slug).await;
    let pipeline = store
        .create_pipeline(&pipeline_for(project), T0)
        .await
        .expect("create pipeline");
    let names: Vec<String> = (0..n_jobs).map(|i| format!("job-{i}")).collect();
    let jobs: Vec<NewJob> = names
        .iter()
        .map(|name| NewJob {
            name,
            status: JobStatus::Queued,
            approval: false,
        })
        .collect();
    store
        .create_workflow(pipeline.id, "main", &jobs, T0)
        .await
        .expect("create workflow")
        .0
}

async fn enqueue(store: &Store, key: TaskKey, class: &str, at: Millis) {
    let payload = json!({"task": key.task.0});
    store
        .enqueue_task(
            &NewTask {
                key,
                job: JobId(0),
                node_index: u32::try_from(key.task.0).expect("small"),
                attempt: 0,
                resource_class: class,
                payload: &payload,
            },
            at,
        )
        .await
        .expect("enqueue");
}

fn key(workflow: gyre_core::WorkflowId, task: u64) -> TaskKey {
    TaskKey {
        workflow,
        task: TaskId(task),
    }
}

async fn agent(store: &Store, name: &str) -> AgentId {
    store
        .register_agent(name, &format!("hash-of-{name}"), T0)
        .await
        .expect("register agent")
        .id
}

async fn migrate_is_idempotent(store: Store) {
    store.migrate().await.expect("second migrate");
    new_project(&store, "gh/acme/after-remigrate").await;
    store.migrate().await.expect("third migrate, with data");
    assert!(
        store
            .project_by_slug("gh/acme/after-remigrate")
            .await
            .unwrap()
            .is_some()
    );
}

async fn projects(store: Store) {
    let id = new_project(&store, "gh/acme/api").await;
    let by_slug = store.project_by_slug("gh/acme/api").await.unwrap().unwrap();
    assert_eq!(by_slug.id, id);
    assert_eq!(by_slug.repo_url, "file:///srv/git/repo");
    assert_eq!(by_slug.default_branch, "main");
    assert_eq!(by_slug.webhook_secret.as_deref(), Some("s3cret"));
    assert_eq!(by_slug.settings, json!({"build_fork_prs": false}));
    assert_eq!(by_slug.created_at, T0);
    assert_eq!(store.project(id).await.unwrap(), Some(by_slug));

    let settings = json!({});
    let dup = store
        .create_project(
            &NewProject {
                slug: "gh/acme/api",
                repo_url: "https://elsewhere",
                default_branch: "dev",
                webhook_secret: None,
                settings: &settings,
            },
            T0,
        )
        .await;
    assert!(
        matches!(&dup, Err(Error::ProjectExists(s)) if s == "gh/acme/api"),
        "{dup:?}"
    );
    let other = new_project(&store, "gh/acme/web").await;
    assert_ne!(other, id);
    assert_eq!(store.project_by_slug("gh/acme/nope").await.unwrap(), None);
    assert_eq!(store.project(ProjectId(999_999)).await.unwrap(), None);
}

async fn pipeline_numbers_under_concurrency(store: Store) {
    let a = new_project(&store, "gh/acme/a").await;
    let b = new_project(&store, "gh/acme/b").await;
    let mut handles = Vec::new();
    for i in 0..30 {
        let store = store.clone();
        let project = if i % 3 == 0 { b } else { a };
        handles.push(tokio::spawn(async move {
            store
                .create_pipeline(&pipeline_for(project), T0)
                .await
                .expect("create pipeline")
        }));
    }
    let mut numbers: BTreeMap<ProjectId, Vec<u64>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for h in handles {
        let p = h.await.expect("join");
        numbers.entry(p.project).or_default().push(p.number);
        assert!(ids.insert(p.id), "pipeline id {} given twice", p.id);
    }
    for list in numbers.values_mut() {
        list.sort();
    }
    assert_eq!(numbers[&a], (1..=20).collect::<Vec<_>>());
    assert_eq!(numbers[&b], (1..=10).collect::<Vec<_>>());

    let listed = store.pipelines(a, 3).await.unwrap();
    let listed: Vec<u64> = listed.iter().map(|p| p.number).collect();
    assert_eq!(listed, [20, 19, 18]);

    let unknown = store
        .create_pipeline(&pipeline_for(ProjectId(424_242)), T0)
        .await;
    assert!(
        matches!(unknown, Err(Error::UnknownProject(_))),
        "{unknown:?}"
    );
}

async fn pipeline_state_and_workflows(store: Store) {
    let project = new_project(&store, "gh/acme/flow").await;
    let p = store
        .create_pipeline(&pipeline_for(project), T0)
        .await
        .unwrap();
    assert_eq!(p.state, PipelineStatus::Pending);
    assert_eq!(store.pipeline(p.id).await.unwrap().as_ref(), Some(&p));

    let errors = json!([{"type": "config", "message": "line 3: bad"}]);
    store
        .set_pipeline_state(p.id, PipelineStatus::Errored, &errors, Some("version: 2.1"))
        .await
        .unwrap();
    let got = store.pipeline(p.id).await.unwrap().unwrap();
    assert_eq!(got.state, PipelineStatus::Errored);
    assert_eq!(got.errors, errors);
    assert_eq!(got.config.as_deref(), Some("version: 2.1"));
    // `None` keeps the stored config.
    store
        .set_pipeline_state(p.id, PipelineStatus::Created, &json!([]), None)
        .await
        .unwrap();
    assert_eq!(
        store
            .pipeline(p.id)
            .await
            .unwrap()
            .unwrap()
            .config
            .as_deref(),
        Some("version: 2.1")
    );
    let missing = store
        .set_pipeline_state(
            gyre_core::PipelineId(777_777),
            PipelineStatus::Created,
            &json!([]),
            None,
        )
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );

    // Job numbers run on per project across workflows; approvals get none.
    let jobs = [
        NewJob {
            name: "build",
            status: JobStatus::Queued,
            approval: false,
        },
        NewJob {
            name: "hold",
            status: JobStatus::Blocked,
            approval: true,
        },
        NewJob {
            name: "deploy",
            status: JobStatus::Blocked,
            approval: false,
        },
    ];
    let (w1, n1) = store.create_workflow(p.id, "one", &jobs, T0).await.unwrap();
    let (w2, n2) = store.create_workflow(p.id, "two", &jobs, T0).await.unwrap();
    assert_ne!(w1, w2);
    assert_eq!(n1, [Some(1), None, Some(2)]);
    assert_eq!(n2, [Some(3), None, Some(4)]);

    assert!(
        store
            .set_job_status(w1, JobId(1), JobStatus::Success, T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_job_status(w1, JobId(9), JobStatus::Success, T0)
            .await
            .unwrap()
    );
    let listed = store.jobs(w1).await.unwrap();
    assert_eq!(
        listed,
        [
            ("build".to_string(), JobStatus::Queued, Some(1)),
            ("hold".to_string(), JobStatus::Success, None),
            ("deploy".to_string(), JobStatus::Blocked, Some(2)),
        ]
    );
    assert!(
        store
            .set_workflow_status(w1, WorkflowStatus::Failed, T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_workflow_status(gyre_core::WorkflowId(888_888), WorkflowStatus::Failed, T0)
            .await
            .unwrap()
    );
}

async fn duplicate_delivery_recorded_once(store: Store) {
    let mut handles = Vec::new();
    for _ in 0..40 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store
                .record_delivery("72d3162e-cc78-11e3-81ab-4c9367dc0958", T0)
                .await
                .expect("record delivery")
        }));
    }
    let mut firsts = 0;
    for h in handles {
        firsts += usize::from(h.await.expect("join"));
    }
    assert_eq!(firsts, 1, "exactly one call sees the delivery first");
    assert!(
        !store
            .record_delivery("72d3162e-cc78-11e3-81ab-4c9367dc0958", T0)
            .await
            .unwrap()
    );
    assert!(store.record_delivery("another", T0).await.unwrap());
    // A forgotten delivery is new again; forgetting an unknown one is harmless.
    store.forget_delivery("another").await.unwrap();
    assert!(store.record_delivery("another", T0).await.unwrap());
    store.forget_delivery("never-seen").await.unwrap();
}

async fn pull_requests(store: Store) {
    let project = new_project(&store, "gh/acme/prs").await;
    let other = new_project(&store, "gh/acme/other").await;
    let pr = |number, branch: &str, fork, open| gyre_store::PullRequestRow {
        project,
        number,
        url: format!("https://github.com/acme/prs/pull/{number}"),
        head_branch: branch.to_string(),
        head_sha: "a".repeat(40),
        head_repo: if fork { "fork/prs" } else { "acme/prs" }.to_string(),
        fork,
        open,
        updated_at: T0,
    };
    store
        .upsert_pull_request(&pr(2, "feature", false, true))
        .await
        .unwrap();
    store
        .upsert_pull_request(&pr(1, "feature", false, true))
        .await
        .unwrap();
    store
        .upsert_pull_request(&pr(3, "feature", true, true))
        .await
        .unwrap();
    store
        .upsert_pull_request(&pr(4, "other", false, true))
        .await
        .unwrap();
    let open = store.open_pull_requests(project, "feature").await.unwrap();
    assert_eq!(
        open.iter().map(|p| p.number).collect::<Vec<_>>(),
        [1, 2],
        "same-repository PRs of the branch, by number; forks excluded"
    );
    assert_eq!(open[0], pr(1, "feature", false, true));
    // Closing one updates it in place.
    store
        .upsert_pull_request(&pr(2, "feature", false, false))
        .await
        .unwrap();
    let open = store.open_pull_requests(project, "feature").await.unwrap();
    assert_eq!(open.iter().map(|p| p.number).collect::<Vec<_>>(), [1]);
    assert!(
        store
            .open_pull_requests(other, "feature")
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        !store
            .has_pipeline_for(project, &"b".repeat(40))
            .await
            .unwrap()
    );
    store
        .create_pipeline(
            &NewPipeline {
                project,
                trigger_kind: "webhook",
                trigger_actor: "octocat",
                branch: Some("feature"),
                tag: None,
                revision: &"b".repeat(40),
            },
            T0,
        )
        .await
        .unwrap();
    assert!(
        store
            .has_pipeline_for(project, &"b".repeat(40))
            .await
            .unwrap()
    );
    assert!(
        !store
            .has_pipeline_for(other, &"b".repeat(40))
            .await
            .unwrap()
    );
}

async fn env_vars(store: Store) {
    let project = new_project(&store, "gh/acme/env").await;
    let other = new_project(&store, "gh/acme/env2").await;
    assert!(store.project_env_vars(project).await.unwrap().is_empty());
    store
        .set_project_env_var(project, "B_TOKEN", b"\x00sealed-b\xff", T0)
        .await
        .unwrap();
    store
        .set_project_env_var(project, "A_KEY", b"sealed-a", T0)
        .await
        .unwrap();
    store
        .set_project_env_var(other, "A_KEY", b"other", T0)
        .await
        .unwrap();
    let vars = store.project_env_vars(project).await.unwrap();
    assert_eq!(
        vars.iter()
            .map(|v| (v.name.as_str(), v.sealed.as_slice()))
            .collect::<Vec<_>>(),
        [
            ("A_KEY", &b"sealed-a"[..]),
            ("B_TOKEN", &b"\x00sealed-b\xff"[..])
        ],
        "bytes round-trip exactly, sorted by name"
    );
    // Replacing keeps one row.
    let later = Millis(T0.0 + 5);
    store
        .set_project_env_var(project, "A_KEY", b"new", later)
        .await
        .unwrap();
    let vars = store.project_env_vars(project).await.unwrap();
    assert_eq!(vars.len(), 2);
    assert_eq!(
        (vars[0].sealed.as_slice(), vars[0].created_at),
        (&b"new"[..], later)
    );
    assert!(
        store
            .delete_project_env_var(project, "A_KEY")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_project_env_var(project, "A_KEY")
            .await
            .unwrap()
    );
    assert_eq!(store.project_env_vars(project).await.unwrap().len(), 1);
    assert_eq!(
        store.project_env_vars(other).await.unwrap()[0].sealed,
        b"other"
    );
}

async fn concurrent_claims_never_share_a_task(store: Store) {
    const TASKS: u64 = 50;
    const CLAIMERS: usize = 8;
    let wf = workflow(&store, "gh/acme/queue", 1).await;
    for t in 0..TASKS {
        enqueue(&store, key(wf, t), "medium", Millis(T0.0 + t as i64)).await;
    }
    let mut agents = Vec::new();
    for i in 0..CLAIMERS {
        agents.push(agent(&store, &format!("agent-{i}")).await);
    }
    let mut handles = Vec::new();
    for agent in agents {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(task) = store
                .claim_task(agent, &["small", "medium"], T0, LEASE)
                .await
                .expect("claim")
            {
                assert_eq!(task.lease_owner, Some(agent));
                assert_eq!(task.status, JobStatus::Running);
                mine.push(task.key);
            }
            (agent, mine)
        }));
    }
    let mut owner: BTreeMap<TaskKey, AgentId> = BTreeMap::new();
    for h in handles {
        let (agent, mine) = h.await.expect("join");
        for k in mine {
            if let Some(other) = owner.insert(k, agent) {
                panic!("task {k} went to agents {other} and {agent}");
            }
        }
    }
    assert_eq!(owner.len() as u64, TASKS, "every task claimed once");
    for (k, agent) in &owner {
        let stored = store.task(*k).await.unwrap().expect("stored");
        assert_eq!(stored.status, JobStatus::Running);
        assert_eq!(stored.lease_owner, Some(*agent));
        assert_eq!(stored.lease_expires_at, Some(T0.plus(LEASE)));
        assert_eq!(stored.payload, json!({"task": k.task.0}));
    }
}

async fn claim_rules(store: Store) {
    let wf = workflow(&store, "gh/acme/rules", 1).await;
    let a = agent(&store, "a").await;
    // Queued out of id order: the oldest goes first.
    enqueue(&store, key(wf, 0), "large", Millis(T0.0 + 30)).await;
    enqueue(&store, key(wf, 1), "medium", Millis(T0.0 + 20)).await;
    enqueue(&store, key(wf, 2), "medium", Millis(T0.0 + 10)).await;

    let again = store
        .enqueue_task(
            &NewTask {
                key: key(wf, 2),
                job: JobId(0),
                node_index: 0,
                attempt: 0,
                resource_class: "medium",
                payload: &json!({}),
            },
            T0,
        )
        .await;
    assert!(
        matches!(again, Err(Error::TaskExists(k)) if k == key(wf, 2)),
        "{again:?}"
    );

    assert_eq!(store.claim_task(a, &[], T0, LEASE).await.unwrap(), None);
    assert_eq!(
        store.claim_task(a, &["xlarge"], T0, LEASE).await.unwrap(),
        None
    );
    // An unknown agent gets nothing and takes nothing.
    assert_eq!(
        store
            .claim_task(AgentId(5_000), &["medium"], T0, LEASE)
            .await
            .unwrap(),
        None
    );
    let first = store
        .claim_task(a, &["medium"], T0, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.key, key(wf, 2));
    assert_eq!(first.resource_class, "medium");
    let second = store
        .claim_task(a, &["medium"], T0, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.key, key(wf, 1));
    assert_eq!(
        store.claim_task(a, &["medium"], T0, LEASE).await.unwrap(),
        None
    );

    // A draining agent takes no new work; another agent does.
    assert!(store.drain_agent(a).await.unwrap());
    assert_eq!(
        store.claim_task(a, &["large"], T0, LEASE).await.unwrap(),
        None
    );
    let b = agent(&store, "b").await;
    let third = store
        .claim_task(b, &["large"], T0, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.key, key(wf, 0));
    // Its lease is still renewable by its owner only.
    assert!(
        store
            .renew_lease(first.key, a, T0.plus(LEASE * 2))
            .await
            .unwrap()
    );
    assert!(
        !store
            .renew_lease(first.key, b, T0.plus(LEASE * 2))
            .await
            .unwrap()
    );
}

async fn lease_expiry_returns_exactly_the_expired(store: Store) {
    let wf = workflow(&store, "gh/acme/leases", 1).await;
    let a = agent(&store, "a").await;
    for t in 0..6 {
        enqueue(&store, key(wf, t), "medium", Millis(T0.0 + t as i64)).await;
    }
    // Tasks 0..5 claimed at T0 + t seconds with a 30 s lease: lease ends T0 + 30 + t s.
    for t in 0..5 {
        let now = T0.plus(Duration::from_secs(t));
        let task = store
            .claim_task(a, &["medium"], now, LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(task.key, key(wf, t));
    }
    // Task 1 renews far ahead; task 3 finishes; task 5 stays queued.
    assert!(
        store
            .renew_lease(key(wf, 1), a, T0.plus(Duration::from_secs(600)))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_task(key(wf, 3), a, TaskResult::Success, T0)
            .await
            .unwrap()
    );

    // Before any lease ends: nothing.
    let just_before = Millis(T0.plus(LEASE).0 - 1);
    assert_eq!(store.expire_leases(just_before).await.unwrap(), []);
    // At T0 + 32 s: tasks 0 (ended at 30 s) and 2 (ended at 32 s, inclusive).
    let now = T0.plus(Duration::from_secs(32));
    assert_eq!(
        store.expire_leases(now).await.unwrap(),
        [key(wf, 0), key(wf, 2)]
    );
    // Reported once.
    assert_eq!(store.expire_leases(now).await.unwrap(), []);
    let later = T0.plus(Duration::from_secs(100));
    assert_eq!(store.expire_leases(later).await.unwrap(), [key(wf, 4)]);

    for (t, status) in [
        (0, JobStatus::InfrastructureFail),
        (1, JobStatus::Running),
        (2, JobStatus::InfrastructureFail),
        (3, JobStatus::Success),
        (4, JobStatus::InfrastructureFail),
        (5, JobStatus::Queued),
    ] {
        let task = store.task(key(wf, t)).await.unwrap().unwrap();
        assert_eq!(task.status, status, "task {t}");
    }
    // The agent that lost the lease can neither renew nor report.
    assert!(!store.renew_lease(key(wf, 0), a, later).await.unwrap());
    assert!(
        !store
            .finish_task(key(wf, 0), a, TaskResult::Success, later)
            .await
            .unwrap()
    );
    // Another agent cannot report on a task it does not hold; the holder can, once.
    let b = agent(&store, "b").await;
    assert!(
        !store
            .finish_task(key(wf, 1), b, TaskResult::Failed, later)
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_task(key(wf, 1), a, TaskResult::Failed, later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_task(key(wf, 1), a, TaskResult::Success, later)
            .await
            .unwrap()
    );
    assert_eq!(
        store.task(key(wf, 1)).await.unwrap().unwrap().status,
        JobStatus::Failed
    );

    // Concurrent expiry (several servers): each expired task reported by one call.
    for t in 6..26 {
        enqueue(&store, key(wf, t), "medium", later).await;
        store
            .claim_task(a, &["medium"], later, LEASE)
            .await
            .unwrap()
            .unwrap();
    }
    let much_later = later.plus(Duration::from_secs(3600));
    let mut handles = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store.expire_leases(much_later).await.unwrap()
        }));
    }
    let mut seen = Vec::new();
    for h in handles {
        seen.extend(h.await.expect("join"));
    }
    seen.sort();
    // Task 5 was claimed by the loop above too (it was queued and oldest).
    let mut expected: Vec<TaskKey> = (5..26).map(|t| key(wf, t)).collect();
    expected.retain(|k| k.task != TaskId(25));
    assert_eq!(seen, expected);
}

async fn cancel_task(store: Store) {
    let wf = workflow(&store, "gh/acme/cancel", 1).await;
    let a = agent(&store, "a").await;
    enqueue(&store, key(wf, 0), "medium", T0).await;
    enqueue(&store, key(wf, 1), "medium", Millis(T0.0 + 1)).await;
    let running = store
        .claim_task(a, &["medium"], T0, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running.key, key(wf, 0));
    // A queued task leaves the queue.
    assert!(store.cancel_task(key(wf, 1), T0).await.unwrap());
    assert_eq!(
        store.claim_task(a, &["medium"], T0, LEASE).await.unwrap(),
        None
    );
    // A running one: its agent learns it at the next renewal.
    assert!(store.cancel_task(key(wf, 0), T0).await.unwrap());
    assert!(
        !store
            .renew_lease(key(wf, 0), a, T0.plus(LEASE))
            .await
            .unwrap()
    );
    assert!(!store.cancel_task(key(wf, 0), T0).await.unwrap());
    assert_eq!(
        store.task(key(wf, 0)).await.unwrap().unwrap().status,
        JobStatus::Canceled
    );
    // A canceled task's lease never "expires".
    assert_eq!(store.expire_leases(T0.plus(LEASE * 10)).await.unwrap(), []);
}

fn chunk(seq: u64, data: &[u8]) -> LogChunk {
    LogChunk {
        seq,
        step: 1,
        stream: if seq.is_multiple_of(2) {
            Stream::Stdout
        } else {
            Stream::Stderr
        },
        at: Millis(T0.0 + seq as i64),
        data: data.to_vec(),
    }
}

async fn log_chunks_idempotent_and_ordered(store: Store) {
    let wf = workflow(&store, "gh/acme/logs", 1).await;
    enqueue(&store, key(wf, 0), "medium", T0).await;
    enqueue(&store, key(wf, 1), "medium", T0).await;
    let k = key(wf, 0);
    // Out of order, with bytes that are not UTF-8.
    assert!(
        store
            .append_log_chunk(k, &chunk(2, b"\x1b[31mred\x1b[0m\n"))
            .await
            .unwrap()
    );
    assert!(
        store
            .append_log_chunk(k, &chunk(0, b"hello\n"))
            .await
            .unwrap()
    );
    assert!(
        store
            .append_log_chunk(k, &chunk(1, &[0xff, 0xfe, 0x00, b'\n']))
            .await
            .unwrap()
    );
    // A retry (same content, later timestamp) is a no-op.
    let mut retry = chunk(1, &[0xff, 0xfe, 0x00, b'\n']);
    retry.at = Millis(T0.0 + 500);
    assert!(!store.append_log_chunk(k, &retry).await.unwrap());
    // Other content under a stored seq is refused.
    let clash = store.append_log_chunk(k, &chunk(1, b"different")).await;
    assert!(
        matches!(clash, Err(Error::ChunkConflict { seq: 1, .. })),
        "{clash:?}"
    );
    // Another task's chunks are separate.
    assert!(
        store
            .append_log_chunk(key(wf, 1), &chunk(0, b"other\n"))
            .await
            .unwrap()
    );

    let all = store.log_chunks(k, 0, 100).await.unwrap();
    assert_eq!(
        all,
        [
            chunk(0, b"hello\n"),
            chunk(1, &[0xff, 0xfe, 0x00, b'\n']),
            chunk(2, b"\x1b[31mred\x1b[0m\n"),
        ]
    );
    let tail: Vec<u64> = store
        .log_chunks(k, 1, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(tail, [1, 2]);
    let page: Vec<u64> = store
        .log_chunks(k, 0, 2)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(page, [0, 1]);
    assert_eq!(store.log_chunks(k, 3, 100).await.unwrap(), []);

    // Concurrent retries of one chunk: stored once, one caller sees `true`.
    let mut handles = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store
                .append_log_chunk(k, &chunk(3, b"raced\n"))
                .await
                .unwrap()
        }));
    }
    let mut stored = 0;
    for h in handles {
        stored += usize::from(h.await.expect("join"));
    }
    assert_eq!(stored, 1);
    assert_eq!(
        store.log_chunks(k, 3, 100).await.unwrap(),
        [chunk(3, b"raced\n")]
    );
}

async fn agents(store: Store) {
    let a = store.register_agent("alpha", "h-alpha", T0).await.unwrap();
    assert_eq!(a.status, AgentStatus::Active);
    let dup_name = store.register_agent("alpha", "h-other", T0).await;
    assert!(
        matches!(dup_name, Err(Error::AgentExists(_))),
        "{dup_name:?}"
    );
    let dup_token = store.register_agent("gamma", "h-alpha", T0).await;
    assert!(
        matches!(dup_token, Err(Error::AgentExists(_))),
        "{dup_token:?}"
    );
    let b = store.register_agent("beta", "h-beta", T0).await.unwrap();
    assert_eq!(
        store.agent_by_token("h-beta").await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(store.agent_by_token("h-nope").await.unwrap(), None);

    let t1 = T0.plus(Duration::from_secs(60));
    assert_eq!(
        store.heartbeat(a.id, t1).await.unwrap(),
        Some(AgentStatus::Active)
    );
    assert_eq!(store.heartbeat(AgentId(9_999), t1).await.unwrap(), None);
    // beta missed its heartbeats.
    let down = store
        .mark_agents_down(T0.plus(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(down, [b.id]);
    assert_eq!(
        store
            .mark_agents_down(T0.plus(Duration::from_secs(30)))
            .await
            .unwrap(),
        []
    );
    // A heartbeat revives a down agent; a draining one stays draining.
    assert_eq!(
        store.heartbeat(b.id, t1).await.unwrap(),
        Some(AgentStatus::Active)
    );
    assert!(store.drain_agent(a.id).await.unwrap());
    assert!(!store.drain_agent(AgentId(9_999)).await.unwrap());
    assert_eq!(
        store.heartbeat(a.id, t1).await.unwrap(),
        Some(AgentStatus::Draining)
    );

    let listed = store.agents().await.unwrap();
    let summary: Vec<(&str, AgentStatus, Millis)> = listed
        .iter()
        .map(|a| (a.name.as_str(), a.status, a.last_heartbeat))
        .collect();
    assert_eq!(
        summary,
        [
            ("alpha", AgentStatus::Draining, t1),
            ("beta", AgentStatus::Active, t1)
        ]
    );
}

/// Replicas wake each other's live readers through PostgreSQL's NOTIFY; SQLite (one
/// process) has no listener and notifying is a no-op.
mod log_notifications {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let db = crate::support::postgres().await;
        let mut listener = db
            .store
            .log_listener()
            .await
            .expect("listen")
            .expect("PostgreSQL listens");
        let key = TaskKey {
            workflow: gyre_core::WorkflowId(7),
            task: TaskId(2),
        };
        db.store.notify_log("replica-a", key).await.expect("notify");
        let got = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification within 10 s")
            .expect("recv");
        assert_eq!(got, ("replica-a".to_string(), key));
        db.store.close().await;
    }

    #[tokio::test]
    async fn sqlite() {
        let db = crate::support::sqlite().await;
        assert!(db.store.log_listener().await.expect("no error").is_none());
        let key = TaskKey {
            workflow: gyre_core::WorkflowId(1),
            task: TaskId(0),
        };
        db.store
            .notify_log("replica-a", key)
            .await
            .expect("a no-op");
        db.store.close().await;
    }
}

/// The web UI's reads: sessions (expiry, sign-out), a running log read backwards, its step
/// markers, the default branch.
async fn ui_sessions_and_log_tails(store: Store) {
    let session = UiSession {
        login: "admin".into(),
        csrf: "csrf-1".into(),
        expires_at: Millis(T0.0 + 1000),
    };
    store.create_ui_session("h1", &session, T0).await.unwrap();
    assert_eq!(
        store.ui_session("h1", T0).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(store.ui_session("h2", T0).await.unwrap(), None);
    // Expired: not found, and swept by the next sign-out.
    assert_eq!(
        store.ui_session("h1", Millis(T0.0 + 1000)).await.unwrap(),
        None
    );
    store.create_ui_session("h3", &session, T0).await.unwrap();
    store.delete_ui_session("h3", T0).await.unwrap();
    assert_eq!(store.ui_session("h3", T0).await.unwrap(), None);
    assert_eq!(
        store.ui_session("h1", T0).await.unwrap(),
        Some(session.clone())
    );
    store
        .delete_ui_session("none", Millis(T0.0 + 5000))
        .await
        .unwrap();
    assert_eq!(store.ui_session("h1", T0).await.unwrap(), None);
    // Housekeeping drops expired sessions, and only those.
    store.create_ui_session("h4", &session, T0).await.unwrap();
    let later = UiSession {
        expires_at: Millis(T0.0 + 9000),
        ..session.clone()
    };
    store.create_ui_session("h5", &later, T0).await.unwrap();
    assert_eq!(
        store.expire_ui_sessions(Millis(T0.0 + 1000)).await.unwrap(),
        1
    );
    assert_eq!(store.ui_session("h5", T0).await.unwrap(), Some(later));
    assert_eq!(store.ui_session("h4", T0).await.unwrap(), None);

    let wf = workflow(&store, "gh/acme/tail", 1).await;
    let k = key(wf, 0);
    enqueue(&store, k, "medium", T0).await;
    let marker = |seq: u64, stream: Stream, data: &[u8]| LogChunk {
        seq,
        step: 0,
        stream,
        at: Millis(T0.0 + seq as i64),
        data: data.to_vec(),
    };
    store
        .append_log_chunk(k, &marker(0, Stream::StepStarted, br#"{"name":"a"}"#))
        .await
        .unwrap();
    for seq in 1..=5 {
        store
            .append_log_chunk(k, &chunk(seq, b"out\n"))
            .await
            .unwrap();
    }
    store
        .append_log_chunk(
            k,
            &marker(6, Stream::System, b"Exited with code exit status 1"),
        )
        .await
        .unwrap();
    store
        .append_log_chunk(k, &marker(7, Stream::StepFinished, b"failed"))
        .await
        .unwrap();
    let seqs = |v: Vec<LogChunk>| v.iter().map(|c| c.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.log_chunks_before(k, u64::MAX, 3).await.unwrap()),
        vec![7, 6, 5]
    );
    assert_eq!(
        seqs(store.log_chunks_before(k, 5, 10).await.unwrap()),
        vec![4, 3, 2, 1, 0]
    );
    assert_eq!(seqs(store.log_markers(k).await.unwrap()), vec![0, 6, 7]);

    // Local users: added, password replaced.
    assert_eq!(store.ui_user_password_hash("ada").await.unwrap(), None);
    store.set_ui_user("ada", "h-1", T0).await.unwrap();
    store.set_ui_user("ada", "h-2", T0).await.unwrap();
    assert_eq!(
        store.ui_user_password_hash("ada").await.unwrap().as_deref(),
        Some("h-2")
    );
    let project = store
        .project_by_slug("gh/acme/tail")
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .set_project_default_branch(project.id, "trunk")
            .await
            .unwrap()
    );
    let again = store.project(project.id).await.unwrap().unwrap();
    assert_eq!(again.default_branch, "trunk");
    assert!(
        !store
            .set_project_default_branch(ProjectId(999_999), "x")
            .await
            .unwrap()
    );
}

async fn signing_keys(store: Store) {
    assert!(store.signing_keys().await.unwrap().is_empty());
    let key = |kid: &str, at: i64, sealed: &[u8]| SigningKeyRow {
        kid: kid.to_owned(),
        alg: "RS256".to_owned(),
        public_jwk: format!(r#"{{"kid":"{kid}"}}"#),
        sealed: sealed.to_vec(),
        created_at: Millis(at),
    };
    assert!(
        store
            .add_signing_key(&key("b", T0.0, b"\x00sealed-b\xff"))
            .await
            .unwrap()
    );
    assert!(
        store
            .add_signing_key(&key("a", T0.0 + 5, b"sealed-a"))
            .await
            .unwrap()
    );
    // A second key with a taken kid changes nothing.
    assert!(
        !store
            .add_signing_key(&key("b", T0.0 + 9, b"other"))
            .await
            .unwrap()
    );
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(
        keys,
        [
            key("b", T0.0, b"\x00sealed-b\xff"),
            key("a", T0.0 + 5, b"sealed-a")
        ]
    );
}

async fn ui_users(store: Store) {
    assert!(store.ui_users().await.unwrap().is_empty());
    store.set_ui_user("bob", "hash-b", T0).await.unwrap();
    store
        .set_ui_user("ada", "hash-a", Millis(T0.0 + 1))
        .await
        .unwrap();
    // A new password keeps the user's age.
    store
        .set_ui_user("bob", "hash-b2", Millis(T0.0 + 9))
        .await
        .unwrap();
    assert_eq!(
        store.ui_users().await.unwrap(),
        [("ada".to_owned(), Millis(T0.0 + 1)), ("bob".to_owned(), T0)]
    );
    let session = |login: &str| UiSession {
        login: login.into(),
        csrf: "c".into(),
        expires_at: Millis(T0.0 + 1000),
    };
    store
        .create_ui_session("s-bob", &session("bob"), T0)
        .await
        .unwrap();
    store
        .create_ui_session("s-ada", &session("ada"), T0)
        .await
        .unwrap();
    // Deleting bob ends bob's sessions, not ada's.
    assert!(store.delete_ui_user("bob").await.unwrap());
    assert!(!store.delete_ui_user("bob").await.unwrap());
    assert_eq!(store.ui_session("s-bob", T0).await.unwrap(), None);
    assert_eq!(
        store.ui_session("s-ada", T0).await.unwrap(),
        Some(session("ada"))
    );
    assert_eq!(store.ui_user_password_hash("bob").await.unwrap(), None);
    assert_eq!(
        store.ui_users().await.unwrap(),
        [("ada".to_owned(), Millis(T0.0 + 1))]
    );
}

async fn contexts(store: Store) {
    assert!(store.contexts("gh/acme").await.unwrap().is_empty());
    let global = store
        .create_context("gh/acme", "org-global", T0)
        .await
        .unwrap()
        .expect("created");
    let deploy = store
        .create_context("gh/acme", "deploy", T0)
        .await
        .unwrap()
        .expect("created");
    // Names are unique per owner, not across owners.
    assert_eq!(
        store.create_context("gh/acme", "deploy", T0).await.unwrap(),
        None
    );
    let other = store
        .create_context("gh/other", "deploy", T0)
        .await
        .unwrap()
        .expect("created");
    assert_ne!(other.id, deploy.id);
    let names: Vec<String> = store
        .contexts("gh/acme")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["deploy", "org-global"]);
    assert_eq!(
        store.context(global.id).await.unwrap(),
        Some(global.clone())
    );
    assert_eq!(store.context(999).await.unwrap(), None);

    assert!(
        store
            .set_context_env_var(global.id, "B", b"sealed-b", T0)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_context_env_var(global.id, "A", b"\x00a", T0)
            .await
            .unwrap()
    );
    // Replaced: new value and updated_at, same created_at.
    let later = Millis(T0.0 + 7);
    assert!(
        store
            .set_context_env_var(global.id, "B", b"b2", later)
            .await
            .unwrap()
    );
    assert!(!store.set_context_env_var(999, "A", b"x", T0).await.unwrap());
    let vars = store.context_env_vars(global.id).await.unwrap();
    let seen: Vec<(&str, &[u8], i64, i64)> = vars
        .iter()
        .map(|v| {
            (
                v.name.as_str(),
                v.sealed.as_slice(),
                v.created_at.0,
                v.updated_at.0,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("A", &b"\x00a"[..], T0.0, T0.0),
            ("B", &b"b2"[..], T0.0, later.0)
        ]
    );
    assert!(store.delete_context_env_var(global.id, "A").await.unwrap());
    assert!(!store.delete_context_env_var(global.id, "A").await.unwrap());
    // Deleting a context takes its variables with it.
    assert!(store.delete_context(global.id).await.unwrap());
    assert!(!store.delete_context(global.id).await.unwrap());
    assert_eq!(store.context(global.id).await.unwrap(), None);
    assert!(store.context_env_vars(global.id).await.unwrap().is_empty());
    // A new context never reuses an id.
    let again = store
        .create_context("gh/acme", "org-global", T0)
        .await
        .unwrap()
        .expect("created");
    assert!(again.id > other.id);
}
