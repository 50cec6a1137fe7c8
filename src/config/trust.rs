//! The trust rule for files pgwarden *finds* rather than is given, and the one way to read them.
//!
//! pgwarden often runs as root (CI runners, the system service), and some files it reads are
//! found by looking around the working directory: the project file `pgwarden.toml` in the
//! nearest parent ([`super::project`]), npm's `.npmrc` beside the nearest `package.json` and the
//! user's and the global npmrc (`super::npmrc`). A user who can write any directory above
//! root's working directory (`/tmp/x` while root works in `/tmp/x/y`) could otherwise choose
//! root's settings: which program runs as `postgres`, where the cluster and its backups go,
//! which registry receives root's token (issue 23 tried each of these). The compose file that
//! `init --from-compose` finds, with its `.env` and `env_file`s (`crate::compose::find`), and
//! pip's `pip.conf` and the `.netrc` (`super::pip_conf`) are read here too.
//!
//! The rule, as git applies it to a repository (`safe.directory`): a found file, and every
//! directory above it — each directory its path goes through, symlinks followed step by step
//! — must be owned by the invoking (effective) user or root and writable by no one else (no
//! group or other write bit). One exception: a root-owned directory with the sticky bit (like
//! `/tmp`), whose entries other users cannot rename or remove, so what is ours in it stays
//! ours. Anything else is refused with an error naming the file or the directory, its owner
//! and how to opt in: never skipped silently, since a skipped file changes what pgwarden does
//! just as surely.
//!
//! Opting in names directories the user trusts whatever their owner: `PGWARDEN_TRUSTED_DIRS`
//! (`:`-separated) or `trusted_dirs` in the user's own config file — never a found file, which is
//! what the opt-in decides about. A file named on the command line (`-f`, `--project-dir`) or
//! by the environment (`NPM_CONFIG_USERCONFIG`) is the user's choice and is not judged here.
//!
//! Everything a found file can do happens after [`Trust::read`] passed it: its `${VAR}`
//! substitution (npmrc), its registry, its paths.

use crate::error::{Error, Result};
pub use crate::error::{FoundKind as Kind, Refusal, RefusalProblem as Problem};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// The environment variable listing trusted directories (`:`-separated, absolute).
pub const TRUSTED_DIRS_ENV: &str = "PGWARDEN_TRUSTED_DIRS";
/// The config key listing trusted directories, in the user's own config file only.
pub const TRUSTED_DIRS_KEY: &str = "trusted_dirs";
/// A found file larger than this is not a configuration file.
pub const MAX_FOUND_FILE: u64 = 1 << 20;
/// Symlinks followed while resolving one path (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// Who may have written the files pgwarden finds: the invoking user, root, and whoever owns a
/// directory the user opted in.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The effective user pgwarden runs as.
    me: u32,
    /// Directories trusted whatever their owner, resolved (symlinks followed).
    opted_in: Vec<PathBuf>,
    /// The user's config file, where the help line says `trusted_dirs` goes.
    config_file: PathBuf,
}

/// A found file that passed the rule, with its text.
#[derive(Debug, Clone)]
pub struct Found {
    /// The file as found.
    pub path: PathBuf,
    /// Its owner's uid.
    pub owner: u32,
    /// Set when the file is read only because the user opted this directory in.
    pub opted_in: Option<PathBuf>,
    pub text: String,
}

/// The words of a refusal (owners named) and its help line: how to opt in, or do without.
fn refusal_text(refusal: &Refusal, me: u32, config_file: &Path) -> (String, String) {
    let where_ = if refusal.at == refusal.file {
        "it".to_string()
    } else {
        format!("the directory {} above it", refusal.at.display())
    };
    let because = match &refusal.problem {
        Problem::OwnedBy { uid } => format!(
            "{where_} is owned by {}, and pgwarden runs as {}",
            owner_name(*uid),
            owner_name(me)
        ),
        Problem::WritableByOthers { uid, mode } => format!(
            "{where_} is writable by users other than its owner {} (mode {:o})",
            owner_name(*uid),
            mode & 0o7777
        ),
        Problem::NotAFile => format!("{where_} is not a regular file"),
    };
    let help = format!(
        "pgwarden reads a file it finds (rather than is given) only when the file and \
         every directory above it are owned by you or root and writable by no one else, as \
         git refuses a repository of another owner. If you trust {}, add it to {} \
         (':'-separated) or to `{}` in your config file {}; {}",
        refusal.dir.display(),
        TRUSTED_DIRS_ENV,
        TRUSTED_DIRS_KEY,
        config_file.display(),
        refusal.kind.otherwise,
    );
    (because, help)
}

impl Trust {
    /// The rule for the effective user, with the directories it opted in: `env`'s
    /// [`TRUSTED_DIRS_ENV`] and `from_config` (the user's config file's `trusted_dirs`, relative
    /// entries already taken from that file's directory). `config_file` is named in the help.
    pub fn new(
        env: &dyn Fn(&str) -> Option<String>,
        from_config: &[PathBuf],
        config_file: &Path,
        problems: &mut Vec<String>,
    ) -> Trust {
        let mut dirs: Vec<PathBuf> = from_config.to_vec();
        if let Some(list) = env(TRUSTED_DIRS_ENV) {
            for entry in list.split(':').filter(|e| !e.is_empty()) {
                let dir = PathBuf::from(entry);
                if dir.is_relative() {
                    problems.push(format!(
                        "{TRUSTED_DIRS_ENV}: {entry:?} is not an absolute path\n    \
                         help: list absolute directories, separated by ':'"
                    ));
                    continue;
                }
                dirs.push(dir);
            }
        }
        Trust {
            me: nix::unistd::geteuid().as_raw(),
            // A directory that does not exist trusts nothing; one behind a symlink is trusted
            // where it really is, since that is where the files are judged.
            opted_in: dirs.iter().filter_map(|d| d.canonicalize().ok()).collect(),
            config_file: config_file.to_path_buf(),
        }
    }

    /// The rule as `uid` would apply it, opting in `dirs` (tests).
    pub fn for_user(uid: u32, dirs: &[PathBuf]) -> Trust {
        Trust {
            me: uid,
            opted_in: dirs.iter().filter_map(|d| d.canonicalize().ok()).collect(),
            config_file: PathBuf::from("config.toml"),
        }
    }

    /// The effective user this rule trusts (besides root).
    pub fn me(&self) -> u32 {
        self.me
    }

    /// Reads the found file `path` if it passes the rule: `None` when there is no such file,
    /// an error naming the file, the owner and the opt-in when it does not pass.
    pub fn read(&self, path: &Path, kind: Kind) -> Result<Option<Found>> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let Some(judged) = self.judge(&path, kind)? else {
            return Ok(None);
        };
        let text = read_checked(&judged)?;
        Ok(Some(Found {
            path,
            owner: judged.meta.uid(),
            opted_in: judged.opted_in,
            text,
        }))
    }

    /// Applies the rule to `path` (absolute) without reading it: `None` when it does not exist.
    fn judge(&self, path: &Path, kind: Kind) -> Result<Option<Judged>> {
        let mut looked_in = Vec::new();
        let real = match resolve(path, &mut looked_in) {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::ConfigRead {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let meta = std::fs::symlink_metadata(&real).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let refuse = |at: &Path, problem: Problem| {
            let mut refusal = Refusal {
                kind,
                file: path.to_path_buf(),
                at: if at == real {
                    path.to_path_buf()
                } else {
                    at.to_path_buf()
                },
                problem,
                dir: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
                because: String::new(),
                help: String::new(),
            };
            (refusal.because, refusal.help) = refusal_text(&refusal, self.me, &self.config_file);
            Error::Untrusted(Box::new(refusal))
        };
        if !meta.is_file() {
            return Err(refuse(&real, Problem::NotAFile));
        }
        if let Some(dir) = self.opted_in.iter().find(|d| real.starts_with(d)) {
            return Ok(Some(Judged {
                real,
                meta,
                opted_in: Some(dir.clone()),
            }));
        }
        if let Some(problem) = self.problem(&meta, false) {
            return Err(refuse(&real, problem));
        }
        for dir in &looked_in {
            let dir_meta = std::fs::metadata(dir).map_err(|source| Error::ConfigRead {
                path: dir.clone(),
                source,
            })?;
            if let Some(problem) = self.problem(&dir_meta, true) {
                return Err(refuse(dir, problem));
            }
        }
        Ok(Some(Judged {
            real,
            meta,
            opted_in: None,
        }))
    }

    /// What is wrong with a file's or a directory's owner and mode under the rule, if anything.
    fn problem(&self, meta: &std::fs::Metadata, is_dir: bool) -> Option<Problem> {
        let (uid, mode) = (meta.uid(), meta.mode());
        if uid != self.me && uid != 0 {
            return Some(Problem::OwnedBy { uid });
        }
        // A root-owned sticky directory (/tmp): others may add entries but not rename or
        // remove ours, so the path to a file of ours through it cannot be changed by them.
        let sticky_of_root = is_dir && uid == 0 && mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky_of_root {
            return Some(Problem::WritableByOthers { uid, mode });
        }
        None
    }
}

/// A file that passed the rule: where it really is and what it was when judged.
struct Judged {
    real: PathBuf,
    meta: std::fs::Metadata,
    opted_in: Option<PathBuf>,
}

/// Reads the judged file, making sure it is still the file judged (no symlink followed at the
/// last step, same device and inode), at most [`MAX_FOUND_FILE`] bytes of UTF-8.
fn read_checked(judged: &Judged) -> Result<String> {
    let io = |source| Error::ConfigRead {
        path: judged.real.clone(),
        source,
    };
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&judged.real)
        .map_err(io)?;
    let now = file.metadata().map_err(io)?;
    if (now.dev(), now.ino()) != (judged.meta.dev(), judged.meta.ino()) {
        return Err(io(std::io::Error::other(
            "the file was replaced while pgwarden read it",
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FOUND_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FOUND_FILE {
        return Err(Error::Config {
            problems: vec![format!(
                "{}: larger than {} KiB, which no configuration file is",
                judged.real.display(),
                MAX_FOUND_FILE / 1024
            )],
        });
    }
    String::from_utf8(bytes).map_err(|_| Error::Config {
        problems: vec![format!("{}: not UTF-8 text", judged.real.display())],
    })
}

/// Resolves the absolute `path` one component at a time as the kernel does, following each
/// symlink, and records every directory a name was looked up in (so every directory whose
/// owner decided what `path` names, those a symlink led through included). Returns the real
/// path of what `path` names.
fn resolve(path: &Path, looked_in: &mut Vec<PathBuf>) -> std::io::Result<PathBuf> {
    let mut pending: Vec<OsString> = Vec::new();
    push_components(path, &mut pending);
    let mut current = PathBuf::from("/");
    let mut followed = 0;
    while let Some(name) = pending.pop() {
        match name.to_str() {
            Some("/") => current = PathBuf::from("/"),
            Some(".") => {}
            Some("..") => {
                current.pop();
            }
            _ => {
                if !looked_in.contains(&current) {
                    looked_in.push(current.clone());
                }
                let next = current.join(&name);
                let meta = std::fs::symlink_metadata(&next)?;
                if meta.file_type().is_symlink() {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(std::io::Error::other(format!(
                            "more than {MAX_SYMLINKS} symlinks"
                        )));
                    }
                    push_components(&std::fs::read_link(&next)?, &mut pending);
                } else {
                    current = next;
                }
            }
        }
    }
    Ok(current)
}

/// Pushes `path`'s components on the stack so that the first one is popped first (`/` for an
/// absolute path, which restarts from the root).
fn push_components(path: &Path, pending: &mut Vec<OsString>) {
    let parts: Vec<OsString> = path
        .components()
        .map(|c| match c {
            Component::RootDir | Component::Prefix(_) => OsString::from("/"),
            Component::CurDir => OsString::from("."),
            Component::ParentDir => OsString::from(".."),
            Component::Normal(name) => name.to_os_string(),
        })
        .collect();
    pending.extend(parts.into_iter().rev());
}

/// `name (uid N)` of a user id, or `uid N` when no user has it.
pub fn owner_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KIND: Kind = Kind {
        what: "test file",
        otherwise: "or do without it",
    };

    /// A uid no account has.
    const STRANGER: u32 = 4_242_424;

    /// Makes `path` another user's and returns the rule of the user running the test: as root
    /// (sessions and CI) the file is given to [`STRANGER`]; otherwise the test's own files
    /// already belong to someone the rule of [`STRANGER`] does not trust, so that is the rule.
    fn another_users(path: &Path) -> Trust {
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::lchown(path, Some(STRANGER), None).unwrap();
            Trust::for_user(0, &[])
        } else {
            Trust::for_user(STRANGER, &[])
        }
    }

    fn me() -> Trust {
        Trust::for_user(nix::unistd::geteuid().as_raw(), &[])
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A private directory (tempfile's are 0700, under the root-owned sticky /tmp).
    fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        dir
    }

    fn refusal(result: Result<Option<Found>>) -> Refusal {
        match result {
            Err(Error::Untrusted(refusal)) => *refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_file_of_mine_in_my_directories_is_read_and_a_missing_one_is_none() {
        let base = base();
        let file = base.path().join("pgwarden.toml");
        assert!(me().read(&file, KIND).unwrap().is_none());
        std::fs::write(&file, "port = 1\n").unwrap();
        set_mode(&file, 0o644);
        let found = me().read(&file, KIND).unwrap().unwrap();
        assert_eq!(found.text, "port = 1\n");
        assert_eq!(found.owner, nix::unistd::geteuid().as_raw());
        assert_eq!(found.opted_in, None);
    }

    #[test]
    fn a_file_of_another_user_is_refused_naming_it_and_its_owner() {
        let base = base();
        let file = base.path().join("pgwarden.toml");
        std::fs::write(&file, "SECRET-CONTENT").unwrap();
        let trust = another_users(&file);
        let refusal = refusal(trust.read(&file, KIND));
        assert_eq!(refusal.at, file);
        let owner = std::fs::metadata(&file).unwrap().uid();
        assert_eq!(refusal.problem, Problem::OwnedBy { uid: owner });
        let text = refusal.to_string();
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(text.contains(&format!("uid {owner}")), "{text}");
        assert!(text.contains(TRUSTED_DIRS_ENV), "{text}");
        assert!(text.contains("help:"), "{text}");
        assert!(!text.contains("SECRET-CONTENT"), "{text}");
    }

    #[test]
    fn a_file_others_can_write_is_refused() {
        let base = base();
        let file = base.path().join(".npmrc");
        std::fs::write(&file, "registry=http://x/\n").unwrap();
        set_mode(&file, 0o664);
        let refusal = refusal(me().read(&file, KIND));
        assert!(
            matches!(refusal.problem, Problem::WritableByOthers { .. }),
            "{refusal}"
        );
        assert!(refusal.to_string().contains("mode 664"), "{refusal}");
    }

    #[test]
    fn a_group_writable_directory_above_is_refused_naming_the_directory() {
        let base = base();
        let shared = base.path().join("shared");
        let deep = shared.join("project");
        std::fs::create_dir_all(&deep).unwrap();
        let file = deep.join("pgwarden.toml");
        std::fs::write(&file, "").unwrap();
        set_mode(&file, 0o644);
        set_mode(&deep, 0o755);
        set_mode(&shared, 0o775);
        let refusal = refusal(me().read(&file, KIND));
        assert_eq!(refusal.at, shared);
        assert!(
            matches!(refusal.problem, Problem::WritableByOthers { .. }),
            "{refusal}"
        );
        let text = refusal.to_string();
        assert!(
            text.contains(&format!("the directory {} above it", shared.display())),
            "{text}"
        );
        // The sticky bit makes a world-writable directory safe above a file only when root
        // owns it (as /tmp): a directory of another owner could be changed by that owner.
        set_mode(&shared, 0o1777);
        if nix::unistd::geteuid().is_root() {
            assert!(me().read(&file, KIND).unwrap().is_some());
        } else {
            assert_eq!(refusal_of(me().read(&file, KIND)), shared);
        }
        // ...and without the bit a world-writable directory is refused, whoever owns it.
        set_mode(&shared, 0o777);
        assert_eq!(refusal_of(me().read(&file, KIND)), shared);
        set_mode(&shared, 0o755);
        assert!(me().read(&file, KIND).unwrap().is_some());
    }

    fn refusal_of(result: Result<Option<Found>>) -> PathBuf {
        refusal(result).at
    }

    #[test]
    fn a_root_owned_sticky_directory_like_tmp_is_allowed_above() {
        // Every test file lives under the system's temporary directory: /tmp, root's, 1777.
        let tmp = std::env::temp_dir().canonicalize().unwrap();
        let meta = std::fs::metadata(&tmp).unwrap();
        if meta.uid() != 0 || meta.mode() & 0o1777 != 0o1777 {
            panic!(
                "this test needs the temporary directory {} to be root's with mode 1777, as /tmp is",
                tmp.display()
            );
        }
        let base = base();
        let file = base.path().join("pgwarden.toml");
        std::fs::write(&file, "").unwrap();
        set_mode(&file, 0o644);
        assert!(me().read(&file, KIND).unwrap().is_some());
        // But a sticky file is no exception: only directories.
        let problem = Trust::for_user(0, &[]).problem(&meta, false);
        assert!(
            matches!(problem, Some(Problem::WritableByOthers { .. })),
            "{problem:?}"
        );
    }

    #[test]
    fn a_symlink_to_another_users_file_is_judged_by_the_file() {
        let base = base();
        let elsewhere = base.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        set_mode(&elsewhere, 0o755);
        let target = elsewhere.join("theirs.toml");
        std::fs::write(&target, "").unwrap();
        set_mode(&target, 0o644);
        let project = base.path().join("project");
        std::fs::create_dir(&project).unwrap();
        set_mode(&project, 0o755);
        let link = project.join("pgwarden.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(me().read(&link, KIND).unwrap().is_some());
        let trust = another_users(&target);
        let refusal = refusal(trust.read(&link, KIND));
        assert_eq!(refusal.file, link);
        assert_eq!(refusal.at, link);
        assert!(
            matches!(refusal.problem, Problem::OwnedBy { .. }),
            "{refusal}"
        );
    }

    #[test]
    fn a_symlink_through_a_directory_others_can_write_is_refused() {
        let base = base();
        let open = base.path().join("open");
        std::fs::create_dir(&open).unwrap();
        set_mode(&open, 0o777);
        let real = base.path().join("real.toml");
        std::fs::write(&real, "").unwrap();
        set_mode(&real, 0o644);
        // open/hop -> ../real.toml: the link is in a directory anyone could have changed.
        std::os::unix::fs::symlink("../real.toml", open.join("hop")).unwrap();
        let project = base.path().join("project");
        std::fs::create_dir(&project).unwrap();
        set_mode(&project, 0o755);
        let link = project.join("pgwarden.toml");
        std::os::unix::fs::symlink(open.join("hop"), &link).unwrap();
        assert_eq!(refusal_of(me().read(&link, KIND)), open);
    }

    #[test]
    fn an_opted_in_directory_is_read_whatever_its_owner_and_only_it() {
        let base = base();
        let theirs = base.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        let file = theirs.join("pgwarden.toml");
        std::fs::write(&file, "port = 2\n").unwrap();
        set_mode(&theirs, 0o777);
        let mut trust = another_users(&file);
        assert!(trust.read(&file, KIND).is_err());
        trust.opted_in = vec![theirs.canonicalize().unwrap()];
        let found = trust.read(&file, KIND).unwrap().unwrap();
        assert_eq!(found.text, "port = 2\n");
        assert_eq!(found.opted_in, Some(theirs.canonicalize().unwrap()));
        // A sibling whose name starts the same is not inside it.
        let sibling = base.path().join("theirs2");
        std::fs::create_dir(&sibling).unwrap();
        std::fs::write(sibling.join("pgwarden.toml"), "").unwrap();
        set_mode(&sibling, 0o777);
        assert!(trust.read(&sibling.join("pgwarden.toml"), KIND).is_err());
    }

    #[test]
    fn the_opt_in_comes_from_the_environment_and_the_users_config_absolute_only() {
        let base = base();
        let a = base.path().join("a");
        let b = base.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let list = format!("{}::relative/dir", a.display());
        let env = |key: &str| (key == TRUSTED_DIRS_ENV).then(|| list.clone());
        let mut problems = Vec::new();
        let trust = Trust::new(
            &env,
            std::slice::from_ref(&b),
            Path::new("/c.toml"),
            &mut problems,
        );
        assert_eq!(
            trust.opted_in,
            vec![b.canonicalize().unwrap(), a.canonicalize().unwrap()]
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("relative/dir"), "{problems:?}");
    }

    #[test]
    fn a_directory_found_in_place_of_a_file_is_refused() {
        let base = base();
        let dir = base.path().join("pgwarden.toml");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(refusal(me().read(&dir, KIND)).problem, Problem::NotAFile);
    }
}
