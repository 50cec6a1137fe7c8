//! Samples, medians and the one results table.

use std::fmt::Write as _;
use std::time::Duration;

/// How a row's numbers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds; lower is better.
    Millis,
    /// Transactions per second; higher is better.
    Tps,
    /// CPU seconds; lower is better.
    CpuSeconds,
    /// Mebibytes; lower is better.
    MiB,
    /// Megabytes (10^6 bytes) per second; higher is better.
    MegabytesPerSecond,
    /// Megabytes (10^6 bytes); lower is better.
    Megabytes,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Unit::Millis if value < 10.0 => format!("{value:.2} ms"),
            Unit::Millis => format!("{value:.1} ms"),
            Unit::Tps => format!("{value:.0} tps"),
            Unit::CpuSeconds => format!("{value:.3} s"),
            Unit::MiB => format!("{value:.1} MiB"),
            Unit::MegabytesPerSecond => format!("{value:.0} MB/s"),
            Unit::Megabytes => format!("{value:.1} MB"),
        }
    }
}

/// One line of the table: pgwarden's samples against one anchor's.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: &'static str,
    pub what: String,
    pub anchor: String,
    pub unit: Unit,
    pub ours: Vec<f64>,
    pub theirs: Vec<f64>,
}

impl Row {
    pub fn new(id: &'static str, what: &str, anchor: &str, unit: Unit) -> Row {
        Row {
            id,
            what: what.into(),
            anchor: anchor.into(),
            unit,
            ours: Vec::new(),
            theirs: Vec::new(),
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The markdown table: row, what, pgwarden median, anchor, anchor median, ratio, n.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| row | measure | pgwarden (median) | anchor | anchor (median) | ratio | n |\n");
    out.push_str("|---|---|---:|---|---:|---:|---:|\n");
    for row in rows {
        let ours = median(&row.ours);
        let theirs = median(&row.theirs);
        let show = |v: Option<f64>| v.map_or("—".to_string(), |v| row.unit.format(v));
        let ratio = match (ours, theirs) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "—".into(),
        };
        let n = row.ours.len().min(row.theirs.len().max(1));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.id,
            row.what,
            show(ours),
            row.anchor,
            show(theirs),
            ratio,
            n
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
