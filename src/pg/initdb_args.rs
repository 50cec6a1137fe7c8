//! `initdb_args` (`POSTGRES_INITDB_ARGS`) read the way initdb itself reads its command line.
//!
//! initdb parses with glibc's `getopt_long`, so a string filter on each word misses most spellings
//! of an option: short options bundle (`-kAtrust` is `-k -A trust`), a short option's value may be
//! attached (`-Utrader`) or be the next word, a long option may be abbreviated to any unambiguous
//! prefix (`--pgd=/x`, `--auth-h=trust`, `--pwf=f`) and its value follows `=` or is the next word.
//! Each word is parsed here with the same rules against initdb's own option table (PostgreSQL 16,
//! `long_options[]` and the short string `"A:c:dD:E:gkL:nNsST:U:WX:"` of `src/bin/initdb/initdb.c`),
//! and then every option pgwarden sets itself is refused, whatever its spelling, with the key to
//! use instead. Unknown or ambiguous options and stray arguments are refused too: initdb would stop
//! on them (or, for a stray word, take it as the data directory).

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    Value,
}

/// One row of initdb's option table: its long name, what it takes, and the short letter that
/// means the same (or `None`).
struct Spec {
    long: &'static str,
    takes: Takes,
    short: Option<char>,
}

const fn spec(long: &'static str, takes: Takes, short: Option<char>) -> Spec {
    Spec { long, takes, short }
}

use Takes::{Nothing, Value};

/// initdb's `long_options[]` (PostgreSQL 16).
const LONG_OPTIONS: &[Spec] = &[
    spec("pgdata", Value, Some('D')),
    spec("encoding", Value, Some('E')),
    spec("locale", Value, None),
    spec("lc-collate", Value, None),
    spec("lc-ctype", Value, None),
    spec("lc-monetary", Value, None),
    spec("lc-numeric", Value, None),
    spec("lc-time", Value, None),
    spec("lc-messages", Value, None),
    spec("no-locale", Nothing, None),
    spec("text-search-config", Value, Some('T')),
    spec("auth", Value, Some('A')),
    spec("auth-local", Value, None),
    spec("auth-host", Value, None),
    spec("pwprompt", Nothing, Some('W')),
    spec("pwfile", Value, None),
    spec("username", Value, Some('U')),
    spec("help", Nothing, Some('?')),
    spec("version", Nothing, Some('V')),
    spec("debug", Nothing, Some('d')),
    spec("show", Nothing, Some('s')),
    spec("noclean", Nothing, Some('n')),
    spec("no-clean", Nothing, Some('n')),
    spec("nosync", Nothing, Some('N')),
    spec("no-sync", Nothing, Some('N')),
    spec("no-instructions", Nothing, None),
    spec("set", Value, Some('c')),
    spec("sync-only", Nothing, Some('S')),
    spec("waldir", Value, Some('X')),
    spec("wal-segsize", Value, None),
    spec("data-checksums", Nothing, Some('k')),
    spec("allow-group-access", Nothing, Some('g')),
    spec("discard-caches", Nothing, None),
    spec("locale-provider", Value, None),
    spec("icu-locale", Value, None),
    spec("icu-rules", Value, None),
];

/// initdb's short option string: a letter followed by `:` takes a value.
const SHORT_OPTIONS: &str = "A:c:dD:E:gkL:nNsST:U:WX:";

/// One option as initdb would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitdbOption {
    /// The option's canonical name: its long name, or `-L` for the one short option without one.
    pub name: String,
    /// Its value, if it takes one.
    pub value: Option<String>,
    /// How it was written (the word, and the next one when that held the value).
    pub spelled: String,
}

/// Parses `args` as initdb's `getopt_long` would; an error names the word initdb would stop at.
pub fn parse(args: &[String]) -> Result<Vec<InitdbOption>, String> {
    let mut options = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            return Err(
                "\"--\" ends initdb's options: what follows would be taken as the data directory"
                    .to_string(),
            );
        }
        if let Some(rest) = word.strip_prefix("--") {
            let (name, attached) = match rest.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (rest, None),
            };
            let spec = find_long(name).map_err(|why| format!("{word:?}: {why}"))?;
            let (value, spelled) = match (spec.takes, attached) {
                (Nothing, Some(_)) => {
                    return Err(format!(
                        "{word:?}: initdb's option --{} does not take a value",
                        spec.long
                    ));
                }
                (Nothing, None) => (None, word.clone()),
                (Value, Some(value)) => (Some(value), word.clone()),
                (Value, None) => {
                    let value = words.next().ok_or_else(|| {
                        format!("{word:?}: initdb's option --{} needs a value", spec.long)
                    })?;
                    (Some(value.clone()), format!("{word} {value}"))
                }
            };
            options.push(InitdbOption {
                name: spec.long.to_string(),
                value,
                spelled,
            });
        } else if let Some(letters) = word.strip_prefix('-').filter(|l| !l.is_empty()) {
            // A bundle of short options; the first that takes a value takes the rest of the word
            // (or, when nothing is left, the next word).
            for (at, letter) in letters.char_indices() {
                let takes = short_takes(letter).ok_or_else(|| {
                    format!("{word:?}: -{letter} is not an initdb option (see initdb --help)")
                })?;
                let name = canonical_short(letter);
                if takes == Nothing {
                    options.push(InitdbOption {
                        name,
                        value: None,
                        spelled: word.clone(),
                    });
                    continue;
                }
                let rest = &letters[at + letter.len_utf8()..];
                let (value, spelled) = if rest.is_empty() {
                    let value = words.next().ok_or_else(|| {
                        format!("{word:?}: initdb's option -{letter} needs a value")
                    })?;
                    (value.clone(), format!("{word} {value}"))
                } else {
                    (rest.to_string(), word.clone())
                };
                options.push(InitdbOption {
                    name,
                    value: Some(value),
                    spelled,
                });
                break;
            }
        } else {
            return Err(format!(
                "{word:?} is not an option: initdb would take it as the data directory"
            ));
        }
    }
    Ok(options)
}

/// The long option `name` names, exactly or as glibc accepts an abbreviation: an exact match
/// wins; otherwise the prefix must match one option (or only options that mean the same thing).
fn find_long(name: &str) -> Result<&'static Spec, String> {
    if name.is_empty() {
        return Err("an empty option name".to_string());
    }
    if let Some(exact) = LONG_OPTIONS.iter().find(|s| s.long == name) {
        return Ok(exact);
    }
    let candidates: Vec<&Spec> = LONG_OPTIONS
        .iter()
        .filter(|s| s.long.starts_with(name))
        .collect();
    match candidates.as_slice() {
        [] => Err("not an initdb option (see initdb --help)".to_string()),
        [first, rest @ ..]
            if rest
                .iter()
                .all(|s| s.takes == first.takes && s.short == first.short && s.short.is_some()) =>
        {
            Ok(first)
        }
        many => Err(format!(
            "an ambiguous abbreviation (it could be {})",
            many.iter()
                .map(|s| format!("--{}", s.long))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn short_takes(letter: char) -> Option<Takes> {
    let at = SHORT_OPTIONS.find(letter).filter(|_| letter != ':')?;
    Some(if SHORT_OPTIONS[at + 1..].starts_with(':') {
        Value
    } else {
        Nothing
    })
}

/// A short option's long name (`-U` → `username`); `-L` has none.
fn canonical_short(letter: char) -> String {
    LONG_OPTIONS
        .iter()
        .find(|s| s.short == Some(letter))
        .map(|s| s.long.to_string())
        .unwrap_or_else(|| format!("-{letter}"))
}

/// Options pgwarden sets itself or that would defeat what it sets, with what to use instead.
const REFUSED: &[(&str, &str)] = &[
    ("pgdata", "data_dir / PGDATA / --data-dir"),
    ("username", "user / POSTGRES_USER"),
    ("pwprompt", "password / POSTGRES_PASSWORD"),
    ("pwfile", "password_file / POSTGRES_PASSWORD_FILE"),
    ("auth", "host_auth_method / POSTGRES_HOST_AUTH_METHOD"),
    ("auth-local", "host_auth_method / POSTGRES_HOST_AUTH_METHOD"),
    ("auth-host", "host_auth_method / POSTGRES_HOST_AUTH_METHOD"),
    ("waldir", "initdb_waldir / POSTGRES_INITDB_WALDIR"),
    // initdb reads its templates (pg_hba.conf.sample among them) from this directory.
    (
        "-L",
        "nothing: pgwarden uses the installation's own share directory",
    ),
    ("show", "nothing: with it initdb only prints its settings"),
    ("sync-only", "nothing: with it initdb creates no cluster"),
    ("help", "nothing: with it initdb creates no cluster"),
    ("version", "nothing: with it initdb creates no cluster"),
];

/// Settings that `-c`/`--set` must not write into postgresql.conf: they decide who may log in
/// and where the cluster's files are.
const REFUSED_SETTINGS: &[&str] = &["hba_file", "ident_file", "data_directory", "config_file"];

/// Every problem with `args` as initdb arguments for pgwarden (empty when they are fine).
pub fn problems(args: &[String]) -> Vec<String> {
    let key = "initdb_args (POSTGRES_INITDB_ARGS)";
    let options = match parse(args) {
        Ok(options) => options,
        Err(why) => return vec![format!("{key}: {why}")],
    };
    let mut problems = Vec::new();
    for option in &options {
        if let Some((name, instead)) = REFUSED.iter().find(|(name, _)| *name == option.name) {
            let shown = if name.starts_with('-') {
                name.to_string()
            } else {
                format!("--{name}")
            };
            problems.push(format!(
                "{key} contains {:?}, which is initdb's {shown}: pgwarden sets that itself\n    \
                 help: remove it and use {instead}",
                option.spelled
            ));
        }
        if option.name == "set"
            && let Some(value) = &option.value
        {
            let setting = value.split('=').next().unwrap_or_default().trim();
            if REFUSED_SETTINGS
                .iter()
                .any(|s| s.eq_ignore_ascii_case(setting))
            {
                problems.push(format!(
                    "{key} contains {:?}: pgwarden decides {setting} itself\n    \
                     help: remove it",
                    option.spelled
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    /// Every spelling of an option pgwarden owns, each refused, naming the option it is.
    #[test]
    fn every_spelling_of_an_owned_option_is_refused() {
        let table = [
            ("-kAtrust", "--auth"),
            ("-A trust", "--auth"),
            ("-Atrust", "--auth"),
            ("--auth=trust", "--auth"),
            ("--auth trust", "--auth"),
            ("--auth-h=trust", "--auth-host"),
            ("--auth-host trust", "--auth-host"),
            ("--auth-l=trust", "--auth-local"),
            ("--auth-local=peer", "--auth-local"),
            ("-D /x", "--pgdata"),
            ("-D/x", "--pgdata"),
            ("-kD/x", "--pgdata"),
            ("--pgdata=/x", "--pgdata"),
            ("--pgd=/x", "--pgdata"),
            ("--pg /x", "--pgdata"),
            ("-U evil", "--username"),
            ("-Uevil", "--username"),
            ("-kUevil", "--username"),
            ("-gkUevil", "--username"),
            ("--user=evil", "--username"),
            ("--username evil", "--username"),
            ("--u=evil", "--username"),
            ("-W", "--pwprompt"),
            ("-kW", "--pwprompt"),
            ("--pwp", "--pwprompt"),
            ("--pwprompt", "--pwprompt"),
            ("--pwf=f", "--pwfile"),
            ("--pwfile f", "--pwfile"),
            ("-X /w", "--waldir"),
            ("-X/w", "--waldir"),
            ("-kX/w", "--waldir"),
            ("--waldir=/w", "--waldir"),
            ("--wald /w", "--waldir"),
            ("-L /tmp/templates", "-L"),
            ("-kL/tmp/templates", "-L"),
            ("-s", "--show"),
            ("--sh", "--show"),
            ("-S", "--sync-only"),
            ("--sync", "--sync-only"),
            ("--he", "--help"),
            ("--vers", "--version"),
        ];
        for (args, option) in table {
            let found = problems(&words(args));
            assert_eq!(found.len(), 1, "{args:?}: {found:?}");
            assert!(
                found[0].contains(&format!("initdb's {option}:")),
                "{args:?} should be refused as {option}: {found:?}"
            );
        }
    }

    #[test]
    fn the_value_of_an_option_is_never_read_as_options() {
        // `-E -Atrust`: -E takes the next word as its value, whatever it looks like.
        let parsed = parse(&words("-E -Atrust")).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].name, "encoding");
        assert_eq!(parsed[0].value.as_deref(), Some("-Atrust"));
        assert!(problems(&words("-E -Atrust")).is_empty());
        // `-cA=trust` sets a setting named "A"; no -A in it.
        assert!(problems(&words("-cA=trust")).is_empty());
        // A bundle stops at the first option that takes a value.
        let parsed = parse(&words("-kEUTF8")).unwrap();
        assert_eq!(parsed[1].name, "encoding");
        assert_eq!(parsed[1].value.as_deref(), Some("UTF8"));
    }

    #[test]
    fn ordinary_arguments_pass() {
        for args in [
            "",
            "--data-checksums -E UTF8",
            "-k",
            "--encoding=UTF8 --locale=C.UTF-8",
            "--locale-provider=icu --icu-locale=en",
            "--no-locale",
            "--no-l",
            "--noc",
            "--no-sync -N -n",
            "--wal-segsize=64",
            "-c shared_buffers=256MB",
            "--set work_mem=8MB",
            "-T english",
            "--lc-collate=C --lc-ctype C",
            "--allow-group-access",
            "-g",
            "--discard-caches",
            "--no-instructions",
        ] {
            assert_eq!(problems(&words(args)), Vec::<String>::new(), "{args:?}");
        }
    }

    #[test]
    fn what_initdb_would_stop_at_is_refused() {
        for (args, why) in [
            ("--no-", "ambiguous"),
            ("--lc-=C", "ambiguous"),
            ("--a=trust", "ambiguous"),
            ("--aut=trust", "ambiguous"),
            ("--bogus", "not an initdb option"),
            ("-q", "not an initdb option"),
            ("-E", "needs a value"),
            ("--encoding", "needs a value"),
            ("--data-checksums=yes", "does not take a value"),
            ("/some/dir", "data directory"),
            ("-k -- /some/dir", "data directory"),
            ("-c hba_file=/tmp/hba", "hba_file"),
            ("--set=ident_file=/tmp/i", "ident_file"),
            ("-cdata_directory=/x", "data_directory"),
        ] {
            let found = problems(&words(args));
            assert_eq!(found.len(), 1, "{args:?}: {found:?}");
            assert!(found[0].contains(why), "{args:?}: {found:?}");
        }
    }
}
