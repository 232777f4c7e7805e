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

    /// Imports the `orbs:` of a scope (registry references, inline orbs).
    fn import_orbs(
        &mut self,
        scope: usize,
        orbs: Option<&Node>,
        depth: usize,
        pipeline_params: bool,
    ) {
        let Some(orbs) = orbs else { return };
        if orbs.is_null() {
            return;
        }
        let Some(map) = orbs.as_map() else {
            self.error(
                orbs.span,
                format!("`orbs` must be a map, found {}", orbs.type_name()),
            );
            return;
        };
        if depth > 16 {
            self.error(orbs.span, "orbs import each other more than 16 levels deep");
            return;
        }
        for (alias, value) in map.iter() {
            let imported = match &value.value {
                Value::Null => continue,
                Value::Map(body) if body.is_empty() && self.allow_missing_orbs => {
                    // `alias: {}` is the orb-tools placeholder filled in at continuation.
                    self.rep.warning(
                        Some(value.span),
                        format!("inline orb '{alias}' is empty (a placeholder filled in at continuation?): its elements are not checked"),
                    );
                    self.scopes[scope].opaque.push(alias.to_string());
                    None
                }
                Value::Map(body) => {
                    let body = body.clone();
                    Some(self.orb_scope(&body, depth))
                }
                Value::Str(_) => {
                    let scope_t = Scope::pipeline_only(&self.pipeline, pipeline_params);
                    let errors_before = self.rep.error_count();
                    let templated = template::template(value, &scope_t, &mut self.rep);
                    if self.rep.error_count() > errors_before {
                        // The pin could not be templated (reported): nothing more to say.
                        self.scopes[scope].opaque.push(alias.to_string());
                        continue;
                    }
                    let Some(text) = templated.as_str() else {
                        self.error(
                            value.span,
                            format!("orb '{alias}': the reference must be a string"),
                        );
                        continue;
                    };
                    let text = text.to_string();
                    if self.allow_missing_orbs
                        && let Ok(r) = orbs::parse_ref(&text)
                        && self
                            .orb_source
                            .versions(&r.namespace, &r.name)
                            .map_or(true, |v| v.is_empty())
                    {
                        self.rep.warning(
                            Some(value.span),
                            format!("orb '{text}' is not available: its jobs, commands and executors are not checked"),
                        );
                        self.scopes[scope].opaque.push(alias.to_string());
                        continue;
                    }
                    if depth == 0 {
                        let id = self.registry_orb(&text, value.span, depth);
                        if id.is_none() {
                            // Reported here: uses of its elements are not reported again.
                            self.scopes[scope].opaque.push(alias.to_string());
                        }
                        id
                    } else {
                        // An orb's own imports are reported only when something uses them:
                        // a published orb was valid when it was published.
                        let before = self.rep.diags.len();
                        let id = self.registry_orb(&text, value.span, depth);
                        if id.is_none() {
                            let msgs: Vec<String> = self
                                .rep
                                .diags
                                .drain(before..)
                                .filter(|d| d.severity == Severity::Error)
                                .map(|d| d.message)
                                .collect();
                            self.scopes[scope]
                                .missing
                                .insert(alias.to_string(), msgs.join("; "));
                        }
                        id
                    }
                }
                _ => {
                    self.error(
                        value.span,
                        format!("orb '{alias}' must be a reference (namespace/name@version) or an inline orb"),
                    );
                    None
                }
            };
            if let Some(id) = imported {
                self.scopes[scope].imports.insert(alias.to_string(), id);
            }
        }
    }

    fn orb_scope(&mut self, body: &Map, depth: usize) -> usize {
        for (k, _) in &body.entries {
            if k.name == "workflows" {
                let span = k.span;
                self.error(span, "an orb cannot define workflows");
            }
        }
        let id = self.scope_from(body, true);
        self.import_orbs(id, body.get("orbs"), depth + 1, false);
        id
    }

    fn registry_orb(&mut self, text: &str, span: Span, depth: usize) -> Option<usize> {
        if text.starts_with("https://") || text.starts_with("http://") {
            self.error(span, format!("URL orbs are not supported: '{text}'"));
            return None;
        }
        let r: OrbRef = match orbs::parse_ref(text) {
            Ok(r) => r,
            Err(e) => {
                self.error(span, e);
                return None;
            }
        };
        let held = match self.orb_source.versions(&r.namespace, &r.name) {
            Ok(v) => v,
            Err(orbs::OrbError::NotFound(_)) => Vec::new(),
            Err(e) => {
                self.error(span, e.to_string());
                return None;
            }
        };
        let Some(res) = orbs::resolve_pin(&r.pin, &held) else {
            self.error(span, format!("unknown orb '{r}'"));
            return None;
        };
        let resolved = format!("{}/{}@{}", r.namespace, r.name, res.version);
        if res.fallback {
            self.rep.warning(
                Some(span),
                format!("orb '{r}' is not available; using '{resolved}', the closest version held"),
            );
        }
        if !self.orb_resolutions.iter().any(|(a, _)| a == text) {
            self.orb_resolutions
                .push((text.to_string(), resolved.clone()));
        }
        if let Some(id) = self.loaded.get(&resolved) {
            return Some(*id);
        }
        let body = self.load_orb(&r.namespace, &r.name, &res.version, span)?;
        let Some(map) = body.as_map() else {
            self.error(body.span, format!("orb '{resolved}' must be a map"));
            return None;
        };
        let map = map.clone();
        let scope = self.orb_scope(&map, depth);
        self.scopes[scope].approximate = res.fallback && self.allow_missing_orbs;
        self.loaded.insert(resolved, scope);
        Some(scope)
    }

    fn load_orb(&mut self, ns: &str, name: &str, version: &OrbVersion, span: Span) -> Option<Node> {
        let text = match self.orb_source.load(ns, name, version) {
            Ok(t) => t,
            Err(e) => {
                self.error(span, e.to_string());
                return None;
            }
        };
        match text {
            OrbText::Packed { name, text } => {
                let id = self.sources.add(name, text.clone());
                match yaml::parse(&text, id, &self.budget) {
                    Ok(n) => Some(n),
                    Err(d) => {
                        self.rep.push(d);
                        None
                    }
                }
            }
            OrbText::Unpacked { files } => {
                match crate::pack::pack(&files, &mut self.sources, &self.budget) {
                    Ok(n) => Some(n),
                    Err(ds) => {
                        for d in ds {
                            self.rep.push(d);
                        }
                        None
                    }
                }
            }
        }
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

    fn workflows(&mut self, top: &Map) -> Option<Vec<CompiledWorkflow>> {
        let mut out = Vec::new();
        let Some(wfs) = top.get("workflows") else {
            // Implicit workflow around a job named `build`.
            let has_build = top.get("jobs").and_then(|j| j.get("build")).is_some();
            if !has_build {
                self.rep.error(
                    None,
                    "Cannot find a job named `build` to run in the `jobs:` section of your configuration file.\nIf you expected a workflow to run, check your config contains a top-level key called 'workflows:'",
                );
                return None;
            }
            let span = top.get("jobs").map(|j| j.span).unwrap_or_default();
            let mut item = Node::str("build", span);
            // 2.0: the job's own `branches` filters its implicit workflow (§5.4.5).
            if self.version == Version::V20
                && let Some(b) = top
                    .get("jobs")
                    .and_then(|j| j.get("build")?.get("branches"))
            {
                let mut filters = Map::default();
                filters.insert(key("branches", b.span), b.clone());
                let mut args = Map::default();
                args.insert(
                    key("filters", b.span),
                    Node::new(Value::Map(filters), b.span),
                );
                let mut m = Map::default();
                m.insert(key("build", span), Node::new(Value::Map(args), span));
                item = Node::new(Value::Map(m), span);
            }
            let wf = self.workflow("workflow", span, &[item]);
            out.push(wf);
            return Some(out);
        };
        let Some(map) = wfs.as_map() else {
            self.error(
                wfs.span,
                format!("`workflows` must be a map, found {}", wfs.type_name()),
            );
            return None;
        };
        if self.version == Version::V20 && !map.contains("version") {
            self.error(
                wfs.span,
                "a version 2.0 config needs `version: 2` under `workflows`",
            );
        }
        for (k, wf) in &map.entries {
            let name = k.name.as_str();
            if name == "version" {
                continue;
            }
            let name = name.to_string();
            let span = k.span;
            let Some(body) = wf.as_map() else {
                self.rep.within(format!("workflow '{name}'"), |rep| {
                    rep.error(
                        Some(wf.span),
                        format!(
                            "a workflow must be a map with `jobs`, found {}",
                            wf.type_name()
                        ),
                    )
                });
                continue;
            };
            let body = body.clone();
            if !self.workflow_enabled(&name, &body) {
                continue;
            }
            let Some(jobs) = body.get("jobs") else {
                self.rep.within(format!("workflow '{name}'"), |rep| {
                    rep.error(Some(span), "a workflow needs `jobs`")
                });
                continue;
            };
            let Some(items) = jobs.as_seq() else {
                self.rep.within(format!("workflow '{name}'"), |rep| {
                    rep.error(
                        Some(jobs.span),
                        format!("`jobs` must be a list, found {}", jobs.type_name()),
                    )
                });
                continue;
            };
            if items.is_empty() {
                self.rep.within(format!("workflow '{name}'"), |rep| {
                    rep.error(Some(jobs.span), "`jobs` must not be empty")
                });
                continue;
            }
            let items = items.to_vec();
            let mut wf_out = self.workflow(&name, span, &items);
            if let Some(t) = body.get("triggers") {
                self.check_triggers(&name, t);
                wf_out.triggers = Some(t.clone());
            }
            wf_out.max_auto_reruns = body.get("max_auto_reruns").cloned();
            if let Some(n) = body.get("max_auto_reruns")
                && !matches!(n.value, Value::Int(1..=5))
            {
                let span = n.span;
                self.rep.within(format!("workflow '{name}'"), |rep| {
                    rep.error(
                        Some(span),
                        "`max_auto_reruns` must be an integer from 1 to 5",
                    )
                });
            }
            for (k, _) in &body.entries {
                if !matches!(
                    k.name.as_str(),
                    "jobs" | "when" | "unless" | "triggers" | "max_auto_reruns"
                ) {
                    let (kn, ks) = (k.name.clone(), k.span);
                    self.rep.within(format!("workflow '{name}'"), |rep| {
                        rep.error(Some(ks), format!("unknown key `{kn}` in a workflow"))
                    });
                }
            }
            out.push(wf_out);
        }
        Some(out)
    }

    fn check_triggers(&mut self, wf: &str, t: &Node) {
        let ctx = format!("workflow '{wf}'");
        let Some(items) = t.as_seq() else {
            self.rep.within(ctx, |rep| {
                rep.error(Some(t.span), "`triggers` must be a list")
            });
            return;
        };
        for item in items {
            let Some(schedule) = item.get("schedule") else {
                self.rep.within(ctx.clone(), |rep| {
                    rep.error(Some(item.span), "a trigger needs `schedule`")
                });
                continue;
            };
            match schedule.get("cron").and_then(Node::as_str) {
                Some(cron) if cron.split_whitespace().count() == 5 => {}
                Some(_) => self.rep.within(ctx.clone(), |rep| {
                    rep.error(
                        schedule.get("cron").map(|c| c.span),
                        "`cron` must have five fields (minute hour day month weekday)",
                    )
                }),
                None => self.rep.within(ctx.clone(), |rep| {
                    rep.error(Some(schedule.span), "a schedule needs `cron`")
                }),
            }
            match schedule.get("filters") {
                Some(f) if f.get("branches").is_some() => self.check_filters(f),
                _ => self.rep.within(ctx.clone(), |rep| {
                    rep.error(
                        Some(schedule.span),
                        "a schedule needs `filters` with `branches`",
                    )
                }),
            }
        }
    }

    /// Evaluates a workflow's `when` / `unless`.
    fn workflow_enabled(&mut self, name: &str, body: &Map) -> bool {
        let when = body.get("when");
        let unless = body.get("unless");
        if let (Some(_), Some(u)) = (when, unless) {
            let span = u.span;
            self.rep.within(format!("workflow '{name}'"), |rep| {
                rep.error(
                    Some(span),
                    "a workflow cannot have both `when` and `unless`",
                )
            });
            return false;
        }
        let (cond, want) = match (when, unless) {
            (Some(w), _) => (w, true),
            (_, Some(u)) => (u, false),
            _ => return true,
        };
        let cond = cond.clone();
        let value = self.rep.within(format!("workflow '{name}'"), |rep| {
            condition_value(&cond, &self.pipeline, true, rep)
        });
        value == want
    }

    /// Expands a workflow's job list.
    fn workflow(&mut self, name: &str, span: Span, items: &[Node]) -> CompiledWorkflow {
        let ctx = format!("workflow '{name}'");
        self.rep.context_push(ctx);
        let mut invs: Vec<Inv> = Vec::new();
        for item in items {
            self.invocation(item, &mut invs, None, 0);
        }
        let instances = self.finish_workflow(name, invs);
        self.rep.context_pop();
        CompiledWorkflow {
            name: name.to_string(),
            span,
            jobs: instances,
            triggers: None,
            max_auto_reruns: None,
        }
    }

    /// Reads one workflow job item into invocations (matrix and job-groups expanded).
    fn invocation(&mut self, item: &Node, out: &mut Vec<Inv>, group: Option<&Inv>, depth: usize) {
        let (job, job_span, args) = match &item.value {
            Value::Str(s) => (s.clone(), item.span, Map::default()),
            Value::Map(m) if m.len() == 1 => {
                let (k, v) = &m.entries[0];
                let args = match &v.value {
                    Value::Map(a) => a.clone(),
                    Value::Null => Map::default(),
                    _ => {
                        self.error(
                            v.span,
                            format!(
                                "the arguments of job '{}' must be a map, found {}",
                                k.name,
                                v.type_name()
                            ),
                        );
                        return;
                    }
                };
                (k.name.clone(), k.span, args)
            }
            Value::Map(m)
                if m.len() > 1
                    && m.entries[0].1.is_null()
                    && m.entries[1..]
                        .iter()
                        .all(|(k, _)| RESERVED_INVOCATION_KEYS.contains(&k.name.as_str())) =>
            {
                // `- job:` with its arguments indented as siblings: CircleCI takes the
                // siblings as the job's arguments.
                let (k, _) = &m.entries[0];
                self.rep.warning(
                    Some(k.span),
                    format!("the arguments of job '{}' are not indented under it; reading them as its arguments", k.name),
                );
                (
                    k.name.clone(),
                    k.span,
                    Map {
                        entries: m.entries[1..].to_vec(),
                    },
                )
            }
            Value::Map(m) => {
                let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
                self.error(
                    item.span,
                    format!(
                        "a workflow job must be a job name or a map with exactly one key (the job name), found keys: {}",
                        keys.join(", ")
                    ),
                );
                return;
            }
            _ => {
                self.error(
                    item.span,
                    format!(
                        "a workflow job must be a string or a map, found {}",
                        item.type_name()
                    ),
                );
                return;
            }
        };
        // Job groups.
        if let Some(group_body) = self.job_groups.get(&job).cloned()
            && self.find(0, &job, Kind::Job).is_none()
        {
            if depth > 0 {
                self.error(job_span, "job groups cannot be nested");
                return;
            }
            self.expand_group(&job, job_span, &args, &group_body, out);
            return;
        }
        let combos = self.matrix(&args);
        let is_matrix = args.contains("matrix");
        let alias = if is_matrix {
            Some(
                args.get("matrix")
                    .and_then(|m| m.get("alias"))
                    .and_then(Node::scalar_text)
                    .unwrap_or_else(|| job.clone()),
            )
        } else {
            None
        };
        for combo in combos {
            let matrix_b = combo.clone();
            let scope = Scope {
                params: None,
                pipeline: &self.pipeline,
                pipeline_params: true,
                matrix: if is_matrix { Some(&matrix_b) } else { None },
            };
            let mut templated = Map::default();
            let matrix_params = args
                .get("matrix")
                .and_then(|m| m.get("parameters"))
                .and_then(Node::as_map);
            for (name, v) in &combo {
                // The argument is named where the matrix parameter is written.
                let at = matrix_params
                    .and_then(|p| p.get_entry(name))
                    .map_or(v.span, |(k, _)| k.span);
                templated.insert(key(name, at), v.clone());
            }
            for (k, v) in &args.entries {
                if k.name == "matrix" {
                    continue;
                }
                let v = if self.version == Version::V21 {
                    template::template(v, &scope, &mut self.rep)
                } else {
                    v.clone()
                };
                templated.insert(k.clone(), v);
            }
            let explicit_name = templated.get("name").and_then(Node::scalar_text);
            let default_name = if is_matrix {
                let mut names: Vec<(&String, &Node)> = combo.iter().collect();
                names.sort_by(|a, b| a.0.cmp(b.0));
                let mut n = job.clone();
                for (_, v) in names {
                    n.push('-');
                    n.push_str(&v.scalar_text().unwrap_or_default());
                }
                n
            } else {
                job.clone()
            };
            let mut inv = Inv {
                job: job.clone(),
                job_span,
                args: templated,
                name: explicit_name.clone().unwrap_or(default_name),
                explicit_name: explicit_name.is_some(),
                aliases: alias.iter().cloned().collect(),
                extra_requires: Vec::new(),
                group: None,
            };
            if let Some(g) = group {
                inv.group = Some(g.name.clone());
                inv.aliases.push(g.name.clone());
            }
            out.push(inv);
        }
    }

    fn expand_group(
        &mut self,
        group: &str,
        span: Span,
        args: &Map,
        body: &Node,
        out: &mut Vec<Inv>,
    ) {
        for (k, _) in &args.entries {
            if !matches!(
                k.name.as_str(),
                "name" | "requires" | "filters" | "serial-group"
            ) {
                let (kn, ks) = (k.name.clone(), k.span);
                self.error(
                    ks,
                    format!("`{kn}` is not allowed on a job-group invocation"),
                );
            }
        }
        let Some(items) = body.get("jobs").and_then(Node::as_seq) else {
            self.error(
                body.span,
                format!("job group '{group}' needs a `jobs` list"),
            );
            return;
        };
        let group_name = args
            .get("name")
            .and_then(Node::scalar_text)
            .unwrap_or_else(|| group.to_string());
        let marker = Inv {
            job: group.to_string(),
            job_span: span,
            args: Map::default(),
            name: group_name,
            explicit_name: true,
            aliases: Vec::new(),
            extra_requires: Vec::new(),
            group: None,
        };
        let start = out.len();
        for item in items {
            self.invocation(item, out, Some(&marker), 1);
        }
        // Members without requirements inside the group inherit the group's requires.
        let group_requires = args.get("requires").cloned();
        let group_filters = args.get("filters").cloned();
        for inv in &mut out[start..] {
            if let Some(r) = &group_requires {
                inv.extra_requires.push(r.clone());
            }
            if let Some(f) = &group_filters
                && !inv.args.contains("filters")
            {
                inv.args.insert(key("filters", f.span), f.clone());
            }
        }
    }

    /// The matrix combinations of an invocation (one empty combination without matrix).
    fn matrix(&mut self, args: &Map) -> Vec<Bindings> {
        let Some(m) = args.get("matrix") else {
            return vec![Bindings::new()];
        };
        if self.version == Version::V20 {
            let span = args.get_entry("matrix").map_or(m.span, |(k, _)| k.span);
            self.error(span, "`matrix` requires `version: 2.1`");
            return vec![Bindings::new()];
        }
        let scope = Scope::pipeline_only(&self.pipeline, true);
        let m = template::template(m, &scope, &mut self.rep);
        let Some(map) = m.as_map() else {
            self.error(m.span, "`matrix` must be a map with `parameters`");
            return Vec::new();
        };
        for (k, _) in &map.entries {
            if !matches!(k.name.as_str(), "parameters" | "exclude" | "alias") {
                let (kn, ks) = (k.name.clone(), k.span);
                self.error(
                    ks,
                    format!("unknown key `{kn}` in `matrix` (allowed: parameters, exclude, alias)"),
                );
            }
        }
        let Some(params) = map.get("parameters").and_then(Node::as_map) else {
            self.error(m.span, "`matrix` needs a `parameters` map");
            return Vec::new();
        };
        let mut combos = vec![Bindings::new()];
        for (name, values) in params.iter() {
            let vspan = values.span;
            let Some(values) = values.as_seq() else {
                self.error(
                    vspan,
                    format!("matrix parameter '{name}' must be a list of values"),
                );
                return Vec::new();
            };
            if values.is_empty() {
                self.error(vspan, format!("matrix parameter '{name}' has no values"));
                return Vec::new();
            }
            let mut next = Vec::with_capacity(combos.len() * values.len());
            for c in &combos {
                for v in values {
                    let mut c2 = c.clone();
                    c2.insert(name.to_string(), v.clone());
                    next.push(c2);
                }
            }
            combos = next;
            if combos.len() > 10_000 {
                self.error(m.span, "`matrix` expands to more than 10000 jobs");
                return Vec::new();
            }
        }
        if let Some(exclude) = map.get("exclude") {
            let Some(items) = exclude.as_seq() else {
                self.error(
                    exclude.span,
                    "`exclude` must be a list of parameter combinations",
                );
                return combos;
            };
            for ex in items {
                let Some(exm) = ex.as_map() else {
                    self.error(
                        ex.span,
                        "an `exclude` entry must be a map of parameter values",
                    );
                    continue;
                };
                let mut unknown = false;
                for (k, _) in &exm.entries {
                    if !params.contains(&k.name) {
                        unknown = true;
                        let (kn, ks) = (k.name.clone(), k.span);
                        self.error(
                            ks,
                            format!("`exclude` names '{kn}', which is not a matrix parameter"),
                        );
                    }
                }
                let before = combos.len();
                combos.retain(|c| {
                    !(c.len() == exm.len()
                        && exm.iter().all(|(k, v)| {
                            c.get(k)
                                .is_some_and(|cv| expr::values_equal(&cv.value, &v.value))
                        }))
                });
                if combos.len() == before && !unknown {
                    self.rep.warning(
                        Some(ex.span),
                        "this `exclude` entry matches no matrix combination",
                    );
                }
            }
        }
        combos
    }

    /// Names, requires, then the concrete jobs of a workflow.
    fn finish_workflow(&mut self, wf: &str, mut invs: Vec<Inv>) -> Vec<Instance> {
        // Unique names: duplicates get -1, -2, ...
        let mut counts: IndexMap<String, usize> = IndexMap::new();
        for inv in &invs {
            *counts.entry(inv.name.clone()).or_default() += 1;
        }
        let mut seen: IndexMap<String, usize> = IndexMap::new();
        for inv in &mut invs {
            if counts[&inv.name] > 1 {
                let n = seen.entry(inv.name.clone()).or_default();
                *n += 1;
                let base = inv.name.clone();
                inv.aliases.push(base.clone());
                inv.name = format!("{base}-{n}");
            }
        }
        // Name → members (own name, matrix alias, group, duplicate base name).
        let mut members: IndexMap<String, Vec<usize>> = IndexMap::new();
        for (i, inv) in invs.iter().enumerate() {
            members.entry(inv.name.clone()).or_default().push(i);
        }
        for (i, inv) in invs.iter().enumerate() {
            for a in &inv.aliases {
                let list = members.entry(a.clone()).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
        }
        let mut instances = Vec::with_capacity(invs.len());
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); invs.len()];
        for (i, inv) in invs.iter().enumerate() {
            let ctx = format!("job '{}'", inv.name);
            let mut requires: Vec<(String, Vec<String>)> = Vec::new();
            let mut req_nodes: Vec<Node> = inv.extra_requires.clone();
            if let Some(r) = inv.args.get("requires") {
                req_nodes.push(r.clone());
            }
            for r in &req_nodes {
                let entries = self.rep.within(ctx.clone(), |rep| requires_entries(r, rep));
                for (target, statuses, span) in entries {
                    // A job that requires only itself requires 0 other jobs.
                    match members.get(&target).filter(|l| l.iter().any(|&j| j != i)) {
                        Some(list) => {
                            for &j in list {
                                if j == i {
                                    continue;
                                }
                                edges[i].push(j);
                                let name = invs[j].name.clone();
                                if let Some(existing) =
                                    requires.iter_mut().find(|(n, _)| *n == name)
                                {
                                    for s in &statuses {
                                        if !existing.1.contains(s) {
                                            existing.1.push(s.clone());
                                        }
                                    }
                                } else {
                                    requires.push((name, statuses.clone()));
                                }
                            }
                        }
                        None => {
                            let msg = format!(
                                "Job '{}' requires '{target}', which is the name of 0 other jobs in workflow '{wf}'",
                                inv.name
                            );
                            self.rep
                                .within(ctx.clone(), |rep| rep.error(Some(span), msg));
                        }
                    }
                }
            }
            instances.push((requires, inv));
        }
        // Cycles.
        if let Some(cycle) = find_cycle(&edges) {
            let names: Vec<&str> = cycle.iter().map(|&i| invs[i].name.as_str()).collect();
            let span = invs[cycle[0]].job_span;
            self.error(
                span,
                format!(
                    "the requires of this workflow form a cycle: {}",
                    names.join(" -> ")
                ),
            );
        }
        let mut result = Vec::with_capacity(instances.len());
        for (requires, inv) in instances {
            self.rep.context_push(format!("job '{}'", inv.name));
            let instance = self.instance(inv, requires);
            self.rep.context_pop();
            if let Some(instance) = instance {
                result.push(instance);
            }
        }
        result
    }

    /// Compiles one invocation into a workflow instance and its concrete job.
    fn instance(&mut self, inv: &Inv, requires: Vec<(String, Vec<String>)>) -> Option<Instance> {
        let args = &inv.args;
        let approval = args.get("type").and_then(Node::as_str) == Some("approval");
        if let Some(t) = args.get("type")
            && !approval
        {
            self.error(
                t.span,
                format!(
                    "Only jobs with `type: approval` can be defined inline under the `workflows:` section. For `type: {}`, define the job in the `jobs:` section instead.",
                    t.scalar_text().unwrap_or_default()
                ),
            );
            return None;
        }
        if let Some(f) = args.get("filters") {
            let f = f.clone();
            self.check_filters(&f);
        }
        let context = match args.get("context") {
            None => Vec::new(),
            Some(c) => match &c.value {
                Value::Seq(items) => items.iter().filter_map(Node::scalar_text).collect(),
                Value::Null => Vec::new(),
                Value::Map(_) => {
                    let span = c.span;
                    self.error(
                        span,
                        "`context` must be a context name or a list of names, found mapping",
                    );
                    Vec::new()
                }
                _ => c.scalar_text().into_iter().collect(),
            },
        };
        let serial_group = args.get("serial-group").and_then(Node::scalar_text);
        if let Some(sg) = &serial_group
            && (sg.trim().is_empty()
                || sg.len() > 512
                || !sg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')))
        {
            let span = args
                .get("serial-group")
                .map(|n| n.span)
                .unwrap_or(inv.job_span);
            self.error(
                span,
                format!(
                    "invalid serial-group '{sg}': use 1-512 characters from A-Z a-z 0-9 . - _ /"
                ),
            );
        }
        let mut instance = Instance {
            name: inv.name.clone(),
            job: None,
            approval,
            requires,
            filters: args.get("filters").cloned(),
            context,
            serial_group,
            span: inv.job_span,
        };
        if approval {
            return Some(instance);
        }
        // Which job: override-with, then the named job.
        let mut found = None;
        if let Some(ow) = args.get("override-with").and_then(Node::as_str) {
            found = self
                .find(0, ow, Kind::Job)
                .map(|(s, n)| (s, n, ow.to_string()));
        }
        if found.is_none() {
            found = self
                .find(0, &inv.job, Kind::Job)
                .map(|(s, n)| (s, n, inv.job.clone()));
        }
        if found.is_none() && self.is_opaque(0, &inv.job) {
            return Some(instance);
        }
        let Some((scope, job_node, _)) = found else {
            let job = inv.job.clone();
            self.not_found(0, inv.job_span, "job", &job);
            return None;
        };
        if job_node.get("type").and_then(Node::as_str) == Some("approval") {
            instance.approval = true;
            return Some(instance);
        }
        let mut call_args = Map::default();
        for (k, v) in &args.entries {
            if !RESERVED_INVOCATION_KEYS.contains(&k.name.as_str()) {
                call_args.insert(k.clone(), v.clone());
            }
        }
        let pre = args.get("pre-steps").cloned();
        let post = args.get("post-steps").cloned();
        let job = self.expand_job(
            scope,
            &inv.job,
            &job_node,
            &call_args,
            inv.job_span,
            pre,
            post,
        )?;
        // One concrete job per final name; a different body under the same name gets a suffix.
        let mut key_name = inv.name.clone();
        let mut n = 1;
        while let Some(existing) = self.out_jobs.get(&key_name) {
            if same_tree(existing, &job) {
                break;
            }
            n += 1;
            key_name = format!("{}-{n}", inv.name);
        }
        self.out_jobs.insert(key_name.clone(), job);
        instance.job = Some(key_name);
        Some(instance)
    }

    fn check_filters(&mut self, f: &Node) {
        match &f.value {
            Value::Str(s) => {
                if expr::parse(s).is_none() {
                    self.error(f.span, format!("invalid filter expression: {s}"));
                }
            }
            Value::Map(m) => {
                for (k, v) in &m.entries {
                    if !matches!(k.name.as_str(), "branches" | "tags") {
                        let (kn, ks) = (k.name.clone(), k.span);
                        self.error(
                            ks,
                            format!("unknown key `{kn}` in `filters` (allowed: branches, tags)"),
                        );
                        continue;
                    }
                    let Some(spec) = v.as_map() else {
                        if !v.is_null() {
                            self.error(
                                v.span,
                                format!("`{}` must be a map with `only` and/or `ignore`", k.name),
                            );
                        }
                        continue;
                    };
                    for (sk, sv) in &spec.entries {
                        if !matches!(sk.name.as_str(), "only" | "ignore") {
                            let (kn, ks) = (sk.name.clone(), sk.span);
                            self.error(
                                ks,
                                format!(
                                    "unknown key `{kn}` in `{}` (allowed: only, ignore)",
                                    k.name
                                ),
                            );
                            continue;
                        }
                        let patterns: Vec<&Node> = match &sv.value {
                            Value::Seq(items) => items.iter().collect(),
                            Value::Null => Vec::new(),
                            _ => vec![sv],
                        };
                        for p in patterns {
                            let Some(text) = p.scalar_text() else {
                                self.error(p.span, "a filter must be a string or a /regex/");
                                continue;
                            };
                            if let Some(re) =
                                text.strip_prefix('/').and_then(|t| t.strip_suffix('/'))
                                && let Err(e) = expr::compile_full(re)
                            {
                                self.error(p.span, e);
                            }
                        }
                    }
                }
            }
            Value::Null => {}
            _ => self.error(
                f.span,
                "`filters` must be a map (branches, tags) or an expression string",
            ),
        }
    }

    /// Expands a job: parameters, executor, steps.
    #[allow(clippy::too_many_arguments)]
    fn expand_job(
        &mut self,
        scope: usize,
        name: &str,
        job: &Node,
        args: &Map,
        call: Span,
        pre: Option<Node>,
        post: Option<Node>,
    ) -> Option<Node> {
        let Some(body) = job.as_map() else {
            self.error(
                job.span,
                format!("job '{name}' must be a map, found {}", job.type_name()),
            );
            return None;
        };
        let is_orb = self.scopes[scope].is_orb;
        let decls = if self.templating() {
            params::parse_decls(body.get("parameters"), Owner::Element, &mut self.rep)
        } else {
            Vec::new()
        };
        for d in &decls {
            if matches!(
                d.name.as_str(),
                "name" | "requires" | "context" | "type" | "filters" | "matrix"
            ) {
                self.error(
                    d.span,
                    format!(
                        "'{}' is a reserved name and cannot be a job parameter",
                        d.name
                    ),
                );
            }
        }
        let mut bindings = self.bind(&decls, args, call, is_orb, scope);
        // Steps arguments are expanded where they were written: arguments in the
        // config's workflows, defaults in the job's own scope (an orb's, say).
        for d in &decls {
            if d.ty == ParamType::Steps
                && let Some(v) = bindings.get(&d.name).cloned()
            {
                let from = if args.contains(&d.name) { 0 } else { scope };
                let mut expanded = Vec::new();
                self.expand_steps(from, &v, &mut expanded, 1);
                bindings.insert(d.name.clone(), expanded_steps(expanded, v.span));
            }
        }
        let mut body = body.clone();
        body.remove("parameters");
        let body_node = Node::new(Value::Map(body), job.span);
        let body_node = if self.templating() {
            let s = Scope::element(&bindings, &self.pipeline, is_orb);
            let mut body_node = body_node;
            template::template_mut(&mut body_node, &s, &mut self.rep);
            body_node
        } else {
            body_node
        };
        let mut body = match body_node.value {
            Value::Map(m) => m,
            _ => Map::default(),
        };
        // Problems of the whole job are reported at its name.
        let at = self.name_span(scope, "jobs", name).unwrap_or(job.span);
        let job_type = body
            .get("type")
            .and_then(Node::scalar_text)
            .unwrap_or_else(|| "build".into());
        if !matches!(
            job_type.as_str(),
            "build" | "approval" | "no-op" | "release" | "lock" | "unlock"
        ) {
            let span = body.get("type").map(|n| n.span).unwrap_or(job.span);
            self.error(
                span,
                format!("Invalid job type '{job_type}'. Allowed types: approval, build, no-op, release, lock, unlock"),
            );
        }
        // Executor.
        let errors_before = self.rep.error_count();
        if let Some(exec) = body.remove("executor")
            && let Some(resolved) = self.resolve_executor(scope, &exec, 0)
        {
            merge_executor(&mut body, resolved);
        }
        let executor_failed = self.rep.error_count() > errors_before;
        let types: Vec<&str> = EXECUTOR_TYPES
            .iter()
            .copied()
            .filter(|t| body.contains(t))
            .collect();
        if types.len() > 1 {
            let span = body.get_entry(types[1]).map_or(at, |(k, _)| k.span);
            self.error(
                span,
                format!(
                    "job '{name}' has more than one executor type: {}",
                    types.join(", ")
                ),
            );
        }
        let opaque_executor = body.get("executor").is_some();
        if job_type == "build" && types.is_empty() && !opaque_executor && !executor_failed {
            self.error(
                at,
                format!("job '{name}' has no executor: give it `docker`, `machine`, `macos` or `executor`"),
            );
        }
        // Steps.
        let mut steps = Vec::new();
        if let Some(pre) = &pre {
            self.rep.context_push("pre-steps".into());
            self.expand_steps(0, pre, &mut steps, 0);
            self.rep.context_pop();
        }
        match body.get("steps").cloned() {
            Some(s) => self.expand_steps(scope, &s, &mut steps, 0),
            None if job_type == "build" => {
                self.error(at, format!("job '{name}' has no `steps`"));
            }
            None => {}
        }
        if let Some(post) = &post {
            self.rep.context_push("post-steps".into());
            self.expand_steps(0, post, &mut steps, 0);
            self.rep.context_pop();
        }
        let steps_span = body.get("steps").map(|s| s.span).unwrap_or(job.span);
        if body.contains("steps") || !steps.is_empty() {
            body.insert(
                key("steps", steps_span),
                Node::new(Value::Seq(steps), steps_span),
            );
        }
        // Executor keys first, as CircleCI prints them.
        let mut ordered = Map::default();
        for k in EXECUTOR_TYPES {
            if let Some((kk, v)) = body.get_entry(k) {
                ordered.insert(kk.clone(), v.clone());
            }
        }
        for (k, v) in body.entries {
            if !ordered.contains(&k.name) && k.name != "description" {
                ordered.insert(k, v);
            }
        }
        Some(Node::new(Value::Map(ordered), job.span))
    }

    /// Binds arguments; defaults are templated in the element's own scope.
    fn bind(
        &mut self,
        decls: &[ParamDecl],
        args: &Map,
        call: Span,
        is_orb: bool,
        elem_scope: usize,
    ) -> Bindings {
        if !self.templating() {
            if let Some((k, _)) = args.entries.first() {
                let span = k.span;
                let names: Vec<&str> = args.iter().map(|(k, _)| k).collect();
                self.error(
                    span,
                    format!("Unexpected argument(s): {}", names.join(", ")),
                );
            }
            return Bindings::new();
        }
        let before = self.rep.diags.len();
        let mut b = params::bind(decls, args, call, &mut self.rep);
        if self.scopes[elem_scope].approximate {
            for d in &mut self.rep.diags[before..] {
                if d.severity == Severity::Error {
                    d.severity = Severity::Warning;
                    d.message
                        .push_str(" (the orb version held differs from the one pinned)");
                }
            }
            for d in decls {
                if !b.contains_key(&d.name) {
                    b.insert(d.name.clone(), Node::new(Value::Null, call));
                }
            }
        }
        for d in decls {
            if !args.contains(&d.name)
                && let Some(v) = b.get(&d.name).cloned()
            {
                let s = Scope::pipeline_only(&self.pipeline, !is_orb);
                let v = template::template(&v, &s, &mut self.rep);
                b.insert(d.name.clone(), v);
            }
        }
        b
    }

    /// Resolves `executor:` (a name, `{name: ..., args}`, possibly from a parameter).
    fn resolve_executor(&mut self, scope: usize, exec: &Node, depth: usize) -> Option<Map> {
        if depth > 16 {
            self.error(
                exec.span,
                "executors refer to each other more than 16 levels deep",
            );
            return None;
        }
        let (name, args) = match &exec.value {
            Value::Str(s) => (s.clone(), Map::default()),
            Value::Map(m) => match m.get("name").and_then(Node::as_str) {
                Some(n) => {
                    let mut a = m.clone();
                    a.remove("name");
                    (n.to_string(), a)
                }
                None => {
                    self.error(
                        exec.span,
                        "Missing executor name: `executor` as a map needs `name`",
                    );
                    return None;
                }
            },
            _ => {
                self.error(
                    exec.span,
                    format!(
                        "`executor` must be a name or a map with `name`, found {}",
                        exec.type_name()
                    ),
                );
                return None;
            }
        };
        let found = self
            .find(scope, &name, Kind::Executor)
            .or_else(|| self.find(0, &name, Kind::Executor));
        if found.is_none() && (self.is_opaque(scope, &name) || self.is_opaque(0, &name)) {
            let mut m = Map::default();
            m.insert(key("executor", exec.span), Node::str(name, exec.span));
            return Some(m);
        }
        let Some((escope, def)) = found else {
            self.not_found(scope, exec.span, "executor", &name);
            return None;
        };
        if let Value::Str(alias) = &def.value {
            let target = Node::str(alias.clone(), def.span);
            return self.resolve_executor(escope, &target, depth + 1);
        }
        let Some(body) = def.as_map() else {
            self.error(
                def.span,
                format!("executor '{name}' must be a map, found {}", def.type_name()),
            );
            return None;
        };
        let is_orb = self.scopes[escope].is_orb;
        let decls = params::parse_decls(body.get("parameters"), Owner::Element, &mut self.rep);
        self.rep.context_push(format!("executor '{name}'"));
        let bindings = self.bind(&decls, &args, exec.span, is_orb, escope);
        let mut body = body.clone();
        body.remove("parameters");
        body.remove("description");
        let node = Node::new(Value::Map(body), def.span);
        let s = Scope::element(&bindings, &self.pipeline, is_orb);
        let mut node = node;
        template::template_mut(&mut node, &s, &mut self.rep);
        let mut out = match node.value {
            Value::Map(m) => m,
            _ => Map::default(),
        };
        for (k, _) in &out.entries {
            if !EXECUTOR_KEYS.contains(&k.name.as_str()) {
                let (kn, ks) = (k.name.clone(), k.span);
                self.error(ks, format!("unknown key `{kn}` in executor '{name}'"));
            }
        }
        let types: Vec<&str> = EXECUTOR_TYPES
            .iter()
            .copied()
            .filter(|t| out.contains(t))
            .collect();
        if types.len() > 1 {
            let span = out.get_entry(types[1]).map_or(def.span, |(k, _)| k.span);
            self.error(
                span,
                format!(
                    "executor '{name}' has more than one executor type: {}",
                    types.join(", ")
                ),
            );
            // Only the first is kept: the job using it is not reported again.
            out.entries
                .retain(|(k, _)| k.name == types[0] || !types.contains(&k.name.as_str()));
        } else if types.is_empty() {
            self.error(
                self.name_span(escope, "executors", &name).unwrap_or(def.span),
                format!("executor '{name}' has no executor type: give it `docker`, `machine`, `macos` or `windows`"),
            );
        }
        out.entries
            .retain(|(k, _)| EXECUTOR_KEYS.contains(&k.name.as_str()));
        self.rep.context_pop();
        Some(out)
    }

    /// Expands a steps list into built-in steps, appending to `out`.
    fn expand_steps(&mut self, scope: usize, steps: &Node, out: &mut Vec<Node>, depth: usize) {
        if depth > 64 {
            self.error(
                steps.span,
                "commands call each other more than 64 levels deep (does a command call itself?)",
            );
            return;
        }
        match &steps.value {
            Value::Seq(items) => {
                for item in items {
                    self.expand_step(scope, item, out, depth);
                }
            }
            Value::Null => {}
            Value::Map(_) | Value::Str(_) => self.expand_step(scope, steps, out, depth),
            _ => self.error(
                steps.span,
                format!("`steps` must be a list, found {}", steps.type_name()),
            ),
        }
    }

    fn expand_step(&mut self, scope: usize, step: &Node, out: &mut Vec<Node>, depth: usize) {
        if let Value::Map(m) = &step.value
            && let [(k, inner)] = m.entries.as_slice()
            && k.name == EXPANDED_STEP
        {
            out.push(inner.clone());
            return;
        }
        let (name, name_span, arg) = match &step.value {
            Value::Seq(_) => return self.expand_steps(scope, step, out, depth + 1),
            Value::Str(s) => (s.clone(), step.span, None),
            Value::Map(m) if m.len() == 1 => {
                let (k, v) = &m.entries[0];
                (k.name.clone(), k.span, Some(v))
            }
            Value::Map(m) => {
                let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
                let hint = if keys.iter().any(|k| BUILTIN_STEPS.contains(k))
                    && m.entries.iter().any(|(_, v)| v.is_null())
                {
                    " (is the step's body indented under its name?)"
                } else {
                    ""
                };
                self.error(
                    step.span,
                    format!(
                        "a step must have exactly one key, found {}: {}{hint}",
                        keys.len(),
                        keys.join(", ")
                    ),
                );
                return;
            }
            _ => {
                self.error(
                    step.span,
                    format!(
                        "a step must be a string or a map, found {}",
                        step.type_name()
                    ),
                );
                return;
            }
        };
        match name.as_str() {
            "when" | "unless" if self.templating() => {
                let (Some(cond), Some(inner)) = (
                    arg.as_ref().and_then(|a| a.get("condition")),
                    arg.as_ref().and_then(|a| a.get("steps")),
                ) else {
                    let missing = match arg.as_ref().map(|a| a.get("condition").is_some()) {
                        Some(true) => "steps",
                        _ => "condition",
                    };
                    self.error(
                        name_span,
                        format!("required key [{missing}] not found in `{name}` step"),
                    );
                    return;
                };
                let (cond, inner) = (cond.clone(), inner.clone());
                let value = condition_value(&cond, &self.pipeline, false, &mut self.rep);
                if value == (name == "when") {
                    self.expand_steps(scope, &inner, out, depth + 1);
                }
                return;
            }
            "steps" => {
                if let Some(arg) = arg {
                    self.expand_steps(scope, arg, out, depth + 1);
                }
                return;
            }
            _ => {}
        }
        if self.templating()
            && let Some((cscope, def)) = self.find(scope, &name, Kind::Command)
        {
            let on_stack = self
                .calls
                .iter()
                .position(|(s, n)| *s == cscope && *n == name);
            match on_stack {
                None => {
                    self.call_command(&name, name_span, cscope, &def, arg, scope, out, depth);
                    return;
                }
                // A command named like a built-in step uses the built-in inside itself.
                Some(_) if BUILTIN_STEPS.contains(&name.replace('-', "_").as_str()) => {}
                Some(at) => {
                    let mut chain: Vec<&str> =
                        self.calls[at..].iter().map(|(_, n)| n.as_str()).collect();
                    chain.push(&name);
                    let msg = format!("command '{name}' calls itself: {}", chain.join(" -> "));
                    self.error(name_span, msg);
                    return;
                }
            }
        }
        if self.is_opaque(scope, &name) {
            out.push(step.clone());
            return;
        }
        let builtin = name.replace('-', "_");
        if BUILTIN_STEPS.contains(&builtin.as_str()) {
            let renamed = builtin != name;
            let name = builtin;
            match &arg {
                None if !BARE_STEPS.contains(&name.as_str()) => {
                    self.error(name_span, format!("the `{name}` step needs arguments"));
                }
                Some(a) if matches!(a.value, Value::Str(_)) && name != "run" => {
                    self.error(
                        a.span,
                        format!(
                            "In step {} definition: This type of step does not support compressed syntax",
                            out.len() + 1
                        ),
                    );
                }
                // `restore-cache` is `restore_cache`: emit the canonical name.
                _ if renamed => out.push(Node::new(
                    match &step.value {
                        Value::Map(m) => Value::Map(Map {
                            entries: vec![(
                                key(&name, m.entries[0].0.span),
                                m.entries[0].1.clone(),
                            )],
                        }),
                        _ => Value::Str(name.clone()),
                    },
                    step.span,
                )),
                _ => out.push(step.clone()),
            }
            return;
        }
        self.not_found(scope, name_span, "command", &name);
    }

    #[allow(clippy::too_many_arguments)]
    fn call_command(
        &mut self,
        name: &str,
        span: Span,
        cscope: usize,
        def: &Node,
        arg: Option<&Node>,
        caller: usize,
        out: &mut Vec<Node>,
        depth: usize,
    ) {
        if depth > 64 {
            self.error(
                span,
                format!(
                    "command '{name}' calls itself (directly or through other commands) too deeply"
                ),
            );
            return;
        }
        if let Value::Str(alias) = &def.value {
            let target = Node::new(
                match arg {
                    Some(a) => Value::Map(Map {
                        entries: vec![(key(alias, span), a.clone())],
                    }),
                    None => Value::Str(alias.clone()),
                },
                span,
            );
            return self.expand_step(cscope, &target, out, depth + 1);
        }
        let Some(body) = def.as_map() else {
            self.error(
                def.span,
                format!("command '{name}' must be a map with `steps`"),
            );
            return;
        };
        let args = match arg.map(|a| &a.value) {
            None | Some(Value::Null) => Map::default(),
            Some(Value::Map(m)) => m.clone(),
            Some(_) => {
                let a = arg.map(|a| a.span).unwrap_or(span);
                self.error(
                    a,
                    format!("the arguments of command '{name}' must be a map"),
                );
                return;
            }
        };
        self.rep.context_push(format!("command '{name}'"));
        let decls = params::parse_decls(body.get("parameters"), Owner::Element, &mut self.rep);
        let is_orb = self.scopes[cscope].is_orb;
        let mut bindings = self.bind(&decls, &args, span, is_orb, cscope);
        // Steps arguments are expanded where they were written (lexical scope).
        for d in &decls {
            if d.ty == ParamType::Steps
                && let Some(v) = bindings.get(&d.name).cloned()
            {
                let from = if args.contains(&d.name) {
                    caller
                } else {
                    cscope
                };
                let mut expanded = Vec::new();
                self.expand_steps(from, &v, &mut expanded, depth + 1);
                bindings.insert(d.name.clone(), expanded_steps(expanded, v.span));
            }
        }
        match body.get("steps") {
            Some(steps) => {
                let s = Scope::element(&bindings, &self.pipeline, is_orb);
                let steps = template::template(steps, &s, &mut self.rep);
                self.calls.push((cscope, name.to_string()));
                self.expand_steps(cscope, &steps, out, depth + 1);
                self.calls.pop();
            }
            None => self.error(
                self.name_span(cscope, "commands", name).unwrap_or(def.span),
                format!("command '{name}' has no `steps`"),
            ),
        }
        self.rep.context_pop();
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Command,
    Executor,
    Job,
}

/// A workflow job item being compiled.
#[derive(Clone, Debug)]
struct Inv {
    job: String,
    job_span: Span,
    args: Map,
    name: String,
    #[allow(dead_code)]
    explicit_name: bool,
    /// Other names that refer to this invocation (matrix alias, group, duplicate base).
    aliases: Vec<String>,
    /// Requires inherited from a job group.
    extra_requires: Vec<Node>,
    group: Option<String>,
}

fn key(name: &str, span: Span) -> Key {
    Key {
        name: name.to_string(),
        span,
    }
}

/// Executor keys go under the job's own: a job's executor type replaces the executor's,
/// `environment` maps merge (job wins), other keys the job sets win.
fn merge_executor(job: &mut Map, exec: Map) {
    let job_has_type = EXECUTOR_TYPES.iter().any(|t| job.contains(t));
    let mut merged = Map::default();
    for (k, v) in exec.entries {
        if job_has_type && EXECUTOR_TYPES.contains(&k.name.as_str()) {
            continue;
        }
        if k.name == "environment"
            && let Some(jenv) = job.get("environment")
        {
            let mut env = env_map(&v);
            for (jk, jv) in env_map(jenv).entries {
                env.insert(jk, jv);
            }
            merged.insert(k, Node::new(Value::Map(env), jenv.span));
            continue;
        }
        if !job.contains(&k.name) {
            merged.insert(k, v);
        }
    }
    for (k, v) in std::mem::take(&mut job.entries) {
        if k.name == "environment" && merged.contains("environment") {
            continue;
        }
        merged.insert(k, v);
    }
    *job = merged;
}

/// Expanded steps, each marked as such (see [`EXPANDED_STEP`]).
fn expanded_steps(steps: Vec<Node>, span: Span) -> Node {
    let marked = steps
        .into_iter()
        .map(|s| {
            let span = s.span;
            let entries = vec![(key(EXPANDED_STEP, span), s)];
            Node::new(Value::Map(Map { entries }), span)
        })
        .collect();
    Node::new(Value::Seq(marked), span)
}

/// An `environment` given as a map or as a list of `KEY=VALUE`.
pub fn env_map(n: &Node) -> Map {
    match &n.value {
        Value::Map(m) => m.clone(),
        Value::Seq(items) => {
            let mut m = Map::default();
            for i in items {
                if let Some(s) = i.as_str() {
                    let (k, v) = s.split_once('=').unwrap_or((s, ""));
                    m.insert(key(k, i.span), Node::str(v, i.span));
                } else if let Some(entries) = i.as_map() {
                    // `- KEY: value` items, as many real configs write them.
                    for (k, v) in &entries.entries {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
            m
        }
        _ => Map::default(),
    }
}

fn requires_entries(r: &Node, rep: &mut Reporter) -> Vec<(String, Vec<String>, Span)> {
    let items: Vec<&Node> = match &r.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        Value::Str(_) => vec![r],
        _ => {
            rep.error(Some(r.span), "`requires` must be a list");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for item in items {
        match &item.value {
            Value::Str(s) => out.push((s.clone(), vec!["success".to_string()], item.span)),
            Value::Map(m) => {
                for (k, v) in &m.entries {
                    let statuses: Vec<Node> = match &v.value {
                        Value::Seq(s) => s.clone(),
                        _ => vec![v.clone()],
                    };
                    let mut list = Vec::new();
                    for s in statuses {
                        match s.as_str() {
                            Some("terminal") => list.extend(STATUSES.iter().map(|s| s.to_string())),
                            Some(st) if STATUSES.contains(&st) => list.push(st.to_string()),
                            _ => rep.error(
                                Some(s.span),
                                format!(
                                    "invalid status '{}' in `requires`: use success, failed, canceled, unauthorized, not_run or terminal",
                                    s.scalar_text().unwrap_or_default()
                                ),
                            ),
                        }
                    }
                    list.dedup();
                    out.push((k.name.clone(), list, k.span));
                }
            }
            _ => match item.scalar_text() {
                Some(s) => out.push((s, vec!["success".to_string()], item.span)),
                None => rep.error(
                    Some(item.span),
                    "a `requires` entry must be a job name or {name: status}",
                ),
            },
        }
    }
    out
}

fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    // 0 = unvisited, 1 = on stack, 2 = done
    let mut state = vec![0u8; edges.len()];
    let mut stack: Vec<usize> = Vec::new();
    fn dfs(
        v: usize,
        edges: &[Vec<usize>],
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[v] = 1;
        stack.push(v);
        for &w in &edges[v] {
            if state[w] == 1 {
                let start = stack.iter().position(|&x| x == w).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(w);
                return Some(cycle);
            }
            if state[w] == 0
                && let Some(c) = dfs(w, edges, state, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        state[v] = 2;
        None
    }
    for v in 0..edges.len() {
        if state[v] == 0
            && let Some(c) = dfs(v, edges, &mut state, &mut stack)
        {
            return Some(c);
        }
    }
    None
}

/// Evaluates a workflow or step condition. Workflow conditions may also be expression
/// strings (§2.9); step conditions are logic statements only.
fn condition_value(cond: &Node, pipeline: &Pipeline, workflow: bool, rep: &mut Reporter) -> bool {
    let scope = Scope::pipeline_only(pipeline, true);
    if workflow
        && let Value::Str(s) = &cond.value
        && !s.trim_start().starts_with("<<")
        && let Some(e) = expr::parse(s)
    {
        let mut paths = Vec::new();
        e.paths(&mut paths);
        if !paths.is_empty() {
            return match e.eval(&mut |p| scope.lookup(p).map(|n| n.value)) {
                Ok(v) => expr::truthy(&v),
                Err(msg) => {
                    rep.error(Some(cond.span), msg);
                    false
                }
            };
        }
    }
    // Step conditions arrive templated with the job; workflow ones are templated here.
    let templated;
    let cond = if workflow {
        templated = template::template(cond, &scope, rep);
        &templated
    } else {
        cond
    };
    match expr::eval_logic(cond, 0) {
        Ok(b) => b,
        Err((span, msg)) => {
            rep.error(span.or(Some(cond.span)), msg);
            false
        }
    }
}

/// The processed-config form of a workflow.
fn workflow_node(wf: &CompiledWorkflow) -> Node {
    let span = wf.span;
    let mut jobs = Vec::new();
    for inst in &wf.jobs {
        let mut m = Map::default();
        if let Some(job) = &inst.job
            && job != &inst.name
        {
            m.insert(key("name", span), Node::str(inst.name.clone(), span));
        }
        if inst.approval {
            m.insert(key("type", span), Node::str("approval", span));
        }
        if !inst.requires.is_empty() {
            let items = inst
                .requires
                .iter()
                .map(|(n, st)| {
                    if st.len() == 1 && st[0] == "success" {
                        Node::str(n.clone(), span)
                    } else {
                        let v = if st.len() == 1 {
                            Node::str(st[0].clone(), span)
                        } else {
                            Node::new(
                                Value::Seq(st.iter().map(|s| Node::str(s.clone(), span)).collect()),
                                span,
                            )
                        };
                        Node::new(
                            Value::Map(Map {
                                entries: vec![(key(n, span), v)],
                            }),
                            span,
                        )
                    }
                })
                .collect();
            m.insert(key("requires", span), Node::new(Value::Seq(items), span));
        }
        if !inst.context.is_empty() {
            m.insert(
                key("context", span),
                Node::new(
                    Value::Seq(
                        inst.context
                            .iter()
                            .map(|c| Node::str(c.clone(), span))
                            .collect(),
                    ),
                    span,
                ),
            );
        }
        if let Some(f) = &inst.filters {
            m.insert(key("filters", span), f.clone());
        }
        if let Some(sg) = &inst.serial_group {
            m.insert(key("serial-group", span), Node::str(sg.clone(), span));
        }
        let job_key = inst.job.clone().unwrap_or_else(|| inst.name.clone());
        if m.is_empty() {
            jobs.push(Node::str(job_key, span));
        } else {
            jobs.push(Node::new(
                Value::Map(Map {
                    entries: vec![(key(&job_key, span), Node::new(Value::Map(m), span))],
                }),
                span,
            ));
        }
    }
    let mut body = Map::default();
    if let Some(t) = &wf.triggers {
        body.insert(key("triggers", span), t.clone());
    }
    if let Some(n) = &wf.max_auto_reruns {
        body.insert(key("max_auto_reruns", span), n.clone());
    }
    body.insert(key("jobs", span), Node::new(Value::Seq(jobs), span));
    Node::new(Value::Map(body), span)
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
