//! One compose service → a [`Plan`]: the `pgwarden.toml` keys it maps to, each with the reason,
//! and what is handled by pgwarden or not carried over, for the summary.
//!
//! What maps where (README "Moving from docker compose"):
//! - `image`: a `postgres` image of major 16 (any tag, registry prefix or digest); another major
//!   is refused plainly;
//! - `ports` publishing the container's 5432 → `port` (pgwarden stays on loopback);
//! - `env_file` then `environment` → `user`, `database`, `initdb_args`, `host_auth_method`, and
//!   `*_FILE` (through `secrets` or a bind mount) → `user_file`/`password_file`/`database_file`.
//!   A password is never copied: a `POSTGRES_PASSWORD_FILE` becomes `password_file`; a
//!   `POSTGRES_PASSWORD` value is left where it is, and the file says where and how to pass it;
//! - `command: postgres -c k=v …` and a mounted `postgresql.conf` (`-c config_file=…`) → `[server]`;
//! - the bind mount on `/docker-entrypoint-initdb.d` → `init_dir`;
//! - the volume on the data directory (`/var/lib/postgresql/data`, or `PGDATA`) → `data_from`,
//!   when it holds a cluster pgwarden can read.

use super::find::ComposeFile;
use super::interpolate::{self, Lookup};
use super::parse::Node;
use std::path::{Component, Path, PathBuf};

/// The image's data directory, unless `PGDATA` says otherwise.
const IMAGE_PGDATA: &str = "/var/lib/postgresql/data";
/// Where the image runs init scripts from.
const INITDB_D: &str = "/docker-entrypoint-initdb.d";
/// The major version pgwarden serves.
const MAJOR: u32 = 16;
/// Server settings pgwarden sets itself or writes its own files for.
const PGWARDEN_SETS: [&str; 8] = [
    "port",
    "listen_addresses",
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "external_pid_file",
    "unix_socket_directories",
];
/// Service keys pgwarden does itself, with how.
const HANDLED: [(&str, &str); 6] = [
    (
        "healthcheck",
        "pgwarden probes the server itself (`pgwarden check`, /readyz)",
    ),
    (
        "restart",
        "pgwarden's supervisor restarts a crashed server ([supervisor])",
    ),
    ("shm_size", "a native server uses the host's shared memory"),
    ("stop_grace_period", "see shutdown_timeout"),
    ("stop_signal", "see shutdown_mode"),
    ("init", "pgwarden reaps and supervises the server itself"),
];
/// Service keys read by the mapping itself.
const MAPPED: [&str; 8] = [
    "image",
    "ports",
    "environment",
    "env_file",
    "command",
    "volumes",
    "secrets",
    "expose",
];

/// One key of the written file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: toml::Value,
    /// Where it came from, written above it.
    pub comment: String,
}

/// What the service becomes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub compose_file: PathBuf,
    pub service: String,
    pub keys: Vec<Entry>,
    /// `[server]` settings.
    pub server: Vec<Entry>,
    /// Comment blocks for what the user must do (a password left where it is, a data volume
    /// that cannot be read here), written into the file and printed.
    pub actions: Vec<String>,
    /// Summary lines: handled by pgwarden / not carried over.
    pub handled: Vec<String>,
    pub not_carried: Vec<String>,
}

/// A compose project read and ready to map: the YAML, the `.env` variables, the name.
pub struct Project<'a> {
    pub file: &'a ComposeFile,
    pub root: Node,
    /// The project's `.env` (interpolated), below the process environment.
    pub dotenv: Vec<(String, String)>,
    pub env: Lookup<'a>,
}

/// The container environment: name, value, where it came from.
struct ContainerEnv(Vec<(String, String, Origin)>);

#[derive(Debug, Clone)]
enum Origin {
    /// In the compose file's `environment`, as written there (before interpolation).
    Compose {
        raw: String,
    },
    EnvFile(PathBuf),
}

impl ContainerEnv {
    fn get(&self, name: &str) -> Option<(&str, &Origin)> {
        self.0
            .iter()
            .rev()
            .find(|(n, v, _)| n == name && !v.is_empty())
            .map(|(_, v, o)| (v.as_str(), o))
    }
}

/// A volume of the service.
#[derive(Debug, Clone)]
struct Mount {
    /// Bind: the host path (absolute); named volume: its directory on a standard docker host.
    source: PathBuf,
    named: Option<String>,
    target: String,
}

impl Project<'_> {
    /// A variable as compose resolves it: the process environment, then `.env`.
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).or_else(|| {
            self.dotenv
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    /// A scalar, interpolated; `None` for null.
    fn text(&self, node: &Node, what: &str, problems: &mut Vec<String>) -> Option<String> {
        let raw = match node {
            Node::Null => return None,
            Node::Scalar(raw) => raw,
            _ => {
                problems.push(format!("{what}: expected a single value"));
                return None;
            }
        };
        let mut unset = Vec::new();
        match interpolate::interpolate(raw, &|n| self.var(n), &mut unset) {
            Ok(value) => Some(value),
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                None
            }
        }
    }

    /// The project name, as compose derives it: `name:`, `COMPOSE_PROJECT_NAME`, the directory.
    pub fn name(&self, problems: &mut Vec<String>) -> String {
        let given = self
            .root
            .get("name")
            .and_then(|n| self.text(n, "name", problems))
            .or_else(|| self.var("COMPOSE_PROJECT_NAME"))
            .unwrap_or_else(|| {
                self.file
                    .dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
        given
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect()
    }

    /// A path of the compose file: absolute, relative ones taken from the project directory.
    fn host_path(&self, path: &str) -> PathBuf {
        let path = match path.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(rest),
            None => PathBuf::from(path),
        };
        normalize(&self.file.dir.join(path))
    }
}

/// `..` and `.` taken out of an absolute path, as compose does.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What an `image:` names, if it is the postgres image: its tag's major version (`None`: no
/// number in the tag, such as `latest`).
pub fn postgres_image(image: &str) -> Option<(String, Option<u32>)> {
    let without_digest = image.split('@').next().unwrap_or_default();
    let slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match without_digest[slash..].rfind(':') {
        Some(i) => (
            &without_digest[..slash + i],
            &without_digest[slash + i + 1..],
        ),
        None => (without_digest, ""),
    };
    let official = matches!(
        repo,
        "postgres" | "library/postgres" | "docker.io/postgres" | "docker.io/library/postgres"
    ) || repo.ends_with("/library/postgres");
    if !official {
        return None;
    }
    let tag = if tag.is_empty() { "latest" } else { tag };
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    Some((tag.to_string(), digits.parse().ok()))
}

/// Chooses the service: `wanted`, else the one postgres service.
pub fn choose(
    project: &Project,
    wanted: Option<&str>,
    problems: &mut Vec<String>,
) -> Option<(String, u32)> {
    let path = project.file.path.display();
    let Some(Node::Map(services)) = project.root.get("services") else {
        problems.push(format!(
            "{path}: no `services:` mapping\n    help: name a compose file that defines services"
        ));
        return None;
    };
    let mut postgres = Vec::new();
    for (name, service) in services {
        let image = service
            .get("image")
            .and_then(|i| project.text(i, &format!("services.{name}.image"), problems));
        if let Some((tag, major)) = image.as_deref().and_then(postgres_image) {
            postgres.push((name.clone(), image.unwrap_or_default(), tag, major));
        }
    }
    let chosen = match wanted {
        Some(wanted) => {
            if !services.iter().any(|(n, _)| n == wanted) {
                problems.push(format!(
                    "{path}: no service {wanted:?} (services: {})\n    help: pass one of them to --service",
                    services.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ));
                return None;
            }
            match postgres.iter().find(|(n, ..)| n == wanted) {
                Some(found) => found.clone(),
                None => {
                    problems.push(format!(
                        "{path}: the service {wanted:?} does not run the postgres image\n    \
                         help: pgwarden replaces a service whose image is postgres:16"
                    ));
                    return None;
                }
            }
        }
        None => match postgres.as_slice() {
            [one] => one.clone(),
            [] => {
                problems.push(format!(
                    "{path}: no service runs the postgres image (services: {})\n    \
                     help: pgwarden replaces a service whose image is postgres:16; name another \
                     compose file, or pass --service NAME",
                    services
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return None;
            }
            several => {
                problems.push(format!(
                    "{path}: several services run the postgres image: {}\n    \
                     help: choose one with --service NAME",
                    several
                        .iter()
                        .map(|(n, image, ..)| format!("{n} ({image})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return None;
            }
        },
    };
    let (name, image, tag, major) = chosen;
    match major {
        Some(MAJOR) => Some((name, MAJOR)),
        Some(other) => {
            problems.push(format!(
                "{path}: the service {name:?} runs {image}, PostgreSQL {other}; pgwarden serves \
                 PostgreSQL {MAJOR} only\n    help: a {other} cluster cannot be served by {MAJOR} \
                 as it is: upgrade it to {MAJOR} first (pgwarden's upgrade command, `pgwarden \
                 upgrade`, is coming; until then `pg_upgrade` or a dump and restore), or, if the \
                 service holds no data yet, change its image to postgres:{MAJOR}"
            ));
            None
        }
        None => {
            problems.push(format!(
                "{path}: the service {name:?} runs {image}: the tag {tag:?} names no major version, \
                 and `latest` is not PostgreSQL {MAJOR}\n    help: pin the service to postgres:{MAJOR} \
                 (check which version its data directory's PG_VERSION says), then run this again"
            ));
            None
        }
    }
}

/// Maps the chosen service into a plan; problems collected.
pub fn plan(project: &Project, name: &str, problems: &mut Vec<String>) -> Plan {
    let Some(service) = project.root.get("services").and_then(|s| s.get(name)) else {
        return Plan::default();
    };
    let mut plan = Plan {
        compose_file: project.file.path.clone(),
        service: name.to_string(),
        ..Plan::default()
    };
    let env = container_env(project, name, service, problems);
    let mounts = mounts(project, name, service, problems);
    map_ports(project, name, service, &mut plan, problems);
    map_identity(project, &env, &mounts, service, &mut plan, problems);
    map_initdb(&env, &mut plan);
    map_command_and_conf(project, name, service, &mounts, &mut plan, problems);
    map_volumes(project, &env, &mounts, &mut plan);
    summarize_keys(service, &mut plan);
    plan
}

/// `env_file` (in order), then `environment` over it.
fn container_env(
    project: &Project,
    name: &str,
    service: &Node,
    problems: &mut Vec<String>,
) -> ContainerEnv {
    let mut vars = Vec::new();
    let files = match service.get("env_file") {
        None | Some(Node::Null) => Vec::new(),
        Some(Node::Seq(items)) => items.clone(),
        Some(one) => vec![one.clone()],
    };
    for item in files {
        let (path, required) = match &item {
            Node::Map(_) => (
                item.get("path").cloned().unwrap_or(Node::Null),
                item.get("required")
                    .and_then(|r| project.text(r, "env_file.required", problems))
                    .is_none_or(|r| r != "false"),
            ),
            other => (other.clone(), true),
        };
        let what = format!("services.{name}.env_file");
        let Some(path) = project.text(&path, &what, problems) else {
            problems.push(format!("{what}: an entry without a path"));
            continue;
        };
        let path = project.host_path(&path);
        match project.file.read_related(&path) {
            Ok(Some(text)) => {
                let mut unset = Vec::new();
                match interpolate::dotenv(&text, &|n| project.var(n), &mut unset) {
                    Ok(read) => vars.extend(
                        read.into_iter()
                            .map(|(k, v)| (k, v, Origin::EnvFile(path.clone()))),
                    ),
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                }
            }
            Ok(None) if required => problems.push(format!(
                "{what}: {} does not exist\n    help: create it, or mark it `required: false` as \
                 compose allows",
                path.display()
            )),
            Ok(None) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    let what = format!("services.{name}.environment");
    match service.get("environment") {
        None | Some(Node::Null) => {}
        Some(Node::Map(entries)) => {
            for (key, value) in entries {
                let raw = value.as_str().unwrap_or_default().to_string();
                let value = match value {
                    Node::Null => project.var(key),
                    other => project.text(other, &format!("{what}.{key}"), problems),
                };
                if let Some(value) = value {
                    vars.push((key.clone(), value, Origin::Compose { raw }));
                }
            }
        }
        Some(Node::Seq(items)) => {
            for item in items {
                let Some(raw) = item.as_str() else {
                    problems.push(format!("{what}: expected KEY=VALUE entries"));
                    continue;
                };
                let (key, value) = match raw.split_once('=') {
                    Some((key, _)) => (
                        key.to_string(),
                        project.text(
                            &Node::Scalar(raw[key.len() + 1..].to_string()),
                            &what,
                            problems,
                        ),
                    ),
                    None => (raw.to_string(), project.var(raw)),
                };
                let raw = raw[key.len()..].trim_start_matches('=').to_string();
                if let Some(value) = value {
                    vars.push((key, value, Origin::Compose { raw }));
                }
            }
        }
        Some(_) => problems.push(format!("{what}: expected a mapping or a list")),
    }
    ContainerEnv(vars)
}

/// The service's volumes, sources resolved.
fn mounts(project: &Project, name: &str, service: &Node, problems: &mut Vec<String>) -> Vec<Mount> {
    let Some(Node::Seq(items)) = service.get("volumes") else {
        return Vec::new();
    };
    let what = format!("services.{name}.volumes");
    let project_name = project.name(problems);
    let mut out = Vec::new();
    for item in items {
        let (source, target) = match item {
            Node::Map(_) => {
                let mut get = |k: &str| {
                    item.get(k)
                        .and_then(|n| project.text(n, &format!("{what}.{k}"), problems))
                };
                let kind = get("type").unwrap_or_else(|| "volume".to_string());
                if kind == "tmpfs" {
                    continue;
                }
                (
                    get("source").unwrap_or_default(),
                    get("target").unwrap_or_default(),
                )
            }
            other => {
                let Some(text) = project.text(other, &what, &mut Vec::new()) else {
                    continue;
                };
                let mut parts = text.splitn(3, ':');
                let first = parts.next().unwrap_or_default().to_string();
                match parts.next() {
                    Some(target) => (first, target.to_string()),
                    // An anonymous volume: no host source.
                    None => (String::new(), first),
                }
            }
        };
        if source.is_empty() || target.is_empty() {
            continue;
        }
        let bind = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
        let mount = if bind {
            Mount {
                source: project.host_path(&source),
                named: None,
                target: target.trim_end_matches('/').to_string(),
            }
        } else {
            // A named volume: `volumes.<name>.name` (or external) names it, else <project>_<name>.
            let declared = project.root.get("volumes").and_then(|v| v.get(&source));
            let external = declared
                .and_then(|d| d.get("external"))
                .and_then(|e| e.as_str())
                == Some("true");
            let docker_name = declared
                .and_then(|d| d.get("name"))
                .and_then(|n| project.text(n, "volumes.name", problems))
                .unwrap_or_else(|| {
                    if external {
                        source.clone()
                    } else {
                        format!("{project_name}_{source}")
                    }
                });
            Mount {
                source: PathBuf::from(format!("/var/lib/docker/volumes/{docker_name}/_data")),
                named: Some(docker_name),
                target: target.trim_end_matches('/').to_string(),
            }
        };
        out.push(mount);
    }
    out
}

/// The host path a container path is reached through, by the bind mount holding it.
fn through_mount(mounts: &[Mount], container_path: &str) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.named.is_none())
        .filter_map(|m| {
            let rest = Path::new(container_path).strip_prefix(&m.target).ok()?;
            let host = if rest.as_os_str().is_empty() {
                m.source.clone()
            } else {
                m.source.join(rest)
            };
            Some((m.target.len(), host))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, path)| path)
}

/// A path as written into pgwarden.toml: relative to its directory when under it.
fn shown(project: &Project, path: &Path) -> String {
    match path.strip_prefix(&project.file.dir) {
        Ok(rest) if !rest.as_os_str().is_empty() => rest.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// One `ports` entry: (host ip, published port, container port).
pub fn port_entry(text: &str) -> Option<(String, String, String)> {
    let text = text.split('/').next().unwrap_or_default();
    // `[::1]:5433:5432`: an IPv6 host address in brackets.
    let (ip, rest) = match text.strip_prefix('[') {
        Some(after) => {
            let (ip, rest) = after.split_once("]:")?;
            (ip.to_string(), rest.to_string())
        }
        None => (String::new(), text.to_string()),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    match (ip.is_empty(), parts.as_slice()) {
        (true, [target]) => Some((String::new(), String::new(), target.to_string())),
        (true, [published, target]) => {
            Some((String::new(), published.to_string(), target.to_string()))
        }
        (true, [ip, published, target]) => {
            Some((ip.to_string(), published.to_string(), target.to_string()))
        }
        (false, [published, target]) => Some((ip, published.to_string(), target.to_string())),
        _ => None,
    }
}

fn map_ports(
    project: &Project,
    name: &str,
    service: &Node,
    plan: &mut Plan,
    problems: &mut Vec<String>,
) {
    let what = format!("services.{name}.ports");
    let mut found = None;
    if let Some(Node::Seq(items)) = service.get("ports") {
        for item in items {
            let entry = match item {
                Node::Map(_) => {
                    let mut get = |k: &str| {
                        item.get(k)
                            .and_then(|n| project.text(n, &format!("{what}.{k}"), problems))
                            .unwrap_or_default()
                    };
                    Some((get("host_ip"), get("published"), get("target")))
                }
                other => project
                    .text(other, &what, problems)
                    .and_then(|t| port_entry(&t)),
            };
            if let Some((ip, published, target)) = entry
                && target == "5432"
            {
                found = Some((ip, published));
                break;
            }
        }
    }
    let Some((ip, published)) = found else {
        plan.handled.push(
            "ports: 5432 is not published; pgwarden listens on 127.0.0.1 on its default port \
             (5433) — set `port` to choose"
                .to_string(),
        );
        return;
    };
    // A range (`5433-5440`): compose takes the first free one; pgwarden takes the first.
    let published = published.split('-').next().unwrap_or_default().to_string();
    match published.parse::<u16>() {
        Ok(port) if port > 0 => plan.keys.push(Entry {
            key: "port".into(),
            value: toml::Value::Integer(port.into()),
            comment: format!(
                "ports: the service published the container's 5432 on {}{port}",
                if ip.is_empty() {
                    String::new()
                } else {
                    format!("{ip}:")
                }
            ),
        }),
        _ => plan.handled.push(
            "ports: 5432 is published on a random host port; pgwarden uses its default (5433)"
                .to_string(),
        ),
    }
    let loopback = ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback());
    if ip == "::1" {
        plan.keys.push(Entry {
            key: "listen_address".into(),
            value: toml::Value::String(ip.clone()),
            comment: "ports: published on the IPv6 loopback".into(),
        });
    } else if !loopback {
        let shown = if ip.is_empty() {
            "all interfaces (0.0.0.0)".to_string()
        } else {
            ip.clone()
        };
        plan.actions.push(format!(
            "ports: the service published 5432 on {shown}; pgwarden listens on 127.0.0.1 only. \
             Clients on other machines (or in containers) no longer reach it: set \
             listen_address if you need that, with a password."
        ));
    }
}

/// User, password and database, by value or by file.
fn map_identity(
    project: &Project,
    env: &ContainerEnv,
    mounts: &[Mount],
    service: &Node,
    plan: &mut Plan,
    problems: &mut Vec<String>,
) {
    for (var, key) in [("POSTGRES_USER", "user"), ("POSTGRES_DB", "database")] {
        if let Some((value, origin)) = env.get(var) {
            plan.keys.push(Entry {
                key: key.into(),
                value: toml::Value::String(value.to_string()),
                comment: format!("{var}, {}", origin_text(project, origin)),
            });
        }
    }
    if env.get("POSTGRES_USER").is_none() && env.get("POSTGRES_USER_FILE").is_none() {
        plan.keys.push(Entry {
            key: "user".into(),
            value: toml::Value::String("postgres".into()),
            comment: "POSTGRES_USER is not set: the image's default superuser".into(),
        });
    }
    for (var, key) in [
        ("POSTGRES_USER_FILE", "user_file"),
        ("POSTGRES_PASSWORD_FILE", "password_file"),
        ("POSTGRES_DB_FILE", "database_file"),
    ] {
        let Some((inside, origin)) = env.get(var) else {
            continue;
        };
        match secret_source(project, service, mounts, inside, problems) {
            Some(SecretSource::File(path)) => plan.keys.push(Entry {
                key: key.into(),
                value: toml::Value::String(shown(project, &path)),
                comment: format!(
                    "{var}={inside}, {}: that file on this host",
                    origin_text(project, origin)
                ),
            }),
            Some(SecretSource::Variable(variable)) => plan.actions.push(format!(
                "{var}={inside} is the secret taken from the variable {variable}: pgwarden reads \
                 the image's {} from the environment, so export it under that name when you run \
                 pgwarden (or keep it in a file only you can read and set {key} = \"FILE\")",
                var.trim_end_matches("_FILE")
            )),
            None => plan.actions.push(format!(
                "{var}={inside}: no secret or bind mount of the service provides that path here; \
                 set {key} = \"FILE\" to the file on this host that holds it"
            )),
        }
    }
    if let Some((_, origin)) = env.get("POSTGRES_PASSWORD") {
        let place = match origin {
            Origin::Compose { raw } if raw.is_empty() => format!(
                "passed through from your environment (or the project's .env) by the service's `environment` of {}",
                project.file.path.display()
            ),
            Origin::Compose { raw } => {
                let names = interpolate::names(raw);
                if names.is_empty() {
                    format!(
                        "written as is in {}, in the service's `environment`",
                        project.file.path.display()
                    )
                } else {
                    let from: Vec<String> = names
                        .iter()
                        .map(|n| {
                            if (project.env)(n).is_some() {
                                format!("${n} from your environment")
                            } else if project.dotenv.iter().any(|(k, _)| k == n) {
                                format!("${n} from {}", project.file.dir.join(".env").display())
                            } else {
                                format!("${n} (unset)")
                            }
                        })
                        .collect();
                    format!(
                        "taken from {} by the service's `environment`",
                        from.join(", ")
                    )
                }
            }
            Origin::EnvFile(path) => format!("in the env_file {}", path.display()),
        };
        plan.actions.push(format!(
            "password: not copied into pgwarden.toml. The service's POSTGRES_PASSWORD is {place}. \
             pgwarden reads POSTGRES_PASSWORD from the environment as the image does: export it \
             when you run pgwarden, or keep the password in a file only you can read and set \
             password_file = \"FILE\" (until then pgwarden uses its default password)"
        ));
    }
}

/// What a `*_FILE` path inside the container is on this host.
enum SecretSource {
    File(PathBuf),
    Variable(String),
}

fn secret_source(
    project: &Project,
    service: &Node,
    mounts: &[Mount],
    inside: &str,
    problems: &mut Vec<String>,
) -> Option<SecretSource> {
    if let Some(Node::Seq(secrets)) = service.get("secrets") {
        for secret in secrets {
            let (source, target) = match secret {
                Node::Map(_) => {
                    let source = secret
                        .get("source")
                        .and_then(|s| project.text(s, "secrets.source", problems));
                    let target = secret
                        .get("target")
                        .and_then(|t| project.text(t, "secrets.target", problems))
                        .or_else(|| source.clone());
                    (source, target)
                }
                other => {
                    let name = project.text(other, "secrets", problems);
                    (name.clone(), name)
                }
            };
            let (Some(source), Some(target)) = (source, target) else {
                continue;
            };
            let target = if target.starts_with('/') {
                target
            } else {
                format!("/run/secrets/{target}")
            };
            if target != inside {
                continue;
            }
            let declared = project.root.get("secrets").and_then(|s| s.get(&source))?;
            if let Some(file) = declared
                .get("file")
                .and_then(|f| project.text(f, "secrets.file", problems))
            {
                return Some(SecretSource::File(project.host_path(&file)));
            }
            if let Some(variable) = declared
                .get("environment")
                .and_then(|e| project.text(e, "secrets.environment", problems))
            {
                return Some(SecretSource::Variable(variable));
            }
            return None;
        }
    }
    through_mount(mounts, inside).map(SecretSource::File)
}

fn origin_text(project: &Project, origin: &Origin) -> String {
    match origin {
        Origin::Compose { .. } => format!("environment of {}", project.file.path.display()),
        Origin::EnvFile(path) => format!("env_file {}", path.display()),
    }
}

/// `POSTGRES_INITDB_ARGS`, `POSTGRES_HOST_AUTH_METHOD`, and the variables pgwarden ignores.
fn map_initdb(env: &ContainerEnv, plan: &mut Plan) {
    if let Some((args, _)) = env.get("POSTGRES_INITDB_ARGS") {
        let words: Vec<String> = args.split_whitespace().map(str::to_string).collect();
        let (kept, dropped): (Vec<String>, Vec<String>) = words
            .into_iter()
            .partition(|w| crate::pg::initdb_args::problems(std::slice::from_ref(w)).is_empty());
        if !dropped.is_empty() {
            plan.not_carried.push(format!(
                "POSTGRES_INITDB_ARGS {}: pgwarden sets authentication, the superuser and the \
                 directories itself (host_auth_method, user, initdb_waldir)",
                dropped.join(" ")
            ));
        }
        if !kept.is_empty() && crate::pg::initdb_args::problems(&kept).is_empty() {
            plan.keys.push(Entry {
                key: "initdb_args".into(),
                value: toml::Value::String(kept.join(" ")),
                comment: "POSTGRES_INITDB_ARGS: used when pgwarden creates a new cluster".into(),
            });
        } else if !kept.is_empty() {
            plan.not_carried
                .push(format!("POSTGRES_INITDB_ARGS {}", kept.join(" ")));
        }
    }
    if let Some((method, _)) = env.get("POSTGRES_HOST_AUTH_METHOD") {
        if crate::config::image_env::AUTH_METHODS.contains(&method) {
            plan.keys.push(Entry {
                key: "host_auth_method".into(),
                value: toml::Value::String(method.to_string()),
                comment: format!("POSTGRES_HOST_AUTH_METHOD{}", if method == "trust" {
                    ": trust lets anyone on this machine connect as any user, without a password; pgwarden allows it on loopback only"
                } else { "" }),
            });
        } else {
            plan.not_carried.push(format!(
                "POSTGRES_HOST_AUTH_METHOD={method}: pgwarden knows {}",
                crate::config::image_env::AUTH_METHODS.join(", ")
            ));
        }
    }
    let known = [
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
        "POSTGRES_USER_FILE",
        "POSTGRES_PASSWORD_FILE",
        "POSTGRES_DB_FILE",
        "POSTGRES_INITDB_ARGS",
        "POSTGRES_HOST_AUTH_METHOD",
        "PGDATA",
    ];
    let mut others: Vec<&str> = env
        .0
        .iter()
        .map(|(n, ..)| n.as_str())
        .filter(|n| !known.contains(n))
        .collect();
    others.sort();
    others.dedup();
    for name in others {
        let why = if name == "POSTGRES_INITDB_WALDIR" {
            "a path inside the container; set initdb_waldir to a directory of this host"
        } else {
            "not a variable of the postgres image pgwarden reads (its value is not shown)"
        };
        plan.not_carried.push(format!("environment {name}: {why}"));
    }
}

/// Words of a `command:` string, as a shell splits them (quotes, no expansions).
pub fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => word.extend(chars.next()),
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                word.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Settings given to postgres on its command line: (name, value) pairs, and the words not
/// understood.
pub fn command_settings(words: &[String]) -> (Vec<(String, String)>, Vec<String>) {
    let mut words = words.iter().peekable();
    if words.peek().is_some_and(|w| *w == "docker-entrypoint.sh") {
        words.next();
    }
    if words.peek().is_some_and(|w| *w == "postgres") {
        words.next();
    }
    let mut settings = Vec::new();
    let mut other = Vec::new();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next().cloned()
        } else if let Some(rest) = word.strip_prefix("-c") {
            Some(rest.to_string())
        } else if let Some(rest) = word.strip_prefix("--") {
            Some(rest.to_string())
        } else if word == "-N" {
            words.next().map(|v| format!("max_connections={v}"))
        } else if word == "-B" {
            words.next().map(|v| format!("shared_buffers={v}"))
        } else {
            other.push(word.clone());
            None
        };
        match setting.as_deref().and_then(|s| s.split_once('=')) {
            Some((key, value)) => settings.push((key.trim().replace('-', "_"), value.to_string())),
            None => other.extend(setting),
        }
    }
    (settings, other)
}

/// `key = value` lines of a postgresql.conf (comments, quotes, `include`s not followed).
pub fn conf_settings(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut settings = Vec::new();
    let mut other = Vec::new();
    for line in text.lines() {
        let line = strip_conf_comment(line).trim().to_string();
        if line.is_empty() {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => match line.split_once(char::is_whitespace) {
                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                None => {
                    other.push(line);
                    continue;
                }
            },
        };
        if key.starts_with("include") {
            other.push(line);
            continue;
        }
        let value = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Some(inner) => inner.replace("''", "'").replace("\\'", "'"),
            None => value,
        };
        settings.push((key, value));
    }
    (settings, other)
}

/// A postgresql.conf line without its `#` comment (a `#` inside quotes kept).
fn strip_conf_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn map_command_and_conf(
    project: &Project,
    name: &str,
    service: &Node,
    mounts: &[Mount],
    plan: &mut Plan,
    problems: &mut Vec<String>,
) {
    let what = format!("services.{name}.command");
    let words = match service.get("command") {
        None | Some(Node::Null) => Vec::new(),
        Some(Node::Seq(items)) => items
            .iter()
            .filter_map(|i| project.text(i, &what, problems))
            .collect(),
        Some(one) => project
            .text(one, &what, problems)
            .map(|t| shell_words(&t))
            .unwrap_or_default(),
    };
    if !words.is_empty()
        && !matches!(words[0].as_str(), "postgres" | "docker-entrypoint.sh")
        && !words[0].starts_with('-')
    {
        plan.not_carried.push(format!(
            "command: {} (not the postgres server; pgwarden runs the server itself)",
            words.join(" ")
        ));
        return;
    }
    let (from_command, other) = command_settings(&words);
    if !other.is_empty() {
        plan.not_carried
            .push(format!("command: {}", other.join(" ")));
    }
    let mut settings: Vec<(String, String, String)> = Vec::new();
    // A mounted postgresql.conf first, so that the command line's -c wins as it does in postgres.
    if let Some((_, inside)) = from_command.iter().find(|(k, _)| k == "config_file") {
        match through_mount(mounts, inside) {
            Some(host) => match project.file.read_related(&host) {
                Ok(Some(text)) => {
                    let (from_conf, skipped) = conf_settings(&text);
                    if !skipped.is_empty() {
                        plan.not_carried.push(format!(
                            "{}: {}",
                            host.display(),
                            skipped.join("; ")
                        ));
                    }
                    for (k, v) in from_conf {
                        settings.push((
                            k,
                            v,
                            format!("{} (the service's config_file)", host.display()),
                        ));
                    }
                }
                Ok(None) => plan.actions.push(format!(
                    "command: config_file={inside} is mounted from {}, which does not exist here; \
                     copy its settings into [server]",
                    host.display()
                )),
                Err(e) => problems.push(e.to_string()),
            },
            None => plan.not_carried.push(format!(
                "command: config_file={inside}: no bind mount of the service provides it; \
                 copy its settings into [server]"
            )),
        }
    }
    for (k, v) in from_command {
        settings.push((k, v, "command: -c".into()));
    }
    for (key, value, from) in settings {
        if PGWARDEN_SETS.contains(&key.as_str()) {
            if key != "config_file" {
                plan.handled
                    .push(format!("{key} ({from}): pgwarden sets it itself"));
            }
            continue;
        }
        plan.server.retain(|e| e.key != key);
        plan.server.push(Entry {
            key,
            value: toml::Value::String(value),
            comment: from,
        });
    }
}

/// The init scripts' and the data's volumes.
fn map_volumes(project: &Project, env: &ContainerEnv, mounts: &[Mount], plan: &mut Plan) {
    let pgdata = env
        .get("PGDATA")
        .map(|(v, _)| v.trim_end_matches('/').to_string())
        .unwrap_or_else(|| IMAGE_PGDATA.to_string());
    for mount in mounts {
        if mount.target == INITDB_D {
            match &mount.named {
                None => plan.keys.push(Entry {
                    key: "init_dir".into(),
                    value: toml::Value::String(shown(project, &mount.source)),
                    comment: format!(
                        "the volume on {INITDB_D}: run once, in name order, when pgwarden creates a new cluster"
                    ),
                }),
                Some(volume) => plan.actions.push(format!(
                    "init scripts: the named volume {volume} holds them; copy them into a directory and set init_dir"
                )),
            }
            continue;
        }
        let data_dir = if mount.target == pgdata {
            Some(mount.source.clone())
        } else if Path::new(&pgdata).parent() == Some(Path::new(&mount.target)) {
            // The volume on /var/lib/postgresql: the cluster is its `data` below.
            Path::new(&pgdata).file_name().map(|n| mount.source.join(n))
        } else {
            None
        };
        if let Some(dir) = data_dir {
            map_data(project, mount, &dir, &pgdata, plan);
            continue;
        }
        // A mounted config file was read into [server] already.
        let read_as_config = plan
            .server
            .iter()
            .any(|e| e.comment.starts_with(&mount.source.display().to_string()));
        if !read_as_config {
            let what = match &mount.named {
                Some(v) => format!("the volume {v}"),
                None => mount.source.display().to_string(),
            };
            plan.not_carried
                .push(format!("volume {what} on {}", mount.target));
        }
    }
    if !mounts
        .iter()
        .any(|m| m.target == pgdata || Path::new(&pgdata).parent() == Some(Path::new(&m.target)))
    {
        plan.handled.push(format!(
            "data: no volume on {pgdata} (the container's data lives only as long as it); \
             pgwarden creates a new cluster"
        ));
    }
}

fn map_data(project: &Project, mount: &Mount, dir: &Path, pgdata: &str, plan: &mut Plan) {
    let what = match &mount.named {
        Some(volume) => format!("the named volume {volume} on {pgdata}"),
        None => format!("the bind mount on {pgdata}"),
    };
    match std::fs::read_to_string(dir.join("PG_VERSION")) {
        Ok(_) => plan.keys.push(Entry {
            key: "data_from".into(),
            value: toml::Value::String(shown(project, dir)),
            comment: format!(
                "{what}: the first `pgwarden start` copies this cluster into pgwarden's data \
                 directory, leaving it as it is (Docker can still use it)"
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => {
            plan.handled.push(format!(
                "data: {what} ({}) holds no cluster yet; pgwarden creates a new one",
                dir.display()
            ));
        }
        Err(e) => plan.actions.push(format!(
            "data: {what} is {} on a docker host, which pgwarden cannot read here ({e}). To take \
             that cluster over, run this as a user who can read it (root), or pass \
             `--data-from DIR` to `pgwarden start` (or set data_from = \"DIR\") with that \
             directory or a copy of it",
            dir.display()
        )),
    }
}

/// The service's other keys, for the summary.
fn summarize_keys(service: &Node, plan: &mut Plan) {
    let Node::Map(entries) = service else {
        return;
    };
    for (key, _) in entries {
        if MAPPED.contains(&key.as_str()) {
            if key == "expose" {
                plan.handled
                    .push("expose: pgwarden listens on loopback only".into());
            }
            continue;
        }
        match HANDLED.iter().find(|(k, _)| k == key) {
            Some((k, how)) => plan.handled.push(format!("{k}: {how}")),
            None => plan.not_carried.push(key.clone()),
        }
    }
}
