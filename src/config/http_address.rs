//! The health and metrics endpoint's address (`http_address`), checked when the config is
//! resolved; [`crate::observe`] serves it.

use std::net::SocketAddr;

/// postgres_exporter's default port, in the examples.
pub const EXAMPLE_ADDRESS: &str = "127.0.0.1:9187";

/// Parses and checks `http_address`: `IP:PORT`, not the server's `port`; a non-loopback IP
/// only with `allow_remote`.
pub fn resolve_address(
    text: Option<&str>,
    allow_remote: bool,
    server_port: u16,
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    let text = text?.trim();
    let address = match text.parse::<SocketAddr>() {
        Ok(address) => address,
        Err(_) => {
            problems.push(format!(
                "http_address {text:?}: expected IP:PORT, e.g. {EXAMPLE_ADDRESS} (or [::1]:9187)"
            ));
            return None;
        }
    };
    if address.port() != 0 && address.port() == server_port {
        problems.push(format!(
            "http_address {address}: port {server_port} is the server's own port; use another, \
             e.g. {EXAMPLE_ADDRESS}"
        ));
        return None;
    }
    if !address.ip().is_loopback() && !allow_remote {
        problems.push(format!(
            "http_address {address}: not a loopback address; /metrics shows database names and \
             activity to anyone who can reach it. Use 127.0.0.1:{} (and a reverse proxy), or set \
             http_allow_remote = true in the config file if this network is trusted",
            address.port()
        ));
        return None;
    }
    Some(address)
}
