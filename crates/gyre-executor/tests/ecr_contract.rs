//! Contract tests of `aws_auth` (ECR pulls): AWS cannot run here, so a local stub HTTP
//! server plays ECR and STS with the documented request and answer shapes. The executor
//! runs real Docker tasks; the image pull itself then fails (no registry is reachable),
//! which must end the task with a message naming the image and leave no container.

mod common;

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::*;
use gyre_executor::TaskStatus;
use gyre_protocol::{AwsAuth, EnvSource, EnvVar, ExecutorSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/gyre-test/app:1.0";

/// One request as the stub saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
    }
}

/// Serves the canned `(status, body)` answers in order, one per connection; records
/// what it was sent. Returns its base URL.
async fn stub(answers: Vec<(u16, String)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    stub_with_headers(answers.into_iter().map(|(s, b)| (s, "", b)).collect()).await
}

/// [`stub`] with extra header lines (`"name: value\r\n"`) per answer.
async fn stub_with_headers(
    answers: Vec<(u16, &'static str, String)>,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        for (status, extra, body) in answers {
            // The engine tries TLS first on a registry port: such connections get no answer.
            let (mut stream, request) = loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                if let Some(request) = read_request(&mut stream).await {
                    break (stream, request);
                }
            };
            record.lock().unwrap().push(request);
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).await.unwrap();
        }
    });
    (url, seen)
}

/// `None` for a connection that is not plain HTTP (a TLS hello) or closes early.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || buf[0] == 0x16 {
            return None;
        }
        bytes.extend_from_slice(&buf[..n]);
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8(bytes[..head_end].to_vec()).unwrap();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap().split(' ');
    let (method, path) = (
        first.next().unwrap().to_owned(),
        first.next().unwrap().to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = bytes[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.unwrap();
        body.extend_from_slice(&buf[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body: String::from_utf8(body).unwrap(),
    })
}

fn ecr_task(aws_auth: AwsAuth, env: &[(&str, &str)]) -> gyre_protocol::TaskSpec {
    let mut task = docker_task(&[IMAGE], vec![run("echo never")]);
    let ExecutorSpec::Docker { images } = &mut task.executor else {
        unreachable!()
    };
    images[0].aws_auth = Some(aws_auth);
    task.environment = env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.to_string(),
            value: value.to_string(),
            secret: true,
            source: EnvSource::Project,
        })
        .collect();
    task
}

fn keys_from_env() -> AwsAuth {
    AwsAuth::Keys {
        access_key_id: "$ECR_KEY_ID".into(),
        secret_access_key: "${ECR_SECRET}".into(),
    }
}

fn ecr_ok() -> (u16, String) {
    let token = base64::engine::general_purpose::STANDARD.encode("AWS:stub-password");
    (
        200,
        format!(
            r#"{{"authorizationData":[{{"authorizationToken":"{token}","expiresAt":1.7E9,"proxyEndpoint":"https://123456789012.dkr.ecr.us-east-1.amazonaws.com"}}]}}"#
        ),
    )
}

/// The request shape ECR documents: a SigV4-signed JSON 1.1 POST of `{}`.
fn assert_ecr_request(seen: &Seen, key_id: &str, signed: &str) {
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/"));
    assert_eq!(seen.body, "{}");
    assert_eq!(
        seen.header("x-amz-target"),
        "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"
    );
    assert_eq!(seen.header("content-type"), "application/x-amz-json-1.1");
    let stamp = seen.header("x-amz-date");
    assert_eq!(stamp.len(), 16, "{stamp}");
    assert!(stamp.ends_with('Z') && &stamp[8..9] == "T", "{stamp}");
    let auth = seen.header("authorization");
    let prefix = format!(
        "AWS4-HMAC-SHA256 Credential={key_id}/{}/us-east-1/ecr/aws4_request, SignedHeaders={signed}, Signature=",
        &stamp[..8]
    );
    let signature = auth
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{auth}\ndoes not start with\n{prefix}"));
    assert_eq!(signature.len(), 64, "{auth}");
    assert!(
        signature
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_environment_get_an_ecr_token_then_the_pull_fails_naming_the_image() {
    let data = tempfile::tempdir().unwrap();
    let (url, seen) = stub(vec![ecr_ok()]).await;
    let task = ecr_task(
        keys_from_env(),
        &[("ECR_KEY_ID", "AKIDTEST"), ("ECR_SECRET", "s3cr3t")],
    );
    let mut config = config("ecr-ok", data.path());
    config.aws.ecr = Some(url);
    let (outcome, _sink) = execute(config, &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    let message = outcome.message.unwrap();
    assert!(
        message.starts_with(&format!(
            "image {IMAGE} is not available locally and could not be pulled"
        )),
        "{message}"
    );
    assert!(!message.contains("GetAuthorizationToken"), "{message}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_ecr_request(
        &seen[0],
        "AKIDTEST",
        "content-type;host;x-amz-date;x-amz-target",
    );
    assert_eq!(leftovers("ecr-ok").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecr_refusal_ends_the_task_with_aws_message() {
    let data = tempfile::tempdir().unwrap();
    let refusal = r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#;
    let (url, _seen) = stub(vec![(400, refusal.to_owned())]).await;
    let task = ecr_task(
        keys_from_env(),
        &[("ECR_KEY_ID", "AKIDBAD"), ("ECR_SECRET", "nope")],
    );
    let mut config = config("ecr-refused", data.path());
    config.aws.ecr = Some(url);
    let (outcome, _sink) = execute(config, &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    assert_eq!(
        outcome.message.unwrap(),
        format!(
            "image {IMAGE} is not available locally and could not be pulled: ECR GetAuthorizationToken failed (HTTP 400): UnrecognizedClientException: The security token included in the request is invalid."
        )
    );
    assert_eq!(leftovers("ecr-refused").await, 0);
}

/// `oidc_role_arn`: STS `AssumeRoleWithWebIdentity` with the job's token, then ECR signed
/// with the temporary keys and their session token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_role_is_assumed_through_sts_first() {
    let data = tempfile::tempdir().unwrap();
    let sts_answer = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
        <AccessKeyId>ASIATEMP</AccessKeyId><SecretAccessKey>temp-secret</SecretAccessKey>\
        <SessionToken>session-token</SessionToken></Credentials></AssumeRoleWithWebIdentityResult>\
        </AssumeRoleWithWebIdentityResponse>";
    let (sts, sts_seen) = stub(vec![(200, sts_answer.to_owned())]).await;
    let (ecr, ecr_seen) = stub(vec![ecr_ok()]).await;
    let role = AwsAuth::Oidc {
        role_arn: "arn:aws:iam::123456789012:role/pull".into(),
    };
    let task = ecr_task(role.clone(), &[("CIRCLE_OIDC_TOKEN", "header.claims.sig")]);
    let mut config = config("ecr-oidc", data.path());
    config.aws.sts = Some(sts);
    config.aws.ecr = Some(ecr);
    let (outcome, _sink) = execute(config.clone(), &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    let message = outcome.message.unwrap();
    assert!(!message.contains("STS"), "{message}");
    let sts_request = sts_seen.lock().unwrap()[0].clone();
    assert_eq!(sts_request.method, "POST");
    for pair in [
        "Action=AssumeRoleWithWebIdentity",
        "RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fpull",
        "WebIdentityToken=header.claims.sig",
    ] {
        assert!(
            sts_request.body.split('&').any(|p| p == pair),
            "{pair} in {}",
            sts_request.body
        );
    }
    let ecr_request = ecr_seen.lock().unwrap()[0].clone();
    assert_eq!(ecr_request.header("x-amz-security-token"), "session-token");
    assert_ecr_request(
        &ecr_request,
        "ASIATEMP",
        "content-type;host;x-amz-date;x-amz-security-token;x-amz-target",
    );

    // Without a token (gyre issues none yet) the task says so.
    let task = ecr_task(role, &[]);
    let (outcome, _sink) = execute(config, &task).await;
    let message = outcome.message.unwrap();
    assert!(message.contains(IMAGE), "{message}");
    assert!(
        message.contains("needs the job's OIDC token (CIRCLE_OIDC_TOKEN)"),
        "{message}"
    );
    assert_eq!(leftovers("ecr-oidc").await, 0);
}

/// `auth` reaches the registry: a stub registry on loopback (which the engine may reach
/// over plain HTTP) asks for Basic credentials and gets the expanded `username:password`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_auth_is_sent_to_the_registry() {
    let data = tempfile::tempdir().unwrap();
    let challenge = "www-authenticate: Basic realm=\"gyre-test\"\r\n";
    let answers = (0..6)
        .map(|_| {
            (
                401,
                challenge,
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_owned(),
            )
        })
        .collect();
    let (url, seen) = stub_with_headers(answers).await;
    let registry = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let image = format!("{registry}/gyre-test/private:1.0");
    let mut task = docker_task(&[&image], vec![run("echo never")]);
    let ExecutorSpec::Docker { images } = &mut task.executor else {
        unreachable!()
    };
    images[0].auth = Some(gyre_protocol::RegistryAuth {
        username: "robot".into(),
        password: "$REGISTRY_PASSWORD".into(),
    });
    task.environment = vec![secret("REGISTRY_PASSWORD", "pa55word")];
    let (outcome, _sink) = execute(config("registry-auth", data.path()), &task).await;
    assert_eq!(outcome.status, TaskStatus::Failed);
    let message = outcome.message.unwrap();
    assert!(
        message.starts_with(&format!("image {image} is not available")),
        "{message}"
    );
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("robot:pa55word")
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && *v == expected)),
        "{seen:#?}"
    );
    assert_eq!(leftovers("registry-auth").await, 0);
}
