//! Cache key templates (§4.8): `{{ .Branch }}`, `{{ .BuildNum }}`, `{{ .Revision }}`,
//! `{{ .CheckoutKey }}`, `{{ .Environment.NAME }}`, `{{ checksum "FILE" }}`, `{{ epoch }}`,
//! `{{ arch }}`.

use std::collections::HashMap;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::Error;

/// Files named by `checksum` actions, in order of appearance.
pub(crate) fn checksum_files(key: &str) -> Vec<String> {
    actions(key)
        .filter_map(|action| parse_checksum(action).map(str::to_owned))
        .collect()
}

fn actions(key: &str) -> impl Iterator<Item = &str> {
    key.split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}").map(|(a, _)| a.trim()))
}

fn parse_checksum(action: &str) -> Option<&str> {
    let rest = action.strip_prefix("checksum")?.trim();
    rest.strip_prefix('"')?.strip_suffix('"')
}

/// Renders `key`. `env` is the job environment (built-ins included); `files` holds the
/// contents of the files named by `checksum`, keyed as written in the template.
pub fn render_key(
    key: &str,
    env: &HashMap<String, String>,
    arch: &str,
    files: &HashMap<String, Vec<u8>>,
) -> Result<String, Error> {
    let bad = |msg: String| Error::InvalidTask(format!("cache key {key:?}: {msg}"));
    let mut out = String::new();
    let mut rest = key;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| bad("unclosed {{".to_owned()))?;
        let action = after[..end].trim();
        let var = |name: &str| env.get(name).cloned().unwrap_or_default();
        let value = match action {
            ".Branch" => var("CIRCLE_BRANCH"),
            ".BuildNum" => var("CIRCLE_BUILD_NUM"),
            ".Revision" => var("CIRCLE_SHA1"),
            ".CheckoutKey" => String::new(),
            "epoch" => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string(),
            "arch" => arch.to_owned(),
            _ => {
                if let Some(name) = action.strip_prefix(".Environment.") {
                    var(name)
                } else if let Some(file) = parse_checksum(action) {
                    let bytes = files
                        .get(file)
                        .ok_or_else(|| bad(format!("cannot checksum {file}: not read")))?;
                    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
                } else {
                    return Err(bad(format!("unknown template action {{{{ {action} }}}}")));
                }
            }
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let env: HashMap<String, String> = [
            ("CIRCLE_BRANCH", "main"),
            ("CIRCLE_SHA1", "abc"),
            ("X", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let files: HashMap<String, Vec<u8>> = [("lock".to_string(), b"hello".to_vec())].into();
        let key = r#"v1-{{ .Branch }}-{{.Revision}}-{{ .Environment.X }}-{{ checksum "lock" }}-{{ arch }}"#;
        assert_eq!(checksum_files(key), ["lock"]);
        assert_eq!(
            render_key(key, &env, "linux-x86_64", &files).unwrap(),
            "v1-main-abc-x-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=-linux-x86_64"
        );
        assert!(render_key("{{ .Nope }}", &env, "", &files).is_err());
        assert!(
            render_key("{{ epoch }}", &env, "", &files)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 1_700_000_000
        );
    }
}
