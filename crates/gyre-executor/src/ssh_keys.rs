//! `add_ssh_keys` (§4.13): SSH keys from the agent's key directory
//! ([`crate::JobSettings::ssh_keys_dir`]) into the job's `~/.ssh`.
//!
//! Each private key in the directory is known by the fingerprints of its public key, in
//! both forms CircleCI shows (`aa:bb:…` MD5 and `SHA256:…`). The public key comes from the
//! `<name>.pub` file next to the key, else from the key itself when it is in OpenSSH's
//! format (whose public part is not encrypted). A key is written to
//! `~/.ssh/id_rsa_<md5 without colons>` (mode 0600), and `~/.ssh/config` gets an
//! `IdentityFile` line for it, as CircleCI does, so `ssh` and `git` use it.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use md5::Digest as _;

use crate::Error;

/// One key of the directory.
#[derive(Clone, Debug)]
pub(crate) struct SshKey {
    /// `aa:bb:…` (MD5 of the public key blob).
    pub md5: String,
    /// `SHA256:…` (unpadded base64).
    pub sha256: String,
    pub private: Vec<u8>,
}

impl SshKey {
    /// `id_rsa_<md5 hex>`, CircleCI's name whatever the key type.
    pub fn file_name(&self) -> String {
        format!("id_rsa_{}", self.md5.replace(':', ""))
    }

    fn matches(&self, fingerprint: &str) -> bool {
        let wanted = fingerprint.trim();
        if let Some(sha) = wanted.strip_prefix("SHA256:") {
            return self.sha256.trim_start_matches("SHA256:") == sha.trim_end_matches('=');
        }
        let wanted = wanted.strip_prefix("MD5:").unwrap_or(wanted);
        self.md5.eq_ignore_ascii_case(wanted)
    }
}

/// Reads every key of `dir` (files that start with `-----BEGIN`), in name order.
pub(crate) fn load(dir: &Path) -> Result<Vec<SshKey>, Error> {
    let read_dir = |e| {
        Error::io(
            format!("reading the SSH key directory {}", dir.display()),
            e,
        )
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file() && path.extension().is_none_or(|ext| ext != "pub"))
        .collect();
    paths.sort();
    let mut keys = Vec::new();
    for path in paths {
        let private = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if !private.starts_with(b"-----BEGIN") {
            continue;
        }
        let Some(blob) = public_blob(&path, &private) else {
            tracing::warn!(key = %path.display(), "SSH key without a .pub file nor an OpenSSH public part; skipped");
            continue;
        };
        let (md5, sha256) = fingerprints(&blob);
        keys.push(SshKey {
            md5,
            sha256,
            private,
        });
    }
    Ok(keys)
}

/// The keys a step asks for: all of them when `requested` is empty. A fingerprint that
/// no key has is an error naming it.
pub(crate) fn select(keys: &[SshKey], requested: &[String]) -> Result<Vec<SshKey>, Error> {
    if requested.is_empty() {
        return Ok(keys.to_vec());
    }
    requested
        .iter()
        .map(|fingerprint| {
            keys.iter()
                .find(|key| key.matches(fingerprint))
                .cloned()
                .ok_or_else(|| {
                    Error::Step(format!(
                        "add_ssh_keys: no SSH key with fingerprint {fingerprint} is configured on this agent"
                    ))
                })
        })
        .collect()
}

/// The `~/.ssh/config` lines for `keys` (paths under `ssh_dir`).
pub(crate) fn config_entries(ssh_dir: &str, keys: &[SshKey]) -> String {
    let mut text = String::from("Host *\n");
    for key in keys {
        text.push_str(&format!("  IdentityFile {ssh_dir}/{}\n", key.file_name()));
    }
    text
}

/// The public key blob: from `<key>.pub`, else from an OpenSSH private key.
fn public_blob(path: &Path, private: &[u8]) -> Option<Vec<u8>> {
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    if let Ok(text) = std::fs::read_to_string(&pub_path) {
        let field = text.split_whitespace().nth(1)?;
        return STANDARD.decode(field).ok();
    }
    openssh_public_blob(private)
}

/// The public key of an `openssh-key-v1` private key (it is stored in clear).
fn openssh_public_blob(private: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(private).ok()?;
    let body: String = text
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    let bytes = STANDARD.decode(body).ok()?;
    let mut rest = bytes.strip_prefix(b"openssh-key-v1\0")?;
    // ciphername, kdfname, kdfoptions, then the number of keys and the first public key.
    for _ in 0..3 {
        read_string(&mut rest)?;
    }
    let count = read_u32(&mut rest)?;
    (count >= 1).then_some(())?;
    read_string(&mut rest).map(<[u8]>::to_vec)
}

fn read_u32(rest: &mut &[u8]) -> Option<u32> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_be_bytes(*head))
}

fn read_string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = read_u32(rest)? as usize;
    let bytes: &'a [u8] = rest;
    let (head, tail) = (bytes.get(..len)?, bytes.get(len..)?);
    *rest = tail;
    Some(head)
}

/// (`aa:bb:…`, `SHA256:…`) of a public key blob, as `ssh-keygen -l` prints them.
fn fingerprints(blob: &[u8]) -> (String, String) {
    let md5: Vec<String> = md5::Md5::digest(blob)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sha = STANDARD_NO_PAD.encode(sha2::Sha256::digest(blob));
    (md5.join(":"), format!("SHA256:{sha}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(md5: &str, sha256: &str) -> SshKey {
        SshKey {
            md5: md5.into(),
            sha256: sha256.into(),
            private: vec![],
        }
    }

    #[test]
    fn fingerprints_match_in_both_forms() {
        let k = key("b7:35:aa", "SHA256:abc/def");
        assert!(k.matches("b7:35:AA"));
        assert!(k.matches("MD5:b7:35:aa"));
        assert!(k.matches("SHA256:abc/def"));
        assert!(k.matches("SHA256:abc/def="));
        assert!(!k.matches("SHA256:abc/deg"));
        assert!(!k.matches("b7:35:ab"));
        assert_eq!(k.file_name(), "id_rsa_b735aa");
        let keys = [k, key("01:02", "SHA256:x")];
        assert_eq!(select(&keys, &[]).unwrap().len(), 2);
        let err = select(&keys, &["ff:ff".into()]).unwrap_err().to_string();
        assert!(err.contains("no SSH key with fingerprint ff:ff"), "{err}");
    }

    #[test]
    fn bad_openssh_bodies_give_none() {
        assert_eq!(openssh_public_blob(b"garbage"), None);
        let truncated = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            STANDARD.encode(b"openssh-key-v1\0\0\0\0\x04none\0\0\xff")
        );
        assert_eq!(openssh_public_blob(truncated.as_bytes()), None);
    }
}
