//! `limits.max_pending`: connections accepted but not yet a session (in
//! TLS, sending their HTTP head, or waiting for a `first_message`).
//!
//! Each holds a [`Permit`] from accept until it becomes a session or ends.
//! Such connections cost memory (a TLS state, a head buffer of up to 64 KiB)
//! before anyone is authenticated, so their number is capped; beyond the
//! cap a new connection is closed at once, which costs the gateway nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The count of pending connections.
#[derive(Default)]
pub struct Pending {
    count: AtomicUsize,
    /// The highest count since [`Pending::take_peak`] last read it.
    peak: AtomicUsize,
    /// Set while connections are being refused, so that a flood is logged
    /// once when it starts rather than once per connection.
    full: AtomicBool,
}

/// One pending connection; dropping it frees its place.
pub struct Permit {
    pending: Arc<Pending>,
}

impl Pending {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Takes a place if fewer than `max` are taken.
    pub fn try_acquire(self: &Arc<Self>, max: usize) -> Option<Permit> {
        let prev = self.count.fetch_add(1, Ordering::AcqRel);
        let permit = Permit {
            pending: Arc::clone(self),
        };
        self.peak.fetch_max(prev + 1, Ordering::AcqRel);
        if prev >= max {
            drop(permit);
            if !self.full.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    max_pending = max,
                    "too many pending connections; new ones are closed until some complete"
                );
            }
            return None;
        }
        if self.full.load(Ordering::Acquire) && prev < max / 2 {
            self.full.store(false, Ordering::Release);
        }
        Some(permit)
    }

    /// The highest count since the last call (or since start), which
    /// becomes the current count.
    pub fn take_peak(&self) -> usize {
        self.peak.swap(self.len(), Ordering::AcqRel)
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pending.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_and_freed_on_drop() {
        let p = Pending::new();
        let a = p.try_acquire(2).expect("first");
        let b = p.try_acquire(2).expect("second");
        assert!(p.try_acquire(2).is_none());
        assert_eq!(p.len(), 2);
        drop(a);
        let c = p.try_acquire(2).expect("freed place");
        drop((b, c));
        assert!(p.is_empty());
    }
}
