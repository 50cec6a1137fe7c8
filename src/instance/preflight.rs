//! Checks made before anything is installed or initialised, so that a launch that cannot work
//! fails at once with nothing changed.

use crate::error::{Error, Result};
use std::net::{IpAddr, SocketAddr, TcpListener};

/// Fails with [`Error::PortInUse`] (naming the holder when /proc tells) if `address:port` cannot
/// be bound: a runtime condition (exit 1), while an address this machine lacks or a privileged
/// port this user may not bind is an invalid setting ([`Error::Config`], exit 2). The listener is dropped at once; postgres
/// binds the port itself moments later.
pub fn check_port_free(address: IpAddr, port: u16) -> Result<()> {
    match TcpListener::bind(SocketAddr::new(address, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::PortInUse {
            address,
            port,
            holder: port_holder(port),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Err(Error::Config {
            problems: vec![format!(
                "listen_address {address}: no network interface on this machine has that address"
            )],
        }),
        // Not root, and a port below the unprivileged start: no retry can bind it.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(Error::Config {
            problems: vec![format!(
                "port {port} on {address} cannot be bound by this user ({e}): it is a privileged \
                 port; use a port of 1024 or more"
            )],
        }),
        Err(source) => Err(Error::Bind {
            address,
            port,
            source,
        }),
    }
}

/// postgres runs unprivileged, so it cannot bind a port below the kernel's unprivileged start
/// (1024 unless `net.ipv4.ip_unprivileged_port_start` says otherwise), even when pgwarden, as
/// root, could. Said up front rather than after five failed starts.
pub fn check_port_unprivileged(port: u16, user: &str) -> Result<()> {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or(1024);
    if port == 0 || u32::from(port) >= start {
        return Ok(());
    }
    Err(Error::Config {
        problems: vec![format!(
            "port {port} is privileged (below {start}), and postgres runs as the unprivileged user {user:?}, \
             which cannot bind it; use a port of {start} or more"
        )],
    })
}

/// Picks a free TCP port on `address` for `--port 0`: random, from below the kernel's ephemeral
/// range (so no outgoing connection can take it between this check and postgres binding it),
/// checked by binding it. A rival that binds the same port in that moment makes postgres fail
/// to start, which the supervisor reports like any failed start.
pub fn choose_free_port(address: IpAddr) -> Result<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(11_000));
    for _ in 0..200 {
        let port = rand::random_range(low..high);
        if TcpListener::bind(SocketAddr::new(address, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Server {
        what: format!(
            "found no free port on {address} between {low} and {high} in 200 tries\nhelp: pass a port with --port"
        ),
    })
}

/// "pid 1234 (postgres)" for the process listening on TCP `port`, found through /proc: the
/// socket's inode in /proc/net/tcp{,6}, then the process with an fd on that inode.
pub fn port_holder(port: u16) -> Option<String> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    let listening = fields.get(3)? == &"0A";
                    (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                        .then(|| fields.get(9).map(|s| s.to_string()))
                        .flatten()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let holders = crate::os::procfs::fd_holders(|target| {
        wanted.iter().any(|w| target.as_os_str() == w.as_str())
    });
    if let Some(&pid) = holders.first() {
        let name = crate::os::procfs::comm(pid).unwrap_or_else(|| "?".into());
        return Some(format!("pid {pid} ({name})"));
    }
    Some("another process".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_port_is_reported_with_its_holder() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = check_port_free("127.0.0.1".parse().unwrap(), port)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("127.0.0.1:{port} is already in use")),
            "{err}"
        );
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("--port"), "{err}");
        drop(listener);
        check_port_free("127.0.0.1".parse().unwrap(), port).unwrap();
    }
}
