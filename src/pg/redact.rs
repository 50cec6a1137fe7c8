//! Passwords out of forwarded server lines.
//!
//! A statement that fails (`ALTER ROLE app PASSWORD 'secret'` with a typo, say) makes the
//! server log it as `STATEMENT:  …`, and pgwarden copies every server line into its own log.
//! [`password_literals`] replaces the string literal after each `PASSWORD` keyword (any case;
//! `'…'` with `''` escapes, `E'…'` with backslash escapes, or a dollar-quoted `$tag$…$tag$`)
//! by `'***'`, so the line still reads as the statement it was.

use std::borrow::Cow;

/// `line` with every `PASSWORD '…'` literal replaced by `'***'`.
pub fn password_literals(line: &str) -> Cow<'_, str> {
    const KEYWORD: &str = "password";
    let lower = line.to_ascii_lowercase();
    if !lower.contains(KEYWORD) {
        return Cow::Borrowed(line);
    }
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(KEYWORD) {
        let start = search + found;
        let after_keyword = start + KEYWORD.len();
        search = after_keyword;
        // A whole word: `password_encryption` or `old_password` is not the keyword.
        let word_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if (start > 0 && word_char(bytes[start - 1]))
            || bytes.get(after_keyword).is_some_and(|b| word_char(*b))
        {
            continue;
        }
        let mut at = after_keyword;
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        let Some(end) = literal_end(bytes, at) else {
            continue;
        };
        out.push_str(&line[copied..at]);
        out.push_str("'***'");
        copied = end;
        search = end;
    }
    if copied == 0 {
        return Cow::Borrowed(line);
    }
    out.push_str(&line[copied..]);
    Cow::Owned(out)
}

/// Where the string literal starting at `at` ends (exclusive), or `None` when there is none
/// there. An unterminated literal runs to the end of the line.
fn literal_end(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'\'' => Some(quoted_end(bytes, at + 1, false)),
        b'e' | b'E' if bytes.get(at + 1) == Some(&b'\'') => Some(quoted_end(bytes, at + 2, true)),
        b'$' => {
            let tag_len = bytes[at + 1..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))?;
            if bytes.get(at + 1 + tag_len) != Some(&b'$') {
                return None;
            }
            let tag = &bytes[at..at + tag_len + 2];
            let body = at + tag.len();
            Some(
                bytes[body..]
                    .windows(tag.len())
                    .position(|w| w == tag)
                    .map_or(bytes.len(), |p| body + p + tag.len()),
            )
        }
        _ => None,
    }
}

fn quoted_end(bytes: &[u8], mut at: usize, backslashes: bool) -> usize {
    while at < bytes.len() {
        match bytes[at] {
            b'\\' if backslashes => at += 2,
            b'\'' if bytes.get(at + 1) == Some(&b'\'') => at += 2,
            b'\'' => return at + 1,
            _ => at += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_literals_are_redacted() {
        for (line, expected) in [
            (
                "STATEMENT:  ALTER ROLE app PASSWORD 'hunter2'",
                "STATEMENT:  ALTER ROLE app PASSWORD '***'",
            ),
            (
                "STATEMENT:  create user x with encrypted password 'it''s' login",
                "STATEMENT:  create user x with encrypted password '***' login",
            ),
            (
                "ALTER ROLE a PASSWORD E'a\\'b' VALID UNTIL 'infinity'",
                "ALTER ROLE a PASSWORD '***' VALID UNTIL 'infinity'",
            ),
            (
                "ALTER ROLE a PASSWORD $x$se'cret$x$; ALTER ROLE b PASSWORD 'two'",
                "ALTER ROLE a PASSWORD '***'; ALTER ROLE b PASSWORD '***'",
            ),
            (
                "ALTER ROLE a PASSWORD 'unterminated",
                "ALTER ROLE a PASSWORD '***'",
            ),
            ("Passwort ünd PASSWORD 'ü'", "Passwort ünd PASSWORD '***'"),
        ] {
            assert_eq!(password_literals(line), expected, "{line}");
        }
    }

    #[test]
    fn other_lines_are_untouched() {
        for line in [
            "LOG:  database system is ready to accept connections",
            "SET password_encryption = 'md5'",
            "FATAL:  password authentication failed for user \"app\"",
            "ALTER ROLE a PASSWORD NULL",
        ] {
            assert!(
                matches!(password_literals(line), Cow::Borrowed(_)),
                "{line}"
            );
        }
    }
}
