//! Extracting a tar onto the host (the machine executor's `restore_cache` and
//! `attach_workspace`), fast when it holds many small files.
//!
//! Creating a file costs the kernel far more than writing a few KiB into it, and one
//! thread creating 50 000 files waits on each creation in turn. So one thread reads the
//! archive (it must, a tar is sequential) and creates directories, links and large files
//! itself, while small regular files are written by a few worker threads. Memory stays
//! bounded: at most [`QUEUE`] files of at most [`SMALL`] bytes wait for a worker.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Files up to this size go to the workers.
const SMALL: u64 = 256 * 1024;
/// Files waiting for a worker, at most.
const QUEUE: usize = 64;
/// Worker threads.
const WORKERS: usize = 4;

/// Extracts `reader` (a tar whose names are relative to `root`) under `root`. Names with
/// `..` or a root are skipped with a warning; permissions and modification times are
/// kept; existing files are replaced.
/// # Security
/// Only for the machine executor, whose steps run with the agent's rights anyway.
pub(crate) fn unpack_at(root: &Path, reader: impl Read) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut pool = Pool::start();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            tracing::warn!(path = %path.display(), "skipping an unsafe archive entry");
            continue;
        }
        let dest = root.join(&path);
        if let Some(parent) = dest.parent()
            && !made.contains(parent)
        {
            std::fs::create_dir_all(parent)?;
            made.insert(parent.to_path_buf());
        }
        let kind = entry.header().entry_type();
        if kind.is_file() && entry.size() <= SMALL {
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut data)?;
            let job = Job {
                mode: entry.header().mode()? & 0o7777,
                mtime: entry.header().mtime()?,
                dest,
                data,
            };
            pool.send(job)?;
            continue;
        }
        if kind.is_hard_link() {
            // Its target may still be waiting for a worker.
            pool.finish()?;
            pool = Pool::start();
            hard_link(root, &entry, &dest)?;
            continue;
        }
        entry.unpack(&dest)?;
        if kind.is_dir() {
            made.insert(dest);
        }
    }
    pool.finish()
}

/// A hard link entry: its target is named relative to the archive's root (not to the
/// current directory, as `Entry::unpack` would take it), and must be safe too.
fn hard_link<R: Read>(root: &Path, entry: &tar::Entry<'_, R>, dest: &Path) -> io::Result<()> {
    let Some(target) = entry.link_name()? else {
        return Err(io::Error::other(format!(
            "hard link {} has no target",
            dest.display()
        )));
    };
    if target
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        tracing::warn!(target = %target.display(), "skipping an unsafe hard link");
        return Ok(());
    }
    match std::fs::symlink_metadata(dest) {
        Ok(m) if !m.is_dir() => std::fs::remove_file(dest)?,
        _ => {}
    }
    std::fs::hard_link(root.join(target), dest)
}

struct Job {
    dest: PathBuf,
    mode: u32,
    mtime: u64,
    data: Vec<u8>,
}

impl Job {
    fn write(&self) -> io::Result<()> {
        let open = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.mode)
                .open(&self.dest)
        };
        // `create_new` never follows a link at `dest`: what is there is replaced.
        let mut file: File = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&self.dest)?;
                open()?
            }
            Err(e) => return Err(e),
        };
        file.write_all(&self.data)?;
        // The mode given to open() passes through the umask; set it exactly.
        file.set_permissions(Permissions::from_mode(self.mode))?;
        let mtime = filetime::FileTime::from_unix_time(self.mtime as i64, 0);
        filetime::set_file_handle_times(&file, None, Some(mtime))
    }
}

/// Worker threads writing [`Job`]s; the first error wins.
struct Pool {
    tx: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    error: Arc<Mutex<Option<io::Error>>>,
}

impl Pool {
    fn start() -> Pool {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        let error = Arc::new(Mutex::new(None));
        let workers = (0..WORKERS)
            .map(|_| {
                let rx = rx.clone();
                let error = error.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        if let Err(e) = job.write() {
                            let e = io::Error::new(
                                e.kind(),
                                format!("writing {}: {e}", job.dest.display()),
                            );
                            if let Ok(mut slot) = error.lock() {
                                slot.get_or_insert(e);
                            }
                            return;
                        }
                    }
                })
            })
            .collect();
        Pool {
            tx: Some(tx),
            workers,
            error,
        }
    }

    fn failed(&self) -> Option<io::Error> {
        self.error.lock().ok().and_then(|mut slot| slot.take())
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let sent = self.tx.as_ref().map(|tx| tx.send(job));
        match sent {
            Some(Ok(())) => Ok(()),
            // Every worker stopped: one of them failed.
            _ => Err(self
                .failed()
                .unwrap_or_else(|| io::Error::other("file writers stopped"))),
        }
    }

    /// Waits for every queued file; the first error of any worker.
    fn finish(mut self) -> io::Result<()> {
        self.tx = None;
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                return Err(io::Error::other("a file writer panicked"));
            }
        }
        match self.failed() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h
    }

    /// Every kind of entry, many small files, one large one, a hard link to a small
    /// file queued just before it, and a file replacing a symlink that points outside.
    #[test]
    fn extracts_every_entry_kind() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d/was-link")).unwrap();

        let mut tar = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, "d/", io::empty()).unwrap();
        for i in 0..500 {
            let body = format!("file {i}\n");
            let mut h = header(tar::EntryType::Regular, 0o640, body.len() as u64);
            tar.append_data(&mut h, format!("d/sub{}/f{i}", i % 7), body.as_bytes())
                .unwrap();
        }
        let mut h = header(tar::EntryType::Regular, 0o755, 3);
        tar.append_data(&mut h, "d/run.sh", &b"ok\n"[..]).unwrap();
        let big = vec![7u8; (SMALL + 1) as usize];
        let mut h = header(tar::EntryType::Regular, 0o600, big.len() as u64);
        tar.append_data(&mut h, "d/big", &big[..]).unwrap();
        let mut h = header(tar::EntryType::Link, 0o755, 0);
        tar.append_link(&mut h, "d/hard", "d/run.sh").unwrap();
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, "d/soft", "run.sh").unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 3);
        tar.append_data(&mut h, "d/was-link", &b"new"[..]).unwrap();
        // The builder refuses `..` in names; a hostile archive has it anyway.
        let mut h = header(tar::EntryType::Regular, 0o644, 4);
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        tar.append(&h, &b"evil"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();

        unpack_at(&root, &bytes[..]).unwrap();
        for i in 0..500 {
            let p = root.join(format!("d/sub{}/f{i}", i % 7));
            assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("file {i}\n"));
            let meta = std::fs::metadata(&p).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o640, "{}", p.display());
            assert_eq!(meta.mtime(), 1_600_000_000);
        }
        let run = std::fs::metadata(root.join("d/run.sh")).unwrap();
        assert_eq!(run.mode() & 0o7777, 0o755);
        assert_eq!(std::fs::read(root.join("d/big")).unwrap(), big);
        assert_eq!(std::fs::read(root.join("d/hard")).unwrap(), b"ok\n");
        assert_eq!(
            std::fs::metadata(root.join("d/hard")).unwrap().ino(),
            run.ino()
        );
        assert_eq!(
            std::fs::read_link(root.join("d/soft")).unwrap(),
            Path::new("run.sh")
        );
        assert_eq!(std::fs::read(root.join("d/was-link")).unwrap(), b"new");
        assert_eq!(
            std::fs::read(&outside).unwrap(),
            b"keep",
            "no write through the link"
        );
        assert!(!tmp.path().join("escape").exists());
    }

    #[test]
    fn a_write_error_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        // `d` is a file where the archive wants a directory.
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("d"), "a file").unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        tar.append_data(&mut h, "d/x", &b"x"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        assert!(unpack_at(&root, &bytes[..]).is_err());
    }
}
