//! Compile time of the five largest corpus configs (with their orbs) beside the time to
//! only parse the same YAML with the same parser (the floor): config text plus the
//! packed text of every orb in the corpus it may import.
//!
//! Run: `cargo bench -p gyre-config --bench compile`. Figures go to BENCHMARKS.md.

use criterion::{Criterion, criterion_group, criterion_main};
use gyre_config::{MemoryOrbs, Options, UnpackedFile, compile, diag::SourceMap, emit, pack, yaml};
use std::hint::black_box;
use std::path::{Path, PathBuf};

const LARGEST: [&str; 5] = [
    "ethereum__solidity.yml",
    "hashicorp__nomad.yml",
    "DataDog__dd-trace-rb.yml",
    "huggingface__transformers.yml",
    "facebook__hermes.yml",
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

fn read_tree(base: &Path, dir: &Path, out: &mut Vec<UnpackedFile>) {
    for entry in std::fs::read_dir(dir).expect("orb dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            read_tree(base, &path, out);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            let rel = path
                .strip_prefix(base)
                .expect("below base")
                .to_string_lossy()
                .replace('\\', "/");
            out.push(UnpackedFile {
                path: rel,
                display: path.display().to_string(),
                text,
            });
        }
    }
}

/// The corpus orbs, packed once, as a registry would serve them.
fn packed_orbs() -> (MemoryOrbs, Vec<String>) {
    let mut orbs = MemoryOrbs::default();
    let mut texts = Vec::new();
    let root = corpus().join("orbs");
    for ns in std::fs::read_dir(&root).expect("orbs") {
        let ns = ns.expect("entry").path();
        if !ns.is_dir() {
            continue;
        }
        for orb in std::fs::read_dir(&ns).expect("namespace") {
            let orb = orb.expect("entry").path();
            let version = std::fs::read_to_string(orb.join("VERSION")).expect("VERSION");
            let mut files = Vec::new();
            read_tree(&orb.join("src"), &orb.join("src"), &mut files);
            let mut sources = SourceMap::default();
            let node = pack::pack(&files, &mut sources, &Default::default()).expect("orb packs");
            let text = emit::to_yaml(&node);
            let name = format!(
                "{}/{}@{}",
                ns.file_name().unwrap().to_string_lossy(),
                orb.file_name().unwrap().to_string_lossy(),
                version.trim().trim_start_matches('v')
            );
            orbs.insert(&name, text.clone());
            texts.push(text);
        }
    }
    (orbs, texts)
}

fn benches(c: &mut Criterion) {
    let (orbs, orb_texts) = packed_orbs();
    let opts = Options {
        allow_missing_orbs: true,
        ..Options::default()
    };
    let mut group = c.benchmark_group("corpus");
    for name in LARGEST {
        let text = std::fs::read_to_string(corpus().join("configs").join(name)).expect("config");
        let out = compile(&text, &opts, &orbs);
        assert!(
            !out.has_errors(),
            "{name} must compile:\n{}",
            out.render_diagnostics()
        );
        // The orbs this config imports, for the parse floor.
        let used: Vec<&String> = orb_texts
            .iter()
            .zip(orbs.orbs.keys())
            .filter(|(_, (ns, n, _))| text.contains(&format!("{ns}/{n}@")))
            .map(|(t, _)| t)
            .collect();
        group.bench_function(format!("{name}/compile"), |b| {
            b.iter(|| compile(black_box(&text), &opts, &orbs))
        });
        group.bench_function(format!("{name}/parse"), |b| {
            b.iter(|| {
                let budget = yaml::Budget::default();
                let n = yaml::parse(black_box(&text), Default::default(), &budget).expect("parses");
                for t in &used {
                    black_box(yaml::parse(t, Default::default(), &budget).expect("orb parses"));
                }
                n
            })
        });
    }
    group.finish();
}

criterion_group!(name = compile_benches; config = Criterion::default().sample_size(30); targets = benches);
criterion_main!(compile_benches);
