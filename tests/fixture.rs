//! Tests of the shared fixture in `tests/common`; they do not run pgwarden.

mod common;

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::thread;

use common::THESEUS_TOP;

#[test]
fn npm_archive_is_cached_and_large() {
    let path = common::npm_archive();
    let len = path.metadata().expect("npm archive exists").len();
    assert!(
        len > 10 * 1024 * 1024,
        "{} is only {len} bytes",
        path.display()
    );
    assert_eq!(common::npm_archive(), path);
}

#[test]
fn theseus_archive_has_release_layout_and_symlinks() {
    // Concurrent callers get the same, complete file (OnceLock within a
    // process; the flock across processes).
    let paths: HashSet<_> = (0..3)
        .map(|_| thread::spawn(common::theseus_archive))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(paths.len(), 1, "{paths:?}");
    let path = paths.into_iter().next().unwrap();
    assert_eq!(
        path.file_name().unwrap(),
        "postgresql-16.14.0-x86_64-unknown-linux-gnu.tar.gz"
    );

    let file = File::open(&path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut seen_dirs = HashSet::new();
    let (mut postgres, mut libpq) = (false, false);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        assert!(
            path.starts_with(THESEUS_TOP),
            "{} outside the top dir",
            path.display()
        );
        // Directories come before their contents (the theseus extractor
        // creates no parents).
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            assert!(
                seen_dirs.contains(parent),
                "{} before its directory",
                path.display()
            );
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            seen_dirs.insert(path.clone());
        }
        if path == Path::new(THESEUS_TOP).join("bin/postgres") {
            assert!(kind.is_file());
            assert_eq!(
                entry.header().mode().unwrap() & 0o111,
                0o111,
                "bin/postgres not executable"
            );
            postgres = true;
        }
        if path == Path::new(THESEUS_TOP).join("lib/libpq.so.5") {
            assert!(kind.is_symlink(), "lib/libpq.so.5 is {kind:?}");
            assert_eq!(
                entry.link_name().unwrap().unwrap(),
                Path::new("libpq.so.5.16")
            );
            libpq = true;
        }
    }
    assert!(
        postgres && libpq,
        "bin/postgres: {postgres}, lib/libpq.so.5: {libpq}"
    );

    let sidecar = std::fs::read_to_string(path.with_extension("gz.sha256")).unwrap();
    assert!(
        sidecar.ends_with("  postgresql-16.14.0-x86_64-unknown-linux-gnu.tar.gz\n"),
        "{sidecar:?}"
    );
}

#[test]
fn theseus_archive_postgres_runs() {
    let dir = common::test_dir();
    let file = File::open(common::theseus_archive()).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir.path())
        .unwrap();

    // `--version` is allowed as root; it needs the recreated library symlinks.
    let output = Command::new(dir.path().join(THESEUS_TOP).join("bin/postgres"))
        .arg("--version")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.starts_with("postgres (PostgreSQL) 16.14"),
        "{output:?}"
    );
}

#[test]
fn free_port_returns_distinct_bindable_ports() {
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let port = common::free_port();
        assert!((20_000..32_000).contains(&port), "{port}");
        assert!(seen.insert(port), "{port} returned twice: {seen:?}");
        // Right away: another process may take it later (pgwarden has the same race).
        std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind {port}: {e}"));
    }
}

#[test]
fn test_dir_is_traversable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::test_dir();
    let mode = dir.path().metadata().unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let install = common::shared_install_dir();
    assert_eq!(
        install.metadata().unwrap().permissions().mode() & 0o777,
        0o755
    );
}
