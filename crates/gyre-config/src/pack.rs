//! Packing an unpacked orb source tree into one orb document (`circleci orb pack`).
//!
//! `@orb.yml` is the root; `dir/name.yml` becomes `dir: {name: <contents>}`; files whose
//! name starts with `@` merge into their directory's map; `<<include(path)>>` in a
//! string is replaced by the text of that file (path relative to `src/`).

use crate::diag::{Diagnostic, SourceMap, Span};
use crate::orbs::UnpackedFile;
use crate::yaml::{self, Budget, Key, Map, Node, Value};

/// Packs the files of an orb's `src/` directory.
pub fn pack(
    files: &[UnpackedFile],
    sources: &mut SourceMap,
    budget: &Budget,
) -> Result<Node, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut root: Option<Node> = None;
    let mut yml: Vec<&UnpackedFile> = files
        .iter()
        .filter(|f| f.path.ends_with(".yml") || f.path.ends_with(".yaml"))
        .collect();
    yml.sort_by(|a, b| a.path.cmp(&b.path));
    let mut rest: Vec<(Vec<String>, Node)> = Vec::new();
    for f in yml {
        let id = sources.add(f.display.clone(), f.text.clone());
        let node = match yaml::parse(&f.text, id, budget) {
            Ok(n) => n,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let node = include(&node, files, &mut errors);
        let parts: Vec<&str> = f.path.split('/').collect();
        let (dirs, file) = parts.split_at(parts.len() - 1);
        let stem = file[0]
            .trim_end_matches(".yml")
            .trim_end_matches(".yaml")
            .to_string();
        if dirs.is_empty() && stem == "@orb" {
            root = Some(node);
            continue;
        }
        let mut path: Vec<String> = dirs.iter().map(|s| s.to_string()).collect();
        if !stem.starts_with('@') {
            path.push(stem);
        }
        rest.push((path, node));
    }
    let span = Span::default();
    let mut root = root.unwrap_or_else(|| Node::new(Value::Map(Map::default()), span));
    if !matches!(root.value, Value::Map(_)) {
        if root.is_null() {
            root = Node::new(Value::Map(Map::default()), root.span);
        } else {
            errors.push(Diagnostic::error(Some(root.span), "@orb.yml must be a map"));
            return Err(errors);
        }
    }
    for (path, node) in rest {
        if let Err(e) = place(&mut root, &path, node) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(root)
    } else {
        Err(errors)
    }
}

/// Puts `node` at `path` below `root`, merging maps (for `@` files).
fn place(root: &mut Node, path: &[String], node: Node) -> Result<(), Diagnostic> {
    let span = node.span;
    let Some(map) = root.as_map_mut() else {
        return Err(Diagnostic::error(
            Some(span),
            "cannot pack this file: its parent is not a map",
        ));
    };
    match path.split_first() {
        None => {
            let Value::Map(m) = node.value else {
                return Err(Diagnostic::error(Some(span), "an @-file must hold a map"));
            };
            for (k, v) in m.entries {
                map.insert(k, v);
            }
            Ok(())
        }
        Some((head, tail)) => {
            let existing = map.entries.iter_mut().find(|(k, _)| k.name == *head);
            match existing {
                None if tail.is_empty() => {
                    map.insert(
                        Key {
                            name: head.clone(),
                            span,
                        },
                        node,
                    );
                    Ok(())
                }
                None => {
                    let mut child = Node::new(Value::Map(Map::default()), span);
                    place(&mut child, tail, node)?;
                    map.insert(
                        Key {
                            name: head.clone(),
                            span,
                        },
                        child,
                    );
                    Ok(())
                }
                Some((_, child)) => {
                    if child.is_null() {
                        *child = Node::new(Value::Map(Map::default()), span);
                    }
                    place(child, tail, node)
                }
            }
        }
    }
}

/// Replaces `<<include(path)>>` in strings with the file's text.
fn include(node: &Node, files: &[UnpackedFile], errors: &mut Vec<Diagnostic>) -> Node {
    match &node.value {
        Value::Str(s) if s.contains("<<include(") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find("<<include(") {
                out.push_str(&rest[..i]);
                let after = &rest[i + "<<include(".len()..];
                let Some(j) = after.find(")>>") else {
                    out.push_str(&rest[i..]);
                    rest = "";
                    break;
                };
                let path = after[..j].trim();
                let path = path.strip_prefix("./").unwrap_or(path);
                match files.iter().find(|f| f.path == path) {
                    Some(f) => out.push_str(&f.text),
                    None => errors.push(Diagnostic::error(
                        Some(node.span),
                        format!("<<include({path})>>: no such file in the orb source"),
                    )),
                }
                rest = &after[j + 3..];
            }
            out.push_str(rest);
            Node::str(out, node.span)
        }
        Value::Seq(items) => Node::new(
            Value::Seq(items.iter().map(|i| include(i, files, errors)).collect()),
            node.span,
        ),
        Value::Map(m) => Node::new(
            Value::Map(Map {
                entries: m
                    .entries
                    .iter()
                    .map(|(k, v)| (k.clone(), include(v, files, errors)))
                    .collect(),
            }),
            node.span,
        ),
        _ => node.clone(),
    }
}
