//! Parameter declarations and argument binding (spec §2.1, §2.2, §2.10).

use crate::diag::{Reporter, Span};
use crate::template::Bindings;
use crate::yaml::{Map, Node, Value};

/// A declared parameter type.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamType {
    String,
    Boolean,
    Integer,
    Enum(Vec<String>),
    Executor,
    Steps,
    EnvVarName,
}

impl ParamType {
    pub fn name(&self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Boolean => "boolean",
            ParamType::Integer => "integer",
            ParamType::Enum(_) => "enum",
            ParamType::Executor => "executor",
            ParamType::Steps => "steps",
            ParamType::EnvVarName => "env_var_name",
        }
    }
}

/// One declared parameter.
#[derive(Clone, Debug)]
pub struct ParamDecl {
    pub name: String,
    pub ty: ParamType,
    pub default: Option<Node>,
    pub span: Span,
}

/// Which element declares the parameters: pipeline parameters allow fewer types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Pipeline,
    Element,
}

/// Reads a `parameters:` map. Bad declarations are reported and skipped.
pub fn parse_decls(node: Option<&Node>, owner: Owner, rep: &mut Reporter) -> Vec<ParamDecl> {
    let Some(node) = node else {
        return Vec::new();
    };
    if node.is_null() {
        return Vec::new();
    }
    let Some(map) = node.as_map() else {
        rep.error(
            Some(node.span),
            format!("parameters must be a map, found {}", node.type_name()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, decl) in &map.entries {
        let name = &key.name;
        let Some(d) = decl.as_map() else {
            rep.error(
                Some(decl.span),
                format!(
                    "parameter '{name}' must be a map with a `type`, found {}",
                    decl.type_name()
                ),
            );
            continue;
        };
        for (k, _) in &d.entries {
            if !matches!(k.name.as_str(), "type" | "default" | "description" | "enum") {
                rep.error(
                    Some(k.span),
                    format!(
                        "extraneous key [{}] is not permitted in parameter '{name}'\nPermitted keys: type, default, description, enum",
                        k.name
                    ),
                );
            }
        }
        let Some(ty_node) = d.get("type") else {
            rep.error(Some(key.span), format!("parameter '{name}' has no `type`"));
            continue;
        };
        let ty = match ty_node.as_str() {
            Some("string") => ParamType::String,
            Some("boolean") => ParamType::Boolean,
            Some("integer") => ParamType::Integer,
            Some("enum") => {
                let values: Option<Vec<String>> = d
                    .get("enum")
                    .and_then(Node::as_seq)
                    .map(|items| items.iter().filter_map(Node::scalar_text).collect());
                match values {
                    Some(v) if !v.is_empty() => ParamType::Enum(v),
                    _ => {
                        rep.error(
                            Some(ty_node.span),
                            format!("enum parameter '{name}' needs a non-empty `enum` list"),
                        );
                        continue;
                    }
                }
            }
            Some("executor") if owner == Owner::Element => ParamType::Executor,
            Some("steps") if owner == Owner::Element => ParamType::Steps,
            Some("env_var_name") if owner == Owner::Element => ParamType::EnvVarName,
            Some(other) => {
                let allowed = match owner {
                    Owner::Pipeline => "string, boolean, integer, enum",
                    Owner::Element => {
                        "string, boolean, integer, enum, executor, steps, env_var_name"
                    }
                };
                rep.error(
                    Some(ty_node.span),
                    format!(
                        "parameter '{name}' has an invalid type '{other}' (allowed: {allowed})"
                    ),
                );
                continue;
            }
            None => {
                rep.error(
                    Some(ty_node.span),
                    format!("parameter '{name}': `type` must be a string"),
                );
                continue;
            }
        };
        let default = d.get("default").cloned();
        if let Some(def) = &default
            && let Err(expected) = check(&ty, def)
        {
            rep.error(
                Some(def.span),
                format!(
                    "Parameter error: default value of parameter '{name}' is '{}' (type {}): expected {expected}",
                    def.scalar_text().unwrap_or_default(),
                    value_type(&def.value)
                ),
            );
            // Kept (the error is reported): uses of the parameter are not errors too.
        }
        if owner == Owner::Pipeline && default.is_none() {
            rep.error(
                Some(key.span),
                format!("pipeline parameter '{name}' needs a `default`"),
            );
        }
        out.push(ParamDecl {
            name: name.clone(),
            ty,
            default,
            span: key.span,
        });
    }
    out
}

/// CircleCI's type word for a value in messages.
pub fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Int(_) | Value::Float(..) => "number",
        other => other.type_name(),
    }
}

/// How CircleCI shows a value in a type error: strings quoted.
fn show(v: &Node) -> String {
    match &v.value {
        Value::Str(s) => format!("\"{s}\""),
        Value::Seq(_) | Value::Map(_) => v.type_name().to_string(),
        _ => v.scalar_text().unwrap_or_default(),
    }
}

/// Checks a value against a type; `Err` holds "type: T" / "one of: ..." for messages.
pub fn check(ty: &ParamType, v: &Node) -> Result<(), String> {
    let ok = match (ty, &v.value) {
        (ParamType::String, Value::Str(_)) => true,
        (ParamType::Boolean, Value::Bool(_)) => true,
        (ParamType::Integer, Value::Int(_)) => true,
        (ParamType::Enum(allowed), _) => {
            if let Some(t) = v.scalar_text().filter(|_| !matches!(v.value, Value::Null)) {
                if allowed.contains(&t) {
                    true
                } else {
                    return Err(format!("one of: {}", allowed.join(", ")));
                }
            } else {
                false
            }
        }
        (ParamType::Executor, Value::Str(_)) => true,
        (ParamType::Executor, Value::Map(m)) => m.get("name").and_then(Node::as_str).is_some(),
        (ParamType::Steps, Value::Seq(_) | Value::Null) => true,
        (ParamType::EnvVarName, Value::Str(s)) => is_env_var_name(s),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("type: {}", ty.name()))
    }
}

/// POSIX-ish environment variable names (CircleCI also accepts `-`).
pub fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Binds `args` to `decls`: defaults, unknown and missing arguments, type checks.
/// `call` is where the element is invoked, for messages about missing arguments.
pub fn bind(decls: &[ParamDecl], args: &Map, call: Span, rep: &mut Reporter) -> Bindings {
    let mut out = Bindings::new();
    let unexpected: Vec<&str> = args
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !decls.iter().any(|d| d.name == *k))
        .collect();
    if !unexpected.is_empty() {
        let span = args.get_entry(unexpected[0]).map(|(k, _)| k.span);
        rep.error(
            span,
            format!("Unexpected argument(s): {}", unexpected.join(", ")),
        );
    }
    let mut missing = Vec::new();
    for d in decls {
        let value = match (args.get(&d.name), &d.default) {
            (Some(v), _) => {
                let v = coerce(&d.ty, v);
                if let Err(expected) = check(&d.ty, &v) {
                    rep.error(
                        Some(v.span),
                        format!(
                            "Type error for argument {}: expected {expected}, actual value: {} (type {})",
                            d.name,
                            show(&v),
                            value_type(&v.value)
                        ),
                    );
                    // Bound anyway (the error is reported) so uses do not cascade.
                    match &d.default {
                        Some(def) => coerce(&d.ty, def),
                        None => coerce(&d.ty, &Node::new(Value::Null, v.span)),
                    }
                } else {
                    v
                }
            }
            (None, Some(def)) => coerce(&d.ty, def),
            (None, None) => {
                missing.push(d.name.as_str());
                coerce(&d.ty, &Node::new(Value::Null, call))
            }
        };
        out.insert(d.name.clone(), value);
    }
    if !missing.is_empty() {
        rep.error(
            Some(call),
            format!("Missing required argument(s): {}", missing.join(", ")),
        );
    }
    out
}

/// Normalises values that CircleCI treats alike: a null steps list is empty.
fn coerce(ty: &ParamType, v: &Node) -> Node {
    match (ty, &v.value) {
        (ParamType::Steps, Value::Null) => Node::new(Value::Seq(Vec::new()), v.span),
        _ => v.clone(),
    }
}
