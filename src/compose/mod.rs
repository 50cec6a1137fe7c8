//! `pgwarden init --from-compose`: a docker compose project's `postgres:16` service becomes
//! `pgwarden.toml`.
//!
//! One file per step: [`find`] the compose file (named, or searched for as compose does and
//! then read under the trust rule), [`parse`] its YAML into a bounded tree, [`interpolate`] its
//! `${VAR}`s from the environment and the project's `.env`, [`map`] the service into keys with
//! their reasons, [`write`] the file atomically without ever replacing one. The copy of the
//! container's data is not done here: the `data_from` key written here asks the first `start`
//! for it.

pub mod find;
pub mod interpolate;
pub mod map;
pub mod parse;
pub mod write;

#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What `init --from-compose` did: the file written and what the plan says.
pub struct Written {
    pub path: PathBuf,
    pub plan: map::Plan,
}

/// Finds the compose project (`file`, or searched from `cwd`), maps its postgres service
/// (`service`, or the only one), writes `pgwarden.toml` beside the compose file.
pub fn init(
    file: Option<&Path>,
    service: Option<&str>,
    cwd: &Path,
    env: interpolate::Lookup,
) -> Result<Written> {
    let compose = find::find(file, cwd)?;
    let target = write::target(&compose.dir);
    write::refuse_existing(&target)?;
    let plan = plan(&compose, service, env)?;
    write::write(&target, &write::render(&plan))?;
    Ok(Written { path: target, plan })
}

/// Reads and maps the compose file: every problem at once, or the plan.
pub fn plan(
    compose: &find::ComposeFile,
    service: Option<&str>,
    env: interpolate::Lookup,
) -> Result<map::Plan> {
    let at = |problem: String| Error::Config {
        problems: vec![format!(
            "{}: {problem}\n    help: docker compose would refuse it too; fix the file, then run this again",
            compose.path.display()
        )],
    };
    let root = parse::parse(&compose.text).map_err(at)?;
    let dotenv_path = compose.dir.join(".env");
    let dotenv = match compose.read_related(&dotenv_path)? {
        Some(text) => interpolate::dotenv(&text, env, &mut Vec::new())
            .map_err(|e| at(format!("{}: {e}", dotenv_path.display())))?,
        None => Vec::new(),
    };
    let project = map::Project {
        file: compose,
        root,
        dotenv,
        env,
    };
    let mut problems = Vec::new();
    let chosen = map::choose(&project, service, &mut problems);
    let plan = match chosen {
        Some((name, _)) if problems.is_empty() => map::plan(&project, &name, &mut problems),
        _ => map::Plan::default(),
    };
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(Error::Config { problems })
    }
}
