//! `<< ... >>` template tags inside scalar strings (spec §2.3–2.5).
//!
//! A scalar that is exactly one tag is replaced by the typed value (an integer stays an
//! integer, a steps list is spliced by the caller). Tags inside text are stringified.
//! `<<# ref >>X<</ ref >>` and `<<^ ref >>X<</ ref >>` are sections, `\<<` is a literal
//! `<<`. A tag whose content is not an expression over `parameters.*`, `pipeline.*` or
//! `matrix.*` (a shell heredoc such as `cat <<EOF >> out`) is left as written.

use crate::diag::{Reporter, Span};
use crate::expr::{self, Expr};
use crate::yaml::{Node, Value};
use indexmap::IndexMap;

/// Values bound to names (element parameters or matrix values).
pub type Bindings = IndexMap<String, Node>;

/// Pipeline values and parameters (spec §2.6–2.7).
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    /// `pipeline.git.branch` → value. Missing known values read as `""`.
    pub values: IndexMap<String, Value>,
    /// Resolved pipeline parameters.
    pub parameters: Bindings,
}

/// Pipeline values CircleCI defines; reading one that is not set gives `""`.
pub const KNOWN_PIPELINE_VALUES: &[&str] = &[
    "pipeline.id",
    "pipeline.number",
    "pipeline.name",
    "pipeline.definition.id",
    "pipeline.project.git_url",
    "pipeline.project.type",
    "pipeline.project.slug",
    "pipeline.integration_source",
    "pipeline.git.tag",
    "pipeline.git.branch",
    "pipeline.git.branch.is_default",
    "pipeline.git.revision",
    "pipeline.git.base_revision",
    "pipeline.git.repo_url",
    "pipeline.git.repo_owner",
    "pipeline.git.repo_name",
    "pipeline.git.repo_id",
    "pipeline.git.ssh_checkout_url",
    "pipeline.git.commit.url",
    "pipeline.git.commit.subject",
    "pipeline.git.commit.body",
    "pipeline.git.commit.author_login",
    "pipeline.git.commit.author_name",
    "pipeline.git.commit.author_email",
    "pipeline.git.commit.author_avatar_url",
    "pipeline.config.repository.name",
    "pipeline.config.repository.url",
    "pipeline.config.file_path",
    "pipeline.config.ref",
    "pipeline.config.sha",
    "pipeline.config_source",
    "pipeline.trigger.type",
    "pipeline.trigger.id",
    "pipeline.trigger.name",
    "pipeline.trigger.received_at",
    "pipeline.trigger_source",
    "pipeline.schedule.name",
    "pipeline.schedule.id",
    "pipeline.event.name",
    "pipeline.event.action",
    "pipeline.event.context.github.pr_url",
    "pipeline.trigger_parameters.webhook.body",
];

/// Prefixes under which any pipeline value name is accepted (payload-shaped values).
const OPEN_PIPELINE_PREFIXES: &[&str] = &[
    "pipeline.event.github.",
    "pipeline.trigger_parameters.",
    "pipeline.deploy.",
];

/// What a template may refer to.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub params: Option<&'a Bindings>,
    pub pipeline: &'a Pipeline,
    /// False inside orb bodies: pipeline parameters are not visible there.
    pub pipeline_params: bool,
    pub matrix: Option<&'a Bindings>,
}

impl<'a> Scope<'a> {
    pub fn pipeline_only(pipeline: &'a Pipeline, pipeline_params: bool) -> Self {
        Scope {
            params: None,
            pipeline,
            pipeline_params,
            matrix: None,
        }
    }

    /// Inside an element (job, command, executor) with its bound parameters; orb bodies
    /// do not see pipeline parameters.
    pub fn element(params: &'a Bindings, pipeline: &'a Pipeline, in_orb: bool) -> Self {
        Scope {
            params: Some(params),
            pipeline,
            pipeline_params: !in_orb,
            matrix: None,
        }
    }

    /// Resolves a dotted path, or says why not in CircleCI's words.
    pub fn lookup(&self, path: &str) -> Result<Node, String> {
        let none = Span::default();
        if let Some(name) = path.strip_prefix("parameters.") {
            return self
                .params
                .and_then(|p| p.get(name))
                .cloned()
                .ok_or_else(|| {
                    format!("Arguments referenced without declared parameters: {name}")
                });
        }
        if let Some(name) = path.strip_prefix("pipeline.parameters.") {
            if self.pipeline_params
                && let Some(v) = self.pipeline.parameters.get(name)
            {
                return Ok(v.clone());
            }
            return Err(format!(
                "Referred to a variable \"pipeline.parameters.{name}\" that does not exist"
            ));
        }
        if path.starts_with("pipeline.") {
            if let Some(v) = self.pipeline.values.get(path) {
                return Ok(Node::new(v.clone(), none));
            }
            if KNOWN_PIPELINE_VALUES.contains(&path)
                || OPEN_PIPELINE_PREFIXES.iter().any(|p| path.starts_with(p))
            {
                return Ok(Node::str("", none));
            }
            return Err(format!(
                "Referred to a variable \"{path}\" that does not exist"
            ));
        }
        if let Some(name) = path.strip_prefix("matrix.") {
            return self
                .matrix
                .and_then(|m| m.get(name))
                .cloned()
                .ok_or_else(|| {
                    format!("Referred to a variable \"matrix.{name}\" that does not exist")
                });
        }
        Err(format!("Unknown variable \"{path}\""))
    }
}

/// Parses tag content as an expression over CircleCI references; `None` leaves it literal.
fn reference_expr(content: &str) -> Option<Expr> {
    // Configs repeat the same few tags many times: parse each text once per thread.
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, Option<Expr>>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    if let Some(hit) = CACHE.with(|c| c.borrow().get(content).cloned()) {
        return hit;
    }
    let parsed = reference_expr_uncached(content);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 8192 {
            c.clear();
        }
        c.insert(content.to_string(), parsed.clone());
    });
    parsed
}

fn reference_expr_uncached(content: &str) -> Option<Expr> {
    let e = expr::parse(content.trim())?;
    let mut paths = Vec::new();
    e.paths(&mut paths);
    let ours = |p: &String| {
        p.starts_with("parameters.") || p.starts_with("pipeline.") || p.starts_with("matrix.")
    };
    (!paths.is_empty() && paths.iter().all(ours)).then_some(e)
}

fn eval(e: &Expr, scope: &Scope<'_>) -> Result<Node, String> {
    // A bare path keeps its node (lists, maps, positions); expressions give scalars.
    if let Expr::Path(p) = e {
        return scope.lookup(p);
    }
    e.eval(&mut |p| scope.lookup(p).map(|n| n.value))
        .map(|v| Node::new(v, Span::default()))
}

/// True when any string (or key) of the tree holds a `<<`: only then can templating
/// change it.
pub fn tree_has_template(node: &Node) -> bool {
    match &node.value {
        Value::Str(s) => has_template(s),
        Value::Seq(items) => items.iter().any(tree_has_template),
        Value::Map(m) => m
            .entries
            .iter()
            .any(|(k, v)| has_template(&k.name) || tree_has_template(v)),
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(..) => false,
    }
}

/// True when the string holds anything the templater would change.
pub fn has_template(s: &str) -> bool {
    s.contains("<<")
}

/// The expression of a string that is exactly one tag, if it is one.
fn whole_tag(s: &str) -> Option<Expr> {
    let t = s.trim();
    let inner = t.strip_prefix("<<")?.strip_suffix(">>")?;
    if inner.contains("<<") || inner.contains(">>") {
        return None;
    }
    if inner.starts_with(['#', '^', '/']) {
        return None;
    }
    reference_expr(inner)
}

/// Renders a string; `Ok(None)` when nothing changed.
pub fn render_str(s: &str, span: Span, scope: &Scope<'_>, rep: &mut Reporter) -> Option<Node> {
    if !has_template(s) {
        return None;
    }
    if let Some(e) = whole_tag(s) {
        return match eval(&e, scope) {
            Ok(mut node) => {
                if node.span == Span::default() {
                    node.span = span;
                }
                Some(node)
            }
            Err(msg) => {
                rep.error(Some(span), msg);
                Some(Node::str("", span))
            }
        };
    }
    let mut errors = Vec::new();
    let out = render_text(s, scope, &mut errors, 0);
    for e in errors {
        rep.error(Some(span), e);
    }
    if out == s {
        None
    } else {
        Some(Node::str(out, span))
    }
}

fn render_text(s: &str, scope: &Scope<'_>, errors: &mut Vec<String>, depth: usize) -> String {
    if depth > 16 {
        errors.push("template sections nested too deeply".into());
        return String::new();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("<<") {
        if rest[..i].ends_with('\\') {
            out.push_str(&rest[..i - 1]);
            out.push_str("<<");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find(">>") else {
            out.push_str("<<");
            rest = after;
            continue;
        };
        let content = &after[..j];
        if content.contains("<<") {
            out.push_str("<<");
            rest = after;
            continue;
        }
        let tail = &after[j + 2..];
        if let Some(inverted) = content
            .strip_prefix('#')
            .map(|r| (false, r))
            .or_else(|| content.strip_prefix('^').map(|r| (true, r)))
        {
            let (inverted, reference) = inverted;
            let reference = reference.trim();
            if let (Some(e), Some((body, after_close))) =
                (reference_expr(reference), find_close(tail, reference))
            {
                let on = match eval(&e, scope) {
                    Ok(n) => expr::truthy(&n.value),
                    Err(msg) => {
                        errors.push(msg);
                        false
                    }
                };
                if on != inverted {
                    out.push_str(&render_text(body, scope, errors, depth + 1));
                }
                rest = after_close;
                continue;
            }
        }
        match reference_expr(content) {
            Some(e) => match eval(&e, scope) {
                Ok(node) => match stringify(&node.value) {
                    Some(text) => out.push_str(&text),
                    None => errors.push(format!(
                        "{} cannot be used inside a string: it is a {}",
                        content.trim(),
                        node.type_name()
                    )),
                },
                Err(msg) => errors.push(msg),
            },
            None => {
                out.push_str("<<");
                out.push_str(content);
                out.push_str(">>");
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Finds `<</ reference >>` in `s`: the section body and the text after the close.
fn find_close<'s>(s: &'s str, reference: &str) -> Option<(&'s str, &'s str)> {
    let mut from = 0;
    while let Some(k) = s[from..].find("<</") {
        let start = from + k;
        let after = &s[start + 3..];
        let end = after.find(">>")?;
        if after[..end].trim() == reference {
            return Some((&s[..start], &after[end + 2..]));
        }
        from = start + 3;
    }
    None
}

/// Scalar as text for in-string use; `None` for lists and maps.
pub fn stringify(v: &Value) -> Option<String> {
    v.scalar_text()
}

/// Templates every scalar (and mapping key) of a tree.
pub fn template(node: &Node, scope: &Scope<'_>, rep: &mut Reporter) -> Node {
    let mut out = node.clone();
    template_mut(&mut out, scope, rep);
    out
}

/// Templates a tree in place: only strings holding `<<` are rewritten.
pub fn template_mut(node: &mut Node, scope: &Scope<'_>, rep: &mut Reporter) {
    template_in(node, scope, rep, false, 0)
}

fn template_in(node: &mut Node, scope: &Scope<'_>, rep: &mut Reporter, in_env: bool, depth: usize) {
    if depth > 200 {
        return;
    }
    match &mut node.value {
        Value::Str(s) => {
            if let Some(mut n) = render_str(s, node.span, scope, rep) {
                // Booleans substituted into an environment map become 1 / 0 (§2.5).
                if in_env && let Value::Bool(b) = n.value {
                    n.value = Value::Str(if b { "1" } else { "0" }.into());
                }
                *node = n;
            }
        }
        Value::Seq(items) => {
            for i in items {
                template_in(i, scope, rep, false, depth + 1);
            }
        }
        Value::Map(m) => {
            let mut renamed = false;
            for (k, v) in &mut m.entries {
                if let Some(n) = render_str(&k.name, k.span, scope, rep)
                    && let Some(name) = stringify(&n.value)
                {
                    k.name = name;
                    renamed = true;
                }
                // `environment:` marks its children; deeper maps are not env maps.
                let env_child = in_env_key(&k.name);
                template_in(v, scope, rep, in_env || env_child, depth + 1);
            }
            if renamed {
                // A templated key may now repeat another: the later one wins, in place.
                let entries = std::mem::take(&mut m.entries);
                for (k, v) in entries {
                    m.insert(k, v);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(..) => {}
    }
}

fn in_env_key(name: &str) -> bool {
    name == "environment"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SourceId;

    fn scope_with<'a>(params: &'a Bindings, pipeline: &'a Pipeline) -> Scope<'a> {
        Scope {
            params: Some(params),
            pipeline,
            pipeline_params: true,
            matrix: None,
        }
    }

    fn n(v: Value) -> Node {
        Node::new(v, Span::default())
    }

    fn render(s: &str) -> (Option<Node>, Vec<String>) {
        let mut params = Bindings::new();
        params.insert("b".into(), n(Value::Bool(true)));
        params.insert("f".into(), n(Value::Bool(false)));
        params.insert("n".into(), n(Value::Int(3)));
        params.insert("s".into(), n(Value::Str("hi".into())));
        let pipeline = Pipeline::default();
        let scope = scope_with(&params, &pipeline);
        let mut rep = Reporter::default();
        let out = render_str(
            s,
            Span {
                source: SourceId(0),
                line: 1,
                col: 1,
                len: 1,
            },
            &scope,
            &mut rep,
        );
        (out, rep.diags.into_iter().map(|d| d.message).collect())
    }

    fn text(s: &str) -> String {
        match render(s).0 {
            Some(node) => stringify(&node.value).unwrap(),
            None => s.to_string(),
        }
    }

    #[test]
    fn whole_scalar_keeps_type() {
        assert_eq!(render("<< parameters.n >>").0.unwrap().value, Value::Int(3));
        assert_eq!(
            render("<<parameters.b>>").0.unwrap().value,
            Value::Bool(true)
        );
    }

    #[test]
    fn in_string_and_sections() {
        assert_eq!(
            text("echo << parameters.b >> << parameters.n >>"),
            "echo true 3"
        );
        assert_eq!(text("ls <<# parameters.b >>-a<</ parameters.b >>"), "ls -a");
        assert_eq!(text("ls <<^ parameters.b >>-a<</ parameters.b >>x"), "ls x");
        assert_eq!(text("ls <<# parameters.f >>-a<</parameters.f>>"), "ls ");
    }

    #[test]
    fn escapes_and_heredocs() {
        assert_eq!(text(r"cat \<<EOF"), "cat <<EOF");
        assert_eq!(text(r"echo \<< parameters.s >>"), "echo << parameters.s >>");
        assert_eq!(text("cat <<EOF >> out.txt"), "cat <<EOF >> out.txt");
        assert_eq!(text("a << b"), "a << b");
    }

    #[test]
    fn undeclared_is_an_error() {
        let (_, errs) = render("echo << parameters.nope >>");
        assert_eq!(
            errs,
            ["Arguments referenced without declared parameters: nope"]
        );
        let (_, errs) = render("echo << pipeline.parameters.nope >>");
        assert_eq!(
            errs,
            ["Referred to a variable \"pipeline.parameters.nope\" that does not exist"]
        );
    }
}
