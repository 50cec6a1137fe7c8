//! `global/pg_control` of a PostgreSQL 16 cluster, read without PostgreSQL's tools (the npm
//! and theseus packages ship no `pg_controldata`): whether it was written by a server of this
//! architecture and build, and the state its server left it in.
//!
//! The layout is PostgreSQL 16's `ControlFileData` (`src/include/catalog/pg_control.h`,
//! `PG_CONTROL_VERSION` 1300) on a 64-bit, 8-byte-aligned platform — x86_64 and aarch64 alike.
//! The fields and offsets used here were checked against a file written by initdb 16.14:
//! `pg_control_version` at 8, `state` at 16, `maxAlign` at 204, `floatFormat` at 208, the
//! block and segment sizes from 216, `float8ByVal` at 248, the CRC-32C of bytes 0..288 at 288.
//! A file from a machine of the other byte order shows a byte-swapped `pg_control_version`
//! (as `pg_controldata` itself tells it); one from a 32-bit build has another layout, so its
//! CRC does not match at 288.

/// `PG_CONTROL_VERSION` of PostgreSQL 16.
pub const PG_CONTROL_VERSION: u32 = 1300;
/// `CATALOG_VERSION_NO` of PostgreSQL 16 (the same for every 16.x release).
pub const CATALOG_VERSION_NO: u32 = 202_307_071;
/// `offsetof(ControlFileData, crc)` in the layout above.
const CRC_OFFSET: usize = 288;
/// `FLOATFORMAT_VALUE`: a double written by the server, to tell float formats apart.
const FLOAT_FORMAT: f64 = 1_234_567.0;

/// `DBState`: what the server that last wrote the file was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Startup,
    ShutDown,
    ShutDownInRecovery,
    ShuttingDown,
    InCrashRecovery,
    InArchiveRecovery,
    InProduction,
    Unknown(u32),
}

impl State {
    fn from_raw(raw: u32) -> State {
        match raw {
            0 => State::Startup,
            1 => State::ShutDown,
            2 => State::ShutDownInRecovery,
            3 => State::ShuttingDown,
            4 => State::InCrashRecovery,
            5 => State::InArchiveRecovery,
            6 => State::InProduction,
            other => State::Unknown(other),
        }
    }

    /// True when the server stopped cleanly (a shutdown checkpoint was written).
    pub fn is_clean(self) -> bool {
        matches!(self, State::ShutDown | State::ShutDownInRecovery)
    }

    /// As `pg_controldata` prints it.
    pub fn describe(self) -> String {
        match self {
            State::Startup => "starting up".into(),
            State::ShutDown => "shut down".into(),
            State::ShutDownInRecovery => "shut down in recovery".into(),
            State::ShuttingDown => "shutting down".into(),
            State::InCrashRecovery => "in crash recovery".into(),
            State::InArchiveRecovery => "in archive recovery".into(),
            State::InProduction => "in production".into(),
            State::Unknown(raw) => format!("unrecognized status code {raw}"),
        }
    }
}

/// What a control file says, once it is known to be one this PostgreSQL 16 can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlFile {
    pub state: State,
}

/// Why a control file cannot be used by this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Shorter than the fields read here.
    Truncated(usize),
    /// Written on a machine of the other byte order.
    OtherByteOrder,
    /// Another control file version (another major release).
    OtherVersion { pg_control_version: u32 },
    /// The checksum does not match: written by a build of another layout (a 32-bit one), or
    /// damaged.
    Checksum,
    /// A setting fixed at build time differs from this build's: `what` names it, with both values.
    OtherBuild { what: String },
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Truncated(len) => write!(f, "it is {len} bytes long, too short"),
            Unreadable::OtherByteOrder => {
                f.write_str("it was written on a machine of the other byte order")
            }
            Unreadable::OtherVersion { pg_control_version } => write!(
                f,
                "its format version is {pg_control_version}, PostgreSQL 16's is {PG_CONTROL_VERSION}"
            ),
            Unreadable::Checksum => f.write_str(
                "its checksum does not match: written by a build of another architecture \
                 (a 32-bit one), or damaged",
            ),
            Unreadable::OtherBuild { what } => write!(f, "it was written by a build with {what}"),
        }
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_ne_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

/// Reads a `global/pg_control` file's bytes.
pub fn parse(bytes: &[u8]) -> Result<ControlFile, Unreadable> {
    if bytes.len() < CRC_OFFSET + 4 {
        return Err(Unreadable::Truncated(bytes.len()));
    }
    let version = u32_at(bytes, 8);
    if version != PG_CONTROL_VERSION {
        // pg_controldata's own test for a byte-swapped file.
        if version.is_multiple_of(65536) && version / 65536 != 0 {
            return Err(Unreadable::OtherByteOrder);
        }
        return Err(Unreadable::OtherVersion {
            pg_control_version: version,
        });
    }
    if crc32c(&bytes[..CRC_OFFSET]) != u32_at(bytes, CRC_OFFSET) {
        return Err(Unreadable::Checksum);
    }
    let float_format = f64::from_ne_bytes(bytes[208..216].try_into().expect("8 bytes"));
    let fixed = [
        ("catalog version", u32_at(bytes, 12), CATALOG_VERSION_NO),
        ("maximum data alignment", u32_at(bytes, 204), 8),
        ("block size", u32_at(bytes, 216), 8192),
        ("blocks per segment", u32_at(bytes, 220), 131_072),
        ("WAL block size", u32_at(bytes, 224), 8192),
        ("maximum identifier length", u32_at(bytes, 232), 64),
        ("maximum index keys", u32_at(bytes, 236), 32),
        ("TOAST chunk size", u32_at(bytes, 240), 1996),
        ("large object chunk size", u32_at(bytes, 244), 2048),
        ("float8 passed by value", u32::from(bytes[248]), 1),
    ];
    if float_format != FLOAT_FORMAT {
        return Err(Unreadable::OtherBuild {
            what: "another floating-point format".into(),
        });
    }
    if let Some((what, found, ours)) = fixed.iter().find(|(_, found, ours)| found != ours) {
        return Err(Unreadable::OtherBuild {
            what: format!("{what} {found} (this PostgreSQL 16 has {ours})"),
        });
    }
    Ok(ControlFile {
        state: State::from_raw(u32_at(bytes, 16)),
    })
}

/// CRC-32C (Castagnoli), as PostgreSQL checksums its control file.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ if crc & 1 == 1 { 0x82F6_3B78 } else { 0 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control file as initdb 16 writes it on x86_64, with `state`.
    fn control_file(state: u32) -> Vec<u8> {
        let mut b = vec![0u8; 8192];
        let mut put = |offset: usize, value: u32| {
            b[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        };
        put(8, PG_CONTROL_VERSION);
        put(12, CATALOG_VERSION_NO);
        put(16, state);
        put(204, 8);
        for (offset, value) in [
            (216, 8192),
            (220, 131_072),
            (224, 8192),
            (228, 16 << 20),
            (232, 64),
            (236, 32),
            (240, 1996),
            (244, 2048),
        ] {
            put(offset, value);
        }
        b[208..216].copy_from_slice(&FLOAT_FORMAT.to_ne_bytes());
        b[248] = 1;
        seal(&mut b);
        b
    }

    fn seal(b: &mut [u8]) {
        let crc = crc32c(&b[..CRC_OFFSET]);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_ne_bytes());
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn the_state_tells_a_clean_shutdown_from_a_crash() {
        assert_eq!(parse(&control_file(1)).unwrap().state, State::ShutDown);
        assert!(parse(&control_file(1)).unwrap().state.is_clean());
        let crashed = parse(&control_file(6)).unwrap().state;
        assert_eq!(crashed, State::InProduction);
        assert!(!crashed.is_clean());
        assert_eq!(crashed.describe(), "in production");
    }

    #[test]
    fn another_architecture_or_build_is_named() {
        let mut swapped = control_file(1);
        swapped[8..12].copy_from_slice(&PG_CONTROL_VERSION.swap_bytes().to_ne_bytes());
        assert_eq!(parse(&swapped), Err(Unreadable::OtherByteOrder));

        let mut pg15 = control_file(1);
        pg15[8..12].copy_from_slice(&1300u32.wrapping_sub(1).to_ne_bytes());
        assert!(matches!(parse(&pg15), Err(Unreadable::OtherVersion { .. })));

        let mut damaged = control_file(1);
        damaged[40] ^= 1;
        assert_eq!(parse(&damaged), Err(Unreadable::Checksum));

        let mut big_blocks = control_file(1);
        big_blocks[216..220].copy_from_slice(&32768u32.to_ne_bytes());
        seal(&mut big_blocks);
        let err = parse(&big_blocks).unwrap_err().to_string();
        assert!(err.contains("block size 32768"), "{err}");

        assert_eq!(parse(&[0; 100]), Err(Unreadable::Truncated(100)));
    }
}
