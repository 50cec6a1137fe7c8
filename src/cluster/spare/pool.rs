//! The pool of throwaway clusters: ready copies of an `--ephemeral` server's template in the
//! user's pool directory in memory (`/dev/shm/pgwarden-<uid>-pool`, the temp directory without
//! `/dev/shm`: the throwaway roots' filesystem), so that the next `start --ephemeral` or
//! `exec --ephemeral` renames one into its data directory instead of copying the template.
//!
//! - The pool directory is private ([`crate::instance::private_dir::ensure`]: made with an
//!   exclusive mkdir, or used only when it is a real directory of pgwarden's user that no one
//!   else can write to). One another user made is neither used nor deleted: no pool.
//! - Entries are spares ([`super`]): made in a working directory, marked (the template's
//!   identity, the PostgreSQL and pgwarden versions, the owner), flushed, then renamed to
//!   `<key>.<maker pid>-<maker start time>`, where `<key>` names the settings (the template's
//!   directory name). A start takes the first valid entry of its key by renaming it to
//!   `<entry>.claimed-<pid>-<start time>`: one rename, so two starts never take the same entry.
//! - Bounded: an `--ephemeral` supervisor, once its server is ready, starts ONE detached maker
//!   ([`super::maker`]: `pgwarden pool-fill`, a session of its own at nice 19 / idle I/O, not
//!   stopped by the instance's stop — in a loop of short `exec --ephemeral` runs the stop comes
//!   right after CMD, and an in-process copy cancelled by it never made an entry), and only
//!   when [`wants_entry`] (fewer than `ephemeral_pool` ready entries of its key, no maker at
//!   it). The maker makes one entry under the key's lock (`<key>.lock`, flock; a busy lock
//!   means another maker is at it), only while the pool holds fewer than `ephemeral_pool`
//!   ready entries of its key. Entries outlive their maker (that is what makes the next start
//!   fast); the pool never holds more than `ephemeral_pool` entries per settings key.
//! - Swept: a working directory or a claimed entry whose process (pid and start time) is gone,
//!   and an entry that is stale or unreadable, are removed by the next maker; none is ever used.

use super::{Made, Origin, Record};
use crate::binaries::Install;
use crate::error::Result;
use crate::instance::private_dir;
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use crate::os::procfs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use tracing::{debug, info};

/// The user's pool directory, beside the throwaway roots: `pgwarden-<uid>.pool` (a `.`, so
/// that no instance name's throwaway root is the pool).
pub fn dir() -> PathBuf {
    let root = crate::os::paths::ephemeral_root("_");
    root.with_file_name(format!("pgwarden-{}.pool", nix::unistd::geteuid().as_raw()))
}

/// The settings key of a template: a hash of its path (its directory's name is a hash of the
/// settings; the install directory it is in makes another template).
pub fn key(template: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    hex::encode(Sha256::digest(template.as_os_str().as_bytes()))[..32].to_string()
}

/// This process as a pool name part: `<pid>-<start time>`.
fn me() -> String {
    let pid = std::process::id();
    format!("{pid}-{}", procfs::start_time(pid).unwrap_or_default())
}

/// Whether `<pid>-<start>` names a process that still runs.
fn alive(tag: &str) -> bool {
    let Some((pid, start)) = tag.split_once('-') else {
        return false;
    };
    match (pid.parse(), start.parse()) {
        (Ok(pid), Ok(start)) => procfs::alive_since(pid, start),
        _ => false,
    }
}

/// The pool directory when it is pgwarden's own (made now if missing).
fn open() -> std::result::Result<PathBuf, String> {
    let dir = dir();
    private_dir::ensure(&dir, private_dir::private_mode())
        .map(|_| dir)
        .map_err(|e| e.to_string())
}

/// A ready entry of `key`: `<key>.<pid>-<start>` (no suffix).
fn is_entry_of(name: &str, key: &str) -> bool {
    name.strip_prefix(key)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|tag| {
            tag.split_once('-').is_some_and(|(p, s)| {
                !p.is_empty()
                    && !s.is_empty()
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && s.bytes().all(|b| b.is_ascii_digit())
            })
        })
}

/// The ready entries of `key` in `pool`, oldest name first.
fn entries(pool: &Path, key: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(pool)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| is_entry_of(n, key)))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Removes what dead makers and claimers left in `pool` (any key): `….work-<pid>` of a maker
/// `<pid>-<start>` that is gone, `….claimed-<pid>-<start>` of a claimer that is gone, and the
/// lock files of keys with nothing in the pool. Only real directories of pgwarden's user;
/// never follows a symlink.
fn sweep(pool: &Path) {
    let me = nix::unistd::geteuid().as_raw();
    let names: Vec<String> = std::fs::read_dir(pool)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    for name in &names {
        let path = pool.join(name);
        if let Some(key) = name.strip_suffix(".lock") {
            remove_idle_lock(pool, key, &names);
            continue;
        }
        let owner_tag = if let Some((head, _)) = name.split_once(".work-") {
            // `<key>.<maker pid>-<start>.work-<pid>`: the maker is the tag before `.work-`.
            head.rsplit('.').next().map(str::to_string)
        } else {
            name.split_once(".claimed-").map(|(_, tag)| tag.to_string())
        };
        let Some(tag) = owner_tag else {
            remove_if_orphan(&path);
            continue;
        };
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && !alive(&tag) {
            debug!(dir = %path.display(), "removing what a killed pool maker or claimer left");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Removes a ready entry whose template is gone (its install directory removed, the template
/// deleted): no start could take it, and it would stay in memory for ever.
fn remove_if_orphan(entry: &Path) {
    if let Some(record) = super::record(entry) {
        let template_complete = record
            .origin
            .source
            .join(super::super::template::TEMPLATE_COMPLETE);
        if !template_complete.is_file() {
            super::drop_stale(entry, "its template is gone");
        }
    }
}

/// Holds `<pool>/<key>.lock` (flock, exclusive) while one maker fills the key's pool.
struct KeyLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

impl KeyLock {
    /// None when another maker holds it (or it cannot be opened).
    fn try_acquire(pool: &Path, key: &str) -> Option<KeyLock> {
        let path = pool.join(format!("{key}.lock"));
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .ok()?;
        let locked =
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()?;
        // Still the file at that name: a sweep removes an idle key's lock file while holding
        // it ([`remove_idle_lock`]), and whoever opened it before then locks a file no one
        // else will.
        is_named(&locked, &path).then_some(KeyLock { _file: locked })
    }
}

/// Whether `file` is the file named `path`.
fn is_named(file: &std::fs::File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
        _ => false,
    }
}

/// Removes `<key>.lock` when no name in `names` (the pool's) is of that key — no entry ready,
/// being made or claimed — and no maker holds it: every template path (a new install
/// directory: each test and benchmark run makes one) is a key of its own, and their lock files
/// would pile up. Removed while held.
fn remove_idle_lock(pool: &Path, key: &str, names: &[String]) {
    let (prefix, lock_name) = (format!("{key}."), format!("{key}.lock"));
    if names
        .iter()
        .any(|n| n.starts_with(&prefix) && *n != lock_name)
    {
        return;
    }
    if let Some(held) = KeyLock::try_acquire(pool, key) {
        let _ = std::fs::remove_file(pool.join(&lock_name));
        drop(held);
    }
}

/// Whether a maker for `template`'s settings has work: the pool holds fewer than `size` ready
/// entries of its key (by name; the maker checks their records) and no maker holds the key's
/// lock. Cheap (a directory listing and a non-blocking flock), so that many servers ready at
/// once do not each start a maker that finds nothing to do.
pub fn wants_entry(template: &Path, size: u32) -> bool {
    if size == 0 {
        return false;
    }
    let pool = dir();
    let key = key(template);
    if !pool.is_dir() {
        // The maker makes the pool directory (and checks it is pgwarden's own).
        return true;
    }
    if entries(&pool, &key).len() >= size as usize {
        return false;
    }
    // Released at once: the maker takes it again for its work.
    KeyLock::try_acquire(&pool, &key).is_some()
}

/// Makes one pool entry of `template` when the pool holds fewer than `size` ready entries of
/// its settings; sweeps what dead makers left and the key's stale entries first.
pub fn prepare(
    template: &Path,
    install: &Install,
    run_as: &RunAs,
    size: u32,
    cancel: &Cancel,
) -> Result<Made> {
    let pool = match open() {
        Ok(pool) => pool,
        Err(why) => return Ok(Made::Skipped(why)),
    };
    let Some(origin) = Origin::of_template(template, install, run_as) else {
        return Ok(Made::Skipped(format!(
            "the template cluster {} is not complete",
            template.display()
        )));
    };
    let key = key(template);
    let Some(_lock) = KeyLock::try_acquire(&pool, &key) else {
        return Ok(Made::Skipped(
            "another pgwarden is filling the pool for these settings".into(),
        ));
    };
    sweep(&pool);
    let mut ready = 0u32;
    for entry in entries(&pool, &key) {
        match super::record(&entry) {
            Some(record) if record.origin.differs(&origin).is_none() => ready += 1,
            Some(_) => super::drop_stale(&entry, "a stale pool entry"),
            None => super::drop_stale(&entry, "an unreadable pool entry"),
        }
    }
    if ready >= size {
        return Ok(Made::AlreadyThere);
    }
    if let Err(why) = super::room_for(&pool, super::size_of(template)) {
        return Ok(Made::Skipped(why));
    }
    let entry = pool.join(format!("{key}.{}", me()));
    let started = std::time::Instant::now();
    let made = super::make(
        &entry,
        &origin,
        |to| super::copy_cluster(template, to, run_as, cancel),
        cancel,
    )?;
    if let Made::Made(bytes) = &made {
        info!(
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            entry = %entry.display(),
            "pool entry ready: the next --ephemeral start of these settings renames it (no copy)"
        );
    }
    Ok(made)
}

/// Takes a valid pool entry of `template`: renamed to a claimed name (one rename: no other
/// start takes it), its cluster renamed to `into` (the first launch's empty staging
/// directory). None: copy the template instead.
pub fn take(template: &Path, install: &Install, run_as: &RunAs, into: &Path) -> Option<Record> {
    let pool = dir();
    let wanted = Origin::of_template(template, install, run_as)?;
    let key = key(template);
    // The pool directory is used only when it is pgwarden's own.
    let meta = std::fs::symlink_metadata(&pool).ok()?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        tracing::warn!(pool = %pool.display(), "not using the pool of throwaway clusters: it is not pgwarden's own");
        return None;
    }
    while let Some(claimed) = claim(&pool, &key, &me()) {
        if let Some(record) = super::take(&claimed, &wanted, into, "pool entry") {
            return Some(record);
        }
        let _ = std::fs::remove_dir_all(&claimed);
    }
    debug!(pool = %pool.display(), "no ready pool entry for these settings");
    None
}

/// Claims the first ready entry of `key` by renaming it to `<entry>.claimed-<claimer>`
/// (`<pid>-<start time>`): one rename, so of two starts that try the same entry one gets it
/// and the other tries the next. None when no entry is left.
fn claim(pool: &Path, key: &str, claimer: &str) -> Option<PathBuf> {
    for entry in entries(pool, key) {
        let name = entry.file_name()?.to_string_lossy().to_string();
        let claimed = pool.join(format!("{name}.claimed-{claimer}"));
        if std::fs::rename(&entry, &claimed).is_ok() {
            return Some(claimed);
        }
        // Another start took it first.
    }
    None
}

/// The pool's use of memory (`status`, `ls`): ready entries of every settings key.
pub fn disk_use() -> crate::cluster::spare::SpareUse {
    let mut out = crate::cluster::spare::SpareUse::default();
    let pool = dir();
    for entry in std::fs::read_dir(&pool).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.contains(".work-") || name.contains(".claimed-") || name.ends_with(".lock") {
            continue;
        }
        if let Some(record) = super::record(&entry.path()) {
            out.count += 1;
            out.bytes += record.bytes;
        }
    }
    out
}

/// Logs what [`prepare`] did (a made entry is logged by it, with its path).
pub fn log(made: Result<Made>, cancel: &Cancel) {
    match made {
        Ok(Made::Made(_)) => {}
        Ok(Made::AlreadyThere) => {
            debug!("the pool of throwaway clusters is full for these settings")
        }
        Ok(Made::Skipped(why)) => {
            info!("no pool entry made (the next --ephemeral start copies the template): {why}")
        }
        Err(_) if cancel.is_cancelled() => debug!("pool entry cancelled"),
        Err(e) => tracing::warn!(
            "cannot make a pool entry in the background (the next --ephemeral start copies the template): {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_name_is_key_dot_pid_dash_start_and_nothing_else() {
        assert!(is_entry_of("abc.12-34", "abc"));
        assert!(!is_entry_of("abc.12-34.work-12", "abc"));
        assert!(!is_entry_of("abc.12-34.claimed-5-6", "abc"));
        assert!(!is_entry_of("abcd.12-34", "abc"));
        assert!(!is_entry_of("abc.lock", "abc"));
    }

    /// Lock files of keys with nothing in the pool go; one whose key has an entry, and one a
    /// maker holds, stay; a lock taken on a file the sweep removed meanwhile is refused.
    #[test]
    fn the_sweep_removes_idle_lock_files_only() {
        let pool = tempfile::tempdir().unwrap();
        let dir = pool.path();
        for key in ["idle", "used", "held"] {
            std::fs::write(dir.join(format!("{key}.lock")), "").unwrap();
        }
        std::fs::create_dir(dir.join("used.1-2")).unwrap();
        let maker = KeyLock::try_acquire(dir, "held").expect("the maker's lock");
        // Opened before the sweep, locked after it removed the file.
        let early = std::fs::File::open(dir.join("idle.lock")).unwrap();
        sweep(dir);
        let left: Vec<bool> = ["idle", "used", "held"]
            .iter()
            .map(|k| dir.join(format!("{k}.lock")).exists())
            .collect();
        assert_eq!(
            left,
            [false, true, true],
            "(idle, used, held) lock files kept"
        );
        let next = KeyLock::try_acquire(dir, "idle").expect("a new lock file");
        assert!(
            !is_named(&early, &dir.join("idle.lock")),
            "a lock on the removed file is not the key's lock"
        );
        drop((next, maker));
    }

    #[test]
    fn concurrent_claims_never_take_the_same_entry() {
        let pool = tempfile::tempdir().unwrap();
        for n in 0..3 {
            std::fs::create_dir(pool.path().join(format!("k.{n}-1"))).unwrap();
        }
        let dir = pool.path();
        let claimed: Vec<PathBuf> = std::thread::scope(|s| {
            let claimers: Vec<_> = (0..4)
                .map(|n| s.spawn(move || claim(dir, "k", &format!("{n}-7"))))
                .collect();
            claimers
                .into_iter()
                .filter_map(|c| c.join().unwrap())
                .collect()
        });
        // Four claimers, three entries: three claims, each of another entry.
        let mut sources: Vec<String> = claimed
            .iter()
            .map(|c| {
                let name = c.file_name().unwrap().to_string_lossy().to_string();
                name.split(".claimed-").next().unwrap().to_string()
            })
            .collect();
        sources.sort();
        sources.dedup();
        assert_eq!(sources, ["k.0-1", "k.1-1", "k.2-1"]);
        assert!(entries(pool.path(), "k").is_empty());
    }

    #[test]
    fn the_sweep_removes_dead_makers_work_and_keeps_a_live_ones() {
        let pool = tempfile::tempdir().unwrap();
        let dead = pool.path().join("k.999999999-1.work-999999999");
        let live = pool
            .path()
            .join(format!("k.{}.work-{}", me(), std::process::id()));
        let claimed_dead = pool.path().join("k.1-2.claimed-999999999-1");
        for d in [&dead, &live, &claimed_dead] {
            std::fs::create_dir(d).unwrap();
        }
        sweep(pool.path());
        assert!(!dead.exists() && !claimed_dead.exists());
        assert!(live.exists());
    }
}
