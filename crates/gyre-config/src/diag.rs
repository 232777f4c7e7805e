//! Sources, positions and diagnostics.
//!
//! Every node of a parsed document carries a [`Span`] naming the source it came from
//! (the config file or one orb file) and its 1-based line and column. Diagnostics are
//! rendered as `file:line:col: message`, followed by context lines, the offending line
//! and a caret.

use std::fmt::Write as _;

/// Index of a source in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SourceId(pub u32);

/// A position in a source: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub source: SourceId,
    pub line: u32,
    pub col: u32,
    /// Length in characters of the spanned text on its first line (at least 1 when known).
    pub len: u32,
}

/// One text the compiler read, with the name it is reported under.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// All sources of one compilation.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    sources: Vec<Source>,
}

impl SourceMap {
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> SourceId {
        self.sources.push(Source {
            name: name.into(),
            text: text.into(),
        });
        SourceId((self.sources.len() - 1) as u32)
    }

    pub fn get(&self, id: SourceId) -> Option<&Source> {
        self.sources.get(id.0 as usize)
    }

    /// The text of line `line` (1-based) of a source, without its line ending. Line
    /// breaks are counted as YAML counts them: `\r\n`, `\n` or a lone `\r`.
    pub fn line(&self, id: SourceId, line: u32) -> Option<&str> {
        let mut rest = self.get(id)?.text.as_str();
        for _ in 1..line.max(1) {
            let end = rest.find(['\n', '\r'])?;
            let skip = if rest[end..].starts_with("\r\n") {
                2
            } else {
                1
            };
            rest = &rest[end + skip..];
        }
        (line >= 1).then(|| &rest[..rest.find(['\n', '\r']).unwrap_or(rest.len())])
    }
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A located message for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Option<Span>,
    pub message: String,
    /// Where the compiler was when it found the problem, outermost first
    /// (`workflow 'main'`, `job 'build'`, `command 'install'`).
    pub context: Vec<String>,
}

impl Diagnostic {
    pub fn error(span: Option<Span>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            span,
            message: message.into(),
            context: Vec::new(),
        }
    }

    pub fn warning(span: Option<Span>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message)
        }
    }

    /// Renders the diagnostic: `file:line:col: message`, context, the line and a caret.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        let prefix = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        match self
            .span
            .and_then(|s| sources.get(s.source).map(|src| (s, src)))
        {
            Some((span, src)) => {
                let _ = writeln!(
                    out,
                    "{}:{}:{}: {prefix}{}",
                    src.name,
                    span.line,
                    span.col,
                    first_line(&self.message)
                );
            }
            None => {
                let _ = writeln!(out, "{prefix}{}", first_line(&self.message));
            }
        }
        for extra in self.message.lines().skip(1) {
            let _ = writeln!(out, "  {extra}");
        }
        if !self.context.is_empty() {
            // Deep (recursive) expansions: the outermost and innermost places are enough.
            let shown = if self.context.len() > 6 {
                let n = self.context.len();
                format!(
                    "{}, ... ({} more), {}",
                    self.context[..3].join(", "),
                    n - 5,
                    self.context[n - 2..].join(", ")
                )
            } else {
                self.context.join(", ")
            };
            let _ = writeln!(out, "  in {shown}:");
        }
        if let Some(span) = self.span
            && let Some(line) = sources.line(span.source, span.line)
        {
            let number = span.line.to_string();
            let pad = " ".repeat(number.len());
            let shown: String = line.replace('\t', " ");
            let mut col = span.col.saturating_sub(1) as usize;
            // A long line (a one-line JSON config) is shown around the caret.
            let chars: Vec<char> = shown.chars().collect();
            let shown = if chars.len() > 120 {
                let start = col.saturating_sub(40).min(chars.len());
                let end = (start + 100).min(chars.len());
                let mut s: String = chars[start..end].iter().collect();
                if start > 0 {
                    s.insert_str(0, "...");
                    col = col - start + 3;
                }
                if end < chars.len() {
                    s.push_str("...");
                }
                s
            } else {
                shown
            };
            let _ = writeln!(out, "  {number} | {shown}");
            let width = shown.chars().count().saturating_sub(col).max(1);
            let len = (span.len as usize).clamp(1, width);
            let _ = writeln!(out, "  {pad} | {}{}", " ".repeat(col), "^".repeat(len));
        }
        out
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Renders a list of diagnostics, one after the other.
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap) -> String {
    diags.iter().map(|d| d.render(sources)).collect()
}

/// Collects diagnostics while the compiler walks a config, remembering where it is.
#[derive(Debug, Default)]
pub struct Reporter {
    pub diags: Vec<Diagnostic>,
    context: Vec<String>,
}

impl Reporter {
    pub fn error(&mut self, span: Option<Span>, message: impl Into<String>) {
        let mut d = Diagnostic::error(span, message);
        d.context = self.context.clone();
        // The same problem at the same place is reported once, whichever job or
        // matrix combination reached it first.
        if !self
            .diags
            .iter()
            .any(|x| x.severity == d.severity && x.span == d.span && x.message == d.message)
        {
            self.diags.push(d);
        }
    }

    pub fn warning(&mut self, span: Option<Span>, message: impl Into<String>) {
        let mut d = Diagnostic::warning(span, message);
        d.context = self.context.clone();
        if !self.diags.contains(&d) {
            self.diags.push(d);
        }
    }

    pub fn push(&mut self, diag: Diagnostic) {
        self.diags.push(diag);
    }

    /// Runs `f` with `what` (`workflow 'main'`) added to the context of its diagnostics.
    pub fn within<T>(&mut self, what: String, f: impl FnOnce(&mut Self) -> T) -> T {
        self.context.push(what);
        let out = f(self);
        self.context.pop();
        out
    }

    pub fn context_push(&mut self, what: String) {
        self.context.push(what);
    }

    pub fn context_pop(&mut self) {
        self.context.pop();
    }

    pub fn error_count(&self) -> usize {
        self.diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}
