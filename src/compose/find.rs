//! Finding the compose project, and reading its files under the right rule.
//!
//! As `docker compose` does: without a FILE, the first of [`NAMES`] in the working directory,
//! else in its parents. A file found that way (and the `.env`, `env_file`s and mounted
//! `postgresql.conf` it leads to) is read through [`Trust::read`]: a compose file another user
//! planted above root's working directory would otherwise choose root's settings, its
//! environment (interpolated into the result) and the data pgwarden takes over. A FILE named on
//! the command line is the user's choice, and so are the files it names.

use crate::config::trust::{Kind, MAX_FOUND_FILE, Trust};
use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The names compose looks for, in its order.
pub const NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// For the trust rule's messages.
pub const FOUND: Kind = Kind {
    what: "compose file",
    otherwise: "or name the file yourself: pgwarden init --from-compose FILE",
};
const FOUND_RELATED: Kind = Kind {
    what: "file of the compose project",
    otherwise: "or name the compose file yourself: pgwarden init --from-compose FILE",
};

/// How the compose file was chosen, which decides how its other files are read.
#[derive(Debug, Clone)]
pub enum Reader {
    /// Named on the command line: read as given (bounded).
    Named,
    /// Found by searching: every file through the trust rule.
    Found(Trust),
}

/// The compose file, its directory (the project directory) and its text.
#[derive(Debug, Clone)]
pub struct ComposeFile {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub text: String,
    pub reader: Reader,
}

/// `FILE`, or the compose file found from `cwd` upwards.
pub fn find(named: Option<&Path>, cwd: &Path) -> Result<ComposeFile> {
    if let Some(file) = named {
        let path = crate::os::paths::absolute(file);
        let text = read_bounded(&path)?.ok_or_else(|| Error::Config {
            problems: vec![format!(
                "{}: no such compose file\n    help: name an existing file, or run from its \
                 directory without FILE to find it as docker compose does",
                path.display()
            )],
        })?;
        return Ok(ComposeFile {
            dir: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
            path,
            text,
            reader: Reader::Named,
        });
    }
    let trust = trust_rule()?;
    for dir in cwd.ancestors() {
        for name in NAMES {
            let path = dir.join(name);
            if let Some(found) = trust.read(&path, FOUND)? {
                return Ok(ComposeFile {
                    path: found.path,
                    dir: dir.to_path_buf(),
                    text: found.text,
                    reader: Reader::Found(trust),
                });
            }
        }
    }
    Err(Error::Config {
        problems: vec![format!(
            "no compose file ({}) in {} or any directory above it\n    help: run from the \
             compose project's directory, or name the file: pgwarden init --from-compose FILE",
            NAMES.join(", "),
            cwd.display()
        )],
    })
}

impl ComposeFile {
    /// Reads a file of the project (`.env`, an `env_file`, a mounted config file) under the
    /// rule the compose file was read by: `None` when it does not exist.
    pub fn read_related(&self, path: &Path) -> Result<Option<String>> {
        match &self.reader {
            Reader::Named => read_bounded(path),
            Reader::Found(trust) => Ok(trust.read(path, FOUND_RELATED)?.map(|found| found.text)),
        }
    }
}

/// The trust rule for the invoking user, with the directories their own config file and the
/// environment opt in.
fn trust_rule() -> Result<Trust> {
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    let config_file = env("PGWARDEN_CONFIG")
        .map(|p| crate::os::paths::absolute(Path::new(&p)))
        .unwrap_or_else(|| crate::os::paths::DefaultPaths::for_current_user().config_file);
    let opted_in = if config_file.is_file() {
        crate::config::Layer::from_file(&config_file)?
            .trusted_dirs
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut problems = Vec::new();
    let trust = Trust::new(&env, &opted_in, &config_file, &mut problems);
    if problems.is_empty() {
        Ok(trust)
    } else {
        Err(Error::Config { problems })
    }
}

/// A file the user named: at most [`MAX_FOUND_FILE`] bytes of UTF-8; `None` when missing.
fn read_bounded(path: &Path) -> Result<Option<String>> {
    let io = |source| Error::ConfigRead {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FOUND_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FOUND_FILE {
        return Err(Error::Config {
            problems: vec![format!(
                "{}: larger than {} KiB, which no compose project's file is",
                path.display(),
                MAX_FOUND_FILE / 1024
            )],
        });
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| Error::Config {
            problems: vec![format!("{}: not UTF-8 text", path.display())],
        })
}
