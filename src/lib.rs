//! pgwarden: a native, supervised PostgreSQL 16 server that replaces a `postgres:16` container.
//!
//! # Layout
//! The data flows in one direction, each stage passing one plain value to the next:
//!
//! ```text
//! cli ──▶ config ──▶ binaries ──▶ cluster ──▶ supervisor ──▶ server (the postgres child)
//!         Config     Install      Cluster     state machine   spawn, log, signal, clean up
//! ```
//! - [`config`]: defaults < file < environment < flags, validated into a [`config::Config`].
//! - [`binaries`]: a verified PostgreSQL 16 installation in the cache (download or archive).
//! - [`cluster`]: the data directory, created atomically on first launch.
//! - [`supervisor`]: runs postgres, detects readiness with [`probe`], restarts on crash, stops
//!   on [`signals`].
//!
//! Beside them: [`privilege`] (who the children run as), [`instance`] (one supervisor per data
//! directory), [`preflight`] (checks before anything changes), [`paths`] (default locations),
//! [`status`] (the status file the supervisor keeps), [`logfile`] (the rotated log of `run`),
//! [`conninfo`] (libpq connection strings, for `check`).

pub mod binaries;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod conninfo;
pub mod error;
pub mod image_env;
pub mod init_scripts;
pub mod instance;
pub mod logfile;
pub mod notify;
pub mod paths;
pub mod preflight;
pub mod privilege;
pub mod probe;
pub mod reconcile;
pub mod registry;
pub mod server;
pub mod signals;
pub mod sql_script;
pub mod status;
pub mod supervisor;
pub mod temp_server;
