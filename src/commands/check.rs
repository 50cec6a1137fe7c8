//! `pgwarden check`: pg_isready, natively, plus `--query` (a real login and `SELECT 1`).
//!
//! Mirrors src/bin/scripts/pg_isready.c and libpq's `PQpingParams(…, expand_dbname=1)`: `-d`
//! may be a connection string or URI whose settings override `-h/-p/-U`; the line printed is
//! `HOST:PORT - STATE` with the host and port *as given* (the connection string's, else the
//! flag's, else the default), and the exit code is 0/1/2/3. The one deliberate difference: the
//! defaults are pgwarden's own address and port (the running supervisor's, else the
//! configured), not libpq's socket directory and 5432, and libpq's PG* environment variables
//! are not read.

use crate::commands::common::Instance;
use crate::error::Result;
use crate::pg::conninfo::{self, Settings};
use crate::pg::probe::{self, Encryption, Endpoint, PingStatus};
use clap::{ArgAction, Args};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
#[command(
    disable_help_flag = true,
    long_about = "Checks whether the server accepts connections, exactly like pg_isready: same options, \
same output line (`127.0.0.1:5433 - accepting connections`), same exit codes: 0 accepting, 1 rejecting \
(starting up, shutting down, recovering), 2 no response, 3 no attempt (unusable parameters). It speaks \
the wire protocol itself (no libpq, no pg_isready process) and, without -h/-p, checks pgwarden's own \
address and port.\n\nWith --query it goes further: it logs in with the configured credentials and runs \
SELECT 1, telling a wrong password (exit 4) and a missing database (exit 5) apart from a server that is \
down (2); any other failed query exits 6.",
    after_help = "Examples:\n  pgwarden check                                   # pgwarden's server\n  pgwarden check -h 127.0.0.1 -p 5433 -U trader     # like pg_isready\n  pgwarden check -d postgres://trader@db:5433/trader -t 1\n  pgwarden check --query                            # log in and run SELECT 1\n  until pgwarden check -q; do sleep 0.1; done"
)]
pub struct CheckArgs {
    /// Database server host or socket directory [default: pgwarden's listen address].
    #[arg(short = 'h', long = "host", value_name = "HOSTNAME")]
    pub host: Option<String>,

    /// Database server port [default: pgwarden's port].
    #[arg(
        short = 'p',
        long = "port",
        value_name = "PORT",
        allow_hyphen_values = true
    )]
    pub port: Option<String>,

    /// User name to connect as [default: the configured user].
    #[arg(short = 'U', long = "username", value_name = "USERNAME")]
    pub username: Option<String>,

    /// Database name, or a connection string (`host=… port=…`) or URI (`postgres://…`).
    #[arg(short = 'd', long = "dbname", value_name = "DBNAME")]
    pub dbname: Option<String>,

    /// Seconds to wait when attempting connection, 0 disables.
    #[arg(
        short = 't',
        long = "timeout",
        value_name = "SECS",
        default_value = "3",
        allow_hyphen_values = true
    )]
    pub timeout: String,

    /// Run quietly: no output, only the exit code.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,

    /// Log in with the configured password and run SELECT 1 (exit 4: wrong password,
    /// 5: database missing, 6: query failed).
    #[arg(long)]
    pub query: bool,

    /// Config file, for the defaults (see `pgwarden run --help`).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The instance's data directory, for the defaults.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The instance's name, for the defaults (an ephemeral `--port 0` instance is found by it).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Use the system layout's defaults (see `pgwarden run --help`).
    #[arg(long)]
    pub system: bool,

    /// Print help.
    #[arg(short = '?', long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,
}

/// Exit codes beyond pg_isready's, for `--query`.
pub const EXIT_AUTH: i32 = 4;
pub const EXIT_NO_DATABASE: i32 = 5;
pub const EXIT_QUERY: i32 = 6;

/// Everything needed to probe, resolved from flags, the connection string and the defaults.
#[derive(Debug)]
struct Plan {
    /// What the output line shows before ` - `.
    shown: String,
    /// The hosts to try in order (each with its port text), or a reason not to try at all.
    targets: std::result::Result<Vec<Target>, String>,
    user: String,
    database: String,
    password: String,
    /// `None`: no limit. `Err`: an unparsable `-t`, which libpq treats as a failed connection.
    timeout: std::result::Result<Option<Duration>, ()>,
    encryption: Encryption,
}

#[derive(Debug, Clone)]
struct Target {
    host: String,
    hostaddr: String,
    port: String,
}

pub async fn run(args: CheckArgs, instance: Result<Instance>) -> Result<i32> {
    let settings = match args.dbname.as_deref().filter(|d| conninfo::is_conninfo(d)) {
        Some(text) => match conninfo::parse(text) {
            Ok(settings) => Some(settings),
            Err(message) => {
                // pg_isready: an error on stderr, no line, "no attempt".
                eprintln!("pgwarden check: error: {message}");
                return Ok(PingStatus::NoAttempt.exit_code());
            }
        },
        None => None,
    };
    let instance = match instance {
        Ok(instance) => instance,
        Err(e) => {
            eprintln!("pgwarden check: error: {e}");
            return Ok(PingStatus::NoAttempt.exit_code());
        }
    };
    let default = instance.address();
    let password = match instance.password() {
        Ok(password) => password,
        Err(e)
            if args.query
                && settings
                    .as_ref()
                    .is_none_or(|s| s.get("password").is_none()) =>
        {
            eprintln!("pgwarden check: error: {e}");
            return Ok(PingStatus::NoAttempt.exit_code());
        }
        Err(_) => instance.config.password.clone(),
    };
    let defaults = Defaults {
        user: instance.user().to_string(),
        database: instance.database().to_string(),
        password: password.expose().to_string(),
    };
    let plan = plan(&args, settings.as_ref(), &defaults, default);

    let (status, endpoint) = probe_plan(&plan, default).await;
    if !args.query || status != PingStatus::Accepting {
        if !args.quiet {
            println!("{} - {}", plan.shown, status.describe());
        }
        return Ok(status.exit_code());
    }
    let endpoint = endpoint.expect("an accepting probe names its endpoint");
    let (code, line, help) = query(&plan, &endpoint).await;
    if !args.quiet {
        println!("{} - {line}", plan.shown);
        if let Some(help) = help {
            eprintln!("help: {help}");
        }
    }
    Ok(code)
}

fn non_empty(value: Option<&String>) -> Option<&str> {
    value.map(String::as_str).filter(|v| !v.is_empty())
}

/// The instance's user, database and password: what the running instance runs with.
struct Defaults {
    user: String,
    database: String,
    password: String,
}

fn plan(
    args: &CheckArgs,
    settings: Option<&Settings>,
    config: &Defaults,
    default: SocketAddr,
) -> Plan {
    let empty = Settings::new();
    let opts = settings.unwrap_or(&empty);
    let default_host = default.ip().to_string();
    let default_port = default.port().to_string();

    // What pg_isready prints: the connection string's value, else the flag's, else the default.
    let shown_host = opts
        .get("hostaddr")
        .or(opts.get("host"))
        .or(args.host.as_ref())
        .cloned()
        .unwrap_or_else(|| default_host.clone());
    let shown_port = opts
        .get("port")
        .or(args.port.as_ref())
        .cloned()
        .unwrap_or_else(|| default_port.clone());

    // What is used: the last non-empty value (libpq's rule), the connection string coming last.
    let host = non_empty(opts.get("host")).or(non_empty(args.host.as_ref()));
    let hostaddr = non_empty(opts.get("hostaddr"));
    let port = non_empty(opts.get("port")).or(non_empty(args.port.as_ref()));
    let user = non_empty(opts.get("user"))
        .or(non_empty(args.username.as_ref()))
        .map(str::to_string);
    let plain_dbname = args.dbname.as_ref().filter(|_| settings.is_none());
    let database = non_empty(opts.get("dbname"))
        .or(non_empty(plain_dbname))
        .map(str::to_string)
        // libpq's default database is the user's name; pgwarden's is the configured database.
        .or_else(|| user.clone())
        .unwrap_or_else(|| config.database.clone());
    let user = user.unwrap_or_else(|| config.user.clone());
    let password = opts
        .get("password")
        .cloned()
        .unwrap_or_else(|| config.password.clone());

    let targets = conninfo::check_values(opts).and_then(|()| {
        let hosts: Vec<&str> = host.map_or(vec![""], |h| h.split(',').collect());
        let addrs: Vec<&str> = hostaddr.map_or(vec![], |h| h.split(',').collect());
        let count = if host.is_none() && !addrs.is_empty() {
            addrs.len()
        } else {
            hosts.len()
        };
        if !addrs.is_empty() && addrs.len() != count {
            return Err(format!(
                "could not match {} host names to {} hostaddr values",
                count,
                addrs.len()
            ));
        }
        let ports: Vec<&str> = port.map_or(vec![""], |p| p.split(',').collect());
        if ports.len() > 1 && ports.len() != count {
            return Err(format!(
                "could not match {} port numbers to {} hosts",
                ports.len(),
                count
            ));
        }
        Ok((0..count)
            .map(|i| Target {
                host: hosts.get(i).copied().unwrap_or("").to_string(),
                hostaddr: addrs.get(i).copied().unwrap_or("").to_string(),
                port: ports[if ports.len() == 1 { 0 } else { i }].to_string(),
            })
            .collect())
    });

    let encryption = if matches!(
        opts.get("sslmode").map(String::as_str),
        Some("require" | "verify-ca" | "verify-full")
    ) {
        Encryption::RequireSsl
    } else if opts.get("gssencmode").map(String::as_str) == Some("require") {
        Encryption::RequireGss
    } else {
        Encryption::None
    };

    Plan {
        shown: format!("{shown_host}:{shown_port}"),
        targets,
        user,
        database,
        password,
        timeout: parse_timeout(&args.timeout),
        encryption,
    }
}

/// libpq's `connect_timeout`: an integer number of seconds (surrounding spaces allowed); zero or
/// less waits forever; 1 means 2 (libpq's minimum).
fn parse_timeout(text: &str) -> std::result::Result<Option<Duration>, ()> {
    let n: i64 = text.trim().parse().map_err(|_| ())?;
    Ok(match n {
        ..=0 => None,
        1 => Some(Duration::from_secs(2)),
        n => Some(Duration::from_secs(n as u64)),
    })
}

/// libpq's port parsing: an integer from 1 to 65535; empty means the default.
fn parse_port(text: &str, default: u16) -> Option<u16> {
    if text.is_empty() {
        return Some(default);
    }
    text.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

/// Tries each target and each of its addresses, like libpq: the first one that answers at all
/// decides; refused or silent ones are skipped.
async fn probe_plan(plan: &Plan, default: SocketAddr) -> (PingStatus, Option<Endpoint>) {
    let targets = match &plan.targets {
        Ok(targets) => targets,
        Err(_) => return (PingStatus::NoAttempt, None),
    };
    let Ok(timeout) = plan.timeout else {
        return (PingStatus::NoResponse, None);
    };
    for target in targets {
        for endpoint in endpoints(target, default).await {
            let status = probe::ping_endpoint(
                &endpoint,
                &plan.user,
                &plan.database,
                plan.encryption,
                timeout,
            )
            .await;
            if status != PingStatus::NoResponse {
                return (status, Some(endpoint));
            }
        }
    }
    (PingStatus::NoResponse, None)
}

async fn endpoints(target: &Target, default: SocketAddr) -> Vec<Endpoint> {
    let Some(port) = parse_port(&target.port, default.port()) else {
        return Vec::new();
    };
    if !target.hostaddr.is_empty() {
        return match target.hostaddr.parse::<IpAddr>() {
            Ok(ip) => vec![Endpoint::Tcp(SocketAddr::new(ip, port))],
            Err(_) => Vec::new(),
        };
    }
    let host = target.host.as_str();
    if host.is_empty() {
        return vec![Endpoint::Tcp(SocketAddr::new(default.ip(), port))];
    }
    if host.starts_with('/') {
        return vec![Endpoint::unix(std::path::Path::new(host), port)];
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.map(Endpoint::Tcp).collect(),
        Err(_) => Vec::new(),
    }
}

/// Logs in through `endpoint` and runs `SELECT 1`: (exit code, words after ` - `, help).
async fn query(plan: &Plan, endpoint: &Endpoint) -> (i32, String, Option<String>) {
    use tokio_postgres::error::SqlState;
    let mut config = tokio_postgres::Config::new();
    match endpoint {
        Endpoint::Tcp(addr) => config.host(addr.ip().to_string()).port(addr.port()),
        Endpoint::Unix(path) => {
            let dir = path.parent().unwrap_or(std::path::Path::new("/"));
            let port = path
                .extension()
                .and_then(|e| e.to_str())
                .and_then(|e| e.parse().ok())
                .unwrap_or(5432);
            config.host_path(dir).port(port)
        }
    };
    config
        .user(&plan.user)
        .dbname(&plan.database)
        .password(&plan.password)
        .application_name("pgwarden check");
    if let Ok(Some(limit)) = plan.timeout {
        config.connect_timeout(limit);
    }
    let outcome = async {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let row = client.query_one("SELECT 1", &[]).await;
        drop(client);
        let _ = driver.await;
        row.map(|row| row.get::<_, i32>(0))
    }
    .await;
    let who = format!(
        "as user \"{}\" on database \"{}\"",
        plan.user, plan.database
    );
    match outcome {
        Ok(1) => (0, format!("accepting connections, SELECT 1 ok {who}"), None),
        Ok(n) => (EXIT_QUERY, format!("SELECT 1 returned {n}"), None),
        Err(e) => match e.code() {
            Some(code) if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => (
                EXIT_AUTH,
                format!("accepting connections, but the login was refused: wrong password for user \"{}\"", plan.user),
                Some("the password comes from POSTGRES_PASSWORD or the config file's `password` (or the -d URI); at each start pgwarden sets the role's password to the configured one, so check that this command sees the same configuration as the server (its --name, --data-dir, project file or environment)".into()),
            ),
            Some(code) if *code == SqlState::INVALID_CATALOG_NAME => (
                EXIT_NO_DATABASE,
                format!("accepting connections, but database \"{}\" does not exist", plan.database),
                Some("create it (`pgwarden psql -c 'CREATE DATABASE …'`) or pass an existing one with -d".into()),
            ),
            Some(code) if *code == SqlState::CANNOT_CONNECT_NOW => (
                PingStatus::Rejecting.exit_code(),
                PingStatus::Rejecting.describe().to_string(),
                None,
            ),
            Some(_) => (
                EXIT_QUERY,
                format!("accepting connections, but the query failed {who}: {}", e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string())),
                None,
            ),
            None => (
                PingStatus::NoResponse.exit_code(),
                format!("{} ({e})", PingStatus::NoResponse.describe()),
                None,
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_libpq() {
        assert_eq!(parse_timeout("3"), Ok(Some(Duration::from_secs(3))));
        assert_eq!(parse_timeout("1"), Ok(Some(Duration::from_secs(2))));
        assert_eq!(parse_timeout("0"), Ok(None));
        assert_eq!(parse_timeout("-4"), Ok(None));
        assert_eq!(parse_timeout("abc"), Err(()));
    }

    #[test]
    fn ports_follow_libpq() {
        assert_eq!(parse_port("", 5433), Some(5433));
        assert_eq!(parse_port("5544", 5433), Some(5544));
        for bad in ["0", "70000", "abc", "-5"] {
            assert_eq!(parse_port(bad, 5433), None, "{bad}");
        }
    }
}
