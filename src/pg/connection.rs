//! How a client connects: the one function that builds a `postgres://` URL.
//!
//! Used for the ready line, `url`, `env`, `start`'s `DATABASE_URL`, `db create`, `exec` and
//! `status`, so that they cannot disagree on encoding or on where the password goes.

use std::net::SocketAddr;

/// `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE`, every part percent-encoded (IPv6 hosts in
/// brackets); the password only when given.
pub fn database_url(
    user: &str,
    password: Option<&str>,
    address: SocketAddr,
    database: &str,
) -> String {
    let password = password
        .map(|p| format!(":{}", percent_encode(p)))
        .unwrap_or_default();
    format!(
        "postgres://{}{password}@{address}/{}",
        percent_encode(user),
        percent_encode(database)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_every_part() {
        let v4: SocketAddr = "127.0.0.1:5433".parse().unwrap();
        assert_eq!(
            database_url("al ice", Some("p@ss:w/rd"), v4, "db/1"),
            "postgres://al%20ice:p%40ss%3Aw%2Frd@127.0.0.1:5433/db%2F1"
        );
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(database_url("u", None, v6, "d"), "postgres://u@[::1]:5/d");
    }
}
