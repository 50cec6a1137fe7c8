//! Sizes as people read them, for every stage's messages (a vocabulary, like [`crate::error`]:
//! it imports nothing from the crate).

/// "12.3 MB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_the_largest_unit_below_a_thousand() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(94_100_000), "94.1 MB");
        assert_eq!(human_bytes(1_500_000_000_000_000), "1500.0 TB");
    }
}
