//! The registry of live sessions (dashmap), with an index by subject so that
//! limits and revocations by `sub` never scan every session.
//!
//! Rules: no dashmap guard is held across an `.await`; and where two maps
//! are locked at once, the order is always `by_subject` then `sessions`
//! (only [`Registry::register`] nests them), so shards never deadlock.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::{CloseReason, SessionHandle, SessionId};

/// Index key: (`iss` or issuer id, `sub`).
type SubjectKey = (String, String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    #[error("global session limit reached")]
    Global,
    #[error("per-subject session limit reached")]
    Subject,
    #[error("route session limit reached")]
    Route,
}

#[derive(Default)]
pub struct Registry {
    sessions: DashMap<SessionId, Arc<SessionHandle>>,
    by_subject: DashMap<SubjectKey, Vec<SessionId>>,
    /// Sessions by the `jti` of the token they were opened with, so a jti
    /// revocation is one lookup.
    by_jti: DashMap<String, Vec<SessionId>>,
    next_id: AtomicU64,
    /// Sessions plus handshakes holding a slot.
    slots: AtomicUsize,
    /// The same per route id (route `limits.max_sessions`). A reload that
    /// keeps a route's id keeps its count.
    route_slots: DashMap<Arc<str>, usize>,
}

/// A reserved slot, global and on its route: taken before the upstream is
/// contacted (or, with `first_message`, before the 101) so that a flood of
/// handshakes cannot exceed `max_sessions` while they are in flight.
pub struct Slot {
    registry: Arc<Registry>,
    route: Option<Arc<str>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.slots.fetch_sub(1, Ordering::AcqRel);
        if let Some(route) = self.route.take() {
            self.registry.route_slots.remove_if_mut(&route, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

/// Unregisters its session when dropped, on every exit path.
pub struct SessionGuard {
    registry: Arc<Registry>,
    handle: Arc<SessionHandle>,
    subject: Option<SubjectKey>,
    _slot: Slot,
    /// Held for the session's life and dropped after it is unregistered
    /// (a cluster-wide per-subject place).
    attached: Option<Box<dyn Send + Sync>>,
}

impl SessionGuard {
    pub fn handle(&self) -> &Arc<SessionHandle> {
        &self.handle
    }

    /// Keeps `held` until the session ends.
    pub fn attach(&mut self, held: Box<dyn Send + Sync>) {
        self.attached = Some(held);
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.handle.id);
        if let Some(key) = self.subject.take() {
            let id = self.handle.id;
            self.registry.by_subject.remove_if_mut(&key, |_, ids| {
                ids.retain(|x| *x != id);
                ids.is_empty()
            });
        }
        // The current token's jti: a refresh moves the session in the index.
        if let Some(jti) = self.handle.token().and_then(|t| t.jti.clone()) {
            self.registry.unindex_jti(&jti, self.handle.id);
        }
    }
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn next_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Takes one of `max` global slots, and one of `route_max` on `route`
    /// when the route has a cap.
    pub fn reserve(
        self: &Arc<Self>,
        max: usize,
        route: &Arc<str>,
        route_max: Option<usize>,
    ) -> Result<Slot, SlotError> {
        let prev = self.slots.fetch_add(1, Ordering::AcqRel);
        let mut slot = Slot {
            registry: Arc::clone(self),
            route: None,
        };
        if prev >= max {
            return Err(SlotError::Global);
        }
        if let Some(route_max) = route_max {
            // Counted and checked under the entry's shard lock: concurrent
            // handshakes on one route cannot both slip under the cap.
            let mut n = self.route_slots.entry(Arc::clone(route)).or_insert(0);
            if *n >= route_max {
                let empty = *n == 0;
                drop(n);
                if empty {
                    self.route_slots.remove_if(route, |_, n| *n == 0);
                }
                return Err(SlotError::Route);
            }
            *n += 1;
            slot.route = Some(Arc::clone(route));
        }
        Ok(slot)
    }

    /// Sessions (and handshakes holding a slot) on `route`, when it has a cap.
    pub fn on_route(&self, route: &str) -> usize {
        self.route_slots.get(route).map_or(0, |n| *n)
    }

    /// Registers a session. With a subject and a per-route limit, the count
    /// check and the insert happen under one shard lock, so concurrent
    /// handshakes of one subject cannot both slip under the limit.
    pub fn register(
        self: &Arc<Self>,
        handle: Arc<SessionHandle>,
        subject: Option<SubjectKey>,
        per_subject_limit: Option<u32>,
        slot: Slot,
    ) -> Result<SessionGuard, SlotError> {
        if let Some(key) = &subject {
            let mut entry = self.by_subject.entry(key.clone()).or_default();
            if let Some(limit) = per_subject_limit {
                let on_route = entry
                    .iter()
                    .filter(|id| {
                        self.sessions
                            .get(id)
                            .is_some_and(|s| s.route == handle.route)
                    })
                    .count();
                if on_route >= limit as usize {
                    let empty = entry.is_empty();
                    drop(entry);
                    if empty {
                        self.by_subject.remove_if(key, |_, ids| ids.is_empty());
                    }
                    return Err(SlotError::Subject);
                }
            }
            entry.push(handle.id);
            // Inserted while the subject entry is locked: a concurrent
            // register of the same subject sees this session when counting.
            self.sessions.insert(handle.id, Arc::clone(&handle));
        } else {
            self.sessions.insert(handle.id, Arc::clone(&handle));
        }
        if let Some(jti) = handle.token().and_then(|t| t.jti.clone()) {
            self.by_jti.entry(jti).or_default().push(handle.id);
        }
        Ok(SessionGuard {
            registry: Arc::clone(self),
            handle,
            subject,
            _slot: slot,
            attached: None,
        })
    }

    fn unindex_jti(&self, jti: &str, id: SessionId) {
        self.by_jti.remove_if_mut(jti, |_, ids| {
            ids.retain(|x| *x != id);
            ids.is_empty()
        });
    }

    /// A refresh: the session carries `token` from now on, with its expiry,
    /// and is found under the new token's `jti`.
    pub fn refresh(&self, handle: &SessionHandle, token: Arc<crate::auth::VerifiedToken>) {
        let old = handle.token().and_then(|t| t.jti.clone());
        let new = token.jti.clone();
        let exp = token.exp;
        handle.refresh(token, exp);
        if old != new {
            if let Some(old) = old {
                self.unindex_jti(&old, handle.id);
            }
            if let Some(new) = new {
                self.by_jti.entry(new).or_default().push(handle.id);
            }
        }
    }

    pub fn get(&self, id: SessionId) -> Option<Arc<SessionHandle>> {
        self.sessions.get(&id).map(|s| Arc::clone(&s))
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A snapshot of every live session.
    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        self.sessions
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect()
    }

    /// Sessions of one subject, found through the index.
    pub fn of_subject(&self, iss: &str, sub: &str) -> Vec<Arc<SessionHandle>> {
        let ids = match self.by_subject.get(&(iss.to_owned(), sub.to_owned())) {
            Some(ids) => ids.clone(),
            None => return Vec::new(),
        };
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    /// Sessions of one `sub` under any issuer: a walk over the subject keys
    /// (one per distinct subject), never over every session.
    pub fn of_sub_any_issuer(&self, sub: &str) -> Vec<Arc<SessionHandle>> {
        let ids: Vec<SessionId> = self
            .by_subject
            .iter()
            .filter(|e| e.key().1 == sub)
            .flat_map(|e| e.value().clone())
            .collect();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    /// Sessions opened with the token `jti`, found through the index.
    pub fn of_jti(&self, jti: &str) -> Vec<Arc<SessionHandle>> {
        let ids = match self.by_jti.get(jti) {
            Some(ids) => ids.clone(),
            None => return Vec::new(),
        };
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    /// Ends one session. Returns false when it is unknown or already ending.
    pub fn kill(&self, id: SessionId, reason: CloseReason) -> bool {
        self.get(id).is_some_and(|s| s.close(reason))
    }
}
