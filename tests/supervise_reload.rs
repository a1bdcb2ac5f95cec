//! Reloads as an operator runs them: a broken new worker command never
//! takes the service down (the reload is abandoned, the old generation
//! serves on, an event says why), a good one replaces the workers without
//! ever lowering the capacity, and persistent connections are finished
//! within the drain time.

mod supervise_util;
use evchild_testkit as util;

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evchild::supervise::{Event, PoolConfig, PoolId, Start, WorkerState};
use supervise_util::{
    join, listener, load_while, persistent, serving, stop_and_check, worker_command, Harness,
};
use util::{Check, KillOnPanic};

/// Not a test: the worker program of this binary (see `supervise_util`).
#[test]
fn worker_entry() {
    supervise_util::worker_main_if_asked();
}

const INTERVAL: Duration = Duration::from_millis(200);

/// Ready workers that serve (idle or busy, not retiring): the capacity.
fn capacity(h: &Harness, pool: PoolId) -> usize {
    h.count(pool, WorkerState::Idle) + h.count(pool, WorkerState::Busy)
}

#[test]
fn a_broken_reload_is_abandoned_and_a_good_one_never_lowers_capacity() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, addr) = listener();
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(4)
        .workers(4, 10)
        .idle(1, 10)
        .interval(INTERVAL)
        .retire_grace(Duration::from_secs(2))
        .throttle(
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
    let fd = listener.as_raw_fd();
    let broken = Arc::new(AtomicBool::new(false));
    let b = Arc::clone(&broken);
    let pool = h.add_pool(
        "reload",
        config,
        Start::command(move |_| {
            if b.load(Ordering::Relaxed) {
                // The operator installed a worker that fails at once.
                let mut cmd = Command::new("sh");
                cmd.args(["-c", "exit 1"]);
                cmd
            } else {
                worker_command(fd, "serve")
            }
        }),
    );
    assert!(h.run_until(Duration::from_secs(10), |h| capacity(h, pool) >= 4));

    let stop = Arc::new(AtomicBool::new(false));
    let clients = load_while(addr, 16, 20, Arc::clone(&stop));
    h.run_until(Duration::from_millis(300), |_| false);

    // SIGHUP with the broken command.
    let old = h.pids(pool);
    broken.store(true, Ordering::Relaxed);
    h.app.sup.reload(&mut h.reactor, pool).unwrap();
    assert!(
        h.run_until(Duration::from_secs(10), |h| h
            .seen(|e| matches!(e, Event::ReloadAbandoned { .. }))),
        "the reload was not abandoned"
    );
    let reason = h
        .app
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::ReloadAbandoned {
                generation, reason, ..
            } => Some((*generation, reason.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(reason.0, 2);
    assert!(
        reason.1.contains("exit status: 1") && reason.1.contains("before it reported ready"),
        "{}",
        reason.1
    );
    let line = h
        .app
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::ReloadAbandoned { .. }))
        .unwrap()
        .1
        .to_string();
    assert!(line.contains("abandoned"), "{line}");
    // The old generation serves on, every one of its workers.
    h.run_until(Duration::from_millis(500), |_| false);
    let serving: std::collections::HashSet<u32> = h
        .app
        .sup
        .pool(pool)
        .unwrap()
        .workers()
        .filter(|w| w.state != WorkerState::Retiring)
        .map(|w| w.pid().as_raw() as u32)
        .collect();
    assert_eq!(serving, old, "the old generation is untouched");
    assert!(!h.app.sup.pool(pool).unwrap().is_reloading());
    assert!(h.app.sup.pool(pool).unwrap().throttled_until().is_some());

    // The good command back, SIGHUP again: no wait for the throttle (30 s),
    // and the capacity never falls below what it was.
    broken.store(false, Ordering::Relaxed);
    let before = capacity(&h, pool);
    let t_reload = Instant::now();
    h.app.sup.reload(&mut h.reactor, pool).unwrap();
    assert!(h.app.sup.pool(pool).unwrap().throttled_until().is_none());
    let mut lowest = before;
    let done = h.run_until(Duration::from_secs(15), |h| {
        lowest = lowest.min(capacity(h, pool));
        h.seen(|e| matches!(e, Event::Reloaded { generation: 3, .. }))
    });
    assert!(done, "the second reload did not complete");
    assert!(
        lowest >= before,
        "capacity fell to {lowest} from {before} during the reload"
    );
    assert!(t_reload.elapsed() < Duration::from_secs(30));
    h.run_until(Duration::from_millis(300), |_| false);
    stop.store(true, Ordering::Relaxed);
    h.turn_until_finished(&clients);
    let outcomes = join(clients);
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed", outcomes.len());
    // Every old worker left gracefully.
    assert!(h.run_until(Duration::from_secs(5), |h| h.all_of_generation(pool, 3)));
    let p = h.app.sup.pool(pool).unwrap();
    for e in p.last_exits().filter(|e| e.generation == 1) {
        assert_eq!(e.exit.status().and_then(|s| s.code()), Some(0), "{e:?}");
        assert!(!e.fault);
    }
    stop_and_check(h, listener, check);
}

#[test]
fn persistent_connections_are_finished_within_the_drain_time() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, addr) = listener();
    let mut h = Harness::new();
    let drain = Duration::from_millis(800);
    let config = PoolConfig::new()
        .start(6)
        .workers(6, 12)
        .idle(1, 12)
        .interval(INTERVAL)
        .drain(drain)
        .retire_grace(Duration::from_secs(20));
    let pool = h.add_pool("persistent", config, serving(&listener, "serve"));
    assert!(h.run_until(Duration::from_secs(10), |h| capacity(h, pool) >= 6));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || persistent(addr, 20, stop))
        })
        .collect();
    // Each persistent client holds a worker busy.
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .count(pool, WorkerState::Busy)
        >= 4));
    h.run_until(Duration::from_millis(200), |_| false);
    let t0 = Instant::now();
    h.app.sup.reload(&mut h.reactor, pool).unwrap();
    let gone = h.run_until(Duration::from_secs(10), |h| h.all_of_generation(pool, 2));
    let took = t0.elapsed();
    assert!(gone, "old workers left after {took:?}");
    stop.store(true, Ordering::Relaxed);
    h.turn_until_finished(&clients);
    let (mut ok, mut failed, mut connections) = (0, 0, 0);
    for c in clients {
        let (o, f, n) = c.join().unwrap();
        ok += o;
        failed += f;
        connections += n;
    }
    assert_eq!(failed, 0, "{failed} requests failed ({ok} ok)");
    assert!(connections > 4, "the clients moved to new workers");
    // The busy old workers served until the drain time, then finished the
    // request in hand and exited 0 on SIGTERM: none was killed (the grace
    // is 20 s).
    let p = h.app.sup.pool(pool).unwrap();
    let old: Vec<_> = p.last_exits().filter(|e| e.generation == 1).collect();
    assert_eq!(old.len(), 6);
    for e in &old {
        assert_eq!(e.exit.status().and_then(|s| s.code()), Some(0), "{e:?}");
        assert_ne!(
            e.exit.status().and_then(|s| s.signal()),
            Some(libc::SIGKILL)
        );
    }
    // (No lower bound on `took`: a persistent connection's worker that
    // reports idle between two requests is retired then, before the drain
    // time; how often that happens is the scheduler's business.)
    let _ = took;
    stop_and_check(h, listener, check);
}

/// `resize` changes the sizes at once, and a reload may carry a new
/// configuration that sizes the new generation.
#[test]
fn resize_and_a_reload_with_new_sizes() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, _addr) = listener();
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(2)
        .workers(2, 4)
        .idle(0, 8)
        .interval(INTERVAL);
    let pool = h.add_pool("resize", config.clone(), serving(&listener, "serve"));
    assert!(h.run_until(Duration::from_secs(10), |h| capacity(h, pool) == 2));
    // Up: 5 at once (the maximum rises with it).
    h.app.sup.resize(&mut h.reactor, pool, 5, 8).unwrap();
    assert_eq!(h.active(pool), 5);
    assert!(h.run_until(Duration::from_secs(10), |h| capacity(h, pool) == 5));
    // Down: idle workers above the new maximum retire at once.
    h.app.sup.resize(&mut h.reactor, pool, 1, 3).unwrap();
    assert_eq!(h.active(pool), 3);
    assert_eq!(h.count(pool, WorkerState::Retiring), 2);
    assert!(h.run_until(Duration::from_secs(10), |h| h.reactor.len() == 3));
    assert_eq!(
        h.app.sup.pool(pool).unwrap().config().worker_range(),
        (1, 3)
    );
    // A reload to 2:2: the new generation has 2 workers, and all 3 old
    // ones go once they are ready.
    h.app
        .sup
        .reload_with(&mut h.reactor, pool, config.workers(2, 2))
        .unwrap();
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .seen(|e| matches!(e, Event::Reloaded { generation: 2, .. }))));
    assert!(h.run_until(Duration::from_secs(10), |h| h.reactor.len() == 2));
    let p = h.app.sup.pool(pool).unwrap();
    assert!(p.workers().all(|w| w.generation == 2));
    assert_eq!(p.active(), 2);
    // An impossible configuration changes nothing.
    let err = h
        .app
        .sup
        .set_config(&mut h.reactor, pool, PoolConfig::new().workers(3, 1))
        .unwrap_err();
    assert!(matches!(err, evchild::Error::InvalidConfig { .. }), "{err}");
    assert_eq!(h.active(pool), 2);
    stop_and_check(h, listener, check);
}
