//! `pgwarden url` and `pgwarden env`: how to connect, for humans, `.env` files and `eval`.
//!
//! The address is the running supervisor's (from its status file), else the configured one
//! (with a note on stderr, so that stdout stays usable). The password is only printed when
//! asked for.

use crate::commands::InstanceArgs;
use crate::commands::common::Instance;
use crate::error::Result;
use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Prints the server's connection URL, `postgres://USER@HOST:PORT/DATABASE`; with \
--with-password the password is included (percent-encoded).",
    after_help = "Examples:\n  pgwarden url\n  DATABASE_URL=$(pgwarden url --with-password) ./app"
)]
pub struct UrlArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Include the password in the URL.
    #[arg(long)]
    pub with_password: bool,
}

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Prints DATABASE_URL, PGHOST, PGPORT, PGUSER and PGDATABASE as KEY=value lines (dotenv \
form), or as `export KEY='value'` lines with --shell. With --with-password, DATABASE_URL carries the \
password and PGPASSWORD is added.",
    after_help = "Examples:\n  pgwarden env --with-password > .env\n  eval \"$(pgwarden env --shell --with-password)\" && psql -c 'select 1'"
)]
pub struct EnvArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// `export KEY='value'` lines, for `eval`.
    #[arg(long)]
    pub shell: bool,

    /// Include the password (in DATABASE_URL, and as PGPASSWORD).
    #[arg(long)]
    pub with_password: bool,
}

pub fn url(args: UrlArgs, instance: Instance) -> Result<i32> {
    note_when_not_running(&instance);
    println!("{}", instance.url(args.with_password)?);
    Ok(0)
}

pub fn env(args: EnvArgs, instance: Instance) -> Result<i32> {
    note_when_not_running(&instance);
    for (key, value) in variables(&instance, args.with_password)? {
        if args.shell {
            println!("export {key}={}", shell_quote(&value));
        } else {
            println!("{key}={}", dotenv_quote(&value));
        }
    }
    Ok(0)
}

/// A note on stderr that what is printed is the configured settings, when nothing runs.
fn note_when_not_running(instance: &Instance) {
    if !instance.running() {
        eprintln!(
            "note: no pgwarden is running for {}; these are the configured settings",
            instance.config.data_dir.display()
        );
    }
}

/// The variables, in the order printed.
pub fn variables(instance: &Instance, with_password: bool) -> Result<Vec<(&'static str, String)>> {
    let address = instance.address();
    let mut vars = vec![
        ("DATABASE_URL", instance.url(with_password)?),
        ("PGHOST", address.ip().to_string()),
        ("PGPORT", address.port().to_string()),
        ("PGUSER", instance.user().to_string()),
        ("PGDATABASE", instance.database().to_string()),
    ];
    if with_password {
        vars.push(("PGPASSWORD", instance.password()?.expose().to_string()));
    }
    Ok(vars)
}

/// Single quotes, with `'` written as `'\''`.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Bare when safe, else single-quoted (dotenv readers take single-quoted values literally).
fn dotenv_quote(value: &str) -> String {
    let safe = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@%+=,[]".contains(&b));
    if safe && !value.is_empty() {
        value.to_string()
    } else if !value.contains('\'') {
        format!("'{value}'")
    } else {
        format!(
            "\"{}\"",
            value
                .replace('\\', r"\\")
                .replace('"', "\\\"")
                .replace('$', r"\$")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(dotenv_quote("postgres://a@b:1/c"), "postgres://a@b:1/c");
        assert_eq!(dotenv_quote("a b"), "'a b'");
        assert_eq!(dotenv_quote("it's $x"), "\"it's \\$x\"");
    }
}
