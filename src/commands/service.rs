//! `pgwarden service install`: writes the systemd unit (from `packaging/systemd/`) with this
//! binary's path in `ExecStart`, then says which commands start it. It changes nothing else:
//! no `systemctl` is run, no user is created.

use crate::error::{Error, IoContext, Result};
use crate::os::paths;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write a systemd unit that runs `pgwarden run` with this binary, and say what to run next.
    ///
    /// As root (or with --system): /etc/systemd/system/pgwarden.service, running as the system
    /// user `pgwarden` with /etc/pgwarden/config.toml and data in /var/lib/pgwarden.
    /// With --user: ~/.config/systemd/user/pgwarden.service for `systemctl --user`.
    #[command(
        after_help = "Examples:\n  sudo pgwarden service install            # system service\n  pgwarden service install --user          # user service on a developer machine\n  pgwarden service install --user --config ~/pg/config.toml"
    )]
    Install(ServiceInstallArgs),
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServiceInstallArgs {
    /// A user unit (`systemctl --user`) instead of a system unit.
    #[arg(long, conflicts_with = "system")]
    pub user: bool,

    /// A system unit even when not root (the default for root).
    #[arg(long)]
    pub system: bool,

    /// The config file the service uses. Default: /etc/pgwarden/config.toml (system);
    /// none (the user default, ~/.config/pgwarden/config.toml) for --user.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Write the unit into this directory instead of systemd's.
    #[arg(long, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
}

/// The units, as shipped in `packaging/systemd/`.
pub const SYSTEM_UNIT: &str = include_str!("../../packaging/systemd/pgwarden.service");
pub const USER_UNIT: &str = include_str!("../../packaging/systemd/pgwarden-user.service");

/// The system layout's config file, which the system unit passes with --config.
const SYSTEM_CONFIG: &str = "/etc/pgwarden/config.toml";

/// The user the system unit runs as (`User=` in `packaging/systemd/pgwarden.service`).
const SERVICE_USER: &str = "pgwarden";

/// Refuses a binary that `user` could not execute (a directory on the way it cannot enter, or
/// no execute bit for it): the unit would fail at every start with a bare "Permission denied".
/// A user that does not exist yet gets the permissions of "others".
fn check_service_user_can_run(exe: &Path, user: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let account = nix::unistd::User::from_name(user).ok().flatten();
    let (uid, gid) = account
        .as_ref()
        .map_or((u32::MAX, u32::MAX), |u| (u.uid.as_raw(), u.gid.as_raw()));
    let allowed = |meta: &std::fs::Metadata, bit: u32| {
        let mode = meta.mode();
        if uid == 0 {
            true
        } else if meta.uid() == uid {
            mode & (bit << 6) != 0
        } else if meta.gid() == gid {
            mode & (bit << 3) != 0
        } else {
            mode & bit != 0
        }
    };
    let blocked = exe
        .ancestors()
        .skip(1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|dir| std::fs::metadata(dir).is_ok_and(|meta| !allowed(&meta, 0o1)));
    let not_executable = std::fs::metadata(exe).is_ok_and(|meta| !allowed(&meta, 0o1));
    let why = match (blocked, not_executable) {
        (Some(dir), _) => format!("it cannot enter {}", dir.display()),
        (None, true) => "the file has no execute permission for it".to_string(),
        (None, false) => return Ok(()),
    };
    Err(Error::Privilege {
        what: format!(
            "the system service runs as user {user}, which cannot execute {} ({why})
             help: install the binary where every user can run it, then run that copy:              `install -m 0755 {} /usr/local/bin/pgwarden && /usr/local/bin/pgwarden service install`",
            exe.display(),
            exe.display()
        ),
    })
}

/// `unit` with its `ExecStart=` line replaced by `exec_start`.
pub fn render(unit: &str, exec_start: &str) -> String {
    unit.lines()
        .map(|line| {
            if line.starts_with("ExecStart=") {
                format!("ExecStart={exec_start}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Quotes an ExecStart word if it needs it (systemd splits on whitespace, honours "…").
fn word(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains(char::is_whitespace) || text.contains('"') {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        text
    }
}

pub fn install(args: &ServiceInstallArgs) -> Result<()> {
    let root = nix::unistd::geteuid().is_root();
    let user = args.user || (!root && !args.system);
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| Error::Server {
            what: format!("cannot find the path of this pgwarden binary: {e}"),
        })?;
    let config = args.config.as_deref().map(paths::absolute);
    let mut exec_start = format!("{} run", word(&exe));
    let (unit, default_dir) = if user {
        if let Some(config) = &config {
            exec_start.push_str(&format!(" --config {}", word(config)));
        }
        let dir = directories::BaseDirs::new()
            .map(|d| d.config_dir().join("systemd/user"))
            .ok_or_else(|| Error::Server {
                what: "cannot find your home directory for a user unit\n\
                       help: set HOME, or pass --unit-dir"
                    .into(),
            });
        (USER_UNIT, dir)
    } else {
        check_service_user_can_run(&exe, SERVICE_USER)?;
        let config = config.unwrap_or_else(|| PathBuf::from(SYSTEM_CONFIG));
        exec_start.push_str(&format!(" --config {}", word(&config)));
        (SYSTEM_UNIT, Ok(PathBuf::from("/etc/systemd/system")))
    };
    let dir = match &args.unit_dir {
        Some(dir) => paths::absolute(dir),
        None => default_dir?,
    };
    std::fs::create_dir_all(&dir).io("cannot create directory", &dir)?;
    let path = dir.join("pgwarden.service");
    let staged = dir.join(".pgwarden.service.tmp");
    std::fs::write(&staged, render(unit, &exec_start)).io("cannot write", &staged)?;
    std::fs::rename(&staged, &path).io("cannot write", &path)?;

    println!("wrote {}", path.display());
    println!("  ExecStart={exec_start}");
    let config_path = args.config.as_deref().map(paths::absolute);
    let timer = write_backup_timer(&dir, &exec_start, config_path.as_deref(), !user)?;
    if user {
        println!("next:");
        println!("  systemctl --user daemon-reload");
        println!("  systemctl --user enable --now pgwarden");
        println!(
            "  loginctl enable-linger    # keep it running after logout (and its shared memory)"
        );
        println!("  journalctl --user -u pgwarden -f");
        if timer {
            println!("  systemctl --user enable --now pgwarden-backup.timer");
        }
    } else {
        println!("next:");
        if nix::unistd::User::from_name("pgwarden")
            .ok()
            .flatten()
            .is_none()
        {
            println!(
                "  useradd --system --user-group --home-dir /var/lib/pgwarden --shell /usr/sbin/nologin pgwarden"
            );
        }
        if !Path::new(SYSTEM_CONFIG).exists() && args.config.is_none() {
            println!(
                "  mkdir -p /etc/pgwarden && cp config.example.toml {SYSTEM_CONFIG}    # every key optional"
            );
        }
        println!("  systemctl daemon-reload");
        println!("  systemctl enable --now pgwarden");
        println!("  journalctl -u pgwarden -f");
        if timer {
            println!("  systemctl enable --now pgwarden-backup.timer");
        }
    }
    Ok(())
}

/// With `backup_schedule` in the config: `pgwarden-backup.service` + `.timer` beside the
/// service (see [`crate::backup::schedule`] for why a timer). Returns whether it wrote them.
fn write_backup_timer(
    dir: &Path,
    run_exec_start: &str,
    config: Option<&Path>,
    system: bool,
) -> Result<bool> {
    let sources = crate::config::Sources {
        remembered: Default::default(),
        config_file: config
            .map(Path::to_path_buf)
            .or_else(|| system.then(|| PathBuf::from(SYSTEM_CONFIG))),
        flags: crate::config::Layer::default(),
        system,
        project: Default::default(),
    };
    let Some(schedule) = crate::config::Config::load(&sources)
        .ok()
        .and_then(|c| c.backup.schedule)
        .and_then(|s| crate::backup::schedule::Schedule::parse(&s).ok())
    else {
        return Ok(false);
    };
    let exec_start = run_exec_start.replacen(" run", " backup --scheduled", 1);
    let (service, timer) = crate::backup::schedule::units(&exec_start, schedule);
    for (name, text) in [
        ("pgwarden-backup.service", service),
        ("pgwarden-backup.timer", timer),
    ] {
        let path = dir.join(name);
        let staged = dir.join(format!(".{name}.tmp"));
        std::fs::write(&staged, text).io("cannot write", &staged)?;
        std::fs::rename(&staged, &path).io("cannot write", &path)?;
        println!("wrote {}", path.display());
    }
    println!("  OnCalendar={} (backup_schedule)", schedule.on_calendar());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_is_replaced_and_nothing_else() {
        let out = render(
            SYSTEM_UNIT,
            "/opt/pgwarden/bin/pgwarden run --config /x.toml",
        );
        assert!(out.contains("\nExecStart=/opt/pgwarden/bin/pgwarden run --config /x.toml\n"));
        assert_eq!(out.matches("ExecStart=").count(), 1);
        assert_eq!(out.lines().count(), SYSTEM_UNIT.lines().count());
        assert!(out.contains("Type=notify"));
    }

    #[test]
    fn paths_with_spaces_are_quoted() {
        assert_eq!(word(Path::new("/a b/pgwarden")), "\"/a b/pgwarden\"");
        assert_eq!(word(Path::new("/usr/bin/pgwarden")), "/usr/bin/pgwarden");
    }
}
