//! The official `postgres` image's environment contract, on a native process.
//!
//! `docker-entrypoint.sh` reads `POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_DB` (each also
//! as `X_FILE`: the value is read from that file), `POSTGRES_INITDB_ARGS`,
//! `POSTGRES_INITDB_WALDIR`, `POSTGRES_HOST_AUTH_METHOD` and `PGDATA`. pgwarden reads the same
//! names with the same rules, and mirrors each by a config key (`user_file`, `initdb_args`, …):
//! - `X` and `X_FILE` both set (non-empty) is an error, in the environment as in one config file;
//!   an empty variable counts as unset, as in the image's `file_env`;
//! - a file's trailing newlines are stripped (the shell's `$(< file)` does that), nothing else;
//! - `POSTGRES_INITDB_ARGS` is split on whitespace, without quoting (the image expands it
//!   unquoted), then read as initdb reads it ([`crate::pg::initdb_args`]); options that would fight
//!   pgwarden's own (`--pgdata`, `--username`, `--pwfile`, `--auth*`, `--waldir`), in any
//!   spelling, are refused with the key to use instead;
//! - `POSTGRES_HOST_AUTH_METHOD=trust` is refused unless the server listens on loopback only,
//!   and warned about even then ([`trust_warning`], logged by `run`).
//!
//! A leaf: it reads and checks these values one by one, and [`crate::config`] puts them into
//! its `Layer`s and its `Config`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// How TCP clients authenticate (the image's `POSTGRES_HOST_AUTH_METHOD`); the first is the
/// default.
pub const AUTH_METHODS: [&str; 4] = ["scram-sha-256", "md5", "password", "trust"];

/// The image's variables, as read from the environment.
#[derive(Debug, Default)]
pub struct ImageEnv {
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: Option<String>,
    /// The files `user` and `database` were read from (`X_FILE`), named in messages instead of
    /// their content.
    pub user_file: Option<PathBuf>,
    pub database_file: Option<PathBuf>,
    pub initdb_args: Option<String>,
    pub initdb_waldir: Option<PathBuf>,
    pub host_auth_method: Option<String>,
    pub pgdata: Option<PathBuf>,
}

impl ImageEnv {
    pub fn read(env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> ImageEnv {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        let from_file = |name: &str, value: &Option<String>| {
            value.as_ref()?;
            set(&format!("{name}_FILE")).map(PathBuf::from)
        };
        let user = file_env(&set, "POSTGRES_USER", problems);
        let database = file_env(&set, "POSTGRES_DB", problems);
        ImageEnv {
            user_file: from_file("POSTGRES_USER", &user),
            database_file: from_file("POSTGRES_DB", &database),
            user,
            password: file_env(&set, "POSTGRES_PASSWORD", problems),
            database,
            initdb_args: set("POSTGRES_INITDB_ARGS"),
            initdb_waldir: set("POSTGRES_INITDB_WALDIR").map(PathBuf::from),
            host_auth_method: set("POSTGRES_HOST_AUTH_METHOD"),
            pgdata: set("PGDATA").map(PathBuf::from),
        }
    }
}

/// `NAME`, or the contents of the file named by `NAME_FILE`; both set is a problem.
fn file_env(
    set: &dyn Fn(&str) -> Option<String>,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    let file_var = format!("{name}_FILE");
    match (set(name), set(&file_var)) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "both {name} and {file_var} are set, but they are exclusive (as in the postgres image)\n    \
                 help: unset one of them"
            ));
            None
        }
        (Some(value), None) => Some(value),
        (None, Some(path)) => read_secret(Path::new(&path), &file_var, problems),
        (None, None) => None,
    }
}

/// Reads a value from a file, without its trailing newlines.
pub fn read_secret(path: &Path, what: &str, problems: &mut Vec<String>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text.trim_end_matches('\n').to_string()),
        Err(e) => {
            problems.push(format!("{what} {}: cannot read it: {e}", path.display()));
            None
        }
    }
}

/// A config file's `key` and `key_file`: the value, or the file's contents; both set is a
/// problem. The file is read here, so that later layers override the value either way.
pub fn value_or_file(
    value: Option<String>,
    file: Option<PathBuf>,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match (value, file) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "both `{key}` and `{key}_file` are set in the config file, but they are exclusive\n    \
                 help: keep one of them"
            ));
            None
        }
        (None, Some(path)) => read_secret(&path, &format!("{key}_file"), problems),
        (value, None) => value,
    }
}

/// `true`/`false` (also `1`/`0`, `on`/`off`, `yes`/`no`) from an environment variable.
pub fn parse_bool_env(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<bool> {
    let value = env(name).filter(|v| !v.is_empty())?;
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => {
            problems.push(format!("{name}={value:?}: expected true or false"));
            None
        }
    }
}

/// `initdb_args` / `POSTGRES_INITDB_ARGS`, split on whitespace and checked as initdb reads it.
pub fn initdb_args(given: Option<&str>, problems: &mut Vec<String>) -> Vec<String> {
    let args: Vec<String> = given
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    problems.extend(crate::pg::initdb_args::problems(&args));
    args
}

/// `initdb_waldir` / `POSTGRES_INITDB_WALDIR`: absolute, as initdb requires.
pub fn initdb_waldir(given: Option<PathBuf>, problems: &mut Vec<String>) -> Option<PathBuf> {
    if let Some(dir) = &given
        && dir.is_relative()
    {
        problems.push(format!(
            "initdb_waldir (POSTGRES_INITDB_WALDIR) {}: must be an absolute path (initdb requires it)",
            dir.display()
        ));
    }
    given
}

/// `host_auth_method` / `POSTGRES_HOST_AUTH_METHOD`: one of [`AUTH_METHODS`]; `trust` only
/// on a loopback address.
pub fn host_auth_method(
    given: Option<String>,
    listen_address: IpAddr,
    problems: &mut Vec<String>,
) -> String {
    let method = given.unwrap_or_else(|| AUTH_METHODS[0].to_string());
    if !AUTH_METHODS.contains(&method.as_str()) {
        problems.push(format!(
            "host_auth_method (POSTGRES_HOST_AUTH_METHOD) {method:?}: expected one of {}",
            AUTH_METHODS.join(", ")
        ));
    }
    if method == "trust" && !listen_address.is_loopback() {
        problems.push(format!(
            "host_auth_method (POSTGRES_HOST_AUTH_METHOD) \"trust\" on {listen_address}: anyone who can reach \
             that address could log in as any user without a password\n    \
             help: use a password (the default, scram-sha-256), or listen on 127.0.0.1 / ::1 only"
        ));
    }
    method
}

/// What the server that `run` starts should warn about: `trust` (allowed on loopback only).
pub fn trust_warning(host_auth_method: &str) -> Option<&'static str> {
    (host_auth_method == "trust").then_some(
        "host_auth_method is trust: anyone on this machine can connect as any user, without a password",
    )
}

/// `init_dir` / `--init-dir`, which must exist; else `initdb.d` beside the config file when it
/// exists.
pub fn init_dir(
    given: Option<PathBuf>,
    config_dir: &Path,
    problems: &mut Vec<String>,
) -> Option<PathBuf> {
    match given {
        Some(dir) => {
            if !dir.is_dir() {
                problems.push(format!(
                    "init_dir {}: no such directory\n    help: create it, or remove init_dir / --init-dir",
                    dir.display()
                ));
            }
            Some(dir)
        }
        // The default is used only when it exists.
        None => Some(config_dir.join("initdb.d")).filter(|d| d.is_dir()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Layer, Sources};
    use crate::error::Result;
    use crate::os::paths::DefaultPaths;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    /// Loads a config with `env`, an optional config file, and a default config dir `dir`.
    fn load(dir: &Path, file: Option<&str>, env: &[(&str, &str)]) -> Result<Config> {
        let config_file = file.map(|text| {
            let p = dir.join("config.toml");
            std::fs::write(&p, text).unwrap();
            p
        });
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let defaults = DefaultPaths {
            config_file: dir.join("default").join("config.toml"),
            data_root: PathBuf::from("/srv/pg"),
        };
        Config::load_with(
            &Sources {
                remembered: Layer::default(),
                config_file,
                flags: Layer::default(),
                system: false,
                project: Default::default(),
            },
            &|k| env.get(k).cloned(),
            &defaults,
        )
    }

    fn error(dir: &Path, file: Option<&str>, env: &[(&str, &str)]) -> String {
        load(dir, file, env).unwrap_err().to_string()
    }

    #[test]
    fn an_error_about_a_value_read_from_a_file_never_shows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "TOPSECRET\"x\n").unwrap();
        let long = dir.path().join("long");
        std::fs::write(&long, "TOPSECRET".repeat(10)).unwrap();
        let from_config = error(
            dir.path(),
            Some(&format!(
                "user_file = {:?}\ndatabase_file = {:?}\n",
                secret.display().to_string(),
                long.display().to_string()
            )),
            &[],
        );
        let from_env = error(
            dir.path(),
            None,
            &[
                ("POSTGRES_USER_FILE", &secret.display().to_string()),
                ("POSTGRES_DB_FILE", &long.display().to_string()),
            ],
        );
        for err in [from_config, from_env] {
            assert!(!err.contains("TOPSECRET"), "{err}");
            assert!(
                err.contains(&format!("user (read from {})", secret.display())),
                "{err}"
            );
            assert!(
                err.contains(&format!(
                    "database (read from {}) is 90 bytes",
                    long.display()
                )),
                "{err}"
            );
        }
        // A value typed in the environment is still quoted, to be found and fixed.
        let err = error(dir.path(), None, &[("POSTGRES_USER", "a\"b")]);
        assert!(err.contains("user \"a\\\"b\""), "{err}");
    }

    #[test]
    fn file_variants_strip_trailing_newlines_only() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("u", "alice\n"), ("p", " s3cret \n\n"), ("d", "app")] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let c = load(
            dir.path(),
            None,
            &[
                ("POSTGRES_USER_FILE", &path("u")),
                ("POSTGRES_PASSWORD_FILE", &path("p")),
                ("POSTGRES_DB_FILE", &path("d")),
            ],
        )
        .unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(c.password.expose(), " s3cret ");
        assert_eq!(c.database, "app");
    }

    #[test]
    fn value_and_file_together_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p"), "x").unwrap();
        let p = dir.path().join("p").to_string_lossy().into_owned();
        for name in ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"] {
            let file_var = format!("{name}_FILE");
            let text = error(dir.path(), None, &[(name, "v"), (&file_var, &p)]);
            assert!(
                text.contains(&format!("both {name} and {name}_FILE")),
                "{text}"
            );
        }
        // An empty variable counts as unset, as in the image.
        let c = load(
            dir.path(),
            None,
            &[("POSTGRES_PASSWORD", ""), ("POSTGRES_PASSWORD_FILE", &p)],
        )
        .unwrap();
        assert_eq!(c.password.expose(), "x");
        // Same rule for the config keys, with paths relative to the file.
        let text = error(
            dir.path(),
            Some("password = \"a\"\npassword_file = \"p\"\n"),
            &[],
        );
        assert!(text.contains("`password` and `password_file`"), "{text}");
        let c = load(dir.path(), Some("password_file = \"p\"\n"), &[]).unwrap();
        assert_eq!(c.password.expose(), "x");
        // The environment beats the file's password_file.
        let c = load(
            dir.path(),
            Some("password_file = \"p\"\n"),
            &[("POSTGRES_PASSWORD", "env")],
        )
        .unwrap();
        assert_eq!(c.password.expose(), "env");
    }

    #[test]
    fn missing_secret_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = error(
            dir.path(),
            None,
            &[("POSTGRES_PASSWORD_FILE", "/nonexistent/secret")],
        );
        assert!(
            text.contains("POSTGRES_PASSWORD_FILE /nonexistent/secret"),
            "{text}"
        );
    }

    #[test]
    fn initdb_args_are_split_and_own_options_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(
            dir.path(),
            None,
            &[("POSTGRES_INITDB_ARGS", " --data-checksums  -E UTF8 ")],
        )
        .unwrap();
        assert_eq!(c.initdb_args, ["--data-checksums", "-E", "UTF8"]);
        let c = load(dir.path(), Some("initdb_args = \"-k\"\n"), &[]).unwrap();
        assert_eq!(c.initdb_args, ["-k"]);
        for bad in [
            "--auth-host=md5",
            "-Uother",
            "--pgdata=/x",
            "--waldir=/w",
            "-A trust",
        ] {
            let text = error(dir.path(), None, &[("POSTGRES_INITDB_ARGS", bad)]);
            assert!(text.contains("pgwarden sets"), "{bad}: {text}");
        }
    }

    #[test]
    fn data_from_is_resolved_against_the_file_and_the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(dir.path(), None, &[]).unwrap();
        assert_eq!(c.data_from, None);
        assert!(!c.data_from_recover);
        let c = load(dir.path(), Some("data_from = \"docker/pgdata\"\n"), &[]).unwrap();
        assert_eq!(c.data_from, Some(dir.path().join("docker/pgdata")));
        let c = load(
            dir.path(),
            Some("data_from = \"docker/pgdata\"\n"),
            &[
                ("PGWARDEN_DATA_FROM", "/srv/volume/_data"),
                ("PGWARDEN_DATA_FROM_RECOVER", "true"),
            ],
        )
        .unwrap();
        assert_eq!(c.data_from, Some(PathBuf::from("/srv/volume/_data")));
        assert!(c.data_from_recover);
    }

    #[test]
    fn waldir_must_be_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(dir.path(), None, &[("POSTGRES_INITDB_WALDIR", "/srv/wal")]).unwrap();
        assert_eq!(c.initdb_waldir, Some(PathBuf::from("/srv/wal")));
        let text = error(dir.path(), None, &[("POSTGRES_INITDB_WALDIR", "wal")]);
        assert!(text.contains("absolute"), "{text}");
    }

    #[test]
    fn trust_only_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(dir.path(), None, &[("POSTGRES_HOST_AUTH_METHOD", "trust")]).unwrap();
        assert_eq!(c.host_auth_method, "trust");
        // With trust, an empty password is allowed (as in the image).
        let c = load(
            dir.path(),
            Some("password = \"\"\nhost_auth_method = \"trust\"\nlisten_address = \"::1\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.password.expose(), "");
        let text = error(
            dir.path(),
            None,
            &[
                ("POSTGRES_HOST_AUTH_METHOD", "trust"),
                ("PGWARDEN_LISTEN_ADDRESS", "0.0.0.0"),
            ],
        );
        assert!(text.contains("\"trust\" on 0.0.0.0"), "{text}");
        let text = error(dir.path(), None, &[("POSTGRES_HOST_AUTH_METHOD", "ident")]);
        assert!(text.contains("expected one of"), "{text}");
        let c = load(dir.path(), None, &[("POSTGRES_HOST_AUTH_METHOD", "md5")]).unwrap();
        assert_eq!(c.host_auth_method, "md5");
    }

    #[test]
    fn pgdata_sets_the_data_dir_below_pgwarden_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(dir.path(), None, &[("PGDATA", "/srv/pgdata")]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/pgdata"));
        let c = load(
            dir.path(),
            None,
            &[
                ("PGDATA", "/srv/pgdata"),
                ("PGWARDEN_DATA_DIR", "/srv/other"),
            ],
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/other"));
    }

    #[test]
    fn init_dir_defaults_beside_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = load(dir.path(), Some(""), &[]).unwrap();
        assert_eq!(c.init_dir, None, "no initdb.d: no scripts");
        std::fs::create_dir(dir.path().join("initdb.d")).unwrap();
        let c = load(dir.path(), Some(""), &[]).unwrap();
        assert_eq!(c.init_dir, Some(dir.path().join("initdb.d")));
        // Without a config file: beside the default config file.
        std::fs::create_dir_all(dir.path().join("default/initdb.d")).unwrap();
        let c = load(dir.path(), None, &[]).unwrap();
        assert_eq!(c.init_dir, Some(dir.path().join("default/initdb.d")));
        // Named explicitly but missing: an error.
        let text = error(
            dir.path(),
            None,
            &[("PGWARDEN_INIT_DIR", "/nonexistent/initdb.d")],
        );
        assert!(text.contains("init_dir /nonexistent/initdb.d"), "{text}");
    }

    #[test]
    fn reconcile_defaults_on() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), None, &[]).unwrap().reconcile);
        assert!(
            !load(dir.path(), Some("reconcile = false\n"), &[])
                .unwrap()
                .reconcile
        );
        assert!(
            !load(dir.path(), None, &[("PGWARDEN_RECONCILE", "off")])
                .unwrap()
                .reconcile
        );
        let text = error(dir.path(), None, &[("PGWARDEN_RECONCILE", "maybe")]);
        assert!(text.contains("PGWARDEN_RECONCILE"), "{text}");
    }

    #[test]
    fn shipped_config_files_load() {
        let dir = tempfile::tempdir().unwrap();
        for shipped in ["config.example.toml", "packaging/deb/config.toml"] {
            let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(shipped))
                .unwrap();
            let c = load(dir.path(), Some(&text), &[]).unwrap_or_else(|e| panic!("{shipped}: {e}"));
            assert_eq!((c.port, c.user.as_str()), (5433, "trader"), "{shipped}");
        }
    }

    #[test]
    fn admin_role_name_is_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let text = error(dir.path(), None, &[("POSTGRES_USER", "pgwarden_admin")]);
        assert!(text.contains("reserved"), "{text}");
    }
}
