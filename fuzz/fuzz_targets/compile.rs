//! Fuzzes the whole compiler: YAML parsing, templating, orbs, workflows, the plan, and
//! the emitter. Invariants: nothing panics, and a processed config that compiled
//! re-parses to the same tree when emitted as YAML.
#![no_main]
use gyre_config::{MemoryOrbs, Options, compile, emit, yaml};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn orbs() -> &'static MemoryOrbs {
    static ORBS: OnceLock<MemoryOrbs> = OnceLock::new();
    ORBS.get_or_init(|| {
        let mut o = MemoryOrbs::default();
        o.insert(
            "acme/tools@1.2.3",
            "version: 2.1\nexecutors:\n  default:\n    parameters:\n      tag: {type: string, default: '1'}\n    docker: [{image: 'acme:<< parameters.tag >>'}]\ncommands:\n  greet:\n    parameters:\n      to: {type: string, default: x}\n    steps: [{run: echo << parameters.to >>}]\njobs:\n  test:\n    executor: default\n    steps: [checkout, greet]\n",
        );
        o
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (config, params) = text.split_once('\u{0}').unwrap_or((text, ""));
    let mut opts = Options::default();
    opts.budget.max_nodes = 200_000;
    if let Ok(serde_json::Value::Object(p)) = serde_json::from_str(params) {
        opts.pipeline_parameters = p;
    }
    let out = compile(config, &opts, orbs());
    let _ = out.render_diagnostics();
    if let Some(processed) = &out.processed {
        let emitted = emit::to_yaml(processed);
        let again = yaml::parse(&emitted, Default::default(), &Default::default())
            .unwrap_or_else(|e| panic!("emitted YAML does not parse: {e:?}\n{emitted}"));
        assert_eq!(emit::to_json(processed), emit::to_json(&again), "emit round trip:\n{emitted}");
        let _ = out.processed_yaml();
    }
});
