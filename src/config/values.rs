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

/// Adds a problem for each value PostgreSQL or initdb cannot take.
pub fn check(user: &str, password: &str, database: &str, problems: &mut Vec<String>) {
    if let Some(bad) = user.chars().find(|c| matches!(c, '"' | '\'' | '\\')) {
        problems.push(format!(
            "user {user:?} contains {bad:?}, which initdb cannot quote in the superuser's name\n    \
             help: choose a POSTGRES_USER / user without quotes or backslashes"
        ));
    }
    if user.starts_with("pg_") {
        problems.push(format!(
            "user {user:?} starts with \"pg_\", which PostgreSQL reserves for its own roles\n    \
             help: choose another POSTGRES_USER / user"
        ));
    }
    for (key, value) in [("user", user), ("database", database)] {
        if value.chars().any(|c| c.is_control() && c != '\0') {
            problems.push(format!(
                "{key} {value:?} contains a control character (a newline, a tab, …)\n    \
                 help: use printable characters only"
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
        check(user, password, database, &mut problems);
        problems
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
