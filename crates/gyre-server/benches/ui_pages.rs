//! Server time of the web UI's pages for a project with 10,000 pipelines, against the
//! JSON API's pipelines page (the baseline) in the same process.
//!
//! Seeds a SQLite store through gyre-store (10,000 pipelines with commit details and a
//! workflow of three jobs each; one branch in fifty is `feature`), serves the real router
//! on a loopback port and times requests with a minimal HTTP/1.1 client (connect, send,
//! read to the end). Run: `cargo bench -p gyre-server --bench ui_pages`.

use gyre_blob::BlobStore;
use gyre_core::JobStatus;
use gyre_server::{App, ServerConfig, auth};
use gyre_store::{Millis, NewJob, NewPipeline, NewProject, PipelineDetails, Store, UiSession};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PIPELINES: u64 = 10_000;
const ROUNDS: usize = 60;
const TOKEN: &str = "bench-admin-token";
const SESSION: &str = "bench-session-id";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::connect(&format!(
        "sqlite:{}?mode=rwc",
        dir.path().join("g.db").display()
    ))
    .await
    .expect("store");
    store.migrate().await.expect("migrate");
    let settings = json!({});
    let project = store
        .create_project(
            &NewProject {
                slug: "gh/acme/app",
                repo_url: "/nowhere",
                default_branch: "main",
                webhook_secret: Some("s3cret"),
                settings: &settings,
            },
            Millis(0),
        )
        .await
        .expect("project");
    let t = Instant::now();
    for i in 0..PIPELINES {
        let branch = if i % 50 == 0 { "feature" } else { "main" };
        let p = store
            .create_pipeline(
                &NewPipeline {
                    project: project.id,
                    trigger_kind: "webhook",
                    trigger_actor: "octocat",
                    branch: Some(branch),
                    tag: None,
                    revision: &format!("{i:040x}"),
                },
                Millis(1_700_000_000_000 + i as i64 * 60_000),
            )
            .await
            .expect("pipeline");
        store
            .set_pipeline_details(
                p.id,
                &PipelineDetails {
                    vcs: Some(json!({"commit": {"subject": format!("Change number {i}"),
                                                "author_name": "Ada"}})),
                    ..PipelineDetails::default()
                },
            )
            .await
            .expect("details");
        let jobs = ["build", "test", "deploy"].map(|name| NewJob {
            name,
            status: JobStatus::Success,
            approval: false,
        });
        store
            .create_workflow(p.id, "main", &jobs, Millis(p.created_at.0))
            .await
            .expect("workflow");
    }
    eprintln!("seeded {PIPELINES} pipelines in {:?}", t.elapsed());
    let now = Millis::now();
    store
        .create_ui_session(
            &auth::token_hash(SESSION),
            &UiSession {
                login: "admin".into(),
                csrf: "c".into(),
                expires_at: now.plus(Duration::from_secs(3600)),
            },
            now,
        )
        .await
        .expect("session");
    let blobs = BlobStore::open(&dir.path().join("blobs").display().to_string()).expect("blobs");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = ServerConfig::new(TOKEN.into(), dir.path(), format!("http://{addr}"));
    let app = App::new(config, store, blobs);
    tokio::spawn(gyre_server::serve(app, listener, std::future::pending()));

    let cases: [(&str, String, &str); 6] = [
        (
            "API v2 pipelines page (baseline)",
            "/api/v2/project/gh/acme/app/pipeline".into(),
            "api",
        ),
        (
            "UI project page, newest",
            "/project/gh/acme/app".into(),
            "ui",
        ),
        (
            "UI project page, deep (before=5000)",
            "/project/gh/acme/app?before=5000".into(),
            "ui",
        ),
        (
            "UI project page, branch filter",
            "/project/gh/acme/app?branch=feature".into(),
            "ui",
        ),
        ("UI dashboard", "/".into(), "ui"),
        (
            "UI pipeline page",
            format!("/project/gh/acme/app/pipelines/{}", PIPELINES / 2),
            "ui",
        ),
    ];
    println!("| page | median | p95 | bytes |");
    println!("|---|---:|---:|---:|");
    for (name, path, auth) in &cases {
        let mut times = Vec::with_capacity(ROUNDS);
        let mut size = 0;
        for _ in 0..ROUNDS {
            let (took, status, body) = get(addr, path, auth).await;
            assert_eq!(status, 200, "{path}");
            size = body;
            times.push(took);
        }
        times.sort();
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {size} |",
            ms(times[ROUNDS / 2]),
            ms(times[ROUNDS * 95 / 100])
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One GET on a fresh connection: (time to the last byte, status, body bytes).
async fn get(addr: std::net::SocketAddr, path: &str, auth: &str) -> (Duration, u16, usize) {
    let credentials = if auth == "api" {
        format!("Circle-Token: {TOKEN}\r\n")
    } else {
        format!("Cookie: gyre_session={SESSION}\r\n")
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{credentials}Connection: close\r\n\r\n");
    let t = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.expect("read");
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    (took, status, body)
}
