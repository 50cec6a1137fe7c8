//! `backup_schedule`: when the service's backups run, as a systemd timer.
//!
//! Scheduled backups are a shipped systemd timer (`pgwarden service install` writes
//! `pgwarden-backup.service` and `.timer` beside `pgwarden.service` when `backup_schedule` is
//! set), not a timer inside the supervisor: systemd keeps the schedule across reboots and runs a
//! missed backup at the next boot (`Persistent=true`), logs each run in the journal, shows the
//! next one in `systemctl list-timers`, and a backup that fails or hangs cannot disturb the
//! supervisor that keeps the server up. The timer runs `pgwarden backup`, which writes into the
//! backup directory and then applies the retention (`backup_keep`).
//!
//! Two forms, in UTC: `daily HH:MM` and `hourly :MM`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Daily { hour: u32, minute: u32 },
    Hourly { minute: u32 },
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let minute = |m: &str| -> Result<u32, String> {
            match m.parse::<u32>() {
                Ok(n) if n < 60 => Ok(n),
                _ => Err(format!("{m:?} is not a minute (00-59)")),
            }
        };
        match words.as_slice() {
            ["daily", time] => {
                let (h, m) = time
                    .split_once(':')
                    .ok_or_else(|| format!("{time:?} is not HH:MM"))?;
                let hour = match h.parse::<u32>() {
                    Ok(n) if n < 24 => n,
                    _ => return Err(format!("{h:?} is not an hour (00-23)")),
                };
                Ok(Schedule::Daily {
                    hour,
                    minute: minute(m)?,
                })
            }
            ["hourly", time] => Ok(Schedule::Hourly {
                minute: minute(time.trim_start_matches(':'))?,
            }),
            _ => Err("use \"daily HH:MM\" or \"hourly :MM\" (UTC)".into()),
        }
    }

    /// systemd's `OnCalendar=` for it.
    pub fn on_calendar(self) -> String {
        match self {
            Schedule::Daily { hour, minute } => format!("*-*-* {hour:02}:{minute:02}:00 UTC"),
            Schedule::Hourly { minute } => format!("*-*-* *:{minute:02}:00 UTC"),
        }
    }
}

/// The shipped units, as in `packaging/systemd/`.
pub const BACKUP_SERVICE: &str = include_str!("../../packaging/systemd/pgwarden-backup.service");
pub const BACKUP_TIMER: &str = include_str!("../../packaging/systemd/pgwarden-backup.timer");

/// `pgwarden-backup.service` running `exec_start`, and `pgwarden-backup.timer` on `schedule`.
pub fn units(exec_start: &str, schedule: Schedule) -> (String, String) {
    let replace = |unit: &str, key: &str, value: &str| {
        unit.lines()
            .map(|l| {
                if l.starts_with(key) {
                    format!("{key}{value}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    (
        replace(BACKUP_SERVICE, "ExecStart=", exec_start),
        replace(BACKUP_TIMER, "OnCalendar=", &schedule.on_calendar()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_two_forms() {
        assert_eq!(
            Schedule::parse("daily 03:00").unwrap().on_calendar(),
            "*-*-* 03:00:00 UTC"
        );
        assert_eq!(
            Schedule::parse("hourly :15").unwrap().on_calendar(),
            "*-*-* *:15:00 UTC"
        );
        for bad in ["daily 25:00", "daily 3", "weekly", "hourly :60", ""] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn units_carry_the_command_and_the_schedule() {
        let (service, timer) = units(
            "/opt/pgwarden backup --config /c.toml",
            Schedule::parse("hourly :15").unwrap(),
        );
        assert!(service.contains("\nExecStart=/opt/pgwarden backup --config /c.toml\n"));
        assert!(timer.contains("\nOnCalendar=*-*-* *:15:00 UTC\n"));
        assert!(timer.contains("Persistent=true"));
    }
}
