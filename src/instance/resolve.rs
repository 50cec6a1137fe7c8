//! Which instance a command addresses, with which settings: decided once, here.
//!
//! [`resolve`] takes the [`Sources`] (the command line's flags, its config file and project
//! choice) and layers defaults < user config < project file < remembered flags < environment
//! < flags, loads and validates them, and adopts the data directory the instance's name is
//! registered with. The [`Resolved`] value it returns is what every command works with and
//! nothing changes afterwards: `run` [`Resolved::claim`]s it (state directory, instance lock,
//! name, throwaway root); the commands that only read (`status`, `url`, `check`, `exec`, …)
//! [`Resolved::observe`] it. A SIGHUP goes through the same loading ([`reload`]), and
//! [`FIXED_ON_RELOAD`] is the one table of the settings a reload cannot change.
//!
//! Before this stage, "which instance" was decided in three places and the config patched
//! after validation in four (issue 24): a data dir rewritten by `run` only, a second `Config`
//! built for the launch, five fields patched by a reload.

use crate::config::{Config, Layer, Loaded, Sources};
use crate::error::Result;
use crate::instance::remembered::Remembered;
use crate::instance::{lock, private_dir, registry, remembered};
use crate::os::paths;
use std::path::{Path, PathBuf};

/// An instance decided: the sources it was loaded from (with its remembered flags), its
/// validated configuration (the registered data directory adopted) and its state directory.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// What was loaded, the remembered layer included: a reload loads these again.
    pub sources: Sources,
    pub config: Config,
    /// Where the instance's lock, status, remembered settings and logs live, as the registry
    /// finds them (`run` keeps its data directory's own: [`Claim::state_dir`]).
    pub state_dir: PathBuf,
}

/// Resolves the instance `sources` address (see the module docs). The files and the
/// environment are read once ([`Loaded`]); the layers are validated a second time only when
/// the instance has remembered flags, which are known once its state directory is.
pub fn resolve(sources: Sources) -> Result<Resolved> {
    let loaded = Loaded::read(&sources)?;
    let first = loaded.config(&sources.remembered)?;
    let state_dir = registry::locate(&first)?;
    let remembered = remembered::read(&state_dir);
    let (sources, mut config) = match remembered_flags(&first, remembered.as_ref()) {
        Some(flags) => {
            let sources = Sources {
                remembered: flags,
                ..sources
            };
            let config = loaded.config(&sources.remembered)?;
            (sources, config)
        }
        None => (sources, first),
    };
    adopt_registered_data_dir(&mut config, &state_dir, remembered);
    Ok(Resolved {
        sources,
        config,
        state_dir,
    })
}

/// The flags the instance was last started with ([`remembered::Flags`]) as a layer, below the
/// environment and this command line (`start --port 5821 --http-address …`, `stop`, `start`
/// comes back on 5821 with its HTTP endpoint). A throwaway instance remembers nothing. They
/// never name the instance (no name, data directory, config file), so the state directory
/// found without them is the instance's.
fn remembered_flags(config: &Config, remembered: Option<&Remembered>) -> Option<Layer> {
    let r = remembered.filter(|r| !config.ephemeral && !r.ephemeral)?;
    Some(r.flags.layer())
}

/// Sets `config.data_dir` to the data directory the instance in `state_dir` was started with
/// (`remembered`), when the command line named no data directory and that one is consistent
/// with its state directory.
fn adopt_registered_data_dir(
    config: &mut Config,
    state_dir: &Path,
    remembered: Option<Remembered>,
) {
    if !config.data_dir_explicit
        && !config.ephemeral
        && let Some(r) = remembered
        && paths::state_dir(&r.data_dir) == state_dir
    {
        config.data_dir = r.data_dir;
    }
}

impl Resolved {
    /// For the commands that only read: what is known of the instance's supervisor.
    pub fn observe(self) -> crate::instance::observe::Instance {
        crate::instance::observe::Instance::at(self.config, self.state_dir)
    }

    /// For `run`: makes the state directory private, takes the instance lock (one supervisor
    /// per data directory), then the name (refused while it runs with another data directory),
    /// and for a throwaway instance a guard that removes its root on every way out.
    pub fn claim(&self) -> Result<Claim> {
        let state_dir = paths::state_dir(&self.config.data_dir);
        private_dir::prepare_state_dir(&self.config)?;
        let lock = lock::InstanceLock::acquire(&state_dir, &self.config.data_dir)?;
        let registration = registry::register(&self.config, &state_dir)?;
        // Only once the lock is ours; dropped before the lock is released.
        let throwaway = self
            .config
            .ephemeral
            .then(|| Throwaway(paths::ephemeral_root(&self.config.name)));
        Ok(Claim {
            state_dir,
            throwaway,
            _registration: registration,
            _lock: lock,
        })
    }
}

/// What `run` holds while it supervises the instance; released on drop, in field order.
#[derive(Debug)]
pub struct Claim {
    /// The state directory of the data directory `run` supervises.
    pub state_dir: PathBuf,
    /// Removes a throwaway cluster first, while the lock is still held.
    throwaway: Option<Throwaway>,
    _registration: registry::Registration,
    _lock: lock::InstanceLock,
}

impl Claim {
    /// Whether this is a throwaway instance, whose root goes with the claim.
    pub fn is_throwaway(&self) -> bool {
        self.throwaway.is_some()
    }
}

/// The directory of a throwaway cluster, removed on drop.
#[derive(Debug)]
struct Throwaway(PathBuf);

impl Drop for Throwaway {
    /// Moves the root out of its name and leaves its removal to a detached sweeper (a
    /// ~1000-file cluster took 9 ms to remove from `/dev/shm`, all of it on the way out of
    /// `stop` and `exec --ephemeral`); removes it here when it cannot be moved or the sweeper
    /// cannot start. What a killed sweeper leaves, the next ephemeral launch sweeps.
    fn drop(&mut self) {
        let result = match private_dir::discard_throwaway(&self.0) {
            Ok(discarded) => {
                if crate::instance::abandoned::sweep_in_background() {
                    Ok(())
                } else {
                    private_dir::remove_throwaway(&discarded)
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e),
            Err(_) => private_dir::remove_throwaway(&self.0),
        };
        if let Err(e) = result
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), "cannot remove the throwaway cluster: {e}");
        }
    }
}

/// Restores the running value of one setting in `new`; whether the reload asked to change it.
type Keep = fn(new: &mut Config, running: &Config) -> bool;

/// The settings a reload cannot change (the server keeps them until pgwarden is restarted),
/// named as the config names them.
pub const FIXED_ON_RELOAD: [(&str, Keep); 4] = [
    ("listen_address", |new, running| {
        keep(&mut new.listen_address, &running.listen_address)
    }),
    ("port", |new, running| keep(&mut new.port, &running.port)),
    ("data_dir", |new, running| {
        keep(&mut new.data_dir, &running.data_dir)
    }),
    ("user/password/database", |new, running| {
        keep(&mut new.user, &running.user)
            | keep(&mut new.password, &running.password)
            | keep(&mut new.database, &running.database)
    }),
];

fn keep<T: PartialEq + Clone>(new: &mut T, running: &T) -> bool {
    let changed = new != running;
    if changed {
        *new = running.clone();
    }
    changed
}

/// A SIGHUP: `sources` loaded again as [`resolve`] loads them (the registered data directory
/// adopted), with the settings of [`FIXED_ON_RELOAD`] kept as `running` has them; the names of
/// those the new configuration would have changed.
pub fn reload(sources: &Sources, running: &Config) -> Result<(Config, Vec<&'static str>)> {
    let mut new = Config::load(sources)?;
    let state_dir = registry::locate(&new)?;
    adopt_registered_data_dir(&mut new, &state_dir, remembered::read(&state_dir));
    Ok(keep_fixed(new, running))
}

/// `new` with the settings of [`FIXED_ON_RELOAD`] as `running` has them, and which differed.
pub fn keep_fixed(mut new: Config, running: &Config) -> (Config, Vec<&'static str>) {
    let changed = FIXED_ON_RELOAD
        .iter()
        .filter_map(|(key, keep)| keep(&mut new, running).then_some(*key))
        .collect();
    (new, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::launch::tests::loaded;
    use std::path::Path;

    #[test]
    fn a_reload_keeps_every_fixed_setting_and_names_the_ones_it_was_asked_to_change() {
        let running = loaded(false, 5433);
        let (same, changed) = keep_fixed(loaded(false, 5433), &running);
        assert!(changed.is_empty(), "{changed:?}");
        assert_eq!(same.port, 5433);

        let mut asked = loaded(false, 5999);
        asked.user = "other".into();
        asked.listen_address = "127.0.0.2".parse().unwrap();
        asked.data_dir = "/elsewhere".into();
        asked.server.insert("work_mem".into(), "64MB".into());
        let (kept, changed) = keep_fixed(asked, &running);
        assert_eq!(
            changed,
            [
                "listen_address",
                "port",
                "data_dir",
                "user/password/database"
            ]
        );
        assert_eq!(kept.port, 5433);
        assert_eq!(kept.user, running.user);
        assert_eq!(kept.listen_address, running.listen_address);
        assert_eq!(kept.data_dir, running.data_dir);
        // What a reload can change, it changes.
        assert_eq!(
            kept.server.get("work_mem").map(String::as_str),
            Some("64MB")
        );
    }

    #[test]
    fn every_fixed_setting_is_detected_alone() {
        let running = loaded(false, 5433);
        let edits: [fn(&mut Config); 6] = [
            |c| c.listen_address = "127.0.0.2".parse().unwrap(),
            |c| c.port = 1,
            |c| c.data_dir = "/x".into(),
            |c| c.user = "u".into(),
            |c| c.password = crate::config::Secret::new("p".to_string()),
            |c| c.database = "d".into(),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut new = running.clone();
            edit(&mut new);
            let (kept, changed) = keep_fixed(new, &running);
            assert_eq!(changed.len(), 1, "edit {i}: {changed:?}");
            assert_eq!(keep_fixed(kept, &running).1.len(), 0, "edit {i} undone");
        }
    }

    /// Set in the child process [`every_command_resolves_the_instance_start_left`] runs itself
    /// in: the temporary home of its registry, data and config, whose environment it owns.
    const CHILD_HOME: &str = "PGWARDEN_RESOLVE_TEST_HOME";

    /// `start --port N …; stop; <command> …` for every command that addresses an instance, by
    /// name, by data directory, the default instance, and inside a project (with and without
    /// a data directory): each resolves the state directory, data directory and port that the
    /// start left. The start and stop are what `run` does to the registry and the state
    /// directory (claim, remembered settings, release), without a server.
    ///
    /// The environment (registry, data root, config file, working directory) is the process's,
    /// so the test runs again in a child process of its own, with an environment it sets.
    #[test]
    fn every_command_resolves_the_instance_start_left() {
        let Some(home) = std::env::var_os(CHILD_HOME) else {
            let home = tempfile::tempdir().unwrap();
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "instance::resolve::tests::every_command_resolves_the_instance_start_left",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env(CHILD_HOME, home.path())
                .env("HOME", home.path().join("home"))
                .env("XDG_RUNTIME_DIR", home.path().join("xdg"))
                .env(paths::RUNTIME_DIR_ENV, home.path().join("run"))
                .env(paths::DATA_ROOT_ENV, home.path().join("data"))
                .env("PGWARDEN_CONFIG", home.path().join("config.toml"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{text}");
            assert!(text.contains("1 passed"), "the child ran the test: {text}");
            return;
        };
        let home = std::path::PathBuf::from(home);
        std::fs::write(home.join("config.toml"), "").unwrap();
        let outside = home.join("outside");
        let project = home.join("shop-project");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(project.join("src")).unwrap();
        std::fs::write(project.join("pgwarden.toml"), "").unwrap();
        let data = home.join("own").join("data");
        let data = data.display().to_string();

        let named_data = home.join("named").join("data");
        let named_data = named_data.display().to_string();
        // (working directory, start's instance flags, the commands' instance flags, port)
        let cases: [(&Path, Vec<&str>, Vec<&str>, &str); 6] = [
            (
                &outside,
                vec!["--name", "shop"],
                vec!["--name", "shop"],
                "5801",
            ),
            (
                &outside,
                vec!["--data-dir", &data],
                vec!["--data-dir", &data],
                "5802",
            ),
            (&outside, vec![], vec![], "5803"),
            (&project.join("src"), vec![], vec![], "5804"),
            (
                &project,
                vec!["--data-dir", &data],
                vec!["--data-dir", &data],
                "5805",
            ),
            // The name finds the data directory it was started with.
            (
                &outside,
                vec!["--name", "stock", "--data-dir", &named_data],
                vec!["--name", "stock"],
                "5806",
            ),
        ];
        for (cwd, start_flags, flags, port) in cases {
            std::env::set_current_dir(cwd).unwrap();
            let started = start_and_stop(&start_flags, port);
            for command in COMMANDS {
                // The flags go before a `--` (exec's command follows it).
                let split = command.iter().position(|a| *a == "--");
                let (head, tail) = command.split_at(split.unwrap_or(command.len()));
                let line: Vec<&str> = ["pgwarden"]
                    .iter()
                    .chain(head)
                    .chain(flags.iter())
                    .chain(tail)
                    .copied()
                    .collect();
                let resolved = resolve_line(&line);
                let case = format!("{line:?} in {}", cwd.display());
                assert_eq!(resolved.state_dir, started.state_dir, "{case}");
                assert_eq!(resolved.config.data_dir, started.config.data_dir, "{case}");
                assert_eq!(resolved.config.port.to_string(), port, "{case}");
            }
        }
    }

    /// Every command that addresses an instance, without its instance flags.
    const COMMANDS: [&[&str]; 20] = [
        &["run"],
        &["start"],
        &["up"],
        &["restart"],
        &["stop"],
        &["down"],
        &["status"],
        &["url"],
        &["env"],
        &["wait"],
        &["logs"],
        &["psql"],
        &["check"],
        &["doctor"],
        &["reload"],
        &["reset"],
        &["backup"],
        &["snapshot", "ls"],
        &["db", "create", "other"],
        &["exec", "--", "true"],
    ];

    fn resolve_line(line: &[&str]) -> Resolved {
        use clap::Parser;
        let cli = crate::commands::Cli::try_parse_from(line).unwrap();
        let sources = cli
            .command
            .instance_sources()
            .expect("addresses an instance");
        resolve(cli.globals().sources(sources)).unwrap()
    }

    /// What `pgwarden start --port PORT FLAGS` then `stop` leave behind.
    fn start_and_stop(flags: &[&str], port: &str) -> Resolved {
        let line: Vec<&str> = ["pgwarden", "run", "--port", port]
            .into_iter()
            .chain(flags.iter().copied())
            .collect();
        let resolved = resolve_line(&line);
        let claim = resolved.claim().unwrap();
        let mut remembered = remembered::Remembered::of(&resolved.config, &resolved.sources);
        remembered.port = resolved.config.port;
        remembered::write(&claim.state_dir, &remembered).unwrap();
        drop(claim);
        assert_eq!(lock::holder(&resolved.state_dir), None, "stopped");
        resolved
    }

    /// Nothing after `main` reads argv, and `config` keeps no process-global state: the
    /// instance is decided from the values passed down (issue 24).
    #[test]
    fn no_argv_outside_main_and_no_global_state_in_config() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.clone()];
        let mut offenders = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let rel = path.strip_prefix(&src).unwrap();
            let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
            for line in code {
                // Spelt in two halves so that this line is not found.
                let argv = [concat!("args", "_os()"), concat!("env::", "args()")]
                    .iter()
                    .any(|a| line.contains(a));
                let global = line.trim_start().starts_with("static ")
                    || line.contains(" static ") && !line.contains("'static");
                if (argv && rel != Path::new("main.rs")) || (global && rel.starts_with("config")) {
                    offenders.push(format!("{}: {}", rel.display(), line.trim()));
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }
}
