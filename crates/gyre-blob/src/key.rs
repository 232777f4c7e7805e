//! Blob keys: `/`-separated relative paths, checked before any backend sees them.

use crate::{Error, Result};

/// The longest key accepted, in bytes (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// Checks that `key` is a valid blob key and returns it unchanged.
///
/// A key is a non-empty relative path of `/`-separated segments, at most
/// [`MAX_KEY_LEN`] bytes: no leading or trailing `/`, no empty segment (`a//b`), no `.`
/// or `..` segment, no backslash and no control character. The same rules hold on every
/// backend, so a key that works locally works on S3 and can never leave the local root.
pub fn validate_key(key: &str) -> Result<&str> {
    let reason = if key.is_empty() {
        Some("empty")
    } else if key.len() > MAX_KEY_LEN {
        Some("longer than 1024 bytes")
    } else if key.starts_with('/') {
        Some("starts with '/' (keys are relative)")
    } else if key.ends_with('/') {
        Some("ends with '/'")
    } else if key.contains('\\') {
        Some("contains a backslash")
    } else if key.chars().any(char::is_control) {
        Some("contains a control character")
    } else if key.split('/').any(str::is_empty) {
        Some("contains an empty segment ('//')")
    } else if key.split('/').any(|s| s == "." || s == "..") {
        Some("contains a '.' or '..' segment")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidKey {
            key: key.to_owned(),
            reason,
        }),
        None => Ok(key),
    }
}

/// Like [`validate_key`] for a `list` prefix, which may also be empty (everything).
pub(crate) fn validate_prefix(prefix: &str) -> Result<&str> {
    if prefix.is_empty() {
        Ok(prefix)
    } else {
        validate_key(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::validate_key;

    #[test]
    fn good_keys() {
        for key in [
            "a",
            "caches/v1-deps/abc.tar.zst",
            "logs/1/2.log",
            "a b/ü%#.txt",
        ] {
            assert_eq!(validate_key(key).ok(), Some(key));
        }
    }

    #[test]
    fn bad_keys() {
        let long = "a".repeat(1025);
        for key in [
            "", "/abs", "dir/", "a//b", ".", "..", "../x", "a/../b", "a/./b", "a\\b", "a\nb", &long,
        ] {
            assert!(validate_key(key).is_err(), "{key:?} accepted");
        }
    }
}
