//! The command line, one file per verb: each holds its clap `Args` and its `run`, which returns
//! the process exit code. [`args`] holds what several verbs share: [`Cli`] (the global options),
//! the [`Command`] enum of verbs, the flag groups ([`InstanceArgs`], [`RunArgs`],
//! [`BinaryFlags`], [`Verbosity`], …), the [`Globals`] a background pgwarden is given again, and
//! [`usage_exit_code`]. They are turned into [`crate::config::Sources`] at once; nothing after
//! `config` reads clap's values.

pub mod archive_wal;
pub mod args;
pub mod backup;
pub mod backup_verify;
pub mod check;
pub mod common;
pub mod completions;
pub mod db;
pub mod db_reindex_collations;
pub mod doctor;
pub mod exec;
pub mod export_archive;
pub mod init;
pub mod install;
pub mod logs;
pub mod ls;
pub mod pool_fill;
pub mod psql;
pub mod reload;
pub mod reset;
pub mod restart;
pub mod restore;
pub mod run;
pub mod service;
pub mod snapshot;
pub mod start;
pub mod status;
pub mod stop;
pub mod sweep_throwaways;
pub mod upgrade;
pub mod url;
pub mod wait;

pub use args::{
    BinariesArgs, BinaryFlags, Cli, Command, Globals, InstanceArgs, LogFormat, RunArgs, SourceArgs,
    Verbosity, usage_exit_code,
};

use crate::error::Result;
pub use crate::instance::lock::BACKGROUND_ENV;
use crate::instance::observe::Instance;
use crate::instance::resolve::{Resolved, resolve};

/// Runs the command. The instance it addresses is resolved once, here ([`resolve`], from
/// [`Command::instance_sources`]), and handed to the verb: `run`'s comes from `main`, which
/// resolved it already to find its log file. The verbs that address no instance (`init`, `ls`,
/// `completions`, `archive-wal`, `service`) get none; `install` and `export-archive` load the
/// configuration of their binaries themselves.
pub async fn dispatch(cli: Cli, run_instance: Option<Result<Resolved>>) -> Result<i32> {
    let globals = cli.globals();
    let globals = &globals;
    let addressed = Addressed(run_instance.or_else(|| {
        cli.command
            .instance_sources()
            .map(|sources| resolve(globals.sources(sources)))
    }));
    match cli.command {
        Command::Run(args) => run::run(args, addressed.take()?).await.map(|()| 0),
        Command::Backup(args) => backup::run(args, addressed.observe()?, globals).await,
        Command::ArchiveWal(args) => archive_wal::run(args),
        Command::Restore(args) => restore::run(args, addressed.observe()?, globals).await,
        Command::Snapshot(command) => snapshot::run(command, addressed.observe()?, globals).await,
        // `check` reports a configuration it cannot use as "no attempt", `doctor` as a check.
        Command::Check(args) => check::run(args, addressed.observe()).await,
        Command::Doctor(args) => doctor::run(args, addressed.take()),
        Command::Db(command) => db::run(command, addressed.observe()?).await,
        Command::Wait(args) => wait::run(args, addressed.observe()?).await,
        Command::Status(args) => status::run(args, addressed.observe()?),
        Command::Url(args) => url::url(args, addressed.observe()?),
        Command::Env(args) => url::env(args, addressed.observe()?),
        Command::Psql(args) => psql::run(args, addressed.observe()?),
        Command::Logs(args) => logs::run(args, addressed.observe()?).await,
        Command::Stop(args) => stop::run(args, addressed.observe()?).await,
        Command::Completions(args) => completions::run(args),
        Command::Start(args) => start::start(args, addressed.take()?, globals).await,
        Command::Init(args) => init::run(args),
        Command::Ls(args) => ls::run(args),
        Command::Restart(args) => restart::run(args, addressed.take()?, globals).await,
        Command::Reload(args) => reload::run(args, addressed.observe()?).await,
        Command::Reset(args) => reset::run(args, addressed.observe()?).await,
        Command::Exec(args) => exec::run(args, addressed.take()?).await,
        Command::PoolFill(args) => pool_fill::run(args, addressed.take()?).await,
        Command::SweepThrowaways(args) => sweep_throwaways::run(args),
        Command::Install(args) => install::install(args, globals).await,
        Command::ExportArchive(args) => export_archive::export_archive(args, globals).await,
        Command::Upgrade(args) => upgrade::run(args, addressed.take()?, globals).await,
        Command::Service(service::ServiceCommand::Install(args)) => {
            service::install(&args).map(|()| 0)
        }
    }
}

/// The instance the command addresses, as [`dispatch`] resolved it.
struct Addressed(Option<Result<Resolved>>);

impl Addressed {
    /// The resolved instance, or why it could not be resolved.
    fn take(self) -> Result<Resolved> {
        self.0.expect(
            "Command::instance_sources names the sources of every verb that addresses an instance",
        )
    }

    /// The resolved instance, observed (for the verbs that only read).
    fn observe(self) -> Result<Instance> {
        self.take().map(Resolved::observe)
    }
}
