//! Splits a `.sql` script into what psql would send, without psql.
//!
//! pgwarden's PostgreSQL binaries have no `psql` (the npm package ships initdb, pg_ctl and
//! postgres only), and a machine need not have one, so init scripts run through a Rust client.
//! Sending a whole file as one simple query would break on what `pg_dump` writes (`COPY … FROM
//! stdin` followed by data lines, `\connect`, `\restrict`) and could not say which statement
//! failed. So, like psql's lexer (`src/fe_utils/psqlscan.l`), this splits the text into
//! statements at top-level semicolons — not inside quotes `'…'`, `E'…'`, `"…"`, dollar quotes
//! `$tag$…$tag$`, comments `--`, `/* … */` (nested) or parentheses — and recognises
//! backslash meta-commands at the start of a line.
//!
//! It reads line by line and keeps only the current statement, so a large dump streams.
//! Not supported (psql only): variable interpolation (`:name`), `\i`, `\gset` and friends,
//! and `BEGIN ATOMIC … END` function bodies with semicolons inside (written by pg_dump for
//! SQL-standard function bodies).

/// What the script asks for, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// One SQL statement, leading whitespace removed; `line` is its first line (1-based).
    Statement { text: String, line: usize },
    /// A `COPY … FROM stdin` statement: the data lines follow, then [`Item::CopyEnd`].
    CopyStart { text: String, line: usize },
    /// One data line of a `COPY … FROM stdin` (without its newline).
    CopyData { data: String, line: usize },
    /// The end of the data (`\.`, or the end of the script).
    CopyEnd,
    /// A psql meta-command such as `\connect db`: its name (`connect`) and the rest of the line.
    Meta {
        name: String,
        args: String,
        line: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Quote {
    None,
    /// `'…'`; `escapes` for `E'…'`, where a backslash escapes the next character.
    Single {
        escapes: bool,
    },
    Double,
    Dollar(String),
    /// `/* … */`, with its nesting depth.
    Block(u32),
}

/// The push parser: feed it lines, collect [`Item`]s.
#[derive(Debug)]
pub struct Splitter {
    buf: String,
    start_line: usize,
    has_content: bool,
    quote: Quote,
    parens: u32,
    in_copy: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::new()
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

impl Splitter {
    pub fn new() -> Self {
        Self {
            buf: String::new(),
            start_line: 0,
            has_content: false,
            quote: Quote::None,
            parens: 0,
            in_copy: false,
        }
    }

    /// Takes one line (without its newline); `number` is 1-based.
    pub fn feed(&mut self, line: &str, number: usize, out: &mut Vec<Item>) {
        if self.in_copy {
            if line == "\\." {
                self.in_copy = false;
                out.push(Item::CopyEnd);
            } else {
                out.push(Item::CopyData {
                    data: line.to_string(),
                    line: number,
                });
            }
            return;
        }
        if self.quote == Quote::None
            && self.parens == 0
            && let Some(meta) = line.trim_start().strip_prefix('\\')
        {
            let (name, args) = meta.split_once(char::is_whitespace).unwrap_or((meta, ""));
            out.push(Item::Meta {
                name: name.to_string(),
                args: args.trim().to_string(),
                line: number,
            });
            return;
        }

        let chars: Vec<(usize, char)> = line.char_indices().collect();
        let mut segment_start = 0;
        let mut i = 0;
        while i < chars.len() {
            let (at, c) = chars[i];
            let next = chars.get(i + 1).map(|&(_, c)| c);
            match &mut self.quote {
                Quote::None => match c {
                    '-' if next == Some('-') => break,
                    '/' if next == Some('*') => {
                        self.quote = Quote::Block(1);
                        i += 1;
                    }
                    '\'' => {
                        let escapes = i >= 1
                            && matches!(chars[i - 1].1, 'E' | 'e')
                            && (i < 2 || !is_ident(chars[i - 2].1));
                        self.quote = Quote::Single { escapes };
                        self.has_content = true;
                    }
                    '"' => {
                        self.quote = Quote::Double;
                        self.has_content = true;
                    }
                    '$' if i == 0 || !is_ident(chars[i - 1].1) => {
                        self.has_content = true;
                        if let Some(tag) = dollar_tag(&line[at..]) {
                            i += tag.chars().count() - 1;
                            self.quote = Quote::Dollar(tag);
                        }
                    }
                    '(' => {
                        self.parens += 1;
                        self.has_content = true;
                    }
                    ')' => {
                        self.parens = self.parens.saturating_sub(1);
                        self.has_content = true;
                    }
                    ';' if self.parens == 0 => {
                        self.append(&line[segment_start..at + 1], number);
                        self.emit(out);
                        segment_start = at + 1;
                    }
                    c if !c.is_whitespace() => self.has_content = true,
                    _ => {}
                },
                Quote::Single { escapes } => match c {
                    '\\' if *escapes => i += 1,
                    '\'' if next == Some('\'') => i += 1,
                    '\'' => self.quote = Quote::None,
                    _ => {}
                },
                Quote::Double => match c {
                    '"' if next == Some('"') => i += 1,
                    '"' => self.quote = Quote::None,
                    _ => {}
                },
                Quote::Dollar(tag) => {
                    if line[at..].starts_with(tag.as_str()) {
                        i += tag.chars().count() - 1;
                        self.quote = Quote::None;
                    }
                }
                Quote::Block(depth) => {
                    if c == '/' && next == Some('*') {
                        *depth += 1;
                        i += 1;
                    } else if c == '*' && next == Some('/') {
                        *depth -= 1;
                        i += 1;
                        if *depth == 0 {
                            self.quote = Quote::None;
                        }
                    }
                }
            }
            i += 1;
        }
        self.append(&line[segment_start..], number);
        if !self.buf.is_empty() {
            self.buf.push('\n');
        }
    }

    /// The end of the script: a last statement without a semicolon is sent, as psql does.
    pub fn finish(&mut self, out: &mut Vec<Item>) {
        if self.in_copy {
            self.in_copy = false;
            out.push(Item::CopyEnd);
        }
        while self.buf.ends_with('\n') {
            self.buf.pop();
        }
        self.emit(out);
    }

    fn append(&mut self, text: &str, number: usize) {
        if self.buf.is_empty() {
            let text = text.trim_start();
            if !text.is_empty() {
                self.start_line = number;
                self.buf.push_str(text);
            }
        } else {
            self.buf.push_str(text);
        }
    }

    fn emit(&mut self, out: &mut Vec<Item>) {
        let text = std::mem::take(&mut self.buf);
        let had_content = std::mem::replace(&mut self.has_content, false);
        self.parens = 0;
        if !had_content {
            return;
        }
        let line = self.start_line;
        if is_copy_from_stdin(&text) {
            self.in_copy = true;
            out.push(Item::CopyStart { text, line });
        } else {
            out.push(Item::Statement { text, line });
        }
    }
}

/// `$$` or `$tag$` at the start of `text`.
fn dollar_tag(text: &str) -> Option<String> {
    let rest = &text[1..];
    let end = rest.find('$')?;
    let tag = &rest[..end];
    let valid = tag.is_empty()
        || (tag.starts_with(|c: char| c.is_alphabetic() || c == '_')
            && tag.chars().all(|c| c.is_alphanumeric() || c == '_'));
    valid.then(|| format!("${tag}$"))
}

fn is_copy_from_stdin(statement: &str) -> bool {
    let words: Vec<String> = statement
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words.first().is_some_and(|w| w == "copy")
        && words.windows(2).any(|w| w[0] == "from" && w[1] == "stdin")
}

/// The 1-based line of the 1-based character `position` of a statement that starts at `line`.
pub fn line_of_position(text: &str, line: usize, position: usize) -> usize {
    line + text
        .chars()
        .take(position.saturating_sub(1))
        .filter(|&c| c == '\n')
        .count()
}

/// Splits a whole script (for tests and small inputs).
pub fn split(script: &str) -> Vec<Item> {
    let mut splitter = Splitter::new();
    let mut out = Vec::new();
    for (i, line) in script.lines().enumerate() {
        splitter.feed(line, i + 1, &mut out);
    }
    splitter.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(script: &str) -> Vec<(String, usize)> {
        split(script)
            .into_iter()
            .map(|item| match item {
                Item::Statement { text, line } => (text, line),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn splits_at_top_level_semicolons_with_lines() {
        let s = statements(
            "\n-- header\nSELECT 1; SELECT 2;\n\nCREATE TABLE t (\n  a int\n);\nSELECT 3",
        );
        assert_eq!(
            s,
            vec![
                ("-- header\nSELECT 1;".to_string(), 2),
                ("SELECT 2;".to_string(), 3),
                ("CREATE TABLE t (\n  a int\n);".to_string(), 5),
                ("SELECT 3".to_string(), 8),
            ]
        );
    }

    #[test]
    fn semicolons_inside_quotes_comments_and_parens_do_not_split() {
        let script = "SELECT 'a;b', \"c;d\", E'e\\';f';\n\
                      /* x; /* nested; */ y; */ SELECT 1;\n\
                      CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n\
                      DO $$ BEGIN PERFORM 1; END $$;\n\
                      CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2);\n\
                      SELECT 'it''s; fine' -- trailing; comment\n;";
        let s = statements(script);
        assert_eq!(s.len(), 6, "{s:#?}");
        assert_eq!(s[2].1, 3);
        assert!(s[3].0.starts_with("DO $$"));
        assert_eq!(s[5].0, "SELECT 'it''s; fine' -- trailing; comment\n;");
    }

    #[test]
    fn dollar_signs_that_are_not_quotes() {
        let s = statements("PREPARE p AS SELECT $1; SELECT a$b FROM t;");
        assert_eq!(s.len(), 2, "{s:?}");
    }

    #[test]
    fn copy_from_stdin_and_meta_commands() {
        let script = "\\restrict abc\nSET x = 1;\nCOPY public.t (a, b) FROM stdin;\n1\tx;y\n2\t\\N\n\\.\n\\connect other\nSELECT 1;\n";
        let items = split(script);
        assert_eq!(
            items,
            vec![
                Item::Meta {
                    name: "restrict".into(),
                    args: "abc".into(),
                    line: 1
                },
                Item::Statement {
                    text: "SET x = 1;".into(),
                    line: 2
                },
                Item::CopyStart {
                    text: "COPY public.t (a, b) FROM stdin;".into(),
                    line: 3
                },
                Item::CopyData {
                    data: "1\tx;y".into(),
                    line: 4
                },
                Item::CopyData {
                    data: "2\t\\N".into(),
                    line: 5
                },
                Item::CopyEnd,
                Item::Meta {
                    name: "connect".into(),
                    args: "other".into(),
                    line: 7
                },
                Item::Statement {
                    text: "SELECT 1;".into(),
                    line: 8
                },
            ]
        );
    }

    #[test]
    fn comment_only_text_is_not_sent() {
        assert!(split("-- nothing\n/* at all */\n\n").is_empty());
    }

    #[test]
    fn positions_map_to_lines() {
        let text = "SELECT 1,\n  2,\n  nope;";
        let position = text.find("nope").unwrap() + 1;
        assert_eq!(line_of_position(text, 10, position), 12);
        assert_eq!(line_of_position(text, 10, 1), 10);
    }
}
