//! The user, password and database values checked against what initdb and PostgreSQL can take,
//! before anything is created: a value that would only fail later (inside initdb, or at the
//! first login) is refused up front with the reason.
//!
//! - initdb writes the superuser's name into its bootstrap script and SQL without escaping
//!   every character: a name holding `"`, `'` or `\` makes initdb fail with "child process
//!   exited with exit code 1" (tried with PostgreSQL 16.14); names starting with `pg_` are
//!   reserved (initdb refuses them).
//! - initdb's `--pwfile` keeps the file's first line without its line ending, so a password
//!   holding a newline (or a carriage return) would be cut short and the first login would fail
//!   with "password authentication failed".
//! - Control characters in names make logs and connection strings ambiguous; NUL cannot reach
//!   PostgreSQL at all.
//!
//! A message names a value by [`shown`]: its text when it was typed (a flag, a variable, a
//! key), only the file it came from when it was read from one (`user_file`,
//! `POSTGRES_USER_FILE`). A file's content is never echoed: a config file could point
//! `user_file` at `/root/secret`, and the error would have shown it.

use std::path::Path;

/// How messages name a value: `user "alice"`, or `user (read from /run/secrets/user)`.
pub fn shown(key: &str, value: &str, file: Option<&Path>) -> String {
    match file {
        Some(file) => format!("{key} (read from {})", file.display()),
        None if value.is_empty() => key.to_string(),
        None => format!("{key} {value:?}"),
    }
}

/// A value and how messages name it ([`shown`]).
#[derive(Debug, Clone, Copy)]
pub struct Value<'a> {
    pub text: &'a str,
    pub shown: &'a str,
}

impl<'a> Value<'a> {
    pub fn new(text: &'a str, shown: &'a str) -> Self {
        Value { text, shown }
    }
}

/// Adds a problem for each value PostgreSQL or initdb cannot take. Messages name the user and
/// the database by their [`Value::shown`], never quote a character of them.
pub fn check(user: Value, password: &str, database: Value, problems: &mut Vec<String>) {
    if user.text.contains(['"', '\'', '\\']) {
        problems.push(format!(
            "{} contains a quote or a backslash (\", ' or \\), which initdb cannot quote in the \
             superuser's name\n    \
             help: choose a POSTGRES_USER / user without quotes or backslashes",
            user.shown
        ));
    }
    if user.text.starts_with("pg_") {
        problems.push(format!(
            "{} starts with \"pg_\", which PostgreSQL reserves for its own roles\n    \
             help: choose another POSTGRES_USER / user",
            user.shown
        ));
    }
    for value in [user, database] {
        if value.text.chars().any(|c| c.is_control() && c != '\0') {
            problems.push(format!(
                "{} contains a control character (a newline, a tab, …)\n    \
                 help: use printable characters only",
                value.shown
            ));
        }
    }
    if let Some(bad) = password.chars().find(|c| matches!(c, '\n' | '\r' | '\0')) {
        let what = match bad {
            '\n' => "a newline",
            '\r' => "a carriage return",
            _ => "a NUL byte",
        };
        problems.push(format!(
            "password contains {what}: initdb keeps only the first line of its password file, \
             so logging in would fail\n    \
             help: use a password on one line (a password file's trailing newlines are removed \
             already)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(user: &str, password: &str, database: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let (user_shown, database_shown) =
            (shown("user", user, None), shown("database", database, None));
        check(
            Value::new(user, &user_shown),
            password,
            Value::new(database, &database_shown),
            &mut problems,
        );
        problems
    }

    #[test]
    fn a_value_read_from_a_file_is_named_by_the_file_never_by_its_content() {
        let file = Path::new("/root/secret");
        for (user, database) in [
            ("TOPSECRET\"quoted", "TOPSECRET\ttab"),
            ("pg_TOPSECRET", "TOPSECRET\n"),
        ] {
            let user_shown = shown("user", user, Some(file));
            let database_shown = shown("database", database, Some(file));
            let mut found = Vec::new();
            check(
                Value::new(user, &user_shown),
                "TOPSECRET",
                Value::new(database, &database_shown),
                &mut found,
            );
            assert_eq!(found.len(), 2, "{found:?}");
            for problem in &found {
                assert!(problem.contains("(read from /root/secret)"), "{problem}");
                assert!(!problem.contains("TOPSECRET"), "{problem}");
                assert!(!problem.contains("quoted"), "{problem}");
            }
        }
    }

    #[test]
    fn values_initdb_cannot_take_are_refused() {
        for (user, password, database, why) in [
            ("a\"b", "pw", "db", "cannot quote"),
            ("a'b", "pw", "db", "cannot quote"),
            ("a\\b", "pw", "db", "cannot quote"),
            ("pg_x", "pw", "db", "reserves"),
            ("a\nb", "pw", "db", "control character"),
            ("u", "pw", "d\tb", "control character"),
            ("u", "one\ntwo", "db", "a newline"),
            ("u", "one\r", "db", "a carriage return"),
            ("u", "a\0b", "db", "a NUL byte"),
        ] {
            let found = problems(user, password, database);
            assert_eq!(
                found.len(),
                1,
                "{user:?} {password:?} {database:?}: {found:?}"
            );
            assert!(found[0].contains(why), "{found:?}");
        }
    }

    #[test]
    fn ordinary_values_pass() {
        for (user, password, database) in [
            ("trader", "trader", "trader"),
            ("app user", "p@ss w'rd \"q\" \\", "my-db"),
            ("ÜserÖ", "ünïcödé", "données"),
        ] {
            assert!(problems(user, password, database).is_empty());
        }
    }
}
