//! Request bodies that start pipelines: the API trigger (`POST
//! /api/v2/project/{slug}/pipeline`) and the generic push hook for any git server.
//!
//! Pure: no IO. Every [`TriggerError`] message is written to be returned as is, as
//! `{"message": ...}` with HTTP 400.

use serde_json::{Map, Value};

use crate::github::{self, GitRef};

/// Longest accepted branch or tag name, in bytes.
pub const MAX_REF_NAME_LEN: usize = 255;

/// Why a trigger request body was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// A top-level key the endpoint does not know (API trigger only).
    #[error("unknown field {field:?}; expected {expected}")]
    UnknownField {
        /// The key, clipped to 64 characters.
        field: String,
        /// The accepted keys.
        expected: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("`{field}` must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// Both `branch` and `tag` were given to the API trigger.
    #[error(
        "`branch` and `tag` are mutually exclusive: give one of them, or neither to build the default branch"
    )]
    BranchAndTag,
    /// A pipeline parameter value is not a string, an integer or a boolean.
    #[error("parameter {name:?} must be a string, an integer or a boolean")]
    InvalidParameter {
        /// The parameter name, clipped to 64 characters.
        name: String,
    },
    /// A branch or tag name that is not a valid git ref name.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidRefName {
        /// `branch` or `tag`.
        kind: &'static str,
        /// The name, clipped to 64 characters.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// None of `ref`, `branch` and `tag` was given to the generic push hook.
    #[error("one of `ref`, `branch` or `tag` is required")]
    MissingRef,
    /// More than one of `ref`, `branch` and `tag` was given to the generic push hook.
    #[error("give only one of `ref`, `branch` and `tag`")]
    AmbiguousRef,
    /// A `ref` outside `refs/heads/` and `refs/tags/`.
    #[error("`ref` {git_ref:?} must be `refs/heads/<branch>` or `refs/tags/<tag>`")]
    UnsupportedRef {
        /// The ref, clipped to 64 characters.
        git_ref: String,
    },
    /// A required field is absent or `null`.
    #[error("`{field}` is required")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A commit id that is not 40 or 64 hexadecimal digits.
    #[error("`{field}` must be a 40- or 64-digit hexadecimal commit id")]
    InvalidCommitId {
        /// The field.
        field: &'static str,
    },
}

/// The body of `POST /api/v2/project/{slug}/pipeline`:
/// `{"branch"?: "...", "tag"?: "...", "parameters"?: {"name": string | integer | boolean}}`.
///
/// Neither `branch` nor `tag` means the project's default branch. `branch` may be
/// `pull/<n>/head` or `pull/<n>/merge` to build a GitHub pull request ref.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiTrigger {
    /// The branch to build.
    pub branch: Option<String>,
    /// The tag to build; never set together with `branch`.
    pub tag: Option<String>,
    /// Pipeline parameters; each value is a string, an integer or a boolean.
    pub parameters: Map<String, Value>,
}

impl ApiTrigger {
    /// The requested ref; `None` means the default branch.
    pub fn git_ref(&self) -> Option<GitRef> {
        match (&self.branch, &self.tag) {
            (Some(branch), _) => Some(GitRef::Branch(branch.clone())),
            (None, Some(tag)) => Some(GitRef::Tag(tag.clone())),
            (None, None) => None,
        }
    }
}

/// Parses and validates an API trigger body. An empty body is the same as `{}`; `null`
/// for `branch`, `tag` or `parameters` is the same as leaving it out.
pub fn parse_api_trigger(body: &[u8]) -> Result<ApiTrigger, TriggerError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ApiTrigger::default());
    }
    let fields = object(body)?;
    let mut trigger = ApiTrigger::default();
    for (key, value) in fields {
        match key.as_str() {
            "branch" => trigger.branch = opt_ref_name(&value, "branch")?,
            "tag" => trigger.tag = opt_ref_name(&value, "tag")?,
            "parameters" => trigger.parameters = parameters(value)?,
            _ => {
                return Err(TriggerError::UnknownField {
                    field: clip(&key),
                    expected: "`branch`, `tag` or `parameters`",
                });
            }
        }
    }
    if trigger.branch.is_some() && trigger.tag.is_some() {
        return Err(TriggerError::BranchAndTag);
    }
    Ok(trigger)
}

/// A push reported by any git server (Gitea, Forgejo, GitLab, a plain `post-receive`
/// hook, a script).
///
/// # Format
///
/// The request body is a JSON object:
///
/// ```json
/// {
///   "ref": "refs/heads/main",
///   "after": "e5bd3914e2e596debea16f433f57875b5b90bcd6",
///   "before": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
///   "message": "Fix the frobnicator\n\nIt was broken.",
///   "author_name": "Mona Lisa",
///   "author_email": "mona@example.com",
///   "actor": "mona"
/// }
/// ```
///
/// | Key | Required | Meaning |
/// |---|---|---|
/// | `ref` | one of `ref`, `branch`, `tag` | `refs/heads/<branch>` or `refs/tags/<tag>`; other refs are rejected |
/// | `branch` | | the branch name, instead of `ref` |
/// | `tag` | | the tag name, instead of `ref` |
/// | `after` | yes | the pushed commit, 40 (SHA-1) or 64 (SHA-256) hex digits; this revision is built |
/// | `before` | no | the previous tip of the ref, same form; all zeros when the ref was created |
/// | `message` | no | the full message of the `after` commit; `[ci skip]` or `[skip ci]` in it skips the push |
/// | `author_name`, `author_email` | no | the author of the `after` commit |
/// | `actor` | no | who pushed, for display |
///
/// Exactly one of `ref`, `branch` and `tag` must be given. Branch and tag names must be
/// valid git ref names (see [`check_ref_name`]). Commit ids may be upper- or lowercase
/// and are stored lowercase. A key set to `null` is the same as a missing key, and keys
/// not listed above are ignored, so payloads that carry `ref`, `before` and `after` at
/// their top level (Gitea, Forgejo, GitLab push events) are understood as they are. A
/// push whose `after` is all zeros deletes the ref: it is accepted but starts no pipeline.
///
/// # Authentication
///
/// The request must carry `X-Gyre-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the
/// exact request body keyed with the project's hook secret, the same scheme as GitHub's
/// `X-Hub-Signature-256`. For example, as a `post-receive` hook (needs `jq`, `openssl`
/// and `curl`):
///
/// ```sh
/// #!/bin/sh
/// # GYRE_PUSH_URL: the project's push hook URL; GYRE_HOOK_SECRET: its secret.
/// while read -r before after ref; do
///   msg=$(git log -1 --format=%B "$after" 2>/dev/null)
///   body=$(jq -cn --arg ref "$ref" --arg before "$before" --arg after "$after" \
///     --arg message "$msg" --arg actor "$USER" \
///     '{ref: $ref, before: $before, after: $after, message: $message, actor: $actor}')
///   sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$GYRE_HOOK_SECRET" | sed 's/^.*= //')
///   curl -fsS -H 'Content-Type: application/json' \
///     -H "X-Gyre-Signature-256: sha256=$sig" --data-binary "$body" "$GYRE_PUSH_URL"
/// done
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericPush {
    /// The pushed branch or tag.
    pub git_ref: GitRef,
    /// `after`: the commit to build, lowercase hex; all zeros for a deletion.
    pub revision: String,
    /// `before`, lowercase hex.
    pub before: Option<String>,
    /// `message`.
    pub commit_message: Option<String>,
    /// `author_name`.
    pub author_name: Option<String>,
    /// `author_email`.
    pub author_email: Option<String>,
    /// `actor`.
    pub actor: Option<String>,
}

impl GenericPush {
    /// Whether this push deletes its ref (`after` is all zeros).
    pub fn is_deletion(&self) -> bool {
        github::is_zero_id(&self.revision)
    }

    /// `Ok` if this push should create a pipeline, else why not: the ref was deleted, or
    /// the commit message carries a skip marker (see [`github::skip_requested`]).
    pub fn should_build(&self) -> Result<(), &'static str> {
        if self.is_deletion() {
            return Err("the push deletes the ref");
        }
        match &self.commit_message {
            Some(message) if github::skip_requested(message) => {
                Err("the commit message contains [ci skip] or [skip ci]")
            }
            _ => Ok(()),
        }
    }
}

/// Parses and validates a generic push body; see [`GenericPush`] for the format.
/// Authenticate the request first with [`github::verify_signature`] on the
/// `X-Gyre-Signature-256` header.
pub fn parse_generic_push(body: &[u8]) -> Result<GenericPush, TriggerError> {
    let mut fields = object(body)?;
    let mut take_str = |field: &'static str| -> Result<Option<String>, TriggerError> {
        match fields.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(TriggerError::WrongType {
                field,
                expected: "a string",
            }),
        }
    };
    let full_ref = take_str("ref")?;
    let branch = take_str("branch")?;
    let tag = take_str("tag")?;
    let after = take_str("after")?;
    let before = take_str("before")?;
    let commit_message = take_str("message")?;
    let author_name = take_str("author_name")?;
    let author_email = take_str("author_email")?;
    let actor = take_str("actor")?;

    let git_ref = match (full_ref, branch, tag) {
        (Some(full_ref), None, None) => {
            let git_ref =
                GitRef::from_full_ref(&full_ref).ok_or_else(|| TriggerError::UnsupportedRef {
                    git_ref: clip(&full_ref),
                })?;
            check_git_ref(git_ref)?
        }
        (None, Some(branch), None) => check_git_ref(GitRef::Branch(branch))?,
        (None, None, Some(tag)) => check_git_ref(GitRef::Tag(tag))?,
        (None, None, None) => return Err(TriggerError::MissingRef),
        _ => return Err(TriggerError::AmbiguousRef),
    };
    let revision = commit_id(
        after.ok_or(TriggerError::MissingField { field: "after" })?,
        "after",
    )?;
    let before = before.map(|id| commit_id(id, "before")).transpose()?;
    Ok(GenericPush {
        git_ref,
        revision,
        before,
        commit_message,
        author_name,
        author_email,
        actor,
    })
}

/// Checks a branch or tag name (without `refs/heads/` or `refs/tags/`) against git's ref
/// name rules (`git check-ref-format`), plus a length limit and no leading `-` so that a
/// name can never be mistaken for a command-line option. `Err` says what is wrong.
pub fn check_ref_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_REF_NAME_LEN {
        return Err("it is longer than 255 bytes");
    }
    if name.starts_with('-') {
        return Err("it starts with `-`");
    }
    if name.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    if name.chars().any(char::is_whitespace) {
        return Err("it contains whitespace");
    }
    if name.contains("..") {
        return Err("it contains `..`");
    }
    if name.contains(['~', '^', ':', '?', '*', '[', '\\']) {
        return Err("it contains one of `~ ^ : ? * [ \\`");
    }
    if name.contains("@{") || name == "@" {
        return Err("it contains `@{` or is `@`");
    }
    if name.ends_with('.') {
        return Err("it ends with `.`");
    }
    for component in name.split('/') {
        if component.is_empty() {
            return Err("it has an empty path component (leading, trailing or double `/`)");
        }
        if component.starts_with('.') {
            return Err("a path component starts with `.`");
        }
        if component.ends_with(".lock") {
            return Err("a path component ends with `.lock`");
        }
    }
    Ok(())
}

fn object(body: &[u8]) -> Result<Map<String, Value>, TriggerError> {
    match serde_json::from_slice(body).map_err(TriggerError::Json)? {
        Value::Object(fields) => Ok(fields),
        _ => Err(TriggerError::NotAnObject),
    }
}

fn opt_ref_name(value: &Value, kind: &'static str) -> Result<Option<String>, TriggerError> {
    match value {
        Value::Null => Ok(None),
        Value::String(name) => {
            check_ref_name(name).map_err(|reason| TriggerError::InvalidRefName {
                kind,
                name: clip(name),
                reason,
            })?;
            Ok(Some(name.clone()))
        }
        _ => Err(TriggerError::WrongType {
            field: kind,
            expected: "a string",
        }),
    }
}

fn check_git_ref(git_ref: GitRef) -> Result<GitRef, TriggerError> {
    let kind = match git_ref {
        GitRef::Branch(_) => "branch",
        GitRef::Tag(_) => "tag",
    };
    check_ref_name(git_ref.name()).map_err(|reason| TriggerError::InvalidRefName {
        kind,
        name: clip(git_ref.name()),
        reason,
    })?;
    Ok(git_ref)
}

fn parameters(value: Value) -> Result<Map<String, Value>, TriggerError> {
    let parameters = match value {
        Value::Null => return Ok(Map::new()),
        Value::Object(parameters) => parameters,
        _ => {
            return Err(TriggerError::WrongType {
                field: "parameters",
                expected: "an object",
            });
        }
    };
    for (name, value) in &parameters {
        let ok = match value {
            Value::String(_) | Value::Bool(_) => true,
            Value::Number(n) => n.is_i64() || n.is_u64(),
            _ => false,
        };
        if !ok {
            return Err(TriggerError::InvalidParameter { name: clip(name) });
        }
    }
    Ok(parameters)
}

fn commit_id(id: String, field: &'static str) -> Result<String, TriggerError> {
    if github::is_commit_id(&id) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(TriggerError::InvalidCommitId { field })
    }
}

/// A user-supplied string shortened for an error message.
fn clip(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    match s.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SHA: &str = "e5bd3914e2e596debea16f433f57875b5b90bcd6";

    fn api_err(body: &str) -> String {
        parse_api_trigger(body.as_bytes()).unwrap_err().to_string()
    }

    fn push_err(body: &str) -> String {
        parse_generic_push(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn api_trigger_ok() {
        assert_eq!(parse_api_trigger(b"").unwrap(), ApiTrigger::default());
        assert_eq!(parse_api_trigger(b" \n").unwrap(), ApiTrigger::default());
        assert_eq!(parse_api_trigger(b"{}").unwrap(), ApiTrigger::default());
        assert_eq!(
            parse_api_trigger(br#"{"branch": null, "tag": null, "parameters": null}"#).unwrap(),
            ApiTrigger::default()
        );
        let trigger = parse_api_trigger(
            br#"{"branch": "feature/x", "parameters": {"deploy": true, "n": 3, "env": "prod", "big": 18446744073709551615, "neg": -1}}"#,
        )
        .unwrap();
        assert_eq!(trigger.branch.as_deref(), Some("feature/x"));
        assert_eq!(trigger.tag, None);
        assert_eq!(trigger.git_ref(), Some(GitRef::Branch("feature/x".into())));
        assert_eq!(
            Value::Object(trigger.parameters),
            json!({"deploy": true, "n": 3, "env": "prod", "big": 18446744073709551615u64, "neg": -1})
        );
        let trigger = parse_api_trigger(br#"{"tag": "v1.0.0"}"#).unwrap();
        assert_eq!(trigger.git_ref(), Some(GitRef::Tag("v1.0.0".into())));
        let trigger = parse_api_trigger(br#"{"branch": "pull/42/head"}"#).unwrap();
        assert_eq!(trigger.branch.as_deref(), Some("pull/42/head"));
    }

    #[test]
    fn api_trigger_errors() {
        let check = |body: &str, expect: &str| assert_eq!(api_err(body), expect, "{body}");
        check(
            r#"{"branch": "main", "tag": "v1"}"#,
            "`branch` and `tag` are mutually exclusive: give one of them, or neither to build the default branch",
        );
        check(
            r#"{"branch": "main", "revision": "abc"}"#,
            r#"unknown field "revision"; expected `branch`, `tag` or `parameters`"#,
        );
        check(r#"[]"#, "request body must be a JSON object");
        check(r#""main""#, "request body must be a JSON object");
        check(r#"{"branch": 1}"#, "`branch` must be a string");
        check(r#"{"parameters": []}"#, "`parameters` must be an object");
        for bad in ["1.5", "null", "[]", "{}", "1e3"] {
            check(
                &format!(r#"{{"parameters": {{"ok": 1, "x": {bad}}}}}"#),
                r#"parameter "x" must be a string, an integer or a boolean"#,
            );
        }
        check(
            r#"{"branch": "my branch"}"#,
            r#"invalid branch name "my branch": it contains whitespace"#,
        );
        check(
            r#"{"tag": "v1..2"}"#,
            r#"invalid tag name "v1..2": it contains `..`"#,
        );
        check(
            r#"{"branch": "--upload-pack=evil"}"#,
            r#"invalid branch name "--upload-pack=evil": it starts with `-`"#,
        );
        check(
            r#"{"branch": "a\u0000b"}"#,
            r#"invalid branch name "a\0b": it contains a control character"#,
        );
        check(
            r#"{"branch": ""}"#,
            r#"invalid branch name "": it is empty"#,
        );
        assert!(api_err(r#"{"branch": "main""#).starts_with("request body is not valid JSON: "));
        let long = "b".repeat(256);
        assert_eq!(
            api_err(&format!(r#"{{"branch": "{long}"}}"#)),
            format!(
                r#"invalid branch name "{}…": it is longer than 255 bytes"#,
                "b".repeat(64)
            )
        );
    }

    #[test]
    fn ref_names() {
        let check = |name: &str, expect: Result<(), &str>| {
            assert_eq!(check_ref_name(name), expect, "{name:?}");
        };
        for ok in [
            "main",
            "feature/x",
            "pull/1/merge",
            "v1.2.3",
            "release-2024_05",
            "ünïcode",
            "a@b",
            &"b".repeat(255),
        ] {
            check(ok, Ok(()));
        }
        check("a b", Err("it contains whitespace"));
        check("a\tb", Err("it contains a control character"));
        check("a\u{7f}", Err("it contains a control character"));
        check("a\u{a0}b", Err("it contains whitespace"));
        check("a~1", Err("it contains one of `~ ^ : ? * [ \\`"));
        check("a:b", Err("it contains one of `~ ^ : ? * [ \\`"));
        check("a@{1}", Err("it contains `@{` or is `@`"));
        check("@", Err("it contains `@{` or is `@`"));
        check("a.", Err("it ends with `.`"));
        check(
            "/a",
            Err("it has an empty path component (leading, trailing or double `/`)"),
        );
        check(
            "a/",
            Err("it has an empty path component (leading, trailing or double `/`)"),
        );
        check(
            "a//b",
            Err("it has an empty path component (leading, trailing or double `/`)"),
        );
        check("a/.b", Err("a path component starts with `.`"));
        check(".a", Err("a path component starts with `.`"));
        check("a.lock/b", Err("a path component ends with `.lock`"));
        check(&"b".repeat(256), Err("it is longer than 255 bytes"));
        check(&"é".repeat(128), Err("it is longer than 255 bytes"));
    }

    #[test]
    fn generic_push_ok() {
        let push = parse_generic_push(
            json!({
                "ref": "refs/heads/main",
                "after": SHA.to_uppercase(),
                "before": "0000000000000000000000000000000000000000",
                "message": "Fix\n\nbody",
                "author_name": "Mona Lisa",
                "author_email": "mona@example.com",
                "actor": "mona",
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            push,
            GenericPush {
                git_ref: GitRef::Branch("main".into()),
                revision: SHA.into(),
                before: Some("0000000000000000000000000000000000000000".into()),
                commit_message: Some("Fix\n\nbody".into()),
                author_name: Some("Mona Lisa".into()),
                author_email: Some("mona@example.com".into()),
                actor: Some("mona".into()),
            }
        );
        assert_eq!(push.should_build(), Ok(()));

        let push =
            parse_generic_push(format!(r#"{{"tag": "v1", "after": "{SHA}"}}"#).as_bytes()).unwrap();
        assert_eq!(push.git_ref, GitRef::Tag("v1".into()));
        assert_eq!(push.before, None);

        let push = parse_generic_push(
            format!(r#"{{"branch": "dev", "after": "{SHA}", "message": "wip [ci skip]", "before": null}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(push.git_ref, GitRef::Branch("dev".into()));
        assert_eq!(
            push.should_build(),
            Err("the commit message contains [ci skip] or [skip ci]")
        );

        let push = parse_generic_push(
            br#"{"ref": "refs/tags/v1", "after": "0000000000000000000000000000000000000000"}"#,
        )
        .unwrap();
        assert!(push.is_deletion());
        assert_eq!(push.should_build(), Err("the push deletes the ref"));

        // A Gitea-style payload: extra keys are ignored, SHA-256 ids are accepted.
        let sha256 = "ab".repeat(32);
        let push = parse_generic_push(
            json!({
                "ref": "refs/heads/main", "before": sha256, "after": sha256,
                "compare_url": "https://gitea.example.com/o/r/compare/x...y",
                "commits": [], "repository": {"full_name": "o/r"}, "pusher": {"login": "mona"}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(push.revision, sha256);
    }

    #[test]
    fn generic_push_errors() {
        let check = |body: &str, expect: &str| assert_eq!(push_err(body), expect, "{body}");
        check(
            &format!(r#"{{"after": "{SHA}"}}"#),
            "one of `ref`, `branch` or `tag` is required",
        );
        check(
            &format!(r#"{{"ref": "refs/heads/a", "branch": "a", "after": "{SHA}"}}"#),
            "give only one of `ref`, `branch` and `tag`",
        );
        check(
            &format!(r#"{{"branch": "a", "tag": "b", "after": "{SHA}"}}"#),
            "give only one of `ref`, `branch` and `tag`",
        );
        check(
            &format!(r#"{{"ref": "refs/notes/commits", "after": "{SHA}"}}"#),
            r#"`ref` "refs/notes/commits" must be `refs/heads/<branch>` or `refs/tags/<tag>`"#,
        );
        check(
            &format!(r#"{{"ref": "main", "after": "{SHA}"}}"#),
            r#"`ref` "main" must be `refs/heads/<branch>` or `refs/tags/<tag>`"#,
        );
        check(
            &format!(r#"{{"ref": "refs/heads/a..b", "after": "{SHA}"}}"#),
            r#"invalid branch name "a..b": it contains `..`"#,
        );
        check(
            &format!(r#"{{"tag": "-x", "after": "{SHA}"}}"#),
            r#"invalid tag name "-x": it starts with `-`"#,
        );
        check(r#"{"branch": "a"}"#, "`after` is required");
        check(
            r#"{"branch": "a", "after": "HEAD"}"#,
            "`after` must be a 40- or 64-digit hexadecimal commit id",
        );
        check(
            &format!(
                r#"{{"branch": "a", "after": "{SHA}", "before": "{}"}}"#,
                &SHA[..39]
            ),
            "`before` must be a 40- or 64-digit hexadecimal commit id",
        );
        check(
            &format!(r#"{{"branch": "a", "after": "{SHA}", "message": 3}}"#),
            "`message` must be a string",
        );
        check(
            "",
            "request body is not valid JSON: EOF while parsing a value at line 1 column 0",
        );
        check("null", "request body must be a JSON object");
    }

    #[test]
    fn generic_push_signature() {
        let body = format!(r#"{{"branch": "main", "after": "{SHA}"}}"#);
        let header = github::sign(b"hook secret", body.as_bytes());
        assert_eq!(
            github::verify_signature(b"hook secret", body.as_bytes(), Some(&header)),
            Ok(())
        );
        assert!(parse_generic_push(body.as_bytes()).is_ok());
    }

    fn arb_ref_name() -> impl Strategy<Value = String> {
        prop::collection::vec("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,10}[a-zA-Z0-9_]", 1..4)
            .prop_map(|parts| parts.join("/"))
            .prop_filter("valid ref name", |name| check_ref_name(name).is_ok())
    }

    fn arb_param() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ]
    }

    fn arb_api_trigger() -> impl Strategy<Value = ApiTrigger> {
        (
            prop::option::of((any::<bool>(), arb_ref_name())),
            prop::collection::btree_map("[a-z_][a-z0-9_-]{0,12}", arb_param(), 0..5),
        )
            .prop_map(|(git_ref, parameters)| {
                let (branch, tag) = match git_ref {
                    Some((true, name)) => (Some(name), None),
                    Some((false, name)) => (None, Some(name)),
                    None => (None, None),
                };
                ApiTrigger {
                    branch,
                    tag,
                    parameters: parameters.into_iter().collect(),
                }
            })
    }

    fn arb_sha() -> impl Strategy<Value = String> {
        prop_oneof!["[0-9a-f]{40}", "[0-9a-f]{64}"]
    }

    fn arb_generic_push() -> impl Strategy<Value = GenericPush> {
        (
            (any::<bool>(), arb_ref_name()),
            arb_sha(),
            prop::option::of(arb_sha()),
            prop::option::of(any::<String>()),
            prop::option::of(any::<String>()),
            prop::option::of(any::<String>()),
            prop::option::of(any::<String>()),
        )
            .prop_map(
                |(
                    (is_branch, name),
                    revision,
                    before,
                    message,
                    author_name,
                    author_email,
                    actor,
                )| {
                    GenericPush {
                        git_ref: if is_branch {
                            GitRef::Branch(name)
                        } else {
                            GitRef::Tag(name)
                        },
                        revision,
                        before,
                        commit_message: message,
                        author_name,
                        author_email,
                        actor,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn parsers_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_api_trigger(&body);
            let _ = parse_generic_push(&body);
        }

        #[test]
        fn parsers_never_panic_on_json_like_text(body in r#"[{}\[\]",:a-z0-9 .\\-]{0,80}"#) {
            let _ = parse_api_trigger(body.as_bytes());
            let _ = parse_generic_push(body.as_bytes());
        }

        #[test]
        fn api_trigger_round_trip(trigger in arb_api_trigger()) {
            let mut body = Map::new();
            if let Some(branch) = &trigger.branch {
                body.insert("branch".into(), branch.clone().into());
            }
            if let Some(tag) = &trigger.tag {
                body.insert("tag".into(), tag.clone().into());
            }
            body.insert("parameters".into(), Value::Object(trigger.parameters.clone()));
            let parsed = parse_api_trigger(Value::Object(body).to_string().as_bytes()).unwrap();
            prop_assert_eq!(parsed, trigger);
        }

        #[test]
        fn generic_push_round_trip(push in arb_generic_push(), form in 0..2u8) {
            let mut body = Map::new();
            match (form, &push.git_ref) {
                (0, git_ref) => body.insert("ref".into(), git_ref.full_ref().into()),
                (_, GitRef::Branch(name)) => body.insert("branch".into(), name.clone().into()),
                (_, GitRef::Tag(name)) => body.insert("tag".into(), name.clone().into()),
            };
            body.insert("after".into(), push.revision.clone().into());
            let optional = [
                ("before", &push.before),
                ("message", &push.commit_message),
                ("author_name", &push.author_name),
                ("author_email", &push.author_email),
                ("actor", &push.actor),
            ];
            for (key, value) in optional {
                if let Some(value) = value {
                    body.insert(key.into(), value.clone().into());
                }
            }
            let parsed = parse_generic_push(Value::Object(body).to_string().as_bytes()).unwrap();
            prop_assert_eq!(parsed, push);
        }
    }
}
