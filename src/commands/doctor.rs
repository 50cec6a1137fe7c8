//! `pgwarden doctor`: a preflight that says why the server would not start, before it fails.
//!
//! One line per check, `ok`, `warn` (works, but worth knowing) or `FAIL` (the server would not
//! start), with the fix after a `help:` on a FAIL. Exits 1 when any check fails. Nothing is
//! changed: no install, no initdb, no directory created.

use crate::binaries::{self, Install};
use crate::cluster::{self, DataDir};
use crate::commands::common::Instance;
use crate::commands::{BinaryFlags, InstanceArgs};
use crate::config::project::Chosen;
use crate::config::{Config, ProjectInUse, trust};
use crate::error::{Error, Result};
use crate::instance::preflight;
use crate::instance::resolve::Resolved;
use crate::os::privilege::RunAs;
use clap::Args;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Checks what the server needs, without changing anything: the user postgres runs as, \
the binaries and their shared libraries, timezone data, a UTF-8 locale, the port, the data directory's \
owner, mode and PG_VERSION, and free disk space. One line per check; exit 1 if any fails.",
    after_help = "Examples:\n  pgwarden doctor\n  pgwarden doctor --data-dir /srv/pg --port 5544"
)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// The same source flags as `run`, so doctor checks the binaries run would use.
    #[command(flatten)]
    pub binaries: BinaryFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, level: Level, what: &str, text: impl AsRef<str>) {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        self.failed |= level == Level::Fail;
        let mut lines = text.as_ref().lines();
        println!("{tag} {what}: {}", lines.next().unwrap_or(""));
        for more in lines {
            println!("       {more}");
        }
    }
}

/// `resolved`: the settings `run` would use (with the flags the instance was last started
/// with), or why there are none.
pub fn run(_args: DoctorArgs, resolved: Result<Resolved>) -> Result<i32> {
    let mut report = Report { failed: false };
    let resolved = match resolved {
        Ok(resolved) => resolved,
        Err(e @ Error::Untrusted(_)) => {
            report.line(Level::Fail, "project", e.to_string());
            return Ok(1);
        }
        Err(e) => {
            report.line(Level::Fail, "config", e.to_string());
            return Ok(1);
        }
    };
    let config = resolved.config.clone();
    report.line(
        Level::Ok,
        "config",
        match (&config.config_file, &config.project) {
            (Some(file), _) => format!("{} (valid)", file.display()),
            (None, Some(_)) => "the project file, defaults and environment (no config file)".into(),
            (None, None) => "defaults and environment (no config file)".to_string(),
        },
    );
    if let Some(project) = &config.project {
        check_project(&mut report, project);
    }
    let instance = resolved.observe();

    let run_as = crate::instance::server_user::server_user(
        config.run_as.as_deref(),
        &config.data_dir,
        config.ephemeral,
        false,
    );
    let run_as = match run_as {
        Ok(run_as) => {
            let how = if run_as.switch {
                "started as root: initdb and postgres run as"
            } else {
                "initdb and postgres run as the current user"
            };
            report.line(
                Level::Ok,
                "user",
                format!("{how} {} (uid {})", run_as.name, run_as.uid),
            );
            Some(run_as)
        }
        Err(e) => {
            report.line(Level::Fail, "user", e.to_string());
            None
        }
    };

    // An existing installation another user could have written to is refused here, before
    // anything in it runs (its --version, ldd).
    let install = match binaries::installed_for(
        &config.source,
        &config.install_dir,
        &config.version,
        &config.install_policy,
    ) {
        Ok(install) => {
            check_binaries(&mut report, &config, install.as_ref());
            if let Some(install) = &install {
                check_client_tools(&mut report, install);
            }
            check_lock(&mut report, &config);
            install
        }
        Err(e) => {
            report.line(Level::Fail, "binaries", e.to_string());
            None
        }
    };
    check_timezone(&mut report, install.as_ref());
    check_locale(&mut report);
    check_port(&mut report, &instance, run_as.as_ref());
    check_data_dir(&mut report, &config, run_as.as_ref());
    check_disk(&mut report, &config.data_dir);
    check_http(&mut report, &instance);
    Ok(if report.failed { 1 } else { 0 })
}

/// The project file in use, its owner, and why pgwarden read it; one another user owns (named
/// with `-f`: the user's choice) is a warning.
fn check_project(report: &mut Report, project: &ProjectInUse) {
    let owner = trust::owner_name(project.owner);
    let me = nix::unistd::geteuid().as_raw();
    let (level, why) = match &project.chosen {
        Chosen::Found => (
            Level::Ok,
            "found from the working directory; it and the directories above it are yours or \
             root's and writable by no one else"
                .to_string(),
        ),
        Chosen::OptedIn(dir) => (
            Level::Ok,
            format!(
                "found from the working directory, read because you trust {} ({} or `{}`)",
                dir.display(),
                trust::TRUSTED_DIRS_ENV,
                trust::TRUSTED_DIRS_KEY
            ),
        ),
        Chosen::Named if project.owner != me && project.owner != 0 => (
            Level::Warn,
            "named with -f / --project-dir; another user owns it and could change what pgwarden \
             does"
                .to_string(),
        ),
        Chosen::Named => (Level::Ok, "named with -f / --project-dir".to_string()),
    };
    report.line(
        level,
        "project",
        format!("{} (owner {owner}; {why})", project.file.display()),
    );
}

fn check_binaries(report: &mut Report, config: &Config, install: Option<&Install>) {
    let Some(install) = install else {
        let missing = format!(
            "no PostgreSQL {} installed in {}",
            config.version.to_string().trim_start_matches('='),
            config.install_dir.display()
        );
        // Asked as run would ask (on its own runtime: doctor runs inside the command's).
        let (source, version) = (config.source.clone(), config.version.clone());
        let reachable = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .map(|rt| rt.block_on(binaries::reach::check(&source, &version)))
        })
        .join();
        match reachable {
            Ok(Ok(Ok(how))) => report.line(Level::Warn, "binaries", format!("{missing}; {how}")),
            Ok(Ok(Err(e))) => report.line(
                Level::Fail,
                "binaries",
                format!("{missing}, and `pgwarden run` could not install it: {e}"),
            ),
            Ok(Err(e)) => report.line(Level::Fail, "binaries", format!("{missing}; {e}")),
            Err(_) => report.line(
                Level::Fail,
                "binaries",
                format!("{missing}; the check failed"),
            ),
        }
        return;
    };
    let mut missing: Vec<String> = Vec::new();
    for program in ["postgres", "initdb"] {
        let path = install.bin(program);
        if !path.is_file() {
            missing.push(format!("{} is missing", path.display()));
            continue;
        }
        missing.extend(unresolved_libraries(&path, &config.install_policy));
    }
    if missing.is_empty() {
        let runs = install
            .command("postgres", &config.install_policy)
            .arg("--version")
            .output();
        match runs {
            Ok(out) if out.status.success() => report.line(
                Level::Ok,
                "binaries",
                format!(
                    "{} in {} (runs; shared libraries resolve)",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    install.dir.display()
                ),
            ),
            Ok(out) => report.line(
                Level::Fail,
                "binaries",
                format!(
                    "{} --version failed: {}\nhelp: reinstall: remove {} and run `pgwarden run` again",
                    install.bin("postgres").display(),
                    String::from_utf8_lossy(&out.stderr).trim(),
                    install.dir.display()
                ),
            ),
            Err(e) => report.line(
                Level::Fail,
                "binaries",
                format!("cannot run {}: {e}", install.bin("postgres").display()),
            ),
        }
    } else {
        report.line(
            Level::Fail,
            "binaries",
            format!(
                "{}\nhelp: install the missing system libraries (e.g. `apt-cache search LIBNAME`), or reinstall the binaries",
                missing.join("; ")
            ),
        );
    }
}

/// Which client programs the installation has (they are first on `pgwarden exec`'s PATH), and
/// in one line how to get the missing ones.
fn check_client_tools(report: &mut Report, install: &Install) {
    let (present, missing) = binaries::client_tools(install);
    if missing.is_empty() {
        report.line(
            Level::Ok,
            "client tools",
            format!("{} (first on `pgwarden exec`'s PATH)", present.join(" ")),
        );
        return;
    }
    let has = if present.is_empty() {
        "none".to_string()
    } else {
        present.join(" ")
    };
    report.line(
        Level::Warn,
        "client tools",
        format!(
            "has {has}; lacks {}\nhelp: {}",
            missing.join(" "),
            binaries::client_tools_hint(install)
        ),
    );
}

/// The project's lock file: what it names for this platform, and whether the installation in
/// use was unpacked from those bytes.
fn check_lock(report: &mut Report, config: &Config) {
    let Some(path) = &config.lock.path else {
        return;
    };
    if matches!(config.source, binaries::Source::Existing(_)) {
        report.line(
            Level::Ok,
            "lock",
            format!(
                "{} does not apply to an existing installation used in place",
                path.display()
            ),
        );
        return;
    }
    let platform = binaries::locked::platform();
    let Some(entry) = config.lock.lock.as_ref().and_then(|l| l.entry(&platform)) else {
        let level = if config.lock.locked {
            Level::Fail
        } else {
            Level::Ok
        };
        report.line(
            level,
            "lock",
            format!(
                "{} has no entry for {platform} yet; the next install writes it",
                path.display()
            ),
        );
        return;
    };
    let locked = format!(
        "{} locks PostgreSQL {} (sha256 {}, from {})",
        path.display(),
        entry.version,
        entry.sha256,
        entry.source
    );
    let exact = semver::VersionReq::parse(&format!("={}", entry.version)).expect("checked");
    let install = binaries::find_installed(&config.install_dir, &exact);
    let digest = install
        .as_ref()
        .and_then(binaries::record)
        .and_then(|r| r.sha256);
    match (install, digest) {
        (None, _) => report.line(Level::Ok, "lock", format!("{locked}; not installed yet")),
        (Some(_), Some(d)) if d == entry.sha256 => report.line(
            Level::Ok,
            "lock",
            format!("{locked}; the installation matches"),
        ),
        (Some(install), d) => report.line(
            Level::Fail,
            "lock",
            format!(
                "{locked}, but {} was unpacked from other bytes (sha256 {})\nhelp: use another \
                 --install-dir for this project, or remove {} when no server uses it",
                install.dir.display(),
                d.as_deref().unwrap_or("none recorded"),
                install.dir.display()
            ),
        ),
    }
}

/// The `ldd` lines saying "not found" (empty when ldd is not available). ldd may run the
/// program it is asked about (through the interpreter the binary names), so it runs as the
/// installation's programs do, never as root.
fn unresolved_libraries(binary: &Path, policy: &binaries::Policy) -> Vec<String> {
    let mut ldd = binaries::program_command(Path::new("ldd"), policy);
    let Ok(out) = ldd.arg(binary).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("not found"))
        .map(|l| {
            format!(
                "{}: {} (shared library not found)",
                binary.file_name().unwrap_or_default().to_string_lossy(),
                l.split("=>").next().unwrap_or(l).trim()
            )
        })
        .collect()
}

fn check_timezone(report: &mut Report, install: Option<&Install>) {
    let bundled = install.and_then(|i| {
        [
            i.dir.join("share/postgresql/timezone"),
            i.dir.join("share/timezone"),
        ]
        .into_iter()
        .find(|d| d.join("UTC").exists())
    });
    let system = Path::new("/usr/share/zoneinfo");
    match (bundled, system.join("UTC").exists()) {
        (Some(dir), _) => report.line(Level::Ok, "timezone data", dir.display().to_string()),
        (None, true) => report.line(
            Level::Ok,
            "timezone data",
            format!("{} (system tzdata)", system.display()),
        ),
        (None, false) if install.is_none() => report.line(
            Level::Warn,
            "timezone data",
            "none on the system; the binaries must bring their own (checked once installed)",
        ),
        (None, false) => report.line(
            Level::Fail,
            "timezone data",
            "neither the binaries nor the system (/usr/share/zoneinfo) have timezone data\nhelp: install tzdata (`apt install tzdata`)",
        ),
    }
}

fn check_locale(report: &mut Report) {
    let locale = cluster::locale();
    let user = ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    let note = match &user {
        Some(l) if l != locale => {
            format!(" (your {l} is not used: the cluster does not depend on it)")
        }
        _ => String::new(),
    };
    if locale == "C.UTF-8" {
        report.line(
            Level::Ok,
            "locale",
            format!("initdb uses C.UTF-8 with encoding UTF8{note}"),
        );
    } else {
        report.line(
            Level::Warn,
            "locale",
            format!("no C.UTF-8 locale on this system; initdb falls back to C (encoding still UTF8){note}\nhelp: install it (Debian: the `locales` package provides C.UTF-8 in libc-bin) for UTF-8-aware character classes"),
        );
    }
}

fn check_port(report: &mut Report, instance: &Instance, run_as: Option<&RunAs>) {
    let config = &instance.config;
    if let (Some(pid), Some(status)) = (instance.supervisor, &instance.status)
        && status.port == config.port
    {
        report.line(
            Level::Ok,
            "port",
            format!(
                "{}:{} is served by the running pgwarden (pid {pid})",
                status.listen_address, status.port
            ),
        );
        return;
    }
    // The checks `run` makes, in its order.
    let checked = match run_as {
        Some(run_as) => preflight::check_port_unprivileged(config.port, &run_as.name),
        None => Ok(()),
    }
    .and_then(|()| preflight::check_port_free(config.listen_address, config.port));
    match checked {
        Ok(()) => report.line(
            Level::Ok,
            "port",
            format!("{}:{} is free", config.listen_address, config.port),
        ),
        Err(e) => report.line(Level::Fail, "port", e.to_string()),
    }
}

/// The running endpoint's connections, from the record it keeps in the state directory (read
/// from the file, so that an endpoint whose connections are all taken is reported too).
fn check_http(report: &mut Report, instance: &Instance) {
    let record = crate::observe::endpoint_file::read(&instance.state_dir)
        .filter(|r| instance.supervisor == Some(r.supervisor_pid));
    let Some(record) = record else {
        if let (Some(pid), Some(address)) = (instance.supervisor, instance.config.http_address) {
            report.line(
                Level::Warn,
                "http endpoint",
                format!(
                    "{address}: the running pgwarden (pid {pid}) has written no record of it yet"
                ),
            );
        }
        return;
    };
    let f = record.figures;
    let text = format!(
        "{}: {} of {} connections open (open-file limit {}); {} refused over the cap, \
         {} header timeouts, {} idle timeouts, {} too large, {} accept errors",
        record.address,
        f.open,
        f.cap,
        record.fd_limit,
        f.refused,
        f.header_timeouts,
        f.idle_timeouts,
        f.too_large,
        f.accept_errors
    );
    if f.refused > 0 || f.accept_errors > 0 {
        report.line(
            Level::Warn,
            "http endpoint",
            format!(
                "{text}\nthe endpoint's cap was reached: a client held every connection (the \
                 supervisor and the server are not affected; the endpoint's own requests failed \
                 meanwhile); see who connects to {} (ss -tnp)",
                record.address
            ),
        );
    } else {
        report.line(Level::Ok, "http endpoint", text);
    }
}

/// The very checks `run` makes before it touches the data directory ([`cluster::check`]).
fn check_data_dir(report: &mut Report, config: &Config, run_as: Option<&RunAs>) {
    let dir = &config.data_dir;
    // `run`'s own first check, before it creates anything beside the data directory.
    if let Err(e) = crate::instance::private_dir::check_state_dir_creatable(config) {
        report.line(Level::Fail, "data dir", e.to_string());
        return;
    }
    let Some(run_as) = run_as else {
        report.line(
            Level::Warn,
            "data dir",
            format!(
                "{}: not checked (no user to run postgres as, see above)",
                dir.display()
            ),
        );
        return;
    };
    match cluster::check(config, run_as) {
        Ok(found) => {
            let level = match found {
                DataDir::Missing | DataDir::Empty | DataDir::Cluster { ours: true } => Level::Ok,
                DataDir::HalfMade | DataDir::Cluster { ours: false } => Level::Warn,
            };
            let detail = match std::fs::metadata(dir) {
                Ok(meta) if matches!(found, DataDir::Cluster { .. }) => format!(
                    " (mode {:o}, owner uid {})",
                    meta.mode() & 0o777,
                    meta.uid()
                ),
                _ => String::new(),
            };
            report.line(
                level,
                "data dir",
                format!("{}: {}{detail}", dir.display(), found.describe()),
            );
        }
        Err(e) => report.line(Level::Fail, "data dir", e.to_string()),
    }
}

fn check_disk(report: &mut Report, data_dir: &Path) {
    let at = nearest_existing(data_dir);
    let Ok(stat) = nix::sys::statvfs::statvfs(&at) else {
        report.line(
            Level::Warn,
            "disk",
            format!("cannot read free space of {}", at.display()),
        );
        return;
    };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let gib = free as f64 / (1u64 << 30) as f64;
    let text = format!("{gib:.1} GiB free on {}", at.display());
    if free < 256 << 20 {
        report.line(
            Level::Fail,
            "disk",
            format!("{text}; PostgreSQL needs room for WAL and checkpoints (at least 256 MiB)\nhelp: free some space or move --data-dir"),
        );
    } else if free < 1 << 30 {
        report.line(Level::Warn, "disk", format!("{text}; less than 1 GiB"));
    } else {
        report.line(Level::Ok, "disk", text);
    }
}

fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}
