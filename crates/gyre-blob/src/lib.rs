//! Object storage for gyre: finished logs, artifacts, caches, workspaces and test
//! results. One API, [`BlobStore`], over a local directory (the embedded default) and
//! S3-compatible storage (production), both through `object_store`.
//!
//! ```no_run
//! # async fn demo() -> gyre_blob::Result<()> {
//! let store = gyre_blob::BlobStore::open("file:///var/lib/gyre/blobs")?;
//! store.put("logs/1/step-0.log", "hello\n".into()).await?;
//! assert_eq!(store.get("logs/1/step-0.log").await?, "hello\n");
//! # Ok(()) }
//! ```
//!
//! Keys are `/`-separated relative paths checked by [`validate_key`] on every call.

mod config;
mod error;
mod key;

pub use config::{Location, S3Config};
pub use error::{Error, Result};
pub use key::{MAX_KEY_LEN, validate_key};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Part size of streamed uploads: S3's minimum part size is 5 MiB.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one streamed upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// A blob store: a closed set of backends behind one API.
#[derive(Debug, Clone)]
pub enum BlobStore {
    /// A local directory (the embedded default).
    Local(LocalBlobs),
    /// An S3-compatible bucket.
    S3(S3Blobs),
}

/// The local-directory backend.
#[derive(Debug, Clone)]
pub struct LocalBlobs {
    root: PathBuf,
    store: std::sync::Arc<LocalFileSystem>,
}

/// The S3 backend.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    bucket: String,
    store: std::sync::Arc<PrefixStore<AmazonS3>>,
}

/// What [`BlobStore::head`] and [`BlobStore::list`] report about a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// The key, as given to `put`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, as the backend reports it (S3: second precision).
    pub last_modified: SystemTime,
}

impl BlobStore {
    /// Opens the store a URL names (see [`Location::parse`]): a local directory for
    /// `file://…` or a plain path, an S3 bucket for `s3://…`. No request is made yet.
    pub fn open(url: &str) -> Result<BlobStore> {
        Self::from_location(Location::parse(url)?)
    }

    /// Opens the store at a parsed [`Location`].
    pub fn from_location(location: Location) -> Result<BlobStore> {
        match location {
            Location::Local(root) => Self::local(root),
            Location::S3(config) => Self::s3(config),
        }
    }

    /// A store in the directory `root`, created (with parents) if missing. Deleting a
    /// blob also removes the directories it leaves empty.
    pub fn local(root: impl Into<PathBuf>) -> Result<BlobStore> {
        let root = root.into();
        let setup = |source: Box<dyn std::error::Error + Send + Sync>| Error::Setup {
            backend: "local",
            location: root.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&root).map_err(|e| setup(e.into()))?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| setup(e.into()))?
            .with_automatic_cleanup(true);
        Ok(BlobStore::Local(LocalBlobs {
            root,
            store: std::sync::Arc::new(store),
        }))
    }

    /// A store in an S3-compatible bucket, with path-style requests. Conditional puts
    /// (`If-None-Match: *`) back [`BlobStore::put_if_absent`].
    pub fn s3(config: S3Config) -> Result<BlobStore> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(config.allow_http)
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        let s3 = builder.build().map_err(|e| Error::Setup {
            backend: "s3",
            location: format!("s3://{}/{}", config.bucket, config.prefix),
            source: e.into(),
        })?;
        Ok(BlobStore::S3(S3Blobs {
            bucket: config.bucket,
            store: std::sync::Arc::new(PrefixStore::new(s3, config.prefix.as_str())),
        }))
    }

    /// `local` or `s3`.
    pub fn backend(&self) -> &'static str {
        match self {
            BlobStore::Local(_) => "local",
            BlobStore::S3(_) => "s3",
        }
    }

    /// Where the blobs are: the directory, or the bucket's name.
    pub fn describe(&self) -> String {
        match self {
            BlobStore::Local(l) => l.root.display().to_string(),
            BlobStore::S3(s) => format!("s3://{}", s.bucket),
        }
    }

    fn inner(&self) -> &dyn ObjectStore {
        match self {
            BlobStore::Local(l) => &*l.store,
            BlobStore::S3(s) => &*s.store,
        }
    }

    fn path(key: &str) -> Result<ObjectPath> {
        validate_key(key)?;
        ObjectPath::parse(key).map_err(|_| Error::InvalidKey {
            key: key.to_owned(),
            reason: "not a valid object path",
        })
    }

    fn fail(&self, op: &'static str, key: &str, source: object_store::Error) -> Error {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound {
                key: key.to_owned(),
            },
            source => Error::Backend {
                op,
                key: key.to_owned(),
                backend: self.backend(),
                source: Box::new(source),
            },
        }
    }

    /// Stores `data` under `key`, replacing any blob there. Readers never see a partial
    /// blob.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = Self::path(key)?;
        self.inner()
            .put(&path, PutPayload::from(data))
            .await
            .map_err(|e| self.fail("put", key, e))?;
        Ok(())
    }

    /// Stores `data` under `key` only if no blob is there. Returns `true` if this call
    /// created the blob, `false` if one already existed (left unchanged). Used for
    /// caches, where the first writer wins.
    ///
    /// Local: the blob is staged and then hard-linked into place, which fails if the
    /// name exists, so exactly one of any number of concurrent writers wins. S3: a
    /// conditional put (`If-None-Match: *`); AWS S3 decides it atomically, but an
    /// S3-compatible server that checks and then writes (s3s-fs 0.14 does) can let
    /// two racing writers both succeed, the last one's content staying. Each winner's
    /// content is always complete.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let path = Self::path(key)?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .inner()
            .put_opts(&path, PutPayload::from(data), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(self.fail("put_if_absent", key, e)),
        }
    }

    /// Streams the file at `file` into the blob `key` (multipart on S3, so memory use
    /// stays at a few parts whatever the size). Returns the number of bytes stored.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<u64> {
        let path = Self::path(key)?;
        let file_err = |source| Error::File {
            op: "put_file",
            key: key.to_owned(),
            path: file.to_owned(),
            source,
        };
        let mut reader = tokio::fs::File::open(file).await.map_err(file_err)?;
        let upload = self
            .inner()
            .put_multipart(&path)
            .await
            .map_err(|e| self.fail("put_file", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut total = 0u64;
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(file_err(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(self.fail("put_file", key, e));
            }
            writer.write(&buf[..n]);
            total += n as u64;
        }
        writer
            .finish()
            .await
            .map_err(|e| self.fail("put_file", key, e))?;
        Ok(total)
    }

    /// The whole blob under `key`. A missing key is [`Error::NotFound`].
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let path = Self::path(key)?;
        let result = self
            .inner()
            .get(&path)
            .await
            .map_err(|e| self.fail("get", key, e))?;
        result.bytes().await.map_err(|e| self.fail("get", key, e))
    }

    /// The bytes `range` of the blob under `key` (within its size).
    /// A missing key is [`Error::NotFound`]. Readers of large blobs (log tails) use this
    /// to avoid loading the whole object.
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        let path = Self::path(key)?;
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        self.inner()
            .get_range(&path, range)
            .await
            .map_err(|e| self.fail("get_range", key, e))
    }

    /// Streams the blob under `key` into the file `file` (created or truncated).
    /// Returns the number of bytes written. A missing key is [`Error::NotFound`] and
    /// leaves no file behind; an error later on can leave a partial file, which the
    /// caller should remove.
    pub async fn get_to_file(&self, key: &str, file: &Path) -> Result<u64> {
        let path = Self::path(key)?;
        let file_err = |source| Error::File {
            op: "get_to_file",
            key: key.to_owned(),
            path: file.to_owned(),
            source,
        };
        let result = self
            .inner()
            .get(&path)
            .await
            .map_err(|e| self.fail("get_to_file", key, e))?;
        let mut stream = result.into_stream();
        let mut out = tokio::fs::File::create(file).await.map_err(file_err)?;
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.fail("get_to_file", key, e))?;
            out.write_all(&chunk).await.map_err(file_err)?;
            total += chunk.len() as u64;
        }
        out.flush().await.map_err(file_err)?;
        out.sync_all().await.map_err(file_err)?;
        Ok(total)
    }

    /// Size and modification time of the blob under `key`. A missing key is
    /// [`Error::NotFound`].
    pub async fn head(&self, key: &str) -> Result<BlobMeta> {
        let path = Self::path(key)?;
        let meta = self
            .inner()
            .head(&path)
            .await
            .map_err(|e| self.fail("head", key, e))?;
        Ok(BlobMeta {
            key: key.to_owned(),
            size: meta.size,
            last_modified: meta.last_modified.into(),
        })
    }

    /// Deletes the blob under `key`. Deleting a missing key is not an error (S3 does
    /// not tell the difference).
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = Self::path(key)?;
        match self.inner().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("delete", key, e)),
        }
    }

    /// Every blob whose key lies under `prefix/`, sorted by key, with size and
    /// modification time. The prefix matches whole segments, like a directory: `logs/1`
    /// lists `logs/1/a` and `logs/1/x/y` but neither `logs/10/a` nor a blob named
    /// `logs/1` itself. An empty prefix lists everything.
    pub async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>> {
        key::validate_prefix(prefix)?;
        let path = if prefix.is_empty() {
            None
        } else {
            Some(Self::path(prefix)?)
        };
        let mut stream = self.inner().list(path.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.fail("list", prefix, e))?;
            out.push(BlobMeta {
                key: meta.location.to_string(),
                size: meta.size,
                last_modified: meta.last_modified.into(),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
