//! A pool under real load: 64 concurrent loopback clients for 3 s against
//! executed workers that accept on a shared listener (Apache's model).

mod supervise_util;
use evchild_testkit as util;

use std::time::{Duration, Instant};

use evchild::supervise::{Event, PoolConfig, WorkerState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use supervise_util::{join, listener, load_while, serving, stop_and_check, Harness};
use util::{Check, KillOnPanic};

/// Not a test: the worker program of this binary (see `supervise_util`).
#[test]
fn worker_entry() {
    supervise_util::worker_main_if_asked();
}

const INTERVAL: Duration = Duration::from_millis(200);

#[test]
fn grows_to_the_maximum_under_load_and_retires_idle_workers_after() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, addr) = listener();
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(2)
        .workers(2, 12)
        .idle(2, 4)
        .interval(INTERVAL)
        .max_spawn_rate(8);
    let start = serving(&listener, "serve");
    let pool = h.add_pool("load", config, start);
    assert!(
        h.run_until(Duration::from_secs(10), |h| h
            .count(pool, WorkerState::Idle)
            >= 2),
        "the initial workers never reported ready"
    );

    // Load until the pool has grown to its maximum, however long this
    // machine takes (no speed is asserted: figures are in the benchmark).
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load_while(addr, 64, 10, Arc::clone(&stop));
    let mut peak_processes = 0;
    let grown = h.run_until(Duration::from_secs(60), |h| {
        peak_processes = peak_processes.max(h.reactor.len());
        h.active(pool) == 12
    });
    // A little longer at the maximum: it stays there.
    h.run_until(2 * INTERVAL, |h| {
        peak_processes = peak_processes.max(h.reactor.len());
        false
    });
    stop.store(true, Ordering::Relaxed);
    h.turn_until_finished(&clients);
    let outcomes = join(clients);
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok).collect();
    assert!(grown, "the pool grows to its maximum under load");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        peak_processes <= 12,
        "{peak_processes} worker processes: more than the maximum"
    );
    let sup = &h.app.sup;
    assert!(
        sup.pool(pool).unwrap().last_exits().next().is_none(),
        "no worker died under load: {:?}",
        sup.pool(pool).unwrap().last_exits().collect::<Vec<_>>()
    );

    // Load over: one idle worker retired per interval, down to max idle.
    let settled = h.run_until(Duration::from_secs(8), |h| {
        h.active(pool) == 4 && h.reactor.len() == 4
    });
    assert!(
        settled,
        "still {} workers ({} processes)",
        h.active(pool),
        h.reactor.len()
    );
    // And no further.
    h.run_until(3 * INTERVAL, |_| false);
    assert_eq!(h.active(pool), 4);
    assert_eq!(h.count(pool, WorkerState::Idle), 4);
    let retired = h.times(|e| matches!(e, Event::Retiring { .. })).len();
    assert_eq!(retired, 8, "12 → 4, one at a time");
    // One per interval: consecutive retirements at least ~an interval apart.
    let times: Vec<Instant> = h.times(|e| matches!(e, Event::Retiring { .. }));
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= INTERVAL - Duration::from_millis(30),
            "{:?}",
            pair[1] - pair[0]
        );
    }
    assert!(!h.seen(|e| matches!(e, Event::Throttled { .. })));

    stop_and_check(h, listener, check);
}
