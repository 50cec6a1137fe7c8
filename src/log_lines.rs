//! How pgwarden's log looks on stderr: quiet by default, like compose.
//!
//! The default shows pgwarden's own lines and the server's warnings and errors; `-v` adds the
//! server's whole log, `-vv` pgwarden's debug lines, `-q` leaves only errors. `RUST_LOG`
//! overrides all of it. The rotated log file of `run` always gets pgwarden's info lines and
//! the server's whole log. Library retry chatter (reqwest's middleware) is below debug.
//! Server lines are forwarded without their own timestamp: one timestamp per line.

/// What library crates log at info and warn that nobody asked for.
const CHATTER: &str = "reqwest_retry=off,reqwest_tracing=off";

/// The stderr filter for `-v` given `verbose` times, or `-q`.
pub fn stderr_filter(verbose: u8, quiet: bool) -> String {
    match (quiet, verbose) {
        (true, _) => "error".to_string(),
        (false, 0) => format!("info,postgres=warn,{CHATTER}"),
        (false, 1) => format!("info,{CHATTER}"),
        (false, _) => "debug".to_string(),
    }
}

/// The log file's filter: pgwarden's info lines and the server's whole log.
pub fn file_filter() -> String {
    format!("info,{CHATTER}")
}

/// A server log line without the timestamp its `log_line_prefix` starts with
/// (`2026-12-01 14:43:13.090 UTC [10125] postmaster LOG: …` → `[10125] postmaster LOG: …`):
/// the forwarding log line has its own.
pub fn without_timestamp(line: &str) -> &str {
    let b = line.as_bytes();
    let date = b.len() > 11
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && b[10] == b' ';
    if !date {
        return line;
    }
    let mut rest = line[11..].splitn(3, ' ');
    match (rest.next(), rest.next(), rest.next()) {
        (Some(time), Some(_zone), Some(tail))
            if time.contains(':')
                && time
                    .bytes()
                    .all(|c| c.is_ascii_digit() || c == b':' || c == b'.') =>
        {
            tail
        }
        _ => line,
    }
}

/// How loudly a server line is forwarded to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loudness {
    Error,
    Warn,
    Info,
}

/// A server line's loudness: its own severity (PANIC and FATAL are errors, ERROR and WARNING
/// warnings), except that the postmaster's lines about one of its processes killed by a
/// signal, and the restart of every connection that follows, are warnings although the server
/// logs them as LOG: at the default level a backend's crash would otherwise pass unseen.
pub fn loudness(line: &str) -> Loudness {
    if line.contains("PANIC:") || line.contains("FATAL:") {
        Loudness::Error
    } else if line.contains("ERROR:")
        || line.contains("WARNING:")
        || process_killed(line).is_some()
        || line.contains("terminating any other active server processes")
    {
        Loudness::Warn
    } else {
        Loudness::Info
    }
}

/// The signal of the postmaster's "… (PID n) was terminated by signal N: …" line.
pub fn process_killed(line: &str) -> Option<i32> {
    let (before, after) = line.split_once(") was terminated by signal ")?;
    before.contains("(PID ").then_some(())?;
    after.split(':').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_server_process_is_a_warning() {
        let killed =
            "[7] postmaster LOG:  server process (PID 4242) was terminated by signal 9: Killed";
        assert_eq!(process_killed(killed), Some(9));
        assert_eq!(loudness(killed), Loudness::Warn);
        let restart = "[7] postmaster LOG:  terminating any other active server processes";
        assert_eq!(loudness(restart), Loudness::Warn);
        // A background worker's exit code at a shutdown is routine.
        let routine = "[7] postmaster LOG:  background worker \"logical replication launcher\" (PID 9) exited with exit code 1";
        assert_eq!(loudness(routine), Loudness::Info);
        assert_eq!(process_killed(routine), None);
        assert_eq!(
            loudness("[8] client backend FATAL:  password authentication failed"),
            Loudness::Error
        );
        assert_eq!(
            loudness("[8] client backend ERROR:  relation \"x\" does not exist"),
            Loudness::Warn
        );
        assert_eq!(
            loudness("[7] postmaster LOG:  database system is ready"),
            Loudness::Info
        );
    }

    #[test]
    fn the_servers_timestamp_is_dropped() {
        assert_eq!(
            without_timestamp("2026-12-01 14:43:13.090 UTC [10125] postmaster LOG:  ready"),
            "[10125] postmaster LOG:  ready"
        );
        assert_eq!(without_timestamp("LOG:  no prefix"), "LOG:  no prefix");
        assert_eq!(without_timestamp("2026-12-01 x"), "2026-12-01 x");
    }

    #[test]
    fn levels() {
        assert!(stderr_filter(0, false).contains("postgres=warn"));
        assert!(!stderr_filter(1, false).contains("postgres"));
        assert_eq!(stderr_filter(3, true), "error");
    }
}
