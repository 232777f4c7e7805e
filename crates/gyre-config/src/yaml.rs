//! A YAML document tree with a position on every node.
//!
//! Built from `saphyr-parser` events: anchors and aliases are resolved (an alias is a
//! copy of its anchor's node, with the anchor's positions), merge keys (`<<: *a`,
//! `<<: [*a, *b]`, nested) are applied as YAML 1.1 specifies (explicit keys win,
//! earlier merges win over later ones), and plain scalars are typed with the YAML 1.2
//! core schema (only `true`/`false` are booleans). A node budget stops alias bombs.

use crate::diag::{Diagnostic, SourceId, Span};
use saphyr_parser::{Event, Parser, ScalarStyle};

/// A YAML node and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

/// The value of a node.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// A float, with the text it was written as (`2.1` stays `2.1`).
    Float(f64, String),
    Str(String),
    Seq(Vec<Node>),
    Map(Map),
}

/// A mapping with string keys, in source order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Map {
    pub entries: Vec<(Key, Node)>,
}

/// A mapping key and its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

impl Map {
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, v)| v)
    }

    pub fn get_entry(&self, name: &str) -> Option<(&Key, &Node)> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(k, v)| (k, v))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`, replacing an existing entry in place.
    pub fn insert(&mut self, key: Key, value: Node) {
        if let Some(slot) = self.entries.iter_mut().find(|(k, _)| k.name == key.name) {
            slot.1 = value;
        } else {
            self.entries.push((key, value));
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Node> {
        let idx = self.entries.iter().position(|(k, _)| k.name == name)?;
        Some(self.entries.remove(idx).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(k, v)| (k.name.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Node {
    pub fn new(value: Value, span: Span) -> Self {
        Node { value, span }
    }

    pub fn str(s: impl Into<String>, span: Span) -> Self {
        Node::new(Value::Str(s.into()), span)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// `map.get(key)` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map().and_then(|m| m.get(key))
    }

    /// The YAML type name CircleCI uses in messages.
    pub fn type_name(&self) -> &'static str {
        self.value.type_name()
    }

    /// The scalar rendered as text (strings as-is, numbers and booleans in YAML form).
    pub fn scalar_text(&self) -> Option<String> {
        self.value.scalar_text()
    }

    /// Number of nodes in this tree.
    pub fn count(&self) -> usize {
        match &self.value {
            Value::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Value::Map(m) => 1 + m.entries.iter().map(|(_, v)| 1 + v.count()).sum::<usize>(),
            _ => 1,
        }
    }
}

impl Value {
    /// A scalar as text (strings as-is, numbers and booleans in YAML form, null as
    /// empty); `None` for lists and maps.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(_, raw) => Some(raw.clone()),
            Value::Str(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(..) => "float",
            Value::Str(_) => "string",
            Value::Seq(_) => "sequence",
            Value::Map(_) => "mapping",
        }
    }
}

/// Limits that keep hostile input cheap.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Most nodes a document may expand to, aliases included.
    pub max_nodes: usize,
    /// Deepest nesting accepted.
    pub max_depth: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_nodes: 2_000_000,
            max_depth: 256,
        }
    }
}

/// Parses one YAML document. An empty document is `Null`.
pub fn parse(text: &str, source: SourceId, budget: &Budget) -> Result<Node, Diagnostic> {
    let mut builder = Builder {
        source,
        anchors: Vec::new(),
        stack: Vec::new(),
        root: None,
        nodes: 0,
        budget,
        docs: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => {
                let at = builder.span(&span.start);
                if builder.event(event, at)? {
                    break;
                }
            }
            Err(err) => {
                let m = err.marker();
                let mut span = Span {
                    source,
                    line: m.line() as u32,
                    col: m.col() as u32 + 1,
                    len: 1,
                };
                let mut info = err.info().to_string();
                let all = yaml_lines(text);
                // At the end of the text: show the last line, not one past it.
                let lines = all.len() as u32;
                if span.line > lines && lines > 0 {
                    span.line = lines;
                    span.col = all.last().map_or(0, |l| l.chars().count()) as u32 + 1;
                }
                if info.contains("found a tab") || info.contains("tabs disallowed") {
                    // The scanner reports where the scalar began; show the tab itself.
                    let tab = all
                        .iter()
                        .enumerate()
                        .skip(span.line.saturating_sub(1) as usize)
                        .find_map(|(i, l)| {
                            let indent = l.len() - l.trim_start_matches([' ', '\t']).len();
                            l[..indent].find('\t').map(|c| (i, c))
                        });
                    if let Some((i, c)) = tab {
                        span.line = i as u32 + 1;
                        span.col = all[i].get(..c).map_or(1, |p| p.chars().count() as u32 + 1);
                        info =
                            "found a tab character that violates indentation (indent with spaces)"
                                .into();
                    }
                } else if info.contains("unknown anchor") {
                    let line = all
                        .get(span.line.saturating_sub(1) as usize)
                        .copied()
                        .unwrap_or_default();
                    let alias: String = line
                        .chars()
                        .skip(span.col as usize)
                        .take_while(|c| {
                            !c.is_whitespace() && !matches!(c, ',' | '[' | ']' | '{' | '}')
                        })
                        .collect();
                    if !alias.is_empty() {
                        span.len = alias.chars().count() as u32 + 1;
                        info = format!("unknown anchor '{alias}' referenced (no `&{alias}` above)");
                    }
                } else if info.starts_with("simple key expect") {
                    // A line that is neither `key: value` nor a list item (a lost colon).
                    info = "could not find expected ':'".into();
                    // The scanner notices on the next key; point at the line lacking `:`.
                    let here = span.line.saturating_sub(1) as usize;
                    let lacking = (here.saturating_sub(2)..=here).rev().find(|&i| {
                        all.get(i).is_some_and(|l| {
                            let t = l.trim();
                            !t.is_empty()
                                && !t.starts_with('#')
                                && !t.contains(':')
                                && !t.starts_with('-')
                        })
                    });
                    if let Some(i) = lacking {
                        span.line = i as u32 + 1;
                        span.col = all[i].trim_end().chars().count() as u32 + 1;
                    }
                } else if info.contains("recursion limit exceeded") {
                    info = "nesting too deep (recursion limit exceeded)".into();
                } else if info.contains("in flow construct") {
                    info.push_str(": is a `[` or `{` above not closed?");
                } else if info.contains("in quoted scalar")
                    || info.contains("unexpected end of stream") && info.contains("quoted")
                {
                    info.push_str(": is the quote closed?");
                }
                return Err(Diagnostic::error(
                    Some(span),
                    format!("Error parsing config file: {info}"),
                ));
            }
        }
    }
    Ok(builder.root.unwrap_or(Node::new(
        Value::Null,
        Span {
            source,
            line: 1,
            col: 1,
            len: 1,
        },
    )))
}

enum Frame {
    Seq {
        anchor: usize,
        span: Span,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        span: Span,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
    },
}

struct Builder<'b> {
    source: SourceId,
    anchors: Vec<Option<Node>>,
    stack: Vec<Frame>,
    root: Option<Node>,
    nodes: usize,
    budget: &'b Budget,
    docs: usize,
}

impl Builder<'_> {
    fn span(&self, m: &saphyr_parser::Marker) -> Span {
        Span {
            source: self.source,
            line: m.line() as u32,
            col: m.col() as u32 + 1,
            len: 1,
        }
    }

    /// Handles one event; returns true at the end of the first document.
    fn event(&mut self, event: Event<'_>, at: Span) -> Result<bool, Diagnostic> {
        match event {
            Event::Nothing | Event::StreamStart => {}
            Event::StreamEnd => return Ok(true),
            Event::DocumentStart(_) => {
                self.docs += 1;
                if self.docs > 1 {
                    // Only the first document counts, as CircleCI reads one.
                    return Ok(true);
                }
            }
            Event::DocumentEnd => {}
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(id)
                    .and_then(|n| n.clone())
                    .ok_or_else(|| {
                        Diagnostic::error(Some(at), "Error parsing config file: unknown anchor")
                    })?;
                self.charge(node.count(), at)?;
                self.push(node)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.charge(1, at)?;
                let mut span = at;
                span.len = text.chars().take_while(|c| *c != '\n').count().max(1) as u32;
                if style != ScalarStyle::Plain {
                    span.len = span.len.saturating_add(1);
                }
                let value = scalar_value(&text, style, tag.as_deref(), at)?;
                let node = Node::new(value, span);
                if anchor > 0 {
                    self.set_anchor(anchor, node.clone());
                }
                self.push(node)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.depth_check(at)?;
                self.stack.push(Frame::Seq {
                    anchor,
                    span: at,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                self.depth_check(at)?;
                self.stack.push(Frame::Map {
                    anchor,
                    span: at,
                    entries: Vec::new(),
                    pending_key: None,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    anchor,
                    span,
                    items,
                }) = self.stack.pop()
                {
                    let node = Node::new(Value::Seq(items), span);
                    if anchor > 0 {
                        self.set_anchor(anchor, node.clone());
                    }
                    self.push(node)?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    anchor,
                    span,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    let map = merge_mapping(entries)?;
                    let node = Node::new(Value::Map(map), span);
                    if anchor > 0 {
                        self.set_anchor(anchor, node.clone());
                    }
                    self.push(node)?;
                }
            }
        }
        Ok(false)
    }

    fn charge(&mut self, n: usize, at: Span) -> Result<(), Diagnostic> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.budget.max_nodes {
            return Err(Diagnostic::error(
                Some(at),
                format!(
                    "Error parsing config file: the document expands to more than {} nodes (aliases included)",
                    self.budget.max_nodes
                ),
            ));
        }
        Ok(())
    }

    fn depth_check(&self, at: Span) -> Result<(), Diagnostic> {
        if self.stack.len() >= self.budget.max_depth {
            return Err(Diagnostic::error(
                Some(at),
                format!(
                    "Error parsing config file: nesting deeper than {} levels",
                    self.budget.max_depth
                ),
            ));
        }
        Ok(())
    }

    fn set_anchor(&mut self, id: usize, node: Node) {
        if self.anchors.len() <= id {
            self.anchors.resize(id + 1, None);
        }
        self.anchors[id] = Some(node);
    }

    fn push(&mut self, node: Node) -> Result<(), Diagnostic> {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
        Ok(())
    }
}

fn scalar_value(
    text: &str,
    style: ScalarStyle,
    tag: Option<&saphyr_parser::Tag>,
    at: Span,
) -> Result<Value, Diagnostic> {
    if let Some(tag) = tag {
        let core = tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!";
        let suffix = tag.suffix.as_str();
        if core || tag.handle == "!" {
            return Ok(match suffix {
                "str" => Value::Str(text.to_string()),
                "null" => Value::Null,
                "bool" | "int" | "float" => match plain_value(text) {
                    v @ (Value::Bool(_) | Value::Int(_) | Value::Float(..)) => v,
                    _ => {
                        return Err(Diagnostic::error(
                            Some(at),
                            format!(
                                "Error parsing config file: '{text}' is not a valid !!{suffix}"
                            ),
                        ));
                    }
                },
                // Local tags (`!foo`) carry no meaning for CircleCI: keep the text.
                _ if tag.handle == "!" => Value::Str(text.to_string()),
                other => {
                    return Err(Diagnostic::error(
                        Some(at),
                        format!("Error parsing config file: unsupported tag !!{other}"),
                    ));
                }
            });
        }
        return Ok(Value::Str(text.to_string()));
    }
    Ok(match style {
        ScalarStyle::Plain => plain_value(text),
        _ => Value::Str(text.to_string()),
    })
}

/// The lines of `text` as YAML counts them: `\r\n`, `\n` or a lone `\r` ends a line.
fn yaml_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find(['\n', '\r']) {
        out.push(&rest[..end]);
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Types a plain scalar by the YAML 1.2 core schema.
pub fn plain_value(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY, text.to_string());
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY, text.to_string()),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN, text.to_string()),
        _ => {}
    }
    let bytes = text.as_bytes();
    let digits = bytes.strip_prefix(b"-").or(bytes.strip_prefix(b"+"));
    let body = digits.unwrap_or(bytes);
    if !body.is_empty() && body.iter().all(u8::is_ascii_digit) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
        return Value::Float(text.parse().unwrap_or(f64::NAN), text.to_string());
    }
    if let Some(hex) = text.strip_prefix("0x")
        && !hex.is_empty()
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && !oct.is_empty()
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    if is_float(body)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f, text.to_string());
    }
    Value::Str(text.to_string())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(b: &[u8]) -> bool {
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    } else if int_digits > 0 && i == b.len() {
        return false;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// Turns raw `(key, value)` pairs into a [`Map`], applying merge keys.
fn merge_mapping(entries: Vec<(Node, Node)>) -> Result<Map, Diagnostic> {
    let mut explicit: Vec<(Key, Node)> = Vec::with_capacity(entries.len());
    let mut merges: Vec<(usize, Node, Span)> = Vec::new();
    for (key, value) in entries {
        let is_merge = matches!(&key.value, Value::Str(s) if s == "<<") && key.span.len == 2;
        if is_merge {
            merges.push((explicit.len(), value, key.span));
            continue;
        }
        let name = match &key.value {
            Value::Seq(_) | Value::Map(_) => {
                return Err(Diagnostic::error(
                    Some(key.span),
                    "Error parsing config file: a mapping key must be a scalar",
                ));
            }
            _ => key.scalar_text().unwrap_or_default(),
        };
        let key = Key {
            name,
            span: key.span,
        };
        // Duplicate keys are an error, as CircleCI's YAML loader has them.
        if let Some((first, _)) = explicit.iter().find(|(k, _)| k.name == key.name) {
            return Err(Diagnostic::error(
                Some(key.span),
                format!(
                    "Error parsing config file: found duplicate key `{}` (already defined at line {}, column {})",
                    key.name, first.span.line, first.span.col
                ),
            ));
        }
        explicit.push((key, value));
    }
    if merges.is_empty() {
        return Ok(Map { entries: explicit });
    }
    // Merged keys go where the `<<` was written; explicit keys win, then earlier merges.
    let mut out: Vec<(Key, Node)> = Vec::with_capacity(explicit.len() + 8);
    let mut explicit_iter = explicit.iter().cloned().enumerate().peekable();
    let mut seen: std::collections::HashSet<String> =
        explicit.iter().map(|(k, _)| k.name.clone()).collect();
    for (pos, source, merge_at) in merges {
        while let Some((idx, _)) = explicit_iter.peek() {
            if *idx >= pos {
                break;
            }
            if let Some((_, entry)) = explicit_iter.next() {
                out.push(entry);
            }
        }
        let maps: Vec<Node> = match source.value {
            Value::Map(_) => vec![source],
            Value::Seq(items) => items,
            Value::Null => Vec::new(),
            _ => {
                // At the `<<`: an alias carries the position of its anchor.
                return Err(Diagnostic::error(
                    Some(merge_at),
                    format!(
                        "Error parsing config file: a merge key (<<) needs a mapping or a list of mappings, found {}",
                        source.type_name()
                    ),
                ));
            }
        };
        for m in maps {
            let Value::Map(m) = m.value else {
                return Err(Diagnostic::error(
                    Some(merge_at),
                    format!(
                        "Error parsing config file: a merge key (<<) needs a mapping or a list of mappings, found a list holding {}",
                        m.type_name()
                    ),
                ));
            };
            for (k, v) in m.entries {
                if seen.insert(k.name.clone()) {
                    out.push((k, v));
                }
            }
        }
    }
    out.extend(explicit_iter.map(|(_, e)| e));
    Ok(Map { entries: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Node {
        parse(text, SourceId(0), &Budget::default()).expect("parses")
    }

    fn keys(n: &Node) -> Vec<&str> {
        n.as_map().unwrap().iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn merge_keys_explicit_wins_and_order_kept() {
        let n = p("a: &a {x: 1, y: 2}\nb:\n  y: 3\n  <<: *a\n  z: 4\n");
        let b = n.get("b").unwrap();
        assert_eq!(keys(b), ["y", "x", "z"]);
        assert_eq!(b.get("y").unwrap().value, Value::Int(3));
        assert_eq!(b.get("x").unwrap().value, Value::Int(1));
    }

    #[test]
    fn multi_merge_earlier_wins() {
        let n = p("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n");
        let c = n.get("c").unwrap();
        assert_eq!(c.get("x").unwrap().value, Value::Int(1));
        assert_eq!(c.get("y").unwrap().value, Value::Int(2));
    }

    #[test]
    fn quoted_merge_key_is_a_plain_key() {
        let n = p("a: &a {x: 1}\nc:\n  '<<': *a\n");
        assert_eq!(keys(n.get("c").unwrap()), ["<<"]);
    }

    #[test]
    fn scalars_are_typed_by_the_core_schema() {
        let n = p("a: 2.1\nb: '2.1'\nc: yes\nd: true\ne: 010\nf: ~\ng: 1e3\n");
        assert_eq!(n.get("a").unwrap().value, Value::Float(2.1, "2.1".into()));
        assert_eq!(n.get("b").unwrap().value, Value::Str("2.1".into()));
        assert_eq!(n.get("c").unwrap().value, Value::Str("yes".into()));
        assert_eq!(n.get("d").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("e").unwrap().value, Value::Int(10));
        assert_eq!(n.get("f").unwrap().value, Value::Null);
        assert!(matches!(n.get("g").unwrap().value, Value::Float(..)));
    }

    #[test]
    fn positions_are_one_based() {
        let n = p("a:\n  b: hello\n");
        let b = n.get("a").unwrap().get("b").unwrap();
        assert_eq!((b.span.line, b.span.col, b.span.len), (2, 6, 5));
    }

    #[test]
    fn alias_bomb_hits_the_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&text, SourceId(0), &Budget::default()).unwrap_err();
        assert!(err.message.contains("more than"), "{}", err.message);
    }

    #[test]
    fn unknown_anchor_is_an_error_with_a_position() {
        let err = parse("a: *nope\n", SourceId(0), &Budget::default()).unwrap_err();
        assert!(err.span.is_some());
    }
}
