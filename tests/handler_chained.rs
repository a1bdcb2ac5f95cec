//! Coexistence with `SIGCHLD` handlers of other code in the process.
//!
//! evchild chains to a real handler that was installed before its own, keeps
//! its own installed for the life of the process once it took `SIGCHLD`
//! (chaining all along), and never clobbers a handler installed after its
//! own.
//!
//! The tests are about evchild's handler, so they run for each backend that
//! has one (scan, peek), whatever `EVCHILD_TEST_BACKEND` says; with pidfds
//! evchild installs no handler and leaves a foreign one alone.
//!
//! In its own binary, and each test in its own process ([`util::isolated`]):
//! the tests change the process's `SIGCHLD` disposition, and whether
//! evchild chains to a handler depends on whether it ever installed its own
//! in the process.

use evchild_testkit as util;

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use evchild::{Backend, ChildId, Exit, Outcome};
use util::{
    disposition, exited, fork_gated, record, restore_action, set_disposition, Gate, RestoreDefault,
};

const LIMIT: Duration = Duration::from_secs(30);

/// How often the application's handler ran.
static CALLS: AtomicUsize = AtomicUsize::new(0);
/// `si_signo` and `si_pid` the `SA_SIGINFO` handler was last given.
static LAST_SIGNO: AtomicI32 = AtomicI32::new(0);
static LAST_PID: AtomicI32 = AtomicI32::new(0);
/// The handler the "later" handler replaced, to chain to it.
static SAVED: AtomicUsize = AtomicUsize::new(0);

/// The application's plain handler. Async-signal-safe: one atomic increment.
extern "C" fn plain_handler(_: libc::c_int) {
    CALLS.fetch_add(1, Ordering::SeqCst);
}

/// The application's `SA_SIGINFO` handler. Async-signal-safe: atomics and
/// reads of the kernel's `siginfo_t`.
extern "C" fn info_handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if !info.is_null() {
        // SAFETY: the kernel (or a chaining handler passing its arguments on)
        // gives a valid siginfo_t for SA_SIGINFO handlers; for SIGCHLD its
        // si_pid field is set.
        let (signo, pid) = unsafe { ((*info).si_signo, (*info).si_pid()) };
        LAST_SIGNO.store(signo, Ordering::SeqCst);
        LAST_PID.store(pid, Ordering::SeqCst);
    }
    CALLS.fetch_add(1, Ordering::SeqCst);
}

/// A handler installed after evchild's, which chains to the one it replaced
/// (evchild's, an `SA_SIGINFO` handler), as a well-behaved library does.
/// Async-signal-safe as far as the chained handler is.
extern "C" fn later_handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    CALLS.fetch_add(1, Ordering::SeqCst);
    let saved = SAVED.load(Ordering::SeqCst);
    if saved != libc::SIG_DFL && saved != libc::SIG_IGN {
        // SAFETY: the test checked that the replaced action had SA_SIGINFO,
        // so the kernel would have called it with these three arguments.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(saved) };
        f(sig, info, ctx);
    }
}

fn plain_addr() -> libc::sighandler_t {
    plain_handler as extern "C" fn(libc::c_int) as libc::sighandler_t
}

fn info_addr() -> libc::sighandler_t {
    info_handler as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t
}

fn later_addr() -> libc::sighandler_t {
    later_handler as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t
}

/// Waits (without a timing assertion, up to a generous limit) until the
/// application's handler has run at least `n` times.
#[track_caller]
fn wait_calls(n: usize) {
    let deadline = Instant::now() + LIMIT;
    while CALLS.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the application's handler ran {} times, expected {n}",
            CALLS.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `codes.len()` children one after the other, each released only once
/// the previous one's callback ran (so each exit is a separate `SIGCHLD`).
/// While they live, evchild's handler (`backend` is scan or peek) is
/// installed in place of `foreign`. Checks every status and that the
/// foreign handler ran once per exit.
fn run_children_one_by_one(
    backend: Backend,
    foreign: libc::sighandler_t,
    codes: &[i32],
) -> Vec<ChildId> {
    let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Vec<Exit>>(backend);
    let mut gates: Vec<Gate> = codes.iter().map(|_| Gate::new()).collect();
    let ids: Vec<ChildId> = codes
        .iter()
        .zip(&gates)
        .map(|(&code, gate)| fork_gated(&mut reactor, gate, code, record))
        .collect();
    let ours = disposition().0;
    assert_ne!(
        ours, foreign,
        "evchild's handler is installed while children live"
    );
    assert_ne!(ours, libc::SIG_DFL);

    CALLS.store(0, Ordering::SeqCst);
    for (i, gate) in gates.iter_mut().enumerate() {
        gate.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == i + 1);
        assert_eq!(deaths[i].id, ids[i]);
        assert_eq!(deaths[i].outcome, Outcome::Reaped(exited(codes[i])));
        // The application's handler ran for this exit too (chained).
        wait_calls(i + 1);
        if i + 1 < codes.len() {
            assert_eq!(disposition().0, ours, "still needed");
        }
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), codes.len(), "once per exit");
    assert!(reactor.is_empty());
    assert_eq!(reactor.stats().reaped, codes.len() as u64);
    assert_eq!(reactor.stats().lost, 0);
    ids
}

/// Asserts evchild's handler is (still) the installed one: `ours`, with
/// `SA_SIGINFO`.
#[track_caller]
fn assert_ours(ours: libc::sighandler_t, what: &str) {
    let (handler, flags) = disposition();
    assert_eq!(handler, ours, "{what}: evchild's handler is gone");
    assert_ne!(flags & libc::SA_SIGINFO, 0, "{what}");
}

#[test]
fn plain_foreign_handler_is_chained_for_good() {
    if !util::isolated("plain_foreign_handler_is_chained_for_good") {
        return;
    }
    let check = util::Check::start();
    {
        let _restore = RestoreDefault;
        set_disposition(plain_addr(), libc::SA_RESTART);
        // Twice per backend, with reactors that go idle in between: evchild
        // installs once, keeps its handler, and chains all along.
        let mut ours = None;
        for backend in util::SIGCHLD_BACKENDS.into_iter().flat_map(|b| [b, b]) {
            run_children_one_by_one(backend, plain_addr(), &[1, 2, 3]);
            util::assert_no_registration("idle");
            let handler = *ours.get_or_insert(disposition().0);
            assert_ne!(handler, plain_addr());
            assert_ours(handler, "after the last child");
        }
    }
    check.finish();
}

#[test]
fn siginfo_foreign_handler_is_chained_with_its_siginfo() {
    if !util::isolated("siginfo_foreign_handler_is_chained_with_its_siginfo") {
        return;
    }
    let check = util::Check::start();
    {
        let _restore = RestoreDefault;
        set_disposition(info_addr(), libc::SA_SIGINFO | libc::SA_RESTART);
        for backend in util::SIGCHLD_BACKENDS.into_iter().flat_map(|b| [b, b]) {
            LAST_SIGNO.store(0, Ordering::SeqCst);
            let ids = run_children_one_by_one(backend, info_addr(), &[0, 5]);
            // Each exit was its own SIGCHLD, so the last siginfo names the
            // last child: the kernel's siginfo was passed on intact.
            assert_eq!(LAST_SIGNO.load(Ordering::SeqCst), libc::SIGCHLD);
            assert_eq!(LAST_PID.load(Ordering::SeqCst), ids[1].pid().as_raw());
            // evchild's handler stays, still chaining.
            assert_ne!(disposition().0, info_addr());
            assert_ne!(disposition().0, libc::SIG_DFL);
        }
    }
    check.finish();
}

#[test]
fn handler_installed_after_ours_is_not_clobbered() {
    if !util::isolated("handler_installed_after_ours_is_not_clobbered") {
        return;
    }
    let check = util::Check::start();
    for backend in util::SIGCHLD_BACKENDS {
        let _restore = RestoreDefault;
        assert_eq!(disposition().0, libc::SIG_DFL);
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Vec<Exit>>(backend);

        let mut gate = Gate::new();
        let id = fork_gated(&mut reactor, &gate, 4, record);
        let (ours, our_flags) = disposition();
        assert_ne!(ours, libc::SIG_DFL, "evchild's handler is installed");
        assert_ne!(our_flags & libc::SA_SIGINFO, 0);

        // Other code installs its handler over evchild's, chaining to it.
        SAVED.store(ours, Ordering::SeqCst);
        CALLS.store(0, Ordering::SeqCst);
        let replaced = set_disposition(later_addr(), libc::SA_SIGINFO | libc::SA_RESTART);

        gate.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| !d.is_empty());
        assert_eq!(deaths[0].id, id);
        assert_eq!(deaths[0].outcome, Outcome::Reaped(exited(4)));
        wait_calls(1);
        // evchild no longer needs the signal, but the installed handler is
        // not its own: it stays.
        assert!(reactor.is_empty());
        assert_eq!(disposition().0, later_addr(), "later handler clobbered");

        // The other code removes its handler the polite way, putting back
        // what it replaced (evchild's). evchild, used again, still works, and
        // its handler stays installed afterwards.
        restore_action(&replaced);
        SAVED.store(libc::SIG_DFL, Ordering::SeqCst);
        assert_eq!(disposition().0, ours);
        let mut gate = Gate::new();
        let id = fork_gated(&mut reactor, &gate, 5, record);
        gate.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 2);
        assert_eq!(deaths[1].id, id);
        assert_eq!(deaths[1].outcome, Outcome::Reaped(exited(5)));
        assert_ours(ours, "after the last child");
    }
    check.finish();
}

/// A foreign handler with `SA_NOCLDSTOP`, chained: evchild asks for no stop
/// reports either, and keeps its handler (with those flags) when idle.
#[test]
fn nocldstop_of_the_chained_handler_is_kept() {
    if !util::isolated("nocldstop_of_the_chained_handler_is_kept") {
        return;
    }
    let check = util::Check::start();
    {
        let _restore = RestoreDefault;
        set_disposition(plain_addr(), libc::SA_NOCLDSTOP);
        for backend in util::SIGCHLD_BACKENDS {
            let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Vec<Exit>>(backend);
            let mut gate = Gate::new();
            let id = fork_gated(&mut reactor, &gate, 1, record);
            let (ours, flags) = disposition();
            assert_ne!(ours, plain_addr());
            assert_ne!(flags & libc::SA_NOCLDSTOP, 0);
            CALLS.store(0, Ordering::SeqCst);
            gate.open();
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| !d.is_empty());
            assert_eq!(deaths[0].id, id);
            assert_eq!(deaths[0].outcome, Outcome::Reaped(exited(1)));
            wait_calls(1);
            assert_eq!(disposition(), (ours, flags), "changed when idle");
        }
    }
    check.finish();
}

/// A foreign handler without `SA_NOCLDSTOP` wants stop reports, so
/// evchild's handler asks for them and passes them on; evchild itself is not
/// confused by them (a stop is not a death).
#[test]
fn stop_reports_reach_a_chained_handler_that_wants_them() {
    if !util::isolated("stop_reports_reach_a_chained_handler_that_wants_them") {
        return;
    }
    let check = util::Check::start();
    {
        let _restore = RestoreDefault;
        set_disposition(plain_addr(), 0);
        for backend in util::SIGCHLD_BACKENDS {
            let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Vec<Exit>>(backend);
            let mut gate = Gate::new();
            let id = fork_gated(&mut reactor, &gate, 2, record);
            let (ours, flags) = disposition();
            assert_ne!(ours, plain_addr());
            assert_eq!(flags & libc::SA_NOCLDSTOP, 0);
            CALLS.store(0, Ordering::SeqCst);
            reactor.kill(id, libc::SIGSTOP).expect("SIGSTOP");
            wait_calls(1);
            reactor
                .dispatch(&mut deaths)
                .expect("dispatch after a stop");
            assert!(deaths.is_empty(), "a stop is not a death");
            assert!(reactor.contains(id));
            reactor.kill(id, libc::SIGCONT).expect("SIGCONT");
            wait_calls(2);
            gate.open();
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 1);
            assert_eq!(deaths[0].id, id);
            assert_eq!(deaths[0].outcome, Outcome::Reaped(exited(2)));
            assert_eq!(disposition(), (ours, flags), "changed when idle");
        }
    }
    check.finish();
}

/// Other code installs its handler over evchild's, and later removes it by
/// resetting `SIGCHLD` to `SIG_DFL` (as libuv and libev do on exit) instead
/// of restoring evchild's. The next time evchild needs the signal, it must
/// install its handler again: with `SIG_DFL` nothing would wake the loop.
#[test]
fn handler_is_reinstalled_after_later_handler_reset_to_default() {
    if !util::isolated("handler_is_reinstalled_after_later_handler_reset_to_default") {
        return;
    }
    let check = util::Check::start();
    let mut observed = Vec::new();
    for backend in util::SIGCHLD_BACKENDS {
        let _restore = RestoreDefault;
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Vec<Exit>>(backend);

        let mut gate = Gate::new();
        fork_gated(&mut reactor, &gate, 1, record);
        let ours = disposition().0;
        SAVED.store(ours, Ordering::SeqCst);
        let evchilds = set_disposition(later_addr(), libc::SA_SIGINFO | libc::SA_RESTART);
        gate.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 1);
        assert_eq!(disposition().0, later_addr(), "later handler clobbered");

        // The other code resets SIGCHLD to the default when it is done.
        set_disposition(libc::SIG_DFL, 0);
        SAVED.store(libc::SIG_DFL, Ordering::SeqCst);

        let mut gate = Gate::new();
        let id = fork_gated(&mut reactor, &gate, 2, record);
        observed.push((backend, disposition().0));
        if disposition().0 == libc::SIG_DFL {
            // No handler: nothing would ever wake the loop. Put evchild's
            // back by hand so the child can be collected and the process
            // left clean for the other tests, then fail below.
            restore_action(&evchilds);
        }
        gate.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 2);
        assert_eq!(deaths[1].id, id);
        assert_eq!(deaths[1].outcome, Outcome::Reaped(exited(2)));
        assert_eq!(disposition().0, ours, "evchild's handler stays");
    }
    check.finish();
    assert!(
        observed.iter().all(|&(_, handler)| handler != libc::SIG_DFL),
        "{observed:?}: evchild registered a child with SIGCHLD at SIG_DFL and no handler of its own: \
         its death would never wake the loop"
    );
}

/// With pidfds evchild needs no handler: a foreign handler installed before
/// stays installed all along (evchild installs nothing), and
/// it still runs once per exit of evchild's children (the kernel sends
/// `SIGCHLD` whoever watches the child), which evchild reports with their
/// statuses.
#[test]
fn pidfd_leaves_a_foreign_handler_alone() {
    if !util::isolated("pidfd_leaves_a_foreign_handler_alone") {
        return;
    }
    let check = util::Check::start();
    if !util::pidfd_or_skip("the whole test") {
        return check.finish();
    }
    {
        let _restore = RestoreDefault;
        set_disposition(plain_addr(), libc::SA_RESTART);
        let (mut reactor, mut lp, mut deaths) =
            util::library_loop_with::<Vec<Exit>>(Backend::Pidfd);
        let mut gates: Vec<Gate> = (0..3).map(|_| Gate::new()).collect();
        let ids: Vec<ChildId> = gates
            .iter()
            .zip(10..)
            .map(|(gate, code)| fork_gated(&mut reactor, gate, code, record))
            .collect();
        assert_eq!(disposition(), (plain_addr(), libc::SA_RESTART));
        CALLS.store(0, Ordering::SeqCst);
        for (i, gate) in gates.iter_mut().enumerate() {
            gate.open();
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == i + 1);
            assert_eq!(deaths[i].id, ids[i]);
            assert_eq!(deaths[i].outcome, Outcome::Reaped(exited(10 + i as i32)));
            wait_calls(i + 1);
            assert_eq!(disposition(), (plain_addr(), libc::SA_RESTART));
        }
        assert_eq!(CALLS.load(Ordering::SeqCst), 3, "once per exit");
    }
    check.finish();
}
