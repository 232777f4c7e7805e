//! Issue 3 figures (a)–(c), each a ratio measured within one run (see BENCHMARKS.md):
//!
//! - (a) per-step overhead: 200 `true` steps vs one step running the same 200 commands,
//!   Docker (Debian image) and machine executors;
//! - (b) a step printing 200 MB vs the same command into /dev/null, with peak memory;
//! - (c) save + restore of a 500 MB cache of many small files vs `tar czf` + `tar xzf`.
//!
//! `cargo bench -p gyre-executor --bench executor` (needs scripts/test-env.sh's dockerd
//! and images). `GYRE_BENCH_ONLY=a|b|c` runs one figure.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use gyre_executor::{Executor, LogChunk, LogSink, StepStatus, TaskStatus};
use gyre_protocol::{StepSpec, TaskSpec, When};

/// Records when each step started and finished, and how many bytes it printed.
#[derive(Default)]
struct TimingSink {
    started: Vec<Instant>,
    finished: Vec<Instant>,
    bytes: u64,
}

impl TimingSink {
    fn step(&self, idx: usize) -> Duration {
        self.finished[idx] - self.started[idx]
    }
}

impl LogSink for TimingSink {
    fn step_started(&mut self, _step: usize, _name: &str, _header: Option<&str>) {
        self.started.push(Instant::now());
    }
    fn chunk(&mut self, chunk: LogChunk) {
        self.bytes += chunk.bytes.len() as u64;
    }
    fn step_finished(&mut self, _step: usize, _status: StepStatus) {
        self.finished.push(Instant::now());
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn run_task(
    rt: &tokio::runtime::Runtime,
    config: gyre_executor::ExecutorConfig,
    task: &TaskSpec,
) -> TimingSink {
    rt.block_on(async {
        let executor = Executor::for_task(task, config).await.expect("executor");
        let mut sink = TimingSink::default();
        let outcome = executor.run(task, &mut sink).await.expect("run");
        assert_eq!(outcome.status, TaskStatus::Success, "{:?}", outcome.message);
        sink
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn step_overhead(
    rt: &tokio::runtime::Runtime,
    label: &str,
    make: impl Fn(Vec<StepSpec>) -> TaskSpec,
) {
    const N: usize = 200;
    let data = tempfile::tempdir().unwrap();
    let mut per_step = vec![];
    let mut ratios = vec![];
    for _ in 0..5 {
        let steps: Vec<StepSpec> = (0..N).map(|_| run("true")).collect();
        let many = run_task(rt, config("bench", data.path()), &make(steps));
        let many_total = many.finished[N - 1] - many.started[0];
        let one_script = vec!["true"; N].join("\n");
        let one = run_task(
            rt,
            config("bench", data.path()),
            &make(vec![run(&one_script)]),
        );
        let one_total = one.step(0);
        per_step.push((many_total.as_secs_f64() - one_total.as_secs_f64()) * 1000.0 / N as f64);
        ratios.push(many_total.as_secs_f64() / one_total.as_secs_f64());
    }
    // Context: what starting the shell alone costs here (host, same moment).
    let started = Instant::now();
    for _ in 0..N {
        let status = std::process::Command::new("/bin/bash")
            .args(["-eo", "pipefail", "-c", "true"])
            .status()
            .expect("bash");
        assert!(status.success());
    }
    let bash_ms = started.elapsed().as_secs_f64() * 1000.0 / N as f64;
    println!("(a) {label}: host `bash -eo pipefail -c true` alone costs {bash_ms:.2} ms right now");
    println!(
        "(a) {label}: {N} `true` steps vs one step running the {N} commands: overhead {:.2} ms/step (median of 5), ratio {:.1}x",
        median(per_step),
        median(ratios)
    );
}

fn big_output(rt: &tokio::runtime::Runtime, label: &str, make: impl Fn(Vec<StepSpec>) -> TaskSpec) {
    let data = tempfile::tempdir().unwrap();
    // 200.6 MB of lines (no SIGPIPE under `-o pipefail`, unlike `yes | head`).
    let print = "seq 1 23500000";
    // The floor of any capture: the same command into a pipe that `cat` empties into
    // /dev/null. Writing the bytes anywhere (a pipe, a file) costs the writer their copy.
    let mut task = make(vec![
        run(&format!("{print} > /dev/null")),
        run(print),
        run(&format!("{print} | cat > /dev/null")),
    ]);
    task.environment = vec![secret("SOME_TOKEN", "not-in-the-output-1234")];
    let mut ratios = vec![];
    let mut floors = vec![];
    let mut bytes = 0;
    for _ in 0..5 {
        let sink = run_task(rt, config("bench", data.path()), &task);
        let null = sink.step(0).as_secs_f64();
        ratios.push(sink.step(1).as_secs_f64() / null);
        floors.push(sink.step(2).as_secs_f64() / null);
        eprintln!(
            "(b) {label}: {:?} vs {:?}; through a pipe into cat: {:?}",
            sink.step(1),
            sink.step(0),
            sink.step(2)
        );
        bytes = sink.bytes;
    }
    println!(
        "(b) {label}: step printing 200 MB (received {} MB, masked) vs the same into /dev/null: ratio {:.2}x (median of 5); `| cat > /dev/null` {:.2}x; peak RSS of the bench process {:.0} MiB",
        bytes / 1_000_000,
        median(ratios),
        median(floors),
        peak_rss_mib()
    );
}

/// 500 MB in 50 000 files of 10 kB of pseudo-random letters (compressible like text).
fn make_tree(root: &std::path::Path) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n{}();=";
    for dir in 0..500 {
        let d = root.join(format!("pkg{dir:03}"));
        std::fs::create_dir_all(&d).unwrap();
        for file in 0..100 {
            let mut bytes = Vec::with_capacity(10_000);
            for _ in 0..10_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Skewed choice: like source text, some letters far more frequent.
                let idx = ((state % 71) * (state >> 60) / 16) as usize % alphabet.len();
                bytes.push(alphabet[idx]);
            }
            std::fs::write(d.join(format!("f{file:03}.txt")), bytes).unwrap();
        }
    }
}

fn cache_vs_tar(rt: &tokio::runtime::Runtime) {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let tree = home.path().join("project/deps");
    make_tree(&tree);
    let clear = if std::env::var_os("GYRE_BENCH_RM").is_some() {
        "rm -rf" // `rm -rf deps ../x` removes both, the second never exists
    } else {
        "mv"
    };
    let steps = vec![
        StepSpec::SaveCache {
            name: None,
            key: "bench-{{ epoch }}".into(),
            paths: vec!["deps".into()],
            when: When::OnSuccess,
        },
        // Moved away, not deleted: right after 50 000 deletions ext4 spends most of the
        // next creations scanning for recently deleted inodes (`recently_deleted`), which
        // is not what a fresh job's restore sees (set GYRE_BENCH_RM=1 to measure that).
        run(&format!("{clear} deps ../deps-saved")),
        StepSpec::RestoreCache {
            name: None,
            keys: vec!["bench-".into()],
        },
        run("tar czf ../deps.tgz deps"),
        run(&format!("{clear} deps ../deps-restored")),
        run("tar xzf ../deps.tgz && rm ../deps.tgz && test -f deps/pkg499/f099.txt"),
    ];
    let task = machine_task(steps);
    let sink = run_task(
        rt,
        config("bench", data.path()).machine_home(home.path()),
        &task,
    );
    let ours = sink.step(0) + sink.step(2);
    let tar = sink.step(3) + sink.step(5);
    let size: u64 = std::fs::read_dir(data.path().join("caches"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    println!(
        "(c) machine: save_cache + restore_cache of 500 MB / 50 000 files: {:.2} s + {:.2} s (archive {} MB); tar czf + tar xzf: {:.2} s + {:.2} s; speed-up {:.1}x",
        sink.step(0).as_secs_f64(),
        sink.step(2).as_secs_f64(),
        size / 1_000_000,
        sink.step(3).as_secs_f64(),
        sink.step(5).as_secs_f64(),
        tar.as_secs_f64() / ours.as_secs_f64()
    );
}

fn main() {
    // `cargo test --benches` and `cargo bench -- --list` must not run the figures.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let only = std::env::var("GYRE_BENCH_ONLY").unwrap_or_default();
    let rt = runtime();
    if only.is_empty() || only == "a" {
        step_overhead(&rt, "docker (Debian image, bash)", |steps| {
            docker_task(&[DEBIAN], steps)
        });
        step_overhead(&rt, "machine (host bash)", machine_task);
    }
    if only.is_empty() || only == "b" {
        big_output(&rt, "docker", |steps| docker_task(&[DEBIAN], steps));
        big_output(&rt, "machine", machine_task);
    }
    if only.is_empty() || only == "c" {
        cache_vs_tar(&rt);
    }
}
