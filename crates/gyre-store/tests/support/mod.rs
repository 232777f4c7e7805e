//! The two engines the store suite runs on: SQLite in a temp file, and PostgreSQL in a
//! throwaway cluster that this test binary starts once (on a free loopback port, in a
//! temp dir) and that stops when the binary exits. Each test gets a fresh database.
//!
//! PostgreSQL's binaries come from `GYRE_TEST_PG_BIN`, else
//! `/usr/lib/postgresql/15/bin` (Debian's `postgresql-15`; `scripts/test-env.sh`
//! installs it). As root, the cluster runs as the `postgres` user through `runuser`.
//! A missing PostgreSQL fails the tests: they are never skipped.

use gyre_store::Store;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A store on a fresh database, and what keeps that database alive.
pub struct TestDb {
    pub store: Store,
    /// The database URL (for servers started by tests).
    #[allow(dead_code)] // read by crates/gyre/tests/server_e2e.rs, which includes this file
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A migrated store on a new SQLite file.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}?mode=rwc", dir.path().join("gyre.db").display());
    let store = Store::connect(&url).await.expect("connect to SQLite");
    store.migrate().await.expect("migrate SQLite");
    TestDb {
        store,
        url,
        _dir: Some(dir),
    }
}

/// A migrated store on a new database of the shared PostgreSQL cluster.
pub async fn postgres() -> TestDb {
    static N: AtomicU32 = AtomicU32::new(0);
    let cluster = cluster();
    let name = format!("gyre_test_{}", N.fetch_add(1, Ordering::Relaxed));
    let out = Command::new(cluster.bin.join("createdb"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            "postgres",
        ])
        .arg(&name)
        .output()
        .expect("run createdb");
    assert!(
        out.status.success(),
        "createdb {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port);
    let store = Store::connect(&url).await.expect("connect to PostgreSQL");
    store.migrate().await.expect("migrate PostgreSQL");
    TestDb {
        store,
        url,
        _dir: None,
    }
}

struct Cluster {
    bin: PathBuf,
    port: u16,
    /// The supervising shell: it stops the cluster and removes its directory when our
    /// end of its stdin closes, i.e. when this process exits, however it exits.
    _supervisor: Child,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster)
}

fn start_cluster() -> Cluster {
    let bin = std::env::var_os("GYRE_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(
        bin.join("postgres").exists(),
        "PostgreSQL not found in {} (set GYRE_TEST_PG_BIN, or run scripts/test-env.sh)",
        bin.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("gyre-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let as_root = id(&["-u"]) == "0";
    if as_root {
        let uid = id(&["-u", "postgres"]).parse().expect("postgres uid");
        let gid = id(&["-g", "postgres"]).parse().expect("postgres gid");
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster dir");
    }
    let data = dir.join("data");
    let mut initdb = pg_command(as_root, &bin, "initdb");
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
        .args(["--no-locale"]);
    // Run from the cluster dir: the `postgres` user may not be able to enter ours.
    let out = initdb.current_dir(&dir).output().expect("run initdb");
    assert!(
        out.status.success(),
        "initdb: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    let runuser = if as_root {
        "runuser -u postgres -- "
    } else {
        ""
    };
    // $1 bin dir, $2 data dir, $3 cluster dir, $4 port.
    let script = format!(
        r#"{runuser}"$1/postgres" -D "$2" -p "$4" -k "$3" -c listen_addresses=127.0.0.1 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=300 </dev/null >"$3/postgres.log" 2>&1 &
           read _ || true
           {runuser}"$1/pg_ctl" -D "$2" stop -m immediate >/dev/null 2>&1
           rm -rf "$3""#
    );
    let mut supervisor = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&bin)
        .arg(&data)
        .arg(&dir)
        .arg(port.to_string())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start postgres");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .expect("run pg_isready");
        if ready.success() {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            // Let the supervisor clean up before we fail.
            if let Some(mut stdin) = supervisor.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = supervisor.wait();
            panic!("PostgreSQL did not start on port {port} within 30 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Cluster {
        bin,
        port,
        _supervisor: supervisor,
    }
}

fn pg_command(as_root: bool, bin: &Path, tool: &str) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn id(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("run id");
    assert!(out.status.success(), "id {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local addr").port()
}
