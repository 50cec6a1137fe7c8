//! Copies another program's cluster (a container's data directory) into pgwarden's, reading
//! the source only: it is opened read-only, and nothing in it is written, renamed, chmod'ed
//! or chown'ed, so that the container can still be started on it afterwards.
//!
//! pgwarden often runs as root and the source belongs to someone else (the image's uid 999),
//! so the walk is made from directory descriptors, one `openat(O_NOFOLLOW)` per name: a
//! symlink planted in the source is never followed by accident. The only symlinks PostgreSQL
//! makes are `pg_wal` (a separate WAL directory) and the entries of `pg_tblspc`
//! (tablespaces); those are copied as the directories they name when that directory lies
//! inside the source, and refused when it lies outside (reading it would hand files outside
//! the source to the server's user). Any other symlink, and any special file (device, FIFO,
//! socket), is refused. The copy holds plain directories (0700) and files (0600) owned by
//! the server's user — no links, nothing shared with the source but, where the filesystem
//! can clone (`FICLONE`: btrfs, XFS), copy-on-write blocks.
//!
//! `postmaster.pid` is not copied: the pid in it is the old server's (in a container's pid
//! namespace), and the copy's postmaster writes its own.

use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Names at the top of the source that are not copied (see the module docs; pgwarden's own
/// markers, should the source be a pgwarden cluster, are written anew for the copy).
const NOT_COPIED: &[&str] = &[
    "postmaster.pid",
    super::MARKER,
    super::CREATING,
    super::STAGING,
];

/// What was copied.
#[derive(Debug, Default, Clone, Copy)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
    /// Files cloned (shared copy-on-write blocks) rather than copied.
    pub cloned: u64,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Copies the cluster in `source` into the existing, empty directory `target`, owned by
/// `run_as`.
pub fn copy(source: &Path, target: &Path, run_as: &RunAs) -> Result<Copied> {
    let root = nix::fcntl::open(source, DIR_FLAGS, Mode::empty())
        .map_err(std::io::Error::from)
        .io("cannot open the cluster to take over", source)?;
    let mut walk = Walk {
        source,
        root: &root,
        run_as,
        copied: Copied::default(),
    };
    walk.dir(&root, Path::new(""), target)?;
    Ok(walk.copied)
}

struct Walk<'a> {
    source: &'a Path,
    root: &'a OwnedFd,
    run_as: &'a RunAs,
    copied: Copied,
}

impl Walk<'_> {
    /// Copies the entries of the open directory `dir` (at `relative` in the source) into
    /// `target`.
    fn dir(&mut self, dir: &OwnedFd, relative: &Path, target: &Path) -> Result<()> {
        let listing = nix::dir::Dir::from_fd(dir.try_clone().io("cannot read", self.at(relative))?)
            .map_err(std::io::Error::from)
            .io("cannot read", self.at(relative))?;
        let mut names: Vec<std::ffi::OsString> = Vec::new();
        let mut listing = listing;
        for entry in listing.iter() {
            let entry = entry
                .map_err(std::io::Error::from)
                .io("cannot read", self.at(relative))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_os_string());
            }
        }
        names.sort();
        for name in names {
            if relative.as_os_str().is_empty() && NOT_COPIED.iter().any(|n| name == *n) {
                continue;
            }
            self.entry(dir, relative, &name, &target.join(&name))?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: &OwnedFd, relative: &Path, name: &OsStr, to: &Path) -> Result<()> {
        let here = relative.join(name);
        let stat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(std::io::Error::from)
            .io("cannot read", self.at(&here))?;
        match kind(&stat) {
            SFlag::S_IFDIR => {
                let sub = openat(dir, name, DIR_FLAGS, Mode::empty())
                    .map_err(std::io::Error::from)
                    .io("cannot open", self.at(&here))?;
                self.make_dir(to)?;
                self.dir(&sub, &here, to)
            }
            SFlag::S_IFREG => self.file(dir, name, &here, to),
            SFlag::S_IFLNK => self.link(dir, name, &here, to),
            _ => Err(special(&self.at(&here))),
        }
    }

    /// A symlink PostgreSQL makes (`pg_wal`, `pg_tblspc/OID`) to a directory inside the
    /// source: copied as that directory. Any other symlink is refused ([`judge_link`]).
    fn link(&mut self, dir: &OwnedFd, name: &OsStr, here: &Path, to: &Path) -> Result<()> {
        let target = readlinkat(dir, name)
            .map_err(std::io::Error::from)
            .io("cannot read", self.at(here))?;
        let inside = judge_link(self.source, here, Path::new(&target))?;
        let opened = self.open_beneath(&inside)?;
        self.make_dir(to)?;
        self.dir(&opened, &inside, to)
    }

    /// Opens the directory at `relative` below the source root, one name at a time without
    /// following symlinks (the canonical path was checked; this makes sure it still holds).
    fn open_beneath(&self, relative: &Path) -> Result<OwnedFd> {
        let mut current = self.root.try_clone().io("cannot open", self.source)?;
        for component in relative.components() {
            let Component::Normal(name) = component else {
                return Err(refused(format!(
                    "{} is not a plain path inside {}",
                    relative.display(),
                    self.source.display()
                )));
            };
            current = openat(&current, name, DIR_FLAGS, Mode::empty())
                .map_err(std::io::Error::from)
                .io("cannot open", self.at(relative))?;
        }
        Ok(current)
    }

    fn file(&mut self, dir: &OwnedFd, name: &OsStr, here: &Path, to: &Path) -> Result<()> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        // O_NOATIME: reading leaves even the access times as they were (root may ask for it;
        // another user is refused it on someone else's file, and reads without).
        let fd = match openat(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
            Err(Errno::EPERM) => openat(dir, name, flags, Mode::empty()),
            other => other,
        }
        .map_err(std::io::Error::from)
        .io("cannot read", self.at(here))?;
        let mut input = std::fs::File::from(fd);
        let output = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .io("cannot create", to)?;
        // SAFETY: both descriptors are open for the duration of the call; FICLONE reads an int.
        let cloned =
            unsafe { nix::libc::ioctl(output.as_raw_fd(), FICLONE, input.as_raw_fd()) } == 0;
        let mut output = output;
        let bytes = if cloned {
            self.copied.cloned += 1;
            input.metadata().io("cannot read", self.at(here))?.len()
        } else {
            std::io::copy(&mut input, &mut output).io("cannot copy to", to)?
        };
        output
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .io("cannot set the mode of", to)?;
        self.give(output.as_fd(), to)?;
        self.copied.files += 1;
        self.copied.bytes += bytes;
        Ok(())
    }

    fn make_dir(&self, to: &Path) -> Result<()> {
        std::fs::create_dir(to).io("cannot create directory", to)?;
        let dir = std::fs::File::open(to).io("cannot open", to)?;
        dir.set_permissions(std::fs::Permissions::from_mode(0o700))
            .io("cannot set the mode of", to)?;
        self.give(dir.as_fd(), to)
    }

    fn give(&self, fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> Result<()> {
        if self.run_as.switch {
            nix::unistd::fchown(fd, Some(self.run_as.uid), Some(self.run_as.gid)).map_err(|e| {
                Error::GiveTo {
                    path: path.to_path_buf(),
                    user: self.run_as.name.clone(),
                    source: e,
                }
            })?;
        }
        Ok(())
    }

    fn at(&self, relative: &Path) -> PathBuf {
        self.source.join(relative)
    }
}

/// Checks the whole tree as [`copy`] will, without copying: every symlink and special file
/// refused there is refused here, before anything is made.
pub fn check(source: &Path) -> Result<()> {
    fn walk(source: &Path, relative: &Path) -> Result<()> {
        let dir = source.join(relative);
        for entry in std::fs::read_dir(&dir).io("cannot read", &dir)? {
            let entry = entry.io("cannot read", &dir)?;
            let here = relative.join(entry.file_name());
            let path = source.join(&here);
            let kind = entry.file_type().io("cannot read", &path)?;
            if kind.is_dir() {
                walk(source, &here)?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).io("cannot read", &path)?;
                judge_link(source, &here, &target)?;
            } else if !kind.is_file() {
                return Err(special(&path));
            }
        }
        Ok(())
    }
    walk(source, Path::new(""))
}

/// Where a symlink at `here` (relative to `source`) with contents `target` may be followed:
/// only one PostgreSQL makes (`pg_wal`, `pg_tblspc/OID`) naming a directory inside the
/// source, judged by the real directories on the way; returns that directory, relative.
fn judge_link(source: &Path, here: &Path, target: &Path) -> Result<PathBuf> {
    let postgres_makes_it =
        here == Path::new("pg_wal") || here.parent() == Some(Path::new("pg_tblspc"));
    if !postgres_makes_it {
        return Err(refused(format!(
            "{} is a symlink (to {}), where PostgreSQL makes none; pgwarden copies no symlinks\n\
             help: replace it by what it points to (with the container stopped), then start again",
            source.join(here).display(),
            target.display()
        )));
    }
    let inside = || -> Option<PathBuf> {
        let canonical_root = std::fs::canonicalize(source).ok()?;
        let joined = if target.is_absolute() {
            target.to_path_buf()
        } else {
            source.join(here.parent()?).join(target)
        };
        let canonical = std::fs::canonicalize(&joined).ok()?;
        let relative = canonical.strip_prefix(&canonical_root).ok()?;
        (!relative.as_os_str().is_empty() && canonical.is_dir()).then(|| relative.to_path_buf())
    };
    inside().ok_or_else(|| {
        refused(format!(
            "{} is a symlink to {}, outside the cluster's directory {}; pgwarden copies only what \
             is inside it (a separate WAL directory or a tablespace of the container's is not \
             reachable here)\n\
             help: move that directory into the cluster's directory (with the container \
             stopped: `mv` it and `ln -sfn` the link to its new place), or make a base backup \
             of the container's server and `pgwarden restore` it",
            source.join(here).display(),
            target.display(),
            source.display()
        ))
    })
}

fn special(path: &Path) -> Error {
    refused(format!(
        "{} is a special file (a device, FIFO or socket); a PostgreSQL cluster holds none\n\
         help: remove it from the directory (with the container stopped), then start again",
        path.display()
    ))
}

/// `ioctl(FICLONE)`: `_IOW(0x94, 9, int)`.
const FICLONE: nix::libc::c_ulong = 0x4004_9409;

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

fn refused(what: String) -> Error {
    Error::TakeOver { what }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> RunAs {
        RunAs::resolve(None)
            .or_else(|_| RunAs::resolve(Some("nobody")))
            .unwrap()
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("source");
        std::fs::create_dir_all(s.join("base/1")).unwrap();
        std::fs::create_dir_all(s.join("pg_tblspc")).unwrap();
        std::fs::create_dir_all(s.join("wal/archive_status")).unwrap();
        std::fs::write(s.join("PG_VERSION"), "16\n").unwrap();
        std::fs::write(s.join("base/1/1259"), vec![7u8; 20_000]).unwrap();
        std::fs::write(s.join("wal/000000010000000000000001"), "wal").unwrap();
        std::fs::write(s.join("postmaster.pid"), "1\n").unwrap();
        std::fs::create_dir(dir.path().join("copy")).unwrap();
        dir
    }

    #[test]
    fn a_tree_is_copied_as_plain_private_files_without_postmaster_pid() {
        let dir = tree();
        let (s, c) = (dir.path().join("source"), dir.path().join("copy"));
        std::os::unix::fs::symlink("wal", s.join("pg_wal")).unwrap();
        check(&s).unwrap();
        let copied = copy(&s, &c, &me()).unwrap();
        // PG_VERSION, base/1/1259, wal/… and pg_wal/… (the linked directory, copied at both).
        assert_eq!(copied.files, 4);
        assert_eq!(
            std::fs::read(c.join("base/1/1259")).unwrap(),
            vec![7u8; 20_000]
        );
        let wal = std::fs::symlink_metadata(c.join("pg_wal")).unwrap();
        assert!(wal.is_dir(), "pg_wal inside the source becomes a directory");
        assert_eq!(
            std::fs::read(c.join("pg_wal/000000010000000000000001")).unwrap(),
            b"wal"
        );
        assert!(!c.join("postmaster.pid").exists());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(c.join("base")).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(c.join("PG_VERSION")).unwrap().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn symlinks_out_of_the_tree_and_elsewhere_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        for (link, target) in [
            ("pg_wal", outside.path().to_path_buf()),
            ("pg_wal", PathBuf::from("../..")),
            ("pg_tblspc/16384", outside.path().to_path_buf()),
            ("base/1/2600", PathBuf::from("/etc/passwd")),
        ] {
            let dir = tree();
            let (s, c) = (dir.path().join("source"), dir.path().join("copy"));
            std::os::unix::fs::symlink(&target, s.join(link)).unwrap();
            let checked = check(&s).unwrap_err().to_string();
            assert!(checked.contains(link), "{checked}");
            let err = copy(&s, &c, &me()).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{link}: {err}");
            let text = err.to_string();
            assert!(text.contains(link) && text.contains("help:"), "{text}");
        }
    }
}
