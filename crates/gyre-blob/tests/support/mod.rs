//! Test backends: a temp directory, and a real `s3s-fs` server on a free loopback port,
//! one per test. A missing `s3s-fs` binary fails the test (scripts/test-env.sh installs
//! it); it is never skipped.

use gyre_blob::{BlobStore, Location};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "gyre-test-key";
const SECRET_KEY: &str = "gyre-test-secret";
const BUCKET: &str = "gyre-test";

/// A store and what keeps its backend alive.
pub struct TestStore {
    pub store: BlobStore,
    /// The store's URL (for servers started by tests).
    #[allow(dead_code)] // read by crates/gyre/tests/server_e2e.rs, which includes this file
    pub url: String,
    _dir: tempfile::TempDir,
    _server: Option<Server>,
}

pub fn local() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().join("blobs").display());
    TestStore {
        store: BlobStore::open(&url).expect("open local store"),
        url,
        _dir: dir,
        _server: None,
    }
}

pub fn s3() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("s3");
    std::fs::create_dir_all(root.join(BUCKET)).expect("bucket dir");
    let server = Server::start(&root);
    // A prefix inside the bucket, so prefix handling is exercised too.
    let url = format!(
        "s3://{BUCKET}/tenant/one?endpoint=http://{}&region=us-east-1&access_key_id={ACCESS_KEY}&secret_access_key={SECRET_KEY}",
        server.addr
    );
    let Location::S3(config) = Location::parse_with_env(&url, |_| None).expect("parse") else {
        panic!("{url} is not an S3 URL");
    };
    TestStore {
        store: BlobStore::s3(config).expect("open S3 store"),
        url,
        _dir: dir,
        _server: Some(server),
    }
}

/// A running `s3s-fs`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(root: &std::path::Path) -> Server {
        let binary = find_s3s_fs();
        let mut last_error = String::new();
        // A free port can be taken between our probe and the server's bind: retry.
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("probe a free port")
                .port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let mut child = Command::new(&binary)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Server { child, addr };
                }
                if let Some(status) = child.try_wait().expect("poll s3s-fs") {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        use std::io::Read;
                        let _ = pipe.read_to_string(&mut stderr);
                    }
                    last_error = format!("s3s-fs exited with {status}: {stderr}");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("s3s-fs did not listen on {addr} within 20 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start s3s-fs: {last_error}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s3s-fs` on PATH, else in `$CARGO_HOME/bin` or `~/.cargo/bin`.
fn find_s3s_fs() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(home).join("bin/s3s-fs"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/s3s-fs"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs not found on PATH, in $CARGO_HOME/bin or ~/.cargo/bin; install it with \
                 `cargo install --locked s3s-fs --version 0.14.1 --features binary` \
                 (scripts/test-env.sh does)"
            )
        })
}
