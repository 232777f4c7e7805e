//! Writing a node tree back out as YAML (block style, the shape `circleci config
//! process` prints) or as JSON.

use crate::yaml::{self, Node, Value};

/// Renders a tree as a YAML document.
pub fn to_yaml(node: &Node) -> String {
    let mut out = String::new();
    match &node.value {
        Value::Map(m) if !m.is_empty() => write_map(&mut out, node, 0),
        Value::Seq(s) if !s.is_empty() => write_seq(&mut out, node, 0),
        _ => {
            out.push_str(&scalar(node, 0));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(out: &mut String, node: &Node, ind: usize) {
    let Value::Map(m) = &node.value else { return };
    for (i, (k, v)) in m.entries.iter().enumerate() {
        if i > 0 {
            indent(out, ind);
        }
        out.push_str(&quote_str(&k.name));
        out.push(':');
        write_value(out, v, ind);
    }
}

fn write_seq(out: &mut String, node: &Node, ind: usize) {
    let Value::Seq(items) = &node.value else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            indent(out, ind);
        }
        out.push('-');
        match &item.value {
            Value::Map(m) if !m.is_empty() => {
                out.push(' ');
                write_map(out, item, ind + 2);
            }
            Value::Seq(s) if !s.is_empty() => {
                out.push(' ');
                write_seq(out, item, ind + 2);
            }
            _ => {
                out.push(' ');
                out.push_str(&scalar(item, ind + 2));
                out.push('\n');
            }
        }
    }
}

/// Writes the value after `key:`.
fn write_value(out: &mut String, v: &Node, ind: usize) {
    match &v.value {
        Value::Map(m) if !m.is_empty() => {
            out.push('\n');
            indent(out, ind + 2);
            write_map(out, v, ind + 2);
        }
        Value::Seq(s) if !s.is_empty() => {
            out.push('\n');
            indent(out, ind);
            write_seq(out, v, ind);
        }
        _ => {
            out.push(' ');
            out.push_str(&scalar(v, ind + 2));
            out.push('\n');
        }
    }
}

fn scalar(node: &Node, ind: usize) -> String {
    match &node.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(_, raw) => raw.clone(),
        Value::Str(s) => {
            if s.contains('\n')
                && let Some(block) = block_literal(s, ind)
            {
                return block;
            }
            quote_str(s)
        }
        Value::Map(_) => "{}".into(),
        Value::Seq(_) => "[]".into(),
    }
}

/// A `|` block for multi-line text, when the text allows one.
fn block_literal(s: &str, ind: usize) -> Option<String> {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let body = s.trim_end_matches('\n');
    let first = body.lines().find(|l| !l.is_empty())?;
    if first.starts_with(' ') || first.starts_with('\t') {
        return None;
    }
    if body
        .chars()
        .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{feff}')
        || body.contains('\r')
    {
        return None;
    }
    if body
        .lines()
        .any(|l| l.trim_end() != l && l.ends_with(['\t']))
    {
        return None;
    }
    let mut out = format!("|{chomp}");
    for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', ind));
            out.push_str(line);
        }
    }
    Some(out)
}

/// A string as a YAML scalar: plain when it reads back as the same string.
fn quote_str(s: &str) -> String {
    if plain_ok(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || c == '\u{feff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn plain_ok(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return false;
    }
    if !matches!(yaml::plain_value(s), Value::Str(_)) {
        return false;
    }
    let first = s.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        // `-x`, `?x` and `:x` are fine as plain when not followed by a space.
        let second = s.chars().nth(1);
        let indicator_ok =
            matches!(first, '-' | '?' | ':') && second.is_some_and(|c| !c.is_whitespace());
        if !indicator_ok {
            return false;
        }
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.contains('\t') {
        return false;
    }
    if s.chars().any(|c| {
        c.is_control() || c == '\u{feff}' || c == '\u{85}' || c == '\u{2028}' || c == '\u{2029}'
    }) {
        return false;
    }
    // Flow indicators are safe in block context, but `<<` reads as a merge key.
    if s == "<<" {
        return false;
    }
    !matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// Converts a tree to JSON (mappings keep their order).
pub fn to_json(node: &Node) -> serde_json::Value {
    match &node.value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Float(f, raw) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| serde_json::Value::String(raw.clone())),
        Value::Str(s) => serde_json::Value::String(s.clone()),
        Value::Seq(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Map(m) => serde_json::Value::Object(
            m.entries
                .iter()
                .map(|(k, v)| (k.name.clone(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SourceId;
    use crate::yaml::{Budget, parse};

    /// Emitting then parsing gives the same tree.
    fn round_trip(src: &str) {
        let a = parse(src, SourceId(0), &Budget::default()).unwrap();
        let text = to_yaml(&a);
        let b = parse(&text, SourceId(0), &Budget::default())
            .unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        assert_eq!(to_json(&a), to_json(&b), "emitted:\n{text}");
    }

    #[test]
    fn round_trips() {
        round_trip(
            "a: 1\nb: [x, 'y: z', '', ' lead', 'true', '1.0', \"multi\\nline\\n\", \"a\\tb\"]\n",
        );
        round_trip(
            "jobs:\n  b:\n    steps:\n      - run: {command: \"echo hi\\n  indented\\n\", name: x}\n      - checkout\n",
        );
        round_trip(
            "x: \"- dash\"\ny: '-dash'\nz: '#c'\nw: 'a #b'\nv: '<<'\nu: yes\nt: \"  lead\\nx\"\ns: \"no newline\\nend\"\n",
        );
        round_trip("e: {}\nf: []\ng: null\nh: [[1, 2], {a: b}]\n");
    }
}
