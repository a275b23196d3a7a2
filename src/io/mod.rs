//! Byte-stream plumbing shared by the listener, the TLS stream and the
//! session legs: buffers that give their memory back once emptied, and a
//! stream that first replays bytes already read from it.

pub mod buf;
pub mod prefixed;

use std::time::Duration;

/// Turns TCP keepalive on for a session leg, so a peer that vanished
/// without a FIN (a host that lost power, a NAT entry that expired) is
/// found even when keepalive pings are off. Best effort: a socket that
/// refuses the option still works.
pub fn tcp_keepalive(tcp: &tokio::net::TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15));
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka);
}
