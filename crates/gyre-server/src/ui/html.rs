//! Pure helpers of the web UI: HTML escaping, ANSI colours to HTML, human times and
//! durations, exit codes from step output.

use std::fmt::Write as _;

/// `s` with `& < > " '` escaped: safe in element text and in quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    push_esc(&mut out, s);
    out
}

fn push_esc(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `1m 05s`, `3.2s`, `450ms`, `2h 03m`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s < 60 {
        return format!("{}.{}s", s, (ms % 1000) / 100);
    }
    if s < 3600 {
        return format!("{}m {:02}s", s / 60, s % 60);
    }
    format!("{}h {:02}m", s / 3600, s % 3600 / 60)
}

/// How long ago `then` was at `now`: `just now`, `5m ago`, `3h ago`, `2d ago`.
pub fn age(then_ms: i64, now_ms: i64) -> String {
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0..10 => "just now".into(),
        10..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// The exit code in a step's `system` note (`Exited with code exit status 2`).
pub fn exit_code(system_text: &str) -> Option<i32> {
    let rest = system_text.split("exit status ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Renders terminal output as HTML: text escaped, SGR colours and bold/italic/underline
/// as `<span class="…">`, other escape sequences dropped. The state carries over from one
/// call to the next, so a colour set in one chunk applies to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ansi {
    fg: Option<u8>,
    bg: Option<u8>,
    bold: bool,
    italic: bool,
    underline: bool,
    /// An escape sequence cut at the end of the last chunk.
    pending: String,
}

impl Ansi {
    pub fn new() -> Ansi {
        Ansi::default()
    }

    /// `text` as HTML, each styled run in its own span (closed at the end of the call).
    pub fn render(&mut self, text: &str) -> String {
        let mut input = std::mem::take(&mut self.pending);
        input.push_str(text);
        let mut out = String::with_capacity(input.len() + 16);
        let mut open = false;
        let mut rest = input.as_str();
        loop {
            let Some(i) = rest.find('\u{1b}') else {
                self.text(&mut out, &mut open, rest);
                break;
            };
            self.text(&mut out, &mut open, &rest[..i]);
            let seq = &rest[i + 1..];
            if let Some(csi) = seq.strip_prefix('[') {
                // CSI: parameters, then one final byte in 0x40..=0x7e.
                match csi.find(|c: char| ('\u{40}'..='\u{7e}').contains(&c)) {
                    Some(end) => {
                        if csi.as_bytes()[end] == b'm' {
                            self.sgr(&csi[..end]);
                            if open {
                                out.push_str("</span>");
                                open = false;
                            }
                        }
                        rest = &csi[end + 1..];
                    }
                    None if csi.len() < 32 => {
                        self.pending = rest[i..].to_string();
                        break;
                    }
                    None => rest = csi,
                }
            } else if seq.is_empty() {
                self.pending = "\u{1b}".into();
                break;
            } else if let Some(osc) = seq.strip_prefix(']') {
                // OSC (titles, hyperlinks): up to BEL or ESC \, dropped.
                match osc.find(['\u{7}', '\u{1b}']) {
                    Some(end) => {
                        let st = if osc[end..].starts_with("\u{1b}\\") {
                            2
                        } else {
                            1
                        };
                        rest = &osc[(end + st).min(osc.len())..];
                    }
                    None => break,
                }
            } else {
                // Another escape: drop ESC and the next character (and the charset of a
                // character-set designation, `ESC ( B`).
                let mut chars = seq.chars();
                let first = chars.next().unwrap_or(' ');
                let mut skip = first.len_utf8();
                if "()*+".contains(first) {
                    skip += chars.next().map_or(0, char::len_utf8);
                }
                rest = &seq[skip..];
            }
        }
        if open {
            out.push_str("</span>");
        }
        out
    }

    fn classes(&self) -> String {
        let mut c = String::new();
        if let Some(fg) = self.fg {
            let _ = write!(c, "f{fg} ");
        }
        if let Some(bg) = self.bg {
            let _ = write!(c, "b{bg} ");
        }
        if self.bold {
            c.push_str("bo ");
        }
        if self.italic {
            c.push_str("it ");
        }
        if self.underline {
            c.push_str("un ");
        }
        c.trim_end().to_string()
    }

    fn text(&self, out: &mut String, open: &mut bool, text: &str) {
        let text = text.replace('\r', "");
        if text.is_empty() {
            return;
        }
        if !*open {
            let classes = self.classes();
            if !classes.is_empty() {
                let _ = write!(out, "<span class=\"{classes}\">");
                *open = true;
            }
        }
        push_esc(out, &text);
    }

    fn sgr(&mut self, params: &str) {
        let codes: Vec<u32> = if params.is_empty() {
            vec![0]
        } else {
            params.split(';').map(|p| p.parse().unwrap_or(0)).collect()
        };
        let mut it = codes.into_iter();
        while let Some(code) = it.next() {
            match code {
                0 => {
                    let pending = std::mem::take(&mut self.pending);
                    *self = Ansi {
                        pending,
                        ..Ansi::default()
                    };
                }
                1 => self.bold = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => self.bold = false,
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.fg = Some((code - 30) as u8),
                90..=97 => self.fg = Some((code - 90 + 8) as u8),
                39 => self.fg = None,
                40..=47 => self.bg = Some((code - 40) as u8),
                100..=107 => self.bg = Some((code - 100 + 8) as u8),
                49 => self.bg = None,
                // 256 colours: the 16 base colours map to classes, others are dropped.
                38 | 48 => {
                    let colour = match it.next() {
                        Some(5) => it.next().filter(|c| *c < 16).map(|c| c as u8),
                        Some(2) => {
                            it.next();
                            it.next();
                            it.next();
                            None
                        }
                        _ => None,
                    };
                    if code == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour;
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        for (input, want) in [
            (
                "<script>alert('x')</script>",
                "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;",
            ),
            ("a & \"b\"", "a &amp; &quot;b&quot;"),
            ("plain", "plain"),
        ] {
            assert_eq!(esc(input), want, "{input}");
        }
    }

    #[test]
    fn durations_and_ages() {
        for (ms, want) in [
            (450, "450ms"),
            (3200, "3.2s"),
            (65_000, "1m 05s"),
            (7_380_000, "2h 03m"),
            (-5, "0ms"),
        ] {
            assert_eq!(duration(ms), want, "{ms}");
        }
        assert_eq!(age(0, 5_000), "just now");
        assert_eq!(age(0, 300_000), "5m ago");
        assert_eq!(age(0, 3 * 86_400_000), "3d ago");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code("Exited with code exit status 2"), Some(2));
        assert_eq!(
            exit_code("Exited with code exit status 127 (command not found)"),
            Some(127)
        );
        assert_eq!(exit_code("Killed by signal 15"), None);
    }

    fn check(chunks: &[&str], want: &str) {
        let mut ansi = Ansi::new();
        let got: String = chunks.iter().map(|c| ansi.render(c)).collect();
        assert_eq!(got, want, "{chunks:?}");
    }

    #[test]
    fn ansi_to_html() {
        check(&["plain <b>\n"], "plain &lt;b&gt;\n");
        check(
            &["\u{1b}[31mred\u{1b}[0m plain"],
            "<span class=\"f1\">red</span> plain",
        );
        check(
            &["\u{1b}[1;92;44mbold\u{1b}[22m not"],
            "<span class=\"f10 b4 bo\">bold</span><span class=\"f10 b4\"> not</span>",
        );
        // A colour carries over to the next chunk; a sequence cut in two is joined.
        check(
            &["\u{1b}[3", "2mgreen\n", "still\u{1b}[m"],
            "<span class=\"f2\">green\n</span><span class=\"f2\">still</span>",
        );
        // Other sequences (cursor moves, OSC-less ESC x) vanish; CR is dropped.
        check(&["a\u{1b}[2Kb\r\n\u{1b}(Bc"], "ab\nc");
        check(&["\u{1b}]0;title\u{7}x\u{1b}]8;;u\u{1b}\\y"], "xy");
        check(
            &["\u{1b}[38;5;9mx\u{1b}[38;5;200my"],
            "<span class=\"f9\">x</span>y",
        );
    }
}
