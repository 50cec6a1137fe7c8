//! Progress of a long transfer: a bar (indicatif) when stderr is a terminal, otherwise an `info`
//! log line every few seconds, so a CI log or journal shows that something is moving.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tracing::info;

/// How often a log line is written when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: String,
    total: Option<u64>,
    done: u64,
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    /// Starts reporting `what` (e.g. "downloading postgresql-16.4.0-….tar.gz") of `total` bytes.
    pub fn start(what: impl Into<String>, total: Option<u64>) -> Progress {
        let what = what.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(total) => ProgressBar::new(total),
                None => ProgressBar::new_spinner(),
            };
            let template = if total.is_some() {
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "{spinner} {msg} {bytes} {bytes_per_sec}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(what.clone());
            bar
        });
        if bar.is_none() {
            info!(total_mb = total.map(mb), "{what}");
        }
        let now = Instant::now();
        Progress {
            what,
            total,
            done: 0,
            bar,
            started: now,
            last_log: now,
        }
    }

    pub fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                info!(
                    done_mb = mb(self.done),
                    total_mb = self.total.map(mb),
                    percent = self.total.map(|t| self.done * 100 / t.max(1)),
                    "{}",
                    self.what
                );
            }
            None => {}
        }
    }

    /// Starts over (a retried download).
    pub fn restart(&mut self) {
        self.done = 0;
        if let Some(bar) = &self.bar {
            bar.set_position(0);
        }
    }

    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        info!(
            mb = mb(self.done),
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "{}: done",
            self.what
        );
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // On failure, leave no half-drawn bar behind the error message.
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn mb(bytes: u64) -> f64 {
    (bytes as f64 / 100_000.0).round() / 10.0
}
