//! PostgreSQL's own formats and protocols, without policy: leaves that import nothing from
//! the rest of pgwarden.
//!
//! - [`connection`]: the one `postgres://` URL builder.
//! - [`control_file`]: `global/pg_control`: written by this architecture and build? shut down cleanly?
//! - [`conninfo`]: libpq connection strings, for `check`.
//! - [`probe`]: pg_isready over the wire protocol.
//! - [`sql_script`]: an init script split into statements.
//! - [`initdb_args`]: `initdb_args` read as initdb reads them.
//! - [`verifier`]: SCRAM verifiers, to check a password without sending it.
//! - [`redact`]: passwords out of forwarded server lines.

pub mod connection;
pub mod conninfo;
pub mod control_file;
pub mod initdb_args;
pub mod probe;
pub mod redact;
pub mod sql_script;
pub mod verifier;
