//! Jobs: parameters bound, body templated in its own scope, executor resolved and
//! merged, steps expanded (commands with lexical scope, `when`/`unless`, pre/post-steps).

use super::*;

impl Compiler<'_> {
    /// Expands a job: parameters, executor, steps.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn expand_job(
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
    pub(super) fn bind(
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
    pub(super) fn resolve_executor(
        &mut self,
        scope: usize,
        exec: &Node,
        depth: usize,
    ) -> Option<Map> {
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
        // A name written in the config (an argument to an orb job, say) may also name an
        // executor of the config; a name written inside an orb only names the orb's.
        let written_in_config = exec.span.source == crate::diag::SourceId(0);
        let found = self.find(scope, &name, Kind::Executor).or_else(|| {
            written_in_config
                .then(|| self.find(0, &name, Kind::Executor))
                .flatten()
        });
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
    pub(super) fn expand_steps(
        &mut self,
        scope: usize,
        steps: &Node,
        out: &mut Vec<Node>,
        depth: usize,
    ) {
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

    pub(super) fn expand_step(
        &mut self,
        scope: usize,
        step: &Node,
        out: &mut Vec<Node>,
        depth: usize,
    ) {
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
    pub(super) fn call_command(
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
                self.calls.push((cscope, name.to_string()));
                if template::tree_has_template(steps) {
                    let s = Scope::element(&bindings, &self.pipeline, is_orb);
                    let steps = template::template(steps, &s, &mut self.rep);
                    self.expand_steps(cscope, &steps, out, depth + 1);
                } else {
                    // Nothing to substitute: expand the shared body without copying it.
                    self.expand_steps(cscope, steps, out, depth + 1);
                }
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

/// Executor keys go under the job's own: a job's executor type replaces the executor's,
/// `environment` maps merge (job wins), other keys the job sets win.
pub(super) fn merge_executor(job: &mut Map, exec: Map) {
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
pub(super) fn expanded_steps(steps: Vec<Node>, span: Span) -> Node {
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
