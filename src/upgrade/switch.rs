//! The switch, the rollback's put-back and the finish's deletion: directory renames and
//! deletions driven by the record ([`super::state`]), each written down before it is done, so
//! that the same functions complete an interrupted step ([`recover`]). Every step looks at what
//! is on disk and does only what is left, so running one twice is harmless.

use super::state::{self, Phase, Record};
use crate::error::{Error, Result};
use crate::instance::remembered;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tracing::{info, warn};

/// What [`recover`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// No upgrade under way, or one waiting for `--finish` or `--rollback`: nothing to do.
    Nothing,
    /// A preparation was interrupted: the new cluster's remains removed, the old cluster is the
    /// instance's as before.
    PreparationUndone,
    /// A switch was interrupted after its commit point: completed (the new cluster is the
    /// instance's, and its version remembered).
    SwitchCompleted,
    /// A rollback was interrupted: completed (the old cluster is back, its version remembered).
    RollbackCompleted,
    /// A finish was interrupted: completed (the old cluster deleted).
    FinishCompleted,
}

impl Recovered {
    /// Whether the recovery changed which binaries the instance uses (its remembered flags):
    /// `run` then loads its settings again.
    pub fn changed_version(self) -> bool {
        matches!(
            self,
            Recovered::SwitchCompleted | Recovered::RollbackCompleted
        )
    }
}

/// Completes or undoes whatever upgrade step a killed pgwarden left in `state_dir`. Called with
/// the instance lock held (by `run`, and by `upgrade` before it starts a step).
pub async fn recover(state_dir: &Path) -> Result<Recovered> {
    let Some(record) = state::read(state_dir)? else {
        return Ok(Recovered::Nothing);
    };
    let recovered = match record.phase {
        Phase::Upgraded => return Ok(Recovered::Nothing),
        Phase::Preparing => {
            // Killed, or still at work between its fast stop and its taking of the instance
            // lock: only a preparation whose command is gone (its upgrade lock free) is undone.
            if super::UpgradeLock::acquire(state_dir).is_err() {
                return Err(Error::UpgradeRefused {
                    what: format!(
                        "`pgwarden upgrade` is preparing the new cluster {} and still runs\n\
                         help: wait until it ends (it starts the server itself)",
                        record.new_dir.display()
                    ),
                });
            }
            warn!(new_dir = %record.new_dir.display(), "an upgrade was interrupted while the new cluster was being made; removing it (the old cluster is unchanged)");
            undo_preparation(state_dir, &record).await?;
            Recovered::PreparationUndone
        }
        Phase::Switching => {
            warn!(data_dir = %record.data_dir.display(), "an upgrade was interrupted during the switch to the new cluster (which was complete); completing it");
            apply_switch(state_dir, &record)?;
            Recovered::SwitchCompleted
        }
        Phase::RollingBack => {
            warn!(data_dir = %record.data_dir.display(), "a rollback was interrupted; completing it");
            apply_rollback(state_dir, &record)?;
            Recovered::RollbackCompleted
        }
        Phase::Finishing => {
            warn!(kept_dir = %record.kept_dir.display(), "an upgrade's --finish was interrupted; completing it");
            apply_finish(state_dir, &record)?;
            Recovered::FinishCompleted
        }
    };
    Ok(recovered)
}

/// Removes a new cluster that was not finished, and puts back what pg_upgrade may have changed
/// in the old one (`--link` renames its `global/pg_control` to `pg_control.old` before linking).
pub async fn undo_preparation(state_dir: &Path, record: &Record) -> Result<()> {
    // A killed pg_upgrade's servers outlive it (pg_ctl detaches them): stopped first, cleanly.
    // A postgres on the old cluster is one only while no other pgwarden supervises it: a
    // refused pre-flight undoes its preparation beside the server that runs on.
    let supervised =
        crate::instance::lock::holder(state_dir).is_some_and(|pid| pid != std::process::id());
    let dirs = if supervised {
        vec![&record.new_dir]
    } else {
        vec![&record.new_dir, &record.data_dir]
    };
    for dir in dirs {
        if let Some(pid) = crate::supervisor::server::survivor(dir) {
            warn!(pid = pid.as_raw(), dir = %dir.display(), "a postgres started by the interrupted upgrade still runs; shutting it down");
            crate::supervisor::server::stop_survivor(pid, dir, std::time::Duration::from_secs(60))
                .await;
        }
    }
    let control = record.data_dir.join("global/pg_control");
    let control_old = record.data_dir.join("global/pg_control.old");
    if !control.exists() && control_old.exists() {
        rename(&control_old, &control)?;
    }
    match made_by_this_upgrade(&record.new_dir, &record.data_dir) {
        Ok(()) => remove_tree(&record.new_dir)?,
        Err(why) => warn!(
            new_dir = %record.new_dir.display(),
            "leaving {} as it is: {why}, not the new cluster this upgrade made (check what it holds and remove it before upgrading again)",
            record.new_dir.display()
        ),
    }
    remove_tree(&super::work_dir(state_dir))?;
    state::remove(state_dir)
}

/// Whether `new_dir` (when it exists) is the directory the preparation made, which undoing it
/// removes: a real directory of the server's user (the old cluster's owner) or of pgwarden's,
/// holding the new cluster's `PG_VERSION` or nothing (initdb had not run). Anything else may be
/// another user's, made at that name first where the data directory's parent is shared
/// (`/tmp`) — the preparation then failed to make its own —, and is not ours to delete.
fn made_by_this_upgrade(new_dir: &Path, data_dir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(new_dir) {
        Err(_) => return Ok(()),
        Ok(meta) => meta,
    };
    let owner = crate::config::trust::owner_name(meta.uid());
    if !meta.is_dir() {
        return Err(format!("it is not a directory (owned by {owner})"));
    }
    let server = std::fs::metadata(data_dir).map(|m| m.uid()).ok();
    if meta.uid() != nix::unistd::geteuid().as_raw() && Some(meta.uid()) != server {
        return Err(format!("it is owned by {owner}"));
    }
    let version = std::fs::symlink_metadata(new_dir.join("PG_VERSION"));
    let empty = std::fs::read_dir(new_dir).is_ok_and(|mut d| d.next().is_none());
    if !(version.is_ok_and(|m| m.is_file()) || empty) {
        return Err("it holds no cluster (no PG_VERSION)".to_string());
    }
    Ok(())
}

/// The switch (phase [`Phase::Switching`] written): the old cluster moves aside to the kept
/// directory, the new one into the data directory, the remembered flags and the lock file name
/// the new version, then phase [`Phase::Upgraded`].
pub fn apply_switch(state_dir: &Path, record: &Record) -> Result<()> {
    let (data, new, kept) = (&record.data_dir, &record.new_dir, &record.kept_dir);
    only_real_directories(&[data, new, kept])?;
    if new.exists() && data.exists() && !kept.exists() {
        rename(data, kept)?;
        super::test_kill_point("switch-renamed-old");
    }
    if new.exists() && !data.exists() && kept.exists() {
        rename(new, data)?;
        super::test_kill_point("switch-renamed-new");
    }
    if !(data.exists() && kept.exists() && !new.exists()) {
        return Err(inconsistent(record));
    }
    // Read-only while kept: nobody starts it by mistake; a rollback makes it 0700 again.
    set_mode(kept, 0o500)?;
    set_flags(state_dir, &record.flags_after)?;
    if let Some(lock) = &record.lock_after {
        state::restore_lock(lock)?;
    }
    let record = Record {
        phase: Phase::Upgraded,
        ..record.clone()
    };
    state::write(state_dir, &record)?;
    info!(from = %record.from, to = %record.to, kept = %record.kept_dir.display(), "switched to the upgraded cluster; the old one is kept for a rollback");
    Ok(())
}

/// The rollback (phase [`Phase::RollingBack`] written): the new cluster moves aside to the
/// discarded directory, the kept one back into the data directory, the remembered flags and
/// the lock file as they were, the record removed, then the discarded cluster deleted.
pub fn apply_rollback(state_dir: &Path, record: &Record) -> Result<()> {
    let (data, kept, discarded) = (&record.data_dir, &record.kept_dir, &record.discarded_dir);
    only_real_directories(&[data, kept, discarded])?;
    if data.exists() && kept.exists() && !discarded.exists() {
        rename(data, discarded)?;
        super::test_kill_point("rollback-renamed-new");
    }
    if !data.exists() && kept.exists() {
        set_mode(kept, 0o700)?;
        rename(kept, data)?;
    }
    if !data.exists() || kept.exists() {
        return Err(inconsistent(record));
    }
    set_mode(data, 0o700)?;
    set_flags(state_dir, &record.flags_before)?;
    if let Some(lock) = &record.lock_before {
        state::restore_lock(lock)?;
    }
    state::remove(state_dir)?;
    remove_tree(discarded)?;
    info!(version = %record.from, data_dir = %data.display(), "rolled back: the cluster is the one from before the upgrade");
    Ok(())
}

/// The finish (phase [`Phase::Finishing`] written): the kept cluster deleted, the record removed.
pub fn apply_finish(state_dir: &Path, record: &Record) -> Result<()> {
    remove_tree(&record.kept_dir)?;
    state::remove(state_dir)?;
    info!(deleted = %record.kept_dir.display(), "upgrade finished: the old cluster is deleted");
    Ok(())
}

/// Replaces the remembered flags in `settings.json` (a plain `start` reads them).
fn set_flags(state_dir: &Path, flags: &remembered::Flags) -> Result<()> {
    let Some(mut settings) = remembered::read(state_dir) else {
        return Err(Error::Upgrade {
            what: format!(
                "the instance's remembered settings ({}) are missing\n\
                 help: start it with --version {} to choose the binaries",
                state_dir.join(remembered::FILE).display(),
                flags.version.as_deref().unwrap_or("16")
            ),
        });
    };
    if settings.flags == *flags {
        return Ok(());
    }
    settings.flags = flags.clone();
    remembered::write(state_dir, &settings)?;
    crate::cluster::sync_dir(state_dir);
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::Upgrade {
        what: format!(
            "cannot rename {} to {}: {e}\nhelp: fix the cause and run any pgwarden command on \
             this instance (start, upgrade --rollback): it completes the step",
            from.display(),
            to.display()
        ),
    })?;
    if let Some(parent) = to.parent() {
        crate::cluster::sync_dir(parent);
    }
    Ok(())
}

/// Refuses when one of `dirs` exists as anything but a real directory. The clusters beside the
/// data directory are the server user's, in a parent other users may write (`/tmp`): one
/// swapped for a symlink would make a rename put the link at the data directory.
fn only_real_directories(dirs: &[&Path]) -> Result<()> {
    for dir in dirs {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(Error::Upgrade {
                    what: format!(
                        "{} is not a directory (a symbolic link or a file): it is not the \
                         cluster the upgrade put there, and nothing was moved\n\
                         help: find out who replaced it; put the cluster back at {} and run the \
                         command again",
                        dir.display(),
                        dir.display()
                    ),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Sets the mode of the directory `dir` itself, never of what a symlink there leads to.
fn set_mode(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)
        .and_then(|dir| dir.set_permissions(std::fs::Permissions::from_mode(mode)))
        .map_err(|e| Error::Upgrade {
            what: format!("cannot set the mode of {}: {e}", dir.display()),
        })
}

/// Deletes a directory tree if it exists (its top made writable first: a kept cluster is 0500).
/// A symlink found there is removed itself: its target is neither changed nor deleted.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let _ = set_mode(dir, 0o700);
    std::fs::remove_dir_all(dir).map_err(|e| Error::Upgrade {
        what: format!(
            "cannot delete {}: {e}\nhelp: delete it by hand (it is no cluster pgwarden uses)",
            dir.display()
        ),
    })?;
    if let Some(parent) = dir.parent() {
        crate::cluster::sync_dir(parent);
    }
    Ok(())
}

fn inconsistent(record: &Record) -> Error {
    let state = |p: &Path| if p.exists() { "present" } else { "missing" };
    Error::Upgrade {
        what: format!(
            "the directories of the upgrade ({:?}) are not as its record says: {} {}, {} {}, {} {}, {} {}\n\
             help: something else moved them; put the cluster you want at {} and remove the \
             upgrade record {}",
            record.phase,
            record.data_dir.display(),
            state(&record.data_dir),
            record.new_dir.display(),
            state(&record.new_dir),
            record.kept_dir.display(),
            state(&record.kept_dir),
            record.discarded_dir.display(),
            state(&record.discarded_dir),
            record.data_dir.display(),
            state::FILE,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::remembered::{Flags, Remembered};
    use state::Mode;

    fn setup() -> (tempfile::TempDir, std::path::PathBuf, Record) {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let state_dir = root.path().join("data.pgwarden");
        std::fs::create_dir_all(&state_dir).unwrap();
        for (dir, version) in [(&data, "16"), (&state::sibling(&data, ".upgrade-17"), "17")] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("PG_VERSION"), format!("{version}\n")).unwrap();
        }
        let remembered = Remembered {
            name: "default".into(),
            named: false,
            data_dir: data.clone(),
            ephemeral: false,
            project_file: None,
            config_file: None,
            listen_address: "127.0.0.1".parse().unwrap(),
            port: 5433,
            user: "trader".into(),
            database: "trader".into(),
            password: remembered::PasswordSource::Default,
            flags: Flags::default(),
        };
        remembered::write(&state_dir, &remembered).unwrap();
        let record = Record {
            phase: Phase::Switching,
            from: "16.14.0".into(),
            to: "17.10.0".into(),
            mode: Mode::Copy,
            data_dir: data.clone(),
            new_dir: state::sibling(&data, ".upgrade-17"),
            kept_dir: state::sibling(&data, ".pg16"),
            discarded_dir: state::sibling(&data, ".pg17-discarded"),
            flags_before: Flags::default(),
            flags_after: Flags {
                version: Some("17.10.0".into()),
                ..Flags::default()
            },
            lock_before: None,
            lock_after: None,
            switched_unix: Some(1),
        };
        state::write(&state_dir, &record).unwrap();
        (root, state_dir, record)
    }

    fn version_at(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("PG_VERSION"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Every point a switch can stop at (before, between and after its two renames) is
    /// completed by recovery into the same end: the new cluster at the data directory, the old
    /// one kept, the new version remembered.
    #[tokio::test]
    async fn a_switch_interrupted_anywhere_is_completed() {
        for renames_done in 0..=2 {
            let (_root, state_dir, record) = setup();
            if renames_done >= 1 {
                std::fs::rename(&record.data_dir, &record.kept_dir).unwrap();
            }
            if renames_done >= 2 {
                std::fs::rename(&record.new_dir, &record.data_dir).unwrap();
            }
            assert_eq!(
                recover(&state_dir).await.unwrap(),
                Recovered::SwitchCompleted
            );
            assert_eq!(version_at(&record.data_dir), "17");
            assert_eq!(version_at(&record.kept_dir), "16");
            assert!(!record.new_dir.exists());
            let settings = remembered::read(&state_dir).unwrap();
            assert_eq!(settings.flags.version.as_deref(), Some("17.10.0"));
            let now = state::read(&state_dir).unwrap().unwrap();
            assert_eq!(now.phase, Phase::Upgraded);
            assert_eq!(recover(&state_dir).await.unwrap(), Recovered::Nothing);
        }
    }

    #[tokio::test]
    async fn a_rollback_interrupted_anywhere_is_completed() {
        for renames_done in 0..=2 {
            let (_root, state_dir, record) = setup();
            apply_switch(&state_dir, &record).unwrap();
            let record = Record {
                phase: Phase::RollingBack,
                ..record
            };
            state::write(&state_dir, &record).unwrap();
            if renames_done >= 1 {
                std::fs::rename(&record.data_dir, &record.discarded_dir).unwrap();
            }
            if renames_done >= 2 {
                std::fs::rename(&record.kept_dir, &record.data_dir).unwrap();
            }
            assert_eq!(
                recover(&state_dir).await.unwrap(),
                Recovered::RollbackCompleted
            );
            assert_eq!(version_at(&record.data_dir), "16");
            assert!(!record.kept_dir.exists() && !record.discarded_dir.exists());
            assert_eq!(remembered::read(&state_dir).unwrap().flags.version, None);
            assert!(state::read(&state_dir).unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn an_interrupted_preparation_leaves_the_old_cluster_alone() {
        let (_root, state_dir, record) = setup();
        let record = Record {
            phase: Phase::Preparing,
            ..record
        };
        state::write(&state_dir, &record).unwrap();
        assert_eq!(
            recover(&state_dir).await.unwrap(),
            Recovered::PreparationUndone
        );
        assert_eq!(version_at(&record.data_dir), "16");
        assert!(!record.new_dir.exists());
        assert!(state::read(&state_dir).unwrap().is_none());
    }

    /// A `start` in the moment between the upgrade's fast stop and its taking of the instance
    /// lock: the upgrade command still holds its lock, so its preparation is not undone.
    #[tokio::test]
    async fn a_preparation_whose_upgrade_still_runs_is_not_undone() {
        let (_root, state_dir, record) = setup();
        let record = Record {
            phase: Phase::Preparing,
            ..record
        };
        state::write(&state_dir, &record).unwrap();
        let upgrade = crate::upgrade::UpgradeLock::acquire(&state_dir).unwrap();
        let error = recover(&state_dir).await.unwrap_err();
        assert_eq!(error.exit_code(), 2, "{error}");
        assert!(error.to_string().contains("help: wait"), "{error}");
        assert_eq!(version_at(&record.new_dir), "17");
        assert_eq!(
            state::read(&state_dir).unwrap().unwrap().phase,
            Phase::Preparing
        );
        drop(upgrade);
        assert_eq!(
            recover(&state_dir).await.unwrap(),
            Recovered::PreparationUndone
        );
        assert!(!record.new_dir.exists());
    }

    /// Another user's directory at the new cluster's name (made first beside a data directory
    /// in `/tmp`, so the preparation could not make its own) is left as it was when the
    /// preparation is undone.
    #[tokio::test]
    async fn an_undone_preparation_leaves_another_users_directory_at_the_new_name() {
        let (_root, state_dir, record) = setup();
        let record = Record {
            phase: Phase::Preparing,
            ..record
        };
        state::write(&state_dir, &record).unwrap();
        let other = 65534; // nobody: neither pgwarden's user nor the cluster's owner
        std::fs::write(record.new_dir.join("theirs"), "keep me").unwrap();
        for entry in std::fs::read_dir(&record.new_dir).unwrap().flatten() {
            std::os::unix::fs::lchown(entry.path(), Some(other), None).unwrap();
        }
        std::os::unix::fs::lchown(&record.new_dir, Some(other), None).unwrap();
        assert_eq!(
            recover(&state_dir).await.unwrap(),
            Recovered::PreparationUndone
        );
        assert_eq!(
            std::fs::read_to_string(record.new_dir.join("theirs")).unwrap(),
            "keep me"
        );
        assert_eq!(version_at(&record.data_dir), "16");
    }

    #[tokio::test]
    async fn directories_that_contradict_the_record_are_refused_not_guessed() {
        let (_root, state_dir, record) = setup();
        std::fs::remove_dir_all(&record.new_dir).unwrap();
        let err = recover(&state_dir).await.unwrap_err().to_string();
        assert!(err.contains("not as its record says"), "{err}");
        assert_eq!(version_at(&record.data_dir), "16");
    }

    /// A directory elsewhere (mode 0755, one file) and a symlink to it swapped in for `link`,
    /// as the server's user can do to its clusters beside the data directory in `/tmp`.
    fn plant_link(root: &Path, link: &Path) -> std::path::PathBuf {
        let target = root.join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("precious"), "keep me").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(link, root.join("moved-away")).unwrap();
        std::os::unix::fs::symlink(&target, link).unwrap();
        target
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// `--finish` (or the recovery of one) with the kept cluster swapped for a symlink removes
    /// the link: what it leads to keeps its files and its mode.
    #[tokio::test]
    async fn a_finish_removes_a_planted_link_not_its_target_nor_its_mode() {
        let (root, state_dir, record) = setup();
        apply_switch(&state_dir, &record).unwrap();
        let target = plant_link(root.path(), &record.kept_dir);
        let record = Record {
            phase: Phase::Finishing,
            ..record
        };
        state::write(&state_dir, &record).unwrap();
        assert_eq!(
            recover(&state_dir).await.unwrap(),
            Recovered::FinishCompleted
        );
        assert!(std::fs::symlink_metadata(&record.kept_dir).is_err());
        assert_eq!(
            std::fs::read_to_string(target.join("precious")).unwrap(),
            "keep me"
        );
        assert_eq!(mode_of(&target), 0o755);
        assert_eq!(version_at(&record.data_dir), "17");
    }

    /// A rollback whose kept cluster was swapped for a symlink is refused before anything
    /// moves: the data directory stays the new cluster (never the link), the link's target
    /// keeps its mode.
    #[tokio::test]
    async fn a_rollback_refuses_a_kept_cluster_swapped_for_a_link() {
        let (root, state_dir, record) = setup();
        apply_switch(&state_dir, &record).unwrap();
        let target = plant_link(root.path(), &record.kept_dir);
        let record = Record {
            phase: Phase::RollingBack,
            ..record
        };
        state::write(&state_dir, &record).unwrap();
        let err = recover(&state_dir).await.unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
        assert!(err.contains("help:"), "{err}");
        let data = std::fs::symlink_metadata(&record.data_dir).unwrap();
        assert!(data.is_dir(), "the data directory is a real directory");
        assert_eq!(version_at(&record.data_dir), "17");
        assert_eq!(mode_of(&target), 0o755);
        assert!(target.join("precious").exists());
    }
}
