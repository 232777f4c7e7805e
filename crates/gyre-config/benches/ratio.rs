//! Compile time against the parse floor, interleaved in one process so that machine
//! noise hits both alike: for each of the five largest corpus configs, 15 rounds of
//! (parse ×20, compile ×20), then the median time per run and the median ratio.
//!
//! Run: `cargo bench -p gyre-config --bench ratio`. The criterion bench `compile` gives
//! the same figures with confidence intervals but runs the two one after the other.

use gyre_config::{MemoryOrbs, Options, compile, yaml};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

#[path = "orbs.rs"]
mod orbs;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
    let (mem, texts): (MemoryOrbs, Vec<String>) = orbs::packed_orbs(&root.join("orbs"));
    let opts = Options {
        allow_missing_orbs: true,
        ..Options::default()
    };
    println!(
        "{:<32} {:>10} {:>10} {:>7}",
        "config", "parse ms", "compile ms", "ratio"
    );
    for name in orbs::LARGEST {
        let text = std::fs::read_to_string(root.join("configs").join(name)).expect("config");
        let used: Vec<&String> = texts
            .iter()
            .zip(mem.orbs.keys())
            .filter(|(_, (ns, n, _))| text.contains(&format!("{ns}/{n}@")))
            .map(|(t, _)| t)
            .collect();
        let out = compile(&text, &opts, &mem);
        assert!(!out.has_errors(), "{name}:\n{}", out.render_diagnostics());
        let (mut parse, mut comp, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..15 {
            let t = Instant::now();
            for _ in 0..20 {
                let budget = yaml::Budget::default();
                black_box(
                    yaml::parse(black_box(&text), Default::default(), &budget).expect("parses"),
                );
                for o in &used {
                    black_box(yaml::parse(o, Default::default(), &budget).expect("orb parses"));
                }
            }
            let p = t.elapsed().as_secs_f64() * 1000.0 / 20.0;
            let t = Instant::now();
            for _ in 0..20 {
                black_box(compile(black_box(&text), &opts, &mem));
            }
            let c = t.elapsed().as_secs_f64() * 1000.0 / 20.0;
            parse.push(p);
            comp.push(c);
            ratio.push(c / p);
        }
        println!(
            "{name:<32} {:>10.2} {:>10.2} {:>7.2}",
            median(parse),
            median(comp),
            median(ratio)
        );
    }
}
