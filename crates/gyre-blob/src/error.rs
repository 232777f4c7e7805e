//! The crate's one error type.

/// What can go wrong with a blob operation. Every variant names the key (or URL) it is
/// about; the backend's own error, if any, is the `#[source]`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key is not a valid blob key (see [`crate::validate_key`]).
    #[error("invalid blob key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The store URL could not be understood.
    #[error("invalid blob store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL, with any secret in its query removed.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The backend could not be set up (e.g. the local directory cannot be created).
    #[error("setting up the {backend} blob store at {location}")]
    Setup {
        /// `local` or `s3`.
        backend: &'static str,
        /// The directory or bucket.
        location: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// No blob under this key.
    #[error("blob {key:?} not found")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// The backend failed.
    #[error("{op} blob {key:?} on the {backend} store")]
    Backend {
        /// The operation: `put`, `get`, `head`, `delete`, `list`, `put_if_absent`.
        op: &'static str,
        /// The key (the prefix for `list`).
        key: String,
        /// `local` or `s3`.
        backend: &'static str,
        /// The backend's error (boxed: it is large).
        #[source]
        source: Box<object_store::Error>,
    },
    /// Reading or writing the local file of a streaming `put_file`/`get_to_file` failed.
    #[error("{op} blob {key:?}: local file {}", path.display())]
    File {
        /// `put_file` or `get_to_file`.
        op: &'static str,
        /// The blob key.
        key: String,
        /// The local file.
        path: std::path::PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
