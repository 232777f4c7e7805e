//! The in-job `circleci` binary (spec §9), also installed as `circleci-agent`.
//!
//! `tests glob|split|run`, `step halt` (alias `task halt`), `env subst`, `--version`, and
//! the hidden `__agent` mode the executor uses to run steps. Built static with
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p gyre-circleci
//! --target x86_64-unknown-linux-gnu`; it never does NSS lookups.

mod agent;
mod subst;
mod tests_cmd;

use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = run(&args);
    std::process::exit(code);
}

const USAGE: &str = "usage: circleci <command>\n\
  tests glob PATTERN...\n\
  tests split [--split-by=name|filesize|timings] [--timings-type=T] [--index=N] [--total=N] [FILE]\n\
  tests run --command CMD [split flags]\n\
  step halt\n\
  env subst [STRING]\n\
  --version";

fn run(args: &[String]) -> i32 {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["__agent"] => agent::main(None),
        ["__agent", "--frames", path] => agent::main(Some(path)),
        ["__keepalive"] => loop {
            // PID 1 of a primary container whose image entrypoint is suppressed (§11.1).
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        ["step" | "task", "halt"] => halt(),
        ["env", "subst", rest @ ..] => env_subst(rest),
        ["tests", "glob", patterns @ ..] => tests_cmd::glob_main(patterns),
        ["tests", "split", rest @ ..] => tests_cmd::split_main(rest),
        ["tests", "run", rest @ ..] => tests_cmd::run_main(rest),
        ["--version", ..] | ["version"] => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            0
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

fn halt() -> i32 {
    let Some(dir) = std::env::var_os("CIRCLE_INTERNAL_TASK_DATA") else {
        eprintln!("circleci step halt: CIRCLE_INTERNAL_TASK_DATA is not set (not in a job?)");
        return 1;
    };
    let file = std::path::Path::new(&dir).join("halt");
    match std::fs::write(&file, b"") {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("circleci step halt: cannot write {}: {err}", file.display());
            1
        }
    }
}

fn env_subst(rest: &[&str]) -> i32 {
    let input = match rest {
        [text] => text.to_string(),
        [] => {
            let mut text = String::new();
            if let Err(err) = std::io::stdin().read_to_string(&mut text) {
                eprintln!("circleci env subst: cannot read stdin: {err}");
                return 1;
            }
            text
        }
        _ => {
            eprintln!("usage: circleci env subst [STRING]");
            return 2;
        }
    };
    let output = subst::substitute(&input, |name| std::env::var(name).ok());
    print!("{output}");
    0
}
