//! Compose's variable interpolation, and the `.env` / `env_file` format.
//!
//! As `docker compose` does: `$$` is a literal `$`; `$VAR` and `${VAR}` are the variable (empty,
//! with a warning, when unset); `${VAR:-default}` / `${VAR-default}` use the default when the
//! variable is unset or empty / unset; `${VAR:?err}` / `${VAR?err}` fail with `err` when it is unset
//! or empty / unset; `${VAR:+alt}` / `${VAR+alt}` give `alt` when it is set (and non-empty).
//! Defaults and messages are interpolated themselves. Values come from the process
//! environment first, then the project's `.env` (the shell wins, as in compose).
//!
//! Only files the user gave or that passed the trust rule ([`crate::config::trust`]) get here:
//! interpolation reads the user's environment into the result.

/// What a variable reference found.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Interpolates `text`; the names of unset variables read as empty are added to `unset`.
pub fn interpolate(text: &str, lookup: Lookup, unset: &mut Vec<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = closing_brace(inner)
                .ok_or_else(|| format!("{text:?}: a `${{` without its closing `}}`"))?;
            out.push_str(&braced(&inner[..end], lookup, unset)?);
            rest = &inner[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(format!(
                    "{text:?}: a `$` that starts no variable (write `$$` for a literal `$`)"
                ));
            }
            out.push_str(&value(&after[..len], lookup, unset));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The variables `text` refers to (`$VAR`, `${VAR…}`), without reading them.
pub fn names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
            continue;
        }
        let name_at = after.strip_prefix('{').unwrap_or(after);
        let len = name_len(name_at);
        if len > 0 && !names.iter().any(|n| n == &name_at[..len]) {
            names.push(name_at[..len].to_string());
        }
        rest = &name_at[len..];
    }
    names
}

/// The index of the `}` closing a `${`, nested `${…}` skipped.
fn closing_brace(inner: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The length of the variable name at the start of `text`.
fn name_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    if bytes
        .first()
        .is_none_or(|b| !(b.is_ascii_alphabetic() || *b == b'_'))
    {
        return 0;
    }
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

fn value(name: &str, lookup: Lookup, unset: &mut Vec<String>) -> String {
    lookup(name).unwrap_or_else(|| {
        if !unset.iter().any(|u| u == name) {
            unset.push(name.to_string());
        }
        String::new()
    })
}

/// `NAME`, `NAME:-default`, `NAME-default`, `NAME:?err`, `NAME?err`, `NAME:+alt`, `NAME+alt`.
fn braced(inner: &str, lookup: Lookup, unset: &mut Vec<String>) -> Result<String, String> {
    let len = name_len(inner);
    let (name, op) = inner.split_at(len);
    if name.is_empty() {
        return Err(format!("${{{inner}}}: not a variable name"));
    }
    if op.is_empty() {
        return Ok(value(name, lookup, unset));
    }
    let got = lookup(name);
    let (colon, op) = match op.strip_prefix(':') {
        Some(op) => (true, op),
        None => (false, op),
    };
    // `:` counts an empty value as unset.
    let set = got.as_ref().is_some_and(|v| !colon || !v.is_empty());
    let (kind, word) = op.split_at(1.min(op.len()));
    match kind {
        "-" if set => Ok(got.unwrap_or_default()),
        "-" => interpolate(word, lookup, unset),
        "+" if set => interpolate(word, lookup, unset),
        "+" => Ok(String::new()),
        "?" if set => Ok(got.unwrap_or_default()),
        "?" => {
            let message = interpolate(word, lookup, unset)?;
            let why = if colon { "unset or empty" } else { "unset" };
            Err(format!(
                "required variable {name} is {why}: {}",
                if message.is_empty() {
                    "(no message)"
                } else {
                    &message
                }
            ))
        }
        _ => Err(format!("${{{inner}}}: unknown form after {name}")),
    }
}

/// Reads a `.env` / `env_file` text: `KEY=VALUE` lines (`export ` allowed), `#` comments,
/// single-quoted values literal, double-quoted values with `\n`, `\"`, `\\` escapes and
/// interpolation, bare values trimmed, cut at ` #`, and interpolated. A line `KEY` alone sets
/// nothing. Earlier lines are visible to later ones, after `outer`.
pub fn dotenv(
    text: &str,
    outer: Lookup,
    unset: &mut Vec<String>,
) -> Result<Vec<(String, String)>, String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if name_len(key) != key.len() {
            return Err(format!(
                "line {}: {key:?} is not a variable name",
                number + 1
            ));
        }
        let lookup = |name: &str| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| outer(name))
        };
        let raw = raw.trim();
        let value = if let Some(body) = raw.strip_prefix('\'') {
            body.split_once('\'')
                .ok_or_else(|| format!("line {}: an unclosed single quote", number + 1))?
                .0
                .to_string()
        } else if let Some(body) = raw.strip_prefix('"') {
            let (body, _) = split_closing_quote(body)
                .ok_or_else(|| format!("line {}: an unclosed double quote", number + 1))?;
            let unescaped = body
                .replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\");
            interpolate(&unescaped, &lookup, unset)
                .map_err(|e| format!("line {}: {e}", number + 1))?
        } else {
            let bare = raw.split(" #").next().unwrap_or_default().trim();
            interpolate(bare, &lookup, unset).map_err(|e| format!("line {}: {e}", number + 1))?
        };
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

/// A double-quoted body up to its closing quote (a `\"` does not close it).
fn split_closing_quote(body: &str) -> Option<(&str, &str)> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some((&body[..i], &body[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("6000".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, String> {
        interpolate(text, &env, &mut Vec::new())
    }

    #[test]
    fn every_form_as_compose_reads_it() {
        let table: &[(&str, &str)] = &[
            ("plain text", "plain text"),
            ("$SET", "value"),
            ("${SET}", "value"),
            ("a${SET}b", "avalueb"),
            ("$SET-x", "value-x"),
            ("$$SET", "$SET"),
            ("cost: $$5", "cost: $5"),
            ("${UNSET:-fallback}", "fallback"),
            ("${EMPTY:-fallback}", "fallback"),
            ("${EMPTY-fallback}", ""),
            ("${UNSET-fallback}", "fallback"),
            ("${SET:-fallback}", "value"),
            ("127.0.0.1:${PORT:-5433}:5432", "127.0.0.1:6000:5432"),
            ("127.0.0.1:${NOPORT:-5433}:5432", "127.0.0.1:5433:5432"),
            ("${UNSET:-${SET}}", "value"),
            ("${SET:?must be set}", "value"),
            ("${EMPTY?must be set}", ""),
            ("${SET:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("$UNSET", ""),
        ];
        for (text, want) in table {
            assert_eq!(run(text).as_deref(), Ok(*want), "{text}");
        }
    }

    #[test]
    fn required_variables_fail_with_their_message() {
        let err = run("${UNSET:?set the password in .env}").unwrap_err();
        assert!(
            err.contains("UNSET is unset or empty: set the password in .env"),
            "{err}"
        );
        let err = run("${EMPTY:?no}").unwrap_err();
        assert!(err.contains("EMPTY"), "{err}");
        let err = run("${UNSET?gone}").unwrap_err();
        assert!(err.contains("UNSET is unset: gone"), "{err}");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(run("${SET").unwrap_err().contains("closing"));
        assert!(run("a $ b").unwrap_err().contains("$$"));
        assert!(run("${}").is_err());
        assert!(run("${SET%x}").is_err());
    }

    #[test]
    fn unset_variables_are_reported() {
        let mut unset = Vec::new();
        interpolate("$NOPE ${NOPE} ${ALSO}", &env, &mut unset).unwrap();
        assert_eq!(unset, ["NOPE", "ALSO"]);
    }

    #[test]
    fn dotenv_lines() {
        let text = "# comment\nPGPORT=6001\nexport USER_NAME = app # trailing\nQ='lit $SET'\nD=\"a\\\"b ${PGPORT}\"\nREF=${SET}-${PGPORT}\nLONE\n\n";
        let vars = dotenv(text, &env, &mut Vec::new()).unwrap();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGPORT"), Some("6001"));
        assert_eq!(get("USER_NAME"), Some("app"));
        assert_eq!(get("Q"), Some("lit $SET"));
        assert_eq!(get("D"), Some("a\"b 6001"));
        assert_eq!(get("REF"), Some("value-6001"));
        assert_eq!(get("LONE"), None);
        assert!(dotenv("1BAD=x\n", &env, &mut Vec::new()).is_err());
    }
}
