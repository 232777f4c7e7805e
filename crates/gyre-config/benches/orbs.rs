//! Shared by the benchmarks: the corpus orbs packed once, as a registry would serve them.

use gyre_config::{MemoryOrbs, UnpackedFile, diag::SourceMap, emit, pack};
use std::path::Path;

/// The five largest configs of the corpus.
pub const LARGEST: [&str; 5] = [
    "ethereum__solidity.yml",
    "hashicorp__nomad.yml",
    "DataDog__dd-trace-rb.yml",
    "huggingface__transformers.yml",
    "facebook__hermes.yml",
];

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

/// Every orb under `root` packed to text: the source and the texts, in the same order.
pub fn packed_orbs(root: &Path) -> (MemoryOrbs, Vec<String>) {
    let mut orbs = MemoryOrbs::default();
    for ns in std::fs::read_dir(root).expect("orbs") {
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
            let name = format!(
                "{}/{}@{}",
                ns.file_name().expect("name").to_string_lossy(),
                orb.file_name().expect("name").to_string_lossy(),
                version.trim().trim_start_matches('v')
            );
            orbs.insert(&name, emit::to_yaml(&node));
        }
    }
    // `MemoryOrbs` keeps its orbs sorted: return the texts in its order.
    let texts = orbs.orbs.values().cloned().collect();
    (orbs, texts)
}
