//! Parsing a store URL into a backend configuration.

use crate::{Error, Result};
use std::net::IpAddr;
use std::path::PathBuf;

/// Where blobs live, as parsed from a store URL by [`Location::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory (created if missing).
    Local(PathBuf),
    /// An S3 bucket, optionally under a key prefix.
    S3(S3Config),
}

/// An S3-compatible bucket. Requests use path-style addressing
/// (`ENDPOINT/BUCKET/KEY`), which every S3-compatible server understands.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`; empty for none.
    pub prefix: String,
    /// The endpoint (`http://127.0.0.1:9000`); `None` means AWS itself.
    pub endpoint: Option<String>,
    /// The region. Default: `us-east-1`.
    pub region: String,
    /// Access key id: the `access_key_id` query parameter, else `AWS_ACCESS_KEY_ID`.
    /// With no credentials at all, object_store's default chain applies (instance
    /// metadata, web identity).
    pub access_key_id: Option<String>,
    /// Secret: the `secret_access_key` query parameter, else `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Session token: the `session_token` query parameter, else `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
    /// Whether plain `http://` endpoints are allowed.
    ///
    /// # Security
    /// Default: only for loopback endpoints (`127.0.0.0/8`, `::1`, `localhost`); any
    /// other host needs `allow_http=true` in the URL, since credentials and blobs would
    /// cross the network in clear.
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl Location {
    /// Parses a store URL:
    /// - `file:///var/lib/gyre/blobs` or a plain path (`/var/lib/gyre/blobs`,
    ///   `./blobs`) → [`Location::Local`];
    /// - `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&access_key_id=K&secret_access_key=S&session_token=T&allow_http=true]`
    ///   → [`Location::S3`]. Credentials missing from the query come from
    ///   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn parse(url: &str) -> Result<Location> {
        Self::parse_with_env(url, |name| std::env::var(name).ok())
    }

    /// [`Location::parse`] with the environment given as a function (for tests).
    pub fn parse_with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Location> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact(url),
            reason,
        };
        if url.trim().is_empty() {
            return Err(invalid("empty".into()));
        }
        let Some((scheme, _)) = url.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(url)));
        };
        match scheme {
            "file" => {
                let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
                if parsed.query().is_some() {
                    return Err(invalid("file URLs take no query".into()));
                }
                let path = parsed
                    .to_file_path()
                    .map_err(|()| invalid("not an absolute local path".into()))?;
                Ok(Location::Local(path))
            }
            "s3" => parse_s3(url, env).map(Location::S3).map_err(invalid),
            other => Err(invalid(format!(
                "unsupported scheme {other:?} (use file://, s3:// or a path)"
            ))),
        }
    }
}

fn parse_s3(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<S3Config, String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let bucket = parsed
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or("no bucket (s3://BUCKET/PREFIX)")?
        .to_owned();
    if parsed.port().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the bucket must be a plain name (put the server in ?endpoint=)".into());
    }
    let prefix = parsed.path().trim_matches('/').to_owned();
    if !prefix.is_empty() {
        crate::validate_key(&prefix).map_err(|e| format!("prefix: {e}"))?;
    }
    let mut config = S3Config {
        bucket,
        prefix,
        endpoint: None,
        region: "us-east-1".into(),
        access_key_id: None,
        secret_access_key: None,
        session_token: None,
        allow_http: false,
    };
    let mut allow_http = None;
    for (name, value) in parsed.query_pairs() {
        let value = value.into_owned();
        match &*name {
            "endpoint" => config.endpoint = Some(value),
            "region" => config.region = value,
            "access_key_id" => config.access_key_id = Some(value),
            "secret_access_key" => config.secret_access_key = Some(value),
            "session_token" => config.session_token = Some(value),
            "allow_http" => match &*value {
                "true" => allow_http = Some(true),
                "false" => allow_http = Some(false),
                _ => return Err(format!("allow_http must be true or false, not {value:?}")),
            },
            other => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    config.access_key_id = config.access_key_id.or_else(|| env("AWS_ACCESS_KEY_ID"));
    config.secret_access_key = config
        .secret_access_key
        .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    config.session_token = config.session_token.or_else(|| env("AWS_SESSION_TOKEN"));
    if config.access_key_id.is_some() != config.secret_access_key.is_some() {
        return Err("access key id and secret access key must be given together".into());
    }
    if let Some(endpoint) = &config.endpoint {
        let ep = url::Url::parse(endpoint).map_err(|e| format!("endpoint: {e}"))?;
        match ep.scheme() {
            "https" => config.allow_http = false,
            "http" => {
                let loopback = match ep.host() {
                    Some(url::Host::Domain(d)) => d == "localhost",
                    Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
                    Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
                    None => false,
                };
                config.allow_http = allow_http.unwrap_or(loopback);
                if !config.allow_http {
                    return Err(format!(
                        "plain http to the non-loopback endpoint {endpoint:?} needs allow_http=true"
                    ));
                }
            }
            other => return Err(format!("endpoint scheme {other:?} is not http or https")),
        }
    }
    Ok(config)
}

/// The URL without its query, which may hold a secret.
fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn local_forms() {
        let p = |u| Location::parse_with_env(u, no_env).expect(u);
        assert_eq!(
            p("file:///var/lib/gyre/blobs"),
            Location::Local("/var/lib/gyre/blobs".into())
        );
        assert_eq!(
            p("/var/lib/gyre/blobs"),
            Location::Local("/var/lib/gyre/blobs".into())
        );
        assert_eq!(p("blobs"), Location::Local("blobs".into()));
    }

    #[test]
    fn s3_with_query_and_env() {
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("envkey".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("envsecret".to_owned()),
            _ => None,
        };
        let Location::S3(c) = Location::parse_with_env(
            "s3://bucket/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-1",
            env,
        )
        .expect("parse") else {
            panic!("not S3")
        };
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("bucket", "some/prefix")
        );
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.access_key_id.as_deref(), Some("envkey"));
        assert!(c.allow_http);
        assert!(!format!("{c:?}").contains("envsecret"));

        let Location::S3(c) =
            Location::parse_with_env("s3://b?access_key_id=k&secret_access_key=s", env)
                .expect("parse")
        else {
            panic!("not S3")
        };
        assert_eq!(
            (c.access_key_id.as_deref(), c.secret_access_key.as_deref()),
            (Some("k"), Some("s"))
        );
        assert_eq!(
            (c.prefix.as_str(), c.region.as_str(), c.endpoint),
            ("", "us-east-1", None)
        );
    }

    #[test]
    fn rejected() {
        for url in [
            "",
            "s3://",
            "s3:///prefix",
            "s3://b/a//b",
            "s3://b?nope=1",
            "s3://b?endpoint=http://10.0.0.1:9000",
            "s3://b?endpoint=ftp://127.0.0.1",
            "s3://b?access_key_id=k",
            "gs://b",
            "file://host/x?y=1",
        ] {
            let err = Location::parse_with_env(url, no_env).expect_err(url);
            assert!(matches!(err, Error::InvalidUrl { .. }), "{url}: {err}");
        }
        let err =
            Location::parse_with_env("s3://b?secret_access_key=hush", no_env).expect_err("half");
        assert!(!err.to_string().contains("hush"), "{err}");
        assert!(
            Location::parse_with_env(
                "s3://b?endpoint=http://10.0.0.1:9000&allow_http=true",
                no_env
            )
            .is_ok()
        );
    }
}
