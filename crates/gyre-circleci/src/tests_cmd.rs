//! `circleci tests glob|split|run` (spec §9).
//!
//! Timings for `--split-by=timings` come from `--timings-file`, else from
//! `$CIRCLE_INTERNAL_TASK_DATA/timings.json`, which the executor writes from the test
//! results stored by earlier runs of the same job: `{"filename": {NAME: SECONDS}, "classname":
//! {...}, "testname": {...}}`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Historical timings, in seconds, by kind.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Timings {
    pub filename: HashMap<String, f64>,
    pub classname: HashMap<String, f64>,
    pub testname: HashMap<String, f64>,
}

pub fn glob_main(patterns: &[&str]) -> i32 {
    let mut found = std::collections::BTreeSet::new();
    for pattern in patterns {
        for expanded in expand_braces(pattern) {
            walk_glob(&expanded, &mut found);
        }
    }
    let mut out = std::io::stdout().lock();
    for path in found {
        let _ = writeln!(out, "{path}");
    }
    0
}

/// `a{b,c}d` -> `abd`, `acd` (nested braces supported).
fn expand_braces(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_owned()];
    };
    let mut depth = 0;
    let mut close = None;
    let mut commas = vec![];
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![pattern.to_owned()];
    };
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let mut out = vec![];
    for pair in bounds.windows(2) {
        let alternative = &pattern[pair[0] + 1..pair[1]];
        let joined = format!("{}{alternative}{}", &pattern[..open], &pattern[close + 1..]);
        out.extend(expand_braces(&joined));
    }
    out
}

fn walk_glob(pattern: &str, found: &mut std::collections::BTreeSet<String>) {
    let parts: Vec<&str> = pattern.split('/').collect();
    let literal = parts
        .iter()
        .take_while(|p| !p.contains(['*', '?', '[']))
        .count();
    if literal == parts.len() {
        if Path::new(pattern).exists() {
            found.insert(pattern.to_owned());
        }
        return;
    }
    let base = parts[..literal].join("/");
    let root = if base.is_empty() {
        ".".to_owned()
    } else {
        base.clone()
    };
    let rest = &parts[literal..];
    let mut stack = vec![(root, String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel_path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let full = format!("{dir}/{name}");
            let segments: Vec<&str> = rel_path.split('/').collect();
            if match_segments(rest, &segments) {
                let shown = if base.is_empty() {
                    rel_path.clone()
                } else {
                    format!("{base}/{rel_path}")
                };
                found.insert(shown);
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((full, rel_path));
            }
        }
    }
}

fn match_segments(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            match_segments(&pattern[1..], path)
                || (!path.is_empty() && match_segments(pattern, &path[1..]))
        }
        (Some(p), Some(s)) => {
            match_name(p.as_bytes(), s.as_bytes()) && match_segments(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// Matches one path segment: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`/`[^x]`.
pub fn match_name(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| match_name(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && match_name(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|i| i + 1) else {
                return s.first() == Some(&b'[') && match_name(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let mut class = &p[1..end];
            let negate = matches!(class.first(), Some(b'!' | b'^'));
            if negate {
                class = &class[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && match_name(&p[end + 1..], &s[1..])
        }
        Some(&c) => s.first() == Some(&c) && match_name(&p[1..], &s[1..]),
    }
}

/// Flags shared by `split` and `run`.
#[derive(Debug)]
struct SplitArgs {
    split_by: String,
    timings_type: String,
    index: usize,
    total: usize,
    timings_file: Option<String>,
    time_default: f64,
    show_counts: bool,
    command: Option<String>,
    file: Option<String>,
}

fn parse_split_args(args: &[&str]) -> Result<SplitArgs, String> {
    let env_num = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut out = SplitArgs {
        split_by: "name".to_owned(),
        timings_type: "autodetect".to_owned(),
        index: env_num("CIRCLE_NODE_INDEX", 0),
        total: env_num("CIRCLE_NODE_TOTAL", 1),
        timings_file: None,
        time_default: 0.0,
        show_counts: false,
        command: None,
        file: None,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i)
                .map(|v| v.to_string())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag {
            "--split-by" => out.split_by = value()?,
            "--timings-type" => out.timings_type = value()?,
            "--index" => out.index = value()?.parse().map_err(|_| "--index: not a number")?,
            "--total" => out.total = value()?.parse().map_err(|_| "--total: not a number")?,
            "--timings-file" => out.timings_file = Some(value()?),
            "--time-default" => out.time_default = parse_duration(&value()?)?,
            "--command" => out.command = Some(value()?),
            "--show-counts" => out.show_counts = true,
            "--verbose" => {}
            _ if !arg.starts_with("--") && out.file.is_none() => out.file = Some(arg.to_owned()),
            _ => return Err(format!("unknown flag {arg}")),
        }
        i += 1;
    }
    if out.total == 0 || out.index >= out.total {
        return Err(format!(
            "--index {} is not below --total {}",
            out.index, out.total
        ));
    }
    Ok(out)
}

/// `1.5s`, `200ms`, `2m`, or plain seconds.
fn parse_duration(text: &str) -> Result<f64, String> {
    let bad = || format!("bad duration {text:?}");
    let (num, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    num.parse::<f64>().map(|n| n * scale).map_err(|_| bad())
}

pub fn split_main(args: &[&str]) -> i32 {
    match split_main_inner(args) {
        Ok(items) => {
            let mut out = std::io::stdout().lock();
            for item in items {
                let _ = writeln!(out, "{item}");
            }
            0
        }
        Err(err) => {
            eprintln!("circleci tests split: {err}");
            1
        }
    }
}

fn read_items(file: Option<&str>) -> Result<Vec<String>, String> {
    let mut text = String::new();
    match file {
        Some(path) => {
            text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
        }
    }
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

fn split_main_inner(args: &[&str]) -> Result<Vec<String>, String> {
    let args = parse_split_args(args)?;
    let items = read_items(args.file.as_deref())?;
    Ok(select(&args, items))
}

fn select(args: &SplitArgs, items: Vec<String>) -> Vec<String> {
    let weights: Option<Vec<f64>> = match args.split_by.as_str() {
        "filesize" => Some(
            items
                .iter()
                .map(|i| std::fs::metadata(i).map(|m| m.len() as f64).unwrap_or(0.0))
                .collect(),
        ),
        "timings" => timing_weights(args, &items),
        _ => None,
    };
    let buckets = match weights {
        Some(weights) => split_weighted(&items, &weights, args.total),
        None => split_by_name(&items, args.total),
    };
    let mine = buckets.into_iter().nth(args.index).unwrap_or_default();
    if args.show_counts {
        eprintln!(
            "node {}/{}: {} of {} items",
            args.index,
            args.total,
            mine.len(),
            items.len()
        );
    }
    mine
}

fn timing_weights(args: &SplitArgs, items: &[String]) -> Option<Vec<f64>> {
    let path = args.timings_file.clone().or_else(|| {
        std::env::var("CIRCLE_INTERNAL_TASK_DATA")
            .ok()
            .map(|dir| format!("{dir}/timings.json"))
    });
    let timings: Option<Timings> = path
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let kind = match args.timings_type.as_str() {
        "filename" | "file" => "filename",
        "classname" => "classname",
        "testname" | "name" => "testname",
        _ if items.iter().any(|i| i.contains('/') || i.contains('.')) => "filename",
        _ => "classname",
    };
    let table = timings.as_ref().map(|t| match kind {
        "filename" => &t.filename,
        "classname" => &t.classname,
        _ => &t.testname,
    });
    let Some(table) = table.filter(|t| !t.is_empty()) else {
        eprintln!("Error auto-detecting timing type, falling back to weighting by name.");
        return None;
    };
    let lookup = |item: &str| {
        table
            .get(item)
            .or_else(|| table.get(item.trim_start_matches("./")))
            .copied()
    };
    let known: Vec<f64> = items.iter().filter_map(|i| lookup(i)).collect();
    let default = if args.time_default > 0.0 || known.is_empty() {
        args.time_default
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    Some(items.iter().map(|i| lookup(i).unwrap_or(default)).collect())
}

/// Sorted items dealt round-robin.
fn split_by_name(items: &[String], total: usize) -> Vec<Vec<String>> {
    let mut sorted = items.to_vec();
    sorted.sort();
    let mut buckets = vec![vec![]; total];
    for (i, item) in sorted.into_iter().enumerate() {
        buckets[i % total].push(item);
    }
    buckets
}

/// Heaviest first into the lightest bucket (ties: lowest index, then name order).
fn split_weighted(items: &[String], weights: &[f64], total: usize) -> Vec<Vec<String>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        weights[b]
            .total_cmp(&weights[a])
            .then(items[a].cmp(&items[b]))
    });
    let mut load = vec![0.0f64; total];
    let mut buckets: Vec<BTreeMap<usize, String>> = vec![BTreeMap::new(); total];
    for i in order {
        let (lightest, _) = load
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(&b.0)))
            .unwrap_or((0, &0.0));
        load[lightest] += weights[i];
        buckets[lightest].insert(i, items[i].clone());
    }
    buckets
        .into_iter()
        .map(|b| b.into_values().collect())
        .collect()
}

pub fn run_main(args: &[&str]) -> i32 {
    let parsed = match parse_split_args(args) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("circleci tests run: {err}");
            return 2;
        }
    };
    let Some(command) = parsed.command.clone() else {
        eprintln!("circleci tests run: --command is required");
        return 2;
    };
    let items = match read_items(None) {
        Ok(items) => items,
        Err(err) => {
            eprintln!("circleci tests run: {err}");
            return 1;
        }
    };
    if items.is_empty() {
        eprintln!(
            "No test names found in input source. If you were expecting test names, please check your input source."
        );
    }
    let mine = select(&parsed, items);
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&command)
        .stdin(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            eprintln!("circleci tests run: cannot start /bin/sh: {err}");
            return 1;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(mine.join("\n").as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    match child.wait() {
        Ok(status) => status.code().unwrap_or(1),
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(match_name(b"*.rs", b"main.rs"));
        assert!(!match_name(b"*.rs", b"main.rb"));
        assert!(match_name(b"t[0-9]?", b"t1x"));
        assert!(!match_name(b"t[!0-9]", b"t1"));
        assert!(match_segments(
            &["**", "*_test.go"],
            &["a", "b", "x_test.go"]
        ));
        assert!(match_segments(&["**", "*_test.go"], &["x_test.go"]));
        assert!(!match_segments(
            &["*", "*_test.go"],
            &["a", "b", "x_test.go"]
        ));
        assert_eq!(
            expand_braces("a/{b,c{d,e}}/f"),
            ["a/b/f", "a/cd/f", "a/ce/f"]
        );
    }

    #[test]
    fn splits_by_weight_and_name() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(split_by_name(&items, 2), [vec!["a", "c"], vec!["b", "d"]]);
        let buckets = split_weighted(&items, &[10.0, 1.0, 1.0, 8.0], 2);
        assert_eq!(buckets, [vec!["a"], vec!["b", "c", "d"]]);
        assert_eq!(parse_duration("1.5s"), Ok(1.5));
        assert_eq!(parse_duration("200ms"), Ok(0.2));
    }
}
