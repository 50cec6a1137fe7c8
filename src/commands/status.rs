//! `pgwarden status [--json]`: the running supervisor's own account, from its status file.

use crate::commands::InstanceArgs;
use crate::commands::common::{Instance, human_duration};
use crate::error::Result;
use crate::instance::status::{Status, now_ms};
use clap::Args;
use serde_json::json;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Shows what the running pgwarden reports about its server: state (starting, ready, \
restarting, stopping), supervisor and postmaster pids, uptime, restarts and failed starts, the last exit \
(its code or signal, and whether the signal came from outside or from the kernel's OOM killer), why it gave \
up if it did, PostgreSQL \
version, data directory and address. Exits 0 while a supervisor runs, 3 when none does (`running: \
false` in JSON).",
    after_help = "Examples:\n  pgwarden status\n  pgwarden status --json | jq -r .state"
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One step per case: no supervisor (exit 3), a supervisor still preparing (no status file
/// yet), a supervisor's status as JSON or as text.
pub fn run(args: StatusArgs, instance: Instance) -> Result<i32> {
    let Some(pid) = instance.supervisor else {
        return not_running(&instance, args.json);
    };
    let Some(status) = &instance.status else {
        preparing(&instance, pid, args.json);
        return Ok(0);
    };
    let now = now_ms();
    let times = Times {
        now,
        uptime_ms: now.saturating_sub(status.started_at_ms),
        ready_for_ms: status.ready_at_ms.map(|t| now.saturating_sub(t)),
    };
    let url = instance.url(false)?;
    if args.json {
        print_json(&instance, status, &times, &url);
    } else {
        print_text(&instance, status, &times, &url);
    }
    Ok(0)
}

/// The times `status` shows, taken once.
struct Times {
    now: u64,
    uptime_ms: u64,
    ready_for_ms: Option<u64>,
}

/// No supervisor: `running: false` and exit 3 in JSON, the not-running error otherwise.
fn not_running(instance: &Instance, json: bool) -> Result<i32> {
    if json {
        let data_dir = instance.config.data_dir.display().to_string();
        println!(
            "{}",
            json!({ "running": false, "state": "not running", "data_dir": data_dir })
        );
        return Ok(3);
    }
    Err(instance.not_running())
}

/// The lock is taken before binaries are installed and the cluster is created; the status
/// file follows once the server is first started.
fn preparing(instance: &Instance, pid: u32, json: bool) {
    let data_dir = instance.config.data_dir.display().to_string();
    if json {
        println!(
            "{}",
            json!({ "running": true, "state": "preparing", "supervisor_pid": pid, "data_dir": data_dir })
        );
    } else {
        println!("pgwarden: preparing (installing binaries or initialising the cluster)");
        println!("  supervisor pid  {pid}");
        println!("  data dir        {data_dir}");
    }
}

/// The status record with `running`, the times, the URL, the last backup, the last
/// verification, the spares' disk use and an upgrade awaiting `--finish` or `--rollback`, as
/// one object.
fn print_json(instance: &Instance, status: &Status, times: &Times, url: &str) {
    let mut value = serde_json::to_value(status).expect("status serialises");
    let object = value.as_object_mut().expect("an object");
    object.insert("running".into(), json!(true));
    object.insert("uptime_ms".into(), json!(times.uptime_ms));
    object.insert("ready_for_ms".into(), json!(times.ready_for_ms));
    object.insert("url".into(), json!(url));
    object.insert(
        "last_backup".into(),
        json!(crate::backup::record::read(&instance.state_dir)),
    );
    object.insert(
        "last_verify".into(),
        json!(crate::backup::verify::record::read(&instance.state_dir)),
    );
    object.insert(
        "spares".into(),
        json!(crate::backup::snapshot_spare::disk_use(&status.data_dir)),
    );
    object.insert(
        "ephemeral_pool".into(),
        json!(crate::cluster::spare::pool::disk_use()),
    );
    object.insert(
        "upgrade".into(),
        json!(
            crate::upgrade::state::read(&instance.state_dir)
                .ok()
                .flatten()
        ),
    );
    println!("{value}");
}

/// One line per fact, aligned.
fn print_text(instance: &Instance, status: &Status, times: &Times, url: &str) {
    let now = times.now;
    println!("pgwarden: {} ({})", status.state, status.cause);
    println!("  supervisor pid  {}", status.supervisor_pid);
    println!(
        "  postmaster pid  {}",
        status
            .postmaster_pid
            .map_or_else(|| "-".to_string(), |p| p.to_string())
    );
    println!(
        "  uptime          {}{}",
        human_duration(times.uptime_ms),
        times.ready_for_ms.map_or_else(String::new, |r| format!(
            " (server ready for {})",
            human_duration(r)
        ))
    );
    println!(
        "  started         {} ago",
        human_duration(now.saturating_sub(status.started_at_ms))
    );
    println!(
        "  restarts        {} (failed starts {})",
        status.restarts, status.failed_starts
    );
    println!(
        "  last exit       {}",
        status.last_exit.as_ref().map_or_else(
            || "-".to_string(),
            |e| format!(
                "{} ({} ago)",
                e.text,
                human_duration(now.saturating_sub(e.at_ms))
            )
        )
    );
    if let Some(why) = &status.gave_up {
        println!("  gave up         {why}");
    }
    println!("  PostgreSQL      {}", status.postgresql_version);
    println!("  data dir        {}", status.data_dir.display());
    println!(
        "  address         {} (socket dir {})",
        instance.address(),
        status.socket_dir.display()
    );
    println!("  url             {url}");
    println!(
        "  last backup     {}",
        crate::backup::record::describe(
            crate::backup::record::read(&instance.state_dir).as_ref(),
            now
        )
    );
    println!(
        "  last verify     {}",
        crate::backup::verify::record::describe(
            crate::backup::verify::record::read(&instance.state_dir).as_ref(),
            now
        )
    );
    println!(
        "  spares          {}",
        crate::backup::snapshot_spare::disk_use(&status.data_dir).describe()
    );
    println!(
        "  ephemeral pool  {} ({})",
        crate::cluster::spare::pool::disk_use().describe(),
        crate::cluster::spare::pool::dir().display()
    );
    if let Some(record) = crate::upgrade::state::read(&instance.state_dir)
        .ok()
        .flatten()
    {
        println!("  upgrade         {}", record.describe());
    }
}
