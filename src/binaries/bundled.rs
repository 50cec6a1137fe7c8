//! The self-contained build: a PostgreSQL archive embedded in the pgwarden binary.
//!
//! Build with `PGWARDEN_BUNDLED_ARCHIVE=/path/to/archive.tar.gz cargo build --release --features
//! bundled`. `build.rs` hashes the file (and checks it against `PGWARDEN_BUNDLED_SHA256` if
//! that is set); nothing is downloaded at build time. At run time the embedded bytes are unpacked
//! like any archive and must hash to the digest recorded at build time.

/// The embedded archive and its SHA-256, or `None` in a build without the `bundled` feature.
#[cfg(feature = "bundled")]
pub fn archive() -> Option<(&'static [u8], &'static str)> {
    static BYTES: &[u8] = include_bytes!(env!("PGWARDEN_BUNDLED_PATH"));
    Some((BYTES, env!("PGWARDEN_BUNDLED_SHA256")))
}

#[cfg(not(feature = "bundled"))]
pub fn archive() -> Option<(&'static [u8], &'static str)> {
    None
}
