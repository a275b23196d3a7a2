//! A scrape allocates nothing per session: the encoding of `/metrics` is
//! measured (time and heap allocations) over a registry of 10 sessions and
//! over one of 10,000, and the two must cost the same.
//!
//! The counting allocator below is the only way to see allocations from
//! inside the process; it is a test binary of its own so it counts nothing
//! else.
// Wall time is measured here: the async-code bans of .clippy.toml do not apply.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsgate::metrics::{Direction, Metrics, SessionMetrics};
use wsgate::session::{Admitted, Registry, SessionGuard, SessionHandle};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a relaxed atomic that allocates nothing itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUTES: [&str; 4] = ["chat", "feed", "rooms", "admin"];

/// A gateway's worth of live sessions: registered, with their gauges up
/// and some traffic counted, as the session task does.
fn sessions(n: usize) -> (Arc<Registry>, Metrics, Vec<(SessionGuard, SessionMetrics)>) {
    let registry = Registry::new();
    let metrics = Metrics::new();
    let remote: SocketAddr = "127.0.0.1:40000".parse().expect("address");
    let held = (0..n)
        .map(|i| {
            let route = ROUTES[i % ROUTES.len()];
            let handle = Arc::new(SessionHandle::new(
                registry.next_id(),
                route.into(),
                remote,
                Default::default(),
                Admitted::default(),
                None,
            ));
            let route_id: Arc<str> = route.into();
            let slot = registry.reserve(1_000_000, &route_id, None).expect("slot");
            let guard = registry
                .register(handle, None, None, slot)
                .expect("register");
            let m = metrics.for_session(route);
            m.relayed_many(Direction::to_client, 3, 300);
            metrics.handshake(route, wsgate::metrics::Outcome::ok, 0.002);
            (guard, m)
        })
        .collect();
    (registry, metrics, held)
}

/// (allocations, best time) of one encoding, over a few runs.
fn measure(metrics: &Metrics) -> (u64, Duration) {
    let _warm = metrics.encode();
    let mut best = Duration::MAX;
    let mut allocs = u64::MAX;
    for _ in 0..5 {
        let before = ALLOCS.load(Ordering::Relaxed);
        let started = Instant::now();
        let text = metrics.encode();
        best = best.min(started.elapsed());
        allocs = allocs.min(ALLOCS.load(Ordering::Relaxed) - before);
        assert!(text.contains("wsgate_sessions_active"));
    }
    (allocs, best)
}

#[test]
fn encoding_costs_the_same_with_ten_or_ten_thousand_sessions() {
    let (small_registry, small, _small_held) = sessions(10);
    let (registry, big, _held) = sessions(10_000);
    assert_eq!(small_registry.len(), 10);
    assert_eq!(registry.len(), 10_000);
    let (few_allocs, few_time) = measure(&small);
    let (many_allocs, many_time) = measure(&big);
    eprintln!(
        "encode: 10 sessions {few_allocs} allocations in {few_time:?}; \
         10,000 sessions {many_allocs} allocations in {many_time:?}"
    );
    // The output grows by a few digits (counts of 10 vs 10,000), which may
    // cost the output buffer one more doubling: never one per session.
    assert!(
        many_allocs <= few_allocs + 4,
        "{many_allocs} allocations with 10,000 sessions vs {few_allocs} with 10"
    );
    assert!(
        many_time < Duration::from_millis(50),
        "encoding took {many_time:?}"
    );
}
