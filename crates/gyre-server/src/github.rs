//! GitHub webhooks: signature verification, payload parsing and skip markers.
//!
//! Pure: no IO. The HTTP handler reads the raw body and the `X-Hub-Signature-256` and
//! `X-GitHub-Event` headers, calls [`verify_signature`] first and [`parse`] second, and
//! decides what to do with the resulting [`Hook`].
//!
//! Payloads are read as a [`serde_json::Value`] and walked field by field rather than
//! deserialised into derived structs, so that every error names the full path of the
//! offending field (`repository.full_name`, not just `full_name`). Fields GitHub may omit
//! or send as `null` are optional and default to empty strings; only the fields a pipeline
//! cannot be created without are required.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The scheme prefix of a signature header value.
pub const SIGNATURE_PREFIX: &str = "sha256=";

/// How many characters of a commit title, and of its body, are searched for skip markers.
pub const SKIP_MARKER_WINDOW: usize = 250;

/// The markers that ask for a push not to be built.
pub const SKIP_MARKERS: [&str; 2] = ["[ci skip]", "[skip ci]"];

/// Why a signature header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header was sent.
    #[error("missing signature header (expected `sha256=<hex HMAC-SHA256 of the body>`)")]
    Missing,
    /// The header is not `sha256=` followed by 64 hexadecimal digits.
    #[error("malformed signature header: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The header is well formed but is not the HMAC of this body under this secret.
    #[error("signature does not match the request body")]
    Mismatch,
}

/// Checks a `sha256=<hex>` signature header (GitHub's `X-Hub-Signature-256`, gyre's
/// `X-Gyre-Signature-256`) against the HMAC-SHA256 of `body` keyed with `secret`.
///
/// The comparison is constant-time. Surrounding whitespace is ignored. The prefix must be
/// exactly `sha256=` (lowercase, as GitHub sends it); the 64 hex digits may be lower- or
/// uppercase, because hex decoding is case-insensitive and the MAC is compared as bytes,
/// so accepting both costs nothing. A truncated or overlong digest is
/// [`SignatureError::Malformed`], never a shorter comparison.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let digits = header
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(SignatureError::Malformed {
            reason: "expected the `sha256=` prefix",
        })?;
    if digits.len() != 64 {
        return Err(SignatureError::Malformed {
            reason: "expected 64 hexadecimal digits after `sha256=`",
        });
    }
    let tag = hex::decode(digits).map_err(|_| SignatureError::Malformed {
        reason: "the digest is not hexadecimal",
    })?;
    let mut mac = hmac_sha256(secret);
    mac.update(body);
    mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
}

/// The signature header value for `body` under `secret`: `sha256=` and 64 lowercase hex
/// digits, exactly what GitHub sends.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac_sha256(secret);
    mac.update(body);
    format!(
        "{SIGNATURE_PREFIX}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// A git ref that can be built: a branch or a tag, without its `refs/…/` prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GitRef {
    /// `refs/heads/<name>`.
    Branch(String),
    /// `refs/tags/<name>`.
    Tag(String),
}

impl GitRef {
    /// Parses a full ref name. `None` for any other namespace (`refs/notes/…`,
    /// `refs/pull/…`) and for an empty name after the prefix.
    pub fn from_full_ref(full_ref: &str) -> Option<GitRef> {
        if let Some(name) = full_ref.strip_prefix("refs/heads/") {
            (!name.is_empty()).then(|| GitRef::Branch(name.to_owned()))
        } else if let Some(name) = full_ref.strip_prefix("refs/tags/") {
            (!name.is_empty()).then(|| GitRef::Tag(name.to_owned()))
        } else {
            None
        }
    }

    /// The full ref name, `refs/heads/<name>` or `refs/tags/<name>`.
    pub fn full_ref(&self) -> String {
        match self {
            GitRef::Branch(name) => format!("refs/heads/{name}"),
            GitRef::Tag(name) => format!("refs/tags/{name}"),
        }
    }

    /// The short name of the branch or tag.
    pub fn name(&self) -> &str {
        match self {
            GitRef::Branch(name) | GitRef::Tag(name) => name,
        }
    }

    /// The branch name, if this is a branch.
    pub fn branch(&self) -> Option<&str> {
        match self {
            GitRef::Branch(name) => Some(name),
            GitRef::Tag(_) => None,
        }
    }

    /// The tag name, if this is a tag.
    pub fn tag(&self) -> Option<&str> {
        match self {
            GitRef::Tag(name) => Some(name),
            GitRef::Branch(_) => None,
        }
    }
}

/// A GitHub user as sent in `sender`; empty strings when GitHub omits a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// `login`.
    pub login: String,
    /// `avatar_url`.
    pub avatar_url: String,
}

/// The `head_commit` of a push; empty strings when GitHub omits a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// `id`: the commit SHA.
    pub id: String,
    /// `message`: the full commit message (title, blank line, body).
    pub message: String,
    /// `timestamp`, ISO 8601 as GitHub sends it.
    pub timestamp: String,
    /// `url`: the commit's web page.
    pub url: String,
    /// `author.name`.
    pub author_name: String,
    /// `author.email`.
    pub author_email: String,
    /// `author.username`: absent when the author email is not linked to a GitHub account.
    pub author_login: Option<String>,
}

/// A `push` event to a branch or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// `repository.full_name`, `owner/name`.
    pub repo_full_name: String,
    /// `ref`.
    pub git_ref: GitRef,
    /// `before`: the previous tip; all zeros when the ref was created.
    pub before: String,
    /// `after`: the new tip, the revision to build; all zeros when the ref was deleted.
    pub after: String,
    /// `deleted`.
    pub deleted: bool,
    /// `head_commit`: `None` for deletions.
    pub head_commit: Option<Commit>,
    /// `sender`.
    pub sender: Actor,
    /// `repository.html_url`. Informational only (pipeline values, links); never used to
    /// fetch code, which always comes from the project's configured remote.
    pub repo_url: Option<String>,
}

impl Push {
    /// Whether this push deletes its ref (`deleted`, or an all-zero `after`).
    pub fn is_deletion(&self) -> bool {
        self.deleted || is_zero_id(&self.after)
    }

    /// `Ok` if this push should create a pipeline, else why not: the ref was deleted, or
    /// the head commit carries a skip marker (see [`skip_requested`]).
    pub fn should_build(&self) -> Result<(), &'static str> {
        if self.is_deletion() {
            return Err("the push deletes the ref");
        }
        match &self.head_commit {
            Some(commit) if skip_requested(&commit.message) => {
                Err("the head commit message contains [ci skip] or [skip ci]")
            }
            _ => Ok(()),
        }
    }
}

/// A `pull_request` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// `repository.full_name`: the base repository.
    pub repo_full_name: String,
    /// `action`: `opened`, `synchronize`, `reopened`, `closed`, `ready_for_review`, …
    pub action: String,
    /// `number`.
    pub number: u64,
    /// `pull_request.head.ref`: the branch name in the head repository.
    pub head_ref: String,
    /// `pull_request.head.sha`.
    pub head_sha: String,
    /// `pull_request.head.repo.full_name`: differs from `repo_full_name` for a fork;
    /// `None` when the fork has been deleted.
    pub head_repo_full_name: Option<String>,
    /// `pull_request.base.ref`.
    pub base_ref: String,
    /// `pull_request.base.sha`.
    pub base_sha: String,
    /// `pull_request.html_url`.
    pub url: String,
    /// `pull_request.title`.
    pub title: String,
    /// `pull_request.draft`.
    pub draft: bool,
    /// `sender`.
    pub sender: Actor,
}

impl PullRequest {
    /// Whether the head branch lives in another repository than the base.
    pub fn is_fork(&self) -> bool {
        self.head_repo_full_name.as_deref() != Some(self.repo_full_name.as_str())
    }
}

/// A parsed webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// `ping`, sent when a hook is created: answer 200.
    Ping,
    /// `push` to a branch or a tag.
    Push(Push),
    /// `pull_request`.
    PullRequest(PullRequest),
    /// A well-formed delivery gyre does not act on.
    Ignored {
        /// The `X-GitHub-Event` value.
        event: String,
        /// Why it is ignored, for the response body and logs.
        reason: String,
    },
}

/// Why a webhook payload could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON.
    #[error("`{event}` payload is not valid JSON: {source}")]
    Json {
        /// The event being parsed.
        event: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A field needed to build is absent or `null`.
    #[error("`{event}` payload is missing required field `{field}`")]
    MissingField {
        /// The event being parsed.
        event: &'static str,
        /// Dotted path of the field.
        field: String,
    },
    /// A field has the wrong JSON type or an invalid value.
    #[error("`{event}` payload field `{field}` must be {expected}")]
    Invalid {
        /// The event being parsed.
        event: &'static str,
        /// Dotted path of the field; `(body)` for the payload itself.
        field: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// Parses a delivery given its `X-GitHub-Event` header and raw body.
///
/// `ping` is accepted whatever its body. `push` and `pull_request` must be JSON objects
/// with their required fields. A push to a ref that is neither a branch nor a tag, and
/// every other event, is [`Hook::Ignored`] without looking at the body.
pub fn parse(event: &str, body: &[u8]) -> Result<Hook, ParseError> {
    match event {
        "ping" => Ok(Hook::Ping),
        "push" => parse_push(body),
        "pull_request" => parse_pull_request(body).map(Hook::PullRequest),
        _ => Ok(Hook::Ignored {
            event: event.to_owned(),
            reason: format!("event `{event}` does not trigger pipelines"),
        }),
    }
}

/// Whether a commit message asks not to be built: `[ci skip]` or `[skip ci]` (literally,
/// lowercase, as CircleCI matches them) within the first [`SKIP_MARKER_WINDOW`] characters
/// of the title (the first line) or of the body (what follows the title, leading blank
/// lines removed). A marker that straddles the end of the window does not count.
pub fn skip_requested(message: &str) -> bool {
    let (title, body) = match message.split_once('\n') {
        Some((title, rest)) => (title, rest.trim_start_matches(['\r', '\n'])),
        None => (message, ""),
    };
    [title, body].into_iter().any(|part| {
        let window = match part.char_indices().nth(SKIP_MARKER_WINDOW) {
            Some((end, _)) => &part[..end],
            None => part,
        };
        SKIP_MARKERS.iter().any(|marker| window.contains(marker))
    })
}

/// Whether `id` looks like a git object id: 40 (SHA-1) or 64 (SHA-256) hex digits.
pub fn is_commit_id(id: &str) -> bool {
    matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `id` is the all-zero id git uses for "no object" (creation or deletion).
pub fn is_zero_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b == b'0')
}

fn hmac_sha256(secret: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

fn parse_push(body: &[u8]) -> Result<Hook, ParseError> {
    let p = Payload::new("push", body)?;
    let full_ref = p.req_str(&["ref"])?;
    let Some(git_ref) = GitRef::from_full_ref(&full_ref) else {
        return Ok(Hook::Ignored {
            event: "push".to_owned(),
            reason: format!("ref `{full_ref}` is neither a branch nor a tag"),
        });
    };
    let head_commit = match p.get(&["head_commit"])? {
        None => None,
        Some(_) => Some(Commit {
            id: p.commit_id(&["head_commit", "id"])?,
            message: p.str_or_empty(&["head_commit", "message"])?,
            timestamp: p.str_or_empty(&["head_commit", "timestamp"])?,
            url: p.str_or_empty(&["head_commit", "url"])?,
            author_name: p.str_or_empty(&["head_commit", "author", "name"])?,
            author_email: p.str_or_empty(&["head_commit", "author", "email"])?,
            author_login: p.opt_str(&["head_commit", "author", "username"])?,
        }),
    };
    let before = p.str_or_empty(&["before"])?;
    if !before.is_empty() && !is_commit_id(&before) {
        return Err(p.invalid(&["before"], COMMIT_ID));
    }
    Ok(Hook::Push(Push {
        repo_full_name: p.req_str(&["repository", "full_name"])?,
        git_ref,
        before,
        after: p.commit_id(&["after"])?,
        deleted: p.bool_or_false(&["deleted"])?,
        head_commit,
        sender: p.actor()?,
        repo_url: p.opt_str(&["repository", "html_url"])?,
    }))
}

fn parse_pull_request(body: &[u8]) -> Result<PullRequest, ParseError> {
    let p = Payload::new("pull_request", body)?;
    Ok(PullRequest {
        repo_full_name: p.req_str(&["repository", "full_name"])?,
        action: p.req_str(&["action"])?,
        number: p.req_u64(&["number"])?,
        head_ref: p.req_str(&["pull_request", "head", "ref"])?,
        head_sha: p.commit_id(&["pull_request", "head", "sha"])?,
        head_repo_full_name: p.opt_str(&["pull_request", "head", "repo", "full_name"])?,
        base_ref: p.req_str(&["pull_request", "base", "ref"])?,
        base_sha: p.commit_id(&["pull_request", "base", "sha"])?,
        url: p.str_or_empty(&["pull_request", "html_url"])?,
        title: p.str_or_empty(&["pull_request", "title"])?,
        draft: p.bool_or_false(&["pull_request", "draft"])?,
        sender: p.actor()?,
    })
}

const COMMIT_ID: &str = "a 40- or 64-digit hexadecimal commit id";

/// A JSON payload and typed accessors that name the field path in their errors. An absent
/// field and a `null` one are treated alike.
struct Payload {
    event: &'static str,
    root: Value,
}

impl Payload {
    fn new(event: &'static str, body: &[u8]) -> Result<Payload, ParseError> {
        let root: Value =
            serde_json::from_slice(body).map_err(|source| ParseError::Json { event, source })?;
        if !root.is_object() {
            return Err(ParseError::Invalid {
                event,
                field: "(body)".to_owned(),
                expected: "a JSON object",
            });
        }
        Ok(Payload { event, root })
    }

    fn get(&self, path: &[&str]) -> Result<Option<&Value>, ParseError> {
        let mut value = &self.root;
        for (depth, key) in path.iter().enumerate() {
            match value {
                Value::Object(map) => match map.get(*key) {
                    None | Some(Value::Null) => return Ok(None),
                    Some(child) => value = child,
                },
                _ => return Err(self.invalid(&path[..depth], "an object")),
            }
        }
        Ok(Some(value))
    }

    fn invalid(&self, path: &[&str], expected: &'static str) -> ParseError {
        ParseError::Invalid {
            event: self.event,
            field: path.join("."),
            expected,
        }
    }

    fn opt_str(&self, path: &[&str]) -> Result<Option<String>, ParseError> {
        match self.get(path)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.invalid(path, "a string")),
        }
    }

    fn str_or_empty(&self, path: &[&str]) -> Result<String, ParseError> {
        Ok(self.opt_str(path)?.unwrap_or_default())
    }

    fn req_str(&self, path: &[&str]) -> Result<String, ParseError> {
        self.opt_str(path)?.ok_or_else(|| ParseError::MissingField {
            event: self.event,
            field: path.join("."),
        })
    }

    fn commit_id(&self, path: &[&str]) -> Result<String, ParseError> {
        let id = self.req_str(path)?;
        if is_commit_id(&id) {
            Ok(id)
        } else {
            Err(self.invalid(path, COMMIT_ID))
        }
    }

    fn req_u64(&self, path: &[&str]) -> Result<u64, ParseError> {
        match self.get(path)? {
            None => Err(ParseError::MissingField {
                event: self.event,
                field: path.join("."),
            }),
            Some(value) => value
                .as_u64()
                .ok_or_else(|| self.invalid(path, "a non-negative integer")),
        }
    }

    fn bool_or_false(&self, path: &[&str]) -> Result<bool, ParseError> {
        match self.get(path)? {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.invalid(path, "a boolean")),
        }
    }

    fn actor(&self) -> Result<Actor, ParseError> {
        Ok(Actor {
            login: self.str_or_empty(&["sender", "login"])?,
            avatar_url: self.str_or_empty(&["sender", "avatar_url"])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHA_A: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
    const SHA_B: &str = "e5bd3914e2e596debea16f433f57875b5b90bcd6";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn push_body(git_ref: &str, before: &str, after: &str, deleted: bool, message: &str) -> String {
        let head_commit = if deleted {
            "null".to_owned()
        } else {
            serde_json::json!({
                "id": after,
                "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
                "distinct": true,
                "message": message,
                "timestamp": "2024-05-02T10:11:12+02:00",
                "url": format!("https://github.com/octo-org/hello/commit/{after}"),
                "author": {"name": "Mona Lisa", "email": "mona@example.com", "username": "mona"},
                "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
                "added": [], "removed": [], "modified": ["README.md"]
            })
            .to_string()
        };
        format!(
            r#"{{
  "ref": "{git_ref}",
  "before": "{before}",
  "after": "{after}",
  "repository": {{
    "id": 1296269,
    "name": "hello",
    "full_name": "octo-org/hello",
    "private": false,
    "owner": {{"name": "octo-org", "login": "octo-org"}},
    "html_url": "https://github.com/octo-org/hello",
    "clone_url": "https://github.com/octo-org/hello.git",
    "default_branch": "main"
  }},
  "pusher": {{"name": "mona", "email": "mona@example.com"}},
  "sender": {{
    "login": "mona",
    "id": 583231,
    "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
    "type": "User"
  }},
  "created": false,
  "deleted": {deleted},
  "forced": false,
  "base_ref": null,
  "compare": "https://github.com/octo-org/hello/compare/6dcb09b5b578...e5bd3914e2e5",
  "commits": [],
  "head_commit": {head_commit}
}}"#
        )
    }

    fn push(body: &str) -> Push {
        match parse("push", body.as_bytes()).unwrap() {
            Hook::Push(push) => push,
            other => panic!("expected a push, got {other:?}"),
        }
    }

    #[test]
    fn branch_push() {
        let push = push(&push_body(
            "refs/heads/feature/x",
            SHA_A,
            SHA_B,
            false,
            "Fix the frobnicator\n\nIt was broken.",
        ));
        assert_eq!(
            push,
            Push {
                repo_full_name: "octo-org/hello".into(),
                git_ref: GitRef::Branch("feature/x".into()),
                before: SHA_A.into(),
                after: SHA_B.into(),
                deleted: false,
                head_commit: Some(Commit {
                    id: SHA_B.into(),
                    message: "Fix the frobnicator\n\nIt was broken.".into(),
                    timestamp: "2024-05-02T10:11:12+02:00".into(),
                    url: format!("https://github.com/octo-org/hello/commit/{SHA_B}"),
                    author_name: "Mona Lisa".into(),
                    author_email: "mona@example.com".into(),
                    author_login: Some("mona".into()),
                }),
                sender: Actor {
                    login: "mona".into(),
                    avatar_url: "https://avatars.githubusercontent.com/u/583231?v=4".into(),
                },
                repo_url: Some("https://github.com/octo-org/hello".into()),
            }
        );
        assert_eq!(push.should_build(), Ok(()));
    }

    #[test]
    fn tag_push() {
        let push = push(&push_body(
            "refs/tags/v1.2.0",
            ZERO,
            SHA_B,
            false,
            "Release 1.2.0",
        ));
        assert_eq!(push.git_ref, GitRef::Tag("v1.2.0".into()));
        assert_eq!(push.git_ref.full_ref(), "refs/tags/v1.2.0");
        assert_eq!(push.git_ref.tag(), Some("v1.2.0"));
        assert_eq!(push.git_ref.branch(), None);
        assert_eq!(push.should_build(), Ok(()));
    }

    #[test]
    fn branch_deletion_is_parsed_but_not_built() {
        let push = push(&push_body("refs/heads/old", SHA_A, ZERO, true, ""));
        assert!(push.deleted);
        assert_eq!(push.head_commit, None);
        assert_eq!(push.should_build(), Err("the push deletes the ref"));

        // An all-zero `after` is a deletion even if `deleted` is missing.
        let mut value: Value =
            serde_json::from_str(&push_body("refs/heads/old", SHA_A, ZERO, true, "")).unwrap();
        value.as_object_mut().unwrap().remove("deleted");
        let push = match parse("push", value.to_string().as_bytes()).unwrap() {
            Hook::Push(push) => push,
            other => panic!("{other:?}"),
        };
        assert!(!push.deleted);
        assert!(push.is_deletion());
        assert!(push.should_build().is_err());
    }

    #[test]
    fn skip_marker_in_head_commit() {
        let push = push(&push_body(
            "refs/heads/main",
            SHA_A,
            SHA_B,
            false,
            "Update docs [skip ci]",
        ));
        assert_eq!(
            push.should_build(),
            Err("the head commit message contains [ci skip] or [skip ci]")
        );
    }

    #[test]
    fn other_refs_and_events_are_ignored() {
        let body = push_body("refs/notes/commits", SHA_A, SHA_B, false, "x");
        assert_eq!(
            parse("push", body.as_bytes()).unwrap(),
            Hook::Ignored {
                event: "push".into(),
                reason: "ref `refs/notes/commits` is neither a branch nor a tag".into(),
            }
        );
        let body = push_body("refs/heads/", SHA_A, SHA_B, false, "x");
        assert!(matches!(
            parse("push", body.as_bytes()),
            Ok(Hook::Ignored { .. })
        ));
        assert_eq!(
            parse("issues", b"not even json").unwrap(),
            Hook::Ignored {
                event: "issues".into(),
                reason: "event `issues` does not trigger pipelines".into(),
            }
        );
    }

    #[test]
    fn ping() {
        let body = br#"{"zen":"Keep it logically awesome.","hook_id":12345678,
            "hook":{"type":"Repository","id":12345678,"name":"web","active":true,
            "events":["push","pull_request"],"config":{"content_type":"json",
            "insecure_ssl":"0","url":"https://ci.example.com/hooks/github"}},
            "repository":{"full_name":"octo-org/hello"},"sender":{"login":"mona"}}"#;
        assert_eq!(parse("ping", body).unwrap(), Hook::Ping);
    }

    const PULL_REQUEST_OPENED: &str = r#"{
  "action": "opened",
  "number": 42,
  "pull_request": {
    "url": "https://api.github.com/repos/octo-org/hello/pulls/42",
    "id": 191568743,
    "html_url": "https://github.com/octo-org/hello/pull/42",
    "number": 42,
    "state": "open",
    "locked": false,
    "title": "Add a frobnicator",
    "user": {"login": "hubot", "id": 2, "type": "User"},
    "body": "Please pull these awesome changes",
    "draft": false,
    "merged": false,
    "head": {
      "label": "hubot:frob",
      "ref": "frob",
      "sha": "e5bd3914e2e596debea16f433f57875b5b90bcd6",
      "repo": {"id": 2, "full_name": "hubot/hello", "html_url": "https://github.com/hubot/hello"}
    },
    "base": {
      "label": "octo-org:main",
      "ref": "main",
      "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
      "repo": {"id": 1296269, "full_name": "octo-org/hello"}
    }
  },
  "repository": {"id": 1296269, "full_name": "octo-org/hello", "html_url": "https://github.com/octo-org/hello"},
  "sender": {"login": "hubot", "id": 2, "avatar_url": "https://avatars.githubusercontent.com/u/2?v=4"}
}"#;

    #[test]
    fn pull_request_opened() {
        let Hook::PullRequest(pr) = parse("pull_request", PULL_REQUEST_OPENED.as_bytes()).unwrap()
        else {
            panic!("expected a pull request");
        };
        assert_eq!(
            pr,
            PullRequest {
                repo_full_name: "octo-org/hello".into(),
                action: "opened".into(),
                number: 42,
                head_ref: "frob".into(),
                head_sha: SHA_B.into(),
                head_repo_full_name: Some("hubot/hello".into()),
                base_ref: "main".into(),
                base_sha: SHA_A.into(),
                url: "https://github.com/octo-org/hello/pull/42".into(),
                title: "Add a frobnicator".into(),
                draft: false,
                sender: Actor {
                    login: "hubot".into(),
                    avatar_url: "https://avatars.githubusercontent.com/u/2?v=4".into(),
                },
            }
        );
        assert!(pr.is_fork());
    }

    fn parse_err(event: &str, body: &str) -> String {
        parse(event, body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let without = |path: &[&str]| {
            let mut value: Value =
                serde_json::from_str(&push_body("refs/heads/main", SHA_A, SHA_B, false, "m"))
                    .unwrap();
            let (last, parents) = path.split_last().unwrap();
            let mut obj = &mut value;
            for key in parents {
                obj = obj.get_mut(*key).unwrap();
            }
            obj.as_object_mut().unwrap().remove(*last);
            parse_err("push", &value.to_string())
        };
        assert_eq!(
            without(&["repository", "full_name"]),
            "`push` payload is missing required field `repository.full_name`"
        );
        assert_eq!(
            without(&["ref"]),
            "`push` payload is missing required field `ref`"
        );
        assert_eq!(
            without(&["after"]),
            "`push` payload is missing required field `after`"
        );

        assert_eq!(
            parse_err("push", r#"{"ref": 7}"#),
            "`push` payload field `ref` must be a string"
        );
        assert_eq!(
            parse_err(
                "push",
                r#"{"ref": "refs/heads/main", "after": "x; rm -rf /", "repository": {"full_name": "o/r"}}"#
            ),
            "`push` payload field `after` must be a 40- or 64-digit hexadecimal commit id"
        );
        assert_eq!(
            parse_err(
                "push",
                &format!(r#"{{"ref": "refs/heads/main", "after": "{SHA_A}", "repository": "r"}}"#)
            ),
            "`push` payload field `repository` must be an object"
        );
        assert_eq!(
            parse_err("push", "[]"),
            "`push` payload field `(body)` must be a JSON object"
        );
        assert!(parse_err("push", "{").starts_with("`push` payload is not valid JSON: "));
        assert_eq!(
            parse_err(
                "pull_request",
                r#"{"action": "opened", "number": -1, "repository": {"full_name": "a/b"}}"#
            ),
            "`pull_request` payload field `number` must be a non-negative integer"
        );
    }

    #[test]
    fn signatures() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        // The example from GitHub's "Validating webhook deliveries" documentation.
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body), expected);
        assert_eq!(verify_signature(secret, body, Some(expected)), Ok(()));
        assert_eq!(
            verify_signature(secret, body, Some(&format!(" {expected}\n"))),
            Ok(())
        );

        // Uppercase hex digits are accepted; the prefix must be lowercase.
        let upper = format!("sha256={}", expected[7..].to_uppercase());
        assert_eq!(verify_signature(secret, body, Some(&upper)), Ok(()));
        assert!(matches!(
            verify_signature(secret, body, Some(&expected.replace("sha256", "SHA256"))),
            Err(SignatureError::Malformed { .. })
        ));

        assert_eq!(
            verify_signature(b"wrong secret", body, Some(expected)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(secret, body, None),
            Err(SignatureError::Missing)
        );
        for malformed in [
            "",
            &expected[7..],                                  // no prefix
            &expected[..expected.len() - 2],                 // truncated
            &expected[..expected.len() - 1],                 // odd length
            &format!("{expected}00"),                        // too long
            &format!("sha256={}", "g".repeat(64)),           // not hex
            "sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0", // legacy header value
        ] {
            assert!(
                matches!(
                    verify_signature(secret, body, Some(malformed)),
                    Err(SignatureError::Malformed { .. })
                ),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn skip_markers() {
        let check = |message: &str, expect: bool| {
            assert_eq!(skip_requested(message), expect, "{message:?}");
        };
        check("[ci skip] wip", true);
        check("wip [skip ci]", true);
        check("Fix\n\nDetails [ci skip]", true);
        check("Fix\r\n\r\n[skip ci]", true);
        check("Fix\nbody on the second line [skip ci]", true);
        check("[CI SKIP]", false);
        check("[skip-ci]", false);
        check("Fix", false);
        check("", false);

        let pad = "é".repeat(SKIP_MARKER_WINDOW - 9); // multi-byte, to count chars not bytes
        check(&format!("{pad}[ci skip]"), true);
        check(&format!("{pad}x[ci skip]"), false);
        check(&format!("title\n\n{pad}[skip ci]"), true);
        check(&format!("title\n\n{pad}x[skip ci]"), false);
        // The window applies per part: a long title does not hide a marker in the body.
        check(&format!("{pad}xxxxxxxxxxxxxx\n\n[ci skip]"), true);
        // A marker deep in the body's third paragraph is beyond the window.
        check(&format!("title\n\n{}\n[ci skip]", "a".repeat(300)), false);
    }

    #[test]
    fn commit_ids() {
        assert!(is_commit_id(SHA_A));
        assert!(is_commit_id(&"ab".repeat(32)));
        assert!(!is_commit_id(&SHA_A[1..]));
        assert!(!is_commit_id(&"g".repeat(40)));
        assert!(is_zero_id(ZERO));
        assert!(!is_zero_id(""));
        assert!(!is_zero_id(SHA_A));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z0-9/.]{0,12}".prop_map(Value::from),
            Just(Value::from(SHA_A)),
            Just(Value::from(ZERO)),
            prop_oneof![
                Just("refs/heads/main"),
                Just("refs/tags/v1"),
                Just("refs/notes/x"),
                Just("refs/heads/")
            ]
            .prop_map(Value::from),
        ];
        let keys = prop_oneof![
            Just("ref"),
            Just("after"),
            Just("before"),
            Just("deleted"),
            Just("repository"),
            Just("full_name"),
            Just("html_url"),
            Just("head_commit"),
            Just("id"),
            Just("message"),
            Just("author"),
            Just("username"),
            Just("sender"),
            Just("login"),
            Just("action"),
            Just("number"),
            Just("pull_request"),
            Just("head"),
            Just("base"),
            Just("repo"),
            Just("sha"),
            Just("draft"),
            Just("other"),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..8).prop_map(|entries| {
                    Value::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    fn arb_event() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("push".to_owned()),
            Just("pull_request".to_owned()),
            Just("ping".to_owned()),
            ".{0,16}",
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_bytes(event in arb_event(), body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&event, &body);
        }

        #[test]
        fn parse_never_panics_on_json(event in arb_event(), value in arb_json()) {
            let _ = parse(&event, value.to_string().as_bytes());
        }

        #[test]
        fn skip_requested_never_panics(message in any::<String>()) {
            let _ = skip_requested(&message);
        }

        #[test]
        fn sign_then_verify(secret in prop::collection::vec(any::<u8>(), 0..100),
                            body in prop::collection::vec(any::<u8>(), 1..300),
                            idx in any::<prop::sample::Index>(),
                            flip in 1u8..=255) {
            let header = sign(&secret, &body);
            prop_assert_eq!(verify_signature(&secret, &body, Some(&header)), Ok(()));
            let mut tampered = body.clone();
            tampered[idx.index(body.len())] ^= flip;
            prop_assert_eq!(
                verify_signature(&secret, &tampered, Some(&header)),
                Err(SignatureError::Mismatch)
            );
        }
    }
}
