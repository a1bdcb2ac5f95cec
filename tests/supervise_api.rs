//! The rest of the supervisor's surface: forked workers, handing idle
//! workers to the parent (OpenSRF's model) and the reload deadline for
//! workers that stay busy, unknown children left to the reactor's hook, and
//! refused configurations.

mod supervise_util;
use evchild_testkit as util;

use std::os::fd::{AsRawFd, RawFd};
use std::process::Command;
use std::time::Duration;

use evchild::supervise::{Event, PoolConfig, Start, WorkerState};
use evchild::{Claim, Error, Hooks, SigchldOwner};
use supervise_util::Harness;
use util::{Check, Gate, KillOnPanic};

/// Not a test: the worker program of the other `supervise_*` binaries;
/// every binary that includes `supervise_util` has one.
#[test]
fn worker_entry() {
    supervise_util::worker_main_if_asked();
}

/// A forked worker: reports ready, closes every descriptor but the gate
/// (so that it holds no copy of the gate's write end), and waits for the
/// gate to open or a signal. It calls only `write(2)` (through
/// `worker::ready`, which allocates nothing), `close(2)`, `read(2)` and
/// `_exit(2)`: async-signal-safe, as a child of this multithreaded test
/// process must be.
fn forked_worker(gate: RawFd) -> i32 {
    evchild::supervise::worker::ready();
    for fd in 3..1024 {
        if fd != gate {
            // SAFETY: closing descriptors in a forked child that uses no
            // Rust object owning them from here on.
            unsafe { libc::close(fd) };
        }
    }
    util::read_byte(gate);
    0
}

fn fork_start(gate: &Gate) -> Start {
    let fd = gate.read_raw();
    // SAFETY: `forked_worker` is async-signal-safe (see above).
    unsafe { Start::fork(move |_| forked_worker(fd)) }
}

#[test]
fn forked_workers_checked_out_and_retired_by_the_reload_deadline() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let gate = Gate::new();
    let mut h = Harness::new();
    let grace = Duration::from_millis(300);
    let config = PoolConfig::new()
        .start(3)
        .workers(3, 3)
        .idle(0, 3)
        .interval(Duration::from_millis(100))
        .retire_grace(grace);
    let pool = h.add_pool("forked", config, fork_start(&gate));
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.count(pool, WorkerState::Idle)
            == 3)
    );

    // The parent takes every idle worker for jobs of its own.
    let taken: Vec<_> = (0..3).map(|_| h.app.sup.checkout(pool).unwrap()).collect();
    assert!(taken
        .iter()
        .all(|w| w.state == WorkerState::Busy && w.generation == 1));
    assert!(h.app.sup.checkout(pool).is_none(), "no idle worker left");
    assert_eq!(h.count(pool, WorkerState::Busy), 3);

    // Reload: busy workers are not interrupted at once, but they never
    // report idle here, so the retire grace is their deadline.
    h.app.sup.reload(&mut h.reactor, pool).unwrap();
    h.turn(Duration::ZERO);
    assert_eq!(h.count(pool, WorkerState::Retiring), 0);
    let renewed = h.run_until(Duration::from_secs(5), |h| {
        let p = h.app.sup.pool(pool).unwrap();
        p.workers().all(|w| w.generation == 2) && p.count(WorkerState::Idle) == 3
    });
    assert!(
        renewed,
        "{:?}",
        h.app.sup.pool(pool).unwrap().workers().collect::<Vec<_>>()
    );
    let p = h.app.sup.pool(pool).unwrap();
    let old: Vec<_> = p.last_exits().filter(|e| e.generation == 1).collect();
    assert_eq!(old.len(), 3);
    use std::os::unix::process::ExitStatusExt;
    assert!(old
        .iter()
        .all(|e| !e.fault && e.exit.status().and_then(|s| s.signal()) == Some(libc::SIGTERM)));
    assert!(old.iter().all(|e| e.lifetime >= grace));

    h.stop(Duration::from_secs(1), Duration::from_secs(5));
    drop(h);
    drop(gate);
    check.finish();
}

#[test]
fn unknown_children_still_go_to_the_reactors_hook() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let gate = Gate::new();
    let hooks = Hooks::new(SigchldOwner::LibraryAlways).unknown_child(
        |app: &mut supervise_util::App, pid, _| {
            app.unknown.push(pid);
            Claim::Claimed
        },
    );
    let mut h = Harness::with_hooks(hooks);
    let config = PoolConfig::new().start(2).workers(2, 2).idle(0, 2);
    let pool = h.add_pool("beside", config, fork_start(&gate));
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.count(pool, WorkerState::Idle)
            == 2)
    );

    // A child the application started itself, and never waits for.
    let stranger = Command::new("true").spawn().unwrap();
    let pid = evchild::Pid::from(stranger.id());
    drop(stranger);
    assert!(h.run_until(Duration::from_secs(5), |h| h.app.unknown.contains(&pid)));
    assert_eq!(h.active(pool), 2, "the pool lost no worker");
    assert!(!h.seen(|e| matches!(e, Event::Exited { exit, .. } if exit.id.pid() == pid)));

    h.stop(Duration::from_secs(1), Duration::from_secs(5));
    drop(h);
    drop(gate);
    check.finish();
}

#[test]
fn impossible_configurations_are_refused_and_start_nothing() {
    let check = Check::start();
    let mut h = Harness::new();
    let bad = [
        PoolConfig::new().workers(4, 2),
        PoolConfig::new().workers(0, 0),
        PoolConfig::new().idle(3, 1),
        PoolConfig::new().interval(Duration::ZERO),
        PoolConfig::new().max_requests(0),
    ];
    for config in bad {
        let start = Start::command(|_| Command::new("true"));
        let err = h
            .app
            .sup
            .add_pool(&mut h.reactor, "bad", config, start)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    }
    assert_eq!(h.app.sup.pools().count(), 0);
    assert!(h.reactor.is_empty());
    // Shutting down an empty supervisor stops at once.
    h.app.sup.shutdown(&mut h.reactor, Duration::from_secs(1));
    assert!(h.app.sup.is_stopped());
    let err = h
        .app
        .sup
        .add_pool(
            &mut h.reactor,
            "late",
            PoolConfig::new(),
            Start::command(|_| Command::new("true")),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Pool { .. }), "{err}");
    drop(h);
    check.finish();
}

/// A forked worker that forks a helper of its own, which holds `lifeline`
/// (a pipe's write end) until the gate opens or a signal kills it. Only
/// `write`, `fork`, `close`, `read` and `_exit`: async-signal-safe.
fn forked_worker_with_helper(gate: RawFd, lifeline: RawFd) -> i32 {
    evchild::supervise::worker::ready();
    // SAFETY: fork(2) in a forked child that only makes async-signal-safe
    // calls from here on, in both processes.
    let keep = if unsafe { libc::fork() } == 0 {
        lifeline
    } else {
        gate
    };
    for fd in 3..1024 {
        if fd != gate && fd != keep {
            // SAFETY: as in `forked_worker`.
            unsafe { libc::close(fd) };
        }
    }
    util::read_byte(gate);
    0
}

#[test]
fn stopping_a_pool_in_process_groups_ends_the_workers_helpers_too() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let gate = Gate::new();
    let (lifeline_read, lifeline_write) = util::pipe();
    let mut h = Harness::new();
    let config = PoolConfig::new()
        .start(2)
        .workers(2, 2)
        .idle(0, 2)
        .process_group(true);
    let (g, l) = (gate.read_raw(), lifeline_write.as_raw_fd());
    // SAFETY: `forked_worker_with_helper` is async-signal-safe.
    let start = unsafe { Start::fork(move |_| forked_worker_with_helper(g, l)) };
    let pool = h.add_pool("groups", config, start);
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.count(pool, WorkerState::Idle)
            == 2)
    );
    drop(lifeline_write);
    // Each worker leads its own group.
    for w in h.app.sup.pool(pool).unwrap().workers() {
        let pid = nix::unistd::Pid::from_raw(w.pid().as_raw());
        assert_eq!(nix::unistd::getpgid(Some(pid)).unwrap(), pid);
    }
    assert!(
        !util::readable(lifeline_read.as_raw_fd()),
        "the helpers are alive"
    );
    h.stop(Duration::from_secs(2), Duration::from_secs(5));
    // The helpers (not our children: nobody reaps them here) got the
    // group's SIGTERM: the lifeline is closed, though the gate is not.
    assert!(
        util::readable_within(lifeline_read.as_raw_fd(), Duration::from_secs(5)),
        "a helper outlived its worker"
    );
    assert_eq!(util::read_byte(lifeline_read.as_raw_fd()), None);
    drop(h);
    drop(gate);
    drop(lifeline_read);
    check.finish();
}

/// A worker in plain `sh`, speaking the status protocol itself (see
/// `supervise::worker`): 0xE7, the state letter, the token as 8 bytes
/// little endian (tokens here are below 256). It answers each line of its
/// stdin with `done LINE` on its stdout, as a job the parent handed it.
const SH_WORKER: &str = r#"
fd=${EVCHILD_WORKER%%:*}; token=${EVCHILD_WORKER#*:}
report() { eval "printf '\347$1\\$(printf %03o "$token")\0\0\0\0\0\0\0' >/proc/self/fd/$fd"; }
report R
while read -r job; do
    echo "done $job"
    report I
done
"#;

#[test]
fn the_parent_hands_a_job_to_a_checked_out_worker_over_its_stdio() {
    use std::io::{Read, Write};
    let check = Check::start();
    let _reap = KillOnPanic;
    let mut h = Harness::new();
    let config = PoolConfig::new().start(2).workers(2, 2).idle(0, 2);
    let start = Start::command(|_| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", SH_WORKER])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        cmd
    });
    let pool = h.add_pool("jobs", config, start);
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.count(pool, WorkerState::Idle)
            == 2)
    );

    for job in ["one", "two", "three"] {
        let worker = h.app.sup.checkout(pool).expect("an idle worker");
        let mut stdio = h
            .app
            .sup
            .pool_mut(pool)
            .unwrap()
            .take_stdio(worker.id)
            .unwrap_or_else(|| panic!("stdio of {} already taken", worker.id));
        let mut stdin = stdio.stdin.take().unwrap();
        let mut stdout = stdio.stdout.take().unwrap();
        stdin.write_all(format!("{job}\n").as_bytes()).unwrap();
        assert!(util::readable_within(
            stdout.as_raw_fd(),
            Duration::from_secs(5)
        ));
        let mut answer = [0u8; 64];
        let n = stdout.read(&mut answer).unwrap();
        assert_eq!(&answer[..n], format!("done {job}\n").as_bytes());
        // The worker reports idle; the pool counts the request.
        let served = h.run_until(Duration::from_secs(5), |h| {
            h.app
                .sup
                .pool(pool)
                .unwrap()
                .worker(worker.id)
                .is_some_and(|w| w.state == WorkerState::Idle && w.requests == 1)
        });
        assert!(
            served,
            "{:?}",
            h.app.sup.pool(pool).unwrap().worker(worker.id)
        );
        // Closing its stdin ends this worker (exit 0, no fault), and the
        // pool replaces it.
        drop(stdin);
        drop(stdout);
        assert!(h.run_until(Duration::from_secs(5), |h| {
            h.app.sup.pool(pool).unwrap().worker(worker.id).is_none()
                && h.count(pool, WorkerState::Idle) == 2
        }));
    }
    let p = h.app.sup.pool(pool).unwrap();
    assert!(p
        .last_exits()
        .all(|e| !e.fault && e.requests == 1 && e.exit.status().is_some_and(|s| s.success())));
    assert!(p.throttled_until().is_none());

    h.stop(Duration::from_secs(1), Duration::from_secs(5));
    drop(h);
    check.finish();
}

#[test]
fn status_reports_wake_the_loop_without_a_timer() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let gate = Gate::new();
    let mut h = Harness::new();
    // No timer of the pool's is due for a minute: only the status pipe
    // (through the supervisor's one descriptor) can wake the loop.
    let minute = Duration::from_secs(60);
    let config = PoolConfig::new()
        .start(1)
        .workers(1, 1)
        .idle(0, 1)
        .interval(minute)
        .start_timeout(minute);
    let t0 = std::time::Instant::now();
    let pool = h.add_pool("woken", config, fork_start(&gate));
    // Nothing else is due either: each turn may sleep up to a minute, and
    // the ready report must end the sleep it lands in.
    for _ in 0..3 {
        if h.count(pool, WorkerState::Idle) == 1 {
            break;
        }
        h.turn(minute);
    }
    assert_eq!(h.count(pool, WorkerState::Idle), 1);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    h.stop(Duration::from_secs(1), Duration::from_secs(5));
    drop(h);
    drop(gate);
    check.finish();
}
