//! The crate's one error type.
//!
//! No variant carries plaintext or key material: messages name files, addresses, key names
//! and wrapper kinds only.

use std::path::PathBuf;

/// What can go wrong sealing or opening a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The master key file could not be read, created or inspected.
    #[error("master key file {}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The master key file exists but does not hold exactly 32 bytes.
    #[error(
        "master key file {} holds {len} bytes, expected exactly 32; it is not a gyre master key \
         (restore the right file, or move it away to create a new key: secrets sealed with the \
         old key cannot be opened then)",
        path.display()
    )]
    KeyFileSize {
        /// The key file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
    },
    /// The master key file is not a regular file, or group or others may access it.
    #[error(
        "master key file {} has mode {mode:04o}: group and others must have no access \
         (run `chmod 600` on it)",
        path.display()
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The master key file is not a regular file.
    #[error("master key file {} is not a regular file", path.display())]
    KeyFileType {
        /// The key file.
        path: PathBuf,
    },
    /// The operating system's random source failed.
    #[error("generating random bytes: {0}")]
    Random(getrandom::Error),
    /// The bytes given to `open` are not a sealed secret of a known version.
    #[error("not a gyre sealed secret: {reason}")]
    Malformed {
        /// What is wrong with the input.
        reason: &'static str,
    },
    /// The sealed secret was written by a newer (or unknown) format version.
    #[error("sealed secret has format version {version}; this gyre reads version 1 only")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The value was sealed by another kind of wrapper than the one opening it.
    #[error(
        "this secret was sealed with the {sealed_by} master key, but gyre is configured with \
         {opener}; configure the {sealed_by} key to open it"
    )]
    WrongWrapper {
        /// `local` or `transit`.
        sealed_by: &'static str,
        /// `local` or `transit:<key>`.
        opener: String,
    },
    /// Authentication failed: a different master key, or the sealed bytes were altered.
    #[error("cannot open the secret: it was sealed with another {wrapper} key, or it was altered")]
    Decrypt {
        /// `local` or `transit:<key>`.
        wrapper: String,
    },
    /// The transit configuration (address, key or mount name) is invalid.
    #[error("invalid Vault transit configuration: {reason}")]
    TransitConfig {
        /// What is wrong.
        reason: String,
    },
    /// The request to Vault/OpenBao failed (connection refused, timeout, bad response body).
    #[error("Vault transit request {op} to {addr} failed")]
    TransitRequest {
        /// The operation (`encrypt`, `decrypt`, `read key`, `create key`).
        op: &'static str,
        /// The server address.
        addr: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// Vault/OpenBao refused the token (HTTP 401 or 403).
    #[error(
        "Vault transit {op} at {addr} was denied (HTTP {status}): the token is invalid, expired \
         or lacks a policy allowing it on key {key:?}"
    )]
    TransitDenied {
        /// The operation.
        op: &'static str,
        /// The server address.
        addr: String,
        /// The transit key name.
        key: String,
        /// 401 or 403.
        status: u16,
    },
    /// Vault/OpenBao answered with another error status.
    #[error("Vault transit {op} at {addr} for key {key:?} failed (HTTP {status}): {message}")]
    TransitStatus {
        /// The operation.
        op: &'static str,
        /// The server address.
        addr: String,
        /// The transit key name.
        key: String,
        /// The HTTP status.
        status: u16,
        /// Vault's `errors`, joined (never our plaintext: we send only wrapped data keys).
        message: String,
    },
    /// Vault/OpenBao answered 200 with a body we do not understand.
    #[error("Vault transit {op} at {addr}: unexpected response: {reason}")]
    TransitResponse {
        /// The operation.
        op: &'static str,
        /// The server address.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
