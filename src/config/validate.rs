//! Turning the merged [`Layer`] into a [`Config`]: defaults applied and every value checked,
//! each problem collected so that all are reported together.

use super::layers::Layer;
use super::{
    ADMIN_ROLE, Config, DEFAULT_ADDRESS, DEFAULT_INSTANCE, DEFAULT_NAME, DEFAULT_PORT, MAJOR,
    MAJORS, NpmSettings, PasswordSource, PypiSettings, Secret, ShutdownMode, SourceKeys, Theseus,
    backup, http_address, image_env, lock_file, majors_text, resolve_source, values,
};
use crate::os::paths::{self, DefaultPaths};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Applies defaults and checks every value, collecting problems instead of stopping at the first.
/// What the source needs from outside pgwarden's own layers: npm's and pip's configuration and
/// where the theseus builds are published.
pub(super) struct Outside {
    pub(super) npm: NpmSettings,
    pub(super) npm_problems: Vec<String>,
    pub(super) pypi: PypiSettings,
    pub(super) pypi_problems: Vec<String>,
    pub(super) theseus: Theseus,
}

pub(super) fn resolve(
    layer: Layer,
    config_file: Option<PathBuf>,
    config_dir: &Path,
    defaults: &DefaultPaths,
    outside: Outside,
    problems: &mut Vec<String>,
) -> Config {
    let listen_address = layer
        .listen_address
        .as_deref()
        .unwrap_or(DEFAULT_ADDRESS)
        .parse::<IpAddr>()
        .unwrap_or_else(|e| {
            problems.push(format!(
                "listen_address {:?}: {e} (expected an IP address such as 127.0.0.1)",
                layer.listen_address.as_deref().unwrap_or_default()
            ));
            DEFAULT_ADDRESS.parse().expect("default address parses")
        });

    let port = layer.port.unwrap_or(DEFAULT_PORT);

    let name = layer.name.unwrap_or_else(|| DEFAULT_INSTANCE.to_string());
    let name_ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        problems.push(format!(
            "name {name:?}: use 1 to 40 letters, digits, '-' or '_'"
        ));
    }
    let ephemeral = layer.ephemeral.unwrap_or(false);
    let data_dir_explicit = layer.data_dir.is_some();
    if ephemeral && data_dir_explicit {
        problems.push(
            "--ephemeral makes its own throwaway data directory, and data_dir/--data-dir names one: \
             drop one of them (durability settings of a throwaway cluster are never applied to a kept one)"
                .to_string(),
        );
    }
    let data_dir = match layer.data_dir {
        Some(dir) => dir,
        None if ephemeral => paths::ephemeral_data_dir(&name),
        None if name == DEFAULT_INSTANCE => defaults.data_dir(MAJOR),
        None => defaults
            .data_root
            .join(&name)
            .join(MAJOR.to_string())
            .join("data"),
    };

    let user = layer.user.unwrap_or_else(|| DEFAULT_NAME.to_string());
    let user_shown = values::shown("user", &user, layer.read_from.user.as_deref());
    check_identifier(&user_shown, &user, problems);
    if user == ADMIN_ROLE {
        problems.push(format!(
            "user {ADMIN_ROLE:?} is reserved: pgwarden uses that role to administer the cluster\n    \
             help: choose another POSTGRES_USER / user"
        ));
    }
    // Like the postgres image: the database defaults to the user's name.
    let (database, database_file) = match layer.database {
        Some(database) => (database, layer.read_from.database),
        None => (user.clone(), layer.read_from.user),
    };
    let database_shown = values::shown("database", &database, database_file.as_deref());
    check_identifier(&database_shown, &database, problems);
    let password = layer.password.unwrap_or_else(|| DEFAULT_NAME.to_string());
    values::check(
        values::Value::new(&user, &user_shown),
        &password,
        values::Value::new(&database, &database_shown),
        problems,
    );
    let trust = layer.host_auth_method.as_deref() == Some("trust");
    if password.is_empty() && !trust {
        problems.push(
            "password is empty: set POSTGRES_PASSWORD or the `password` key (an empty password would leave the server open; only host_auth_method = \"trust\" does without one)"
                .to_string(),
        );
    }

    let version_text = layer.version.unwrap_or_else(|| MAJOR.to_string());
    let version = parse_version(&version_text, problems);

    let source = resolve_source(
        SourceKeys {
            source: layer.source,
            archive: layer.archive,
            mirror: layer.mirror,
            binaries: layer.binaries,
            npm_registry: layer.npm_registry,
            npm_config: outside.npm,
            npm_problems: outside.npm_problems,
            pypi_index: layer.pypi_index,
            pypi_config: outside.pypi,
            pypi_problems: outside.pypi_problems,
            theseus: outside.theseus,
            sha256: layer.sha256,
            download_timeout: layer.download_timeout,
            download_retries: layer.download_retries,
        },
        &version,
        problems,
    );

    let shutdown_timeout = match layer.shutdown_timeout.as_deref() {
        None => Duration::from_secs(30),
        Some(text) => parse_duration(text).unwrap_or_else(|e| {
            problems.push(format!("shutdown_timeout {text:?}: {e}"));
            Duration::from_secs(30)
        }),
    };

    let shutdown_mode = match layer.shutdown_mode.as_deref() {
        None => ShutdownMode::Fast,
        Some(text) => ShutdownMode::parse(text).unwrap_or_else(|| {
            problems.push(format!(
                "shutdown_mode {text:?}: expected smart, fast or immediate"
            ));
            ShutdownMode::Fast
        }),
    };
    let supervision = layer.supervisor.unwrap_or_default().resolve(problems);

    let run_as = layer.run_as.filter(|name| {
        let ok = !name.is_empty();
        if !ok {
            problems.push("run_as is empty: name an unprivileged user such as `pgwarden`".into());
        }
        ok
    });

    let http_address = http_address::resolve_address(
        layer.http_address.as_deref(),
        layer.http_allow_remote.unwrap_or(false),
        port,
        problems,
    );

    let mut server = BTreeMap::new();
    for (key, value) in layer.server.unwrap_or_default() {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => if b { "on" } else { "off" }.to_string(),
            other => {
                problems.push(format!(
                    "server.{key}: {} values are not server settings (use a string, number or boolean)",
                    other.type_str()
                ));
                continue;
            }
        };
        if matches!(key.as_str(), "port" | "listen_addresses" | "data_directory") {
            problems.push(format!(
                "server.{key}: set by pgwarden itself; use the top-level key instead"
            ));
            continue;
        }
        server.insert(key, text);
    }

    let backup = backup::resolve(
        layer.wal_archive,
        layer.backup_dir,
        layer.backup_keep,
        layer.backup_schedule,
        layer.backup_verify,
        problems,
    );
    backup::add_server_settings(&backup, &mut server, problems);

    Config {
        config_file,
        project: None,
        lock: lock_file::ProjectLock {
            locked: layer.locked.unwrap_or(false),
            ..Default::default()
        },
        named: false,
        password_source: PasswordSource::Default,
        password_from_env: false,
        listen_address,
        port,
        user,
        password: Secret::new(password),
        database,
        name,
        ephemeral,
        data_dir,
        data_dir_explicit,
        install_dir: layer.install_dir.unwrap_or_else(|| defaults.install_dir()),
        version,
        source,
        install_policy: Default::default(),
        run_as,
        shutdown_timeout,
        shutdown_mode,
        supervision,
        server,
        initdb_args: image_env::initdb_args(layer.initdb_args.as_deref(), problems),
        initdb_waldir: image_env::initdb_waldir(layer.initdb_waldir, problems),
        host_auth_method: image_env::host_auth_method(
            layer.host_auth_method,
            listen_address,
            problems,
        ),
        init_dir: image_env::init_dir(layer.init_dir, config_dir, problems),
        data_from: layer.data_from,
        data_from_recover: layer.data_from_recover.unwrap_or(false),
        reconcile: layer.reconcile.unwrap_or(true),
        spare: layer.spare.unwrap_or(true),
        spare_max_mb: layer.spare_max_mb.unwrap_or(super::DEFAULT_SPARE_MAX_MB),
        ephemeral_pool: layer
            .ephemeral_pool
            .unwrap_or(super::DEFAULT_EPHEMERAL_POOL),
        http_address,
        backup,
    }
}

/// `shown` names the value in messages ([`values::shown`]): never a file's content.
fn check_identifier(shown: &str, value: &str, problems: &mut Vec<String>) {
    if value.is_empty() {
        problems.push(format!("{shown} is empty"));
    } else if value.len() > 63 {
        problems.push(format!(
            "{shown} is {} bytes long; PostgreSQL names are at most 63",
            value.len()
        ));
    } else if value.contains('\0') {
        problems.push(format!("{shown} contains a NUL byte"));
    }
}

/// `16`, `16.4` or `16.4.0` (exact). A major not in [`MAJORS`] is refused.
pub(super) fn parse_version(text: &str, problems: &mut Vec<String>) -> semver::VersionReq {
    let fallback = || semver::VersionReq::parse(&format!("={MAJOR}")).expect("valid");
    let parts: Vec<&str> = text.trim().split('.').collect();
    let numeric = !parts.is_empty()
        && parts.len() <= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        problems.push(format!(
            "version {text:?}: expected 16, 16.MINOR or 16.MINOR.PATCH"
        ));
        return fallback();
    }
    if !MAJORS.iter().any(|m| parts[0] == m.to_string()) {
        problems.push(format!(
            "version {text:?}: pgwarden runs PostgreSQL {} (default {MAJOR}, the postgres:16 service it replaces)",
            majors_text()
        ));
        return fallback();
    }
    semver::VersionReq::parse(&format!("={}", parts.join("."))).unwrap_or_else(|e| {
        problems.push(format!("version {text:?}: {e}"));
        fallback()
    })
}

/// `250ms`, `30s`, `5m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 500ms, 30s or 2m, got {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!(
            "unknown unit {unit:?} in {text:?} (use ms, s or m)"
        )),
    }
}
