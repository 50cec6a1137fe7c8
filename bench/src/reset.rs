//! Row 16: fast reset — `pgwarden reset --yes` then `pgwarden start` → returned (ready) on a
//! running persistent instance, with the template cluster cache warm (filled in the background
//! after the first launch), against the same with the cache emptied first (initdb: what it cost
//! before the fill existed) and against `stop` + `start` of the same cluster (a warm start: the
//! floor a reset cannot beat).

use crate::ctx::{Ctx, remove};
use crate::launch::{self, time_command};
use crate::stats::{Row, Unit, ms};
use crate::turns;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the background fill may take after a cold reset + start.
const FILL_LIMIT: Duration = Duration::from_secs(120);

/// One persistent instance addressed by its data directory; stopped on drop.
struct Instance<'a> {
    ctx: &'a Ctx,
    data_dir: PathBuf,
    port: u16,
}

impl Instance<'_> {
    fn command(&self, verb: &str) -> Command {
        let mut command = launch::pgwarden_command(self.ctx);
        command
            .arg(verb)
            .arg("--config")
            .arg(&self.ctx.config)
            .arg("--data-dir")
            .arg(&self.data_dir);
        command
    }

    fn start(&self) -> Duration {
        let mut command = self.command("start");
        command
            .arg("--archive")
            .arg(&self.ctx.archive)
            .arg("--install-dir")
            .arg(&self.ctx.install_dir)
            .arg("--port")
            .arg(self.port.to_string());
        time_command(&mut command, 0)
    }

    fn stop(&self) -> Duration {
        time_command(&mut self.command("stop"), 0)
    }

    fn reset(&self) -> Duration {
        time_command(self.command("reset").arg("--yes"), 0)
    }
}

impl Drop for Instance<'_> {
    fn drop(&mut self) {
        let _ = self
            .command("stop")
            .args(["--mode", "immediate"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The complete templates in the cache (a working `.fill-*` directory is not one).
fn complete_templates(templates: &Path) -> usize {
    std::fs::read_dir(templates)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(".pgwarden-template-complete").is_file())
        .count()
}

fn fill_running(templates: &Path) -> bool {
    std::fs::read_dir(templates)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".fill-"))
}

/// Empties the template cache (its templates, not the fills' lock files).
fn empty_cache(templates: &Path) {
    for entry in std::fs::read_dir(templates).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with('.') {
            remove(&entry.path());
        }
    }
}

/// Waits until the background fill after a first launch has published its template.
fn wait_for_fill(templates: &Path) {
    let deadline = Instant::now() + FILL_LIMIT;
    while complete_templates(templates) == 0 || fill_running(templates) {
        assert!(
            Instant::now() < deadline,
            "no template in {} {FILL_LIMIT:?} after a persistent first launch",
            templates.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the spare `spare` (a reset spare, a snapshot's) made in the background after the
/// last start is ready: its marker is there and no copy is being made.
pub fn wait_for_spare(spare: &Path) {
    let deadline = Instant::now() + FILL_LIMIT;
    let name = spare.file_name().unwrap().to_string_lossy().to_string();
    let working = || {
        std::fs::read_dir(spare.parent().unwrap())
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}.work-"))
            })
    };
    while !spare.join("spare.json").is_file() || working() {
        assert!(
            Instant::now() < deadline,
            "no spare at {} {FILL_LIMIT:?} after a start",
            spare.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn reset_and_start(ctx: &Ctx, runs: usize) -> Vec<Row> {
    let what = "`pgwarden reset --yes` + `start` → returned (ready), spare cluster ready";
    let mut cold = Row::new(
        "16",
        what,
        "same, template cache emptied first (initdb, as before the background fill)",
        Unit::Millis,
    );
    let mut floor = Row::new(
        "16",
        what,
        "`stop` + `start` of the same cluster (warm start: the floor)",
        Unit::Millis,
    );
    // The same samples split: the start alone (a copy of the template) against a warm start.
    let mut start_only = Row::new(
        "16",
        "of which `start` → returned (ready): the spare renamed into place",
        "`start` of the stopped cluster (warm start)",
        Unit::Millis,
    );
    let templates = ctx.install_dir.join("templates");
    let instance = Instance {
        ctx,
        data_dir: ctx.fresh_dir("reset").join("data"),
        port: ctx.port(),
    };
    // The first launch, then the template it fills in the background.
    instance.start();
    wait_for_fill(&templates);
    for i in 0..runs {
        eprintln!("[bench] reset + start run {}/{runs}", i + 1);
        for turn in turns(i, 3) {
            match turn {
                0 => {
                    // Not measured: the spare made in the background after the last start.
                    wait_for_spare(&instance.data_dir.with_file_name(".data.spare"));
                    let reset = instance.reset();
                    let start = instance.start();
                    cold.ours.push(ms(reset + start));
                    floor.ours.push(ms(reset + start));
                    start_only.ours.push(ms(start));
                }
                1 => {
                    empty_cache(&templates);
                    let took = instance.reset() + instance.start();
                    cold.theirs.push(ms(took));
                    // Not measured: the fill that this first launch starts, before the next turn.
                    wait_for_fill(&templates);
                }
                _ => {
                    let stop = instance.stop();
                    let start = instance.start();
                    floor.theirs.push(ms(stop + start));
                    start_only.theirs.push(ms(start));
                }
            }
        }
    }
    instance.stop();
    vec![cold, floor, start_only]
}
