//! Byte-stream plumbing shared by the listener, the TLS stream and the
//! session legs: buffers that give their memory back once emptied, and a
//! stream that first replays bytes already read from it.

pub mod buf;
pub mod prefixed;

use std::time::Duration;

/// Idle time before the first keepalive probe.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between unanswered probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Turns TCP keepalive on for a session leg, so a peer that vanished
/// without a FIN (a host that lost power, a NAT entry that expired) is
/// found even when keepalive pings are off. Best effort: a socket that
/// refuses the option still works.
pub fn tcp_keepalive(tcp: &tokio::net::TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka);
}

// The options are read back from the kernel, which is the only proof that
// they were set: `tcp_keepalive` swallows errors on purpose.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// What the kernel says about a socket: SO_KEEPALIVE, TCP_KEEPIDLE,
    /// TCP_KEEPINTVL.
    fn keepalive_of(tcp: &TcpStream) -> (bool, Duration, Duration) {
        let s = socket2::SockRef::from(tcp);
        (
            s.keepalive().expect("SO_KEEPALIVE"),
            s.tcp_keepalive_time().expect("TCP_KEEPIDLE"),
            s.tcp_keepalive_interval().expect("TCP_KEEPINTVL"),
        )
    }

    const ON: (bool, Duration, Duration) = (true, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL);

    #[tokio::test]
    async fn keepalive_is_set_on_accepted_and_connected_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (connected, (accepted, _)) = (connected.expect("connect"), accepted.expect("accept"));
        // A fresh socket has it off: the check below is not vacuous.
        assert!(!keepalive_of(&accepted).0);
        for (leg, tcp) in [("accepted", &accepted), ("connected", &connected)] {
            tcp_keepalive(tcp);
            assert_eq!(keepalive_of(tcp), ON, "{leg} socket");
        }
    }

    #[tokio::test]
    async fn the_upstream_leg_is_dialled_with_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = crate::config::UpstreamUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port: listener.local_addr().expect("addr").port(),
            base_path: String::new(),
        };
        let io = crate::upstream::dial(None, &url, "test")
            .await
            .expect("dial");
        let crate::upstream::UpstreamIo::Plain(tcp) = &io else {
            panic!("a ws:// upstream is plain TCP");
        };
        assert_eq!(keepalive_of(tcp), ON);
    }
}
