//! libpq connection strings, as `pg_isready -d` takes them: `key=value …` or a
//! `postgres[ql]://` URI.
//!
//! Follows libpq's `conninfo_parse` and `conninfo_uri_parse` (src/interfaces/libpq/fe-connect.c)
//! closely enough that the same strings are accepted, refused ("invalid connection option"),
//! and that values are read the same (quotes and backslashes; percent-decoding, `[v6]` hosts
//! and host lists in URIs). Only parsing happens here; which values are usable is decided by the
//! caller ([`check_values`]).

use std::collections::BTreeMap;

/// The keywords libpq 16 knows. Any other keyword makes the string invalid.
const KEYWORDS: &[&str] = &[
    "service",
    "user",
    "password",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "dbname",
    "host",
    "hostaddr",
    "port",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslmode",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "require_auth",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "replication",
    "target_session_attrs",
    "load_balance_hosts",
];

/// Parsed settings: keyword → value (the last occurrence wins, as in libpq).
pub type Settings = BTreeMap<String, String>;

/// Whether pg_isready would parse `dbname` as a connection string rather than a database name.
pub fn is_conninfo(dbname: &str) -> bool {
    dbname.starts_with("postgresql://") || dbname.starts_with("postgres://") || dbname.contains('=')
}

/// Parses a `key=value` string or a URI. The error reads like libpq's.
pub fn parse(text: &str) -> Result<Settings, String> {
    match uri_rest(text) {
        Some(rest) => parse_uri(text, rest),
        None => parse_keywords(text),
    }
}

fn uri_rest(text: &str) -> Option<&str> {
    text.strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
}

fn check_keyword(key: &str) -> Result<(), String> {
    if KEYWORDS.contains(&key) {
        Ok(())
    } else {
        Err(format!("invalid connection option \"{key}\""))
    }
}

fn parse_keywords(text: &str) -> Result<Settings, String> {
    let mut settings = Settings::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after \"{key}\" in connection info string"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(
                            "unterminated quoted string in connection info string".to_string()
                        );
                    }
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            value.push(c)
                        }
                    }
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        check_keyword(&key)?;
        settings.insert(key, value);
    }
    Ok(settings)
}

fn parse_uri(uri: &str, rest: &str) -> Result<Settings, String> {
    let mut settings = Settings::new();
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (rest, None),
    };
    let (authority, dbname) = match main.split_once('/') {
        Some((authority, dbname)) => (authority, Some(dbname)),
        None => (main, None),
    };
    let hosts = match authority.split_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                settings.insert("user".into(), decode(user, uri)?);
            }
            if let Some(password) = password.filter(|p| !p.is_empty()) {
                settings.insert("password".into(), decode(password, uri)?);
            }
            hosts
        }
        None => authority,
    };
    if !hosts.is_empty() {
        let (mut host_list, mut port_list) = (Vec::new(), Vec::new());
        let mut any_port = false;
        for part in hosts.split(',') {
            let (host, port) = if let Some(v6) = part.strip_prefix('[') {
                let (host, after) = v6.split_once(']').ok_or_else(|| {
                    format!("end of string reached when looking for matching \"]\" in IPv6 host address in URI: \"{uri}\"")
                })?;
                if host.is_empty() {
                    return Err(format!(
                        "IPv6 host address may not be empty in URI: \"{uri}\""
                    ));
                }
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| {
                        format!("unexpected character \"{}\" at position {} in URI (expected \":\" or \"/\"): \"{uri}\"", &p[..1], uri.len() - p.len() + 1)
                    })?),
                };
                (host, port)
            } else {
                match part.split_once(':') {
                    Some((host, port)) => (host, Some(port)),
                    None => (part, None),
                }
            };
            host_list.push(decode(host, uri)?);
            any_port |= port.is_some();
            port_list.push(decode(port.unwrap_or(""), uri)?);
        }
        if host_list.iter().any(|h| !h.is_empty()) {
            settings.insert("host".into(), host_list.join(","));
        }
        if any_port {
            settings.insert("port".into(), port_list.join(","));
        }
    }
    if let Some(dbname) = dbname.filter(|d| !d.is_empty()) {
        settings.insert("dbname".into(), decode(dbname, uri)?);
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            format!("missing key/value separator \"=\" in URI query parameter: \"{pair}\"")
        })?;
        let (key, value) = (decode(key, uri)?, decode(value, uri)?);
        // libpq's JDBC-compatible spelling.
        if key == "ssl" && value == "true" {
            settings.insert("sslmode".into(), "require".into());
            continue;
        }
        if !KEYWORDS.contains(&key.as_str()) {
            return Err(format!("invalid URI query parameter: \"{key}\""));
        }
        settings.insert(key, value);
    }
    Ok(settings)
}

/// Percent-decoding as libpq does it (`%00` and malformed escapes refused).
fn decode(text: &str, uri: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoded token: \"{text}\""))?;
            if hex == 0 {
                return Err(format!(
                    "forbidden value %00 in percent-encoded value: \"{text}\""
                ));
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("invalid percent-encoded token in URI: \"{uri}\""))
}

/// The value checks libpq makes before connecting (`connectOptions2`): a failure means pg_isready
/// makes no attempt and says "no attempt". Returns the first problem.
pub fn check_values(settings: &Settings) -> Result<(), String> {
    let allowed: &[(&str, &[&str])] = &[
        (
            "sslmode",
            &[
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ],
        ),
        ("channel_binding", &["disable", "prefer", "require"]),
        ("gssencmode", &["disable", "prefer", "require"]),
        (
            "target_session_attrs",
            &[
                "any",
                "read-write",
                "read-only",
                "primary",
                "standby",
                "prefer-standby",
            ],
        ),
        (
            "ssl_min_protocol_version",
            &["", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"],
        ),
        (
            "ssl_max_protocol_version",
            &["", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"],
        ),
        ("load_balance_hosts", &["disable", "random"]),
        ("sslcertmode", &["disable", "allow", "require"]),
    ];
    for (key, values) in allowed {
        if let Some(value) = settings.get(*key)
            && !values.contains(&value.as_str())
        {
            return Err(format!("invalid {key} value: \"{value}\""));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(s: &Settings, k: &str) -> Option<String> {
        s.get(k).cloned()
    }

    #[test]
    fn keyword_strings() {
        let s = parse("host=127.0.0.1  port = 5433 user='a b\\'c' dbname=x\\ y").unwrap();
        assert_eq!(get(&s, "host").as_deref(), Some("127.0.0.1"));
        assert_eq!(get(&s, "port").as_deref(), Some("5433"));
        assert_eq!(get(&s, "user").as_deref(), Some("a b'c"));
        assert_eq!(get(&s, "dbname").as_deref(), Some("x y"));
        assert_eq!(
            parse("bogus=1").unwrap_err(),
            "invalid connection option \"bogus\""
        );
        assert!(parse("host").unwrap_err().contains("missing \"=\""));
        assert!(parse("host='x").unwrap_err().contains("unterminated"));
    }

    #[test]
    fn uris() {
        let s = parse("postgresql://u%40x:p%3Aw@[::1]:5433,h2:7/db%2F1?sslmode=disable").unwrap();
        assert_eq!(get(&s, "user").as_deref(), Some("u@x"));
        assert_eq!(get(&s, "password").as_deref(), Some("p:w"));
        assert_eq!(get(&s, "host").as_deref(), Some("::1,h2"));
        assert_eq!(get(&s, "port").as_deref(), Some("5433,7"));
        assert_eq!(get(&s, "dbname").as_deref(), Some("db/1"));
        assert_eq!(get(&s, "sslmode").as_deref(), Some("disable"));
        let s = parse("postgres://%2Ftmp:1/db").unwrap();
        assert_eq!(get(&s, "host").as_deref(), Some("/tmp"));
        let s = parse("postgres://a:b@c:d:e/f").unwrap();
        assert_eq!(get(&s, "port").as_deref(), Some("d:e"));
        assert_eq!(
            parse("postgres://x:1/d?bad=1").unwrap_err(),
            "invalid URI query parameter: \"bad\""
        );
        assert!(parse("postgres://").unwrap().is_empty());
    }

    #[test]
    fn values_are_checked() {
        assert!(check_values(&parse("sslmode=bogus").unwrap()).is_err());
        assert!(check_values(&parse("target_session_attrs=any sslmode=require").unwrap()).is_ok());
        assert!(is_conninfo("port=1") && is_conninfo("postgres://") && !is_conninfo("trader"));
    }
}
