//! What one launch of `pgwarden run` decided on top of the configuration, and the effective
//! configuration derived from both.
//!
//! The loaded [`Config`] is what the sources say, and is never patched. A launch adds two
//! things: the port it chose (for `port = 0`) and the instance mode (an `--ephemeral` cluster
//! runs with durability settings only a throwaway cluster may use). [`effective`] is the one
//! function that combines them, called at every start and on every reload, so that a reload
//! re-reading the file keeps the throwaway settings and the chosen port.

use crate::config::Config;

/// The throwaway profile: durability settings only a throwaway cluster may run with, and a
/// small buffer pool (pg_tmp runs its servers with 12MB). The cluster is in memory already
/// (`/dev/shm`), so 128MB of buffers would only hold a second copy of it, and setting them up
/// and tearing them down took ~4 ms of each start and ~0.7 ms of each stop (BENCHMARKS.md,
/// row 12). A `[server]` setting of the same name wins.
pub const EPHEMERAL_SETTINGS: [(&str, &str); 5] = [
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "16MB"),
    // Dynamic shared memory as files in the cluster (`pg_dynshmem/`), removed with it: a killed
    // server's POSIX segments in /dev/shm would stay until a reboot (1 MB and more each).
    ("dynamic_shared_memory_type", "mmap"),
];

/// What this launch chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// The port the server listens on: the configured one, or the free one picked for `0`.
    pub port: u16,
}

/// The configuration the server runs with: `loaded` with the chosen port, and (for an
/// ephemeral instance) the throwaway profile under any `[server]` setting of the same name.
pub fn effective(loaded: &Config, launch: &Launch) -> Config {
    let mut config = loaded.clone();
    config.port = launch.port;
    if loaded.ephemeral {
        for (key, value) in EPHEMERAL_SETTINGS {
            config
                .server
                .entry(key.to_string())
                .or_insert_with(|| value.to_string());
        }
    }
    config
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Layer, Sources};
    use crate::os::paths::DefaultPaths;

    /// A config from flags alone (`--ephemeral`, `--port`), defaults elsewhere: also the reload
    /// tests' (instance::resolve).
    pub(crate) fn loaded(ephemeral: bool, port: u16) -> Config {
        let sources = Sources {
            flags: Layer {
                ephemeral: Some(ephemeral),
                port: Some(port),
                ..Layer::default()
            },
            ..Sources::default()
        };
        let defaults = DefaultPaths {
            config_file: "/nonexistent/pgwarden.toml".into(),
            data_root: "/srv/pg".into(),
        };
        Config::load_with(&sources, &|_| None, &defaults).unwrap()
    }

    #[test]
    fn the_throwaway_profile_and_the_chosen_port_are_applied_every_time() {
        let file = loaded(true, 0);
        let run = effective(&file, &Launch { port: 40000 });
        assert_eq!(run.port, 40000);
        assert_eq!(run.server.get("fsync").map(String::as_str), Some("off"));
        assert_eq!(
            run.server.get("full_page_writes").map(String::as_str),
            Some("off")
        );
        assert_eq!(
            run.server.get("shared_buffers").map(String::as_str),
            Some("16MB")
        );
        assert_eq!(
            run.server
                .get("dynamic_shared_memory_type")
                .map(String::as_str),
            Some("mmap")
        );
        // A reload re-reads the same sources: the same result, and no port "change".
        let reloaded = effective(&loaded(true, 0), &Launch { port: 40000 });
        assert_eq!(reloaded.server, run.server);
        let fixed = |new| crate::instance::resolve::keep_fixed(new, &file).1;
        assert!(fixed(loaded(true, 0)).is_empty());
        assert_eq!(fixed(loaded(true, 5999)), ["port"]);
    }

    #[test]
    fn a_durable_instance_keeps_its_settings() {
        let run = effective(&loaded(false, 5433), &Launch { port: 5433 });
        assert!(!run.server.contains_key("fsync"));
    }
}
