//! Init scripts: the image's `/docker-entrypoint-initdb.d`, run once on first launch.
//!
//! The files of `init_dir` ending in `.sql`, `.sql.gz`, `.sql.xz` or `.sh` run in byte order of
//! their names (the image's glob sorts in the C locale inside the container), against the
//! temporary server of the cluster being created, as `user` on `database`. The first failure
//! stops them and fails the first launch as a whole: the staging directory is discarded, so
//! the next launch starts over with a fresh cluster and runs every script again.
//!
//! - SQL runs through pgwarden's own client, statement by statement, as psql would send it
//!   (see [`crate::pg::sql_script`]), so a failure names the line: the statement's first line, moved
//!   by the server's error position when it reports one, or the data line of a failing `COPY`.
//! - `.sh` files run as the server's user: executable ones directly, others with `bash` (the
//!   image sources them; its shell functions such as `docker_process_sql` do not exist here).
//!   They get `PGHOST` (the socket directory), `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`,
//!   `POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_DB` and `PGDATA`, so `psql` (when the
//!   machine has one) needs no arguments.
//! - Other files are skipped with a log line, as in the image.

use crate::binaries::Install;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
use crate::pg::sql_script::{Item, Splitter, line_of_position};
use crate::postmaster::temp_server::TempServer;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tracing::{info, warn};

/// COPY data is sent in chunks of about this size (each chunk is its own `COPY` statement).
const COPY_CHUNK: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sql,
    SqlGz,
    SqlXz,
    Shell,
}

impl Kind {
    fn of(name: &str) -> Option<Kind> {
        [
            (".sql", Kind::Sql),
            (".sql.gz", Kind::SqlGz),
            (".sql.xz", Kind::SqlXz),
            (".sh", Kind::Shell),
        ]
        .into_iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map(|(_, kind)| kind)
    }
}

/// The scripts of `dir`, in the order they run.
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, Kind)>> {
    let entries = std::fs::read_dir(dir).io("cannot read init_dir", dir)?;
    let mut scripts = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            continue;
        }
        match Kind::of(&name) {
            Some(kind) => scripts.push((path, kind)),
            None => {
                info!(file = %path.display(), "init_dir: ignoring (not .sql, .sql.gz, .sql.xz or .sh)")
            }
        }
    }
    scripts.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()));
    Ok(scripts)
}

/// Runs every script against `server`; the first failure is the error.
pub fn run_all(
    scripts: &[(PathBuf, Kind)],
    server: &TempServer,
    config: &Config,
    install: &Install,
    run_as: &RunAs,
) -> Result<()> {
    for (path, kind) in scripts {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let started = Instant::now();
        info!(script = %name, "running init script");
        let outcome = match kind {
            Kind::Shell => run_shell(path, server, config, install, run_as),
            _ => run_sql_file(path, *kind, server, config),
        };
        if let Err(failure) = outcome {
            return Err(Error::Cluster {
                what: format!(
                    "init script {} failed{}: {}\n\
                     help: fix the script and start pgwarden again; the new cluster was discarded, \
                     so every script runs again",
                    path.display(),
                    failure
                        .line
                        .map(|l| format!(" at line {l}"))
                        .unwrap_or_default(),
                    failure.message
                ),
            });
        }
        info!(script = %name, elapsed_ms = started.elapsed().as_millis() as u64, "init script done");
    }
    Ok(())
}

/// Why a script failed, and where.
#[derive(Debug)]
pub struct Failure {
    pub line: Option<usize>,
    pub message: String,
}

impl Failure {
    fn at(line: usize, message: impl Into<String>) -> Failure {
        Failure {
            line: Some(line),
            message: message.into(),
        }
    }
}

fn open(path: &Path, kind: Kind) -> std::io::Result<Box<dyn BufRead>> {
    let file = std::fs::File::open(path)?;
    let reader: Box<dyn Read> = match kind {
        Kind::SqlGz => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Kind::SqlXz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(file)),
        _ => Box::new(file),
    };
    Ok(Box::new(BufReader::with_capacity(1 << 16, reader)))
}

fn run_sql_file(
    path: &Path,
    kind: Kind,
    server: &TempServer,
    config: &Config,
) -> std::result::Result<(), Failure> {
    let reader = open(path, kind).map_err(|e| Failure {
        line: None,
        message: format!("cannot open it: {e}"),
    })?;
    let connect = |database: &str| {
        server
            .connect(&config.user, config.password.expose(), database)
            .map_err(|e| format!("cannot connect to database {database:?}: {}", describe(&e)))
    };
    let client = connect(&config.database).map_err(|message| Failure {
        line: None,
        message,
    })?;
    run_sql(reader, client, &connect)
}

/// Runs a SQL script read from `reader` on `client`; `connect` serves `\connect DB`.
pub fn run_sql(
    reader: Box<dyn BufRead>,
    mut client: postgres::Client,
    connect: &dyn Fn(&str) -> std::result::Result<postgres::Client, String>,
) -> std::result::Result<(), Failure> {
    let mut splitter = Splitter::new();
    let mut copy = Copy::default();
    let mut items = Vec::new();
    let mut lines = reader.lines();
    let mut number = 0;
    loop {
        let end = match lines.next() {
            Some(Ok(line)) => {
                number += 1;
                splitter.feed(&line, number, &mut items);
                false
            }
            Some(Err(e)) => return Err(Failure::at(number + 1, format!("cannot read it: {e}"))),
            None => {
                splitter.finish(&mut items);
                true
            }
        };
        for item in items.drain(..) {
            match item {
                Item::Statement { text, line } => {
                    client.batch_execute(&text).map_err(|e| {
                        let at = position(&e)
                            .map(|p| line_of_position(&text, line, p))
                            .unwrap_or(line);
                        Failure::at(at, describe(&e))
                    })?;
                }
                Item::CopyStart { text, line } => copy = Copy::new(text, line),
                Item::CopyData { data, line } => {
                    copy.push(&data, line);
                    if copy.data.len() >= COPY_CHUNK {
                        copy.flush(&mut client)?;
                    }
                }
                Item::CopyEnd => {
                    copy.flush(&mut client)?;
                    copy = Copy::default();
                }
                Item::Meta { name, args, line } => match name.as_str() {
                    "c" | "connect" => {
                        let database = connect_target(&args).ok_or_else(|| {
                            Failure::at(line, format!("\\{name} {args}: expected a database name"))
                        })?;
                        client = connect(&database).map_err(|m| Failure::at(line, m))?;
                    }
                    "set" | "unset" | "pset" | "encoding" | "restrict" | "unrestrict"
                    | "timing" | "." => {
                        tracing::debug!(line, "init script: ignoring psql meta-command \\{name}");
                    }
                    "echo" | "qecho" => info!("{args}"),
                    _ => {
                        return Err(Failure::at(
                            line,
                            format!(
                                "psql meta-command \\{name} is not supported in .sql init scripts \
                                 (pgwarden runs them without psql)\n\
                                 help: move it to a .sh script that runs psql"
                            ),
                        ));
                    }
                },
            }
        }
        if end {
            return Ok(());
        }
    }
}

/// Data of the current `COPY … FROM stdin`, sent in chunks.
#[derive(Default)]
struct Copy {
    statement: String,
    statement_line: usize,
    data: Vec<u8>,
    /// The script line of the chunk's first data line.
    first_line: Option<usize>,
    /// Whether a chunk went out already.
    sent: bool,
}

impl Copy {
    fn new(statement: String, line: usize) -> Copy {
        Copy {
            statement,
            statement_line: line,
            ..Copy::default()
        }
    }

    fn push(&mut self, data: &str, line: usize) {
        self.first_line.get_or_insert(line);
        self.data.extend_from_slice(data.as_bytes());
        self.data.push(b'\n');
    }

    /// Sends the data gathered so far (or, for a COPY without data, the bare statement).
    fn flush(&mut self, client: &mut postgres::Client) -> std::result::Result<(), Failure> {
        let first_line = match self.first_line.take() {
            Some(line) => line,
            None if self.sent || self.statement.is_empty() => return Ok(()),
            None => self.statement_line,
        };
        let data = std::mem::take(&mut self.data);
        self.sent = true;
        self.send(client, first_line, &data)
    }

    fn send(
        &self,
        client: &mut postgres::Client,
        first_line: usize,
        data: &[u8],
    ) -> std::result::Result<(), Failure> {
        use std::io::Write;
        let fail = |e: &postgres::Error| {
            // The server says "COPY t, line 3, column b: …" for a bad data line.
            let line = e
                .as_db_error()
                .and_then(|db| db.where_())
                .and_then(copy_line)
                .map(|n| first_line + n - 1)
                .unwrap_or(self.statement_line);
            Failure::at(line, describe(e))
        };
        let mut writer = client.copy_in(self.statement.as_str()).map_err(|e| {
            let at = position(&e)
                .map(|p| line_of_position(&self.statement, self.statement_line, p))
                .unwrap_or(self.statement_line);
            Failure::at(at, describe(&e))
        })?;
        if let Err(e) = writer.write_all(data) {
            return Err(Failure::at(first_line, format!("COPY data: {e}")));
        }
        writer.finish().map_err(|e| fail(&e))?;
        Ok(())
    }
}

/// `COPY t, line 3, column b: "x"` → 3.
fn copy_line(context: &str) -> Option<usize> {
    let rest = &context[context.find(", line ")? + ", line ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The database of `\connect DB`, `\c "DB"` or `\connect -reuse-previous=on "dbname='DB'"`.
fn connect_target(args: &str) -> Option<String> {
    // psql's words: whitespace-separated, double quotes group (and are removed).
    let mut words = Vec::new();
    let (mut word, mut quoted) = (String::new(), false);
    for c in args.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let token = words.into_iter().find(|t| !t.starts_with('-'))?;
    let name = match token.find("dbname=") {
        Some(i) => token[i + "dbname=".len()..]
            .trim_start_matches('\'')
            .split('\'')
            .next()
            .unwrap_or_default()
            .to_string(),
        None => token,
    };
    (!name.is_empty()).then_some(name)
}

/// The server's error position in the statement (1-based characters), if it gave one.
fn position(error: &postgres::Error) -> Option<usize> {
    match error.as_db_error()?.position()? {
        postgres::error::ErrorPosition::Original(p) => Some(*p as usize),
        postgres::error::ErrorPosition::Internal { .. } => None,
    }
}

/// `ERROR: relation "x" does not exist (SQLSTATE 42P01)`, with DETAIL and HINT, like psql.
pub fn describe(error: &postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        return text;
    };
    let mut text = format!(
        "{}: {} (SQLSTATE {})",
        db.severity(),
        db.message(),
        db.code().code()
    );
    if let Some(detail) = db.detail() {
        text.push_str(&format!("\nDETAIL: {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("\nHINT: {hint}"));
    }
    if let Some(context) = db.where_() {
        text.push_str(&format!("\nCONTEXT: {context}"));
    }
    text
}

fn run_shell(
    path: &Path,
    server: &TempServer,
    config: &Config,
    install: &Install,
    run_as: &RunAs,
) -> std::result::Result<(), Failure> {
    let executable = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    let mut command = if executable {
        Command::new(path)
    } else {
        let mut c = Command::new(if Path::new("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        });
        c.arg(path);
        c
    };
    let bin = install.bin("postgres");
    let bin_dir = bin.parent().unwrap_or(Path::new("/usr/bin"));
    command
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display()),
        )
        .env("PGHOST", &server.socket_dir)
        .env("PGPORT", server.port.to_string())
        .env("PGUSER", &config.user)
        .env("PGPASSWORD", config.password.expose())
        .env("PGDATABASE", &config.database)
        .env("POSTGRES_USER", &config.user)
        .env("POSTGRES_PASSWORD", config.password.expose())
        .env("POSTGRES_DB", &config.database)
        .env("PGDATA", &server.data_dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_as.apply_std(&mut command);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let output = command.output().map_err(|e| Failure {
        line: None,
        message: format!("cannot run it: {e}"),
    })?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        info!(script = %name, "{line}");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr.lines() {
        warn!(script = %name, "{line}");
    }
    if output.status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = stderr.lines().collect();
    let tail = tail[tail.len().saturating_sub(8)..].join("\n");
    Err(Failure {
        // bash names the line itself ("x.sh: line 3: …").
        line: None,
        message: format!(
            "{}{}",
            output.status,
            if tail.is_empty() {
                String::new()
            } else {
                format!("\n{tail}")
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.sql",
            "a.sh",
            "c.sql.gz",
            "d.sql.xz",
            "README.md",
            "e.sql.zst",
            "10.sql",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let names: Vec<(String, Kind)> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(p, k)| (p.file_name().unwrap().to_string_lossy().into_owned(), k))
            .collect();
        assert_eq!(
            names,
            vec![
                ("10.sql".into(), Kind::Sql),
                ("a.sh".into(), Kind::Shell),
                ("b.sql".into(), Kind::Sql),
                ("c.sql.gz".into(), Kind::SqlGz),
                ("d.sql.xz".into(), Kind::SqlXz),
            ]
        );
    }

    #[test]
    fn connect_targets() {
        assert_eq!(connect_target("app").as_deref(), Some("app"));
        assert_eq!(connect_target("\"my db\"").as_deref(), Some("my db"));
        assert_eq!(
            connect_target("-reuse-previous=on \"dbname='app'\"").as_deref(),
            Some("app")
        );
        assert_eq!(connect_target(""), None);
    }

    #[test]
    fn copy_context_line() {
        assert_eq!(copy_line("COPY t, line 3, column b: \"x\""), Some(3));
        assert_eq!(copy_line("COPY t, line 12"), Some(12));
        assert_eq!(copy_line("SQL function"), None);
    }
}
