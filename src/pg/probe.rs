//! A pg_isready-equivalent probe, spoken natively over the wire protocol.
//!
//! Follows libpq's `PQping` (src/interfaces/libpq/fe-connect.c): connect, send a protocol 3.0
//! StartupMessage, read the first message. An authentication request (`R`), or any error with a
//! SQLSTATE other than 57P03, means the server is up and accepting; `57P03` (cannot_connect_now:
//! starting up, shutting down, recovering) means it is rejecting; anything else means no
//! response. The connection is closed before authenticating, so no password is needed.
//!
//! A probe that cannot even open its socket because pgwarden itself is out of descriptors or
//! memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) made no attempt: it says nothing about the
//! server, and is reported as [`PingStatus::NoAttempt`], never as "no response" (which the
//! supervisor would count towards a hang).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// What a probe found, with pg_isready's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingStatus {
    /// The server accepts connections (exit 0).
    Accepting,
    /// The server answered but refuses connections right now (exit 1).
    Rejecting,
    /// Nothing answered, or not as PostgreSQL (exit 2).
    NoResponse,
    /// No attempt was made (exit 3): the parameters were unusable, or pgwarden could not open
    /// a socket ([`is_own_exhaustion`]).
    NoAttempt,
}

impl PingStatus {
    pub fn exit_code(self) -> i32 {
        match self {
            PingStatus::Accepting => 0,
            PingStatus::Rejecting => 1,
            PingStatus::NoResponse => 2,
            PingStatus::NoAttempt => 3,
        }
    }

    /// The words pg_isready prints after `HOST:PORT - `.
    pub fn describe(self) -> &'static str {
        match self {
            PingStatus::Accepting => "accepting connections",
            PingStatus::Rejecting => "rejecting connections",
            PingStatus::NoResponse => "no response",
            PingStatus::NoAttempt => "no attempt",
        }
    }
}

/// SQLSTATE cannot_connect_now.
const CANNOT_CONNECT_NOW: &[u8] = b"57P03";

/// Probes `addr` once, giving up after `timeout`.
pub async fn ping(addr: SocketAddr, user: &str, database: &str, timeout: Duration) -> PingStatus {
    tokio::time::timeout(timeout, ping_inner(addr, user, database))
        .await
        .unwrap_or(PingStatus::NoResponse)
}

async fn ping_inner(addr: SocketAddr, user: &str, database: &str) -> PingStatus {
    let stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => return failed_connect(&e),
    };
    let _ = stream.set_nodelay(true);
    ping_stream(stream, user, database).await
}

/// Whether `e` is pgwarden's own lack of resources (descriptors, buffers, memory) rather than
/// anything the other side did.
pub fn is_own_exhaustion(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|code| {
        [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM]
            .iter()
            .any(|errno| *errno as i32 == code)
    })
}

/// A connect that failed: no attempt when pgwarden could not make one, else no response.
fn failed_connect(e: &std::io::Error) -> PingStatus {
    if is_own_exhaustion(e) {
        PingStatus::NoAttempt
    } else {
        PingStatus::NoResponse
    }
}

/// Where a server may listen: a TCP address, or a Unix socket file (`DIR/.s.PGSQL.PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Endpoint {
    /// The socket file libpq uses for a socket directory and a port.
    pub fn unix(dir: &std::path::Path, port: u16) -> Endpoint {
        Endpoint::Unix(dir.join(format!(".s.PGSQL.{port}")))
    }
}

/// Encryption a client insists on before it sends its startup message (libpq's
/// `sslmode=require` and stronger, `gssencmode=require`). The probe does not encrypt: it asks,
/// and an agreeing server is taken as up (it is a PostgreSQL server that answered), a refusing
/// one as "no response", which is what libpq reports when the required encryption is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    #[default]
    None,
    RequireSsl,
    RequireGss,
}

/// One probe of `endpoint`, as `user` on `database`; `timeout` covers connect and answer
/// (`None`: wait as long as it takes, like libpq's `connect_timeout=0`).
pub async fn ping_endpoint(
    endpoint: &Endpoint,
    user: &str,
    database: &str,
    encryption: Encryption,
    timeout: Option<Duration>,
) -> PingStatus {
    let attempt = async {
        match endpoint {
            Endpoint::Tcp(addr) => match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    ping_encrypted(stream, user, database, encryption).await
                }
                Err(e) => failed_connect(&e),
            },
            Endpoint::Unix(path) => match UnixStream::connect(path).await {
                Ok(stream) => ping_encrypted(stream, user, database, encryption).await,
                Err(e) => failed_connect(&e),
            },
        }
    };
    match timeout {
        Some(limit) => tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or(PingStatus::NoResponse),
        None => attempt.await,
    }
}

/// SSLRequest / GSSENCRequest codes (protocol 1234.5679 and 1234.5680).
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

async fn ping_encrypted<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    user: &str,
    database: &str,
    encryption: Encryption,
) -> PingStatus {
    let (code, yes) = match encryption {
        Encryption::None => return ping_stream(stream, user, database).await,
        Encryption::RequireSsl => (SSL_REQUEST, b'S'),
        Encryption::RequireGss => (GSSENC_REQUEST, b'G'),
    };
    let mut request = 8u32.to_be_bytes().to_vec();
    request.extend_from_slice(&code.to_be_bytes());
    let mut answer = [0u8; 1];
    if stream.write_all(&request).await.is_err() || stream.read_exact(&mut answer).await.is_err() {
        return PingStatus::NoResponse;
    }
    match answer[0] {
        a if a == yes => PingStatus::Accepting,
        // A refusal: libpq gives up on this server ("server does not support SSL, but SSL was
        // required"), which PQping reports as no response. An error (a pre-startup failure,
        // 57P03 included) is classified like an answer to the startup message.
        b'E' => classify_error(&mut stream).await,
        _ => PingStatus::NoResponse,
    }
}

/// Reads the rest of an ErrorResponse whose type byte was consumed.
async fn classify_error<S: AsyncRead + Unpin>(stream: &mut S) -> PingStatus {
    let mut length = [0u8; 4];
    if stream.read_exact(&mut length).await.is_err() {
        return PingStatus::NoResponse;
    }
    let length = u32::from_be_bytes(length) as usize;
    if !(4..=1 << 16).contains(&length) {
        return PingStatus::NoResponse;
    }
    let mut body = vec![0u8; length - 4];
    if stream.read_exact(&mut body).await.is_err() {
        return PingStatus::NoResponse;
    }
    match sqlstate(&body) {
        Some(code) if code == CANNOT_CONNECT_NOW => PingStatus::Rejecting,
        Some(_) => PingStatus::Accepting,
        None => PingStatus::NoResponse,
    }
}

/// Sends the startup message on an open connection and classifies the first answer.
async fn ping_stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    user: &str,
    database: &str,
) -> PingStatus {
    if stream
        .write_all(&startup_message(user, database))
        .await
        .is_err()
    {
        return PingStatus::NoResponse;
    }
    let mut header = [0u8; 5];
    if stream.read_exact(&mut header).await.is_err() {
        return PingStatus::NoResponse;
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !matches!(header[0], b'R' | b'v' | b'E') || !(4..=1 << 16).contains(&length) {
        return PingStatus::NoResponse;
    }
    // Read the whole message: closing with unread data would reset the connection, and the
    // server would log "could not receive data from client". A plain close is silent.
    let mut body = vec![0u8; length - 4];
    if stream.read_exact(&mut body).await.is_err() {
        return PingStatus::NoResponse;
    }
    match header[0] {
        // An authentication request, or NegotiateProtocolVersion: only a live server sends them.
        b'R' | b'v' => PingStatus::Accepting,
        _ => match sqlstate(&body) {
            Some(code) if code == CANNOT_CONNECT_NOW => PingStatus::Rejecting,
            Some(_) => PingStatus::Accepting,
            None => PingStatus::NoResponse,
        },
    }
}

/// A protocol 3.0 StartupMessage: length, 196608, `user`, `database`, terminated by a NUL.
pub fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for (key, value) in [("user", user), ("database", database)] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

/// The `C` (SQLSTATE) field of an ErrorResponse body, if it is five characters long.
fn sqlstate(body: &[u8]) -> Option<&[u8]> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if kind == b'C' {
            return Some(&tail[..end]).filter(|code| code.len() == 5);
        }
        rest = &tail[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn startup_message_layout() {
        let m = startup_message("trader", "db");
        assert_eq!(
            u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(&m[4..8], &196_608u32.to_be_bytes());
        assert_eq!(&m[8..], b"user\0trader\0database\0db\0\0");
    }

    #[test]
    fn sqlstate_is_found() {
        assert_eq!(
            sqlstate(b"SFATAL\0C57P03\0Mthe database system is starting up\0\0"),
            Some(&b"57P03"[..])
        );
        assert_eq!(sqlstate(b"SFATAL\0Mno code\0\0"), None);
    }

    /// A fake listener that answers the startup message with fixed bytes.
    async fn answer(bytes: Vec<u8>) -> PingStatus {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(&bytes).await;
        });
        ping(addr, "u", "d", Duration::from_secs(2)).await
    }

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[tokio::test]
    async fn classifies_answers_like_pqping() {
        let sasl = message(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0");
        assert_eq!(answer(sasl).await, PingStatus::Accepting);
        let starting = message(b'E', b"SFATAL\0C57P03\0Mstarting up\0\0");
        assert_eq!(answer(starting).await, PingStatus::Rejecting);
        let bad_password = message(b'E', b"SFATAL\0C28P01\0Mx\0\0");
        assert_eq!(answer(bad_password).await, PingStatus::Accepting);
        let no_code = message(b'E', b"SFATAL\0Mx\0\0");
        assert_eq!(answer(no_code).await, PingStatus::NoResponse);
        let http = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
        assert_eq!(answer(http).await, PingStatus::NoResponse);
        assert_eq!(answer(vec![]).await, PingStatus::NoResponse);
    }

    /// A probe that cannot open a socket (the process's descriptors are all taken) made no
    /// attempt: it is not the server's silence.
    #[test]
    fn out_of_descriptors_is_no_attempt_not_no_response() {
        let emfile = std::io::Error::from_raw_os_error(nix::errno::Errno::EMFILE as i32);
        let enfile = std::io::Error::from_raw_os_error(nix::errno::Errno::ENFILE as i32);
        let refused = std::io::Error::from_raw_os_error(nix::errno::Errno::ECONNREFUSED as i32);
        assert_eq!(failed_connect(&emfile), PingStatus::NoAttempt);
        assert_eq!(failed_connect(&enfile), PingStatus::NoAttempt);
        assert_eq!(failed_connect(&refused), PingStatus::NoResponse);
        assert!(!is_own_exhaustion(&std::io::Error::other("x")));
    }

    #[tokio::test]
    async fn nothing_listening_is_no_response() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert_eq!(
            ping(addr, "u", "d", Duration::from_secs(2)).await,
            PingStatus::NoResponse
        );
    }
}
