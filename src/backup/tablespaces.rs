//! Tablespaces in backups and restores.
//!
//! A tablespace is a directory outside the data directory, linked from `pg_tblspc/<oid>`; the
//! cluster's files in it are in its version directory `PG_16_<catalog version>` (other
//! clusters may share the location with their own). As `pg_basebackup` does:
//! - `backup` leaves the `pg_tblspc/<oid>` links out and puts each tablespace's version
//!   directory into the archive under [`PREFIX`]`/<oid>/`, listed (location, bytes) and
//!   checksummed in the manifest like every other file, with the `tablespace_map` that
//!   `pg_backup_stop` returns (it must name exactly the tablespaces copied);
//! - `restore` puts each one at its original location when that is missing or empty, or where
//!   `--tablespace OLD=NEW` says, and writes `tablespace_map` with those paths: at the start of
//!   recovery the server recreates the `pg_tblspc` links from it. Every location is checked
//!   before anything is written; a location that is not empty (the original cluster still
//!   uses it, say) is refused, naming the flag. Restored tablespace directories belong to the
//!   server's user, mode 0700.

use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The archive's directory of tablespace files: `pgwarden.tablespaces/<oid>/PG_16_…/…`.
pub const PREFIX: &str = "pgwarden.tablespaces";

/// One tablespace of a backup, in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablespaceEntry {
    pub oid: String,
    /// Where it was (the target of `pg_tblspc/<oid>`).
    pub location: String,
    /// `PG_16_<catalog version>`: the cluster's directory in the location.
    pub version_dir: String,
    /// Bytes of its files.
    pub bytes: u64,
}

/// A tablespace of the running cluster: `pg_tblspc/<oid>` links to `location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub oid: String,
    pub location: PathBuf,
}

/// The version directory of this PostgreSQL major and catalog version.
pub fn version_dir(catalog_version: i64) -> String {
    format!("PG_{}_{catalog_version}", crate::config::MAJOR)
}

fn is_oid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The tablespaces linked from `data_dir/pg_tblspc` (in-place tablespaces, directories there,
/// are part of the data directory and not listed).
pub fn list_live(data_dir: &Path) -> Result<Vec<Live>> {
    let dir = data_dir.join("pg_tblspc");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).io("cannot read", &dir),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        let oid = entry.file_name().to_string_lossy().into_owned();
        let location = std::fs::read_link(&path).io("cannot read", &path)?;
        if !is_oid(&oid) || !location.is_absolute() {
            return Err(Error::Backup {
                what: format!(
                    "{} links to {}: not a tablespace link PostgreSQL made (an OID linking to an absolute path)\n\
                     help: remove what was put there by hand",
                    path.display(),
                    location.display()
                ),
            });
        }
        out.push(Live { oid, location });
    }
    out.sort_by(|a, b| a.oid.cmp(&b.oid));
    Ok(out)
}

/// `tablespace_map` as PostgreSQL writes and reads it: one `<oid> <path>` line per
/// tablespace, a backslash before any `\`, newline or carriage return in the path.
pub fn render_map(entries: &[(String, String)]) -> String {
    let mut out = String::new();
    for (oid, path) in entries {
        out.push_str(oid);
        out.push(' ');
        for c in path.chars() {
            if matches!(c, '\\' | '\n' | '\r') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// Reads a `tablespace_map` (the inverse of [`render_map`]).
pub fn parse_map(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut line = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if !escaped && (c == '\n' || c == '\r') {
            if !line.is_empty() {
                let (oid, path) = line.split_once(' ')?;
                if !is_oid(oid) || path.is_empty() {
                    return None;
                }
                out.push((oid.to_string(), path.to_string()));
                line.clear();
            }
        } else if !escaped && c == '\\' {
            escaped = true;
        } else {
            line.push(c);
            escaped = false;
        }
    }
    (line.is_empty() && !escaped).then_some(out)
}

/// Where one tablespace of a backup goes in a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub oid: String,
    /// Its location when the backup was taken.
    pub from: String,
    pub to: PathBuf,
    pub version_dir: String,
}

fn refuse(what: String) -> Error {
    Error::Backup { what }
}

/// A path from a manifest or a flag: absolute, without `.`/`..`, NUL or line breaks; returned
/// without a trailing `/`.
fn plain_absolute(path: &str) -> Option<PathBuf> {
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let ok = trimmed.starts_with('/')
        && trimmed.len() > 1
        && !trimmed.contains(['\0', '\n', '\r'])
        && trimmed[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    ok.then(|| PathBuf::from(trimmed))
}

/// Whether a location a backup's manifest names (not one the user chose) may be used: an
/// existing directory of the server's user, or a missing one whose parent is a directory of
/// that user. Anything else could be a directory a hostile manifest makes or fills as the
/// server's user wherever root can write (a systemd drop-in directory, say).
fn server_user_owns(dir: &Path, run_as: &RunAs) -> std::result::Result<(), String> {
    let (path, what) = match std::fs::symlink_metadata(dir) {
        Ok(_) => (dir, "it"),
        Err(_) => (dir.parent().unwrap_or(Path::new("/")), "its parent"),
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() && meta.uid() == run_as.uid.as_raw() => Ok(()),
        Ok(meta) if meta.is_dir() => Err(format!("{what} is owned by uid {}", meta.uid())),
        Ok(_) => Err(format!("{what} is not a directory")),
        Err(_) => Err(format!("{what} does not exist")),
    }
}

/// True when `dir` is missing, or a directory (not a symlink) holding nothing but `ignored`.
fn absent_or_empty(dir: &Path, ignored: &[PathBuf]) -> Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).io("cannot read", dir),
        Ok(meta) if meta.is_dir() => {
            for entry in std::fs::read_dir(dir).io("cannot read", dir)? {
                let entry = entry.io("cannot read", dir)?;
                if !ignored.contains(&entry.path()) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Ok(_) => Ok(false),
    }
}

/// Decides where each tablespace of a backup goes, checking every location before anything
/// is written: `mappings` are `OLD=NEW` (`--tablespace`), OLD a location of the backup.
/// `leftovers` (what an unfinished restore into this data directory wrote) do not make a
/// location "not empty": they are removed first.
pub fn plan(
    tablespaces: &[TablespaceEntry],
    mappings: &[String],
    data_dir: &Path,
    leftovers: &[PathBuf],
    run_as: &RunAs,
) -> Result<Vec<Placement>> {
    let known = || {
        if tablespaces.is_empty() {
            "this backup has no tablespaces".to_string()
        } else {
            format!(
                "this backup's tablespaces are at {}",
                tablespaces
                    .iter()
                    .map(|t| t.location.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let mut mapped: Vec<(PathBuf, PathBuf)> = Vec::new();
    for mapping in mappings {
        let parsed = mapping
            .split_once('=')
            .and_then(|(old, new)| Some((plain_absolute(old)?, plain_absolute(new)?)));
        let Some((old, new)) = parsed else {
            return Err(refuse(format!(
                "--tablespace {mapping:?} is not OLD=NEW with two absolute paths\n\
                 help: --tablespace /old/location=/new/location ({})",
                known()
            )));
        };
        if !tablespaces
            .iter()
            .any(|t| plain_absolute(&t.location).as_ref() == Some(&old))
        {
            return Err(refuse(format!(
                "--tablespace {mapping:?}: no tablespace of this backup was at {}; {}",
                old.display(),
                known()
            )));
        }
        if mapped.iter().any(|(o, _)| *o == old) {
            return Err(refuse(format!("--tablespace maps {} twice", old.display())));
        }
        mapped.push((old, new));
    }
    let data = crate::os::paths::absolute(data_dir);
    let mut out: Vec<Placement> = Vec::new();
    for t in tablespaces {
        let (Some(from), true, true) = (
            plain_absolute(&t.location),
            is_oid(&t.oid),
            t.version_dir
                .strip_prefix(&format!("PG_{}_", crate::config::MAJOR))
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())),
        ) else {
            return Err(refuse(format!(
                "the backup's manifest lists a tablespace {:?} at {:?} ({:?}) that is not one PostgreSQL {} makes; \
                 nothing was changed\nhelp: restore another backup",
                t.oid,
                t.location,
                t.version_dir,
                crate::config::MAJOR
            )));
        };
        let to = mapped
            .iter()
            .find(|(old, _)| *old == from)
            .map(|(_, new)| new.clone())
            .unwrap_or_else(|| from.clone());
        if to.starts_with(&data) || data.starts_with(&to) {
            return Err(refuse(format!(
                "tablespace {} would go to {}, which is inside the data directory {} (or holds it)\n\
                 help: --tablespace {}=/a/directory/outside/it",
                t.oid,
                to.display(),
                data.display(),
                t.location
            )));
        }
        if let Some(other) = out
            .iter()
            .find(|p| p.to.starts_with(&to) || to.starts_with(&p.to))
        {
            return Err(refuse(format!(
                "tablespaces {} and {} would both go to {} (or one inside the other)\n\
                 help: map one elsewhere: --tablespace {}=/another/directory",
                other.oid,
                t.oid,
                to.display(),
                t.location
            )));
        }
        if !absent_or_empty(&to, leftovers)? {
            let mapped_here = to != from;
            return Err(refuse(format!(
                "tablespace {} would be restored to {}, which is not empty{}; nothing was changed\n\
                 help: restore it elsewhere with --tablespace {}=/an/empty/or/new/directory{}",
                t.oid,
                to.display(),
                if mapped_here {
                    ""
                } else {
                    " (the cluster the backup was taken of may still use it)"
                },
                t.location,
                if to.join(&t.version_dir).exists() {
                    format!(
                        " (if {} is left over from an interrupted restore, remove it)",
                        to.join(&t.version_dir).display()
                    )
                } else {
                    String::new()
                }
            )));
        }
        if to == from {
            server_user_owns(&to, run_as).map_err(|why| {
                refuse(format!(
                    "tablespace {} would be restored to {}, a location the backup's manifest names: {why}; \
                     pgwarden writes where a manifest says only into a directory of the server's user {:?} \
                     (as CREATE TABLESPACE requires), nothing was changed\n\
                     help: choose the location: --tablespace {}=/a/directory/of/your/choice",
                    t.oid,
                    to.display(),
                    run_as.name,
                    t.location
                ))
            })?;
        }
        run_as.check_traversable(&to)?;
        out.push(Placement {
            oid: t.oid.clone(),
            from: t.location.clone(),
            to,
            version_dir: t.version_dir.clone(),
        });
    }
    Ok(out)
}

/// Where the archive member `rel` (under [`PREFIX`]) goes: `None` for the directories that
/// only hold the tablespaces (their locations are made by [`Prepared::create`]); `Err` with
/// the reason for a member no placement accounts for.
pub fn destination(
    rel: &str,
    placements: &[Placement],
) -> std::result::Result<Option<PathBuf>, String> {
    let rest = rel.strip_prefix(PREFIX).unwrap_or(rel);
    let mut parts = rest.trim_start_matches('/').splitn(3, '/');
    let oid = parts.next().unwrap_or_default();
    if oid.is_empty() {
        return Ok(None);
    }
    let Some(p) = placements.iter().find(|p| p.oid == oid) else {
        return Err(format!(
            "{rel} belongs to a tablespace the manifest does not list"
        ));
    };
    match parts.next() {
        None => Ok(None),
        Some(v) if v == p.version_dir => Ok(Some(match parts.next() {
            None => p.to.join(v),
            Some(tail) => p.to.join(v).join(tail),
        })),
        Some(_) => Err(format!(
            "{rel} is outside tablespace {oid}'s directory {}",
            p.version_dir
        )),
    }
}

/// A directory's (mode, uid, gid).
type ModeOwner = (u32, u32, u32);

/// The tablespace locations of a restore, made or taken over for the server's user (0700);
/// put back as they were on drop unless committed.
pub struct Prepared {
    /// Each location and its (mode, uid, gid) when it existed (empty) before.
    made: Vec<(PathBuf, Option<ModeOwner>)>,
    committed: bool,
}

impl Prepared {
    pub fn create(placements: &[Placement], run_as: &RunAs) -> Result<Prepared> {
        let mut prepared = Prepared {
            made: Vec::new(),
            committed: false,
        };
        for p in placements {
            // Checked again: between the plan and now, someone may have written there.
            if !absent_or_empty(&p.to, &[])? {
                return Err(refuse(format!(
                    "tablespace location {} is no longer empty; nothing was restored\nhelp: --tablespace {}=/another/directory",
                    p.to.display(),
                    p.from
                )));
            }
            let before = std::fs::metadata(&p.to)
                .ok()
                .map(|m| (m.mode() & 0o7777, m.uid(), m.gid()));
            prepared.made.push((p.to.clone(), before));
            run_as.own_dir(&p.to, 0o700)?;
        }
        Ok(prepared)
    }

    /// Flushes the locations' filesystems; from now on they stay.
    pub fn commit(mut self) -> Result<()> {
        for (dir, _) in &self.made {
            super::in_place::flush_filesystem(dir)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for (dir, before) in &self.made {
            match before {
                None => {
                    let _ = std::fs::remove_dir_all(dir);
                }
                Some((mode, uid, gid)) => {
                    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                        let _ = std::fs::remove_dir_all(entry.path())
                            .or_else(|_| std::fs::remove_file(entry.path()));
                    }
                    let _ = nix::unistd::chown(
                        dir,
                        Some(nix::unistd::Uid::from_raw(*uid)),
                        Some(nix::unistd::Gid::from_raw(*gid)),
                    );
                    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode));
                }
            }
        }
    }
}

/// Writes `tablespace_map` into the restored data directory with the restore's locations
/// (replacing the backup's), owned by the server's user.
pub fn write_map(data_dir: &Path, placements: &[Placement], run_as: &RunAs) -> Result<()> {
    let path = data_dir.join("tablespace_map");
    let _ = std::fs::remove_file(&path);
    let entries: Vec<(String, String)> = placements
        .iter()
        .map(|p| (p.oid.clone(), p.to.to_string_lossy().into_owned()))
        .collect();
    std::fs::write(&path, render_map(&entries)).io("cannot write", &path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .io("cannot set the mode of", &path)?;
    if run_as.switch {
        nix::unistd::chown(&path, Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
            Error::GiveTo {
                path: path.to_path_buf(),
                user: run_as.name.clone(),
                source: e,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> RunAs {
        RunAs::resolve(None)
            .or_else(|_| RunAs::resolve(Some("nobody")))
            .unwrap()
    }

    fn entry(oid: &str, location: &str) -> TablespaceEntry {
        TablespaceEntry {
            oid: oid.into(),
            location: location.into(),
            version_dir: "PG_16_202307071".into(),
            bytes: 0,
        }
    }

    #[test]
    fn the_map_round_trips_with_escapes() {
        let entries = vec![
            ("16384".to_string(), "/srv/ts one".to_string()),
            ("16385".to_string(), "/odd\\path\nhere".to_string()),
        ];
        let text = render_map(&entries);
        assert_eq!(text, "16384 /srv/ts one\n16385 /odd\\\\path\\\nhere\n");
        assert_eq!(parse_map(&text).unwrap(), entries);
        assert_eq!(parse_map("").unwrap(), vec![]);
        assert!(parse_map("x /a\n").is_none());
        assert!(parse_map("1 /a").is_none(), "unterminated");
    }

    #[test]
    fn locations_are_planned_and_checked_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let used = dir.path().join("used");
        std::fs::create_dir_all(used.join("PG_16_202307071")).unwrap();
        // Locations a manifest names are used only where the server's user owns them.
        for owned in [dir.path(), &used] {
            std::os::unix::fs::chown(owned, Some(me().uid.as_raw()), Some(me().gid.as_raw()))
                .unwrap();
        }
        let free = dir.path().join("free");
        let data = dir.path().join("data");
        let backup = [entry("16384", used.to_str().unwrap())];
        let err = plan(&backup, &[], &data, &[], &me())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not empty") && err.contains("--tablespace"),
            "{err}"
        );
        assert!(err.contains("interrupted restore"), "{err}");
        // What an unfinished restore left there does not count.
        let leftover = [used.join("PG_16_202307071")];
        assert!(plan(&backup, &[], &data, &leftover, &me()).is_ok());
        let mapping = format!("{}={}/", used.display(), free.display());
        let placed = plan(&backup, &[mapping], &data, &[], &me()).unwrap();
        assert_eq!(placed[0].to, free);
        assert!(!free.exists(), "planning writes nothing");
        for bad in [
            format!("{}", used.display()),
            format!("relative={}", free.display()),
            format!("/elsewhere={}", free.display()),
            format!("{}={}", used.display(), data.join("ts").display()),
        ] {
            assert!(
                plan(&backup, std::slice::from_ref(&bad), &data, &[], &me()).is_err(),
                "{bad}"
            );
        }
        assert!(plan(&[entry("16384", "/a/../etc")], &[], &data, &[], &me()).is_err());
        // A manifest's location where the server's user owns nothing (here: a new directory
        // in /, root's) is refused, naming the flag that chooses another.
        let err = plan(
            &[entry("16384", "/pgwarden-no-such-tablespace")],
            &[],
            &data,
            &[],
            &me(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("owned by uid 0") && err.contains("--tablespace"),
            "{err}"
        );
        let two = [
            entry("1", free.to_str().unwrap()),
            entry("2", free.join("x").to_str().unwrap()),
        ];
        assert!(
            plan(&two, &[], &data, &[], &me()).is_err(),
            "nested locations"
        );
    }

    #[test]
    fn members_go_only_into_their_tablespace() {
        let placed = vec![Placement {
            oid: "16384".into(),
            from: "/old".into(),
            to: "/new".into(),
            version_dir: "PG_16_202307071".into(),
        }];
        assert_eq!(destination(PREFIX, &placed), Ok(None));
        assert_eq!(destination("pgwarden.tablespaces/16384", &placed), Ok(None));
        assert_eq!(
            destination(
                "pgwarden.tablespaces/16384/PG_16_202307071/5/16390",
                &placed
            ),
            Ok(Some(PathBuf::from("/new/PG_16_202307071/5/16390")))
        );
        assert!(destination("pgwarden.tablespaces/1/PG_16_202307071", &placed).is_err());
        assert!(destination("pgwarden.tablespaces/16384/other/x", &placed).is_err());
    }

    #[test]
    fn live_tablespaces_are_the_links_in_pg_tblspc() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("pg_tblspc/16390")).unwrap(); // in place: not listed
        std::os::unix::fs::symlink("/srv/ts", data.join("pg_tblspc/16384")).unwrap();
        assert_eq!(
            list_live(&data).unwrap(),
            vec![Live {
                oid: "16384".into(),
                location: "/srv/ts".into()
            }]
        );
        std::os::unix::fs::symlink("../x", data.join("pg_tblspc/16385")).unwrap();
        assert!(list_live(&data).is_err());
    }
}
