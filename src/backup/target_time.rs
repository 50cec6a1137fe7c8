//! `restore --to TIME`: the recovery target time, read by pgwarden itself before anything is
//! stopped.
//!
//! PostgreSQL reads `recovery_target_time` only when the restored server starts — after the
//! running server was stopped and its cluster set aside. A time it cannot use (`garbage`,
//! `2026-13-45 99:99:99`, `now`) then fails that start, so it is parsed here first, following
//! PostgreSQL's `timestamptz` input rules as far as people write a recovery target:
//!
//! - an ISO 8601 date, `YYYY-MM-DD` (month and day may have one digit), optionally followed by
//!   a time (after a space or `T`): `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction` (rounded to the
//!   microsecond, as PostgreSQL does); a date alone is its midnight; `24:00:00` is the next
//!   midnight, and second 60 the next minute, as PostgreSQL reads them;
//! - optionally a zone: `Z`, `+hh`, `+hhmm`, `+hh:mm`, `+hh:mm:ss` (or `-`; at most 15:59:59,
//!   PostgreSQL's limit) or an abbreviation of PostgreSQL's default set ([`ABBREVIATIONS`]:
//!   `UTC`, `GMT`, `EST`, `CET`, …; any case). Without a zone the time is UTC — PostgreSQL would
//!   use the restored server's `TimeZone`, so pgwarden hands it the time in UTC
//!   ([`TargetTime::for_postgres`]): what was checked is what recovery uses.
//! - fields are range-checked (month 1–12, the month's days, leap years, hour 0–24, minute and
//!   second 0–59/60, the offset);
//! - PostgreSQL's special values (`now`, `today`, `tomorrow`, `yesterday`, `infinity`,
//!   `-infinity`, `epoch`, `allballs`) are refused: `recovery_target_time` rejects them.
//!
//! Other spellings PostgreSQL also takes (`Dec 1 2026`, full zone names like `Europe/Paris`,
//! `BC` years) are refused with the form to use instead.

use std::fmt;

/// A recovery target, in microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetTime {
    pub unix_micros: i64,
}

/// Why a `--to` value is refused (the message names the rule; the caller names the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The form the errors show.
pub const EXAMPLE: &str = "'2026-12-01 14:05:00+00' (ISO 8601: date, time, optional zone)";

/// PostgreSQL's special date/time input values: `recovery_target_time` rejects them.
const SPECIAL: [&str; 10] = [
    "now",
    "today",
    "tomorrow",
    "yesterday",
    "infinity",
    "+infinity",
    "-infinity",
    "epoch",
    "allballs",
    "current",
];

/// Zone abbreviations of PostgreSQL's default `timezone_abbreviations` set (`Default`) with
/// their offsets east of UTC in seconds: the ones people write. Others are refused, naming the
/// numeric offset as the way out.
pub const ABBREVIATIONS: [(&str, i32); 40] = [
    ("UTC", 0),
    ("UT", 0),
    ("GMT", 0),
    ("Z", 0),
    ("ZULU", 0),
    ("WET", 0),
    ("WEST", 3600),
    ("BST", 3600),
    ("CET", 3600),
    ("CEST", 7200),
    ("MET", 3600),
    ("MEST", 7200),
    ("EET", 7200),
    ("EEST", 10800),
    ("IST", 7200),
    ("MSK", 10800),
    ("JST", 32400),
    ("KST", 32400),
    ("AWST", 28800),
    ("ACST", 34200),
    ("ACDT", 37800),
    ("AEST", 36000),
    ("AEDT", 39600),
    ("NZST", 43200),
    ("NZDT", 46800),
    ("HST", -36000),
    ("AKST", -32400),
    ("AKDT", -28800),
    ("PST", -28800),
    ("PDT", -25200),
    ("MST", -25200),
    ("MDT", -21600),
    ("CST", -21600),
    ("CDT", -18000),
    ("EST", -18000),
    ("EDT", -14400),
    ("AST", -14400),
    ("ADT", -10800),
    ("NST", -12600),
    ("NDT", -9000),
];

/// A cursor over the input's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn spaces(&mut self) -> bool {
        let start = self.at;
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
        self.at > start
    }

    /// Between `min` and `max` digits.
    fn digits(&mut self, min: usize, max: usize) -> Option<&str> {
        let start = self.at;
        while self.at - start < max && self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let n = self.at - start;
        (n >= min).then(|| std::str::from_utf8(&self.bytes[start..self.at]).expect("ascii"))
    }

    fn number(&mut self, min: usize, max: usize, what: &str) -> Result<i64, Refused> {
        self.digits(min, max)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| Refused(format!("expected the {what} at character {}", self.at + 1)))
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days-from-civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a `--to` value (see the module docs for what is accepted).
pub fn parse(input: &str) -> Result<TargetTime, Refused> {
    let text = input.trim();
    if text.is_empty() {
        return Err(Refused(format!(
            "the time is empty; give one like {EXAMPLE}"
        )));
    }
    let lower = text.to_ascii_lowercase();
    if SPECIAL.contains(&lower.as_str()) {
        return Err(Refused(format!(
            "{lower:?} is one of PostgreSQL's special time values, which recovery_target_time \
             refuses; give the time itself, like {EXAMPLE}"
        )));
    }
    if !text.is_ascii() || text.bytes().any(|b| b.is_ascii_control()) {
        return Err(Refused(format!(
            "only ASCII letters, digits, spaces and - + : . are part of a time, like {EXAMPLE}"
        )));
    }
    let mut c = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let syntax = |why: Refused| Refused(format!("{why}; give a time like {EXAMPLE}"));
    let year = c.number(4, 4, "four-digit year").map_err(syntax)?;
    if !c.eat(b'-') {
        return Err(syntax(Refused("expected YYYY-MM-DD at the start".into())));
    }
    let month = c.number(1, 2, "month").map_err(syntax)?;
    if !c.eat(b'-') {
        return Err(syntax(Refused("expected YYYY-MM-DD at the start".into())));
    }
    let day = c.number(1, 2, "day").map_err(syntax)?;
    let (mut hour, mut minute, mut second, mut micros) = (0, 0, 0, 0i64);
    let spaced = c.spaces();
    let t = !spaced && (c.eat(b'T') || c.eat(b't'));
    let digit_next = c.peek().is_some_and(|b| b.is_ascii_digit());
    if (t && !digit_next) || (digit_next && !spaced && !t) {
        return Err(syntax(Refused(format!(
            "expected a time (HH:MM:SS) after a space or T at character {}",
            c.at + 1
        ))));
    }
    if digit_next {
        hour = c.number(1, 2, "hour").map_err(syntax)?;
        if !c.eat(b':') {
            return Err(syntax(Refused("expected HH:MM after the date".into())));
        }
        minute = c.number(2, 2, "minutes").map_err(syntax)?;
        if c.eat(b':') {
            second = c.number(2, 2, "seconds").map_err(syntax)?;
            if c.eat(b'.') {
                let digits = c
                    .digits(1, usize::MAX)
                    .ok_or_else(|| syntax(Refused("expected digits after the '.'".into())))?;
                // Rounded to the microsecond, as PostgreSQL does.
                let mut padded: Vec<u8> = digits.bytes().take(7).collect();
                padded.resize(7, b'0');
                let seven: i64 = std::str::from_utf8(&padded)
                    .expect("ascii")
                    .parse()
                    .expect("digits");
                micros = (seven + 5) / 10;
            }
        }
    }
    let offset = zone(&mut c).map_err(syntax)?;
    if !c.done() {
        return Err(syntax(Refused(format!(
            "unexpected {:?} at character {}",
            &text[c.at..],
            c.at + 1
        ))));
    }
    let range = |what: &str, value: i64, allowed: &str| {
        Refused(format!(
            "{what} {value} is out of range ({allowed}); give a time like {EXAMPLE}"
        ))
    };
    if year < 1 {
        return Err(range("year", year, "1 and later"));
    }
    if !(1..=12).contains(&month) {
        return Err(range("month", month, "1 to 12"));
    }
    let last_day = days_in_month(year, month);
    if !(1..=last_day).contains(&day) {
        return Err(range(
            "day",
            day,
            &format!("1 to {last_day} in {year:04}-{month:02}"),
        ));
    }
    if !(0..=24).contains(&hour) || (hour == 24 && (minute, second, micros) != (0, 0, 0)) {
        return Err(range("hour", hour, "0 to 23, or 24:00:00 exactly"));
    }
    if !(0..=59).contains(&minute) {
        return Err(range("minute", minute, "0 to 59"));
    }
    if !(0..=60).contains(&second) || (second == 60 && micros != 0) {
        return Err(range("second", second, "0 to 59, or 60 exactly"));
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - i64::from(offset);
    Ok(TargetTime {
        unix_micros: seconds * 1_000_000 + micros,
    })
}

/// The zone after the time, if any: its offset east of UTC in seconds.
fn zone(c: &mut Cursor) -> Result<i32, Refused> {
    c.spaces();
    if c.done() {
        return Ok(0);
    }
    let sign = match c.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        Some(b) if b.is_ascii_alphabetic() => {
            let start = c.at;
            while c.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                c.at += 1;
            }
            let name = std::str::from_utf8(&c.bytes[start..c.at])
                .expect("ascii")
                .to_ascii_uppercase();
            return ABBREVIATIONS
                .iter()
                .find(|(abbr, _)| *abbr == name)
                .map(|(_, offset)| *offset)
                .ok_or_else(|| {
                    Refused(format!(
                        "zone {name:?} is not an abbreviation pgwarden knows (UTC, GMT, CET, EST, …); \
                         write its offset instead, like +01 or -05:00"
                    ))
                });
        }
        _ => {
            return Err(Refused(format!(
                "unexpected {:?} at character {}",
                String::from_utf8_lossy(&c.bytes[c.at..]),
                c.at + 1
            )));
        }
    };
    c.at += 1;
    let hours = c.number(1, 2, "zone's hours")?;
    let mut minutes = 0;
    let mut seconds = 0;
    if c.eat(b':') {
        minutes = c.number(2, 2, "zone's minutes")?;
        if c.eat(b':') {
            seconds = c.number(2, 2, "zone's seconds")?;
        }
    } else if let Some(d) = c.digits(2, 2) {
        minutes = d.parse().expect("digits");
    }
    if hours > 15 || minutes > 59 || seconds > 59 {
        return Err(Refused(format!(
            "zone offset {hours:02}:{minutes:02}:{seconds:02} is out of range (at most 15:59:59)"
        )));
    }
    Ok(sign * (hours * 3600 + minutes * 60 + seconds) as i32)
}

impl TargetTime {
    /// `YYYY-MM-DD HH:MM:SS.ffffff+00`: the time in UTC, as `recovery_target_time`.
    pub fn for_postgres(&self) -> String {
        let secs = self.unix_micros.div_euclid(1_000_000);
        let micros = self.unix_micros.rem_euclid(1_000_000);
        let (year, month, day, hour, minute, second) = super::civil(secs);
        format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{micros:06}+00")
    }

    /// Milliseconds since the Unix epoch, rounded down.
    pub fn unix_ms(&self) -> i64 {
        self.unix_micros.div_euclid(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> String {
        parse(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .for_postgres()
    }

    #[test]
    fn the_iso_forms_people_write_are_read_as_postgresql_reads_them() {
        assert_eq!(
            utc("2026-12-01 14:05:00+00"),
            "2026-12-01 14:05:00.000000+00"
        );
        assert_eq!(utc("2026-12-01T14:05:00Z"), "2026-12-01 14:05:00.000000+00");
        assert_eq!(utc("2026-12-01 14:05"), "2026-12-01 14:05:00.000000+00");
        assert_eq!(utc("2026-12-01"), "2026-12-01 00:00:00.000000+00");
        assert_eq!(utc("2026-1-2 3:04:05"), "2026-01-02 03:04:05.000000+00");
        assert_eq!(
            utc("2026-12-01 14:05:00.1234565+02:00"),
            "2026-12-01 12:05:00.123457+00"
        );
        assert_eq!(
            utc("2026-12-01 14:05:00 -0530"),
            "2026-12-01 19:35:00.000000+00"
        );
        assert_eq!(
            utc("2026-12-01 01:00:00+03"),
            "2026-11-30 22:00:00.000000+00"
        );
        assert_eq!(
            utc("2026-12-01 14:05:00 utc"),
            "2026-12-01 14:05:00.000000+00"
        );
        assert_eq!(
            utc("2026-12-01 14:05:00 CET"),
            "2026-12-01 13:05:00.000000+00"
        );
        assert_eq!(
            utc("2026-12-01 14:05:00 EST"),
            "2026-12-01 19:05:00.000000+00"
        );
        assert_eq!(utc("2024-02-29 24:00:00"), "2024-03-01 00:00:00.000000+00");
        assert_eq!(utc("2026-12-31 23:59:60"), "2027-01-01 00:00:00.000000+00");
        assert_eq!(
            utc("  2026-12-01 14:05:00.5Z  "),
            "2026-12-01 14:05:00.500000+00"
        );
        // The round trip: what pgwarden hands PostgreSQL reads back the same.
        let t = parse("2026-07-04 08:09:10.000011-07").unwrap();
        assert_eq!(parse(&t.for_postgres()).unwrap(), t);
        assert_eq!(
            parse("1970-01-01 00:00:01Z").unwrap().unix_ms(),
            1000,
            "Unix time"
        );
    }

    #[test]
    fn what_recovery_target_time_cannot_use_is_refused_naming_the_rule() {
        for (bad, rule) in [
            ("garbage", "four-digit year"),
            ("2026-13-45 99:99:99", "month 13 is out of range"),
            ("2026-12-45 10:00:00", "day 45 is out of range"),
            ("2026-02-29 10:00:00", "1 to 28 in 2026-02"),
            ("2026-12-01 25:00:00", "hour 25"),
            ("2026-12-01 24:00:01", "hour 24"),
            ("2026-12-01 10:60:00", "minute 60"),
            ("2026-12-01 10:00:61", "second 61"),
            ("2026-12-01 10:00:00+16", "at most 15:59:59"),
            ("2026-12-01 10:00:00 Europe/Paris", "not an abbreviation"),
            ("2026-12-01 10:00:00 XYZ", "not an abbreviation"),
            ("now", "special time values"),
            ("NOW", "special time values"),
            ("today", "special time values"),
            ("infinity", "special time values"),
            ("-infinity", "special time values"),
            ("epoch", "special time values"),
            ("allballs", "special time values"),
            ("", "empty"),
            ("2026-12-01 10:00:00'; DROP", "unexpected"),
            ("2026-12-01 10:00:00\n", "2026"),
            ("Dec 1 2026", "four-digit year"),
            ("2026-12-01 10", "HH:MM"),
            ("0000-01-01 00:00:00", "year 0"),
            ("2026-12-01 10:00:00.", "digits after"),
        ] {
            match parse(bad) {
                Ok(t) if bad.ends_with('\n') => {
                    // A trailing newline is trimmed like other white space; an inner one is not.
                    assert_eq!(t.for_postgres(), "2026-12-01 10:00:00.000000+00");
                }
                Ok(t) => panic!("{bad:?} was accepted as {}", t.for_postgres()),
                Err(e) => assert!(e.0.contains(rule), "{bad:?}: {e}"),
            }
        }
        assert!(parse("2026-12-01\n10:00:00").is_err());
        assert!(parse("2026-12-01 10:00:00 'x'").is_err());
        assert!(parse("2026-12-01T").is_err());
        assert!(parse("2026-12-013:00:00").is_err());
    }
}
