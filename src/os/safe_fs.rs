//! A directory that nothing written through it can escape.
//!
//! Every path is resolved one component at a time from an open descriptor of the root, with
//! `openat(O_NOFOLLOW | O_DIRECTORY)`: a symlink (or a non-directory) met on the way is refused
//! instead of followed, and `..` or an absolute path is refused before anything is opened. New
//! files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`, links with `linkat`/`symlinkat` relative
//! to the directory descriptor that was checked. String checks on names cannot do this: a symlink
//! or a hard link made earlier (by the same archive) changes what a later, innocent-looking
//! name means.
//!
//! Errors are [`Refusal`]s: either the path is not one this directory will resolve (the reason
//! names the component), or the system call failed.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};

/// Why an operation below the root did not happen.
#[derive(Debug)]
pub enum Refusal {
    /// The path would leave the root, or go through a symlink or a non-directory.
    Escapes(String),
    /// The operation itself failed.
    Io(io::Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Escapes(why) => f.write_str(why),
            Refusal::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<Errno> for Refusal {
    fn from(e: Errno) -> Self {
        Refusal::Io(io::Error::from(e))
    }
}

type Result<T> = std::result::Result<T, Refusal>;

/// An open directory; every path given to it is relative to it and resolved without following
/// symlinks.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Beneath {
    /// Opens `path`, which must be a directory and not a symlink.
    pub fn open(path: &Path) -> io::Result<Beneath> {
        let root = nix::fcntl::open(path, DIR_FLAGS, Mode::empty()).map_err(io::Error::from)?;
        Ok(Beneath {
            root,
            path: path.to_path_buf(),
        })
    }

    /// The root's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory `relative` (the root itself when empty), creating missing components
    /// (mode 0755) when `create` is set.
    fn dir(&self, relative: &[&std::ffi::OsStr], create: bool) -> Result<OwnedFd> {
        let mut current = self.root.try_clone().map_err(Refusal::Io)?;
        let mut walked = PathBuf::new();
        for name in relative {
            walked.push(name);
            let opened = match openat(&current, *name, DIR_FLAGS, Mode::empty()) {
                Err(Errno::ENOENT) if create => {
                    match mkdirat(&current, *name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    let fd = openat(&current, *name, DIR_FLAGS, Mode::empty())
                        .map_err(|e| self.why(&current, name, &walked, e))?;
                    fchmod(&fd, Mode::from_bits_truncate(0o755))?;
                    fd
                }
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    return Err(Refusal::Escapes(format!(
                        "{} does not exist",
                        walked.display()
                    )));
                }
                Err(e) => return Err(self.why(&current, name, &walked, e)),
            };
            current = opened;
        }
        Ok(current)
    }

    /// Describes why `name` (at `walked`) could not be entered.
    fn why(&self, parent: &OwnedFd, name: &std::ffi::OsStr, walked: &Path, e: Errno) -> Refusal {
        match e {
            Errno::ELOOP | Errno::ENOTDIR => {
                let kind = match stat_nofollow(parent, name) {
                    Ok(stat) if is_kind(&stat, SFlag::S_IFLNK) => "a symlink",
                    _ => "not a directory",
                };
                Refusal::Escapes(format!("{} is {kind}", walked.display()))
            }
            e => Refusal::Io(io::Error::from(e)),
        }
    }

    /// The parent directory (created when `create`) and the last name of `relative`.
    fn parent_and_name<'a>(
        &self,
        relative: &'a Path,
        create: bool,
    ) -> Result<(OwnedFd, &'a std::ffi::OsStr)> {
        let names = names(relative)?;
        let Some((last, parents)) = names.split_last() else {
            return Err(Refusal::Escapes("an empty path".to_string()));
        };
        Ok((self.dir(parents, create)?, last))
    }

    /// Creates `relative` and its missing parents as directories, mode 0755.
    pub fn create_dir_all(&self, relative: &Path) -> Result<()> {
        let fd = self.dir(&names(relative)?, true)?;
        fchmod(&fd, Mode::from_bits_truncate(0o755))?;
        Ok(())
    }

    /// Creates the regular file `relative` with exactly `mode` (creating its parents); an existing
    /// file or link of that name is replaced (never written through), a directory is refused.
    pub fn create_file(&self, relative: &Path, mode: u32) -> Result<File> {
        let (parent, name) = self.parent_and_name(relative, true)?;
        remove_non_dir(&parent, name, relative)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&parent, name, flags, Mode::from_bits_truncate(mode & 0o777))?;
        fchmod(&fd, Mode::from_bits_truncate(mode & 0o777))?;
        Ok(File::from(fd))
    }

    /// Makes `relative` a symlink to `target` (replacing a file or link of that name).
    pub fn symlink(&self, relative: &Path, target: &Path) -> Result<()> {
        let (parent, name) = self.parent_and_name(relative, true)?;
        remove_non_dir(&parent, name, relative)?;
        symlinkat(target, &parent, name)?;
        Ok(())
    }

    /// Makes `new` a hard link to the existing regular file `existing`; `existing` must be
    /// reached without symlinks and be neither a symlink nor a directory itself.
    pub fn hard_link(&self, existing: &Path, new: &Path) -> Result<()> {
        let (source_parent, source_name) = self.parent_and_name(existing, false)?;
        let stat = stat_nofollow(&source_parent, source_name).map_err(|e| match e {
            Errno::ENOENT => Refusal::Escapes(format!("{} does not exist", existing.display())),
            e => e.into(),
        })?;
        if !is_kind(&stat, SFlag::S_IFREG) {
            return Err(Refusal::Escapes(format!(
                "{} is {}, not a regular file",
                existing.display(),
                kind_name(&stat)
            )));
        }
        let (parent, name) = self.parent_and_name(new, true)?;
        remove_non_dir(&parent, name, new)?;
        // No AT_SYMLINK_FOLLOW: the link is made to the checked entry itself.
        linkat(&source_parent, source_name, &parent, name, AtFlags::empty())?;
        Ok(())
    }

    /// True when `relative` is a regular file reached without symlinks (none on the way, and
    /// not itself a symlink).
    pub fn is_regular_file(&self, relative: &Path) -> bool {
        let Ok((parent, name)) = self.parent_and_name(relative, false) else {
            return false;
        };
        stat_nofollow(&parent, name).is_ok_and(|s| is_kind(&s, SFlag::S_IFREG))
    }
}

/// The names of a relative path's components; `..`, `/` and prefixes are refused.
fn names(relative: &Path) -> Result<Vec<&std::ffi::OsStr>> {
    let mut names = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            _ => {
                return Err(Refusal::Escapes(format!(
                    "{} is not a plain relative path",
                    relative.display()
                )));
            }
        }
    }
    Ok(names)
}

/// Removes `name` in `parent` when it is a file or a link (an archive may list a name twice);
/// a directory is refused.
fn remove_non_dir(parent: &OwnedFd, name: &std::ffi::OsStr, relative: &Path) -> Result<()> {
    match stat_nofollow(parent, name) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(stat) if is_kind(&stat, SFlag::S_IFDIR) => Err(Refusal::Escapes(format!(
            "{} is already a directory",
            relative.display()
        ))),
        Ok(_) => Ok(unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)?),
    }
}

fn stat_nofollow(parent: &impl AsFd, name: &std::ffi::OsStr) -> nix::Result<FileStat> {
    fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn is_kind(stat: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == kind
}

fn kind_name(stat: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFREG => "a regular file",
        _ => "a special file",
    }
}

/// Whether a symlink at `link` (relative to the root) with the contents `target` points inside
/// the root, judged from the names alone (`..` cannot climb above the root; no absolute path).
pub fn link_stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth: Vec<&std::ffi::OsStr> = match names(link.parent().unwrap_or(Path::new(""))) {
        Ok(names) => names,
        Err(_) => return false,
    };
    for component in target.components() {
        match component {
            Component::Normal(name) => depth.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Beneath) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"keep").unwrap();
        let beneath = Beneath::open(root.path()).unwrap();
        (root, outside, beneath)
    }

    #[test]
    fn files_are_created_below_with_the_given_mode() {
        let (root, _outside, beneath) = setup();
        let mut file = beneath.create_file(Path::new("a/b/c.txt"), 0o755).unwrap();
        file.write_all(b"x").unwrap();
        let meta = std::fs::metadata(root.path().join("a/b/c.txt")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        let dir = std::fs::metadata(root.path().join("a/b")).unwrap();
        assert_eq!(dir.permissions().mode() & 0o7777, 0o755);
        assert!(beneath.is_regular_file(Path::new("a/b/c.txt")));
        assert!(!beneath.is_regular_file(Path::new("a/b")));
    }

    #[test]
    fn symlinks_are_never_followed() {
        let (root, outside, beneath) = setup();
        std::os::unix::fs::symlink(outside.path(), root.path().join("ln")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), root.path().join("file-ln"))
            .unwrap();
        let err = beneath
            .create_file(Path::new("ln/victim"), 0o644)
            .unwrap_err();
        assert!(err.to_string().contains("ln is a symlink"), "{err}");
        let err = beneath
            .hard_link(Path::new("ln/victim"), Path::new("alias"))
            .unwrap_err();
        assert!(err.to_string().contains("ln is a symlink"), "{err}");
        let err = beneath
            .hard_link(Path::new("file-ln"), Path::new("alias"))
            .unwrap_err();
        assert!(
            err.to_string().contains("a symlink, not a regular file"),
            "{err}"
        );
        // Replacing the link itself is fine: the outside file is not touched.
        beneath.create_file(Path::new("file-ln"), 0o644).unwrap();
        assert!(!beneath.is_regular_file(Path::new("ln/victim")));
        assert_eq!(
            std::fs::read(outside.path().join("victim")).unwrap(),
            b"keep"
        );
        for bad in ["../x", "/etc/passwd", "a/../../x"] {
            assert!(matches!(
                beneath.create_file(Path::new(bad), 0o644),
                Err(Refusal::Escapes(_))
            ));
        }
    }

    #[test]
    fn link_targets_are_judged_from_the_link_directory() {
        assert!(link_stays_inside(
            Path::new("lib/libpq.so"),
            Path::new("libpq.so.5")
        ));
        assert!(link_stays_inside(Path::new("bin/x"), Path::new("../lib/x")));
        assert!(!link_stays_inside(
            Path::new("bin/x"),
            Path::new("../../etc/passwd")
        ));
        assert!(!link_stays_inside(Path::new("x"), Path::new("/etc/passwd")));
    }
}
