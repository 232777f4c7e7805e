//! `circleci __agent`: the step-running helper (see `gyre_protocol::helper`).
//!
//! Started once per task; reads JSON-line requests on stdin, runs each script in its own
//! process group, streams its output as frames on stdout, enforces the no-output timeout and
//! reports how the process ended. On stdin EOF it kills every process group it started.
//!
//! Each step gets one thread, which spawns the shell (posix_spawn, see `SPAWN_TURN`) and
//! then polls the step's two pipes and a pidfd: output goes out as frames as it comes,
//! heavy output in rounds of up to 1 MiB (`COALESCE`), and the no-output deadline is the
//! poll timeout.

use std::io::{BufRead, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gyre_protocol::helper::{Done, FrameKind, Hello, MAX_FRAME, Request, RunRequest, header};
use rustix::process::PidfdFlags;
use std::os::unix::process::{CommandExt, ExitStatusExt};

/// Frames go out, each in a single `write` (no line buffering: payloads are binary),
/// through the named pipe the executor made when it gave one and it opens (a bind-mounted
/// pipe skips the Docker engine's stream copying), else through stdout.
#[derive(Clone)]
struct Out(Arc<Mutex<Box<dyn Write + Send>>>);

impl Out {
    fn new(frames: Option<&str>) -> std::io::Result<Out> {
        use std::os::fd::AsFd;
        if let Some(path) = frames {
            match open_pipe(path) {
                Ok(file) => return Ok(Out(Arc::new(Mutex::new(Box::new(file))))),
                Err(err) => eprintln!("circleci __agent: {path}: {err}; using stdout"),
            }
        }
        let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Out(Arc::new(Mutex::new(Box::new(std::fs::File::from(fd))))))
    }

    fn frame(&self, kind: FrameKind, id: u32, payload: &[u8]) {
        let mut bytes = Vec::with_capacity(payload.len() + header(kind, id, 0).len());
        bytes.extend_from_slice(&header(kind, id, payload.len()));
        bytes.extend_from_slice(payload);
        let Ok(mut out) = self.0.lock() else { return };
        // A broken stdout means the executor is gone; the stdin EOF will end us.
        let _ = out.write_all(&bytes);
    }

    /// Sends `payload` as frames of at most `MAX_FRAME` bytes, in one write.
    fn frames(&self, scratch: &mut Vec<u8>, kind: FrameKind, id: u32, payload: &[u8]) {
        scratch.clear();
        for piece in payload.chunks(MAX_FRAME) {
            scratch.extend_from_slice(&header(kind, id, piece.len()));
            scratch.extend_from_slice(piece);
        }
        let Ok(mut out) = self.0.lock() else { return };
        let _ = out.write_all(scratch);
    }

    fn json<T: serde::Serialize>(&self, kind: FrameKind, id: u32, value: &T) {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.frame(kind, id, &bytes);
    }
}

/// The write end of the executor's named pipe for frames: opened without waiting (it fails
/// when nobody reads, as on a remote Docker engine where the path is not the executor's),
/// then made blocking. Nothing but a FIFO is accepted.
fn open_pipe(path: &str) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    if !std::fs::metadata(path)?.file_type().is_fifo() {
        return Err(std::io::Error::other("not a named pipe"));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    rustix::io::ioctl_fionbio(&file, false)?;
    Ok(file)
}

/// `frames`: path of the executor's named pipe for frames (optional).
pub fn main(frames: Option<&str>) -> i32 {
    let out = match Out::new(frames) {
        Ok(out) => out,
        Err(err) => {
            eprintln!("circleci __agent: cannot use stdout: {err}");
            return 1;
        }
    };
    out.json(FrameKind::Hello, 0, &hello());
    let groups: Arc<Mutex<Vec<i32>>> = Arc::default();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Request>(&line) {
            Ok(Request::Prepare { id, dirs, files }) => {
                out.json(FrameKind::Done, id, &prepare(&dirs, &files));
            }
            Ok(Request::Run(run)) => {
                let out = out.clone();
                let groups = groups.clone();
                std::thread::spawn(move || run_process(run, out, groups));
            }
            Err(err) => eprintln!("circleci __agent: bad request: {err}"),
        }
    }
    if let Ok(groups) = groups.lock() {
        for pgid in groups.iter() {
            kill_group(*pgid);
        }
        // A SIGKILL takes effect when its process next runs: wait (2 s at most) until the
        // groups are empty, so the steps are gone by the time the executor sees us exit.
        let until = Instant::now() + Duration::from_secs(2);
        while groups.iter().any(|pgid| group_alive(*pgid)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    0
}

/// Whether any process is left in the group `pgid` (a zombie not yet reaped counts).
fn group_alive(pgid: i32) -> bool {
    rustix::process::Pid::from_raw(pgid)
        .is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}

fn hello() -> Hello {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let home = std::env::var("HOME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| home_from_passwd(uid))
        .unwrap_or_else(|| "/".to_owned());
    Hello {
        uid,
        gid,
        home,
        has_bash: Path::new("/bin/bash").exists(),
        arch: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

/// Home of `uid` from /etc/passwd, read directly (no NSS in a static binary).
fn home_from_passwd(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2].parse::<u32>().ok() == Some(uid))
            .then(|| fields[5].to_owned())
    })
}

fn prepare(dirs: &[String], files: &[String]) -> Done {
    for dir in dirs {
        if let Err(err) = std::fs::create_dir_all(dir) {
            return Done {
                error: Some(format!("cannot create directory {dir}: {err}")),
                ..Done::default()
            };
        }
    }
    for file in files {
        let created = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file);
        if let Err(err) = created {
            return Done {
                error: Some(format!("cannot create file {file}: {err}")),
                ..Done::default()
            };
        }
    }
    Done::default()
}

fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

fn run_process(run: RunRequest, out: Out, groups: Arc<Mutex<Vec<i32>>>) {
    let done = run_process_inner(&run, &out, &groups);
    out.json(FrameKind::Done, run.id, &done);
}

fn error_done(message: String) -> Done {
    Done {
        error: Some(message),
        ..Done::default()
    }
}

fn run_process_inner(run: &RunRequest, out: &Out, groups: &Mutex<Vec<i32>>) -> Done {
    if !Path::new(&run.cwd).is_dir() {
        return error_done(format!("the working directory {} does not exist", run.cwd));
    }
    let Some((program, args)) = run.argv.split_first() else {
        return error_done("empty shell".to_owned());
    };
    let script_path =
        std::env::temp_dir().join(format!("gyre-step-{}-{}.sh", std::process::id(), run.id));
    if let Err(err) = std::fs::write(&script_path, &run.script) {
        return error_done(format!(
            "cannot write the step script {}: {err}",
            script_path.display()
        ));
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .arg(&script_path)
        .env_clear()
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let spawned = {
        // The child's working directory is ours at the moment of spawning, not a
        // `current_dir`: without one, std spawns with posix_spawn (a vfork) even in this
        // static binary, where a fork of this threaded process costs ~0.3 ms more a step.
        // Spawns take turns; nothing else here depends on our directory (paths from the
        // executor are absolute).
        let _turn = SPAWN_TURN.lock().unwrap_or_else(PoisonError::into_inner);
        std::env::set_current_dir(&run.cwd)
            .map_err(|err| format!("cannot enter the working directory {}: {err}", run.cwd))
            .and_then(|()| {
                command
                    .spawn()
                    .map_err(|err| format!("cannot start the shell {program}: {err}"))
            })
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(message) => {
            let _ = std::fs::remove_file(&script_path);
            return error_done(message);
        }
    };
    let oom_before = oom_kills();
    let pgid = child.id() as i32;
    if let Ok(mut groups) = groups.lock() {
        groups.push(pgid);
    }
    let pipes = [
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    ];
    let timeout = Duration::from_millis(run.no_output_timeout_ms.max(1));
    let (status, timed_out) = pump(&mut child, pipes, run.id, out, timeout);
    let _ = std::fs::remove_file(&script_path);
    let halted = run
        .halt_file
        .as_deref()
        .is_some_and(|file| std::fs::remove_file(file).is_ok());
    match status {
        Ok(status) => Done {
            exit_code: status.code(),
            signal: status.signal(),
            timed_out,
            halted,
            error: None,
            // SIGKILL while the cgroup's OOM kill count went up: the memory limit.
            oom_killed: status.signal() == Some(9)
                && !timed_out
                && matches!((oom_before, oom_kills()), (Some(a), Some(b)) if b > a),
        },
        Err(err) => error_done(format!("waiting for the step failed: {err}")),
    }
}

/// Held while setting our working directory and spawning a step (see `run_process_inner`).
static SPAWN_TURN: Mutex<()> = Mutex::new(());

/// One of a step's output pipes.
struct Pipe {
    file: std::fs::File,
    kind: FrameKind,
}

/// Sends the step's output as frames and waits for it to end, all on this thread: poll(2)
/// on both pipes and a pidfd of the child, the no-output deadline as the timeout. Returns
/// how the child ended and whether the no-output timeout killed it.
fn pump(
    child: &mut Child,
    pipes: [Option<OwnedFd>; 2],
    id: u32,
    out: &Out,
    timeout: Duration,
) -> (std::io::Result<ExitStatus>, bool) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let pgid = child.id() as i32;
    let pidfd = rustix::process::Pid::from_raw(pgid)
        .and_then(|pid| rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok());
    let [stdout, stderr] = pipes;
    let mut pipes: Vec<Pipe> = [(stdout, FrameKind::Stdout), (stderr, FrameKind::Stderr)]
        .into_iter()
        .filter_map(|(fd, kind)| {
            let fd = fd?;
            // A larger pipe lets a chatty step write on while we send, and makes our
            // reads larger: fewer wake-ups per byte. Best effort, like non-blocking reads
            // (without them a round reads what one read returns).
            let _ = rustix::pipe::fcntl_setpipe_size(&fd, PIPE_SIZE);
            let _ = rustix::io::ioctl_fionbio(&fd, true);
            Some(Pipe {
                file: std::fs::File::from(fd),
                kind,
            })
        })
        .collect();
    let mut buf = vec![0u8; ROUND];
    let mut frames = Vec::new();
    let mut last_output = Instant::now();
    let mut timed_out = false;
    // How the child ended, and until when its pipes are still read: a grandchild still
    // holding them must not hold the step, so output is read only briefly after.
    let mut ended: Option<(std::io::Result<ExitStatus>, Instant)> = None;
    loop {
        let now = Instant::now();
        let wait = match &ended {
            Some((_, until)) if now >= *until || pipes.is_empty() => break,
            Some((_, until)) => *until - now,
            None if timed_out => Duration::from_secs(1),
            None => {
                let deadline = last_output + timeout;
                if now >= deadline {
                    kill_group(pgid);
                    timed_out = true;
                    continue;
                }
                deadline - now
            }
        };
        // Without a pidfd (kernels before 5.3), look for the exit every 10 ms.
        let wait = match (&pidfd, ended.is_none()) {
            (None, true) => wait.min(Duration::from_millis(10)),
            _ => wait,
        };
        let mut fds: Vec<PollFd> = pipes
            .iter()
            .map(|pipe| PollFd::new(&pipe.file, PollFlags::IN))
            .collect();
        if let (Some(pidfd), None) = (&pidfd, &ended) {
            fds.push(PollFd::new(pidfd, PollFlags::IN));
        }
        let timespec = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        match poll(&mut fds, Some(&timespec)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => {
                kill_group(pgid);
                let _ = child.wait();
                return (Err(err.into()), timed_out);
            }
        }
        let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
        let exit_ready = pidfd.is_none() || ready.get(pipes.len()).copied().unwrap_or(false);
        drop(fds);
        let mut got = 0;
        let mut ready_pipes = ready.iter();
        pipes.retain_mut(|pipe| {
            if ready_pipes.next() != Some(&true) {
                return true;
            }
            let (len, eof) = read_round(&mut pipe.file, &mut buf);
            if len > 0 {
                out.frames(&mut frames, pipe.kind, id, &buf[..len]);
                got += len;
            }
            !eof
        });
        if got > 0 {
            last_output = Instant::now();
        }
        // Heavy output: let it pile up for a moment rather than waking for every block the
        // step writes (a pipe wakes its reader on each write into an empty pipe).
        if (COALESCE_FROM..ROUND / 2).contains(&got) && ended.is_none() {
            std::thread::sleep(COALESCE);
        }
        if ended.is_none() && exit_ready {
            match child.try_wait() {
                Ok(Some(status)) => {
                    ended = Some((Ok(status), Instant::now() + Duration::from_millis(200)));
                }
                Ok(None) => {}
                Err(err) => ended = Some((Err(err), Instant::now())),
            }
        }
    }
    if !pipes.is_empty() {
        // Whatever still writes there after the step gets read and dropped, never a full
        // pipe nor a SIGPIPE.
        std::thread::spawn(move || {
            for mut pipe in pipes {
                let _ = rustix::io::ioctl_fionbio(&pipe.file, false);
                let _ = std::io::copy(&mut pipe.file, &mut std::io::sink());
            }
        });
    }
    let status = ended.map_or_else(|| child.wait(), |(status, _)| status);
    (status, timed_out)
}

/// Reads what `file` (non-blocking) holds, up to `buf`'s size; the byte count, and whether
/// the pipe ended.
fn read_round(file: &mut std::fs::File, buf: &mut [u8]) -> (usize, bool) {
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => return (len, true),
            Ok(n) => len += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return (len, true),
        }
    }
    (len, false)
}

/// A round of at least this many bytes makes the next wait a little (`COALESCE`), unless
/// it was half a pipe's worth or more (the step would soon block on a full pipe).
const COALESCE_FROM: usize = 64 << 10;
const COALESCE: Duration = Duration::from_millis(1);

/// Most bytes read from one pipe before they are sent on.
const ROUND: usize = 1 << 20;

/// The OOM kill count of the memory cgroup we run in (cgroup v1 `memory.oom_control`, v2
/// `memory.events`); `None` when no cgroup file says.
fn oom_kills() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory/memory.oom_control",
        "/sys/fs/cgroup/memory.events",
    ]
    .iter()
    .filter_map(|file| std::fs::read_to_string(file).ok())
    .find_map(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    })
}

/// Capacity asked for the pipes of a step's stdout and stderr (Linux's default is 64 KiB).
const PIPE_SIZE: usize = 1 << 20;
