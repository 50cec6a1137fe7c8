//! The endpoint's connections, bounded so that no client can starve the supervisor.
//!
//! Any local user can connect to the endpoint, and it runs on the supervisor's own runtime and
//! in its process: before these bounds, ~20,000 idle connections (a request line each, never
//! finished) took every descriptor pgwarden had, its health probes failed to open sockets, the
//! hang detector killed a healthy server, and the restart failed with "Too many open files".
//! Now ([`Bounds`]):
//! - a **cap** on open connections, derived from the open-file limit
//!   ([`Bounds::for_fd_limit`]): a connection over it is accepted and closed at once (counted
//!   as refused), so it never holds a descriptor;
//! - a **header read timeout**: a request's line and headers must arrive within it (hyper's
//!   `header_read_timeout`, which also bounds the wait for the next request of a kept-alive
//!   connection);
//! - a **request-size bound**: a request line and headers longer than [`MAX_HEADER_BYTES`] are
//!   answered `431`;
//! - an **idle timeout** for the whole connection ([`IdleTimeout`]): no byte read or written
//!   for that long closes it (a client that stops reading its response, or dribbles a body);
//! - accept errors (out of descriptors, buffers) back off and go on: they never spin the loop
//!   nor end the endpoint.
//!
//! What happens past the bounds is counted in [`Counters`], which `/livez`, `/metrics` and
//! `pgwarden doctor` report.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

/// The most connections the endpoint ever holds, whatever the open-file limit.
pub const MAX_CONNECTIONS: u64 = 256;
/// A request's line and headers must arrive within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection on which nothing was read or written for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request line and headers accepted (`431 Request Header Fields Too Large` past
/// it). hyper reads at least this much at a time.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The most header fields a request may have.
const MAX_HEADERS: usize = 32;
/// After an accept error the loop waits this long, doubling to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Refusals are logged at the first and then at most once in this long.
const LOG_REFUSED_EVERY: Duration = Duration::from_secs(60);

/// The endpoint's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Connections open at once; more are closed at once.
    pub cap: u64,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
}

impl Bounds {
    /// The bounds for an open-file limit of `limit`: a quarter of it for connections (at most
    /// [`MAX_CONNECTIONS`]). A connection holds at most two descriptors (its socket and, for
    /// `/metrics`, the one query connection to the server, shared by all), so the endpoint
    /// never holds more than half of the limit; the other half at least is the supervisor's
    /// reserve (the postmaster's pipes, a spawn, the probes, the status file), which the
    /// endpoint cannot reach. No descriptor is kept spare for the accept loop: a connection
    /// over the cap is accepted and closed at once, which needs one descriptor for an instant.
    pub fn for_fd_limit(limit: u64) -> Bounds {
        Bounds {
            cap: (limit / 4).clamp(1, MAX_CONNECTIONS),
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
        }
    }
}

/// What the endpoint's connections did, since it started.
#[derive(Debug, Default)]
pub struct Counters {
    cap: u64,
    open: AtomicU64,
    refused: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    too_large: AtomicU64,
    accept_errors: AtomicU64,
}

/// [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Connections open now.
    pub open: u64,
    /// The cap on open connections.
    pub cap: u64,
    /// Connections closed at once because the cap was reached.
    pub refused: u64,
    /// Connections closed because a request's headers did not arrive in time.
    pub header_timeouts: u64,
    /// Connections closed because nothing moved on them for the idle timeout.
    pub idle_timeouts: u64,
    /// Requests refused because their line and headers were too long.
    pub too_large: u64,
    /// Failed accepts (e.g. out of descriptors), each followed by a pause.
    pub accept_errors: u64,
}

impl Counters {
    pub fn new(cap: u64) -> Counters {
        Counters {
            cap,
            ..Counters::default()
        }
    }

    pub fn figures(&self) -> Figures {
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Figures {
            open: read(&self.open),
            cap: self.cap,
            refused: read(&self.refused),
            header_timeouts: read(&self.header_timeouts),
            idle_timeouts: read(&self.idle_timeouts),
            too_large: read(&self.too_large),
            accept_errors: read(&self.accept_errors),
        }
    }

    fn add(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl std::fmt::Display for Figures {
    /// `open=3 cap=64 refused=0 header_timeouts=0 idle_timeouts=0 too_large=0 accept_errors=0`:
    /// `/livez`'s `X-Pgwarden-Http` header.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "open={} cap={} refused={} header_timeouts={} idle_timeouts={} too_large={} accept_errors={}",
            self.open,
            self.cap,
            self.refused,
            self.header_timeouts,
            self.idle_timeouts,
            self.too_large,
            self.accept_errors
        )
    }
}

/// Accepts connections on `listener` and serves `router` on each, within `bounds`, for the
/// rest of the process.
pub async fn serve(listener: TcpListener, router: Router, bounds: Bounds, counters: Arc<Counters>) {
    let permits = Arc::new(Semaphore::new(bounds.cap as usize));
    let mut backoff = ACCEPT_BACKOFF;
    let mut refusal_logged: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF;
                stream
            }
            // The client gave up before the accept: nothing to do.
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted) => continue,
            Err(e) => {
                let errors = Counters::add(&counters.accept_errors);
                if backoff == ACCEPT_BACKOFF {
                    tracing::warn!(
                        errors,
                        "the HTTP endpoint cannot accept a connection: {e}; pausing (the supervisor is not affected)"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let refused = Counters::add(&counters.refused);
            if refusal_logged.is_none_or(|at| at.elapsed() >= LOG_REFUSED_EVERY) {
                refusal_logged = Some(Instant::now());
                tracing::warn!(
                    refused,
                    cap = bounds.cap,
                    "the HTTP endpoint has {} connections open, its cap: closing new ones at once",
                    bounds.cap
                );
            }
            drop(stream);
            continue;
        };
        let (router, counters) = (router.clone(), counters.clone());
        tokio::spawn(async move {
            serve_connection(stream, router, bounds, &counters).await;
            drop(permit);
        });
    }
}

/// One connection, within the header timeout, size bound and idle timeout.
async fn serve_connection(stream: TcpStream, router: Router, bounds: Bounds, counters: &Counters) {
    counters.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(counters);
    let _ = stream.set_nodelay(true);
    let idle = IdleTimeout::new(stream, bounds.idle_timeout);
    let timed_out = idle.timed_out.clone();
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read_timeout)
        .max_header_size(bounds.max_header_bytes)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(idle), TowerToHyperService::new(router))
        .await;
    if timed_out.load(Ordering::Relaxed) {
        Counters::add(&counters.idle_timeouts);
    } else if let Err(e) = result {
        if e.is_timeout() {
            Counters::add(&counters.header_timeouts);
        } else if e.is_parse_too_large() {
            Counters::add(&counters.too_large);
        }
    }
}

/// Counts a connection as open while it lives.
struct OpenGuard<'a>(&'a Counters);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that fails with `TimedOut` once nothing was read or written on it for `after`.
///
/// The deadline moves on with every read or write that completes; it is checked whenever one
/// waits, so a connection whose handler is running (bounded by its own timeout) is not cut.
struct IdleTimeout<S> {
    inner: S,
    after: Duration,
    deadline: Pin<Box<Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, after: Duration) -> Self {
        IdleTimeout {
            inner,
            after,
            deadline: Box::pin(tokio::time::sleep(after)),
            timed_out: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Something moved: the deadline starts again.
    fn moved(&mut self) {
        let next = Instant::now() + self.after;
        self.deadline.as_mut().reset(next);
    }

    /// Nothing moved: `TimedOut` if the deadline passed, else wait.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was idle for too long",
            )));
        }
        Poll::Pending
    }

    fn after<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.moved();
                Poll::Ready(result)
            }
            Poll::Pending => self.waiting(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.after(cx, poll)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.after(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.after(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A bounded wait for anything in these tests: a hung test fails instead of hanging.
    const WAIT: Duration = Duration::from_secs(20);

    fn bounds(cap: u64, header_read_timeout: Duration) -> Bounds {
        Bounds {
            cap,
            header_read_timeout,
            idle_timeout: IDLE_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
        }
    }

    /// An endpoint on loopback that answers `GET /` with `ok`.
    async fn endpoint(bounds: Bounds) -> (std::net::SocketAddr, Arc<Counters>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::new(bounds.cap));
        let router = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(serve(listener, router, bounds, counters.clone()));
        (address, counters)
    }

    /// Everything the server sends until it closes the connection (a reset counts as closed).
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the server did not close the connection");
        String::from_utf8_lossy(&answer).into_owned()
    }

    async fn counted(counters: &Counters, what: impl Fn(Figures) -> u64) -> u64 {
        let deadline = Instant::now() + WAIT;
        while what(counters.figures()) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        what(counters.figures())
    }

    #[tokio::test]
    async fn a_request_is_answered_within_the_bounds() {
        let (address, counters) = endpoint(bounds(4, HEADER_READ_TIMEOUT)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = until_closed(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
        assert_eq!(counters.figures().refused, 0);
    }

    #[tokio::test]
    async fn an_oversize_request_is_refused_with_431() {
        let (address, counters) = endpoint(bounds(4, HEADER_READ_TIMEOUT)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        let mut request = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for n in 0..10 {
            request.extend_from_slice(format!("X-Filler-{n}: {}\r\n", "a".repeat(1000)).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        assert!(request.len() > MAX_HEADER_BYTES);
        // The server may close before reading it all.
        let _ = stream.write_all(&request).await;
        let answer = until_closed(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
        assert_eq!(counted(&counters, |f| f.too_large).await, 1);
    }

    #[tokio::test]
    async fn a_slow_header_is_cut() {
        let (address, counters) = endpoint(bounds(4, Duration::from_millis(200))).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        // A request line, and never the end of the headers.
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let answer = until_closed(&mut stream).await;
        assert!(!answer.contains("200 OK"), "{answer}");
        assert_eq!(counted(&counters, |f| f.header_timeouts).await, 1);
        assert_eq!(counted(&counters, |f| u64::from(f.open == 0)).await, 1);
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_closed_at_once_and_counted() {
        let (address, counters) = endpoint(bounds(1, Duration::from_secs(600))).await;
        // Holds the only place: a request line, never finished.
        let mut holder = TcpStream::connect(address).await.unwrap();
        holder.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(counted(&counters, |f| f.open).await, 1);
        let mut over = TcpStream::connect(address).await.unwrap();
        let _ = over.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let answer = until_closed(&mut over).await;
        assert_eq!(answer, "", "closed without an answer");
        assert_eq!(counted(&counters, |f| f.refused).await, 1);
        // The place is free again once the holder goes.
        drop(holder);
        let deadline = Instant::now() + WAIT;
        while counters.figures().open > 0 {
            assert!(
                Instant::now() < deadline,
                "the holder's place was never freed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut next = TcpStream::connect(address).await.unwrap();
        next.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert!(until_closed(&mut next).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_connection_where_nothing_moves_times_out() {
        let (client, server) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(server, Duration::from_millis(100));
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(WAIT, idle.read(&mut buf)).await;
        let error = read.expect("cut within the wait").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(idle.timed_out.load(Ordering::Relaxed));
        drop(client);
    }

    #[test]
    fn the_cap_leaves_most_of_the_open_file_limit_to_the_supervisor() {
        assert_eq!(Bounds::for_fd_limit(256).cap, 64);
        assert_eq!(Bounds::for_fd_limit(1024).cap, MAX_CONNECTIONS);
        assert_eq!(Bounds::for_fd_limit(1 << 20).cap, MAX_CONNECTIONS);
        assert_eq!(Bounds::for_fd_limit(2).cap, 1);
        for limit in [16, 64, 256, 1024, 65_536] {
            // Two descriptors at most per connection: half the limit stays the supervisor's.
            assert!(2 * Bounds::for_fd_limit(limit).cap <= limit / 2, "{limit}");
        }
    }
}
