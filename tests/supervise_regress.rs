//! Regression tests of issue 14's defects 7 to 11, each failing before its
//! fix: the status descriptor leaked to the workers' children and to other
//! threads' spawns (7), a panic in a forked worker unwound into the
//! master's frames (8), deaths were routed by (pool, token) alone (9),
//! impossible sizes were accepted and events were unreadable in a log
//! (11). Defect 10 (`getenv` outside std's lock) is checked by a unit test
//! of `worker.rs`.

mod supervise_util;
use evchild_testkit as util;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use evchild::supervise::{Event, PoolConfig, Start, Supervisor, WorkerState};
use evchild::Error;
use mio::{Interest, Token};
use supervise_util::{serving, sh, sigkill, stop_and_check, worker_command, Harness};
use util::{Check, KillOnPanic};

/// Not a test: the worker program of this binary (see `supervise_util`).
#[test]
fn worker_entry() {
    supervise_util::worker_main_if_asked();
}

/// The status descriptor an executed worker was given, from its
/// environment, and whether it is close-on-exec in that worker now.
fn status_fd_cloexec(pid: u32) -> (i32, bool) {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let value = environ
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"EVCHILD_WORKER="))
        .expect("EVCHILD_WORKER in the worker's environment");
    let value = String::from_utf8_lossy(value);
    let fd: i32 = value.split(':').next().unwrap().parse().unwrap();
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    (fd, flags & libc::O_CLOEXEC as u32 != 0)
}

/// Issue 14, item 7 (worker side): once a worker has read its channel
/// (its first report), the descriptor is close-on-exec, so that the
/// worker's own children do not inherit it.
#[test]
fn an_executed_workers_status_descriptor_is_close_on_exec_in_the_worker() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (listener, _) = supervise_util::listener();
    let mut h = Harness::new();
    let pool = h.add_pool(
        "cloexec",
        PoolConfig::new().start(1).workers(1, 1),
        serving(&listener, "serve"),
    );
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .count(pool, WorkerState::Idle)
        == 1));
    let pid = *h.pids(pool).iter().next().unwrap();
    let (status_fd, cloexec) = status_fd_cloexec(pid);
    assert!(cloexec, "fd {status_fd} of worker {pid} is inheritable");
    stop_and_check(h, listener, check);
}

/// Issue 14, item 7 (parent side): while the pool spawns workers, a spawn
/// on another thread never inherits the status pipe.
#[test]
fn a_spawn_on_another_thread_never_inherits_the_status_pipe() {
    let check = Check::start();
    let _reap = KillOnPanic;
    // What any spawn inherits before the pool exists (whatever this test
    // process itself inherited), and `ls`'s own directory.
    let inherited = || -> BTreeSet<i32> {
        let out = Command::new("ls").arg("/proc/self/fd").output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|fd| fd.parse().unwrap())
            .collect()
    };
    let baseline = inherited();
    let mut h = Harness::new();
    // Workers that report ready and exit 0: replaced at once, no fault, so
    // the pool spawns all the time.
    let pool = h.add_pool(
        "churn",
        PoolConfig::new().start(4).workers(4, 4).idle(0, 4),
        Start::command(move |_| worker_command(-1, "ready-exit")),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let spawner = std::thread::spawn(move || {
        let mut leaks = BTreeSet::<i32>::new();
        let mut runs = 0;
        while !s.load(Ordering::Relaxed) {
            runs += 1;
            leaks.extend(inherited().difference(&baseline));
        }
        (runs, leaks)
    });
    h.run_until(Duration::from_millis(1500), |_| false);
    stop.store(true, Ordering::Relaxed);
    let (runs, leaks) = spawner.join().unwrap();
    let starts = h.app.sup.pool(pool).unwrap().starts();
    assert!(starts > 8 && runs > 8, "{starts} starts, {runs} spawns");
    assert!(
        leaks.is_empty(),
        "descriptors {leaks:?} leaked into another thread's spawn"
    );
    h.stop(Duration::from_secs(2), Duration::from_secs(10));
    drop(h);
    check.finish();
}

/// Sets a flag when dropped: a frame of the parent's unwound in a child.
struct Witness(std::os::fd::RawFd);

impl Drop for Witness {
    fn drop(&mut self) {
        util::write_byte(self.0, b'!');
    }
}

/// Issue 14, item 8: a panic in a `Start::fork` worker aborts it; it never
/// unwinds into the master's frames (whose destructors would run in the
/// worker, and whose loop would go on there).
#[test]
fn a_panic_in_a_forked_worker_aborts_it_without_unwinding_into_the_master() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let (read, write) = util::pipe();
    let mut h = Harness::new();
    // Declared after the harness, so dropped first by an unwinding.
    let witness = Witness(std::os::fd::AsRawFd::as_raw_fd(&write));
    // The first worker reports ready and exits 0 (no fault): its
    // replacement is started from the loop (`dispatch`, `run`), and
    // panics there.
    // SAFETY: the workers call `worker::ready` (a `write(2)`) and
    // `resume_unwind` (no panic hook, no lock; one small allocation, which
    // glibc's fork handlers make safe); the pool then aborts them.
    let start = unsafe {
        Start::fork(|spec| {
            if spec.worker.number() == 1 {
                evchild::supervise::worker::ready();
                return 0;
            }
            std::panic::resume_unwind(Box::new(()));
        })
    };
    let pool = h.add_pool(
        "panic",
        PoolConfig::new().start(1).workers(1, 1).throttle(
            Duration::from_secs(30),
            Duration::from_secs(30),
            Duration::from_secs(30),
        ),
        start,
    );
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .app
        .sup
        .pool(pool)
        .unwrap()
        .last_exits()
        .count()
        == 2));
    let exit = h
        .app
        .sup
        .pool(pool)
        .unwrap()
        .last_exits()
        .nth(1)
        .unwrap()
        .clone();
    assert_eq!(exit.id.number(), 2);
    assert_eq!(
        exit.exit.status().and_then(|s| s.signal()),
        Some(libc::SIGABRT),
        "{exit:?}"
    );
    assert!(
        !util::readable(std::os::fd::AsRawFd::as_raw_fd(&read)),
        "the master's frames unwound in the worker"
    );
    h.stop(Duration::from_secs(1), Duration::from_secs(10));
    drop(witness);
    drop(h);
    drop(write);
    drop(read);
    check.finish();
}

/// Issue 14, item 9: a dropped supervisor's worker dies after a new
/// supervisor took its place in the context; the new supervisor's worker
/// with the same pool and token is untouched, and no event is made of the
/// stranger's death.
#[test]
fn a_dropped_supervisors_worker_is_not_mistaken_for_a_new_ones() {
    let check = Check::start();
    let _reap = KillOnPanic;
    let mut h = Harness::new();
    let config = PoolConfig::new().start(1).workers(1, 1);
    let old_pool = h.add_pool("old", config.clone(), sh("exec sleep 30"));
    let old_pid = *h.pids(old_pool).iter().next().unwrap();
    // A new supervisor replaces the old one, which is dropped with its
    // worker alive (still the reactor's child).
    h.poll.registry().deregister(&mut h.app.sup).unwrap();
    h.app.sup = Supervisor::new().unwrap();
    h.poll
        .registry()
        .register(&mut h.app.sup, Token(1), Interest::READABLE)
        .unwrap();
    h.app.events.clear();
    let pool = h.add_pool("new", config, sh("exec sleep 30"));
    assert_eq!(pool, old_pool, "same pool index");
    let new_pid = *h.pids(pool).iter().next().unwrap();
    let new_worker = h.app.sup.pool(pool).unwrap().workers().next().unwrap().id;
    assert_eq!(new_worker.number(), 1, "same token");
    sigkill(old_pid);
    // The old worker's death is dispatched.
    assert!(h.run_until(Duration::from_secs(10), |h| h.reactor.len() == 1));
    h.run_until(Duration::from_millis(100), |_| false);
    assert_eq!(h.pids(pool), [new_pid].into_iter().collect());
    assert!(
        !h.seen(|e| matches!(e, Event::Exited { .. })),
        "{:?}",
        h.app.events
    );
    // And the new worker is still the pool's to stop.
    h.stop(Duration::from_secs(2), Duration::from_secs(10));
    assert!(h.seen(|e| matches!(
        e,
        Event::Exited { exit, .. } if exit.id.pid().as_raw() as u32 == new_pid
    )));
    drop(h);
    check.finish();
}

/// Issue 14, item 11: an idle minimum above the worker maximum is refused;
/// events and ids read well in a log, with durations, not instants.
#[test]
fn impossible_sizes_are_refused_and_events_read_well_in_a_log() {
    let check = Check::start();
    let mut h = Harness::new();
    let err = h
        .app
        .sup
        .add_pool(
            &mut h.reactor,
            "bad",
            PoolConfig::new().workers(1, 2).idle(3, 4),
            sh("exit 0"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    let err = h
        .app
        .sup
        .add_pool(
            &mut h.reactor,
            "bad",
            PoolConfig::new().stop_signal(0),
            sh("exit 0"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(h.reactor.is_empty());

    let config = PoolConfig::new().start(1).workers(1, 1).throttle(
        Duration::from_millis(1500),
        Duration::from_secs(2),
        Duration::from_secs(2),
    );
    let pool = h.add_pool("log", config, sh("exit 7"));
    assert!(h.run_until(Duration::from_secs(10), |h| h
        .seen(|e| matches!(e, Event::Throttled { .. }))));
    let lines: Vec<String> = h.app.events.iter().map(|(_, e)| e.to_string()).collect();
    let pid = h
        .app
        .sup
        .pool(pool)
        .unwrap()
        .last_exits()
        .next()
        .unwrap()
        .exit
        .id
        .pid();
    assert_eq!(
        lines,
        [
            format!("worker 0.1 started: pid {pid}, generation 1"),
            format!("worker 0.1 (pid {pid}) exit status: 7 [fault]"),
            "pool 0: throttled after a fault: no start for 1.500 s".to_owned(),
        ]
    );
    h.stop(Duration::from_secs(1), Duration::from_secs(10));
    drop(h);
    check.finish();
}
