//! A workflow as a graph of its jobs: columns by `requires` depth, matrix jobs (instances
//! of one job body) grouped under their alias, drawn as SVG with status colours. Pure.

use super::html::esc;
use std::fmt::Write as _;

/// One job of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// The alias a matrix instance is grouped under.
    pub group: Option<String>,
    /// Indices of the jobs it requires.
    pub requires: Vec<usize>,
    /// CSS status class (`success`, `failed`, `running`, …).
    pub status: String,
    /// Where the node links to, if anywhere.
    pub href: Option<String>,
}

/// What stands in a cell of the grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    /// The label above a group's members.
    Group(String),
    Node(usize),
}

/// Columns of cells, left to right; a job stands right of everything it requires.
pub fn layout(nodes: &[Node]) -> Vec<Vec<Cell>> {
    let mut depth = vec![0usize; nodes.len()];
    // Longest path from a root; `nodes.len()` rounds settle any DAG (and stop on a cycle).
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (i, n) in nodes.iter().enumerate() {
            let d = n
                .requires
                .iter()
                .filter(|r| **r < nodes.len())
                .map(|r| depth[*r] + 1)
                .max()
                .unwrap_or(0);
            if d != depth[i] {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let n_cols = depth.iter().max().map_or(0, |d| d + 1);
    let mut cols: Vec<Vec<Cell>> = vec![Vec::new(); n_cols];
    for (col, cells) in cols.iter_mut().enumerate() {
        let mut placed: Vec<usize> = Vec::new();
        for i in (0..nodes.len()).filter(|i| depth[*i] == col) {
            if placed.contains(&i) {
                continue;
            }
            match &nodes[i].group {
                Some(g) => {
                    cells.push(Cell::Group(g.clone()));
                    for j in (i..nodes.len())
                        .filter(|j| depth[*j] == col && nodes[*j].group.as_ref() == Some(g))
                    {
                        cells.push(Cell::Node(j));
                        placed.push(j);
                    }
                }
                None => {
                    cells.push(Cell::Node(i));
                    placed.push(i);
                }
            }
        }
    }
    cols
}

const W: usize = 180;
const H: usize = 40;
const GAP_X: usize = 56;
const ROW: usize = 52;
const PAD: usize = 8;

/// The graph as an inline SVG (`role="img"`, labelled by `label`).
pub fn svg(nodes: &[Node], label: &str) -> String {
    let cols = layout(nodes);
    let mut pos: Vec<(usize, usize)> = vec![(0, 0); nodes.len()];
    let mut out = String::new();
    let rows = cols.iter().map(Vec::len).max().unwrap_or(0);
    let width = (cols.len() * (W + GAP_X)).saturating_sub(GAP_X) + 2 * PAD;
    let height = rows * ROW + 2 * PAD;
    for (c, cells) in cols.iter().enumerate() {
        for (r, cell) in cells.iter().enumerate() {
            if let Cell::Node(i) = cell {
                pos[*i] = (PAD + c * (W + GAP_X), PAD + r * ROW);
            }
        }
    }
    let _ = write!(
        out,
        "<svg class=\"graph\" role=\"img\" aria-label=\"{}\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\">",
        esc(label)
    );
    for (i, n) in nodes.iter().enumerate() {
        for r in n.requires.iter().filter(|r| **r < nodes.len()) {
            let (x1, y1) = (pos[*r].0 + W, pos[*r].1 + H / 2);
            let (x2, y2) = (pos[i].0, pos[i].1 + H / 2);
            let mid = (x1 + x2) / 2;
            let _ = write!(
                out,
                "<path class=\"edge\" d=\"M{x1} {y1} C{mid} {y1} {mid} {y2} {x2} {y2}\"/>"
            );
        }
    }
    for (c, cells) in cols.iter().enumerate() {
        for (r, cell) in cells.iter().enumerate() {
            if let Cell::Group(g) = cell {
                let (x, y) = (PAD + c * (W + GAP_X), PAD + r * ROW);
                let _ = write!(
                    out,
                    "<text class=\"group\" x=\"{x}\" y=\"{}\">{}</text>",
                    y + H - 8,
                    esc(g)
                );
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let status = esc(&n.status);
        let name = esc(&n.name);
        let body = format!(
            "<rect class=\"job {status}\" x=\"{x}\" y=\"{y}\" width=\"{W}\" height=\"{H}\" rx=\"6\"/>\
             <circle class=\"dot {status}\" cx=\"{}\" cy=\"{}\" r=\"6\"/>\
             <text x=\"{}\" y=\"{}\">{name}</text>",
            x + 16,
            y + H / 2,
            x + 30,
            y + H / 2 + 5
        );
        match &n.href {
            Some(h) => {
                let _ = write!(
                    out,
                    "<a href=\"{}\" data-job=\"{name}\" data-status=\"{status}\"><title>{name}: {status}</title>{body}</a>",
                    esc(h)
                );
            }
            None => {
                let _ = write!(
                    out,
                    "<g data-job=\"{name}\" data-status=\"{status}\"><title>{name}: {status}</title>{body}</g>"
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, group: Option<&str>, requires: &[usize]) -> Node {
        Node {
            name: name.into(),
            group: group.map(str::to_string),
            requires: requires.to_vec(),
            status: "success".into(),
            href: None,
        }
    }

    #[test]
    fn columns_follow_requires_and_groups_stay_together() {
        // build → test-1, test-2 (matrix "test") → hold → deploy; lint alone.
        let nodes = [
            node("build", None, &[]),
            node("test-1", Some("test"), &[0]),
            node("lint", None, &[]),
            node("test-2", Some("test"), &[0]),
            node("hold", None, &[1, 3]),
            node("deploy", None, &[4]),
        ];
        let cols = layout(&nodes);
        assert_eq!(
            cols,
            vec![
                vec![Cell::Node(0), Cell::Node(2)],
                vec![Cell::Group("test".into()), Cell::Node(1), Cell::Node(3)],
                vec![Cell::Node(4)],
                vec![Cell::Node(5)],
            ]
        );
        // A cycle (never compiled, but stored data may be bad) still lays out.
        let cyclic = [node("a", None, &[1]), node("b", None, &[0])];
        assert_eq!(layout(&cyclic).iter().map(Vec::len).sum::<usize>(), 2);
    }

    #[test]
    fn svg_escapes_names_and_links_jobs() {
        let mut n = node("<b>", None, &[]);
        n.href = Some("/x?a=1&b=2".into());
        let svg = svg(&[n], "main");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
        assert!(svg.contains("href=\"/x?a=1&amp;b=2\""), "{svg}");
    }
}
