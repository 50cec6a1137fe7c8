//! `pgwarden ls` (`ps`): every instance of this user (root: every user's), from the registry.
//!
//! One line each: name, state, port, data directory, uptime, project file. An instance's
//! state is its lock's (running or not) and its status file's; stopped instances stay listed
//! until their state directory is gone (`pgwarden reset`).

use crate::commands::common::human_duration;
use crate::error::Result;
use crate::instance::lock;
use crate::instance::registry::{self, Entry};
use crate::instance::remembered;
use crate::instance::status;
use clap::Args;
use serde_json::json;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Lists the pgwarden instances of this user (as root: of every user): NAME (`-` for \
an unnamed one with a data directory of its own), STATE (ready, starting, …, stopped), PORT, DATA DIR, \
UPTIME and PROJECT (the pgwarden.toml it belongs to).",
    after_help = "Examples:\n  pgwarden ls\n  pgwarden ls --json | jq -r '.[] | select(.running) | .url'"
)]
pub struct LsArgs {
    /// One JSON array of objects.
    #[arg(long)]
    pub json: bool,
}

/// What `ls` shows of one instance.
#[derive(Debug)]
struct Row {
    name: String,
    running: bool,
    state: String,
    port: Option<u16>,
    data_dir: String,
    uptime_ms: Option<u64>,
    project: Option<String>,
    url: Option<String>,
    pid: Option<u32>,
    /// The disk use of its spare clusters.
    spares: crate::cluster::spare::SpareUse,
}

pub fn run(args: LsArgs) -> Result<i32> {
    let rows: Vec<Row> = all_entries().iter().map(row).collect();
    if args.json {
        let value: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "running": r.running, "state": r.state, "port": r.port,
                    "data_dir": r.data_dir, "uptime_ms": r.uptime_ms, "project_file": r.project,
                    "url": r.url, "supervisor_pid": r.pid, "spares": r.spares,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(value));
        return Ok(0);
    }
    if rows.is_empty() {
        eprintln!(
            "no instances (start one with `pgwarden start`, or `pgwarden init` for a project)"
        );
        return Ok(0);
    }
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.state.clone(),
                r.port.map_or("-".into(), |p| p.to_string()),
                r.data_dir.clone(),
                r.uptime_ms.map_or("-".into(), human_duration),
                r.project.clone().unwrap_or_else(|| "-".into()),
                if r.spares.count == 0 {
                    "-".into()
                } else {
                    crate::backup::human_bytes(r.spares.bytes)
                },
            ]
        })
        .collect();
    let header = [
        "NAME", "STATE", "PORT", "DATA DIR", "UPTIME", "PROJECT", "SPARES",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for line in &table {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for line in std::iter::once(&header).chain(&table) {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(0)
}

/// This user's entries; as root, also those of the other users' registries.
fn all_entries() -> Vec<Entry> {
    let mut entries = registry::entries();
    if nix::unistd::geteuid().is_root()
        && std::env::var_os(crate::os::paths::RUNTIME_DIR_ENV).is_none()
    {
        let mut others: Vec<std::path::PathBuf> = Vec::new();
        for (base, prefix) in [("/run/user", ""), ("/tmp", "pgwarden-")] {
            for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if prefix.is_empty() {
                    others.push(entry.path().join("pgwarden"));
                } else if name.starts_with(prefix) && entry.path().join(".").is_dir() {
                    others.push(entry.path());
                }
            }
        }
        for dir in others {
            entries.extend(registry::entries_in(&dir));
        }
    }
    entries
}

fn row(entry: &Entry) -> Row {
    let settings = remembered::read(&entry.state_dir);
    let pid = lock::holder(&entry.state_dir);
    let status =
        pid.and_then(|pid| status::read(&entry.state_dir).filter(|s| s.supervisor_pid == pid));
    let now = status::now_ms();
    let data_dir = registry::data_dir_of(&entry.state_dir);
    Row {
        name: if registry::is_name(&entry.key) {
            entry.key.clone()
        } else {
            "-".into()
        },
        running: pid.is_some(),
        state: match (&pid, &status) {
            (None, _) => "stopped".into(),
            (Some(_), None) => "preparing".into(),
            (Some(_), Some(s)) => s.state.name().to_string(),
        },
        port: status
            .as_ref()
            .map(|s| s.port)
            .or(settings.as_ref().map(|r| r.port)),
        spares: crate::backup::snapshot_spare::disk_use(&data_dir),
        data_dir: data_dir.display().to_string(),
        uptime_ms: status.as_ref().map(|s| now.saturating_sub(s.started_at_ms)),
        project: settings
            .as_ref()
            .and_then(|r| r.project_file.as_ref())
            .map(|p| p.display().to_string()),
        url: status.as_ref().map(|s| {
            crate::pg::connection::database_url(
                &s.user,
                None,
                std::net::SocketAddr::new(s.listen_address, s.port),
                &s.database,
            )
        }),
        pid,
    }
}
