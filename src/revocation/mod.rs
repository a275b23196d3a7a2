//! Revocations: which tokens no longer open or keep a session.
//!
//! A [`Revocation`] selects tokens by `jti`, by subject (`sub`, optionally
//! `iss`) or by any claim value. Subject and claim revocations cover tokens
//! issued (`iat`) at or before the revocation; later tokens are accepted, so a
//! user can log in again. A token without `iat` counts as issued before.
//!
//! [`RevocationList`] is the in-memory index every check reads (a check never
//! waits on disk or network); stores persist and share entries and feed it.
//!
//! - [`store`]: the [`RevocationStore`] trait and how a store is chosen.
//! - [`memory`], [`file`], [`redis`]: the three stores of the contract.
//! - [`revoker`]: the one path every new entry takes, wherever it comes from:
//!   into the list, then every live session it covers is closed.
//!
//! # How long an entry is kept
//!
//! The contract keeps an entry "at least until the longest `exp` it can cover
//! plus leeway". A revocation made now can only cover tokens issued before
//! now, and such a token's `exp` is bounded by its lifetime, which the gateway
//! does not know in general. The rule is therefore
//! `keep_until = now + MAX_TOKEN_LIFETIME + the largest issuer leeway`,
//! extended to `exp + leeway` of any live session it covers when that is
//! later (see [`revoker::keep_until`]).

pub mod file;
pub mod memory;
pub mod redis;
pub mod revoker;
pub mod store;

use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::auth::VerifiedToken;
use crate::route::require::lookup_claim;

pub use revoker::{RevokeError, Revoker};
pub use store::{RevocationStore, StoreError};

/// What a revocation covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Selector {
    Jti { jti: String },
    Subject { sub: String, iss: Option<String> },
    Claim { claim: String, value: String },
}

/// One revocation in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    #[serde(flatten)]
    pub selector: Selector,
    /// Unix seconds when it was made: tokens issued later are not covered.
    pub revoked_at: i64,
    /// Unix seconds after which no token it covers can still be valid.
    pub keep_until: i64,
}

impl Revocation {
    pub fn covers(&self, t: &VerifiedToken) -> bool {
        self.covers_with(t, &mut None)
    }

    /// [`Self::covers`], with `claims` the token's claims once parsed: a
    /// scan of many claim entries parses them once, not once per entry.
    fn covers_with(&self, t: &VerifiedToken, claims: &mut Option<serde_json::Value>) -> bool {
        let issued_before = || t.iat.is_none_or(|iat| iat <= self.revoked_at);
        match &self.selector {
            Selector::Jti { jti } => t.jti.as_deref() == Some(jti.as_str()),
            Selector::Subject { sub, iss } => {
                t.sub.as_deref() == Some(sub.as_str())
                    && iss
                        .as_ref()
                        .is_none_or(|i| t.iss.as_deref() == Some(i.as_str()))
                    && issued_before()
            }
            Selector::Claim { claim, value } => {
                issued_before()
                    && claim_matches(claims.get_or_insert_with(|| t.claims.parse()), claim, value)
            }
        }
    }
}

/// A claim equals `value` when it is that string, a number or bool printing
/// as it, or an array containing one of those.
fn claim_matches(claims: &serde_json::Value, claim: &str, value: &str) -> bool {
    use serde_json::Value;
    let scalar = |v: &Value| match v {
        Value::String(s) => s == value,
        Value::Number(n) => n.to_string() == value,
        Value::Bool(b) => b.to_string() == value,
        _ => false,
    };
    match lookup_claim(claims, claim) {
        Some(Value::Array(items)) => items.iter().any(scalar),
        Some(v) => scalar(v),
        None => false,
    }
}

/// The entries in force, indexed so that the common case (jti) is one lookup
/// and the rest is a short scan of subject/claim entries.
#[derive(Default)]
pub struct RevocationList {
    by_jti: DashMap<String, Revocation>,
    others: RwLock<Vec<Revocation>>,
}

impl RevocationList {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds an entry. When an identical selector is already in force its
    /// `keep_until` is extended and its `revoked_at` moved forward. Returns
    /// whether the set of covered tokens changed (new entry or a later
    /// `revoked_at`), i.e. whether live sessions must be checked again.
    pub fn insert(&self, r: Revocation) -> bool {
        match &r.selector {
            Selector::Jti { jti } => {
                let mut fresh = true;
                self.by_jti
                    .entry(jti.clone())
                    .and_modify(|old| {
                        fresh = false;
                        old.keep_until = old.keep_until.max(r.keep_until);
                    })
                    .or_insert_with(|| r.clone());
                fresh
            }
            _ => {
                let mut others = self.others.write();
                if let Some(old) = others.iter_mut().find(|o| o.selector == r.selector) {
                    let moved = r.revoked_at > old.revoked_at;
                    old.revoked_at = old.revoked_at.max(r.revoked_at);
                    old.keep_until = old.keep_until.max(r.keep_until);
                    return moved;
                }
                others.push(r);
                true
            }
        }
    }

    /// The entry in force for `selector`, if any.
    pub fn get(&self, selector: &Selector) -> Option<Revocation> {
        match selector {
            Selector::Jti { jti } => self.by_jti.get(jti).map(|r| r.clone()),
            _ => self
                .others
                .read()
                .iter()
                .find(|r| &r.selector == selector)
                .cloned(),
        }
    }

    pub fn is_revoked(&self, t: &VerifiedToken) -> bool {
        if let Some(jti) = &t.jti {
            if self.by_jti.get(jti).is_some() {
                return true;
            }
        }
        let others = self.others.read();
        let mut claims = None;
        others.iter().any(|r| r.covers_with(t, &mut claims))
    }

    /// Drops entries that can no longer cover a valid token.
    pub fn purge(&self, now: i64) -> usize {
        let before = self.len();
        self.by_jti.retain(|_, r| r.keep_until > now);
        self.others.write().retain(|r| r.keep_until > now);
        before - self.len()
    }

    pub fn len(&self) -> usize {
        self.by_jti.len() + self.others.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry in force.
    pub fn entries(&self) -> Vec<Revocation> {
        let mut all: Vec<Revocation> = self.by_jti.iter().map(|e| e.value().clone()).collect();
        all.extend(self.others.read().iter().cloned());
        all
    }
}
