//! The template cluster cache: a first launch whose cluster would be identical to an earlier
//! one copies it instead of running initdb.

use super::locale;
use crate::binaries::Install;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::os::cancel::Cancel;
use crate::os::privilege::RunAs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Written last into a complete template cluster.
pub const TEMPLATE_COMPLETE: &str = ".pgwarden-template-complete";

/// The template cluster cache: `<install dir>/templates/<key>`, one per (PostgreSQL version,
/// user, password, database, encoding, locale). A first launch whose key is cached copies it
/// instead of running initdb (see BENCHMARKS.md for the figures). An ephemeral first launch
/// saves one right away (a CI job's throwaway servers are what repeats); a persistent first
/// launch does not — copying and flushing 40 MB more would cost it 0.1–1 s — but makes one in
/// the background once its server is ready ([`super::template_fill`]), for `reset` + `start`.
///
/// Copies share the template's database system identifier. PostgreSQL only compares it
/// between a primary and its physical standbys (and in WAL archives), which a copy never is to
/// another copy: a standby is made by pg_basebackup, which copies the identifier anyway. So a
/// copy is indistinguishable to a user, as long as no two copies archive WAL to one place.
pub fn template_dir(config: &Config, install: &Install, run_as: &RunAs) -> PathBuf {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [
        install.version.to_string().as_str(),
        config.user.as_str(),
        &hex::encode(Sha256::digest(config.password.expose().as_bytes())),
        config.database.as_str(),
        "UTF8",
        locale(),
        &config.host_auth_method,
        &config.initdb_args.join("\u{1f}"),
        // pg_ident.conf maps this user to pgwarden's administration role.
        &run_as.name,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    config
        .install_dir
        .join("templates")
        .join(&hex::encode(hasher.finalize())[..32])
}

/// Keeps a copy of a freshly initialised cluster (before its marker is written). The copy is
/// flushed to disk before it is published: a template torn by a power cut would be copied into
/// every later cluster with these settings.
pub fn save_template(cluster: &Path, template: &Path, run_as: &RunAs) -> Result<()> {
    let parent = templates_root(template, run_as)?;
    let temp = parent.join(format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    let result = copy_tree(cluster, &temp, None)
        .and_then(|()| std::fs::write(temp.join(TEMPLATE_COMPLETE), b"").io("cannot write", &temp))
        .and_then(|()| super::flush::flush_to_disk(&temp))
        .and_then(|()| publish(&temp, template));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result
}

/// Renames a complete, flushed template into place. Another pgwarden may have published the
/// same template meanwhile (an ephemeral launch beside a background fill): then that one stays
/// and this copy is not needed.
pub fn publish(complete: &Path, template: &Path) -> Result<()> {
    match std::fs::rename(complete, template) {
        Err(_) if template.join(TEMPLATE_COMPLETE).is_file() => {
            let _ = std::fs::remove_dir_all(complete);
            Ok(())
        }
        result => result.io("cannot move", template),
    }
}

/// Creates the directory holding the templates: 0700, or 0711 when the server's user is
/// another one, so that the background fill's initdb (run as that user) can reach its own
/// working directory in it (every template and working directory inside is 0700).
pub fn templates_root<'a>(template: &'a Path, run_as: &RunAs) -> Result<&'a Path> {
    let parent = template.parent().expect("templates dir");
    std::fs::create_dir_all(parent).io("cannot create", parent)?;
    let mode = if run_as.switch { 0o711 } else { 0o700 };
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode))
        .io("cannot set the mode of", parent)?;
    Ok(parent)
}

/// Copies a directory tree (modes, symlinks), skipping the template marker, and gives every
/// entry to `owner` when it is a user pgwarden switches to.
pub fn copy_tree(from: &Path, to: &Path, owner: Option<&RunAs>) -> Result<()> {
    copy_tree_until(from, to, owner, &Cancel::never()).map(|_| ())
}

/// [`copy_tree`], stopping with an error at the next entry once `cancel` is cancelled (a spare
/// made in the background: [`super::spare`]); returns the bytes of the files copied.
pub fn copy_tree_until(
    from: &Path,
    to: &Path,
    owner: Option<&RunAs>,
    cancel: &Cancel,
) -> Result<u64> {
    std::fs::create_dir_all(to).io("cannot create", to)?;
    let mode = std::fs::metadata(from)
        .io("cannot read", from)?
        .permissions();
    std::fs::set_permissions(to, mode).io("cannot set the mode of", to)?;
    chown(to, owner)?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(from).io("cannot read", from)? {
        if cancel.is_cancelled() {
            return Err(Error::Cluster {
                what: format!("cancelled while copying into {}", to.display()),
            });
        }
        let entry = entry.io("cannot read", from)?;
        if entry.file_name() == TEMPLATE_COMPLETE {
            continue;
        }
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().io("cannot read", &source)?;
        if kind.is_dir() {
            bytes += copy_tree_until(&source, &target, owner, cancel)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(&source).io("cannot read", &source)?;
            std::os::unix::fs::symlink(link, &target).io("cannot create", &target)?;
            chown(&target, owner)?;
        } else {
            bytes += std::fs::copy(&source, &target).io("cannot copy to", &target)?;
            chown(&target, owner)?;
        }
    }
    Ok(bytes)
}

pub fn chown(path: &Path, owner: Option<&RunAs>) -> Result<()> {
    if let Some(run_as) = owner.filter(|o| o.switch) {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            Some(run_as.uid),
            Some(run_as.gid),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::Privilege {
            what: format!("cannot give {} to {}: {e}", path.display(), run_as.name),
        })?;
    }
    Ok(())
}
