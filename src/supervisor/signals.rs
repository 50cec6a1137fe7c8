//! OS signals, turned into supervisor events.
//!
//! SIGTERM and SIGINT ask for a shutdown; a second one asks for an immediate shutdown. SIGHUP
//! asks for a reload. SIGUSR1 asks for a snapshot restore's swap
//! ([`crate::backup::snapshot_swap`]: acted on only with its request file). Handlers are installed at startup, before any long step, so that a signal
//! during install or initdb is remembered and acted on once the step is over (the step finishes
//! atomically rather than being torn).

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tokio::sync::mpsc;

/// What a signal asks the supervisor to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop the server the configured way (fast by default), then exit.
    Shutdown { signal: i32 },
    /// A second stop request: stop at once.
    Immediate,
    /// Reload the server's configuration.
    Reload,
    /// `snapshot restore`: stop the server, swap the staged copy in, start it again.
    Swap,
}

/// Installs the handlers and returns the receiving end of the event channel.
pub fn install() -> std::io::Result<mpsc::UnboundedReceiver<Control>> {
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stopping = false;
        while let Some(signal) = signals.next().await {
            let event = match signal {
                SIGHUP => Control::Reload,
                SIGUSR1 => Control::Swap,
                _ if stopping => Control::Immediate,
                _ => {
                    stopping = true;
                    Control::Shutdown { signal }
                }
            };
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
