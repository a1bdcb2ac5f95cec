//! Faults: workers killed under load are replaced (and not throttled, as
//! they had served requests); a command that crashes at once is throttled,
//! and costs a bounded number of starts.

mod supervise_util;
use evchild_testkit as util;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use evchild::supervise::{Event, PoolConfig, PoolId, Start, Timeout, WorkerState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use supervise_util::{
    join, listener, load, load_while, request, serving, sigkill, stop_and_check, Harness,
};
use util::{Check, KillOnPanic};

/// Not a test: the worker program of this binary (see `supervise_util`).
#[test]
fn worker_entry() {
    supervise_util::worker_main_if_asked();
}

const INTERVAL: Duration = Duration::from_millis(200);

#[test]
fn killed_workers_are_replaced_and_every_failure_is_theirs() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, addr) = listener();
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(4)
        .workers(4, 12)
        .idle(2, 6)
        .interval(INTERVAL);
    let pool = h.add_pool("killed", config, serving(&listener, "serve"));
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .count(pool, WorkerState::Idle)
        >= 4));

    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(3);
    let clients = load(addr, 64, 10, end);
    // Every 100 ms, SIGKILL a worker that has served a request. Chosen on
    // the loop's thread, from the scoreboard: it is unreaped, so its pid is
    // still its own.
    let mut kills: Vec<(Instant, u32)> = Vec::new();
    let mut next_kill = t0 + Duration::from_millis(100);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    while Instant::now() < end {
        h.turn(Duration::from_millis(10));
        if Instant::now() >= next_kill {
            next_kill += Duration::from_millis(100);
            let victims: Vec<u32> = h
                .app
                .sup
                .pool(pool)
                .unwrap()
                .workers()
                .filter(|w| w.requests > 0 && w.state != WorkerState::Retiring)
                .map(|w| w.pid().as_raw() as u32)
                .collect();
            if !victims.is_empty() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pid = victims[(seed % victims.len() as u64) as usize];
                sigkill(pid);
                kills.push((Instant::now(), pid));
            }
        }
    }
    let last_kill = kills.last().map(|k| k.0).unwrap();
    let outcomes = join(clients);
    assert!(kills.len() >= 20, "only {} kills", kills.len());

    // Back at the minimum within one interval of the last kill.
    let back = h.run_until(INTERVAL.saturating_sub(last_kill.elapsed()), |h| {
        h.active(pool) >= 4
    });
    assert!(back || h.active(pool) >= 4, "{} workers", h.active(pool));
    assert!(
        !h.seen(|e| matches!(e, Event::Throttled { .. })),
        "workers that had served requests do not throttle"
    );

    // Each failed request is the fault of a killed worker: the one that
    // greeted it, or (killed before its greeting) one killed while it ran.
    let killed: HashSet<u32> = kills.iter().map(|k| k.1).collect();
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok).collect();
    for f in &failed {
        match f.worker {
            Some(pid) => assert!(killed.contains(&pid), "request to {pid} failed, not killed"),
            None => assert!(
                kills.iter().any(|(t, _)| *t >= f.started && *t <= f.ended),
                "a request failed before its greeting with no kill meanwhile"
            ),
        }
    }
    assert!(
        failed.len() <= kills.len(),
        "{} failures for {} kills",
        failed.len(),
        kills.len()
    );
    // Every killed worker is reported, as killed by SIGKILL.
    let reported = |h: &Harness| -> HashSet<u32> {
        h.app
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Exited { exit, .. } => {
                    use std::os::unix::process::ExitStatusExt;
                    (exit.status().and_then(|s| s.signal()) == Some(9))
                        .then_some(exit.id.pid().as_raw() as u32)
                }
                _ => None,
            })
            .collect()
    };
    h.run_until(Duration::from_secs(5), |h| reported(h) == killed);
    assert_eq!(reported(&h), killed);

    stop_and_check(h, listener, check);
}

#[test]
fn a_crash_loop_is_throttled_and_bounded() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(2)
        .workers(2, 4)
        .interval(INTERVAL)
        .throttle(
            Duration::from_millis(200),
            Duration::from_millis(800),
            Duration::from_secs(10),
        );
    let t0 = Instant::now();
    let pool = h.add_pool("crash", config, supervise_util::sh("exit 1"));
    h.run_until(Duration::from_secs(2), |_| false);
    let events = &h.app.events;
    let throttled: Vec<(Instant, Instant)> = events
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Throttled { delay, .. } => Some((*t, *t + *delay)),
            _ => None,
        })
        .collect();
    let unthrottled: Vec<Instant> = events
        .iter()
        .filter_map(|(t, e)| matches!(e, Event::Unthrottled { .. }).then_some(*t))
        .collect();
    assert!(
        !throttled.is_empty() && throttled[0].0 - t0 < Duration::from_secs(1),
        "throttled within 1 s"
    );
    // Each throttle is lifted, not before its time.
    for ((_, until), lifted) in throttled.iter().zip(&unthrottled) {
        assert!(lifted >= until);
    }
    assert!(unthrottled.len() >= 2, "{unthrottled:?}");
    // Delays 0.2, 0.4, 0.8, 0.8 … s, one probe start after each: the 2
    // initial starts and about 3 probes in 2 s. A fork storm would be
    // thousands.
    let starts = h.app.sup.pool(pool).unwrap().starts();
    assert!((4..=7).contains(&starts), "{starts} starts in 2 s");
    // Every start was a fault; the scoreboard has them.
    let exits: Vec<_> = h.app.sup.pool(pool).unwrap().last_exits().collect();
    assert!(exits
        .iter()
        .all(|e| e.exit.status().and_then(|s| s.code()) == Some(1)));
    assert!(exits.iter().all(|e| e.fault));

    h.stop(Duration::from_secs(1), Duration::from_secs(5));
    drop(h);
    check.finish();
}

#[test]
fn a_worker_that_never_reports_ready_is_killed_and_throttles() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let mut h = Harness::new();
    let timeout = Duration::from_millis(300);
    let config = PoolConfig::new()
        .start(1)
        .workers(1, 1)
        .idle(0, 1)
        .start_timeout(timeout)
        .throttle(
            Duration::from_secs(5),
            Duration::from_secs(5),
            Duration::from_secs(60),
        );
    let t0 = Instant::now();
    let pool = h.add_pool("silent", config, supervise_util::sh("exec sleep 30"));
    assert!(h.run_until(Duration::from_secs(5), |h| {
        h.app.sup.pool(pool).unwrap().last_exits().count() == 1
    }));
    let p = h.app.sup.pool(pool).unwrap();
    let exit = p.last_exits().next().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        exit.exit.status().and_then(|s| s.signal()),
        Some(libc::SIGKILL)
    );
    assert!(exit.lifetime >= timeout && t0.elapsed() < timeout + Duration::from_secs(2));
    // One fault: throttled, so no second start for 5 s.
    assert!(p.throttled_until().is_some());
    assert_eq!(p.starts(), 1);
    assert_eq!(h.times(|e| matches!(e, Event::Throttled { .. })).len(), 1);
    // Issue 14, item 5: the kill is reported as the fault it was, in the
    // event and on the scoreboard, with the limit it broke.
    assert!(exit.fault, "{exit:?}");
    assert!(h.seen(|e| matches!(e, Event::Exited { fault: true, .. })));
    assert!(h.seen(|e| matches!(
        e,
        Event::TimedOut {
            limit: Timeout::Start,
            ..
        }
    )));
    h.stop(Duration::from_secs(1), Duration::from_secs(5));
    drop(h);
    check.finish();
}

#[test]
fn a_failed_spawn_throttles_without_a_fork_storm() {
    let check = Check::start();
    let mut h = Harness::new();
    let config = PoolConfig::new().start(3).workers(3, 3).throttle(
        Duration::from_millis(100),
        Duration::from_millis(400),
        Duration::from_secs(60),
    );
    let pool = h.add_pool(
        "missing",
        config,
        Start::command(|_| Command::new("/nonexistent/evchild-worker")),
    );
    h.run_until(Duration::from_millis(1200), |_| false);
    let failed = h.times(|e| matches!(e, Event::StartFailed { .. })).len();
    // 0.1 + 0.2 + 0.4 + 0.4 s of throttle in 1.2 s: about 4 attempts, the
    // first of which stopped the other two initial starts.
    assert!((3..=7).contains(&failed), "{failed} failed starts");
    assert!(matches!(h.app.events[0].1, Event::StartFailed { .. }));
    assert!(matches!(h.app.events[1].1, Event::Throttled { .. }));
    assert_eq!(h.app.sup.pool(pool).unwrap().starts(), 0);
    assert!(h.reactor.is_empty());
    h.stop(Duration::from_secs(1), Duration::from_secs(5));
    drop(h);
    check.finish();
}

fn busy_worker(h: &Harness, pool: PoolId) -> Option<u32> {
    h.app
        .sup
        .pool(pool)
        .unwrap()
        .workers()
        .find(|w| w.state == WorkerState::Busy)
        .map(|w| w.pid().as_raw() as u32)
}

/// Issue 14, item 4: a worker that reported ready and is killed during its
/// first request (the OOM killer, an operator) is replaced at once, and is
/// no fault: no throttle, even below the minimum.
#[test]
fn a_worker_killed_during_its_first_request_is_replaced_not_throttled() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, addr) = listener();
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(1)
        .workers(1, 1)
        .idle(0, 1)
        .interval(INTERVAL)
        .throttle(
            Duration::from_secs(30),
            Duration::from_secs(30),
            Duration::from_secs(60),
        );
    let pool = h.add_pool("first", config, serving(&listener, "serve"));
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .count(pool, WorkerState::Idle)
        == 1));
    let client = std::thread::spawn(move || request(addr, 5000));
    assert!(h.run_until(Duration::from_secs(10), |h| busy_worker(h, pool).is_some()));
    let victim = busy_worker(&h, pool).unwrap();
    sigkill(victim);
    assert!(
        h.run_until(Duration::from_secs(10), |h| h
            .count(pool, WorkerState::Idle)
            == 1),
        "not replaced"
    );
    assert!(!client.join().unwrap().ok);
    let p = h.app.sup.pool(pool).unwrap();
    let exit = p.last_exits().next().unwrap();
    assert_eq!(exit.exit.id.pid().as_raw() as u32, victim);
    assert_eq!(exit.requests, 0);
    assert!(!exit.fault, "{exit:?}");
    assert!(p.throttled_until().is_none());
    assert!(!h.seen(|e| matches!(
        e,
        Event::Throttled { .. } | Event::Exited { fault: true, .. }
    )));
    stop_and_check(h, listener, check);
}

/// Issue 14, item 3: with idle(1, 4) the idle shortage under load is 1,
/// yet the pool starts 1, 2, 4, 8 … workers per interval (Apache), not one.
#[test]
fn the_pool_doubles_its_starts_while_the_shortage_lasts() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, addr) = listener();
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(2)
        .workers(2, 16)
        .idle(1, 4)
        .interval(INTERVAL);
    let pool = h.add_pool("grow", config, serving(&listener, "serve"));
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .count(pool, WorkerState::Idle)
        == 2));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load_while(addr, 32, 300, Arc::clone(&stop));
    let grown = h.run_until(Duration::from_secs(30), |h| h.active(pool) == 16);
    stop.store(true, Ordering::Relaxed);
    h.turn_until_finished(&clients);
    let outcomes = join(clients);
    assert!(grown, "{} workers", h.active(pool));
    // Starts made in one turn of the loop share its timestamp: the largest
    // batch shows the doubling.
    let mut batches = std::collections::BTreeMap::<Instant, usize>::new();
    for t in h.times(|e| matches!(e, Event::Started { .. })) {
        *batches.entry(t).or_default() += 1;
    }
    let largest = batches.values().copied().max().unwrap_or(0);
    assert!(
        largest >= 4,
        "at most {largest} starts per interval: {batches:?}"
    );
    assert!(outcomes.iter().all(|o| o.ok));
    stop_and_check(h, listener, check);
}

/// After N faults in a window the pool stops starting, says so, and the
/// application decides: `unthrottle` resumes.
#[test]
fn a_crash_loop_gives_up_visibly_until_unthrottled() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(2)
        .workers(2, 2)
        .interval(INTERVAL)
        .throttle(
            Duration::from_millis(50),
            Duration::from_millis(50),
            Duration::from_secs(10),
        )
        .give_up(4, Duration::from_secs(10));
    let pool = h.add_pool("crash", config, supervise_util::sh("exit 1"));
    let gave_up = |h: &Harness| h.seen(|e| matches!(e, Event::GaveUp { faults: 4, .. }));
    assert!(h.run_until(Duration::from_secs(10), |h| gave_up(h)));
    assert!(h.app.sup.pool(pool).unwrap().has_given_up());
    let line = h
        .app
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::GaveUp { .. }))
        .unwrap()
        .1
        .to_string();
    assert_eq!(
        line,
        "pool 0: gave up after 4 faults within 10.000 s: no more starts"
    );
    h.run_until(Duration::from_secs(2), |h| h.reactor.is_empty());
    let starts = h.app.sup.pool(pool).unwrap().starts();
    h.run_until(Duration::from_millis(600), |_| false);
    assert_eq!(
        h.app.sup.pool(pool).unwrap().starts(),
        starts,
        "started after giving up"
    );
    assert_eq!(starts, 4);
    h.app.sup.unthrottle(&mut h.reactor, pool).unwrap();
    assert!(!h.app.sup.pool(pool).unwrap().has_given_up());
    assert!(h.app.sup.pool(pool).unwrap().starts() > starts);
    h.stop(Duration::from_secs(1), Duration::from_secs(5));
    drop(h);
    check.finish();
}

/// gunicorn's `timeout`: a request stuck past the busy timeout gets its
/// worker killed and replaced, without a fault.
#[test]
fn a_stuck_worker_is_killed_and_replaced_by_the_busy_timeout() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, addr) = listener();
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(1)
        .workers(1, 2)
        .idle(0, 2)
        .interval(INTERVAL)
        .busy_timeout(Duration::from_millis(300));
    let pool = h.add_pool("stuck", config, serving(&listener, "serve"));
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .count(pool, WorkerState::Idle)
        == 1));
    let client = std::thread::spawn(move || request(addr, 5000));
    assert!(h.run_until(Duration::from_secs(10), |h| busy_worker(h, pool).is_some()));
    let victim = busy_worker(&h, pool).unwrap();
    let killed = h.run_until(Duration::from_secs(10), |h| {
        h.seen(|e| {
            matches!(e, Event::Exited { exit, fault: false, .. }
                if exit.id.pid().as_raw() as u32 == victim
                    && exit.status().and_then(|s| {
                        use std::os::unix::process::ExitStatusExt;
                        s.signal()
                    }) == Some(libc::SIGKILL))
        })
    });
    assert!(killed);
    assert!(!client.join().unwrap().ok);
    assert!(h.seen(|e| matches!(
        e,
        Event::TimedOut {
            limit: Timeout::Busy,
            ..
        }
    )));
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .count(pool, WorkerState::Idle)
        == 1));
    assert!(h.app.sup.pool(pool).unwrap().throttled_until().is_none());
    stop_and_check(h, listener, check);
}

/// systemd's `WatchdogSec`: a worker silent past the heartbeat interval is
/// killed; one that beats is left alone.
#[test]
fn silent_workers_are_killed_by_the_heartbeat_and_beating_ones_live() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, _addr) = listener();
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(1)
        .workers(1, 1)
        .idle(0, 1)
        .interval(INTERVAL)
        .heartbeat(Duration::from_millis(400));
    let beating = h.add_pool("beating", config.clone(), serving(&listener, "beat"));
    let silent = h.add_pool("silent", config, serving(&listener, "serve"));
    let timed_out = |h: &Harness, pool: PoolId| {
        h.seen(|e| {
            matches!(e, Event::TimedOut { worker, limit: Timeout::Heartbeat } if worker.pool == pool)
        })
    };
    assert!(h.run_until(Duration::from_secs(10), |h| timed_out(h, silent)));
    h.run_until(Duration::from_millis(1000), |_| false);
    assert!(!timed_out(&h, beating));
    assert_eq!(h.app.sup.pool(beating).unwrap().starts(), 1);
    stop_and_check(h, listener, check);
}
