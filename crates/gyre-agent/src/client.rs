//! The server's agent API over HTTP: one call per endpoint of
//! [`gyre_protocol::agent`], errors classified as retryable or not, and [`retry`] with
//! capped exponential backoff.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use gyre_protocol::agent::{
    AGENT_PROTOCOL_VERSION, AgentHeartbeat, Assignment, Claim, ErrorBody, Events, EventsAck,
    Finish, Lease, Register, Registered, TaskRef,
};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Timeout of small JSON requests (everything but claims and blobs).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time a claim may take beyond its long-poll wait.
const CLAIM_MARGIN: Duration = Duration::from_secs(15);

/// An HTTP client for one server, authenticated as one agent (or, before registration,
/// with the admin/join token).
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(server: &str, token: &str) -> Result<Client, Error> {
        let mut base = Url::parse(server).map_err(|e| Error::InvalidUrl {
            url: server.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::InvalidUrl {
                url: server.to_owned(),
                reason: "not an http(s) URL".to_owned(),
            });
        }
        // Path segments are appended to the base: drop a trailing `/`.
        if let Ok(mut segments) = base.path_segments_mut() {
            segments.pop_if_empty();
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Blobs may take long in total, but never stall this long between reads.
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|source| Error::Http {
                context: "building the HTTP client".to_owned(),
                source,
            })?;
        Ok(Client {
            http,
            base,
            token: token.to_owned(),
        })
    }

    /// The same server with the agent token from [`Registered`].
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: token.to_owned(),
            ..self.clone()
        }
    }

    /// `base/agent/v1/<segments>`, each segment percent-encoded on its own.
    pub fn url<'s>(&self, segments: impl IntoIterator<Item = &'s str>) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(["agent", "v1"]).extend(segments);
        }
        url
    }

    pub fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    pub async fn register(&self, name: &str) -> Result<Registered, Error> {
        let body = Register {
            protocol: AGENT_PROTOCOL_VERSION,
            name: name.to_owned(),
        };
        let response = self
            .post("register", self.url(["register"]), Some(&body))
            .await?;
        json(response, "register").await
    }

    pub async fn heartbeat(&self) -> Result<AgentHeartbeat, Error> {
        let response = self
            .post::<()>("heartbeat", self.url(["heartbeat"]), None)
            .await?;
        json(response, "heartbeat").await
    }

    /// One long-poll claim: `None` when no task came within `wait`.
    pub async fn claim(
        &self,
        resource_classes: &[String],
        wait: Duration,
    ) -> Result<Option<Assignment>, Error> {
        let body = Claim {
            resource_classes: resource_classes.to_vec(),
            wait_ms: wait.as_millis() as u64,
        };
        let response = self
            .request(Method::POST, self.url(["claim"]))
            .timeout(wait + CLAIM_MARGIN)
            .json(&body)
            .send()
            .await
            .map_err(|source| Error::Http {
                context: "claim".to_owned(),
                source,
            })?;
        let response = check(response, "claim").await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        json(response, "claim").await.map(Some)
    }

    pub async fn renew_lease(&self, task: TaskRef) -> Result<Lease, Error> {
        let response = self
            .post::<()>("lease", self.task_url(task, "lease"), None)
            .await?;
        json(response, "lease").await
    }

    pub async fn events(&self, task: TaskRef, events: &Events) -> Result<EventsAck, Error> {
        let response = self
            .post("events", self.task_url(task, "events"), Some(events))
            .await?;
        json(response, "events").await
    }

    pub async fn finish(&self, task: TaskRef, finish: &Finish) -> Result<(), Error> {
        self.post("finish", self.task_url(task, "finish"), Some(finish))
            .await
            .map(drop)
    }

    fn task_url(&self, task: TaskRef, what: &str) -> Url {
        let (workflow, task_id) = (task.workflow_id.to_string(), task.task_id.to_string());
        self.url(["tasks", &workflow, &task_id, what])
    }

    async fn post<B: Serialize>(
        &self,
        context: &str,
        url: Url,
        body: Option<&B>,
    ) -> Result<reqwest::Response, Error> {
        let mut request = self.request(Method::POST, url).timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|source| Error::Http {
            context: context.to_owned(),
            source,
        })?;
        check(response, context).await
    }
}

/// A 2xx response, else [`Error::Status`] with the server's message.
pub(crate) async fn check(
    response: reqwest::Response,
    context: &str,
) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|body| body.message)
        .unwrap_or(text);
    Err(Error::Status {
        context: context.to_owned(),
        status: status.as_u16(),
        message,
    })
}

pub(crate) async fn json<T: DeserializeOwned>(
    response: reqwest::Response,
    context: &str,
) -> Result<T, Error> {
    response.json().await.map_err(|source| Error::Http {
        context: context.to_owned(),
        source,
    })
}

/// Capped exponential backoff with jitter: 200 ms, 400 ms, … up to `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(200),
            max,
        }
    }

    /// The next delay (between half and all of the current step), then doubles the step.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = f64::from(nanos % 1000) / 1000.0;
        step.mul_f64(0.5 + jitter / 2.0)
    }
}

/// Runs `call` until it succeeds, fails with an error that is not
/// [retryable](Error::is_retryable), or `budget` (from the first failure) is spent.
pub(crate) async fn retry<T, F, Fut>(
    what: &str,
    budget: Option<Duration>,
    mut call: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = Backoff::new(Duration::from_secs(10));
    let mut first_failure = None;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if err.is_retryable() => {
                let since = *first_failure.get_or_insert_with(Instant::now);
                if budget.is_some_and(|budget| since.elapsed() >= budget) {
                    return Err(err);
                }
                let delay = backoff.next_delay();
                tracing::warn!(%err, ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_each_segment() {
        let client = Client::new("http://gyre.test:8080/base/", "t").unwrap();
        assert_eq!(
            client.url(["blobs", "caches", "v1%2Fa b.tar.zst"]).as_str(),
            "http://gyre.test:8080/base/agent/v1/blobs/caches/v1%252Fa%20b.tar.zst"
        );
        let task = TaskRef {
            workflow_id: 7,
            task_id: 3,
        };
        assert_eq!(
            client.task_url(task, "lease").as_str(),
            "http://gyre.test:8080/base/agent/v1/tasks/7/3/lease"
        );
        assert!(Client::new("ftp://x", "t").is_err());
        assert!(Client::new("not a url", "t").is_err());
    }

    #[test]
    fn backoff_is_capped() {
        let mut backoff = Backoff::new(Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(200));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[7] >= Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_on_a_client_error_and_after_its_budget() {
        let mut calls = 0;
        let result: Result<(), Error> = retry("test", None, || {
            calls += 1;
            let n = calls;
            async move {
                Err(Error::Status {
                    context: "x".into(),
                    status: if n < 3 { 503 } else { 400 },
                    message: String::new(),
                })
            }
        })
        .await;
        assert!(matches!(result, Err(Error::Status { status: 400, .. })));
        assert_eq!(calls, 3);

        let mut calls = 0;
        let result: Result<(), Error> = retry("test", Some(Duration::from_secs(5)), || {
            calls += 1;
            async {
                Err(Error::Status {
                    context: "x".into(),
                    status: 502,
                    message: String::new(),
                })
            }
        })
        .await;
        assert!(result.is_err());
        assert!((3..20).contains(&calls), "{calls}");
    }
}
