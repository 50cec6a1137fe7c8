//! The config's `[server]` settings, kept in a file the server includes, so that a reload
//! (SIGHUP) applies them: settings given as `postgres -c` could not change on reload.

use crate::error::{Error, IoContext, Result};
use crate::os::privilege::RunAs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The settings file, included from postgresql.conf.
pub const SETTINGS_FILE: &str = "pgwarden.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'pgwarden.conf'\t# [server] settings from pgwarden's config; rewritten by pgwarden";

/// Writes `[server]` settings to `pgwarden.conf` (owned by the server's user, 0600) and makes
/// sure postgresql.conf includes it. Returns whether the file changed.
pub fn write_server_settings(
    data_dir: &Path,
    settings: &std::collections::BTreeMap<String, String>,
    run_as: &RunAs,
) -> Result<bool> {
    let conf = data_dir.join("postgresql.conf");
    let text = std::fs::read_to_string(&conf).io("cannot read", &conf)?;
    if !text.lines().any(|l| {
        l.trim_start()
            .starts_with("include_if_exists = 'pgwarden.conf'")
    }) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .io("cannot update", &conf)?;
        writeln!(file, "\n{INCLUDE_LINE}").io("cannot update", &conf)?;
    }
    let mut body = String::from(
        "# Written by pgwarden from the [server] table of its config; edits here are overwritten.\n",
    );
    for (key, value) in settings {
        body.push_str(&format!(
            "{key} = '{}'\n",
            value.replace('\\', "\\\\").replace('\'', "''")
        ));
    }
    let path = data_dir.join(SETTINGS_FILE);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(body.as_str()) {
        return Ok(false);
    }
    let temp = data_dir.join(format!(".{SETTINGS_FILE}.tmp"));
    std::fs::write(&temp, &body).io("cannot write", &temp)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .io("cannot set the mode of", &temp)?;
    if run_as.switch {
        nix::unistd::chown(&temp, Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
            Error::GiveTo {
                path: temp.to_path_buf(),
                user: run_as.name.clone(),
                source: e,
            }
        })?;
    }
    std::fs::rename(&temp, &path).io("cannot write", &path)?;
    Ok(true)
}
