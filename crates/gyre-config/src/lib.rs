//! gyre-config: compiles CircleCI configs (2.0 and 2.1) exactly as CircleCI does.
//!
//! Pure: no IO, no async. Input is the config text, pipeline values and parameters and
//! an [`OrbSource`]; output is the processed config (the 2.0 shape `circleci config
//! process` prints), a typed [`Plan`], and located [`Diagnostic`]s. Nothing here panics
//! on user input (fuzzed: `fuzz/fuzz_targets/compile.rs`).
//!
//! ```
//! use gyre_config::{compile, Options, NoOrbs};
//! let out = compile("version: 2.1\njobs:\n  build:\n    docker: [{image: busybox}]\n    steps: [checkout]\n", &Options::default(), &NoOrbs);
//! assert!(!out.has_errors());
//! assert_eq!(out.plan.unwrap().workflows[0].jobs[0].name, "build");
//! ```

pub mod compile;
pub mod diag;
pub mod emit;
pub mod expr;
pub mod orbs;
pub mod pack;
pub mod params;
pub mod plan;
pub mod template;
pub mod yaml;

pub use compile::{Options, Version};
pub use diag::{Diagnostic, Severity, SourceMap, Span};
pub use orbs::{MemoryOrbs, NoOrbs, OrbError, OrbSource, OrbText, OrbVersion, UnpackedFile};
pub use plan::Plan;

/// Everything one compilation produced.
#[derive(Debug)]
pub struct Output {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    /// The processed config; `None` when there were errors.
    pub processed: Option<yaml::Node>,
    pub plan: Option<Plan>,
    /// `(as written, resolved)` for every registry orb.
    pub orb_resolutions: Vec<(String, String)>,
    pub version: Option<Version>,
}

impl Output {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// All diagnostics rendered for a terminal.
    pub fn render_diagnostics(&self) -> String {
        diag::render_all(&self.diagnostics, &self.sources)
    }

    /// The processed config as YAML, in the shape `circleci config process` prints:
    /// orb resolution comments, the config, then the original source as comments.
    pub fn processed_yaml(&self) -> Option<String> {
        let processed = self.processed.as_ref()?;
        let mut out = String::new();
        for (from, to) in &self.orb_resolutions {
            out.push_str(&format!("# Orb '{from}' resolved to '{to}'\n"));
        }
        out.push_str(&emit::to_yaml(processed));
        out.push_str("\n# Original config.yml file:\n");
        if let Some(src) = self.sources.get(diag::SourceId(0)) {
            for line in src.text.lines() {
                if line.is_empty() {
                    out.push_str("#\n");
                } else {
                    out.push_str("# ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        Some(out)
    }

    /// The processed config as JSON.
    pub fn processed_json(&self) -> Option<serde_json::Value> {
        self.processed.as_ref().map(emit::to_json)
    }
}

/// Compiles a config: parse, pipeline parameters, orbs, workflows, jobs, plan.
pub fn compile(text: &str, opts: &Options, orbs: &dyn OrbSource) -> Output {
    let compiled = compile::compile(text, opts, orbs);
    let mut rep = diag::Reporter::default();
    let plan = compiled
        .processed
        .as_ref()
        .map(|p| plan::build(&compiled.workflows, p, &mut rep));
    let mut diagnostics = compiled.diagnostics;
    let plan_failed = rep.error_count() > 0;
    diagnostics.extend(rep.diags);
    Output {
        sources: compiled.sources,
        diagnostics,
        processed: if plan_failed {
            None
        } else {
            compiled.processed
        },
        plan: if plan_failed { None } else { plan },
        orb_resolutions: compiled.orb_resolutions,
        version: compiled.version,
    }
}
