//! `Library` mode with real processes and real signals: evchild reaps only
//! its own children. With a `SIGCHLD` backend (peek, scan) it installs its
//! handler while it has live children; with pidfds it installs none.
//!
//! The tests run with the backend of `EVCHILD_TEST_BACKEND` (see
//! [`util::test_backend`]), except the ones about the handler itself, which
//! ask for each `SIGCHLD` backend in turn.
//!
//! Every test holds [`util::Check`], so the tests of this binary run one at a
//! time and each must leave no child, no zombie and no descriptor behind.
//!
//! Forks: the test binary has other threads, so every forked child only
//! calls async-signal-safe functions (`_exit`, `read`, `write`, `close`,
//! `signal`, `raise`, `dup2`, `execv`) until it dies or execs; each `unsafe`
//! block says which.

#![warn(clippy::undocumented_unsafe_blocks)]

use evchild_testkit as util;

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use evchild::{Backend, ChildId, Error, Exit, Forked, Hooks, Outcome, Pid, Reactor, SigchldOwner};
use util::{
    fork_exit, fork_waiting, forward_fork, has_exited, readable, record, shell, sigchld_action,
    wait_zombie, Deaths, Gate, ReapOnPanic,
};

/// How long any test waits for its children; far more than any of them needs.
const LIMIT: Duration = Duration::from_secs(30);

/// Forks a child that kills itself with `signal` (after resetting it to the
/// default action, as std's `SIGSEGV` handler is inherited).
#[track_caller]
fn fork_raise<C>(
    reactor: &mut Reactor<C>,
    signal: libc::c_int,
    on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
) -> ChildId {
    // SAFETY: the child only calls `signal`, `raise` and `_exit`, which are
    // all async-signal-safe.
    match unsafe { reactor.fork(on_death) } {
        Ok(Forked::Child) => {
            // SAFETY: `signal` and `raise` are async-signal-safe; SIG_DFL is
            // a valid disposition.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
            util::exit_child(100)
        }
        Ok(Forked::Parent(id)) => id,
        Err(e) => panic!("fork: {e}"),
    }
}

/// No reactor holds a `SIGCHLD` registration. (Once installed, evchild's
/// handler stays for the life of the process: what is given up when no
/// reactor has live children is the registration, not the handler.)
#[track_caller]
fn assert_handler_released() {
    util::assert_no_registration("no reactor has live children");
}

/// Asserts what `SIGCHLD` is while `reactor` has a live child: evchild's
/// handler with a `SIGCHLD` backend; no registration with pidfds.
/// (Unless another reactor with a `SIGCHLD` backend has live children.)
#[track_caller]
fn assert_sigchld_as_backend_needs<C>(reactor: &Reactor<C>) {
    if reactor.backend() == Some(Backend::Pidfd) {
        assert_handler_released();
    } else {
        assert_sigchld_handled();
    }
}

#[track_caller]
fn assert_sigchld_handled() {
    let action = sigchld_action();
    assert_ne!(action.sa_sigaction, libc::SIG_DFL, "no SIGCHLD handler");
    assert_ne!(action.sa_sigaction, libc::SIG_IGN, "SIGCHLD ignored");
    assert_ne!(
        action.sa_flags & libc::SA_SIGINFO,
        0,
        "not evchild's handler"
    );
}

/// No core files in the working directory when children die of `SIGSEGV` or
/// `SIGABRT`: lowers the soft `RLIMIT_CORE` to 0 (always allowed). Done in
/// the parent (this test binary is its own process), so the children need
/// not call anything.
fn no_core_dumps() {
    // SAFETY: all-zero is a valid `rlimit`, overwritten by the kernel.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is a valid out-pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    limit.rlim_cur = 0;
    // SAFETY: `limit` is a valid `rlimit`; setrlimit only reads it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// 1. Exact statuses: exit codes 0, 1, 42 and 255; `SIGKILL` and `SIGTERM`
///    sent through `Reactor::kill`; `SIGSEGV` and `SIGABRT` raised by the
///    child itself (core dumps not required, and disabled).
#[test]
fn exact_exit_codes_and_signals() {
    let check = util::Check::start();
    no_core_dumps();
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();

        let codes: Vec<(ChildId, i32)> = [0, 1, 42, 255]
            .into_iter()
            .map(|code| (fork_exit(&mut reactor, code, record), code))
            .collect();
        let killed = fork_waiting(&mut reactor, &gate, record);
        let termed = fork_waiting(&mut reactor, &gate, record);
        let segv = fork_raise(&mut reactor, libc::SIGSEGV, record);
        let abrt = fork_raise(&mut reactor, libc::SIGABRT, record);
        reactor.kill(killed, libc::SIGKILL).expect("kill SIGKILL");
        reactor.kill(termed, libc::SIGTERM).expect("kill SIGTERM");

        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 8);
        for &(id, code) in &codes {
            deaths.assert_code(id, code);
        }
        assert!(deaths.status(codes[0].0).success());
        deaths.assert_signal(killed, libc::SIGKILL);
        deaths.assert_signal(termed, libc::SIGTERM);
        deaths.assert_signal(segv, libc::SIGSEGV);
        deaths.assert_signal(abrt, libc::SIGABRT);
        assert_eq!(deaths.seen.len(), 8);
        assert!(reactor.is_empty());
        let stats = reactor.stats();
        assert_eq!((stats.reaped, stats.lost), (8, 0));
    }
    check.finish();
}

/// 2. A child that is dead before `fork` returns in the parent: a
///    `fork_replacement` forks, then waits until the child is a zombie
///    before it returns the pid, and the reactor is registered with its loop
///    only after that. It is reported exactly once, even after more
///    dispatches. Then twenty children that die as fast as they are forked
///    (the parent sleeping 50 ms before it looks).
#[test]
fn child_dead_before_fork_returns() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let hooks = util::hooks(SigchldOwner::Library).fork_replacement(|| {
            // SAFETY: only called by `Reactor::fork`, whose caller below
            // upholds fork's contract (the child only `_exit`s).
            let forked = unsafe { forward_fork() };
            if let Ok(Some(pid)) = forked {
                wait_zombie(pid);
            }
            forked
        });
        let mut reactor = Reactor::new(hooks).expect("Reactor::new");
        let mut deaths = Deaths::default();
        let early = fork_exit(&mut reactor, 17, record);
        assert!(reactor.contains(early));
        // Registered with the loop only now: the wake-up happened before.
        let mut lp = util::Loop::new(&mut reactor);
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
        deaths.assert_code(early, 17);

        // More wake-ups change nothing.
        for _ in 0..3 {
            reactor.dispatch(&mut deaths).expect("dispatch");
        }
        assert_eq!(deaths.total(), 1);
        assert!(!readable(reactor.as_raw_fd()), "spurious wake-up left");

        reactor
            .set_mode(util::hooks(SigchldOwner::Library))
            .expect("set_mode with no child");
        let burst: Vec<ChildId> = (0..20)
            .map(|i| fork_exit(&mut reactor, i, record))
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 21);
        for (code, &id) in burst.iter().enumerate() {
            deaths.assert_code(id, code as i32);
        }
        reactor.dispatch(&mut deaths).expect("dispatch");
        assert_eq!(deaths.total(), 21);
        assert_eq!(reactor.stats().reaped, 21);
        assert!(reactor.is_empty());
    }
    check.finish();
}

/// 3. A thousand children alive at once (each blocked on its lifeline), then
///    killed through the reactor, half in batches of 50 reported one batch at
///    a time, half at once: every one reported exactly once, with `SIGKILL`.
#[test]
fn thousand_children_alive_at_once() {
    const N: usize = 1000;
    let check = util::Check::start();
    assert_process_limit_allows(N);
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        let started = Instant::now();
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let ids: Vec<ChildId> = (0..N)
            .map(|_| fork_waiting(&mut reactor, &gate, record))
            .collect();
        assert_eq!(reactor.len(), N);
        assert_eq!(
            ids.iter().map(|id| id.pid()).collect::<HashSet<_>>().len(),
            N
        );
        let forked = started.elapsed();
        // Half of them in ten batches, each reported before the next is
        // killed (many wake-ups with hundreds of live children), then the
        // other half all at once.
        let (batched, at_once) = ids.split_at(N / 2);
        for (i, batch) in batched.chunks(N / 20).enumerate() {
            for &id in batch {
                reactor.kill(id, libc::SIGKILL).expect("kill");
            }
            let reported = (i + 1) * batch.len();
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == reported);
            assert_eq!(reactor.len(), N - reported);
        }
        for &id in at_once {
            reactor.kill(id, libc::SIGKILL).expect("kill");
        }
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == N);
        for &id in &ids {
            deaths.assert_signal(id, libc::SIGKILL);
        }
        assert_eq!(deaths.seen.len(), N);
        let stats = reactor.stats();
        assert_eq!((stats.reaped, stats.lost), (N as u64, 0));
        assert!(reactor.is_empty());
        eprintln!(
            "{N} children: forked in {forked:?}, all reported after {:?} ({} dispatches)",
            started.elapsed(),
            stats.dispatches
        );
    }
    check.finish();
}

/// Fails clearly (instead of with `EAGAIN` from `fork`) if `RLIMIT_NPROC`
/// would not allow `n` more processes. Root is exempt from the limit.
#[track_caller]
fn assert_process_limit_allows(n: usize) {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return;
    }
    // SAFETY: all-zero is a valid `rlimit`, overwritten by the kernel.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is a valid out-pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    assert!(
        limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= (n as libc::rlim_t) * 2,
        "RLIMIT_NPROC ({}) is too low for {n} children; raise it (ulimit -u)",
        limit.rlim_cur
    );
}

/// 4. Callbacks that use the reactor they are given: the first child's
///    callback forks a new child; that child's callback kills another,
///    still-registered child. All three are reported, with their true
///    statuses, and each callback runs after its child left the tables.
#[test]
fn callbacks_fork_and_kill() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();

        let victim = fork_waiting(&mut reactor, &gate, record);
        let first = fork_exit(
            &mut reactor,
            5,
            move |d: &mut Deaths, r: &mut Reactor<Deaths>, exit: Exit| {
                assert!(!r.contains(exit.id), "callback ran before removal");
                assert!(!r.children().any(|id| id == exit.id));
                assert!(matches!(
                    r.kill(exit.id, 0),
                    Err(Error::AlreadyReaped { pid }) if pid == exit.id.pid()
                ));
                record(d, r, exit);
                // A child started from a callback, whose own callback kills
                // the victim.
                let second = fork_exit(
                    r,
                    6,
                    move |d: &mut Deaths, r: &mut Reactor<Deaths>, exit| {
                        record(d, r, exit);
                        assert!(r.contains(victim));
                        r.kill(victim, libc::SIGTERM).expect("kill from a callback");
                    },
                );
                d.spawned.push(second);
                assert!(r.contains(second));
            },
        );

        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 3);
        deaths.assert_code(first, 5);
        assert_eq!(deaths.spawned.len(), 1);
        deaths.assert_code(deaths.spawned[0], 6);
        deaths.assert_signal(victim, libc::SIGTERM);
        assert!(reactor.is_empty());
        assert_eq!(reactor.stats().reaped, 3);
    }
    check.finish();
}

/// 5. Panicking callbacks: the panic comes out of `dispatch`; the reactor
///    stays consistent (the children reaped in that dispatch are gone from
///    the tables), wakes its loop again, delivers every other report exactly
///    once on later dispatches, and goes on working.
#[test]
fn panicking_callback_leaves_reactor_consistent() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let _quiet = QuietPanics::install();

        let panicking = |d: &mut Deaths, r: &mut Reactor<Deaths>, exit: Exit| {
            record(d, r, exit);
            d.panicked.push(exit.id);
            panic::panic_any(MESSAGE);
        };
        // Six children, two of them with panicking callbacks, all dead (but
        // not reaped) before the first dispatch, so one dispatch reaps them
        // all and the panics interrupt its delivery.
        let mut ids = Vec::new();
        for code in 0..6 {
            let id = if code % 3 == 0 {
                fork_exit(&mut reactor, code, panicking)
            } else {
                fork_exit(&mut reactor, code, record)
            };
            ids.push(id);
        }
        for &id in &ids {
            wait_zombie(id.pid());
        }

        let mut panics = 0;
        while deaths.total() < 6 {
            let run = panic::catch_unwind(AssertUnwindSafe(|| {
                lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 6)
            }));
            if let Err(payload) = run {
                let text = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied());
                assert_eq!(text, Some(MESSAGE), "an unexpected panic");
                panics += 1;
                assert!(panics <= 2, "more panics than panicking callbacks");
                // Every child was reaped by the first dispatch: none is
                // registered any more, whatever is still to be delivered.
                assert_eq!(reactor.len(), 0);
                assert!(ids.iter().all(|&id| !reactor.contains(id)));
            }
        }
        assert_eq!(panics, 2);
        for (code, &id) in ids.iter().enumerate() {
            deaths.assert_code(id, code as i32);
        }
        // Each panicking callback ran once. In which order depends on the
        // backend (pidfd reports children in the order they became ready).
        let mut panicked = deaths.panicked.clone();
        panicked.sort();
        let mut expected = [ids[0], ids[3]];
        expected.sort();
        assert_eq!(panicked, expected);
        assert_eq!(reactor.stats().reaped, 6);
        assert!(matches!(
            reactor.kill(ids[0], libc::SIGKILL),
            Err(Error::AlreadyReaped { .. })
        ));

        // The reactor still works: a new child is reported, nothing twice.
        let after = fork_exit(&mut reactor, 9, record);
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 7);
        deaths.assert_code(after, 9);
        assert_eq!(deaths.seen.len(), 7);
        assert!(reactor.is_empty());
        // And, with no child left, the registration is released again.
        assert_handler_released();
    }
    check.finish();
}

/// The payload of the deliberate panics.
const MESSAGE: &str = "deliberate panic in a death callback";

/// While it lives, the panic hook stays silent about the deliberate panics
/// (payload [`MESSAGE`]) and passes every other panic to the previous hook:
/// no noise in the output, and no backtrace captured for them under
/// `RUST_BACKTRACE=1`. The tests of this binary run one at a time (the
/// lock of [`util::Check`]), so no other test sees this hook.
struct QuietPanics {
    /// Puts the previous hook back.
    restore: Option<Box<dyn FnOnce()>>,
}

impl QuietPanics {
    fn install() -> Self {
        let previous = Arc::new(panic::take_hook());
        let forward = previous.clone();
        panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&MESSAGE) {
                forward(info);
            }
        }));
        let restore = move || {
            drop(panic::take_hook()); // ours, with its clone of `previous`
            match Arc::try_unwrap(previous) {
                Ok(hook) => panic::set_hook(hook),
                Err(previous) => panic::set_hook(Box::new(move |info| previous(info))),
            }
        };
        QuietPanics {
            restore: Some(Box::new(restore)),
        }
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        // `take_hook` and `set_hook` panic in a panicking thread: if the test
        // failed, leave our hook, which passes every other panic on.
        if let Some(restore) = self.restore.take() {
            if !std::thread::panicking() {
                restore();
            }
        }
    }
}

/// 6. `set_mode` while children are registered (alive, or dead but not yet
///    dispatched) is refused with `ChildrenActive` and changes nothing: the
///    mode and the hooks stay, and the children are still reaped and
///    reported in `Library` mode. Once they are reported, it works.
#[test]
fn set_mode_refused_with_live_children() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        let forks = util::Shared::new(0);
        let counter = forks.clone();
        let hooks = util::hooks(SigchldOwner::Library).fork_replacement(move || {
            counter.set(counter.get() + 1);
            // SAFETY: only called by `Reactor::fork`, whose caller below
            // upholds fork's contract (its children only `_exit` or wait
            // on their lifeline).
            unsafe { forward_fork() }
        });
        let mut reactor = Reactor::new(hooks).expect("Reactor::new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut deaths = Deaths::default();

        let alive = fork_waiting(&mut reactor, &gate, record);
        assert_eq!(forks.get(), 1);
        let err = reactor
            .set_mode(Hooks::new(SigchldOwner::Mainloop))
            .expect_err("set_mode with a live child");
        assert!(matches!(err, Error::ChildrenActive { live: 1 }), "{err:?}");
        assert_eq!(reactor.mode(), SigchldOwner::Library);
        assert!(reactor.contains(alive));

        // The old hooks are still in place: the replacement is still called.
        let exited = fork_exit(&mut reactor, 4, record);
        assert_eq!(forks.get(), 2);
        // A dead but unreported child still counts as registered.
        wait_zombie(exited.pid());
        let err = reactor
            .set_mode(Hooks::new(SigchldOwner::Mainloop))
            .expect_err("set_mode with an unreported child");
        assert!(matches!(err, Error::ChildrenActive { live: 2 }), "{err:?}");
        assert_eq!(reactor.mode(), SigchldOwner::Library);
        assert_sigchld_as_backend_needs(&reactor);

        reactor.kill(alive, libc::SIGKILL).expect("kill");
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 2);
        deaths.assert_signal(alive, libc::SIGKILL);
        deaths.assert_code(exited, 4);

        // No child left: the mode may change, and back.
        reactor
            .set_mode(Hooks::new(SigchldOwner::Mainloop))
            .expect("set_mode(Mainloop) with no child");
        assert_eq!(reactor.mode(), SigchldOwner::Mainloop);
        reactor
            .set_mode(util::hooks(SigchldOwner::Library))
            .expect("set_mode(Library) with no child");
        assert_eq!(reactor.mode(), SigchldOwner::Library);
        // The new hooks have no replacement: a real fork, not counted.
        let last = fork_exit(&mut reactor, 8, record);
        assert_eq!(forks.get(), 2);
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 3);
        deaths.assert_code(last, 8);
    }
    check.finish();
}

/// 7. `kill` refuses what it must: a reaped child's id (`AlreadyReaped`),
///    an id issued by another reactor (`ForeignId`, while that child lives
///    and after it is gone), and an invalid signal number (`Io` with
///    `EINVAL`, the child untouched). `terminate` refuses the same ids, and
///    sets no deadline for them. Pids that were never registered (this
///    process, init, 0 and -1, which `kill(2)` would treat as groups) cannot
///    even be named: a `ChildId` comes only from `fork`.
#[test]
fn kill_refusals() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();

        let gone = fork_exit(&mut reactor, 0, record);
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
        for result in [
            reactor.kill(gone, libc::SIGKILL),
            reactor.terminate(gone, Duration::ZERO),
        ] {
            match result {
                Err(Error::AlreadyReaped { pid }) => assert_eq!(pid, gone.pid()),
                other => panic!("kill after reap: {other:?}"),
            }
        }

        let alive = fork_waiting(&mut reactor, &gate, record);
        // A live child of another reactor is not this one's to signal.
        let (mut other, mut other_lp, mut other_deaths) = util::library_loop::<Deaths>();
        let theirs = fork_waiting(&mut other, &gate, record);
        assert!(!reactor.contains(theirs));
        assert_eq!(reactor.children().collect::<Vec<_>>(), [alive]);
        for result in [
            reactor.kill(theirs, libc::SIGTERM),
            reactor.terminate(theirs, Duration::ZERO),
        ] {
            match result {
                Err(Error::ForeignId { id }) => assert_eq!(id, theirs),
                other => panic!("kill({theirs}) of another reactor's child: {other:?}"),
            }
        }
        assert_eq!(
            reactor.timeout(),
            None,
            "a refused terminate set a deadline"
        );
        // It dies of its own reactor's SIGKILL: our SIGTERM was not sent.
        other
            .kill(theirs, libc::SIGKILL)
            .expect("kill through its reactor");
        other_lp.run_until(&mut other, &mut other_deaths, LIMIT, |d| d.total() == 1);
        other_deaths.assert_signal(theirs, libc::SIGKILL);
        // Gone: still not ours, so still ForeignId here.
        assert!(matches!(
            reactor.kill(theirs, 0),
            Err(Error::ForeignId { id }) if id == theirs
        ));

        // A number that is no signal is a typed error; nothing is sent.
        for bad in [1000, -1, 32, libc::SIGRTMAX() + 1] {
            match reactor.kill(alive, bad) {
                Err(Error::InvalidSignal { signal }) => assert_eq!(signal, bad),
                other => panic!("kill with signal {bad}: {other:?}"),
            }
        }
        // Untouched: still registered, still alive, signal 0 checks it.
        assert!(reactor.contains(alive));
        reactor
            .kill(alive, 0)
            .expect("kill(pid, 0) of a live child");
        reactor.dispatch(&mut deaths).expect("dispatch");
        assert_eq!(deaths.total(), 1);

        reactor.kill(alive, libc::SIGKILL).expect("kill");
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 2);
        deaths.assert_signal(alive, libc::SIGKILL);
        assert!(matches!(
            reactor.kill(alive, 0),
            Err(Error::AlreadyReaped { .. })
        ));
    }
    check.finish();
}

/// 8. Coexistence with `std::process::Command` children in the same process:
///    one already a zombie before evchild's children die (with peek, a
///    foreign zombie first in line: the fallback scan), one that dies while
///    evchild's loop runs (with its handler installed, if it has one). evchild never
///    reaps them (their own `try_wait` gets exit codes 3 and 4), and all of
///    evchild's children are reported, none lost.
#[test]
fn command_children_are_left_alone() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();

        let mut zombie = shell("exit 3");
        wait_zombie(Pid::from(zombie.id()));
        // One evchild child alive during all of it, so the handler stays.
        let waiting = fork_waiting(&mut reactor, &gate, record);
        let mut running = shell("sleep 0.2; exit 4");
        let running_pid = Pid::from(running.id());

        let ids: Vec<ChildId> = (0..10)
            .map(|code| fork_exit(&mut reactor, code, record))
            .collect();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 10);
        for (code, &id) in ids.iter().enumerate() {
            deaths.assert_code(id, code as i32);
        }
        // With a SIGCHLD backend its death wakes the loop too (one SIGCHLD
        // for everyone); pidfds are not woken by it at all, so wait for it
        // here rather than in the loop, then make the reactor look.
        wait_zombie(running_pid);
        reactor.dispatch(&mut deaths).expect("dispatch");
        assert!(has_exited(running_pid), "evchild reaped a std child");
        // Both are still there for their owner.
        let status = zombie.try_wait().expect("try_wait").expect("waitable");
        assert_eq!(status.code(), Some(3));
        let status = running.try_wait().expect("try_wait").expect("waitable");
        assert_eq!(status.code(), Some(4));

        reactor.kill(waiting, libc::SIGKILL).expect("kill");
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 11);
        deaths.assert_signal(waiting, libc::SIGKILL);
        let stats = reactor.stats();
        assert_eq!((stats.reaped, stats.lost), (11, 0));
    }
    check.finish();
}

/// 9. `fork_replacement`: one that fails with `EAGAIN` makes `fork` return
///    `Error::Io` and change nothing (no child registered; the handler it
///    installed for the call, with a `SIGCHLD` backend, removed again,
///    unless another reactor needs it); one that counts its calls and forwards to `nix::unistd::fork` is
///    called once per `fork`, and its children are reported.
#[test]
fn fork_replacement_hook() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        assert_handler_released();
        let calls = util::Shared::new(0);
        let counter = calls.clone();
        let failing = util::hooks(SigchldOwner::Library).fork_replacement(move || {
            counter.set(counter.get() + 1);
            Err(io::Error::from_raw_os_error(libc::EAGAIN))
        });
        let mut reactor = Reactor::new(failing).expect("Reactor::new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut deaths = Deaths::default();

        // SAFETY: the replacement never forks, so no child runs.
        let err = unsafe { reactor.fork(record) }.expect_err("failing fork");
        match &err {
            Error::Io { call, source } => {
                assert_eq!(*call, "fork");
                assert_eq!(source.raw_os_error(), Some(libc::EAGAIN));
            }
            other => panic!("failing fork: {other:?}"),
        }
        assert_eq!(calls.get(), 1);
        assert_eq!(reactor.len(), 0);
        assert_handler_released();

        // With another reactor holding a live child, the handler stays. That
        // reactor watches through SIGCHLD (scan), whatever this run's
        // backend, so that there is a handler to keep.
        let mut other = util::library_with::<Deaths>(Backend::Scan);
        let mut other_deaths = Deaths::default();
        let other_child = fork_waiting(&mut other, &gate, record);
        assert_sigchld_handled();
        // SAFETY: as above, no child runs.
        assert!(unsafe { reactor.fork(record) }.is_err());
        assert_eq!(calls.get(), 2);
        assert_eq!(reactor.len(), 0);
        assert_sigchld_handled();
        other.kill(other_child, libc::SIGKILL).expect("kill");
        let mut other_lp = util::Loop::new(&mut other);
        other_lp.run_until(&mut other, &mut other_deaths, LIMIT, |d| d.total() == 1);
        other_deaths.assert_signal(other_child, libc::SIGKILL);
        assert_handler_released();

        // Now one that forwards to fork(2) and counts.
        let forwarded = util::Shared::new(0);
        let counter = forwarded.clone();
        reactor
            .set_mode(
                util::hooks(SigchldOwner::Library).fork_replacement(move || {
                    counter.set(counter.get() + 1);
                    // SAFETY: only called by `Reactor::fork`, whose callers here
                    // uphold fork's contract (the children only `_exit`).
                    unsafe { forward_fork() }
                }),
            )
            .expect("set_mode with no child");
        let ids: Vec<ChildId> = (0..3)
            .map(|i| fork_exit(&mut reactor, 20 + i, record))
            .collect();
        assert_eq!(forwarded.get(), 3);
        assert_eq!(calls.get(), 2);
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 3);
        for (i, &id) in ids.iter().enumerate() {
            deaths.assert_code(id, 20 + i as i32);
        }
        assert_handler_released();
    }
    check.finish();
}

/// 10. The reactor's descriptors (its epoll set, both ends of its wake pipe
///     and, with pidfds, each live child's pidfd) are close-on-exec (the
///     set and the pipe non-blocking too), and no executed child sees them:
///     neither a `Command` child nor a child forked by the reactor that
///     `exec`s, both listing their descriptors with `ls -l /proc/self/fd/`.
///     (`fd_inheritance.rs` checks the same for each backend.)
#[test]
fn descriptors_are_not_inherited() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        let before = util::open_fds();
        let mut reactor = util::library::<Deaths>();
        // What the new descriptors name (the listing's own directory handle,
        // closed by now, names nothing).
        let opened: BTreeSet<String> = util::open_fds()
            .difference(&before)
            .map(|&fd| fd_target(fd))
            .filter(|target| !target.is_empty())
            .collect();
        let mut lp = util::Loop::new(&mut reactor);
        let mut deaths = Deaths::default();
        util::assert_cloexec_nonblock(&reactor);

        // The reactor's descriptor is its epoll set; the set holds the wake
        // pipe, whose two ends name the same object, such as `pipe:[1234]`.
        assert_eq!(fd_target(reactor.as_raw_fd()), EPOLL);
        let target = opened
            .iter()
            .find(|t| t.starts_with("pipe:"))
            .unwrap_or_else(|| panic!("no wake pipe among {opened:?}"))
            .clone();
        assert_eq!(opened.len(), 2, "epoll set and wake pipe: {opened:?}");
        let pipe: Vec<RawFd> = util::open_fds()
            .into_iter()
            .filter(|&fd| fd_target(fd) == target)
            .collect();
        assert_eq!(pipe.len(), 2, "the wake pipe's two ends: {pipe:?}");
        for fd in &pipe {
            util::assert_cloexec_nonblock(fd);
        }

        // With a live child, so the handler is installed too (or its pidfd
        // is open).
        let waiting = fork_waiting(&mut reactor, &gate, record);
        for fd in util::open_fds() {
            if fd_target(fd) == PIDFD {
                assert_eq!(reactor.backend(), Some(Backend::Pidfd), "a pidfd in {fd}");
                assert_cloexec(fd);
            }
        }
        let listing = Command::new("sh")
            .args(["-c", "ls -l /proc/self/fd/"])
            .stdin(Stdio::null())
            .output()
            .expect("run ls");
        assert!(listing.status.success(), "{listing:?}");
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert_inherited_none(&listing, &target, "a Command child");

        // A child of the reactor's own `fork` that execs.
        let (listing, execed) = util::fork_exec_listing(&mut reactor);
        assert_inherited_none(&listing, &target, "an exec'd child of Reactor::fork");
        reactor.kill(waiting, libc::SIGKILL).expect("kill");
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 2);
        deaths.assert_code(execed, 0);
        deaths.assert_signal(waiting, libc::SIGKILL);
    }
    check.finish();
}

/// What `/proc/self/fd/N` links to for an epoll set and for a pidfd.
const EPOLL: &str = "anon_inode:[eventpoll]";
const PIDFD: &str = "anon_inode:[pidfd]";

/// `listing`, the output of `ls -l /proc/self/fd/` in `who`, names no epoll
/// set, no pidfd and not the wake pipe `pipe`.
#[track_caller]
fn assert_inherited_none(listing: &str, pipe: &str, who: &str) {
    assert!(listing.contains("-> "), "unexpected listing: {listing}");
    for target in [pipe, EPOLL, PIDFD] {
        assert!(
            !listing.contains(target),
            "{who} inherited {target}:\n{listing}"
        );
    }
}

#[track_caller]
fn assert_cloexec(fd: RawFd) {
    // SAFETY: fcntl(F_GETFD) only reads the flags of a descriptor number.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert!(
        flags != -1 && flags & libc::FD_CLOEXEC != 0,
        "{fd} not close-on-exec"
    );
}

fn fd_target(fd: RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// 11. Four reactors on four threads, each with its own `mio` loop, each
///     forking 50 children at the same time as the others: each reactor
///     gets exactly its own children, with their statuses, and loses none.
#[test]
fn reactors_on_several_threads() {
    const THREADS: usize = 4;
    const PER_THREAD: i32 = 50;
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
                        barrier.wait();
                        let base = t as i32 * PER_THREAD;
                        let ids: Vec<ChildId> = (0..PER_THREAD)
                            .map(|i| fork_exit(&mut reactor, base + i, record))
                            .collect();
                        let n = PER_THREAD as usize;
                        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == n);
                        assert_eq!(
                            deaths.seen.keys().collect::<HashSet<_>>(),
                            ids.iter().collect::<HashSet<_>>(),
                            "thread {t} saw other children"
                        );
                        for (i, &id) in ids.iter().enumerate() {
                            deaths.assert_code(id, base + i as i32);
                        }
                        let stats = reactor.stats();
                        assert_eq!((stats.reaped, stats.lost), (n as u64, 0));
                        ids
                    })
                })
                .collect();
            let all: HashSet<Pid> = workers
                .into_iter()
                .flat_map(|w| w.join().expect("worker thread"))
                .map(|id| id.pid())
                .collect();
            assert_eq!(all.len(), THREADS * PER_THREAD as usize);
        });
        assert_handler_released();
    }
    check.finish();
}

/// 12. A `Library` reactor with a `SIGCHLD` backend holds a registration
///     (and the handler is installed) while it has a live child, and
///     releases it when its last child has been reaped; again on the next
///     round. For scan, peek and one of each; a pidfd reactor with a live
///     child all along holds none.
#[test]
fn handler_only_while_children_live() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        assert_handler_released();
        // A pidfd reactor (where the kernel has pidfds) with a live child
        // all along, which must not count as a user of the handler.
        let mut pidfd =
            util::pidfd_or_skip("the pidfd bystander").then(|| util::library_with(Backend::Pidfd));
        let mut pidfd_deaths = Deaths::default();
        let bystander = pidfd
            .as_mut()
            .map(|reactor| fork_waiting(reactor, &gate, record));
        assert_handler_released();
        for (first, second) in [
            (Backend::Scan, Backend::Scan),
            (Backend::Peek, Backend::Peek),
            (Backend::Scan, Backend::Peek),
        ] {
            handler_rounds(&gate, first, second);
        }
        if let (Some(reactor), Some(bystander)) = (pidfd.as_mut(), bystander) {
            reactor
                .kill(bystander, libc::SIGKILL)
                .expect("kill bystander");
            let mut lp = util::Loop::new(reactor);
            lp.run_until(reactor, &mut pidfd_deaths, LIMIT, |d| d.total() == 1);
            pidfd_deaths.assert_signal(bystander, libc::SIGKILL);
            assert_handler_released();
        }
    }
    check.finish();
}

/// Two rounds of [`handler_only_while_children_live`] with two reactors.
#[track_caller]
fn handler_rounds(gate: &Gate, first: Backend, second: Backend) {
    let mut one = util::library_with::<Deaths>(first);
    let mut two = util::library_with::<Deaths>(second);
    let mut one_lp = util::Loop::new(&mut one);
    let mut two_lp = util::Loop::new(&mut two);
    let mut one_deaths = Deaths::default();
    let mut two_deaths = Deaths::default();
    // Creating reactors registers nothing.
    assert_handler_released();

    for round in 1..=2 {
        let a = fork_waiting(&mut one, gate, record);
        assert_sigchld_handled();
        let b = fork_waiting(&mut one, gate, record);
        let c = fork_waiting(&mut two, gate, record);

        one.kill(a, libc::SIGKILL).expect("kill a");
        one_lp.run_until(&mut one, &mut one_deaths, LIMIT, |d| {
            d.total() == 2 * round - 1
        });
        one_deaths.assert_signal(a, libc::SIGKILL);
        assert_sigchld_handled();

        one.kill(b, libc::SIGKILL).expect("kill b");
        one_lp.run_until(&mut one, &mut one_deaths, LIMIT, |d| d.total() == 2 * round);
        one_deaths.assert_signal(b, libc::SIGKILL);
        // `one` has none left, but `two` still has a live child.
        assert!(one.is_empty());
        assert_sigchld_handled();

        two.kill(c, libc::SIGKILL).expect("kill c");
        two_lp.run_until(&mut two, &mut two_deaths, LIMIT, |d| d.total() == round);
        two_deaths.assert_signal(c, libc::SIGKILL);
        assert_handler_released();
    }
}

/// 13. A stale `ChildId` is refused even when its pid names a live child of
///     the reactor again. The kernel may give a reaped child's pid to a new
///     child; here a `fork_replacement` plays the kernel: its first call
///     forks a real child, its second returns the same pid again, as if
///     recycled. evchild takes the second registration as proof that the
///     first child was reaped behind its back (reported `Lost`), and from
///     then on the first id is stale: `kill` and `terminate` refuse it with
///     `AlreadyReaped` although its pid is registered and alive, and only
///     the new id names the process.
#[test]
fn stale_id_refused_when_its_pid_is_registered_again() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        let forked: util::Shared<Option<Pid>> = util::Shared::default();
        let last = forked.clone();
        let hooks = util::hooks(SigchldOwner::Library).fork_replacement(move || match last.get() {
            // The "recycled" pid: no new process.
            Some(pid) => Ok(Some(pid)),
            None => {
                // SAFETY: only called by `Reactor::fork`, whose caller below
                // upholds fork's contract (the child waits on its gate).
                let result = unsafe { forward_fork() };
                if let Ok(Some(pid)) = result {
                    last.set(Some(pid));
                }
                result
            }
        });
        let mut reactor = Reactor::new(hooks).expect("Reactor::new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut deaths = Deaths::default();

        let old = fork_waiting(&mut reactor, &gate, record);
        let new = fork_waiting(&mut reactor, &gate, record);
        assert_eq!(forked.get(), Some(old.pid()));
        assert_eq!(new.pid(), old.pid(), "the same pid");
        assert_ne!(new, old, "a new id");
        assert_eq!(reactor.len(), 1);
        assert!(reactor.contains(new));
        assert!(!reactor.contains(old));
        assert_eq!(reactor.children().collect::<Vec<_>>(), [new]);
        for result in [reactor.kill(old, 0), reactor.terminate(old, Duration::ZERO)] {
            match result {
                Err(Error::AlreadyReaped { pid }) => assert_eq!(pid, old.pid()),
                other => panic!("stale id {old}: {other:?}"),
            }
        }
        assert_eq!(reactor.timeout(), None, "a deadline for a stale id");

        // The first child's report: lost, delivered by the next dispatch.
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
        assert_eq!(
            deaths.seen.get(&old).map(Vec::as_slice),
            Some(&[Outcome::Lost][..])
        );
        assert_eq!(reactor.stats().lost, 1);
        // The process lives on under the new id, and dies under it.
        reactor.kill(new, 0).expect("kill(new, 0)");
        reactor
            .kill(new, libc::SIGKILL)
            .expect("kill(new, SIGKILL)");
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 2);
        deaths.assert_signal(new, libc::SIGKILL);
        for id in [old, new] {
            assert!(matches!(
                reactor.kill(id, 0),
                Err(Error::AlreadyReaped { .. })
            ));
        }
        let stats = reactor.stats();
        assert_eq!((stats.reaped, stats.lost), (1, 1));
    }
    check.finish();
}

/// The reactor is `Send` whatever the context is (callbacks must be
/// `Send`), so it can move to another thread: here it starts a child on one
/// thread and reaps it on another.
#[test]
fn reactor_is_send_and_moves_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Reactor<std::rc::Rc<()>>>();
    let check = util::Check::start();
    {
        let mut reactor = util::library::<Vec<Exit>>();
        let id = reactor
            .spawn(
                std::process::Command::new("sh").args(["-c", "exit 5"]),
                util::record,
            )
            .expect("spawn")
            .id;
        let (reactor, deaths) = std::thread::spawn(move || {
            let mut reactor = reactor;
            let mut lp = util::Loop::new(&mut reactor);
            let mut deaths = Vec::new();
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| !d.is_empty());
            drop(lp);
            (reactor, deaths)
        })
        .join()
        .expect("thread");
        assert_eq!(deaths.len(), 1);
        assert_eq!(deaths[0].id, id);
        assert_eq!(deaths[0].outcome, Outcome::Reaped(util::exited(5)));
        drop(reactor);
    }
    check.finish();
}
