//! For the `bundled` feature only: hash the archive named by `PGWARDEN_BUNDLED_ARCHIVE` and hand
//! its path and digest to the compiler (`include_bytes!` in src/binaries/bundled.rs). Reads a local
//! file; never downloads.

use std::io::Read;

fn main() {
    println!("cargo:rerun-if-env-changed=PGWARDEN_BUNDLED_ARCHIVE");
    println!("cargo:rerun-if-env-changed=PGWARDEN_BUNDLED_SHA256");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_none() {
        return;
    }
    let Some(path) = std::env::var_os("PGWARDEN_BUNDLED_ARCHIVE") else {
        panic!(
            "the `bundled` feature embeds a PostgreSQL archive: set PGWARDEN_BUNDLED_ARCHIVE to \
             a local .tar.gz/.tgz/.txz (theseus, npm or zonky layout)"
        );
    };
    let path = std::path::PathBuf::from(path);
    let path = path
        .canonicalize()
        .unwrap_or_else(|e| panic!("PGWARDEN_BUNDLED_ARCHIVE={}: {e}", path.display()));
    println!("cargo:rerun-if-changed={}", path.display());

    use sha2::Digest;
    let mut file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Ok(expected) = std::env::var("PGWARDEN_BUNDLED_SHA256")
        && !expected.eq_ignore_ascii_case(&digest)
    {
        panic!(
            "checksum mismatch for {}\n  expected sha256: {expected}\n  actual sha256:   {digest}",
            path.display()
        );
    }
    println!("cargo:rustc-env=PGWARDEN_BUNDLED_PATH={}", path.display());
    println!("cargo:rustc-env=PGWARDEN_BUNDLED_SHA256={digest}");
}
