//! The CONTRACT's session table as one exhaustive mapping: why a session ended
//! decides what each side is told and which metric label is counted.

/// One leg of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }
}

/// Why a session ended. Every variant is a row of the contract's session table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A side sent a close frame; it is passed on unchanged.
    Peer { by: Side, frame: CloseFrame },
    /// The client's connection ended without a close frame.
    ClientLost,
    /// The upstream's connection ended without a close frame (or it broke
    /// the protocol).
    UpstreamLost,
    /// The client broke the WebSocket protocol (unmasked or malformed
    /// frames, a malformed close frame).
    ClientProtocol,
    /// The upstream broke the WebSocket protocol (masked or malformed
    /// frames, a malformed close frame).
    UpstreamProtocol,
    /// The token's `exp` passed.
    Expired,
    /// A revocation covered the session's token.
    Revoked,
    /// Killed through the admin API.
    Terminated,
    /// A reload made the route deny the session, or removed the route.
    Policy,
    /// No frame either way for `idle_timeout`.
    Idle,
    /// A pinged leg sent nothing back within `ping_timeout`.
    Unresponsive,
    /// A message above `max_message_size`.
    TooBig,
    /// The gateway is shutting down.
    Shutdown,
}

/// A close frame's content: its code and reason text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
}

impl CloseFrame {
    pub fn new(code: u16, reason: &str) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
        }
    }

    /// What an empty close payload means (RFC 6455 7.1.5).
    pub fn no_status() -> Self {
        Self::new(1005, "")
    }
}

/// Going away: what the upstream is told whenever the gateway ends a session.
pub const GOING_AWAY: u16 = 1001;

impl CloseReason {
    /// The close frame the client receives; `None` when the client is gone.
    pub fn to_client(&self) -> Option<CloseFrame> {
        match self {
            CloseReason::Peer {
                by: Side::Client, ..
            }
            | CloseReason::ClientLost => None,
            CloseReason::Peer {
                by: Side::Upstream,
                frame,
            } => Some(frame.clone()),
            CloseReason::UpstreamLost => Some(CloseFrame::new(1014, "upstream connection lost")),
            CloseReason::ClientProtocol => Some(CloseFrame::new(1002, "protocol error")),
            CloseReason::UpstreamProtocol => Some(CloseFrame::new(1014, "upstream protocol error")),
            CloseReason::Expired => Some(CloseFrame::new(4401, "token expired")),
            CloseReason::Revoked => Some(CloseFrame::new(4403, "token revoked")),
            CloseReason::Terminated => Some(CloseFrame::new(4403, "session terminated")),
            CloseReason::Policy => Some(CloseFrame::new(4403, "access revoked by policy")),
            CloseReason::Idle => Some(CloseFrame::new(GOING_AWAY, "idle timeout")),
            CloseReason::Unresponsive => Some(CloseFrame::new(1011, "peer unresponsive")),
            CloseReason::TooBig => Some(CloseFrame::new(1009, "message too big")),
            CloseReason::Shutdown => Some(CloseFrame::new(GOING_AWAY, "gateway shutting down")),
        }
    }

    /// The close frame the upstream receives; `None` when the upstream is gone.
    pub fn to_upstream(&self) -> Option<CloseFrame> {
        match self {
            CloseReason::Peer {
                by: Side::Upstream, ..
            }
            | CloseReason::UpstreamLost => None,
            CloseReason::Peer {
                by: Side::Client,
                frame,
            } => Some(frame.clone()),
            CloseReason::ClientLost => Some(CloseFrame::new(GOING_AWAY, "client gone")),
            CloseReason::UpstreamProtocol => Some(CloseFrame::new(1002, "protocol error")),
            CloseReason::Expired
            | CloseReason::ClientProtocol
            | CloseReason::Revoked
            | CloseReason::Terminated
            | CloseReason::Policy
            | CloseReason::Idle
            | CloseReason::Unresponsive
            | CloseReason::TooBig
            | CloseReason::Shutdown => Some(CloseFrame::new(GOING_AWAY, "")),
        }
    }

    /// The `reason` label of `wsgate_session_closes_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            CloseReason::Peer {
                by: Side::Client, ..
            }
            | CloseReason::ClientLost
            | CloseReason::ClientProtocol => "client",
            CloseReason::Peer {
                by: Side::Upstream, ..
            } => "upstream",
            CloseReason::UpstreamLost | CloseReason::UpstreamProtocol => "upstream_lost",
            CloseReason::Expired => "expired",
            CloseReason::Revoked => "revoked",
            CloseReason::Terminated => "terminated",
            CloseReason::Policy => "policy",
            CloseReason::Idle => "idle",
            CloseReason::Unresponsive => "unresponsive",
            CloseReason::TooBig => "too_big",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (reason, client code + text, upstream code, metric label)
    type Row = (
        CloseReason,
        Option<(u16, &'static str)>,
        Option<u16>,
        &'static str,
    );

    /// One row per line of the CONTRACT's session table.
    #[test]
    fn contract_session_table() {
        let rows: [Row; 12] = [
            (
                CloseReason::Expired,
                Some((4401, "token expired")),
                Some(1001),
                "expired",
            ),
            (
                CloseReason::Revoked,
                Some((4403, "token revoked")),
                Some(1001),
                "revoked",
            ),
            (
                CloseReason::Terminated,
                Some((4403, "session terminated")),
                Some(1001),
                "terminated",
            ),
            (
                CloseReason::Policy,
                Some((4403, "access revoked by policy")),
                Some(1001),
                "policy",
            ),
            (
                CloseReason::UpstreamLost,
                Some((1014, "upstream connection lost")),
                None,
                "upstream_lost",
            ),
            (
                CloseReason::TooBig,
                Some((1009, "message too big")),
                Some(1001),
                "too_big",
            ),
            (
                CloseReason::Shutdown,
                Some((1001, "gateway shutting down")),
                Some(1001),
                "shutdown",
            ),
            (
                CloseReason::Idle,
                Some((1001, "idle timeout")),
                Some(1001),
                "idle",
            ),
            (CloseReason::ClientLost, None, Some(1001), "client"),
            // Lifecycle: keepalive.
            (
                CloseReason::Unresponsive,
                Some((1011, "peer unresponsive")),
                Some(1001),
                "unresponsive",
            ),
            // Headers and tokens: a malformed close (or frame) fails the
            // sender's connection with 1002; the other side hears 1001 / 1014.
            (
                CloseReason::ClientProtocol,
                Some((1002, "protocol error")),
                Some(1001),
                "client",
            ),
            (
                CloseReason::UpstreamProtocol,
                Some((1014, "upstream protocol error")),
                Some(1002),
                "upstream_lost",
            ),
        ];
        for (reason, client, upstream, label) in rows {
            assert_eq!(
                reason.to_client().map(|f| (f.code, f.reason)),
                client.map(|(c, r)| (c, r.to_owned())),
                "{reason:?}"
            );
            assert_eq!(reason.to_upstream().map(|f| f.code), upstream, "{reason:?}");
            assert_eq!(reason.metric_label(), label);
        }
    }

    #[test]
    fn peer_close_is_passed_on_unchanged() {
        let c = CloseReason::Peer {
            by: Side::Client,
            frame: CloseFrame::new(4000, "bye"),
        };
        assert_eq!(c.to_upstream(), Some(CloseFrame::new(4000, "bye")));
        assert_eq!(c.to_client(), None);
        assert_eq!(c.metric_label(), "client");
        let u = CloseReason::Peer {
            by: Side::Upstream,
            frame: CloseFrame::new(1000, "done"),
        };
        assert_eq!(u.to_client(), Some(CloseFrame::new(1000, "done")));
        assert_eq!(u.to_upstream(), None);
        assert_eq!(u.metric_label(), "upstream");
    }
}
