//! Does a role's stored password (`pg_authid.rolpassword`) accept a password? Answered here,
//! without logging in: what a SCRAM-SHA-256 (or md5) login would prove, at the cost of one
//! PBKDF2 (~1 ms) instead of a second backend and its authentication exchange (BENCHMARKS.md,
//! row 3). The password is prepared as libpq and tokio-postgres prepare it for a login
//! (SASLprep when it is valid UTF-8 and allowed, else its raw bytes), so the answer is the
//! login's answer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// What a stored password says about a candidate password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepts,
    Rejects,
    /// A format this module does not read: the caller must find out by logging in.
    Unknown,
}

/// Checks `password` for role `user` against `stored` (`pg_authid.rolpassword`).
pub fn check(stored: &str, user: &str, password: &str) -> Verdict {
    if let Some(scram) = stored.strip_prefix("SCRAM-SHA-256$") {
        return check_scram(scram, password).unwrap_or(Verdict::Unknown);
    }
    if stored.len() == 35 && stored.starts_with("md5") {
        let expected = postgres_protocol::password::md5(password.as_bytes(), user);
        return if expected == stored {
            Verdict::Accepts
        } else {
            Verdict::Rejects
        };
    }
    Verdict::Unknown
}

/// `<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5803, as PostgreSQL stores it).
fn check_scram(secret: &str, password: &str) -> Option<Verdict> {
    let (params, keys) = secret.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    let (stored_key, _server_key) = keys.split_once(':')?;
    let iterations: u32 = iterations.parse().ok().filter(|&i| i > 0)?;
    let salt = STANDARD.decode(salt).ok()?;
    let stored_key = STANDARD.decode(stored_key).ok()?;

    let salted = hi(&prepare(password), &salt, iterations);
    let mut mac = Hmac::<Sha256>::new_from_slice(&salted).ok()?;
    mac.update(b"Client Key");
    let client_key = mac.finalize().into_bytes();
    let ours = Sha256::digest(client_key);
    Some(if ours.as_slice() == stored_key.as_slice() {
        Verdict::Accepts
    } else {
        Verdict::Rejects
    })
}

/// SASLprep (RFC 4013) when the password allows it, else the bytes as they are: what libpq,
/// tokio-postgres and PostgreSQL's own verifier builder do.
fn prepare(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(prepared) => prepared.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

/// PBKDF2-HMAC-SHA-256 with one output block: SCRAM's `Hi()` (RFC 5802).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = Hmac::<Sha256>::new_from_slice(password).expect("HMAC takes any key length");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut previous: [u8; 32] = mac.finalize().into_bytes().into();
    let mut result = previous;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&previous);
        previous = mac.finalize().into_bytes().into();
        for (r, p) in result.iter_mut().zip(previous) {
            *r ^= p;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_verifiers_made_by_the_client_library_are_checked() {
        for password in [
            "trader",
            "s3cret with spaces",
            "pässwörd",
            "\u{00AD}soft-hyphen",
        ] {
            let stored = postgres_protocol::password::scram_sha_256(password.as_bytes());
            assert_eq!(
                check(&stored, "trader", password),
                Verdict::Accepts,
                "{password}"
            );
            assert_eq!(
                check(&stored, "trader", &format!("{password}x")),
                Verdict::Rejects
            );
        }
    }

    #[test]
    fn a_verifier_made_by_postgresql_is_checked() {
        // `SELECT rolpassword FROM pg_authid` after initdb --pwfile with "trader" (PostgreSQL 16).
        let stored = "SCRAM-SHA-256$4096:YX1ZTcdOp0JIJrgwphcRmA==$\
                      dIn/LPSwHHE6HJT85diTcfroaoCHdBDBojbLKNRZZzQ=:\
                      p49jPMnClo+0+sTJm9PsYkHnRP+oTDMBCQw+g1j2Tqg=";
        assert_eq!(check(stored, "trader", "trader"), Verdict::Accepts);
        assert_eq!(check(stored, "trader", "Trader"), Verdict::Rejects);
    }

    #[test]
    fn md5_and_unknown_formats() {
        let md5 = postgres_protocol::password::md5(b"trader", "trader");
        assert_eq!(check(&md5, "trader", "trader"), Verdict::Accepts);
        assert_eq!(check(&md5, "other", "trader"), Verdict::Rejects);
        assert_eq!(check("trader", "trader", "trader"), Verdict::Unknown);
        assert_eq!(
            check("SCRAM-SHA-256$broken", "trader", "trader"),
            Verdict::Unknown
        );
    }
}
