//! The one admission step. Every place that decides whether a token may
//! hold a session calls [`admit`], against the snapshot in force at that
//! moment:
//!
//! - the handshake ([`super::handle`]),
//! - the first message of a `first_message` route ([`super::first_message`]),
//! - an in-band refresh ([`super::refresh`]),
//! - the re-check of every live session after a reload ([`recheck`]).
//!
//! The order is fixed: origins → token (signature with the issuer's current
//! keys, `iss`, `aud`, `exp`, `nbf`, `iat`, required claims) → revocation →
//! the route's `require` rules → the `forward.headers` built from the claims.
//! A refusal is a [`Reject`], which alone decides the status or close code.
//! Limits are not part of the judgement: they are taken when a session is
//! registered ([`register`]) and never revoke a running one.

use std::sync::Arc;

use http::{header, HeaderName, HeaderValue};

use super::Reject;
use crate::auth::VerifiedToken;
use crate::config::{AuthMode, LimitScope, RedisDown};
use crate::gateway::Gateway;
use crate::route::pattern::parse_request_path;
use crate::route::require::lookup_claim;
use crate::route::template::{is_safe_header_value, Placeholder};
use crate::route::Params;
use crate::session::registry::Slot;
use crate::session::{Admitted, CloseReason, SessionGuard, SessionHandle, SlotError};
use crate::snapshot::{Route, Snapshot};

/// The token an admission judges.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// None was found.
    Absent,
    /// The token's text as the client sent it.
    Presented(&'a str),
    /// A token verified earlier (a live session's): judged again against
    /// the keys and rules in force now, without its text.
    Held(&'a VerifiedToken),
}

/// What is judged: a route, the request's path parameters and origins, and
/// a credential.
pub struct Attempt<'a> {
    pub route: &'a Route,
    pub params: &'a Params,
    pub origins: &'a [HeaderValue],
    pub credential: Credential<'a>,
}

/// An admitted attempt.
pub struct Admission {
    /// `None` on an `auth: none` route.
    pub token: Option<Arc<VerifiedToken>>,
    /// The token's claims, parsed (`Null` without a token).
    pub claims: serde_json::Value,
    /// The route's `forward.headers`, rendered from the claims and checked.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Judges `attempt` against `snapshot`.
pub async fn admit(
    gw: &Gateway,
    snapshot: &Snapshot,
    attempt: Attempt<'_>,
) -> Result<Admission, Reject> {
    let route = attempt.route;
    check_origins(route, attempt.origins)?;
    // The claims as the verification parsed them: for the rules, the
    // identity headers and the caller's hash key.
    let (token, claims) = match route.cfg.auth {
        AuthMode::None => (None, serde_json::Value::Null),
        AuthMode::Required => {
            let allowed = route.cfg.issuers.as_deref();
            let verified = match attempt.credential {
                Credential::Absent => return Err(Reject::MissingToken),
                Credential::Presented(text) => snapshot.auth.verify(text, allowed).await,
                Credential::Held(t) => snapshot.auth.reverify(t, allowed),
            }
            .map_err(Reject::InvalidToken)?;
            if gw.revocations().is_revoked(&verified.token) {
                return Err(Reject::Revoked);
            }
            if let Err(failure) = route.rules.check(&verified.claims, attempt.params) {
                tracing::debug!(route = %route.id, rule = failure.index, claim = %failure.claim, "rule failed");
                return Err(Reject::Forbidden("forbidden"));
            }
            (Some(verified.token), verified.claims)
        }
    };
    let headers = forward_headers(route, &claims, attempt.params)?;
    Ok(Admission {
        token,
        claims,
        headers,
    })
}

/// When the route lists `origins`, a present `Origin` must be one of them;
/// two `Origin` headers are refused (checking only the first would let a
/// second, foreign one through). Also run before a `first_message` 101, so
/// a foreign page is refused while it can still be told with a status.
pub fn check_origins(route: &Route, origins: &[HeaderValue]) -> Result<(), Reject> {
    let Some(allowed) = &route.cfg.origins else {
        return Ok(());
    };
    let ok = origins.len() <= 1
        && origins.iter().all(|origin| {
            origin
                .to_str()
                .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
        });
    if ok {
        Ok(())
    } else {
        Err(Reject::OriginNotAllowed)
    }
}

/// The `Origin` headers of a request.
pub fn origins(headers: &http::HeaderMap) -> Vec<HeaderValue> {
    headers.get_all(header::ORIGIN).iter().cloned().collect()
}

const UNFORWARDABLE: Reject = Reject::Forbidden("claim cannot be forwarded as a header");

/// Renders `forward.headers`. A claim can carry anything: CR/LF would inject
/// headers upstream, and some values come out of an upstream's header
/// parser as something else (see [`round_trips`]); either refuses the
/// admission.
fn forward_headers(
    route: &Route,
    claims: &serde_json::Value,
    params: &Params,
) -> Result<Vec<(HeaderName, HeaderValue)>, Reject> {
    route
        .forward_headers
        .iter()
        .map(|(name, template)| {
            let claims_round_trip = template.placeholders().all(|p| match p {
                Placeholder::Claim(path) => lookup_claim(claims, path).is_none_or(round_trips),
                Placeholder::Param(_) => true,
            });
            if !claims_round_trip {
                return Err(UNFORWARDABLE);
            }
            let value = template.render(claims, params);
            if !is_safe_header_value(&value) {
                return Err(UNFORWARDABLE);
            }
            let value = HeaderValue::from_str(&value).map_err(|_| UNFORWARDABLE)?;
            Ok((name.clone(), value))
        })
        .collect()
}

/// Whether a claim reaches the upstream as the value the rules judged.
/// Header parsers trim surrounding whitespace (`" admin "` is read as
/// `admin`), and arrays are joined with `,`, so an element holding a `,` is
/// indistinguishable from two elements (`["user,admin"]` reads as `user`
/// and `admin`).
fn round_trips(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    let untrimmed = |s: &str| s.trim() == s;
    match value {
        Value::String(s) => untrimmed(s),
        Value::Array(items) => items.iter().all(|item| match item {
            Value::String(s) => untrimmed(s) && !s.contains(',') && !s.is_empty(),
            Value::Number(_) | Value::Bool(_) => true,
            Value::Null | Value::Array(_) | Value::Object(_) => false,
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => true,
    }
}

/// What a session is registered with.
pub struct Registration<'a> {
    /// The snapshot its admission was judged against.
    pub judged: &'a Snapshot,
    pub route: &'a Route,
    pub params: &'a Params,
    pub admitted: Admitted,
    pub token: Option<Arc<VerifiedToken>>,
    pub remote: std::net::SocketAddr,
    /// A slot taken earlier ([`reserve`]); `None`: one is taken now.
    pub slot: Option<Slot>,
}

/// Takes a session slot, global and on the route (`max_sessions` of
/// `limits` and of the route): 503 beyond either.
pub fn reserve(gw: &Arc<Gateway>, route: &Route) -> Result<Slot, Reject> {
    let max = gw.snapshot.load().config.limits.max_sessions;
    gw.registry
        .reserve(max, &route.id, route.cfg.limits.max_sessions)
        .map_err(|e| {
            tracing::debug!(route = %route.id, limit = %e, "no session slot");
            // Both caps protect capacity, which is a 503; the per-subject
            // 429 is decided at registration.
            Reject::GlobalLimit
        })
}

/// Takes a slot (unless one is held) and registers the session; the
/// per-subject limit is checked atomically with the insert, on this node
/// and then, for `scope: cluster`, in Redis ([`cluster_place`]).
pub async fn register(gw: &Arc<Gateway>, r: Registration<'_>) -> Result<SessionGuard, Reject> {
    let slot = match r.slot {
        Some(slot) => slot,
        None => reserve(gw, r.route)?,
    };
    let subject = r.token.as_ref().and_then(|t| {
        let iss = t.iss.clone().unwrap_or_else(|| t.issuer_id.clone());
        t.sub.clone().map(|sub| (iss, sub))
    });
    let token = r.token.clone();
    let route = Arc::clone(&r.route.id);
    let limits = r.route.cfg.limits.clone();
    let handle = Arc::new(SessionHandle::new(
        gw.registry.next_id(),
        Arc::clone(&r.route.id),
        r.remote,
        r.params.clone(),
        r.admitted,
        r.token,
    ));
    let cluster_subject = subject.clone();
    // The node count is taken for both scopes: a node never holds more than
    // the cluster may, and it still holds while Redis is away.
    let mut guard = gw
        .registry
        .register(handle, subject, limits.max_sessions_per_subject, slot)
        .map_err(|e| match e {
            SlotError::Global | SlotError::Route => Reject::GlobalLimit,
            SlotError::Subject => Reject::SubjectLimit,
        })?;
    if let (LimitScope::Cluster, Some(limit), Some((iss, sub))) = (
        limits.scope,
        limits.max_sessions_per_subject,
        cluster_subject,
    ) {
        if let Some(place) = cluster_place(gw, &route, &iss, &sub, limit).await? {
            guard.attach(place);
        }
    }
    // A revocation made between verification and registration found no
    // session to close; checking again now that the session is visible
    // leaves no gap.
    if token.is_some_and(|t| gw.revocations().is_revoked(&t)) {
        return Err(Reject::Revoked);
    }
    // Likewise a reload: its re-check did not see this session either.
    confirm(gw, r.judged, guard.handle()).await?;
    Ok(guard)
}

/// Judges a live session again when a reload has put another snapshot in
/// force since its token was judged against `judged`: admission can wait
/// (a key fetch, Redis), and a reload's re-check only sees the sessions
/// registered by then. Called once the session is visible in the registry,
/// so any later reload finds it; one look suffices. As in [`recheck`], a
/// token whose issuer has no keys yet gets no verdict.
pub async fn confirm(gw: &Gateway, judged: &Snapshot, s: &SessionHandle) -> Result<(), Reject> {
    let current = gw.snapshot.load_full();
    if std::ptr::eq(&*current, judged) {
        return Ok(());
    }
    match judge_again(gw, &current, s).await {
        Ok(()) | Err(Reject::InvalidToken(crate::auth::AuthError::NoKeys)) => Ok(()),
        Err(reject) => {
            tracing::info!(session = s.id, route = %s.route, reason = %reject, "admission overtaken by a reload");
            Err(reject)
        }
    }
}

/// The route `snapshot` gives the request a session was admitted for, and
/// its path parameters. It must be the route of the admission (`id`):
/// another route's rules were never applied to it.
pub fn same_route<'s>(
    snapshot: &'s Snapshot,
    admitted: &Admitted,
    id: &str,
) -> Result<(&'s Arc<Route>, Params), Reject> {
    let path = parse_request_path(&admitted.path).map_err(|_| Reject::NotFound)?;
    let matched = snapshot
        .routes
        .find(admitted.host.as_deref(), &path)
        .ok_or(Reject::NotFound)?;
    if &*matched.route.id != id {
        return Err(Reject::NotFound);
    }
    Ok((matched.route, matched.params))
}

/// A cluster-wide per-subject place, held by the session. When Redis cannot
/// say, `cluster.on_redis_down` decides: `open` admits (the node count
/// above still holds), `closed` refuses with 503.
async fn cluster_place(
    gw: &Gateway,
    route: &str,
    iss: &str,
    sub: &str,
    limit: u32,
) -> Result<Option<Box<dyn Send + Sync>>, Reject> {
    let Some(cluster) = &gw.cluster else {
        return Ok(None);
    };
    match cluster.acquire(route, iss, sub, limit).await {
        Ok(Some(lease)) => Ok(Some(Box::new(lease))),
        Ok(None) => Err(Reject::SubjectLimit),
        Err(e) => match cluster.on_redis_down() {
            RedisDown::Open => {
                tracing::debug!(error = %e, route, "cluster-wide limit unavailable; counted on this node");
                Ok(None)
            }
            RedisDown::Closed => {
                tracing::warn!(error = %e, route, "cluster-wide limit unavailable; refused (cluster.on_redis_down: closed)");
                Err(Reject::GlobalLimit)
            }
        },
    }
}

/// What a re-check of the live sessions did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rechecked {
    /// Sessions ended with 4403 `access revoked by policy`.
    pub closed: usize,
    /// Sessions whose issuer had no keys yet: no verdict, kept for now.
    pub undecided: usize,
}

/// Judges every live session again against `snapshot` (after a reload): the
/// request it was admitted for must still match the same route, and its
/// token must pass [`admit`] as it stands now. Sessions that fail end with
/// 4403 `access revoked by policy`.
///
/// A token whose issuer has no keys yet (a remote set still being fetched
/// from a new source) gets no verdict and keeps its session until the keys
/// arrive ([`recheck_when_keys_arrive`]).
pub async fn recheck(gw: &Gateway, snapshot: &Snapshot) -> Rechecked {
    let mut refused = Vec::new();
    let mut undecided = 0;
    for s in gw.registry.all() {
        let verdict = judge_again(gw, snapshot, &s).await;
        match verdict {
            Ok(()) => {}
            Err(Reject::InvalidToken(crate::auth::AuthError::NoKeys)) => undecided += 1,
            Err(reject) => {
                tracing::info!(session = s.id, route = %s.route, reason = %reject, "session no longer admitted after reload");
                refused.push(s);
            }
        }
    }
    let closed = crate::session::close_many(&refused, &CloseReason::Policy);
    if undecided > 0 {
        tracing::warn!(
            sessions = undecided,
            "sessions kept without a verdict until their issuers have keys"
        );
    }
    Rechecked { closed, undecided }
}

/// How often undecided sessions look for their issuers' keys.
const UNDECIDED_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Judges the sessions a re-check left undecided once keys arrive for an
/// issuer that had none, while `snapshot` stays in force (a later reload
/// re-checks everything itself). A key source that never answers keeps
/// them undecided, as a new handshake for that issuer is refused: the
/// token was valid by the keys it was admitted with, and nothing says
/// otherwise yet.
pub fn recheck_when_keys_arrive(gw: &Arc<Gateway>, snapshot: Arc<Snapshot>) {
    let gw = Arc::clone(gw);
    tokio::spawn(async move {
        let mut without = snapshot.auth.issuers_without_keys();
        loop {
            tokio::select! {
                _ = gw.shutdown.cancelled() => return,
                _ = tokio::time::sleep(UNDECIDED_POLL) => {}
            }
            if !Arc::ptr_eq(&gw.snapshot.load_full(), &snapshot) {
                return;
            }
            let now_without = snapshot.auth.issuers_without_keys();
            if now_without == without {
                continue;
            }
            without = now_without;
            let r = recheck(&gw, &snapshot).await;
            tracing::info!(
                closed = r.closed,
                undecided = r.undecided,
                "sessions judged once their issuers' keys arrived"
            );
            if r.undecided == 0 {
                return;
            }
        }
    });
}

async fn judge_again(gw: &Gateway, snapshot: &Snapshot, s: &SessionHandle) -> Result<(), Reject> {
    let (route, params) = same_route(snapshot, &s.admitted, &s.route)?;
    let token = s.token();
    let credential = match token.as_deref() {
        Some(t) => Credential::Held(t),
        None => Credential::Absent,
    };
    let attempt = Attempt {
        route,
        params: &params,
        origins: &s.admitted.origins,
        credential,
    };
    admit(gw, snapshot, attempt).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::round_trips;
    use serde_json::json;

    #[test]
    fn claim_values_that_an_upstream_reads_differently_do_not_round_trip() {
        for ok in [
            json!("admin"),
            json!(["user", "admin"]),
            json!(5),
            json!([1, true]),
        ] {
            assert!(round_trips(&ok), "{ok}");
        }
        for bad in [
            json!(" admin "),
            json!("admin\t"),
            json!(["user,admin"]),
            json!(["user", " admin"]),
            json!(["a", ""]),
            json!([["nested"]]),
            json!([{"o": 1}]),
        ] {
            assert!(!round_trips(&bad), "{bad}");
        }
    }
}
