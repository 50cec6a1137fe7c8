//! Where the configured password came from (remembered by [`crate::instance::remembered`]).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the configured password came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum PasswordSource {
    /// Nothing set it: the seed's `trader`.
    #[default]
    Default,
    /// An environment variable (`POSTGRES_PASSWORD`).
    Env { name: String },
    /// A secret file (`password_file`, `POSTGRES_PASSWORD_FILE`).
    File { path: PathBuf },
    /// The `password` key of a config or project file.
    Key { file: PathBuf },
}
