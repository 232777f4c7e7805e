//! `circleci __agent`: the step-running helper (see `gyre_protocol::helper`).
//!
//! Started once per task; reads JSON-line requests on stdin, runs each script in its own
//! process group, streams its output as frames on stdout, enforces the no-output timeout and
//! reports how the process ended. On stdin EOF it kills every process group it started.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gyre_protocol::helper::{Done, FrameKind, Hello, MAX_FRAME, Request, RunRequest, header};
use std::os::unix::process::{CommandExt, ExitStatusExt};

/// Frames go out, each in a single `write` (no line buffering: payloads are binary),
/// through the unix socket the executor listens on when it gave one and it answers (a
/// bind-mounted socket skips the Docker engine's stream copying), else through stdout.
#[derive(Clone)]
struct Out(Arc<Mutex<Box<dyn Write + Send>>>);

impl Out {
    fn new(socket: Option<&str>) -> std::io::Result<Out> {
        use std::os::fd::AsFd;
        if let Some(path) = socket {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(stream) => return Ok(Out(Arc::new(Mutex::new(Box::new(stream))))),
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

    fn json<T: serde::Serialize>(&self, kind: FrameKind, id: u32, value: &T) {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.frame(kind, id, &bytes);
    }
}

/// `socket`: path of the executor's unix socket for frames (optional).
pub fn main(socket: Option<&str>) -> i32 {
    let out = match Out::new(socket) {
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
    }
    0
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
        .current_dir(&run.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let _ = std::fs::remove_file(&script_path);
            return error_done(format!("cannot start the shell {program}: {err}"));
        }
    };
    let oom_before = oom_kills();
    let pgid = child.id() as i32;
    if let Ok(mut groups) = groups.lock() {
        groups.push(pgid);
    }
    let started = Instant::now();
    let last_output = Arc::new(AtomicU64::new(0));
    let (eof_tx, eof_rx) = mpsc::channel::<()>();
    if let Some(stdout) = child.stdout.take() {
        spawn_reader(
            stdout,
            FrameKind::Stdout,
            run.id,
            out,
            &last_output,
            started,
            &eof_tx,
        );
    }
    if let Some(stderr) = child.stderr.take() {
        spawn_reader(
            stderr,
            FrameKind::Stderr,
            run.id,
            out,
            &last_output,
            started,
            &eof_tx,
        );
    }
    drop(eof_tx);

    // Watchdog: kills the group after `no_output_timeout_ms` without output.
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let timeout = Duration::from_millis(run.no_output_timeout_ms.max(1));
    let watch_output = last_output.clone();
    let watchdog = std::thread::spawn(move || {
        loop {
            let last = Duration::from_millis(watch_output.load(Ordering::Relaxed));
            let deadline = last + timeout;
            let now = started.elapsed();
            if now >= deadline {
                kill_group(pgid);
                return true;
            }
            match exit_rx.recv_timeout(deadline - now) {
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                _ => return false,
            }
        }
    });

    let status = child.wait();
    drop(exit_tx);
    let timed_out = watchdog.join().unwrap_or(false);
    // Output written before the exit comes first; a grandchild still holding the pipes
    // must not hold the step, so wait for EOF only briefly.
    let grace = Instant::now() + Duration::from_millis(200);
    for _ in 0..2 {
        let left = grace.saturating_duration_since(Instant::now());
        if eof_rx.recv_timeout(left).is_err() {
            break;
        }
    }
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

fn spawn_reader(
    mut pipe: impl Read + std::os::fd::AsFd + Send + 'static,
    kind: FrameKind,
    id: u32,
    out: &Out,
    last_output: &Arc<AtomicU64>,
    started: Instant,
    eof: &mpsc::Sender<()>,
) {
    let out = out.clone();
    let last_output = last_output.clone();
    let eof = eof.clone();
    // A larger pipe lets a chatty step write on while we send a frame, and makes our
    // reads (and frames) larger: fewer wake-ups per byte. Best effort.
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe, PIPE_SIZE);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_FRAME];
        'outer: loop {
            let mut len = 0;
            // Block for the first bytes, then take whatever else is already there (heavy
            // output makes few large frames; a lone line goes out at once).
            loop {
                match pipe.read(&mut buf[len..]) {
                    Ok(0) if len == 0 => break 'outer,
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) if len == 0 => break 'outer,
                    Err(_) => break,
                }
                if len >= MAX_FRAME / 2 || !readable_now(&pipe) {
                    break;
                }
            }
            last_output.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            out.frame(kind, id, &buf[..len]);
        }
        let _ = eof.send(());
    });
}

/// Capacity asked for the pipes of a step's stdout and stderr (Linux's default is 64 KiB).
const PIPE_SIZE: usize = 1 << 20;

/// Whether a read would not block.
fn readable_now(fd: &impl std::os::fd::AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().contains(PollFlags::IN)
}
