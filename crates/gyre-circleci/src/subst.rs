//! `$VAR` / `${VAR}` substitution for `circleci env subst`; unset variables become empty.

pub fn substitute(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(braced) = after.strip_prefix('{')
            && let Some(end) = braced.find('}')
            && is_name(&braced[..end])
        {
            out.push_str(&lookup(&braced[..end]).unwrap_or_default());
            rest = &braced[end + 1..];
            continue;
        }
        let len = after
            .char_indices()
            .find(|(i, c)| {
                !(c.is_ascii_alphanumeric() || *c == '_') || (*i == 0 && c.is_ascii_digit())
            })
            .map_or(after.len(), |(i, _)| i);
        if len == 0 {
            out.push('$');
            rest = after;
        } else {
            out.push_str(&lookup(&after[..len]).unwrap_or_default());
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::substitute;

    #[test]
    fn substitutes() {
        let look = |name: &str| (name == "A").then(|| "x".to_owned());
        let check = |input: &str, expect: &str| assert_eq!(substitute(input, look), expect);
        check("a=$A b=${A}c $B|${B}", "a=x b=xc |");
        check(
            "cost $5 and $ alone and ${not closed",
            "cost $5 and $ alone and ${not closed",
        );
        check("$A_B$A", "x");
    }
}
