//! Registry credentials for image pulls (§3.4): `auth`, and `aws_auth` for Amazon ECR.
//!
//! `$VAR` and `${VAR}` in `image`, `auth` and `aws_auth` values are expanded from the
//! task's environment (the documented exception to "no interpolation", §8.2). `aws_auth`
//! becomes a registry password through ECR's `GetAuthorizationToken`, a SigV4-signed POST
//! to `https://api.ecr.<region>.amazonaws.com/`, the region coming from the image's host
//! (`<account>.dkr.ecr.<region>.amazonaws.com`). `oidc_role_arn` first exchanges the job's
//! OIDC token (`CIRCLE_OIDC_TOKEN`) for keys with STS `AssumeRoleWithWebIdentity`. An ECR
//! image without `aws_auth` uses `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` from the
//! task's environment when they are set.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bollard::auth::DockerCredentials;
use gyre_protocol::{AwsAuth, ContainerSpec};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::{AwsEndpoints, Error};

const ECR_TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";

/// AWS keys (and a session token for assumed roles).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// `spec.image` with the task's variables expanded.
pub(crate) fn image(spec: &ContainerSpec, env: &[(String, String)]) -> String {
    expand(&spec.image, env)
}

/// The credentials to pull `image` with, if any.
pub(crate) async fn credentials(
    spec: &ContainerSpec,
    image: &str,
    env: &[(String, String)],
    endpoints: &AwsEndpoints,
) -> Result<Option<DockerCredentials>, Error> {
    if let Some(auth) = &spec.auth {
        return Ok(Some(DockerCredentials {
            username: Some(expand(&auth.username, env)),
            password: Some(expand(&auth.password, env)),
            ..Default::default()
        }));
    }
    let region = ecr_region(image);
    let keys = match (&spec.aws_auth, &region) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(Error::ImageUnavailable {
                image: image.to_owned(),
                reason: "`aws_auth` is for Amazon ECR images \
                         (<account>.dkr.ecr.<region>.amazonaws.com/<name>)"
                    .to_owned(),
            });
        }
        (
            Some(AwsAuth::Keys {
                access_key_id,
                secret_access_key,
            }),
            Some(_),
        ) => AwsKeys {
            access_key_id: expand(access_key_id, env),
            secret_access_key: expand(secret_access_key, env),
            session_token: None,
        },
        (Some(AwsAuth::Oidc { role_arn }), Some(region)) => {
            let token = lookup(env, "CIRCLE_OIDC_TOKEN").ok_or_else(|| pull_error(image,
                "`aws_auth.oidc_role_arn` needs the job's OIDC token (CIRCLE_OIDC_TOKEN): gyre servers issue one to every job but builds of forked pull requests without secrets, and `gyre local execute` has none; use `aws_access_key_id` and `aws_secret_access_key` there".to_owned()))?;
            assume_role(endpoints, region, &expand(role_arn, env), token)
                .await
                .map_err(|reason| pull_error(image, reason))?
        }
        (None, Some(_)) => match (
            lookup(env, "AWS_ACCESS_KEY_ID"),
            lookup(env, "AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => AwsKeys {
                access_key_id: id.to_owned(),
                secret_access_key: secret.to_owned(),
                session_token: lookup(env, "AWS_SESSION_TOKEN").map(str::to_owned),
            },
            _ => return Ok(None),
        },
    };
    let region = region.unwrap_or_default();
    let (username, password) = ecr_token(endpoints, &region, &keys, SystemTime::now())
        .await
        .map_err(|reason| pull_error(image, reason))?;
    Ok(Some(DockerCredentials {
        username: Some(username),
        password: Some(password),
        serveraddress: image.split('/').next().map(str::to_owned),
        ..Default::default()
    }))
}

fn pull_error(image: &str, reason: String) -> Error {
    Error::ImageUnavailable {
        image: image.to_owned(),
        reason,
    }
}

fn lookup<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// `$VAR` and `${VAR}` from `env` (unknown variables become empty, as in a shell).
pub(crate) fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => ("", after),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(lookup(env, name).unwrap_or_default());
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The region of an ECR image (`<account>.dkr.ecr.<region>.amazonaws.com[.cn]/…`).
pub(crate) fn ecr_region(image: &str) -> Option<String> {
    let host = image.split('/').next()?;
    let (_account, rest) = host.split_once(".dkr.ecr.")?;
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_owned())
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// ECR `GetAuthorizationToken`: (user, password) from `AWS:<password>`.
pub(crate) async fn ecr_token(
    endpoints: &AwsEndpoints,
    region: &str,
    keys: &AwsKeys,
    now: SystemTime,
) -> Result<(String, String), String> {
    let url = endpoints
        .ecr
        .clone()
        .unwrap_or_else(|| format!("https://api.ecr.{region}.amazonaws.com/"));
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("ECR endpoint {url}: {e}"))?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(format!("ECR endpoint {url} has no host")),
    };
    let body = b"{}";
    let request = SignedRequest {
        method: "POST",
        host: &host,
        path: parsed.path(),
        content_type: Some("application/x-amz-json-1.1"),
        target: Some(ECR_TARGET),
        body,
    };
    let headers = request.sign(keys, region, "ecr", now);
    let mut http = client()?.post(parsed).body(body.to_vec());
    for (name, value) in headers {
        http = http.header(name, value);
    }
    let answer = http
        .send()
        .await
        .map_err(|e| format!("ECR GetAuthorizationToken at {url}: {e}"))?;
    let status = answer.status();
    let text = answer
        .text()
        .await
        .map_err(|e| format!("ECR GetAuthorizationToken at {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "ECR GetAuthorizationToken failed (HTTP {}): {}",
            status.as_u16(),
            aws_json_error(&text)
        ));
    }
    parse_ecr_answer(&text)
}

/// AWS JSON errors: `{"__type": "...", "message": "..."}`.
fn aws_json_error(text: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let kind = value["__type"].as_str().unwrap_or("error");
    let message = value["message"]
        .as_str()
        .or_else(|| value["Message"].as_str())
        .unwrap_or(text);
    format!("{kind}: {message}")
}

/// `authorizationData[0].authorizationToken`, base64 of `AWS:<password>`.
pub(crate) fn parse_ecr_answer(text: &str) -> Result<(String, String), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("ECR answer is not JSON: {e}"))?;
    let token = value["authorizationData"][0]["authorizationToken"]
        .as_str()
        .ok_or("ECR answer has no authorizationData[0].authorizationToken")?;
    let decoded = STANDARD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or("ECR authorization token is not base64 text")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("ECR authorization token is not user:password")?;
    Ok((user.to_owned(), password.to_owned()))
}

/// STS `AssumeRoleWithWebIdentity` (an unsigned call): keys for `role_arn`.
async fn assume_role(
    endpoints: &AwsEndpoints,
    region: &str,
    role_arn: &str,
    token: &str,
) -> Result<AwsKeys, String> {
    let url = endpoints
        .sts
        .clone()
        .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com/"));
    let form = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", "gyre-image-pull"),
        ("WebIdentityToken", token),
    ];
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let answer = client()?
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("STS AssumeRoleWithWebIdentity at {url}: {e}"))?;
    let status = answer.status();
    let text = answer
        .text()
        .await
        .map_err(|e| format!("STS at {url}: {e}"))?;
    let field = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_owned())
    };
    if !status.is_success() {
        return Err(format!(
            "STS AssumeRoleWithWebIdentity for {role_arn} failed (HTTP {}): {}",
            status.as_u16(),
            field("Message").unwrap_or(text.clone())
        ));
    }
    match (field("AccessKeyId"), field("SecretAccessKey")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(AwsKeys {
            access_key_id,
            secret_access_key,
            session_token: field("SessionToken"),
        }),
        _ => Err("STS answer has no Credentials".to_owned()),
    }
}

/// The parts of a request that SigV4 signs.
pub(crate) struct SignedRequest<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub target: Option<&'a str>,
    pub body: &'a [u8],
}

impl SignedRequest<'_> {
    /// The headers to send: `host`, `content-type`, `x-amz-date`, `x-amz-target`,
    /// `x-amz-security-token` (with a session token) and `authorization`.
    pub fn sign(
        &self,
        keys: &AwsKeys,
        region: &str,
        service: &str,
        now: SystemTime,
    ) -> Vec<(String, String)> {
        let (date, stamp) = amz_date(now);
        let mut headers = vec![
            ("host".to_owned(), self.host.to_owned()),
            ("x-amz-date".to_owned(), stamp.clone()),
        ];
        if let Some(content_type) = self.content_type {
            headers.push(("content-type".to_owned(), content_type.to_owned()));
        }
        if let Some(token) = &keys.session_token {
            headers.push(("x-amz-security-token".to_owned(), token.clone()));
        }
        if let Some(target) = self.target {
            headers.push(("x-amz-target".to_owned(), target.to_owned()));
        }
        headers.sort();
        let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let canonical_headers: String = headers
            .iter()
            .map(|(k, v)| format!("{k}:{}\n", v.trim()))
            .collect();
        let canonical = format!(
            "{}\n{}\n\n{canonical_headers}\n{signed}\n{}",
            self.method,
            if self.path.is_empty() { "/" } else { self.path },
            hex(&Sha256::digest(self.body))
        );
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(
            format!("AWS4{}", keys.secret_access_key).as_bytes(),
            date.as_bytes(),
        );
        for part in [region, service, "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex(&hmac(&key, to_sign.as_bytes()));
        headers.push((
            "authorization".to_owned(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                keys.access_key_id
            ),
        ));
        headers
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`) in UTC.
fn amz_date(now: SystemTime) -> (String, String) {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!("{year:04}{month:02}{day:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    (date, stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_variables() {
        let env = env(&[("USER", "bot"), ("TAG", "1.2")]);
        assert_eq!(expand("$USER", &env), "bot");
        assert_eq!(expand("img:${TAG}-x", &env), "img:1.2-x");
        assert_eq!(expand("a$MISSING.b", &env), "a.b");
        assert_eq!(expand("cost $ 5 ${", &env), "cost $ 5 ${");
    }

    #[test]
    fn ecr_regions_from_image_hosts() {
        let region = |i| ecr_region(i);
        assert_eq!(
            region("123456789012.dkr.ecr.eu-west-3.amazonaws.com/app:1").as_deref(),
            Some("eu-west-3")
        );
        assert_eq!(
            region("1.dkr.ecr.cn-north-1.amazonaws.com.cn/x").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(region("docker.io/library/busybox"), None);
        assert_eq!(region("busybox"), None);
        assert_eq!(region("1.dkr.ecr..amazonaws.com/x"), None);
    }

    #[test]
    fn dates_are_utc() {
        let at = |secs| amz_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), ("19700101".into(), "19700101T000000Z".into()));
        // 2024-02-29T23:59:59Z
        assert_eq!(at(1_709_251_199).1, "20240229T235959Z");
        // 2015-08-30T12:36:00Z, the date of AWS's SigV4 examples.
        assert_eq!(at(1_440_938_160).1, "20150830T123600Z");
    }

    /// AWS's documented SigV4 example (IAM `ListUsers`, keys `AKIDEXAMPLE`).
    #[test]
    fn signing_matches_the_aws_example() {
        let keys = AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let key = {
            let mut k = hmac(
                format!("AWS4{}", keys.secret_access_key).as_bytes(),
                b"20150830",
            );
            for part in ["us-east-1", "iam", "aws4_request"] {
                k = hmac(&k, part.as_bytes());
            }
            k
        };
        assert_eq!(
            hex(&key),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    /// `get-vanilla` of AWS's SigV4 test suite.
    #[test]
    fn signature_of_the_aws_test_suite_get_vanilla() {
        let keys = AwsKeys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let request = SignedRequest {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            content_type: None,
            target: None,
            body: b"",
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let headers = request.sign(&keys, "us-east-1", "service", at);
        assert_eq!(
            headers.last().unwrap().1,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn ecr_answers() {
        let token = STANDARD.encode("AWS:pass-word");
        let ok = format!(r#"{{"authorizationData":[{{"authorizationToken":"{token}"}}]}}"#);
        assert_eq!(
            parse_ecr_answer(&ok),
            Ok(("AWS".to_owned(), "pass-word".to_owned()))
        );
        assert!(parse_ecr_answer("{}").is_err());
        assert!(parse_ecr_answer("nope").is_err());
        let bad = r#"{"authorizationData":[{"authorizationToken":"!!"}]}"#;
        assert!(parse_ecr_answer(bad).is_err());
    }
}
