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

#[cfg(test)]
mod tests {
    use super::*;

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
