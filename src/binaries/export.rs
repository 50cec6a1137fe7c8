//! `pgwarden export-archive FILE`: an installation written back out as a theseus-layout
//! archive (`postgresql-<version>-<target>/{bin,lib,share,include}`) with a sha256sum-style
//! `FILE.sha256`, to carry to a machine without network access and install with
//! `--archive FILE --sha256 $(cut -d' ' -f1 FILE.sha256)`.
//!
//! The whole toolset goes: every program of `bin/` (the client tools — psql, pg_dump,
//! pg_restore, pgbench, … — of an installation that has them), the libraries, `share/` with the
//! extensions, and `include/`. Symlinks stay symlinks. Both files are written to temporary siblings and renamed into place,
//! the archive first, so a reader never sees a half-written one.

use super::{Install, asset_name};
use crate::error::{IoContext, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// A writer that hashes everything written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `install` to `file` and `file.sha256`; returns the archive's SHA-256.
pub fn export(install: &Install, file: &Path) -> Result<String> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| asset_name(&install.version));
    let top = asset_name(&install.version)
        .trim_end_matches(".tar.gz")
        .to_string();

    let staged = tempfile::Builder::new()
        .prefix(".pgwarden-export-")
        .tempfile_in(parent)
        .io("cannot create a temporary file in", parent)?;
    let sha256 = {
        let writer = HashingWriter {
            inner: std::io::BufWriter::new(staged.as_file()),
            hasher: Sha256::new(),
        };
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            writer,
            flate2::Compression::default(),
        ));
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Deterministic);
        for sub in ["bin", "lib", "share", "include"] {
            let dir = install.dir.join(sub);
            if dir.is_dir() {
                tar.append_dir_all(Path::new(&top).join(sub), &dir)
                    .io("cannot add to the archive:", &dir)?;
            }
        }
        let gz = tar.into_inner().io("cannot write", file)?;
        let mut writer = gz.finish().io("cannot write", file)?;
        writer.flush().io("cannot write", file)?;
        hex::encode(writer.hasher.finalize())
    };
    // tempfile creates 0600; an archive to carry elsewhere is for everyone to read.
    use std::os::unix::fs::PermissionsExt;
    let readable = std::fs::Permissions::from_mode(0o644);
    staged
        .as_file()
        .set_permissions(readable.clone())
        .io("cannot set the mode of", file)?;
    staged.as_file().sync_all().io("cannot write", file)?;
    staged
        .persist(file)
        .map_err(|e| e.error)
        .io("cannot write", file)?;

    let sidecar = Path::new(&format!("{}.sha256", file.display())).to_path_buf();
    let mut side = tempfile::Builder::new()
        .prefix(".pgwarden-export-")
        .tempfile_in(parent)
        .io("cannot create a temporary file in", parent)?;
    writeln!(side, "{sha256}  {name}").io("cannot write", &sidecar)?;
    side.as_file()
        .set_permissions(readable)
        .io("cannot set the mode of", &sidecar)?;
    side.persist(&sidecar)
        .map_err(|e| e.error)
        .io("cannot write", &sidecar)?;
    Ok(sha256)
}
