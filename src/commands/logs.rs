//! `pgwarden logs [-f] [-n N]`: the log file `pgwarden run` keeps (see [`crate::instance::logfile`]).

use crate::commands::InstanceArgs;
use crate::commands::common::Instance;
use crate::error::{Error, IoContext, Result};
use crate::instance::logfile;
use clap::Args;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Shows the log pgwarden keeps beside the data directory (<data dir>.pgwarden/pgwarden.log, \
rotated at 10 MiB): the supervisor's events and every server log line. Works while pgwarden runs and \
after it stopped.",
    after_help = "Examples:\n  pgwarden logs -n 50\n  pgwarden logs -f"
)]
pub struct LogsArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Keep printing new lines as they are written (until Ctrl-C).
    #[arg(short, long)]
    pub follow: bool,

    /// Only the last N lines.
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
}

pub async fn run(args: LogsArgs, instance: Instance) -> Result<i32> {
    let (current, _) = logfile::paths(&instance.state_dir);
    if !current.exists() && !args.follow {
        return Err(Error::Server {
            what: format!(
                "no log at {}: pgwarden has not run with data directory {}\n\
                 help: start it with `pgwarden run` (or pass the --data-dir / --config it runs with)",
                current.display(),
                instance.config.data_dir.display()
            ),
        });
    }
    // Remember where the printed part ends before reading it, so that -f misses nothing.
    let mut offset = std::fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
    let mut inode = inode_of(&current);
    let lines = logfile::tail(&instance.state_dir, args.lines).io("cannot read", &current)?;
    let mut out = std::io::stdout().lock();
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return Ok(0); // a closed pipe (`| head`) ends us quietly
        }
    }
    let _ = out.flush();
    drop(out);
    if !args.follow {
        return Ok(0);
    }
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now_inode = inode_of(&current);
        let len = std::fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
        if now_inode != inode || len < offset {
            // Rotated or truncated: the new file is read from its start.
            inode = now_inode;
            offset = 0;
        }
        if len > offset {
            let Ok(mut file) = std::fs::File::open(&current) else {
                continue;
            };
            let mut buf = Vec::new();
            if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_end(&mut buf).is_err() {
                continue;
            }
            // Print whole lines only; a partly written one waits for the next turn.
            let end = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let mut out = std::io::stdout().lock();
            if out
                .write_all(&buf[..end])
                .and_then(|()| out.flush())
                .is_err()
            {
                return Ok(0);
            }
            offset += end as u64;
        }
    }
}

fn inode_of(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}
