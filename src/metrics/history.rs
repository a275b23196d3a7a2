//! The last few minutes of handshake outcomes and session closes, in
//! 10-second buckets, for the admin page's charts (`GET /admin/history`).
//!
//! Prometheus keeps the real history; this ring exists so that the page
//! works with no Prometheus at all. It is fixed-size (no allocation after
//! start) and fed from the same two calls that count the metrics, so it
//! agrees with them.

use parking_lot::Mutex;
use serde::Serialize;

use super::Outcome;

/// Seconds per bucket.
pub const BUCKET_SECONDS: i64 = 10;
/// Buckets kept: six minutes.
pub const BUCKETS: usize = 36;

/// `outcome` labels, in the order of [`Outcome`]'s variants.
const OUTCOMES: [&str; 7] = [
    "ok",
    "unauthorized",
    "forbidden",
    "not_found",
    "rate_limited",
    "upstream_error",
    "bad_request",
];

/// Close `reason` labels the page charts; any other lands in `other`.
const REASONS: [&str; 12] = [
    "client",
    "upstream",
    "expired",
    "revoked",
    "terminated",
    "policy",
    "idle",
    "too_big",
    "shutdown",
    "upstream_lost",
    "unresponsive",
    "other",
];

/// Wall-clock unix seconds (the buckets are shown against wall time).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::ok => 0,
        Outcome::unauthorized => 1,
        Outcome::forbidden => 2,
        Outcome::not_found => 3,
        Outcome::rate_limited => 4,
        Outcome::upstream_error => 5,
        Outcome::bad_request => 6,
    }
}

fn reason_index(reason: &str) -> usize {
    REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(REASONS.len() - 1)
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Unix seconds / BUCKET_SECONDS; 0 for a bucket never used.
    slot: i64,
    outcomes: [u64; OUTCOMES.len()],
    reasons: [u64; REASONS.len()],
}

/// The ring of buckets; a bucket is reused once its slot is `BUCKETS` old.
pub struct History {
    ring: Mutex<[Bucket; BUCKETS]>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            ring: Mutex::new([Bucket::default(); BUCKETS]),
        }
    }
}

/// One bucket as the admin API shows it (only non-zero counts).
#[derive(Debug, Serialize, PartialEq)]
pub struct BucketView {
    /// Unix seconds at which the bucket starts.
    pub start: i64,
    pub handshakes: serde_json::Map<String, serde_json::Value>,
    pub closes: serde_json::Map<String, serde_json::Value>,
}

/// What `GET /admin/history` answers.
#[derive(Debug, Serialize)]
pub struct HistoryView {
    pub bucket_seconds: i64,
    /// Oldest first, one per bucket, empty ones included, ending with the current one.
    pub buckets: Vec<BucketView>,
}

impl History {
    fn with_bucket(&self, now: i64, f: impl FnOnce(&mut Bucket)) {
        let slot = now.div_euclid(BUCKET_SECONDS);
        let mut ring = self.ring.lock();
        let b = &mut ring[slot.rem_euclid(BUCKETS as i64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        f(b);
    }

    pub fn handshake(&self, now: i64, outcome: Outcome) {
        self.with_bucket(now, |b| b.outcomes[outcome_index(outcome)] += 1);
    }

    pub fn closed(&self, now: i64, reason: &str) {
        self.with_bucket(now, |b| b.reasons[reason_index(reason)] += 1);
    }

    /// The last `BUCKETS` buckets up to `now`, oldest first.
    pub fn view(&self, now: i64) -> HistoryView {
        let current = now.div_euclid(BUCKET_SECONDS);
        let ring = *self.ring.lock();
        let buckets = (current - BUCKETS as i64 + 1..=current)
            .map(|slot| {
                let b = &ring[slot.rem_euclid(BUCKETS as i64) as usize];
                let counts = |names: &[&str], values: &[u64]| {
                    names
                        .iter()
                        .zip(values)
                        .filter(|(_, v)| b.slot == slot && **v > 0)
                        .map(|(n, v)| ((*n).to_owned(), (*v).into()))
                        .collect()
                };
                BucketView {
                    start: slot * BUCKET_SECONDS,
                    handshakes: counts(&OUTCOMES, &b.outcomes),
                    closes: counts(&REASONS, &b.reasons),
                }
            })
            .collect();
        HistoryView {
            bucket_seconds: BUCKET_SECONDS,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_bucket_and_age_out() {
        let h = History::default();
        let t0 = 1_700_000_000;
        h.handshake(t0, Outcome::ok);
        h.handshake(t0 + 1, Outcome::ok);
        h.handshake(t0 + 10, Outcome::unauthorized);
        h.closed(t0 + 10, "terminated");
        h.closed(t0 + 10, "something new");
        let v = h.view(t0 + 10);
        assert_eq!(v.buckets.len(), BUCKETS);
        let last = &v.buckets[BUCKETS - 1];
        let prev = &v.buckets[BUCKETS - 2];
        assert_eq!(prev.handshakes["ok"], 2);
        assert_eq!(last.handshakes["unauthorized"], 1);
        assert_eq!(last.closes["terminated"], 1);
        assert_eq!(last.closes["other"], 1);
        // Six minutes on, the old buckets are gone, even though no new
        // event reused their slot.
        let later = h.view(t0 + 10 + BUCKETS as i64 * BUCKET_SECONDS);
        assert!(later
            .buckets
            .iter()
            .all(|b| b.handshakes.is_empty() && b.closes.is_empty()));
        // A slot reused by a new event starts from zero.
        h.handshake(t0 + BUCKETS as i64 * BUCKET_SECONDS, Outcome::ok);
        let v = h.view(t0 + BUCKETS as i64 * BUCKET_SECONDS);
        assert_eq!(v.buckets[BUCKETS - 1].handshakes["ok"], 1);
    }

    #[test]
    fn every_outcome_has_its_label() {
        for o in [
            Outcome::ok,
            Outcome::unauthorized,
            Outcome::forbidden,
            Outcome::not_found,
            Outcome::rate_limited,
            Outcome::upstream_error,
            Outcome::bad_request,
        ] {
            assert_eq!(OUTCOMES[outcome_index(o)], format!("{o:?}"));
        }
    }
}
