//! Compile time of the five largest corpus configs (with their orbs) beside the time to
//! only parse the same YAML with the same parser (the floor): config text plus the
//! packed text of every orb in the corpus it may import.
//!
//! Run: `cargo bench -p gyre-config --bench compile`. Figures go to BENCHMARKS.md.

use criterion::{Criterion, criterion_group, criterion_main};
use gyre_config::{Options, compile, yaml};
use std::hint::black_box;
use std::path::{Path, PathBuf};

#[path = "orbs.rs"]
mod orbs;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

fn benches(c: &mut Criterion) {
    let (orbs, orb_texts) = orbs::packed_orbs(&corpus().join("orbs"));
    let opts = Options {
        allow_missing_orbs: true,
        ..Options::default()
    };
    let mut group = c.benchmark_group("corpus");
    for name in orbs::LARGEST {
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
