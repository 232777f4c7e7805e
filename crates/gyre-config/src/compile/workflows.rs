//! Workflows: `when`/`unless`, job items (matrix, job groups), final names, `requires`
//! with statuses and cycle checks, filters, and the processed `workflows:` form.

use super::*;

impl Compiler<'_> {
    pub(super) fn workflows(&mut self, top: &Map) -> Option<Vec<CompiledWorkflow>> {
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

    pub(super) fn check_triggers(&mut self, wf: &str, t: &Node) {
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
    pub(super) fn workflow_enabled(&mut self, name: &str, body: &Map) -> bool {
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
    pub(super) fn workflow(&mut self, name: &str, span: Span, items: &[Node]) -> CompiledWorkflow {
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
    pub(super) fn invocation(
        &mut self,
        item: &Node,
        out: &mut Vec<Inv>,
        group: Option<&Inv>,
        depth: usize,
    ) {
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
                name: explicit_name.unwrap_or(default_name),
                aliases: alias.iter().cloned().collect(),
                extra_requires: Vec::new(),
                group: None,
                matrix_alias: alias.clone(),
            };
            if let Some(g) = group {
                inv.group = Some(g.name.clone());
                inv.aliases.push(g.name.clone());
            }
            out.push(inv);
        }
    }

    pub(super) fn expand_group(
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
            name: group_name.clone(),
            aliases: Vec::new(),
            extra_requires: Vec::new(),
            group: None,
            matrix_alias: None,
        };
        let start = out.len();
        for item in items {
            self.invocation(item, out, Some(&marker), 1);
        }
        // A group invoked under another name (to run it twice) names its jobs
        // `<name>-<job>`, and its internal requires follow.
        if group_name != group {
            let members: Vec<String> = out[start..]
                .iter()
                .flat_map(|i| std::iter::once(i.name.clone()).chain(i.aliases.iter().cloned()))
                .filter(|n| *n != group_name)
                .collect();
            let rename = |n: &str| {
                if members.iter().any(|m| m == n) {
                    format!("{group_name}-{n}")
                } else {
                    n.to_string()
                }
            };
            for inv in &mut out[start..] {
                inv.name = rename(&inv.name);
                for a in &mut inv.aliases {
                    if *a != group_name {
                        *a = rename(a);
                    }
                }
                if let Some(r) = inv.args.get("requires").cloned() {
                    inv.args
                        .insert(key("requires", r.span), rename_requires(&r, &rename));
                }
            }
        }
        // A serial group on the group applies to each of its jobs.
        if let Some(sg) = args.get("serial-group") {
            self.rep.warning(
                Some(sg.span),
                "serial-group on a job group is applied to each of its jobs; the group as a whole is not serialized",
            );
            for inv in &mut out[start..] {
                if !inv.args.contains("serial-group") {
                    inv.args.insert(key("serial-group", sg.span), sg.clone());
                }
            }
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
    pub(super) fn matrix(&mut self, args: &Map) -> Vec<Bindings> {
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
    pub(super) fn finish_workflow(&mut self, wf: &str, mut invs: Vec<Inv>) -> Vec<Instance> {
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
    pub(super) fn instance(
        &mut self,
        inv: &Inv,
        requires: Vec<(String, Vec<String>)>,
    ) -> Option<Instance> {
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
            matrix_alias: inv.matrix_alias.clone(),
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

    pub(super) fn check_filters(&mut self, f: &Node) {
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
}

/// A workflow job item being compiled.
#[derive(Clone, Debug)]
pub(super) struct Inv {
    job: String,
    job_span: Span,
    args: Map,
    name: String,
    /// Other names that refer to this invocation (matrix alias, group, duplicate base).
    aliases: Vec<String>,
    /// Requires inherited from a job group.
    extra_requires: Vec<Node>,
    group: Option<String>,
    /// The matrix alias this invocation is an instance of.
    matrix_alias: Option<String>,
}

pub(super) fn requires_entries(r: &Node, rep: &mut Reporter) -> Vec<(String, Vec<String>, Span)> {
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

pub(super) fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
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
pub(super) fn condition_value(
    cond: &Node,
    pipeline: &Pipeline,
    workflow: bool,
    rep: &mut Reporter,
) -> bool {
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
pub(super) fn workflow_node(wf: &CompiledWorkflow) -> Node {
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

/// `requires` with job names passed through `rename` (strings and `{name: status}` keys).
fn rename_requires(r: &Node, rename: &dyn Fn(&str) -> String) -> Node {
    let one = |item: &Node| -> Node {
        match &item.value {
            Value::Str(s) => Node::str(rename(s), item.span),
            Value::Map(m) => Node::new(
                Value::Map(Map {
                    entries: m
                        .entries
                        .iter()
                        .map(|(k, v)| (key(&rename(&k.name), k.span), v.clone()))
                        .collect(),
                }),
                item.span,
            ),
            _ => item.clone(),
        }
    };
    match &r.value {
        Value::Seq(items) => Node::new(Value::Seq(items.iter().map(one).collect()), r.span),
        _ => one(r),
    }
}
