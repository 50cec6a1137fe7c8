//! Who the server runs as: part of the instance, like its data directory and its port.
//!
//! Started as root with no `run_as`, pgwarden used to run every cluster as the first default
//! user that exists (`pgwarden`, else `postgres`). A cluster made while only `postgres` existed
//! then refused to start once a `pgwarden` user appeared (installing the .deb creates one):
//! "data directory … is owned by uid 101, but postgres runs as pgwarden". Debian's
//! `pg_ctlcluster` runs a cluster as the owner of its data directory; so does pgwarden now:
//! an existing cluster (one with `PG_VERSION`) runs as its owner unless `run_as` names a user
//! (then that user, and a cluster owned by another is refused, naming both). A new cluster,
//! a throwaway one, a cluster owned by root or by a uid without a user: the defaults.
//!
//! [`choose`] decides from plain values; [`server_user`] looks them up and resolves the choice.

use crate::error::Result;
use crate::os::privilege::RunAs;
use nix::unistd::{Uid, User};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whose user the server runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `run_as` as configured (`None`: the defaults, or the current user when not root).
    Configured(Option<String>),
    /// The owner of the existing cluster's data directory.
    ClusterOwner(String),
}

/// The choice for a pgwarden that runs as root (`as_root`) with `configured` `run_as`, whose
/// data directory holds an existing cluster owned by `cluster_owner` (a user's name; `None`
/// for no cluster, a throwaway one, or an owner that is root or has no user).
pub fn choose(configured: Option<&str>, as_root: bool, cluster_owner: Option<&str>) -> Choice {
    match (configured, as_root, cluster_owner) {
        (None, true, Some(owner)) => Choice::ClusterOwner(owner.to_string()),
        _ => Choice::Configured(configured.map(str::to_string)),
    }
}

/// The user the server of the cluster in `data_dir` runs as, `run_as` being `configured`; with
/// `create`, a missing default user is created (`--create-user`).
pub fn server_user(
    configured: Option<&str>,
    data_dir: &Path,
    ephemeral: bool,
    create: bool,
) -> Result<RunAs> {
    let owner = (!ephemeral).then(|| cluster_owner(data_dir)).flatten();
    let choice = choose(
        configured,
        nix::unistd::geteuid().is_root(),
        owner.as_deref(),
    );
    match choice {
        Choice::ClusterOwner(name) => {
            let run_as = RunAs::resolve(Some(&name))?;
            tracing::debug!(user = %run_as.name, data_dir = %data_dir.display(), "the cluster runs as its data directory's owner");
            Ok(run_as)
        }
        Choice::Configured(name) if create => RunAs::resolve_or_create(name.as_deref()),
        Choice::Configured(name) => RunAs::resolve(name.as_deref()),
    }
}

/// The name of the user owning the cluster in `data_dir`, if there is one (`PG_VERSION` is
/// there) and its owner is an unprivileged user.
fn cluster_owner(data_dir: &Path) -> Option<String> {
    if !data_dir.join("PG_VERSION").is_file() {
        return None;
    }
    let uid = std::fs::metadata(data_dir).ok()?.uid();
    if uid == 0 {
        return None;
    }
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_root_an_existing_cluster_runs_as_its_owner_unless_run_as_says_otherwise() {
        assert_eq!(
            choose(None, true, Some("postgres")),
            Choice::ClusterOwner("postgres".into())
        );
        assert_eq!(
            choose(Some("pgwarden"), true, Some("postgres")),
            Choice::Configured(Some("pgwarden".into()))
        );
    }

    #[test]
    fn a_new_cluster_or_a_normal_user_takes_the_configured_user() {
        assert_eq!(choose(None, true, None), Choice::Configured(None));
        assert_eq!(
            choose(None, false, Some("postgres")),
            Choice::Configured(None)
        );
        assert_eq!(
            choose(Some("me"), false, None),
            Choice::Configured(Some("me".into()))
        );
    }

    #[test]
    fn only_an_initialised_unprivileged_cluster_has_an_owner() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cluster_owner(dir.path()), None, "no PG_VERSION");
        std::fs::write(dir.path().join("PG_VERSION"), "16\n").unwrap();
        let me = nix::unistd::geteuid();
        let expected = if me.is_root() {
            None
        } else {
            User::from_uid(me).unwrap().map(|u| u.name)
        };
        assert_eq!(cluster_owner(dir.path()), expected);
    }
}
