//! The expression language of `<< ... >>` tags, workflow `when`/`unless` strings and
//! string `filters` (spec §2.9), and the legacy logic statements (§2.8).
//!
//! `and`/`or` return operand values (so `cond and 10 or 1` picks a value), `not` binds
//! tighter than everything, comparisons between different types are unequal.

use crate::yaml::{Node, Value};

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// A dotted path such as `pipeline.git.branch` or `parameters.x`.
    Path(String),
    Lit(Value),
    Regex(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    StartsWith,
    Matches,
    Ge,
    Gt,
    Le,
    Lt,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(Value),
    Regex(String),
    LParen,
    RParen,
    Op(CmpOp),
}

/// Splits an expression into tokens; `None` when it is not one.
fn tokenize(src: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '"' | '\'' => {
                let quote = c;
                i += 1;
                let mut s = String::new();
                loop {
                    let ch = *chars.get(i)?;
                    i += 1;
                    if ch == '\\' {
                        s.push(*chars.get(i)?);
                        i += 1;
                    } else if ch == quote {
                        break;
                    } else {
                        s.push(ch);
                    }
                }
                out.push(Tok::Str(s));
            }
            '/' => {
                i += 1;
                let mut s = String::new();
                loop {
                    let ch = *chars.get(i)?;
                    i += 1;
                    if ch == '\\' && chars.get(i) == Some(&'/') {
                        s.push('/');
                        i += 1;
                    } else if ch == '/' {
                        break;
                    } else {
                        s.push(ch);
                    }
                }
                out.push(Tok::Regex(s));
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, n) = match (c, next) {
                    ('=', Some('=')) => (CmpOp::Eq, 2),
                    ('!', Some('=')) => (CmpOp::Ne, 2),
                    ('>', Some('=')) => (CmpOp::Ge, 2),
                    ('<', Some('=')) => (CmpOp::Le, 2),
                    ('>', _) => (CmpOp::Gt, 1),
                    ('<', _) => (CmpOp::Lt, 1),
                    _ => return None,
                };
                out.push(Tok::Op(op));
                i += n;
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                match crate::yaml::plain_value(&text) {
                    v @ (Value::Int(_) | Value::Float(..)) => out.push(Tok::Num(v)),
                    _ => return None,
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-' | '.'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if word == "starts-with" {
                    out.push(Tok::Op(CmpOp::StartsWith));
                } else if word == "matches" {
                    out.push(Tok::Op(CmpOp::Matches));
                } else {
                    out.push(Tok::Ident(word));
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

struct ExprParser {
    toks: Vec<Tok>,
    pos: usize,
}

impl ExprParser {
    fn peek_ident(&self, kw: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(w)) if w == kw)
    }

    fn or(&mut self, depth: usize) -> Option<Expr> {
        if depth > 64 {
            return None;
        }
        let mut lhs = self.and(depth + 1)?;
        while self.peek_ident("or") {
            self.pos += 1;
            let rhs = self.and(depth + 1)?;
            lhs = Expr::Or(Box::new(lhs), Box::new(rhs));
        }
        Some(lhs)
    }

    fn and(&mut self, depth: usize) -> Option<Expr> {
        let mut lhs = self.cmp(depth + 1)?;
        while self.peek_ident("and") {
            self.pos += 1;
            let rhs = self.cmp(depth + 1)?;
            lhs = Expr::And(Box::new(lhs), Box::new(rhs));
        }
        Some(lhs)
    }

    fn cmp(&mut self, depth: usize) -> Option<Expr> {
        let lhs = self.unary(depth + 1)?;
        if let Some(Tok::Op(op)) = self.toks.get(self.pos) {
            let op = *op;
            self.pos += 1;
            let rhs = self.unary(depth + 1)?;
            return Some(Expr::Cmp(op, Box::new(lhs), Box::new(rhs)));
        }
        Some(lhs)
    }

    fn unary(&mut self, depth: usize) -> Option<Expr> {
        if depth > 64 {
            return None;
        }
        if self.peek_ident("not") {
            self.pos += 1;
            return Some(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        let tok = self.toks.get(self.pos)?.clone();
        self.pos += 1;
        Some(match tok {
            Tok::LParen => {
                let e = self.or(depth + 1)?;
                if self.toks.get(self.pos) != Some(&Tok::RParen) {
                    return None;
                }
                self.pos += 1;
                e
            }
            Tok::Str(s) => Expr::Lit(Value::Str(s)),
            Tok::Num(v) => Expr::Lit(v),
            Tok::Regex(r) => Expr::Regex(r),
            Tok::Ident(w) => match w.as_str() {
                "true" => Expr::Lit(Value::Bool(true)),
                "false" => Expr::Lit(Value::Bool(false)),
                "null" => Expr::Lit(Value::Null),
                "and" | "or" | "not" => return None,
                _ => Expr::Path(w),
            },
            Tok::RParen | Tok::Op(_) => return None,
        })
    }
}

/// Parses an expression; `None` when the text is not a well-formed expression.
pub fn parse(src: &str) -> Option<Expr> {
    let toks = tokenize(src)?;
    if toks.is_empty() {
        return None;
    }
    let mut p = ExprParser { toks, pos: 0 };
    let e = p.or(0)?;
    (p.pos == p.toks.len()).then_some(e)
}

impl Expr {
    /// Every path the expression reads.
    pub fn paths(&self, out: &mut Vec<String>) {
        match self {
            Expr::Or(a, b) | Expr::And(a, b) | Expr::Cmp(_, a, b) => {
                a.paths(out);
                b.paths(out);
            }
            Expr::Not(a) => a.paths(out),
            Expr::Path(p) => out.push(p.clone()),
            Expr::Lit(_) | Expr::Regex(_) => {}
        }
    }

    /// Evaluates with `lookup` resolving paths. Errors are messages for the user.
    pub fn eval(
        &self,
        lookup: &mut dyn FnMut(&str) -> Result<Value, String>,
    ) -> Result<Value, String> {
        Ok(match self {
            Expr::Lit(v) => v.clone(),
            Expr::Regex(r) => Value::Str(r.clone()),
            Expr::Path(p) => lookup(p)?,
            Expr::Not(a) => Value::Bool(!truthy(&a.eval(lookup)?)),
            Expr::And(a, b) => {
                let l = a.eval(lookup)?;
                if truthy(&l) { b.eval(lookup)? } else { l }
            }
            Expr::Or(a, b) => {
                let l = a.eval(lookup)?;
                if truthy(&l) { l } else { b.eval(lookup)? }
            }
            Expr::Cmp(op, a, b) => {
                let l = a.eval(lookup)?;
                let r = b.eval(lookup)?;
                Value::Bool(compare(*op, &l, &r, matches!(**b, Expr::Regex(_)))?)
            }
        })
    }
}

fn compare(op: CmpOp, l: &Value, r: &Value, r_is_regex: bool) -> Result<bool, String> {
    match op {
        CmpOp::Eq => Ok(values_equal(l, r)),
        CmpOp::Ne => Ok(!values_equal(l, r)),
        CmpOp::StartsWith => match (l, r) {
            (Value::Str(a), Value::Str(b)) => Ok(a.starts_with(b.as_str())),
            (Value::Null, Value::Str(_)) => Ok(false),
            _ => Err(format!(
                "starts-with needs two strings, got {} and {}",
                l.type_name(),
                r.type_name()
            )),
        },
        CmpOp::Matches => {
            if !r_is_regex {
                return Err("the right side of matches must be a /regex/".into());
            }
            let Value::Str(pattern) = r else {
                return Err("matches needs a /regex/".into());
            };
            match l {
                Value::Str(s) => regex_full_match(pattern, s),
                Value::Null => Ok(false),
                other => Err(format!("matches needs a string, got {}", other.type_name())),
            }
        }
        CmpOp::Ge | CmpOp::Gt | CmpOp::Le | CmpOp::Lt => {
            let (Some(a), Some(b)) = (number(l), number(r)) else {
                return Err(format!(
                    "numeric comparison needs two numbers, got {} and {}",
                    l.type_name(),
                    r.type_name()
                ));
            };
            Ok(match op {
                CmpOp::Ge => a >= b,
                CmpOp::Gt => a > b,
                CmpOp::Le => a <= b,
                _ => a < b,
            })
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f, _) => Some(*f),
        _ => None,
    }
}

/// Structural equality with numbers compared by value.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(_) | Value::Float(..), Value::Int(_) | Value::Float(..)) => {
            number(a) == number(b)
        }
        (Value::Seq(x), Value::Seq(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| values_equal(&p.value, &q.value))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(&v.value, &w.value)))
        }
        _ => a == b,
    }
}

/// CircleCI truthiness: `false`, `null`, `0`, `NaN` and `""` are falsy.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f, _) => *f != 0.0 && !f.is_nan(),
        Value::Str(s) => !s.is_empty(),
        Value::Seq(_) | Value::Map(_) => true,
    }
}

/// A Java-style full match (`matches()`), as filters and `matches` use.
pub fn regex_full_match(pattern: &str, text: &str) -> Result<bool, String> {
    let re = compile_full(pattern)?;
    re.is_match(text)
        .map_err(|e| format!("regex /{pattern}/: {e}"))
}

/// Compiles `pattern` anchored at both ends.
pub fn compile_full(pattern: &str) -> Result<fancy_regex::Regex, String> {
    // Configs repeat the same few filters on many jobs: compile each pattern once.
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, Result<fancy_regex::Regex, String>>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    if let Some(hit) = CACHE.with(|c| c.borrow().get(pattern).cloned()) {
        return hit;
    }
    let compiled = compile_full_uncached(pattern);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= 4096 {
            c.clear();
        }
        c.insert(pattern.to_string(), compiled.clone());
    });
    compiled
}

fn compile_full_uncached(pattern: &str) -> Result<fancy_regex::Regex, String> {
    fancy_regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .backtrack_limit(100_000)
        .build()
        .map_err(|e| match e {
            // The position would count in the anchored pattern, not the one written.
            fancy_regex::Error::ParseError(_, kind) => {
                format!("invalid regular expression /{pattern}/: {kind}")
            }
            e => format!("invalid regular expression /{pattern}/: {e}"),
        })
}

/// Evaluates a legacy logic statement (§2.8): `and`, `or`, `not`, `equal`, `matches`,
/// or a literal (truthy). Values must already be templated.
pub fn eval_logic(node: &Node, depth: usize) -> Result<bool, (Option<crate::diag::Span>, String)> {
    if depth > 100 {
        return Err((
            Some(node.span),
            "logic statement nested more than 100 levels".into(),
        ));
    }
    let Some(map) = node.as_map() else {
        return Ok(truthy(&node.value));
    };
    if map.len() != 1 {
        return Ok(!map.is_empty());
    }
    let (op, arg) = map.iter().next().expect("one entry");
    let list = |what: &str| -> Result<&[Node], (Option<crate::diag::Span>, String)> {
        match arg.as_seq() {
            Some(items) if !items.is_empty() => Ok(items),
            _ => Err((
                Some(arg.span),
                format!("`{what}` expects a non-empty list of arguments"),
            )),
        }
    };
    match op {
        "and" => {
            for item in list("and")? {
                if !eval_logic(item, depth + 1)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        "or" => {
            for item in list("or")? {
                if eval_logic(item, depth + 1)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        "not" => Ok(!eval_logic(arg, depth + 1)?),
        "equal" => {
            let items = list("equal")?;
            Ok(items
                .windows(2)
                .all(|w| values_equal(&w[0].value, &w[1].value)))
        }
        "matches" => {
            let pattern = arg.get("pattern").and_then(Node::scalar_text);
            let value = arg.get("value").and_then(Node::scalar_text);
            match (pattern, value) {
                (Some(p), Some(v)) => {
                    let p = p
                        .strip_prefix('/')
                        .and_then(|p| p.strip_suffix('/'))
                        .map(str::to_string)
                        .unwrap_or(p);
                    regex_full_match(&p, &v).map_err(|e| (Some(arg.span), e))
                }
                _ => Err((
                    Some(arg.span),
                    "`matches` needs both `pattern` and `value`".into(),
                )),
            }
        }
        _ => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(src: &str) -> Value {
        let e = parse(src).expect("parses");
        e.eval(&mut |p| match p {
            "pipeline.git.branch" => Ok(Value::Str("main".into())),
            "pipeline.git.tag" => Ok(Value::Str(String::new())),
            "pipeline.number" => Ok(Value::Int(7)),
            other => Err(format!("unknown {other}")),
        })
        .expect("evaluates")
    }

    #[test]
    fn and_or_return_operands() {
        assert_eq!(
            ev(r#"pipeline.git.branch == "main" and 10 or 1"#),
            Value::Int(10)
        );
        assert_eq!(
            ev(r#"pipeline.git.branch == "dev" and 10 or 1"#),
            Value::Int(1)
        );
        assert_eq!(
            ev(r#"pipeline.git.tag or "none""#),
            Value::Str("none".into())
        );
    }

    #[test]
    fn operators() {
        assert_eq!(
            ev(r#"pipeline.git.branch starts-with "ma""#),
            Value::Bool(true)
        );
        assert_eq!(
            ev(r#"pipeline.git.branch matches /ma.*/"#),
            Value::Bool(true)
        );
        assert_eq!(
            ev(r#"pipeline.git.branch matches /ma/"#),
            Value::Bool(false)
        );
        assert_eq!(ev("pipeline.number >= 7"), Value::Bool(true));
        assert_eq!(ev(r#"pipeline.number == "7""#), Value::Bool(false));
        assert_eq!(ev(r#"pipeline.number != "7""#), Value::Bool(true));
        assert_eq!(ev("not pipeline.git.tag and true"), Value::Bool(true));
        assert_eq!(ev("not (pipeline.git.branch and false)"), Value::Bool(true));
    }

    #[test]
    fn not_expressions() {
        assert!(parse("EOF >").is_none());
        assert!(parse("a ==").is_none());
        assert!(parse("(a").is_none());
        assert!(parse("").is_none());
    }
}
