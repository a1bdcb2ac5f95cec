//! Reload and stop under load: generations replace each other without a
//! failed request; a stop lets requests in flight complete, kills workers
//! that ignore `SIGTERM` after the grace, and stops pools newest first.

mod supervise_util;
use evchild_testkit as util;

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use evchild::supervise::{Event, PoolConfig, Start, WorkerState};
use supervise_util::{join, listener, load, serving, stop_and_check, worker_command, Harness};
use util::{Check, KillOnPanic};

/// Not a test: the worker program of this binary (see `supervise_util`).
#[test]
fn worker_entry() {
    supervise_util::worker_main_if_asked();
}

const INTERVAL: Duration = Duration::from_millis(200);

#[test]
fn reload_under_load_fails_no_request() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, addr) = listener();
    let mut h = Harness::new();
    let grace = Duration::from_secs(1);
    let config = PoolConfig::new()
        .start(4)
        .workers(4, 10)
        .idle(2, 6)
        .interval(INTERVAL)
        .retire_grace(grace);
    let fd = listener.as_raw_fd();
    let pool = h.add_pool(
        "reload",
        config,
        Start::command(move |spec| {
            assert!(spec.generation >= 1);
            worker_command(fd, "serve")
        }),
    );
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .count(pool, WorkerState::Idle)
        >= 4));

    let t0 = Instant::now();
    let end = t0 + Duration::from_millis(2500);
    let clients = load(addr, 32, 20, end);
    h.run_until(Duration::from_millis(700), |_| false);
    h.app.sup.reload(&mut h.reactor, pool).unwrap();
    let reloaded = Instant::now();
    assert_eq!(h.app.sup.pool(pool).unwrap().generation(), 2);
    // Within the grace (plus an interval of slack for the loaded machine),
    // every live worker is of the new generation.
    let renewed = h.run_until(grace + INTERVAL, |h| h.all_of_generation(pool, 2));
    let old: Vec<_> = h
        .app
        .sup
        .pool(pool)
        .unwrap()
        .workers()
        .filter(|w| w.generation == 1)
        .collect();
    assert!(
        renewed,
        "old workers {:?} after {:?}",
        old,
        reloaded.elapsed()
    );
    while Instant::now() < end {
        h.turn(Duration::from_millis(20));
    }
    let outcomes = join(clients);
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed",
        failed.len(),
        outcomes.len()
    );
    assert!(outcomes.len() > 200, "only {} requests", outcomes.len());
    // The old generation left gracefully: exit 0 on SIGTERM, no fault.
    let pool_ref = h.app.sup.pool(pool).unwrap();
    let old_exits: Vec<_> = pool_ref
        .last_exits()
        .filter(|e| e.generation == 1)
        .collect();
    assert!(!old_exits.is_empty());
    assert!(old_exits
        .iter()
        .all(|e| !e.fault && e.exit.status().and_then(|s| s.code()) == Some(0)));
    assert!(pool_ref.active() >= 4);

    stop_and_check(h, listener, check);
}

#[test]
fn stop_under_load_completes_requests_and_kills_the_stubborn() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, addr) = listener();
    let (stubborn_listener, _) = supervise_util::listener();
    let mut h = Harness::new();
    let served = h.add_pool(
        "served",
        PoolConfig::new()
            .start(4)
            .workers(4, 8)
            .idle(1, 8)
            .interval(INTERVAL),
        serving(&listener, "serve"),
    );
    let stubborn = h.add_pool(
        "stubborn",
        PoolConfig::new()
            .start(2)
            .workers(2, 2)
            .idle(0, 2)
            .interval(INTERVAL),
        serving(&stubborn_listener, "stubborn"),
    );
    assert!(h.run_until(Duration::from_secs(10), |h| {
        h.count(served, WorkerState::Idle) >= 4 && h.count(stubborn, WorkerState::Idle) >= 2
    }));

    // Requests of 300 ms keep workers busy when the stop comes.
    let t0 = Instant::now();
    let clients = load(addr, 8, 300, t0 + Duration::from_millis(1000));
    h.run_until(Duration::from_millis(700), |_| false);
    let grace = Duration::from_secs(1);
    let stop_at = Instant::now();
    h.app.sup.shutdown(&mut h.reactor, grace);
    // The parent closes its listener: connections not yet accepted are
    // refused once the workers are gone, instead of waiting forever.
    drop(listener);
    let took = {
        let stopped = h.run_until(Duration::from_secs(10), |h| {
            h.app.sup.is_stopped() && h.reactor.is_empty()
        });
        assert!(stopped, "not stopped");
        stop_at.elapsed()
    };
    let outcomes = join(clients);

    // Requests that a worker had taken (it greeted them) all completed.
    let in_flight: Vec<_> = outcomes.iter().filter(|o| o.worker.is_some()).collect();
    assert!(in_flight.iter().all(|o| o.ok), "a request in flight failed");
    assert!(
        in_flight.iter().any(|o| o.ended > stop_at),
        "no request was in flight at the stop"
    );

    // Newest pool first: the stubborn one stops (after its SIGKILLs), and
    // only then does the served one get its SIGTERMs.
    let stubborn_stopped = h.times(|e| *e == Event::Stopped { pool: stubborn })[0];
    let served_stopped = h.times(|e| *e == Event::Stopped { pool: served })[0];
    let served_retiring =
        h.times(|e| matches!(e, Event::Retiring { worker } if worker.pool == served));
    assert!(served_retiring.iter().all(|t| *t >= stubborn_stopped));
    assert!(stubborn_stopped - stop_at >= grace - Duration::from_millis(50));
    assert!(stubborn_stopped - stop_at <= grace + INTERVAL + Duration::from_millis(500));
    // The served pool's workers obeyed SIGTERM once their request was done.
    assert!(served_stopped - stubborn_stopped <= grace + INTERVAL);
    assert!(took <= 2 * grace + 2 * INTERVAL, "stop took {took:?}");
    let exits = |pool| -> Vec<(Option<i32>, Option<i32>)> {
        h.app
            .sup
            .pool(pool)
            .unwrap()
            .last_exits()
            .map(|e| {
                let s = e.exit.status().unwrap();
                (s.code(), s.signal())
            })
            .collect()
    };
    assert_eq!(exits(stubborn), [(None, Some(9)); 2]);
    assert!(
        exits(served).iter().all(|e| *e == (Some(0), None)),
        "{:?}",
        exits(served)
    );

    drop(h);
    drop(stubborn_listener);
    check.finish();
}

#[test]
fn workers_are_replaced_after_max_requests() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, addr) = listener();
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(1)
        .workers(1, 1)
        .idle(0, 1)
        .max_requests(3)
        .interval(INTERVAL);
    let pool = h.add_pool("limited", config, serving(&listener, "serve"));
    // Ten requests, in lock-step with the loop: each one when the pool has
    // its one worker idle and no other worker alive, so the count is exact.
    // (Without the lock-step a worker may take one more request before the
    // parent's SIGTERM reaches it: see `PoolConfig::max_requests`.)
    let mut pids = Vec::new();
    for _ in 0..10 {
        let settled = h.run_until(Duration::from_secs(5), |h| {
            h.count(pool, WorkerState::Idle) == 1 && h.reactor.len() == 1
        });
        assert!(settled, "the pool never settled");
        let served = h
            .app
            .sup
            .pool(pool)
            .unwrap()
            .workers()
            .next()
            .unwrap()
            .requests;
        let outcome = supervise_util::request(addr, 0);
        assert!(outcome.ok);
        pids.push(outcome.worker.unwrap());
        // Until the parent has the worker's idle report.
        assert!(h.run_until(Duration::from_secs(5), |h| {
            let p = h.app.sup.pool(pool).unwrap();
            p.workers()
                .any(|w| w.requests > served || w.state == WorkerState::Retiring)
        }));
    }
    let expected: Vec<usize> = pids.chunk_by(|a, b| a == b).map(|run| run.len()).collect();
    assert_eq!(expected, [3, 3, 3, 1], "{pids:?}");
    h.run_until(Duration::from_secs(5), |h| {
        h.app.sup.pool(pool).unwrap().last_exits().count() == 3
    });
    let p = h.app.sup.pool(pool).unwrap();
    assert_eq!(p.last_exits().count(), 3);
    assert!(p
        .last_exits()
        .all(|e| e.requests == 3 && !e.fault && e.exit.status().and_then(|s| s.code()) == Some(0)));
    stop_and_check(h, listener, check);
}
