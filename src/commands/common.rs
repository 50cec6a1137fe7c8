//! What the daily commands share: the observed instance ([`crate::commands::dispatch`]
//! resolves it once and hands it to the verb) and the hint that addresses it again.

use crate::commands::InstanceArgs;
pub use crate::instance::observe::Instance;

impl Instance {
    /// The instance flags a hint should repeat so that the user's next command reaches this
    /// instance too: `--name N`, `--data-dir D`, `--config F` as they were given.
    pub fn flags_hint(args: &InstanceArgs) -> String {
        let mut out = String::new();
        if let Some(name) = &args.name {
            out.push_str(&format!(" --name {name}"));
        }
        if let Some(dir) = &args.data_dir {
            out.push_str(&format!(" --data-dir {}", dir.display()));
        }
        if let Some(file) = &args.config {
            out.push_str(&format!(" --config {}", file.display()));
        }
        if args.system {
            out.push_str(" --system");
        }
        out
    }
}

/// "3d 4h", "5m 2s", "800 ms".
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Asks `question` on the terminal: `Some(true)` for `y`/`yes`, `Some(false)` for anything else,
/// `None` when stdin is no terminal to ask on (the caller then wants a `--yes`).
pub fn ask_yes_no(question: &str) -> Option<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return None;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    Some(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_formats() {
        assert_eq!(human_duration(61_000), "1m 1s");
        assert_eq!(human_duration(12), "12 ms");
    }
}
