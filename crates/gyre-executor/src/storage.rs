//! Files in and out of the job: checkout, caches, workspaces, artifacts, test results.
//!
//! Everything moves as tar streams through [`Target`]: a container (Docker archive API) or
//! the host. Stored objects go through the [`Storage`] trait ([`crate::ExecutorConfig::storage`]):
//! [`LocalStorage`] keeps them under the data directory; an agent plugs in the server's
//! blob API.
//! Layout (keys): `caches/<escaped key>.tar.zst`, `workspaces/<workspace id>/<layer>.tar.zst`,
//! `artifacts/<job>/<build>/<node>/<path>`, `test-results/<job>/<time>.json`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use bollard::Docker;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::StreamExt;
use gyre_protocol::agent::Artifact;
use gyre_protocol::helper::Hello;
use gyre_protocol::{CheckoutSource, JobInfo};

use crate::Error;
use crate::junit::{TestCase, parse_junit};

/// What the [`Storage`] methods return: a boxed future, so the trait stays object safe
/// (`Arc<dyn Storage>`) and network implementations can await inside tokio.
pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Object storage contract, shared by [`LocalStorage`] and network implementations:
/// - `put_file` is atomic: readers never see half an object. With `only_new`, the first
///   writer wins and later ones get `false`.
/// - `get_file` of a missing key is `Ok(false)`, not an error.
/// - `list(prefix)` is a plain string prefix over whole keys: `caches/v1-` lists
///   `caches/v1-abc.tar.zst` (the prefix may end inside a segment).
/// - Keys are `/`-separated relative paths with no empty, `.` or `..` segment.
pub trait Storage: Send + Sync + Debug {
    /// Stores the file at `from` under `key`; with `only_new`, leaves an existing object
    /// alone. Returns whether it was stored.
    fn put_file<'a>(
        &'a self,
        key: &'a str,
        from: &'a Path,
        only_new: bool,
    ) -> StorageFuture<'a, bool>;
    /// Writes the object to the local file `to` (created or truncated). Returns `false`
    /// (leaving `to` alone) when there is no such object.
    fn get_file<'a>(&'a self, key: &'a str, to: &'a Path) -> StorageFuture<'a, bool>;
    /// Keys starting with `prefix`, with their modification times, in no particular order.
    fn list<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<(String, SystemTime)>>;
    /// A path on this machine where the object can be read directly, if the backend has
    /// one (saves a copy). Default: none.
    fn local_path(&self, key: &str) -> Option<PathBuf> {
        let _ = key;
        None
    }
}

/// [`Storage`] in a local directory.
#[derive(Clone, Debug)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> LocalStorage {
        LocalStorage { root: root.into() }
    }

    fn put_blocking(root: &Path, key: &str, from: &Path, only_new: bool) -> Result<bool, Error> {
        let dest = root.join(key);
        if only_new && dest.exists() {
            return Ok(false);
        }
        let parent = dest.parent().unwrap_or(root);
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        let tmp = parent.join(format!(".tmp-{}", unique()));
        std::fs::copy(from, &tmp).map_err(|e| Error::io(format!("storing {key}"), e))?;
        if only_new {
            // hard_link fails if the destination exists: first writer wins.
            let linked = std::fs::hard_link(&tmp, &dest).is_ok();
            let _ = std::fs::remove_file(&tmp);
            return Ok(linked);
        }
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io(format!("storing {key}"), e))?;
        Ok(true)
    }

    fn list_blocking(root: &Path, prefix: &str) -> Vec<(String, SystemTime)> {
        let (dir, start) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            return vec![];
        };
        let mut out = vec![];
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || !name.starts_with(start) {
                continue;
            }
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let key = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            out.push((key, modified));
        }
        out
    }
}

impl Storage for LocalStorage {
    fn put_file<'a>(
        &'a self,
        key: &'a str,
        from: &'a Path,
        only_new: bool,
    ) -> StorageFuture<'a, bool> {
        let (root, key_owned, from) = (self.root.clone(), key.to_owned(), from.to_path_buf());
        Box::pin(async move {
            blocking(move || LocalStorage::put_blocking(&root, &key_owned, &from, only_new)).await
        })
    }

    fn get_file<'a>(&'a self, key: &'a str, to: &'a Path) -> StorageFuture<'a, bool> {
        let (src, to) = (self.root.join(key), to.to_path_buf());
        let key = key.to_owned();
        Box::pin(async move {
            blocking(move || {
                if !src.is_file() {
                    return Ok(false);
                }
                std::fs::copy(&src, &to).map_err(|e| Error::io(format!("reading {key}"), e))?;
                Ok(true)
            })
            .await
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StorageFuture<'a, Vec<(String, SystemTime)>> {
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        Box::pin(
            async move { blocking(move || Ok(LocalStorage::list_blocking(&root, &prefix))).await },
        )
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        let path = self.root.join(key);
        path.is_file().then_some(path)
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    join(tokio::task::spawn_blocking(work)).await
}

/// Whether `key` exists (a listing of the key itself).
async fn exists(storage: &dyn Storage, key: &str) -> Result<bool, Error> {
    if storage.local_path(key).is_some() {
        return Ok(true);
    }
    Ok(storage.list(key).await?.iter().any(|(k, _)| k == key))
}

/// An object readable on this machine: the backend's own file or a downloaded copy.
enum Fetched {
    Local(PathBuf),
    Temp(tempfile::TempPath),
}

impl Fetched {
    fn path(&self) -> &Path {
        match self {
            Fetched::Local(path) => path,
            Fetched::Temp(tmp) => tmp,
        }
    }
}

/// `key` as a local file, downloading it to a temporary file if needed; `None` if missing.
async fn fetch(storage: &dyn Storage, key: &str) -> Result<Option<Fetched>, Error> {
    if let Some(path) = storage.local_path(key) {
        return Ok(Some(Fetched::Local(path)));
    }
    let tmp = tempfile::NamedTempFile::new()
        .map_err(|e| Error::io("temporary file", e))?
        .into_temp_path();
    Ok(storage
        .get_file(key, &tmp)
        .await?
        .then_some(Fetched::Temp(tmp)))
}

/// Makes any text one key segment (`/` and `%` escaped).
pub(crate) fn escape_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    out
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:024}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where the job's files are.
pub(crate) enum Target {
    Docker { docker: Docker, container: String },
    Machine,
}

/// A tar of one path: entries are named `<basename>/...`; `parent` is the path's directory.
/// Writes a tar (entries named relative to `/`) for [`Target::import`].
type Importer = Box<dyn FnOnce(&mut dyn Write) -> Result<(), Error> + Send>;

type Exporter<T> = Box<dyn FnOnce(&mut dyn Read, &Path) -> Result<T, Error> + Send>;

impl Target {
    /// Streams a tar of `path` to `consume` (on a blocking thread). `None` if `path` is missing.
    async fn export<T: Send + 'static>(
        &self,
        path: &str,
        consume: Exporter<T>,
    ) -> Result<Option<T>, Error> {
        let path_buf = PathBuf::from(path);
        let parent = path_buf.parent().unwrap_or(Path::new("/")).to_path_buf();
        match self {
            Target::Machine => {
                if std::fs::symlink_metadata(path).is_err() {
                    return Ok(None);
                }
                let name = path_buf.file_name().map(PathBuf::from).unwrap_or_default();
                let src = path_buf.clone();
                let (mut reader, writer) = std::io::pipe().map_err(|e| Error::io("pipe", e))?;
                let producer = tokio::task::spawn_blocking(move || {
                    let mut builder = tar::Builder::new(writer);
                    append_tree(&mut builder, &src, &name, None)?;
                    builder.finish()
                });
                let consumer = tokio::task::spawn_blocking(move || consume(&mut reader, &parent));
                let consumed = join(consumer).await;
                let produced = join(producer).await;
                let value = consumed?;
                match produced {
                    // The consumer may stop early (it found what it wanted).
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        Err(Error::io(format!("reading {path}"), e))
                    }
                    _ => Ok(Some(value)),
                }
            }
            Target::Docker { docker, container } => {
                let options = DownloadFromContainerOptionsBuilder::default()
                    .path(path)
                    .build();
                let mut stream = docker.download_from_container(container, Some(options));
                let first = match stream.next().await {
                    None => Bytes::new(),
                    Some(Ok(bytes)) => bytes,
                    Some(Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    })) => {
                        return Ok(None);
                    }
                    Some(Err(source)) => {
                        return Err(Error::Docker {
                            context: format!("reading {path} from the container"),
                            source,
                        });
                    }
                };
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(16);
                let consumer = tokio::task::spawn_blocking(move || {
                    let mut reader = ChannelReader { rx, current: first };
                    consume(&mut reader, &parent)
                });
                while let Some(item) = stream.next().await {
                    if tx.send(item.map_err(|e| e.to_string())).await.is_err() {
                        break;
                    }
                }
                drop(tx);
                Ok(Some(join(consumer).await?))
            }
        }
    }

    /// Extracts the tar written by `produce` at `/` (entry names are absolute paths
    /// without the leading `/`).
    async fn import(&self, produce: Importer) -> Result<(), Error> {
        match self {
            Target::Machine => {
                let (reader, mut writer) = std::io::pipe().map_err(|e| Error::io("pipe", e))?;
                let producer = tokio::task::spawn_blocking(move || {
                    let result = produce(&mut writer);
                    drop(writer);
                    result
                });
                let consumer = tokio::task::spawn_blocking(move || {
                    crate::unpack::unpack_at(Path::new("/"), reader)
                });
                let unpacked = join(consumer).await;
                let produced = join(producer).await;
                // An unpacking error first: it is why the producer's pipe broke.
                unpacked.map_err(|e| Error::io("extracting files", e))?;
                produced
            }
            Target::Docker { docker, container } => {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
                let producer = tokio::task::spawn_blocking(move || {
                    let mut writer = ChannelWriter { tx };
                    produce(&mut writer)?;
                    writer.flush().map_err(|e| Error::io("streaming files", e))
                });
                let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
                let options = UploadToContainerOptionsBuilder::default().path("/").build();
                let uploaded = docker
                    .upload_to_container(container, Some(options), bollard::body_stream(body))
                    .await;
                let produced = join(producer).await;
                // The engine's refusal first: it is why the producer's channel closed.
                uploaded.map_err(|source| Error::Docker {
                    context: "copying files into the container".to_owned(),
                    source,
                })?;
                produced
            }
        }
    }
}

async fn join<T>(handle: tokio::task::JoinHandle<T>) -> T
where
    T: Send + 'static,
{
    match handle.await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(err)) => return Err(std::io::Error::other(err)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Buffers writes into 256 KiB chunks sent to the upload.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::other("the upload stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Adds `src` (file or directory tree, symlinks not followed) to `builder` as `name`.
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    src: &Path,
    name: &Path,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let mut stack = vec![(src.to_path_buf(), name.to_path_buf())];
    while let Some((path, name)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        if let Some((uid, gid)) = owner {
            header.set_uid(uid.into());
            header.set_gid(gid.into());
        }
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&path)?;
            builder.append_link(&mut header, &name, target)?;
        } else if ft.is_dir() {
            header.set_size(0);
            builder.append_data(&mut header, &name, std::io::empty())?;
            let mut children: Vec<_> = std::fs::read_dir(&path)?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            children.sort();
            for child in children.into_iter().rev() {
                stack.push((path.join(&child), name.join(&child)));
            }
        } else if ft.is_file() {
            let file = std::fs::File::open(&path)?;
            builder.append_data(&mut header, &name, file)?;
        }
    }
    Ok(())
}

/// Copies entries of `input` to `builder`, renaming with `map` (None skips the entry).
fn retar<W: Write>(
    input: &mut dyn Read,
    builder: &mut tar::Builder<W>,
    mut map: impl FnMut(&Path) -> Option<PathBuf>,
) -> std::io::Result<u64> {
    let mut archive = tar::Archive::new(input);
    let mut n = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(new_path) = map(&path) else { continue };
        if new_path.as_os_str().is_empty() {
            continue;
        }
        let mut header = entry.header().clone();
        match entry.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                builder.append_link(&mut header, &new_path, target)?;
            }
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Continuous => {
                builder.append_data(&mut header, &new_path, &mut entry)?;
            }
            _ => continue,
        }
        n += 1;
    }
    Ok(n)
}

/// The first component of cache entries that lie under the saving task's home: caches
/// of `~/...` paths restore under the restoring task's home, which differs between
/// tasks on the machine executor.
const HOME_PREFIX: &str = "~";

/// The tar name of a cached path: `~/rest` under `home`, else relative to `/`.
fn cache_name(path: &Path, home: &Path) -> PathBuf {
    match path.strip_prefix(home) {
        Ok(rest) if home.components().count() > 1 => Path::new(HOME_PREFIX).join(rest),
        _ => rel_to_root(path),
    }
}

/// `/a/b` -> `a/b` (a tar name relative to `/`).
fn rel_to_root(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

fn strip_first(path: &Path) -> PathBuf {
    path.components().skip(1).collect()
}

/// Reads one file from the job.
pub(crate) async fn read_file(target: &Target, path: &str) -> Result<Vec<u8>, Error> {
    read_file_if_any(target, path)
        .await?
        .ok_or_else(|| Error::InvalidTask(format!("cannot checksum {path}: no such file")))
}

/// A directory (`contents: None`) or file to write into the job.
pub(crate) struct NewEntry {
    /// Absolute path.
    pub path: String,
    pub mode: u32,
    pub contents: Option<Vec<u8>>,
}

/// Writes `entries` (in order) into the job, owned by `owner`.
pub(crate) async fn write_entries(
    target: &Target,
    owner: (u32, u32),
    entries: Vec<NewEntry>,
) -> Result<(), Error> {
    target
        .import(Box::new(move |writer| {
            let mut builder = tar::Builder::new(writer);
            let written = entries.iter().try_for_each(|entry| {
                let mut header = tar::Header::new_gnu();
                let bytes = entry.contents.as_deref().unwrap_or_default();
                if entry.contents.is_none() {
                    header.set_entry_type(tar::EntryType::Directory);
                }
                header.set_size(bytes.len() as u64);
                header.set_mode(entry.mode);
                header.set_uid(owner.0.into());
                header.set_gid(owner.1.into());
                builder.append_data(&mut header, rel_to_root(Path::new(&entry.path)), bytes)
            });
            written
                .and_then(|()| builder.finish())
                .map_err(|e| Error::io("writing files into the job", e))
        }))
        .await
}

/// Reads one file from the job; `None` when it is not there.
pub(crate) async fn read_file_if_any(
    target: &Target,
    path: &str,
) -> Result<Option<Vec<u8>>, Error> {
    let consume: Exporter<Option<Vec<u8>>> = Box::new(|reader, _| {
        let mut archive = tar::Archive::new(reader);
        for entry in archive
            .entries()
            .map_err(|e| Error::io("reading a file", e))?
        {
            let mut entry = entry.map_err(|e| Error::io("reading a file", e))?;
            if entry.header().entry_type().is_file() {
                let mut bytes = Vec::new();
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| Error::io("reading a file", e))?;
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    });
    Ok(target.export(path, consume).await?.flatten())
}

/// `checkout`: clones on the host, then copies the tree (with `.git`) to `dest`.
pub(crate) async fn checkout(
    target: &Target,
    hello: &Hello,
    source: &CheckoutSource,
    dest: &str,
    method: CheckoutMethod,
) -> Result<Vec<String>, Error> {
    // Like CircleCI: a destination that has files but is no git repository is an error
    // (a git repository is updated in place).
    let probe: Exporter<(bool, bool)> = Box::new(|reader, _| {
        let mut archive = tar::Archive::new(reader);
        let (mut non_empty, mut git) = (false, false);
        for entry in archive
            .entries()
            .map_err(|e| Error::io("reading the destination", e))?
        {
            let entry = entry.map_err(|e| Error::io("reading the destination", e))?;
            let path = entry
                .path()
                .map_err(|e| Error::io("reading the destination", e))?;
            let rel = strip_first(&path);
            if rel.as_os_str().is_empty() {
                continue;
            }
            non_empty = true;
            if rel == Path::new(".git") {
                git = true;
                break;
            }
        }
        Ok((non_empty, git))
    });
    if let Some((true, false)) = target.export(dest, probe).await? {
        return Err(Error::InvalidTask(format!(
            "Directory ({dest}) you are trying to checkout to is not empty and not a git repository"
        )));
    }
    let tmp = tempfile::tempdir().map_err(|e| Error::io("creating a checkout directory", e))?;
    let clone_dir = tmp.path().join("src");
    clone(tmp.path(), source, method).await?;
    git(
        &clone_dir,
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--force",
            &source.revision,
        ],
    )
    .await?;
    git(&clone_dir, &["config", "gc.auto", "0"]).await?;
    let owner = Some((hello.uid, hello.gid));
    let name = rel_to_root(Path::new(dest));
    target
        .import(Box::new(move |writer| {
            let mut builder = tar::Builder::new(writer);
            append_tree(&mut builder, &clone_dir, &name, owner)
                .and_then(|()| builder.finish())
                .map_err(|e| Error::io("copying the checkout", e))
        }))
        .await?;
    drop(tmp);
    let mut notes = vec![format!(
        "Checked out {} at {} into {dest}{}",
        source.repository,
        source.revision,
        method.describe()
    )];
    if method != CheckoutMethod::Full {
        notes.push(format!(
            "History not copied is fetched from {} when git needs it, if the job can reach it",
            source.repository
        ));
    }
    Ok(notes)
}

/// How much history `checkout` copies (§4.4 `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CheckoutMethod {
    /// Every commit, tree and file version.
    Full,
    /// Every commit and tree, but only the checked-out commit's file contents.
    Blobless,
    /// The last `depth` commits.
    Shallow(u32),
}

impl CheckoutMethod {
    /// From the step's `method` and `depth`; an unknown method is an error.
    pub fn parse(method: Option<&str>, depth: Option<u32>) -> Result<CheckoutMethod, Error> {
        match (method, depth) {
            (Some("shallow"), depth) => Ok(CheckoutMethod::Shallow(depth.unwrap_or(1).max(1))),
            (_, Some(_)) => Err(Error::Step(
                "checkout: `depth` needs `method: shallow`".to_owned(),
            )),
            (None | Some("full"), None) => Ok(CheckoutMethod::Full),
            (Some("blobless"), None) => Ok(CheckoutMethod::Blobless),
            (Some(other), None) => Err(Error::Step(format!(
                "checkout: unknown method {other:?} (expected full, blobless or shallow)"
            ))),
        }
    }

    fn describe(self) -> String {
        match self {
            CheckoutMethod::Full => String::new(),
            CheckoutMethod::Blobless => " (blobless)".to_owned(),
            CheckoutMethod::Shallow(depth) => format!(" (shallow, depth {depth})"),
        }
    }
}

/// Clones `source` into `dir/src` without checking out. Partial clones go through
/// `file://` for local repositories (git ignores `--filter`/`--depth` on plain paths)
/// with an upload-pack that allows them.
async fn clone(dir: &Path, source: &CheckoutSource, method: CheckoutMethod) -> Result<(), Error> {
    const UPLOAD_PACK: &str =
        "git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true upload-pack";
    let repo = &source.repository;
    let url = match std::path::absolute(repo) {
        Ok(path) if method != CheckoutMethod::Full && path.exists() => {
            format!("file://{}", path.display())
        }
        _ => repo.clone(),
    };
    let mut args = vec!["clone", "--quiet", "--no-checkout"];
    let depth;
    match method {
        CheckoutMethod::Full => {}
        CheckoutMethod::Blobless => args.extend(["--filter=blob:none", "-u", UPLOAD_PACK]),
        CheckoutMethod::Shallow(n) => {
            depth = n.to_string();
            args.extend(["--no-single-branch", "--depth", &depth, "-u", UPLOAD_PACK]);
        }
    }
    args.extend([url.as_str(), "src"]);
    git(dir, &args).await?;
    let CheckoutMethod::Shallow(n) = method else {
        return Ok(());
    };
    // The revision may be older than the branch tips: fetch it at the same depth.
    let src = dir.join("src");
    let commit = format!("{}^{{commit}}", source.revision);
    if git(&src, &["cat-file", "-e", &commit]).await.is_err() {
        let depth = n.to_string();
        git(
            &src,
            &[
                "fetch",
                "--quiet",
                "--depth",
                &depth,
                "--upload-pack",
                UPLOAD_PACK,
                "origin",
                &source.revision,
            ],
        )
        .await?;
    }
    Ok(())
}

async fn git(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let output = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .map_err(|e| Error::io("running git", e))?;
    if !output.status.success() {
        return Err(Error::InvalidTask(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// `save_cache`: tar + zstd of `paths` (absolute), stored unless the key exists.
pub(crate) async fn save_cache(
    target: &Target,
    storage: &dyn Storage,
    key: &str,
    paths: &[String],
    home: &str,
) -> Result<String, Error> {
    let object = format!("caches/{}.tar.zst", escape_segment(key));
    if exists(storage, &object).await? {
        return Ok(format!(
            "Skipping cache generation, cache already exists for key: {key}"
        ));
    }
    let tmp = tempfile::NamedTempFile::new_in(std::env::temp_dir())
        .map_err(|e| Error::io("temporary file", e))?;
    let file = tmp.reopen().map_err(|e| Error::io("temporary file", e))?;
    let mut encoder = zstd::stream::Encoder::new(std::io::BufWriter::new(file), 3)
        .map_err(|e| Error::io("zstd", e))?;
    encoder.multithread(2).map_err(|e| Error::io("zstd", e))?;
    let mut builder = Some(tar::Builder::new(encoder));
    let mut found = 0;
    let mut missing = vec![];
    for path in paths {
        let mut b = builder
            .take()
            .ok_or_else(|| Error::Helper("cache builder lost".into()))?;
        let home_dir = PathBuf::from(home);
        let consume: Exporter<(tar::Builder<_>, u64)> = Box::new(move |reader, parent| {
            let n = retar(reader, &mut b, |p| {
                Some(cache_name(&parent.join(p), &home_dir))
            })
            .map_err(|e| Error::io("archiving", e))?;
            Ok((b, n))
        });
        // The builder comes back through the consumer; a missing path loses it, and the
        // cache is then built again from the paths that exist.
        match target.export(path, consume).await? {
            Some((b, n)) => {
                builder = Some(b);
                found += n;
            }
            None => {
                missing.push(path.clone());
                return finish_missing(target, storage, key, paths, &missing, home).await;
            }
        }
    }
    let builder = builder.ok_or_else(|| Error::Helper("cache builder lost".into()))?;
    let encoder = builder
        .into_inner()
        .map_err(|e| Error::io("archiving", e))?;
    let mut buf = encoder.finish().map_err(|e| Error::io("zstd", e))?;
    buf.flush().map_err(|e| Error::io("writing the cache", e))?;
    drop(buf);
    let stored = storage.put_file(&object, tmp.path(), true).await?;
    Ok(if stored {
        format!("Stored cache {key} ({found} entries)")
    } else {
        format!("Skipping cache generation, cache already exists for key: {key}")
    })
}

/// A path of `save_cache` is missing: save the others, warning about the missing ones.
async fn finish_missing(
    target: &Target,
    storage: &dyn Storage,
    key: &str,
    paths: &[String],
    missing: &[String],
    home: &str,
) -> Result<String, Error> {
    let mut present = vec![];
    for path in paths {
        if missing.contains(path) {
            continue;
        }
        let exists: Exporter<()> = Box::new(|_, _| Ok(()));
        if target.export(path, exists).await?.is_some() {
            present.push(path.clone());
        }
    }
    let warning = format!("Warning: could not find {}; skipping", missing.join(", "));
    if present.is_empty() {
        return Ok(format!(
            "{warning}\nSkipping cache generation, no files found for key: {key}"
        ));
    }
    let note = Box::pin(save_cache(target, storage, key, &present, home)).await?;
    Ok(format!("{warning}\n{note}"))
}

/// `restore_cache`: the newest cache whose key starts with the first candidate that matches.
pub(crate) async fn restore_cache(
    target: &Target,
    storage: &dyn Storage,
    keys: &[String],
    home: &str,
) -> Result<String, Error> {
    for key in keys {
        let mut found = storage
            .list(&format!("caches/{}", escape_segment(key)))
            .await?;
        found.retain(|(k, _)| k.ends_with(".tar.zst"));
        found.sort_by_key(|(_, time)| *time);
        let Some((object, _)) = found.pop() else {
            continue;
        };
        let Some(file) = fetch(storage, &object).await? else {
            continue;
        };
        let home = rel_to_root(Path::new(home));
        target
            .import(Box::new(move |writer| {
                let file = std::fs::File::open(file.path())
                    .map_err(|e| Error::io("opening the cache", e))?;
                let mut decoder =
                    zstd::stream::Decoder::new(file).map_err(|e| Error::io("zstd", e))?;
                // Entries saved under the saving task's home go under this task's home.
                let mut builder = tar::Builder::new(writer);
                retar(&mut decoder, &mut builder, |p| {
                    Some(match p.strip_prefix(HOME_PREFIX) {
                        Ok(rest) => home.join(rest),
                        Err(_) => p.to_path_buf(),
                    })
                })
                .and_then(|_| builder.finish())
                .map_err(|e| Error::io("restoring the cache", e))?;
                Ok(())
            }))
            .await?;
        let name = object
            .trim_start_matches("caches/")
            .trim_end_matches(".tar.zst");
        return Ok(format!(
            "Found a cache from key {key}: restored {}",
            unescape(name)
        ));
    }
    Ok(format!("No cache is found for key(s): {}", keys.join(", ")))
}

fn unescape(text: &str) -> String {
    text.replace("%2F", "/")
        .replace("%2E", ".")
        .replace("%25", "%")
}

/// `persist_to_workspace`: a new layer with `paths` (globs) relative to `root`.
pub(crate) async fn persist_workspace(
    target: &Target,
    storage: &dyn Storage,
    workspace_id: &str,
    job: &str,
    node: u32,
    root: &str,
    paths: &[String],
) -> Result<String, Error> {
    let patterns: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            p.split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let tmp = tempfile::NamedTempFile::new().map_err(|e| Error::io("temporary file", e))?;
    let file = tmp.reopen().map_err(|e| Error::io("temporary file", e))?;
    let consume: Exporter<u64> = Box::new(move |reader, _| {
        let encoder = zstd::stream::Encoder::new(std::io::BufWriter::new(file), 3)
            .map_err(|e| Error::io("zstd", e))?;
        let mut builder = tar::Builder::new(encoder);
        let n = retar(reader, &mut builder, |p| {
            let rel = strip_first(p);
            let parts: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            patterns
                .iter()
                .any(|pat| {
                    pat.is_empty()
                        || (parts.len() >= pat.len()
                            && pat.iter().zip(&parts).all(|(g, s)| glob_match(g, s)))
                })
                .then_some(rel)
        })
        .map_err(|e| Error::io("archiving the workspace", e))?;
        let encoder = builder
            .into_inner()
            .map_err(|e| Error::io("archiving", e))?;
        encoder
            .finish()
            .and_then(|mut w| w.flush())
            .map_err(|e| Error::io("zstd", e))?;
        Ok(n)
    });
    let Some(n) = target.export(root, consume).await? else {
        return Err(Error::InvalidTask(format!(
            "persist_to_workspace: the root {root} does not exist"
        )));
    };
    if n == 0 {
        return Err(Error::InvalidTask(format!(
            "persist_to_workspace: no files under {root} match {}",
            paths.join(", ")
        )));
    }
    let key = format!(
        "workspaces/{}/{}.{}.{node}.tar.zst",
        escape_segment(workspace_id),
        unique(),
        hex(job)
    );
    storage.put_file(&key, tmp.path(), false).await?;
    Ok(format!(
        "Persisted {n} entries from {root} to the workspace"
    ))
}

/// Lower-case hex of `text`: a job name as one dot-free key segment.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `attach_workspace`: the layers of the workspace (those of `upstream` jobs when given),
/// oldest first, extracted under `at`.
pub(crate) async fn attach_workspace(
    target: &Target,
    storage: &dyn Storage,
    workspace_id: &str,
    upstream: Option<&[String]>,
    at: &str,
) -> Result<String, Error> {
    let mut layers = storage
        .list(&format!("workspaces/{}/", escape_segment(workspace_id)))
        .await?;
    layers.sort();
    if let Some(upstream) = upstream {
        let wanted: Vec<String> = upstream.iter().map(|job| hex(job)).collect();
        layers.retain(|(key, _)| {
            let name = key.rsplit('/').next().unwrap_or_default();
            name.split('.')
                .nth(1)
                .is_some_and(|job| wanted.iter().any(|w| w == job))
        });
    }
    let prefix = rel_to_root(Path::new(at));
    for (key, _) in &layers {
        let Some(file) = fetch(storage, key).await? else {
            continue;
        };
        let prefix = prefix.clone();
        target
            .import(Box::new(move |writer| {
                let file = std::fs::File::open(file.path())
                    .map_err(|e| Error::io("opening a workspace layer", e))?;
                let mut decoder =
                    zstd::stream::Decoder::new(file).map_err(|e| Error::io("zstd", e))?;
                let mut builder = tar::Builder::new(writer);
                retar(&mut decoder, &mut builder, |p| Some(prefix.join(p)))
                    .and_then(|_| builder.finish())
                    .map_err(|e| Error::io("attaching the workspace", e))
            }))
            .await?;
    }
    Ok(format!(
        "Attached {} workspace layer(s) at {at}",
        layers.len()
    ))
}

/// One path segment against a Go `filepath.Match` pattern.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && go(&p[2..], &s[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|&c| c == ']') else {
                    return false;
                };
                let Some(&c) = s.first() else { return false };
                let mut class = &p[1..end];
                let negate = class.first() == Some(&'^');
                if negate {
                    class = &class[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[end + 1..], &s[1..])
            }
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    go(&p, &s)
}

/// `store_artifacts`: each file under `source` stored as
/// `artifacts/<job>/<build>/<node>/<destination>/<relative path>`, one at a time (a
/// temporary copy of one file at most).
pub(crate) async fn store_artifacts(
    target: &Target,
    storage: &Arc<dyn Storage>,
    job: &JobInfo,
    node: u32,
    source: &str,
    destination: Option<&str>,
) -> Result<Vec<Artifact>, Error> {
    let destination = destination
        .map(|d| d.trim_matches('/').to_owned())
        .unwrap_or_else(|| source.trim_matches('/').to_owned());
    let base = format!(
        "artifacts/{}/{}/{node}",
        escape_segment(&job.name),
        job.build_num
    );
    let storage = Arc::clone(storage);
    let runtime = tokio::runtime::Handle::current();
    let consume: Exporter<Vec<Artifact>> = Box::new(move |reader, _| {
        let mut archive = tar::Archive::new(reader);
        let mut stored = vec![];
        for entry in archive
            .entries()
            .map_err(|e| Error::io("reading artifacts", e))?
        {
            let mut entry = entry.map_err(|e| Error::io("reading artifacts", e))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| Error::io("reading artifacts", e))?
                .into_owned();
            let rel = strip_first(&path);
            let name = if rel.as_os_str().is_empty() {
                destination.clone()
            } else {
                format!("{destination}/{}", rel.display())
            };
            let key = artifact_key(&base, &name);
            let mut tmp =
                tempfile::NamedTempFile::new().map_err(|e| Error::io("temporary file", e))?;
            std::io::copy(&mut entry, &mut tmp).map_err(|e| Error::io("storing artifacts", e))?;
            // A blocking-pool thread: waiting on the runtime here is allowed.
            runtime.block_on(storage.put_file(&key, tmp.path(), false))?;
            stored.push(Artifact {
                path: name,
                key,
                node_index: node,
            });
        }
        Ok(stored)
    });
    target
        .export(source, consume)
        .await?
        .ok_or_else(|| Error::InvalidTask(format!("store_artifacts: {source} does not exist")))
}

/// `base/name` as a valid key: empty and `.` segments dropped, `..` escaped.
fn artifact_key(base: &str, name: &str) -> String {
    let mut key = base.to_owned();
    for segment in name.split('/') {
        match segment {
            "" | "." => {}
            ".." => key.push_str("/%2E%2E"),
            other => {
                key.push('/');
                key.push_str(other);
            }
        }
    }
    key
}

/// `store_test_results`: JUnit files under `source`, parsed and stored for timings.
pub(crate) async fn store_test_results(
    target: &Target,
    storage: &dyn Storage,
    job_name: &str,
    source: &str,
) -> Result<Vec<TestCase>, Error> {
    let consume: Exporter<Result<Vec<TestCase>, String>> = Box::new(|reader, _| {
        let mut archive = tar::Archive::new(reader);
        let mut cases = vec![];
        for entry in archive
            .entries()
            .map_err(|e| Error::io("reading test results", e))?
        {
            let mut entry = entry.map_err(|e| Error::io("reading test results", e))?;
            let path = entry
                .path()
                .map_err(|e| Error::io("reading test results", e))?
                .into_owned();
            if !entry.header().entry_type().is_file() || path.extension().is_none_or(|e| e != "xml")
            {
                continue;
            }
            let mut text = String::new();
            if entry.read_to_string(&mut text).is_err() {
                continue;
            }
            match parse_junit(&text) {
                Ok(found) => cases.extend(found),
                Err(err) => return Ok(Err(format!("{}: {err}", path.display()))),
            }
        }
        Ok(Ok(cases))
    });
    let cases = target
        .export(source, consume)
        .await?
        .ok_or_else(|| Error::InvalidTask(format!("store_test_results: {source} does not exist")))?
        .map_err(|err| Error::InvalidTask(format!("store_test_results: {err}")))?;
    let json = serde_json::to_vec(&cases).map_err(|e| Error::Storage(e.to_string()))?;
    let tmp = tempfile::NamedTempFile::new().map_err(|e| Error::io("temporary file", e))?;
    std::fs::write(tmp.path(), json).map_err(|e| Error::io("writing test results", e))?;
    let key = format!(
        "test-results/{}/{}.json",
        escape_segment(job_name),
        unique()
    );
    storage.put_file(&key, tmp.path(), false).await?;
    Ok(cases)
}

/// Writes `<task_dir>/timings.json` for `circleci tests split --split-by=timings` from the
/// newest stored test results of the same job. Returns whether there were any.
pub(crate) async fn install_timings(
    target: &Target,
    storage: &dyn Storage,
    job_name: &str,
    task_dir: &str,
    owner: (u32, u32),
) -> Result<bool, Error> {
    let mut results = storage
        .list(&format!("test-results/{}/", escape_segment(job_name)))
        .await?;
    results.sort();
    let Some((key, _)) = results.pop() else {
        return Ok(false);
    };
    let Some(file) = fetch(storage, &key).await? else {
        return Ok(false);
    };
    let bytes = std::fs::read(file.path()).map_err(|e| Error::io("reading test results", e))?;
    let cases: Vec<TestCase> =
        serde_json::from_slice(&bytes).map_err(|e| Error::Storage(format!("{key}: {e}")))?;
    let mut tables: [HashMap<String, f64>; 3] = Default::default();
    for case in &cases {
        if let Some(file) = &case.file {
            *tables[0]
                .entry(file.trim_start_matches("./").to_owned())
                .or_default() += case.time;
        }
        *tables[1].entry(case.classname.clone()).or_default() += case.time;
        *tables[2].entry(case.name.clone()).or_default() += case.time;
    }
    let [filename, classname, testname] = tables;
    let json =
        serde_json::json!({"filename": filename, "classname": classname, "testname": testname});
    let body = serde_json::to_vec(&json).map_err(|e| Error::Storage(e.to_string()))?;
    let name = rel_to_root(Path::new(task_dir)).join("timings.json");
    target
        .import(Box::new(move |writer| {
            let mut builder = tar::Builder::new(writer);
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_uid(owner.0.into());
            header.set_gid(owner.1.into());
            builder
                .append_data(&mut header, &name, body.as_slice())
                .and_then(|()| builder.finish())
                .map_err(|e| Error::io("writing timings", e))
        }))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_methods_parse() {
        let parse = |m: Option<&str>, d| CheckoutMethod::parse(m, d).map_err(|e| e.to_string());
        assert_eq!(parse(None, None), Ok(CheckoutMethod::Full));
        assert_eq!(parse(Some("full"), None), Ok(CheckoutMethod::Full));
        assert_eq!(parse(Some("blobless"), None), Ok(CheckoutMethod::Blobless));
        assert_eq!(parse(Some("shallow"), None), Ok(CheckoutMethod::Shallow(1)));
        assert_eq!(
            parse(Some("shallow"), Some(5)),
            Ok(CheckoutMethod::Shallow(5))
        );
        let err = parse(Some("full"), Some(5)).unwrap_err();
        assert!(err.contains("`depth` needs `method: shallow`"), "{err}");
        let err = parse(Some("sparse"), None).unwrap_err();
        assert!(err.contains("unknown method \"sparse\""), "{err}");
    }

    #[test]
    fn escaping_and_globs() {
        assert_eq!(escape_segment("v1/deps-%x"), "v1%2Fdeps-%25x");
        assert_eq!(unescape(&escape_segment(".a/b%")), ".a/b%");
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txtx"));
        assert!(glob_match("[^a]?", "bc"));
        assert!(glob_match("\\*", "*"));
    }

    #[tokio::test]
    async fn a_consumer_may_stop_before_the_producer() {
        // read_file takes the first file and stops reading: the producer, still writing a
        // 1 MiB file into the pipe, gets EPIPE, which is not an error.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"first").unwrap();
        std::fs::write(dir.path().join("b.bin"), vec![7u8; 1 << 20]).unwrap();
        let path = dir.path().to_string_lossy().into_owned();
        let bytes = read_file(&Target::Machine, &path).await.unwrap();
        assert_eq!(bytes, b"first");
        let missing = format!("{path}/nope");
        assert!(read_file(&Target::Machine, &missing).await.is_err());
    }

    #[tokio::test]
    async fn local_storage_first_writer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        let src = dir.path().join("src");
        std::fs::write(&src, b"one").unwrap();
        assert!(storage.put_file("caches/k1", &src, true).await.unwrap());
        std::fs::write(&src, b"two").unwrap();
        assert!(!storage.put_file("caches/k1", &src, true).await.unwrap());
        let got = dir.path().join("got");
        assert!(storage.get_file("caches/k1", &got).await.unwrap());
        assert_eq!(std::fs::read(&got).unwrap(), b"one");
        assert!(!storage.get_file("caches/k2", &got).await.unwrap());
        assert_eq!(storage.list("caches/k").await.unwrap().len(), 1);
        assert!(storage.list("caches/x").await.unwrap().is_empty());
        assert!(exists(&storage, "caches/k1").await.unwrap());
        assert!(!exists(&storage, "caches/k").await.unwrap());
    }

    #[test]
    fn artifact_keys_stay_inside_their_prefix() {
        assert_eq!(
            artifact_key("artifacts/j/1/0", "a/b.txt"),
            "artifacts/j/1/0/a/b.txt"
        );
        assert_eq!(
            artifact_key("artifacts/j/1/0", "./a//../b"),
            "artifacts/j/1/0/a/%2E%2E/b"
        );
    }
}
