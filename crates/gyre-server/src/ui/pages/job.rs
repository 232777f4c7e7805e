//! The job page (steps with the log's tail, tests, artifacts, parallel tasks as tabs) and
//! the log and artifact endpoints its script and links use.

use super::*;

#[derive(Deserialize, Default)]
pub struct JobQuery {
    node: Option<u32>,
    tab: Option<String>,
}

/// One step of a task, from its markers.
#[derive(Default)]
struct Step {
    name: String,
    status: Option<String>,
    start: i64,
    end: i64,
    exit: Option<i32>,
}

fn steps_of(markers: &[Live]) -> BTreeMap<u32, Step> {
    let mut steps: BTreeMap<u32, Step> = BTreeMap::new();
    for e in markers {
        let s = steps.entry(e.step).or_insert_with(|| Step {
            start: e.at_ms,
            ..Step::default()
        });
        s.end = e.at_ms;
        match e.stream.as_str() {
            "step_started" => {
                let v: Value = serde_json::from_str(&e.text).unwrap_or_default();
                s.name = v["name"].as_str().unwrap_or_default().to_string();
                s.start = e.at_ms;
            }
            "step_finished" => s.status = Some(e.text.clone()),
            _ => s.exit = exit_code(&e.text).or(s.exit),
        }
    }
    steps
}

/// Events rendered to HTML per step, each step's colours carried from event to event.
fn render_by_step(events: &[Live]) -> BTreeMap<u32, String> {
    let mut ansi: HashMap<u32, Ansi> = HashMap::new();
    let mut out: BTreeMap<u32, String> = BTreeMap::new();
    for e in events {
        if let Some(html) = render_event(&mut ansi, e) {
            out.entry(e.step).or_default().push_str(&html);
        }
    }
    out
}

fn render_event(ansi: &mut HashMap<u32, Ansi>, e: &Live) -> Option<String> {
    match e.stream.as_str() {
        "stdout" => Some(ansi.entry(e.step).or_default().render(&e.text)),
        "stderr" => Some(format!(
            "<span class=\"stderr\">{}</span>",
            ansi.entry(e.step).or_default().render(&e.text)
        )),
        "system" => Some(format!("<span class=\"system\">{}</span>", esc(&e.text))),
        _ => None,
    }
}

fn latest_per_node(tasks: &[TaskRow]) -> Vec<&TaskRow> {
    let mut latest: BTreeMap<u32, &TaskRow> = BTreeMap::new();
    for t in tasks {
        latest.insert(t.task.node_index, t);
    }
    latest.into_values().collect()
}

pub async fn job(
    State(app): S,
    session: Session,
    headers: HeaderMap,
    Path((vcs, org, repo, number)): Path<(String, String, String, u64)>,
    Query(q): Query<JobQuery>,
) -> UiResult<Response> {
    let (project, job) = api::job_of(&app, &vcs, &org, &repo, number).await?;
    let w = workflow_of(&app, job.workflow.0).await?;
    let pipeline_href = pipeline_page_of(&app, &w).await?;
    let tasks = app.store.tasks_of_job(job.workflow, job.job).await?;
    let nodes = latest_per_node(&tasks);
    let node = q.node.unwrap_or(0);
    let tab = q.tab.as_deref().unwrap_or("steps");
    let url = format!("{}/jobs/{number}", project_url(&project));
    let now = Millis::now().0;
    let took = match (job.started_at, job.stopped_at) {
        (Some(a), Some(b)) => duration(b.0 - a.0),
        (Some(a), None) => format!("{}…", duration(now - a.0)),
        _ => String::new(),
    };
    let task = nodes.iter().find(|t| t.task.node_index == node).copied();
    let live = format!(
        "<p class=\"meta\">{} {took}<span hidden data-reload=\"{}\"></span></p>",
        badge(job.status.as_str()),
        task.map_or("none".to_string(), |t| format!(
            "{}/{}",
            t.task.key.workflow.0, t.task.key.task.0
        )),
    );
    let tests = job_reports(&app, &job, "tests").await?;
    let artifacts = job_reports(&app, &job, "artifacts").await?;
    let failed_tests = tests.iter().filter(|t| is_failure(t)).count();
    let mut before = format!("<h1>{} <small>#{number}</small></h1>", esc(&job.name));
    if nodes.len() > 1 {
        before.push_str("<nav class=\"tabs nodes\" aria-label=\"Parallel tasks\">");
        for t in &nodes {
            let n = t.task.node_index;
            let _ = write!(
                before,
                "<a href=\"{}?node={n}\"{}>Task {n} {}</a>",
                esc(&url),
                if n == node {
                    " aria-current=\"page\""
                } else {
                    ""
                },
                badge(t.task.status.as_str())
            );
        }
        before.push_str("</nav>");
    }
    let tab_link = |id: &str, label: String| {
        format!(
            "<a href=\"{}?node={node}&amp;tab={id}\"{}>{label}</a>",
            esc(&url),
            if tab == id {
                " aria-current=\"page\""
            } else {
                ""
            }
        )
    };
    let _ = write!(
        before,
        "<nav class=\"tabs\" aria-label=\"Job\">{}{}{}</nav>",
        tab_link("steps", "Steps".into()),
        tab_link(
            "tests",
            format!("Tests ({} failed of {})", failed_tests, tests.len())
        ),
        tab_link("artifacts", format!("Artifacts ({})", artifacts.len())),
    );
    let after = match tab {
        "tests" => tests_tab(&tests),
        "artifacts" => artifacts_tab(&artifacts),
        _ => match task {
            Some(t) => steps_tab(&app, t).await?,
            None => "<p class=\"empty\">This job has not started yet.</p>".into(),
        },
    };
    Ok(Page {
        title: format!("{} #{number}", job.name),
        session: &session,
        crumbs: format!(
            "{} / {} / {}",
            crumb(&project_url(&project), &project.slug),
            crumb(&pipeline_href, "pipeline"),
            crumb(&url, &job.name)
        ),
        before,
        live,
        after,
    }
    .respond(&headers))
}

async fn steps_tab(app: &App, t: &TaskRow) -> UiResult<String> {
    let key = t.task.key;
    let tail = logs::tail(app, key, None, TAIL_BYTES).await?;
    let markers = logs::markers(app, key).await?;
    let steps = steps_of(&markers);
    let html = render_by_step(&tail.events);
    let mut out = format!(
        "<div class=\"logbar\"><a class=\"button secondary\" href=\"/ui/task/{wf}/{task}/raw\" download>Download raw log</a>{}</div>\
         <div id=\"log\" data-task=\"{wf}/{task}\" data-next=\"{}\" data-first=\"{}\" data-complete=\"{}\">",
        if tail.more_before {
            "<button type=\"button\" id=\"earlier\" class=\"secondary\">Load earlier output</button>"
        } else {
            ""
        },
        tail.next_seq,
        tail.events.first().map_or(0, |e| e.seq),
        tail.complete,
        wf = key.workflow.0,
        task = key.task.0,
    );
    let last = steps.keys().next_back().copied();
    for (i, s) in &steps {
        let status = s.status.as_deref().unwrap_or("running");
        let open = status == "failed" || Some(*i) == last || status == "running";
        let exit = s.exit.map_or(String::new(), |c| {
            format!(" <span class=\"exit\">exit {c}</span>")
        });
        let _ = write!(
            out,
            "<details class=\"step\" id=\"step-{i}\" data-step=\"{i}\"{}><summary><span class=\"name\">{}</span> \
             {}<span class=\"took\">{}</span>{exit}</summary><pre class=\"log\" id=\"log-{i}\">{}</pre></details>",
            if open { " open" } else { "" },
            esc(&s.name),
            badge(status),
            if s.status.is_some() {
                duration(s.end - s.start)
            } else {
                String::new()
            },
            html.get(i).map_or("", String::as_str),
        );
    }
    out.push_str("</div>");
    if steps.is_empty() {
        out.push_str("<p class=\"empty\" id=\"no-steps\">No output yet.</p>");
    }
    Ok(out)
}

fn is_failure(t: &Value) -> bool {
    !matches!(t["result"].as_str(), Some("success" | "skipped"))
}

fn tests_tab(tests: &[Value]) -> String {
    if tests.is_empty() {
        return "<p class=\"empty\">No test results were stored.</p>".into();
    }
    let mut sorted: Vec<&Value> = tests.iter().collect();
    sorted.sort_by_key(|t| !is_failure(t));
    let mut rows = String::new();
    for t in sorted {
        let result = t["result"].as_str().unwrap_or("");
        let message = t["message"].as_str().unwrap_or("");
        let _ = write!(
            rows,
            "<tr class=\"{}\"><td>{}</td><td><span class=\"test-name\">{}</span><div class=\"classname\">{}</div></td>\
             <td>{}</td><td>{}</td></tr>",
            if is_failure(t) { "failure" } else { "pass" },
            badge(result),
            esc(t["name"].as_str().unwrap_or("")),
            esc(t["classname"].as_str().unwrap_or("")),
            esc(t["file"].as_str().unwrap_or("")),
            if message.is_empty() {
                String::new()
            } else {
                format!("<pre class=\"test-message\">{}</pre>", esc(message))
            },
        );
    }
    format!(
        "<div class=\"scroll\"><table class=\"tests\"><thead><tr><th scope=\"col\">Result</th><th scope=\"col\">Test</th>\
         <th scope=\"col\">File</th><th scope=\"col\">Message</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
}

fn artifacts_tab(artifacts: &[Value]) -> String {
    if artifacts.is_empty() {
        return "<p class=\"empty\">No artifacts were stored.</p>".into();
    }
    let mut out = String::from("<ul class=\"artifacts\">");
    for a in artifacts {
        let key = a["key"].as_str().unwrap_or_default();
        let _ = write!(
            out,
            "<li><a href=\"/ui/artifacts/{}\">{}</a> <small>task {}</small></li>",
            esc(key),
            esc(a["path"].as_str().unwrap_or(key)),
            a["node_index"].as_u64().unwrap_or(0)
        );
    }
    out.push_str("</ul>");
    out
}

fn task_key(workflow: u64, task: u64) -> TaskKey {
    TaskKey {
        workflow: WorkflowId(workflow),
        task: TaskId(task),
    }
}

async fn existing_task(app: &App, key: TaskKey) -> UiResult<()> {
    match app.store.task(key).await? {
        Some(_) => Ok(()),
        None => Err(UiError::new(StatusCode::NOT_FOUND, "Task not found")),
    }
}

#[derive(Deserialize)]
pub struct BeforeQuery {
    before: u64,
}

/// Output before `before`, rendered per step: `{steps: [{step, html}], first, more}`.
pub async fn earlier_log(
    State(app): S,
    _session: Session,
    Path((workflow, task)): Path<(u64, u64)>,
    Query(q): Query<BeforeQuery>,
) -> UiResult<Response> {
    let key = task_key(workflow, task);
    existing_task(&app, key).await?;
    let tail = logs::tail(&app, key, Some(q.before), TAIL_BYTES).await?;
    let steps: Vec<Value> = render_by_step(&tail.events)
        .into_iter()
        .map(|(step, html)| json!({"step": step, "html": html}))
        .collect();
    Ok(axum::Json(json!({
        "steps": steps,
        "first": tail.events.first().map_or(q.before, |e| e.seq),
        "more": tail.more_before,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct FromQuery {
    #[serde(default)]
    from: u64,
}

/// The log from `from` on as Server-Sent Events of rendered HTML:
/// `{seq, step, kind: "start" | "output" | "finish", name?, status?, html?}`, then `end`.
/// A browser reconnecting (the server stopped) sends `Last-Event-ID` and goes on after it.
pub async fn live_log(
    State(app): S,
    _session: Session,
    headers: HeaderMap,
    Path((workflow, task)): Path<(u64, u64)>,
    Query(q): Query<FromQuery>,
) -> UiResult<Response> {
    let key = task_key(workflow, task);
    existing_task(&app, key).await?;
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |seq| seq + 1);
    let mut ansi: HashMap<u32, Ansi> = HashMap::new();
    let stream = logs::follow(app, key, q.from.max(resumed))
        .await?
        .map(move |e| {
            let Some(e) = e else {
                return Ok::<_, std::convert::Infallible>(
                    SseEvent::default().event("end").data("{}"),
                );
            };
            let data = match e.stream.as_str() {
                "step_started" => {
                    let v: Value = serde_json::from_str(&e.text).unwrap_or_default();
                    json!({"seq": e.seq, "step": e.step, "kind": "start", "name": v["name"]})
                }
                "step_finished" => {
                    json!({"seq": e.seq, "step": e.step, "kind": "finish", "status": e.text})
                }
                _ => json!({"seq": e.seq, "step": e.step, "kind": "output",
                        "html": render_event(&mut ansi, &e).unwrap_or_default()}),
            };
            Ok(SseEvent::default()
                .id(e.seq.to_string())
                .data(data.to_string()))
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The task's whole output as a text file.
pub async fn raw_log(
    State(app): S,
    _session: Session,
    Path((workflow, task)): Path<(u64, u64)>,
) -> UiResult<Response> {
    let key = task_key(workflow, task);
    existing_task(&app, key).await?;
    let archived_v2 = app
        .store
        .task_row(key)
        .await?
        .and_then(|t| t.log_key)
        .is_some_and(|k| k.ends_with(".idx.json"));
    let mut resp = if archived_v2 {
        agent_api::blob_response(&app, &logs::archive_key(key)).await?
    } else {
        let (events, _) = logs::read(&app, key, 0).await?;
        let text: String = events
            .iter()
            .filter(|e| matches!(e.stream.as_str(), "stdout" | "stderr" | "system"))
            .map(|e| e.text.as_str())
            .collect();
        Body::from(text).into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"task-{workflow}-{task}.log\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

/// An artifact, with the content type the operations guide allows (see
/// [`artifact_type`]), never sniffed, sandboxed when rendered.
pub async fn artifact(
    State(app): S,
    _session: Session,
    Path(key): Path<String>,
) -> UiResult<Response> {
    if !key.starts_with("artifacts/") {
        return Err(UiError::new(StatusCode::NOT_FOUND, "Artifact not found"));
    }
    let (kind, inline) = artifact_type(&key, app.config.unsafe_artifacts);
    let mut resp = agent_api::blob_response(&app, &key).await?;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; img-src 'self'; media-src 'self'"),
    );
    if !inline {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(seq: u64, step: u32, stream: &str, text: &str) -> Live {
        Live {
            seq,
            step,
            stream: stream.into(),
            at_ms: seq as i64 * 1000,
            text: text.into(),
        }
    }

    #[test]
    fn steps_come_from_markers() {
        let markers = [
            live(0, 0, "step_started", r#"{"name":"Checkout code"}"#),
            live(1, 0, "step_finished", "success"),
            live(2, 1, "step_started", r#"{"name":"make"}"#),
            live(4, 1, "system", "Exited with code exit status 2"),
            live(5, 1, "step_finished", "failed"),
        ];
        let steps = steps_of(&markers);
        assert_eq!(steps[&0].name, "Checkout code");
        assert_eq!(steps[&1].status.as_deref(), Some("failed"));
        assert_eq!(steps[&1].exit, Some(2));
        assert_eq!(steps[&1].end - steps[&1].start, 3000);
    }

    #[test]
    fn output_renders_per_step_with_colours_carried() {
        let events = [
            live(0, 0, "stdout", "\u{1b}[31mred"),
            live(1, 1, "stderr", "<err>"),
            live(2, 0, "stdout", " still red\u{1b}[0m"),
        ];
        let html = render_by_step(&events);
        assert_eq!(
            html[&0],
            "<span class=\"f1\">red</span><span class=\"f1\"> still red</span>"
        );
        assert_eq!(html[&1], "<span class=\"stderr\">&lt;err&gt;</span>");
    }
}
