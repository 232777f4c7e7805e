//! The web UI in a real browser: `gyre up` (SQLite, local blobs, built-in agent, real
//! Docker), a real git repository, headless Chromium driven through chromedriver (Debian's
//! `chromium` and `chromium-driver`) with fantoccini. It signs in, triggers a pipeline,
//! watches the graph change state, follows a running job's log, approves a hold, reruns
//! from failed, reads a failed test, opens an artifact, reads the tail of a 100 MB log
//! and signs out; a screenshot of every page goes to `target/ui-screenshots/`. Plain HTTP
//! checks cover what a browser hides: redirects, CSRF refusals, escaping, external URLs.

mod common;

use common::{free_port, git};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "ui-admin-token";

const CONFIG: &str = r#"version: 2.1
parameters:
  mode: {type: string, default: main}
executors:
  bb:
    docker: [{image: gyre-test/busybox:latest}]
jobs:
  build:
    executor: bb
    steps:
      - checkout
      - run: |
          printf '\033[32mgreen build\033[0m\n'
          mkdir -p out && echo "built artifact" > out/report.txt && echo '<h1>x</h1>' > out/page.html
      - store_artifacts: {path: out, destination: art}
      - run: |
          mkdir -p results
          printf '<testsuite><testcase classname="t" name="passes" time="0.1"/><testcase classname="t" name="breaks" file="t.sh" time="0.2"><failure message="expected 1, got 2">trace</failure></testcase></testsuite>' > results/junit.xml
      - store_test_results: {path: results}
  test:
    parameters: {n: {type: integer}}
    executor: bb
    parallelism: 2
    steps: [{run: echo "test << parameters.n >> on node $CIRCLE_NODE_INDEX"}]
  slow:
    executor: bb
    steps:
      - run: for i in $(seq 1 60); do echo "tick $i"; sleep 0.5; done
  flaky:
    executor: bb
    steps: [{run: echo "flaky fails"; exit 3}]
  deploy:
    executor: bb
    steps: [{run: echo deploying}]
  big:
    executor: bb
    steps:
      - run: |
          (yes "0123456789 gyre big log line abcdefghijklmnopqrstuvwxyz" || true) | head -c 100000000
          echo
          echo "END OF BIG LOG"
workflows:
  main:
    when: {equal: [main, << pipeline.parameters.mode >>]}
    jobs:
      - build
      - test: {matrix: {parameters: {n: [1, 2]}}, requires: [build]}
      - hold: {type: approval, requires: [test]}
      - deploy: {requires: [hold]}
      - slow
      - flaky
  big:
    when: {equal: [big, << pipeline.parameters.mode >>]}
    jobs: [big]
"#;

/// A child process stopped when dropped (`common::stop`).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        common::stop(&mut self.0);
    }
}

/// The fixture repository: `main` with the config, and a branch whose name and commit
/// subject are HTML.
fn fixture_repo(dir: &Path) {
    std::fs::create_dir_all(dir.join(".circleci")).expect("mkdir");
    std::fs::write(dir.join(".circleci/config.yml"), CONFIG).expect("config");
    std::fs::write(dir.join("README.md"), "ui").expect("readme");
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "Add the pipeline"]);
    git(dir, &["checkout", "-qb", XSS_BRANCH]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", XSS_SUBJECT]);
    git(dir, &["checkout", "-q", "main"]);
    // A branch whose config does not compile.
    git(dir, &["checkout", "-qb", "broken"]);
    let broken = CONFIG.replace(
        "      - deploy: {requires: [hold]}",
        "      - deploy: {requires: [hodl]}",
    );
    std::fs::write(dir.join(".circleci/config.yml"), broken).expect("config");
    git(dir, &["commit", "-qam", "Break the config"]);
    git(dir, &["checkout", "-q", "main"]);
}

const XSS_BRANCH: &str = "<script>x</script>";
const XSS_SUBJECT: &str = "<img src=x onerror=alert(1)>";

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::workspace_root().join("target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).expect("write png");
}

/// Polls `check` until it answers `Some`, for at most `secs`.
async fn until<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The text of the first element matching `css`, once there is one.
async fn text_of(c: &Client, css: &str) -> Option<String> {
    let e = c.find(Locator::Css(css)).await.ok()?;
    e.text().await.ok()
}

async fn attr_of(c: &Client, css: &str, attr: &str) -> Option<String> {
    let e = c.find(Locator::Css(css)).await.ok()?;
    e.attr(attr).await.ok().flatten()
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.expect("script")
}

struct Gyre {
    base: String,
    http: reqwest::Client,
    _up: Proc,
    log: PathBuf,
}

impl Gyre {
    async fn api_get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Circle-Token", TOKEN)
            .send()
            .await
            .expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("JSON")
    }

    async fn api_post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Circle-Token", TOKEN)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    /// Status of job `name` in the newest workflow run of pipeline `number`.
    async fn job_status(&self, number: u64, name: &str) -> Option<String> {
        let p = self
            .api_get(&format!("/api/v2/project/gh/acme/app/pipeline/{number}"))
            .await;
        let id = p["id"].as_str()?;
        let wfs = self
            .api_get(&format!("/api/v2/pipeline/{id}/workflow"))
            .await;
        let wf = wfs["items"].as_array()?.last()?["id"].as_str()?.to_string();
        let jobs = self.api_get(&format!("/api/v2/workflow/{wf}/job")).await;
        jobs["items"]
            .as_array()?
            .iter()
            .find(|j| j["name"] == name)
            .and_then(|j| j["status"].as_str().map(str::to_string))
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn start_gyre(tmp: &Path) -> Gyre {
    let repo = tmp.join("repo");
    fixture_repo(&repo);
    let port = free_port();
    let log = tmp.join("up.log");
    let file = std::fs::File::create(&log).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_gyre"))
        .env("GYRE_LOG", "info")
        .env("GYRE_ADMIN_TOKEN", TOKEN)
        .args(["up", "--data-dir"])
        .arg(tmp.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--concurrency", "4", "--helper"])
        .arg(common::helper())
        .stdout(file.try_clone().expect("clone"))
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn gyre up");
    let g = Gyre {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        _up: Proc(child),
        log,
    };
    until("gyre up", 60, || async {
        let r = g
            .http
            .get(format!("{}/api/v2/me", g.base))
            .header("Circle-Token", TOKEN)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    g.api_post(
        "/api/gyre/v1/projects",
        json!({"slug": "gh/acme/app", "repo_url": repo.display().to_string(),
               "default_branch": "main", "webhook_secret": "hook-secret-1234"}),
    )
    .await;
    g
}

async fn start_browser() -> (Proc, Client) {
    let port = free_port();
    let driver = Proc(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver)"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    until("chromedriver", 30, || async {
        let r = http.get(format!("{url}/status")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-background-networking",
                        "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
                        "--enable-precise-memory-info"]}),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("WebDriver session");
    (driver, client)
}

/// Posts a form (with `cookie`, if any) without following redirects.
async fn post_form(
    g: &Gyre,
    path: &str,
    cookie: Option<&str>,
    pairs: &[(&str, &str)],
) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let mut req = g
        .http
        .post(format!("{}{path}", g.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.expect("POST")
}

/// A cookie jar of one: the session cookie from a `Set-Cookie` answer.
fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("gyre_session=") && !v.starts_with("gyre_session=;"))
        .map(str::to_string)
}

/// Signs in over plain HTTP; returns the `Cookie` header value.
async fn http_sign_in(g: &Gyre) -> String {
    let r = g
        .http
        .get(format!("{}/signin", g.base))
        .send()
        .await
        .unwrap();
    let signin_cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("sign-in cookie")
        .to_string();
    let html = r.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf field")
        .to_string();
    // A forged sign-in (no double-submit cookie) is refused.
    let r = post_form(
        g,
        "/signin",
        None,
        &[("token", TOKEN), ("csrf", &csrf), ("next", "/")],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(session_cookie(&r).is_none());
    // A wrong token is refused.
    let r = post_form(
        g,
        "/signin",
        Some(&signin_cookie),
        &[("token", "wrong"), ("csrf", &csrf), ("next", "/")],
    )
    .await;
    assert_eq!(r.status(), 401);
    let r = post_form(
        g,
        "/signin",
        Some(&signin_cookie),
        &[("token", TOKEN), ("csrf", &csrf), ("next", "/")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let set = session_cookie(&r).expect("session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().unwrap().to_string()
}

async fn page(g: &Gyre, cookie: &str, path: &str) -> (u16, String) {
    let r = g
        .http
        .get(format!("{}{path}", g.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Every `http://` or `https://` URL in `text` that is not gyre's own.
fn external_urls(text: &str, own: &str) -> Vec<String> {
    let mut out = Vec::new();
    for scheme in ["http://", "https://"] {
        for (i, _) in text.match_indices(scheme) {
            let url: String = text[i..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !"\"'<>)".contains(*c))
                .collect();
            if !url.starts_with(own) {
                out.push(url);
            }
        }
    }
    out
}

/// What a browser does not show: redirects to sign-in, refused forms, escaping, URLs.
async fn plain_http_checks(g: &Gyre) -> String {
    for path in [
        "/",
        "/project/gh/acme/app",
        "/project/gh/acme/app/settings",
        "/organization/gh/acme/contexts",
    ] {
        let r = g
            .http
            .get(format!("{}{path}", g.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{path}");
        let to = r.headers()["location"].to_str().unwrap();
        assert!(to.starts_with("/signin?next="), "{path} → {to}");
    }
    // A form posted without a session changes nothing.
    let r = post_form(
        g,
        "/project/gh/acme/app/trigger",
        None,
        &[("branch", "main")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let cookie = http_sign_in(g).await;
    // With a session but without its CSRF token: 403, nothing triggered.
    let r = post_form(
        g,
        "/project/gh/acme/app/trigger",
        Some(&cookie),
        &[("branch", "main"), ("csrf", "forged")],
    )
    .await;
    assert_eq!(r.status(), 403);
    let list = g.api_get("/api/v2/project/gh/acme/app/pipeline").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    let r = post_form(
        g,
        "/organization/gh/acme/contexts",
        Some(&cookie),
        &[("name", "forged"), ("csrf", "forged")],
    )
    .await;
    assert_eq!(r.status(), 403);
    let contexts = g.api_get("/api/v2/context?owner-slug=gh/acme").await;
    assert_eq!(contexts["items"], json!([]), "{contexts}");
    // A context named with HTML is listed as text.
    g.api_post(
        "/api/v2/context",
        json!({"name": XSS_BRANCH, "owner": {"slug": "gh/acme"}}),
    )
    .await;
    let (status, html) = page(g, &cookie, "/organization/gh/acme/contexts").await;
    assert_eq!(status, 200);
    assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
    assert!(!html.contains(XSS_BRANCH), "{html}");

    // A branch and a commit subject made of HTML are shown as text.
    g.api_post(
        "/api/v2/project/gh/acme/app/pipeline",
        json!({"branch": XSS_BRANCH, "parameters": {"mode": "none"}}),
    )
    .await;
    let (status, html) = page(g, &cookie, "/project/gh/acme/app").await;
    assert_eq!(status, 200);
    assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(!html.contains(XSS_BRANCH) && !html.contains(XSS_SUBJECT));
    // A config error: the pipeline is errored.
    let errored = g
        .api_post(
            "/api/v2/project/gh/acme/app/pipeline",
            json!({"branch": "broken"}),
        )
        .await;
    let errored = errored["number"].as_u64().unwrap();
    let p = g
        .api_get(&format!("/api/v2/project/gh/acme/app/pipeline/{errored}"))
        .await;
    assert_eq!(p["state"], "errored", "{p}");
    let (_, html) = page(g, &cookie, "/project/gh/acme/app?branch=%3Cb%3E").await;
    assert!(html.contains("value=\"&lt;b&gt;\""), "{html}");
    cookie
}

/// No page, style sheet or script names a URL outside gyre.
async fn no_external_urls(g: &Gyre, cookie: &str, paths: &[String]) {
    for path in paths {
        let (status, text) = page(g, cookie, path).await;
        assert_eq!(status, 200, "{path}");
        let bad = external_urls(&text, &g.base);
        assert!(bad.is_empty(), "{path} references {bad:?}");
        for asset in text.split("/ui/assets/").skip(1) {
            let name: String = asset.chars().take_while(|c| *c != '"').collect();
            let (status, body) = page(g, cookie, &format!("/ui/assets/{name}")).await;
            assert_eq!(status, 200, "asset {name}");
            let bad = external_urls(&body, &g.base);
            assert!(bad.is_empty(), "asset {name} references {bad:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_web_ui_in_a_real_browser() {
    let tmp = tempfile::tempdir().expect("tmp");
    let g = start_gyre(tmp.path()).await;
    let cookie = plain_http_checks(&g).await;
    let (_driver, c) = start_browser().await;
    let result = browse(&g, &c, &cookie).await;
    let _ = c.close().await;
    if let Err(e) = result {
        panic!("{e}\n--- gyre up log ---\n{}", g.server_log());
    }
}

/// The browser part; an `Err` carries what went wrong (the caller adds the server log).
async fn browse(g: &Gyre, c: &Client, cookie: &str) -> Result<(), String> {
    let base = &g.base;
    // Sign in.
    c.goto(&format!("{base}/"))
        .await
        .map_err(|e| e.to_string())?;
    let url = c.current_url().await.map_err(|e| e.to_string())?;
    assert_eq!(url.path(), "/signin");
    screenshot(c, "signin").await;
    c.find(Locator::Css("#token"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys(TOKEN)
        .await
        .map_err(|e| e.to_string())?;
    click(c, "form[action='/signin'] button").await;
    let h1 = until("dashboard", 10, || text_of(c, "main h1")).await;
    assert_eq!(h1, "Projects");
    assert!(
        text_of(c, ".project h2")
            .await
            .unwrap()
            .contains("gh/acme/app")
    );
    screenshot(c, "dashboard").await;

    // An errored pipeline shows its config error: file, line, column, the line, a caret.
    c.goto(&format!("{base}/project/gh/acme/app/pipelines/2"))
        .await
        .map_err(|e| e.to_string())?;
    let error = until("the config error", 10, || text_of(c, "pre.config-error")).await;
    assert!(
        error.contains(".circleci/config.yml:") && error.contains("hodl") && error.contains('^'),
        "{error}"
    );
    screenshot(c, "pipeline-errored").await;

    // Trigger a pipeline from the project page.
    c.goto(&format!("{base}/project/gh/acme/app"))
        .await
        .map_err(|e| e.to_string())?;
    screenshot(c, "project").await;
    click(c, "#trigger").await;
    let h1 = until("pipeline page", 20, || async {
        text_of(c, "main h1")
            .await
            .filter(|t| t.starts_with("Pipeline #"))
    })
    .await;
    let number: u64 = h1.trim_start_matches("Pipeline #").parse().unwrap();
    let pipeline_url = c.current_url().await.unwrap().to_string();

    // Watch the graph change state without reloading.
    js(c, "window.__stayed = 1").await;
    let first = until("build in the graph", 20, || {
        attr_of(c, "svg.graph [data-job='build']", "data-status")
    })
    .await;
    until("build succeeds in the graph", 120, || async {
        attr_of(c, "svg.graph [data-job='build']", "data-status")
            .await
            .filter(|s| s == "success")
    })
    .await;
    assert_ne!(first, "success", "the graph showed build only at its end");
    let group = js(
        c,
        "return document.querySelector('svg.graph text.group').textContent",
    )
    .await;
    assert_eq!(
        group,
        json!("test"),
        "matrix jobs grouped under their alias"
    );
    assert_eq!(
        js(c, "return window.__stayed").await,
        json!(1),
        "the page reloaded"
    );
    screenshot(c, "pipeline").await;

    // A parallel job: one tab per task.
    until("test-1 succeeds", 60, || async {
        attr_of(c, "svg.graph [data-job='test-1']", "data-status")
            .await
            .filter(|s| s == "success")
    })
    .await;
    let test_href = attr_of(c, "svg.graph a[data-job='test-1']", "href")
        .await
        .expect("test-1 link");
    c.goto(&format!("{base}{test_href}?node=1"))
        .await
        .map_err(|e| e.to_string())?;
    let tabs = c
        .find_all(Locator::Css("nav.nodes a"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(tabs.len(), 2, "one tab per parallel task");
    let current = text_of(c, "nav.nodes a[aria-current]").await.unwrap();
    assert!(current.starts_with("Task 1"), "{current}");
    let out = until("node 1's output", 10, || async {
        let t = js(c, "return document.querySelector('#log')?.textContent").await;
        t.as_str()
            .filter(|t| t.contains("test 1 on node 1"))
            .map(str::to_string)
    })
    .await;
    assert!(!out.contains("on node 0"), "{out}");
    screenshot(c, "job-parallel").await;
    c.goto(&pipeline_url).await.map_err(|e| e.to_string())?;

    // A running job: new log lines arrive without reloading.
    let slow_href = until("slow running", 60, || async {
        let status = attr_of(c, "svg.graph [data-job='slow']", "data-status").await?;
        if status != "running" {
            return None;
        }
        attr_of(c, "svg.graph a[data-job='slow']", "href").await
    })
    .await;
    c.goto(&format!("{base}{slow_href}"))
        .await
        .map_err(|e| e.to_string())?;
    js(c, "window.__stayed = 1").await;
    let ticks = |t: &str| t.lines().filter(|l| l.starts_with("tick ")).count();
    let seen = until("slow's output", 30, || async {
        let t = text_of(c, "details.step:last-of-type pre.log").await?;
        (ticks(&t) > 0).then_some(ticks(&t))
    })
    .await;
    until("more of slow's output", 30, || async {
        let t = text_of(c, "details.step:last-of-type pre.log").await?;
        (ticks(&t) >= seen + 3).then_some(())
    })
    .await;
    assert_eq!(
        js(c, "return window.__stayed").await,
        json!(1),
        "the job page reloaded"
    );
    screenshot(c, "job-running").await;

    // Approve the hold; deploy runs.
    c.goto(&pipeline_url).await.map_err(|e| e.to_string())?;
    until("hold on hold", 120, || async {
        c.find(Locator::Css("button[data-approve='hold']"))
            .await
            .ok()
    })
    .await;
    click(c, "button[data-approve='hold']").await;
    until("deploy succeeds", 120, || async {
        attr_of(c, "svg.graph [data-job='deploy']", "data-status")
            .await
            .filter(|s| s == "success")
    })
    .await;
    assert!(
        text_of(c, "tr[data-job='hold']")
            .await
            .unwrap()
            .contains("approved by admin")
    );

    // The workflow fails (flaky); rerun from failed makes a new run.
    until("workflow failed", 120, || async {
        attr_of(c, "section.workflow", "data-status")
            .await
            .filter(|s| s == "failed")
    })
    .await;
    screenshot(c, "pipeline-failed").await;
    click(c, "section.workflow input[name='from_failed'] + button").await;
    until("the rerun", 30, || async {
        let n = c
            .find_all(Locator::Css("section.workflow"))
            .await
            .ok()?
            .len();
        (n == 2).then_some(())
    })
    .await;
    let rerun = text_of(c, "section.workflow:last-of-type h2")
        .await
        .unwrap();
    assert!(rerun.contains("(rerun)"), "{rerun}");
    until("flaky reruns and fails", 120, || async {
        attr_of(
            c,
            "section.workflow:last-of-type svg.graph [data-job='flaky']",
            "data-status",
        )
        .await
        .filter(|s| s == "failed")
    })
    .await;
    // Jobs that succeeded are not run again.
    let build_again = attr_of(
        c,
        "section.workflow:last-of-type svg.graph [data-job='build']",
        "data-status",
    )
    .await;
    assert_eq!(build_again.as_deref(), Some("success"));
    screenshot(c, "pipeline-rerun").await;

    // The build job: steps with colours, the failed test, the artifact.
    let build_href = attr_of(c, "section.workflow svg.graph a[data-job='build']", "href")
        .await
        .expect("build link");
    c.goto(&format!("{base}{build_href}"))
        .await
        .map_err(|e| e.to_string())?;
    // The coloured step is collapsed (it succeeded): read its text, not what is visible.
    let green = js(
        c,
        "return document.querySelector('pre.log span.f2')?.textContent",
    )
    .await;
    assert_eq!(green, json!("green build"));
    screenshot(c, "job").await;
    // The raw log: the whole output as a text file.
    let raw = attr_of(c, "a[download]", "href")
        .await
        .expect("raw log link");
    let r = g
        .http
        .get(format!("{base}{raw}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let text = r.text().await.unwrap();
    assert!(text.contains("\u{1b}[32mgreen build"), "{text}");
    click(c, "nav.tabs a[href$='tab=tests']").await;
    let first_test = until("tests tab", 10, || {
        text_of(c, "table.tests tbody tr .test-name")
    })
    .await;
    assert_eq!(first_test, "breaks", "failures first");
    let message = text_of(c, "table.tests tbody tr pre.test-message")
        .await
        .unwrap();
    assert!(message.contains("expected 1, got 2"), "{message}");
    screenshot(c, "job-tests").await;
    click(c, "nav.tabs a[href$='tab=artifacts']").await;
    let report = until("artifact link", 10, || async {
        let links = c.find_all(Locator::Css("ul.artifacts a")).await.ok()?;
        for l in links {
            if l.text().await.ok()?.ends_with("report.txt") {
                return l.attr("href").await.ok().flatten();
            }
        }
        None
    })
    .await;
    screenshot(c, "job-artifacts").await;
    c.goto(&format!("{base}{report}"))
        .await
        .map_err(|e| e.to_string())?;
    let body = until("artifact", 10, || text_of(c, "body")).await;
    assert_eq!(body.trim(), "built artifact");
    screenshot(c, "artifact").await;
    // Content types: safe as themselves, unsafe as text/plain, never sniffed.
    for (file, want) in [
        ("report.txt", "text/plain; charset=utf-8"),
        ("page.html", "text/plain; charset=utf-8"),
    ] {
        let href = report.replace("report.txt", file);
        let r = g
            .http
            .get(format!("{base}{href}"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert_eq!(r.headers()["content-type"], want, "{file}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }

    // Settings: webhook URL, masked secret revealed on demand.
    c.goto(&format!("{base}/project/gh/acme/app/settings"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(
        text_of(c, "#webhook-url").await.unwrap(),
        format!("{base}/hooks/github")
    );
    assert_eq!(text_of(c, "#webhook-secret").await.unwrap(), "xxxx1234");
    // Environment variables: write-only, shown masked, deletable.
    c.find(Locator::Css("#env-name"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys("DEPLOY_TOKEN")
        .await
        .map_err(|e| e.to_string())?;
    c.find(Locator::Css("#env-value"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys("super-secret-value-9876")
        .await
        .map_err(|e| e.to_string())?;
    click(c, "form[action$='/settings/envvars'] button").await;
    let masked = until("the variable", 10, || {
        text_of(c, "tr[data-envvar='DEPLOY_TOKEN'] td:nth-child(2)")
    })
    .await;
    assert_eq!(masked, "xxxx9876");
    let source = c.source().await.map_err(|e| e.to_string())?;
    assert!(!source.contains("super-secret-value"), "the value is shown");
    screenshot(c, "settings").await;
    click(c, "tr[data-envvar='DEPLOY_TOKEN'] button").await;
    until("the variable deleted", 10, || async {
        let gone = c
            .find(Locator::Css("tr[data-envvar='DEPLOY_TOKEN']"))
            .await
            .is_err();
        gone.then_some(())
    })
    .await;

    // Contexts of the organization, reached from the project's settings: create one, add
    // a variable (never shown again), delete the variable, then the context.
    click(c, "#org-contexts").await;
    until("the contexts page", 10, || async {
        text_of(c, "h1")
            .await
            .filter(|t| t == "Contexts of gh/acme")
    })
    .await;
    c.find(Locator::Css("#context-name"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys("org global")
        .await
        .map_err(|e| e.to_string())?;
    click(c, "form[action$='/contexts'] button").await;
    until("the context page", 10, || async {
        text_of(c, "h1").await.filter(|t| t == "Context org global")
    })
    .await;
    c.find(Locator::Css("#env-name"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys("SHARED_TOKEN")
        .await
        .map_err(|e| e.to_string())?;
    c.find(Locator::Css("#env-value"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys("context-secret-value-5555")
        .await
        .map_err(|e| e.to_string())?;
    click(c, "form[action$='/envvars'] button").await;
    until("the context variable", 10, || {
        text_of(c, "tr[data-envvar='SHARED_TOKEN'] td:nth-child(1)")
    })
    .await;
    let source = c.source().await.map_err(|e| e.to_string())?;
    assert!(
        !source.contains("context-secret-value") && !source.contains("5555"),
        "a context value is shown"
    );
    screenshot(c, "context").await;
    click(c, "tr[data-envvar='SHARED_TOKEN'] button").await;
    until("the context variable deleted", 10, || async {
        let gone = c
            .find(Locator::Css("tr[data-envvar='SHARED_TOKEN']"))
            .await
            .is_err();
        gone.then_some(())
    })
    .await;
    click(c, "#delete-context").await;
    until("the context deleted", 10, || async {
        let listed = text_of(c, "h1")
            .await
            .filter(|t| t == "Contexts of gh/acme");
        let gone = c
            .find(Locator::Css("tr[data-context='org global']"))
            .await
            .is_err();
        listed.filter(|_| gone)
    })
    .await;

    // Phone width: the project page fits.
    c.set_window_size(390, 844)
        .await
        .map_err(|e| e.to_string())?;
    c.goto(&format!("{base}/project/gh/acme/app"))
        .await
        .map_err(|e| e.to_string())?;
    let fits = js(
        c,
        "return document.documentElement.scrollWidth <= window.innerWidth",
    )
    .await;
    assert_eq!(fits, json!(true), "the project page is wider than a phone");
    screenshot(c, "project-phone").await;
    c.set_window_size(1280, 900)
        .await
        .map_err(|e| e.to_string())?;

    let mut pages: Vec<String> = [
        "/",
        "/project/gh/acme/app",
        "/project/gh/acme/app/settings",
        "/organization/gh/acme/contexts",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    pages.push(format!("/project/gh/acme/app/pipelines/{number}"));
    pages.push(build_href.clone());
    pages.push(format!("{build_href}?tab=tests"));
    pages.push(format!("{build_href}?tab=artifacts"));
    no_external_urls(g, cookie, &pages).await;

    big_log(g, c).await?;

    // Settings: the secret on demand; the default branch changes.
    c.goto(&format!("{base}/project/gh/acme/app/settings"))
        .await
        .map_err(|e| e.to_string())?;
    click(c, "a[href$='reveal=1']").await;
    let secret = until("the secret", 10, || async {
        text_of(c, "#webhook-secret")
            .await
            .filter(|s| !s.starts_with("xxxx"))
    })
    .await;
    assert_eq!(secret, "hook-secret-1234");
    let field = c
        .find(Locator::Css("#default-branch"))
        .await
        .map_err(|e| e.to_string())?;
    field.clear().await.map_err(|e| e.to_string())?;
    field.send_keys("trunk").await.map_err(|e| e.to_string())?;
    click(c, "form[action$='/settings'] button").await;
    until("the default branch saved", 10, || async {
        let p = g.api_get("/api/v2/project/gh/acme/app").await;
        (p["vcs_info"]["default_branch"] == "trunk").then_some(())
    })
    .await;

    // Sign out: the session is gone.
    click(c, "form.signout button").await;
    until("signed out", 10, || async {
        let url = c.current_url().await.ok()?;
        (url.path() == "/signin").then_some(())
    })
    .await;
    c.goto(&format!("{base}/"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(c.current_url().await.unwrap().path(), "/signin");

    // A local user signs in with a login and password.
    let r = g
        .http
        .put(format!("{base}/api/gyre/v1/users/ada"))
        .header("Circle-Token", TOKEN)
        .body(r#"{"password": "correct horse battery"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    for (password, welcome) in [("wrong password", false), ("correct horse battery", true)] {
        c.goto(&format!("{base}/signin"))
            .await
            .map_err(|e| e.to_string())?;
        c.find(Locator::Css("#login"))
            .await
            .map_err(|e| e.to_string())?
            .send_keys("ada")
            .await
            .map_err(|e| e.to_string())?;
        c.find(Locator::Css("#token"))
            .await
            .map_err(|e| e.to_string())?
            .send_keys(password)
            .await
            .map_err(|e| e.to_string())?;
        click(c, "form[action='/signin'] button").await;
        if welcome {
            let who = until("signed in as ada", 30, || text_of(c, ".who")).await;
            assert_eq!(who, "ada");
        } else {
            let error = until("refused", 30, || text_of(c, ".error")).await;
            assert!(error.contains("not valid"), "{error}");
        }
    }
    Ok(())
}

/// A job with a 100 MB log: its page shows the tail fast and stays small.
async fn big_log(g: &Gyre, c: &Client) -> Result<(), String> {
    let p = g
        .api_post(
            "/api/v2/project/gh/acme/app/pipeline",
            json!({"branch": "main", "parameters": {"mode": "big"}}),
        )
        .await;
    let number = p["number"].as_u64().unwrap();
    let started = Instant::now();
    until("the big job", 240, || async {
        let s = g.job_status(number, "big").await?;
        assert!(s != "failed", "the big job failed");
        (s == "success").then_some(())
    })
    .await;
    eprintln!("100 MB job done in {:?}", started.elapsed());
    let p = g
        .api_get(&format!("/api/v2/project/gh/acme/app/pipeline/{number}"))
        .await;
    let wfs = g
        .api_get(&format!(
            "/api/v2/pipeline/{}/workflow",
            p["id"].as_str().unwrap()
        ))
        .await;
    let wf = wfs["items"][0]["id"].as_str().unwrap();
    let jobs = g.api_get(&format!("/api/v2/workflow/{wf}/job")).await;
    let job_number = jobs["items"][0]["job_number"].as_u64().unwrap();

    let t0 = Instant::now();
    c.goto(&format!("{}/project/gh/acme/app/jobs/{job_number}", g.base))
        .await
        .map_err(|e| e.to_string())?;
    // Generous: this is not a timing test (the time is printed and reported in
    // BENCHMARKS.md); a loaded CI machine must not fail it.
    until("the tail of the big log", 60, || async {
        let t = text_of(c, "details.step:last-of-type pre.log").await?;
        t.contains("END OF BIG LOG").then_some(())
    })
    .await;
    let tail_time = t0.elapsed();
    let heap = js(c, "return performance.memory.usedJSHeapSize").await;
    let dom_chars = js(c, "return document.body.innerText.length").await;
    eprintln!(
        "100 MB log: tail shown in {tail_time:?}, JS heap {heap} bytes, {dom_chars} characters in the page"
    );
    let heap = heap.as_f64().unwrap();
    assert!(heap < 300e6, "JS heap {heap}");
    assert!(dom_chars.as_f64().unwrap() < 4e6, "{dom_chars} characters");
    screenshot(c, "job-100mb").await;
    // Earlier output loads on demand.
    let before = js(
        c,
        "return document.querySelector('details.step:last-of-type pre.log').textContent.length",
    )
    .await;
    click(c, "#earlier").await;
    until("earlier output", 10, || async {
        let now = js(
            c,
            "return document.querySelector('details.step:last-of-type pre.log').textContent.length",
        )
        .await;
        (now.as_f64()? > before.as_f64()? + 100_000.0).then_some(())
    })
    .await;
    let heap = js(c, "return performance.memory.usedJSHeapSize").await;
    assert!(heap.as_f64().unwrap() < 300e6, "JS heap {heap}");
    Ok(())
}
