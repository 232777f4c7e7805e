//! Orb imports: registry references (pins resolved through the `OrbSource`), inline
//! orbs, orbs that import orbs, and the lenient handling of missing orbs.

use super::*;

impl Compiler<'_> {
    /// Imports the `orbs:` of a scope (registry references, inline orbs).
    pub(super) fn import_orbs(
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

    pub(super) fn orb_scope(&mut self, body: &Map, depth: usize) -> usize {
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

    pub(super) fn registry_orb(&mut self, text: &str, span: Span, depth: usize) -> Option<usize> {
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

    pub(super) fn load_orb(
        &mut self,
        ns: &str,
        name: &str,
        version: &OrbVersion,
        span: Span,
    ) -> Option<Node> {
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
}
