//! The compiler: a CircleCI config (2.0 or 2.1) → processed config (2.0 shape).
//!
//! Order (spec §1.4, §15): parse → version → pipeline parameters → orbs (pins may use
//! pipeline parameters) → workflows (when/unless, matrix, names, requires) → jobs
//! (parameters, executor merge, commands expanded with lexical scope, when/unless
//! steps, pre/post-steps). Every problem found becomes a located diagnostic; the
//! compiler goes on where it can so several errors are reported at once.

use crate::diag::{Diagnostic, Reporter, Severity, SourceMap, Span};
use crate::expr;
use crate::orbs::{self, OrbRef, OrbSource, OrbText, OrbVersion};
use crate::params::{self, Owner, ParamDecl, ParamType};
use crate::template::{self, Bindings, Pipeline, Scope};
use crate::yaml::{self, Budget, Key, Map, Node, Value};
use indexmap::IndexMap;
use std::rc::Rc;

mod imports;
mod jobs;
mod workflows;

pub use jobs::env_map;
use workflows::{condition_value, workflow_node};

/// Inputs besides the config text.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The name positions are reported under (`.circleci/config.yml`).
    pub file_name: String,
    /// Trigger-time pipeline parameter values.
    pub pipeline_parameters: serde_json::Map<String, serde_json::Value>,
    /// Pipeline values (`pipeline.git.branch` → value).
    pub pipeline_values: IndexMap<String, Value>,
    pub budget: Budget,
    /// Treat orbs the source does not hold as opaque: a warning instead of an error,
    /// and their jobs, commands and executors pass unchecked. For validating a config
    /// offline against an incomplete orb directory; pipelines never run this way.
    pub allow_missing_orbs: bool,
}

/// The config language version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V20,
    V21,
}

/// What the compiler produced.
#[derive(Debug)]
pub struct Compiled {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    /// The processed config (present when there are no errors).
    pub processed: Option<Node>,
    /// `(as written, resolved)` for each registry orb imported.
    pub orb_resolutions: Vec<(String, String)>,
    pub version: Option<Version>,
    /// Workflow invocations, for the typed plan.
    pub workflows: Vec<CompiledWorkflow>,
}

impl Compiled {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// A workflow after expansion.
#[derive(Clone, Debug)]
pub struct CompiledWorkflow {
    pub name: String,
    pub span: Span,
    pub jobs: Vec<Instance>,
    /// Legacy `triggers` (scheduled workflow), kept as written.
    pub triggers: Option<Node>,
    /// `max_auto_reruns` of the workflow, kept as written.
    pub max_auto_reruns: Option<Node>,
}

/// One job in a workflow after matrix expansion and naming.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Final, unique name in the workflow.
    pub name: String,
    /// Key of the concrete job in the processed `jobs:` (None for approvals).
    pub job: Option<String>,
    pub approval: bool,
    pub requires: Vec<(String, Vec<String>)>,
    pub filters: Option<Node>,
    pub context: Vec<String>,
    pub serial_group: Option<String>,
    pub span: Span,
    /// The matrix alias (default: the job's name) when this is a matrix instance.
    pub matrix_alias: Option<String>,
}

const RESERVED_INVOCATION_KEYS: &[&str] = &[
    "name",
    "requires",
    "context",
    "type",
    "filters",
    "matrix",
    "pre-steps",
    "post-steps",
    "serial-group",
    "override-with",
];

const BUILTIN_STEPS: &[&str] = &[
    "run",
    "checkout",
    "setup_remote_docker",
    "save_cache",
    "restore_cache",
    "store_artifacts",
    "store_test_results",
    "persist_to_workspace",
    "attach_workspace",
    "add_ssh_keys",
    "deploy",
    "install_signing_bundle",
];

/// Steps that may be written as a bare string.
const BARE_STEPS: &[&str] = &[
    "checkout",
    "setup_remote_docker",
    "add_ssh_keys",
    "install_signing_bundle",
];

const EXECUTOR_TYPES: &[&str] = &["docker", "machine", "macos", "windows"];

/// Marks a step already expanded where it was written (a steps argument), so that
/// splicing it into another scope does not resolve its name again (§2.4).
const EXPANDED_STEP: &str = "\u{0}expanded";
const EXECUTOR_KEYS: &[&str] = &[
    "docker",
    "machine",
    "macos",
    "windows",
    "resource_class",
    "shell",
    "working_directory",
    "environment",
];

pub const STATUSES: &[&str] = &["success", "failed", "canceled", "unauthorized", "not_run"];

/// A namespace of commands, executors and jobs: the config itself or one orb.
struct ScopeDef {
    commands: IndexMap<String, Rc<Node>>,
    executors: IndexMap<String, Rc<Node>>,
    jobs: IndexMap<String, Rc<Node>>,
    /// Where each element's name is written (`jobs/build`), for messages about it.
    job_keys: IndexMap<String, Span>,
    imports: IndexMap<String, usize>,
    /// Imports that failed, with why: an error only if an element of them is used.
    missing: IndexMap<String, String>,
    /// Unavailable orbs accepted unchecked (`allow_missing_orbs`).
    opaque: Vec<String>,
    /// A registry orb loaded at another version than pinned, under `allow_missing_orbs`:
    /// elements it lacks and argument mismatches are warnings.
    approximate: bool,
    is_orb: bool,
}

struct Compiler<'o> {
    rep: Reporter,
    sources: SourceMap,
    orb_source: &'o dyn OrbSource,
    budget: Budget,
    version: Version,
    pipeline: Pipeline,
    scopes: Vec<ScopeDef>,
    /// Loaded registry orbs: resolved reference → scope.
    loaded: IndexMap<String, usize>,
    orb_resolutions: Vec<(String, String)>,
    job_groups: IndexMap<String, Node>,
    out_jobs: IndexMap<String, Node>,
    allow_missing_orbs: bool,
    /// Commands being expanded, innermost last: `(scope, name)`.
    calls: Vec<(usize, String)>,
}

/// Compiles a config.
pub fn compile(text: &str, opts: &Options, orb_source: &dyn OrbSource) -> Compiled {
    let mut sources = SourceMap::default();
    let file_name = if opts.file_name.is_empty() {
        ".circleci/config.yml".to_string()
    } else {
        opts.file_name.clone()
    };
    let id = sources.add(file_name, text);
    let mut c = Compiler {
        rep: Reporter::default(),
        sources,
        orb_source,
        budget: opts.budget.clone(),
        version: Version::V21,
        pipeline: Pipeline {
            values: opts.pipeline_values.clone(),
            parameters: Bindings::new(),
        },
        scopes: Vec::new(),
        loaded: IndexMap::new(),
        orb_resolutions: Vec::new(),
        job_groups: IndexMap::new(),
        out_jobs: IndexMap::new(),
        allow_missing_orbs: opts.allow_missing_orbs,
        calls: Vec::new(),
    };
    let root = match yaml::parse(text, id, &c.budget) {
        Ok(root) => root,
        Err(d) => {
            c.rep.push(d);
            return c.finish(None, None, Vec::new());
        }
    };
    let processed = c.run(&root, &opts.pipeline_parameters);
    let version = Some(c.version);
    let (processed, workflows) = match processed {
        Some((p, w)) => (Some(p), w),
        None => (None, Vec::new()),
    };
    c.finish(processed, version, workflows)
}

impl Compiler<'_> {
    fn finish(
        self,
        processed: Option<Node>,
        version: Option<Version>,
        workflows: Vec<CompiledWorkflow>,
    ) -> Compiled {
        let has_errors = self.rep.error_count() > 0;
        Compiled {
            sources: self.sources,
            diagnostics: self.rep.diags,
            processed: if has_errors { None } else { processed },
            orb_resolutions: self.orb_resolutions,
            version,
            workflows: if has_errors { Vec::new() } else { workflows },
        }
    }

    fn error(&mut self, span: Span, msg: impl Into<String>) {
        self.rep.error(Some(span), msg);
    }

    fn templating(&self) -> bool {
        self.version == Version::V21
    }

    fn run(
        &mut self,
        root: &Node,
        trigger: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<(Node, Vec<CompiledWorkflow>)> {
        let Some(top) = root.as_map() else {
            self.error(
                root.span,
                format!("config must be a map, found {}", root.type_name()),
            );
            return None;
        };
        self.version = match top.get("version") {
            None => {
                self.error(root.span, "config has no `version`: use `version: 2.1`");
                return None;
            }
            Some(v) => match v.scalar_text().as_deref() {
                Some("2.1") => Version::V21,
                Some("2" | "2.0") => Version::V20,
                _ => {
                    self.error(
                        v.span,
                        format!(
                            "unsupported config version '{}': use 2, 2.0 or 2.1",
                            v.scalar_text().unwrap_or_else(|| v.type_name().into())
                        ),
                    );
                    return None;
                }
            },
        };
        if self.version == Version::V20 {
            for key in ["orbs", "commands", "executors", "parameters", "job-groups"] {
                if let Some((k, _)) = top.get_entry(key) {
                    let span = k.span;
                    self.error(span, format!("`{key}` requires `version: 2.1`"));
                }
            }
        }
        if let Some(setup) = top.get("setup")
            && !matches!(setup.value, Value::Bool(_))
        {
            self.error(setup.span, "`setup` must be true or false");
        }

        // Pipeline parameters.
        if self.templating() {
            let decls = params::parse_decls(top.get("parameters"), Owner::Pipeline, &mut self.rep);
            self.bind_pipeline_parameters(&decls, trigger);
        } else if !trigger.is_empty() {
            let names: Vec<&str> = trigger.keys().map(String::as_str).collect();
            self.rep.error(
                None,
                format!("Unexpected argument(s): {}", names.join(", ")),
            );
        }

        // The config's own scope, then its orbs.
        let root_scope = self.scope_from(top, false);
        if self.templating() {
            self.import_orbs(root_scope, top.get("orbs"), 0, true);
        }
        if let Some(groups) = top.get("job-groups").and_then(Node::as_map) {
            self.job_groups = groups
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
        }

        let workflows = self.workflows(top)?;
        let mut out = Map::default();
        let span = root.span;
        out.insert(key("version", span), Node::new(Value::Int(2), span));
        // A setup config stays one after processing (§5.14).
        if let Some((k, v)) = top.get_entry("setup")
            && v.value == Value::Bool(true)
        {
            out.insert(k.clone(), v.clone());
        }
        let jobs = Map {
            entries: self
                .out_jobs
                .drain(..)
                .map(|(k, v)| (key(&k, v.span), v))
                .collect(),
        };
        out.insert(key("jobs", span), Node::new(Value::Map(jobs), span));
        let mut wf_map = Map::default();
        wf_map.insert(key("version", span), Node::new(Value::Int(2), span));
        for wf in &workflows {
            wf_map.insert(key(&wf.name, wf.span), workflow_node(wf));
        }
        out.insert(key("workflows", span), Node::new(Value::Map(wf_map), span));
        Some((Node::new(Value::Map(out), span), workflows))
    }

    fn bind_pipeline_parameters(
        &mut self,
        decls: &[ParamDecl],
        trigger: &serde_json::Map<String, serde_json::Value>,
    ) {
        let unexpected: Vec<&str> = trigger
            .keys()
            .filter(|k| !decls.iter().any(|d| &d.name == *k))
            .map(String::as_str)
            .collect();
        if !unexpected.is_empty() {
            self.rep.error(
                None,
                format!("Unexpected argument(s): {}", unexpected.join(", ")),
            );
        }
        for d in decls {
            let value = match trigger.get(&d.name) {
                Some(v) => {
                    let node = json_to_node(v, d.span);
                    if let Err(expected) = params::check(&d.ty, &node) {
                        let shown = match v {
                            serde_json::Value::String(s) => format!("\"{s}\""),
                            other => other.to_string(),
                        };
                        self.rep.error(
                            None,
                            format!(
                                "Type error for argument {}: expected {expected}, actual value: {shown} (type {})",
                                d.name,
                                params::value_type(&node.value)
                            ),
                        );
                        // The default stands in, so uses of the parameter do not cascade.
                        d.default.clone().unwrap_or(Node::new(Value::Null, d.span))
                    } else {
                        node
                    }
                }
                None => d.default.clone().unwrap_or(Node::new(Value::Null, d.span)),
            };
            self.pipeline.parameters.insert(d.name.clone(), value);
        }
    }

    /// Registers the commands, executors and jobs of a config or orb as a new scope.
    fn scope_from(&mut self, top: &Map, is_orb: bool) -> usize {
        let section = |name: &str, rep: &mut Reporter| -> IndexMap<String, Rc<Node>> {
            match top.get(name) {
                None => IndexMap::new(),
                Some(n) if n.is_null() => IndexMap::new(),
                Some(n) => match n.as_map() {
                    Some(m) => m
                        .iter()
                        .map(|(k, v)| (k.to_string(), Rc::new(v.clone())))
                        .collect(),
                    None => {
                        rep.error(
                            Some(n.span),
                            format!("`{name}` must be a map, found {}", n.type_name()),
                        );
                        IndexMap::new()
                    }
                },
            }
        };
        let commands = section("commands", &mut self.rep);
        let executors = section("executors", &mut self.rep);
        let jobs = section("jobs", &mut self.rep);
        let job_keys = ["jobs", "commands", "executors"]
            .iter()
            .filter_map(|section| Some((section, top.get(section)?.as_map()?)))
            .flat_map(|(section, m)| {
                m.entries
                    .iter()
                    .map(move |(k, _)| (format!("{section}/{}", k.name), k.span))
            })
            .collect();
        self.scopes.push(ScopeDef {
            commands,
            executors,
            jobs,
            job_keys,
            imports: IndexMap::new(),
            missing: IndexMap::new(),
            opaque: Vec::new(),
            approximate: false,
            is_orb,
        });
        self.scopes.len() - 1
    }

    /// Finds an element by name (`x` or `alias/x`) as seen from `scope`.
    fn find(&self, scope: usize, name: &str, kind: Kind) -> Option<(usize, Rc<Node>)> {
        // `alias/x` names an orb's element; a name with `/` that is no orb alias is an
        // ordinary name (processed configs key orb jobs as `alias/job`).
        let (target, local) = match name
            .split_once('/')
            .and_then(|(alias, rest)| Some((*self.scopes[scope].imports.get(alias)?, rest)))
        {
            Some(found) => found,
            None => (scope, name),
        };
        let s = &self.scopes[target];
        let table = match kind {
            Kind::Command => &s.commands,
            Kind::Executor => &s.executors,
            Kind::Job => &s.jobs,
        };
        table.get(local).map(|n| (target, n.clone()))
    }

    /// Where the element `name` (`x` or `alias/x`) of `scope` is defined.
    fn name_span(&self, scope: usize, section: &str, name: &str) -> Option<Span> {
        let keys = &self.scopes[scope].job_keys;
        keys.get(&format!("{section}/{name}"))
            .or_else(|| {
                let (_, local) = name.split_once('/')?;
                keys.get(&format!("{section}/{local}"))
            })
            .copied()
    }

    /// True when `name` is `alias/x` for an orb accepted unchecked.
    fn is_opaque(&self, scope: usize, name: &str) -> bool {
        name.split_once('/').is_some_and(|(alias, _)| {
            self.scopes[scope].opaque.iter().any(|a| a == alias)
                || self.scopes[scope]
                    .imports
                    .get(alias)
                    .is_some_and(|&id| self.scopes[id].approximate)
        })
    }

    /// "Cannot find a definition for <kind> named <name>", saying why when the name
    /// belongs to an orb that could not be imported.
    fn not_found(&mut self, scope: usize, span: Span, kind: &str, name: &str) {
        let s = &self.scopes[scope];
        let why = match name.split_once('/') {
            Some((alias, _)) if s.missing.contains_key(alias) => {
                format!(" ({})", s.missing[alias])
            }
            Some((alias, _))
                if scope == 0 && self.version == Version::V21 && !s.imports.contains_key(alias) =>
            {
                format!(" (no orb is imported as '{alias}')")
            }
            _ => String::new(),
        };
        self.error(
            span,
            format!("Cannot find a definition for {kind} named {name}{why}"),
        );
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Command,
    Executor,
    Job,
}

fn key(name: &str, span: Span) -> Key {
    Key {
        name: name.to_string(),
        span,
    }
}

/// Structural equality ignoring positions.
fn same_tree(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_tree(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.entries
                    .iter()
                    .zip(&y.entries)
                    .all(|((k1, v1), (k2, v2))| k1.name == k2.name && same_tree(v1, v2))
        }
        (Value::Float(f, _), Value::Float(g, _)) => f.to_bits() == g.to_bits(),
        (x, y) => x == y,
    }
}

/// A JSON value (trigger parameters) as a node.
pub fn json_to_node(v: &serde_json::Value, span: Span) -> Node {
    let value = match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN), n.to_string()),
        },
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(items) => {
            Value::Seq(items.iter().map(|i| json_to_node(i, span)).collect())
        }
        serde_json::Value::Object(m) => Value::Map(Map {
            entries: m
                .iter()
                .map(|(k, v)| (key(k, span), json_to_node(v, span)))
                .collect(),
        }),
    };
    Node::new(value, span)
}
