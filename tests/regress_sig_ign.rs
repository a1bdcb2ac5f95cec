//! Issue 7, case 7: other code sets `SIGCHLD` to `SIG_IGN` while a reactor
//! has live children: a silent hang. The kernel then reaps every child at
//! once and sends no signal, so nothing wakes the reactor, and its children
//! are never reported. Expected:
//!
//! * `spawn` and `fork` return `Error::HandlerConflict` (in every mode and
//!   backend), as they do when the disposition was `SIG_IGN` first;
//! * a registered child that died meanwhile (auto-reaped) is reported
//!   `Lost` by the next dispatch, and the reactor's descriptor becomes
//!   readable by itself (no manual wake) so that this dispatch happens;
//! * once `SIG_DFL` is back, a new child's exit wakes the reactor and is
//!   reported with its exact status.
//!
//! This file changes the `SIGCHLD` disposition, so it holds nothing else.

use evchild_testkit as util;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use evchild::{Backend, Error, Forked, Hooks, Outcome, Reactor, SigchldOwner};
use util::{
    exit_child, fork_gated, readable_within, record, set_disposition, Check, Deaths, Gate,
    KillOnPanic, RestoreDefault, SIGCHLD_BACKENDS,
};

/// `spawn` and `fork` under `SIG_IGN` must be refused with
/// `HandlerConflict`.
fn refuses_new_children(reactor: &mut Reactor<Deaths>, what: &str) -> Vec<String> {
    let mut problems = Vec::new();
    match reactor.spawn(&mut util::quiet_sh("exit 0"), record) {
        Err(Error::HandlerConflict { .. }) => {}
        Ok(spawned) => problems.push(format!(
            "{what}: spawn under SIG_IGN was accepted ({}); expected HandlerConflict",
            spawned.id
        )),
        Err(e) => problems.push(format!("{what}: spawn under SIG_IGN: {e:?}")),
    }
    // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    match unsafe { reactor.fork(record) } {
        Err(Error::HandlerConflict { .. }) => {}
        Ok(Forked::Child) => exit_child(0),
        Ok(Forked::Parent(id)) => problems.push(format!(
            "{what}: fork under SIG_IGN was accepted ({id}); expected HandlerConflict"
        )),
        Err(e) => problems.push(format!("{what}: fork under SIG_IGN: {e:?}")),
    }
    problems
}

/// Dispatches until `done` or `limit`, waiting at most 20 ms at a time.
fn run_until(
    reactor: &mut Reactor<Deaths>,
    deaths: &mut Deaths,
    limit: Duration,
    done: impl Fn(&Deaths) -> bool,
) {
    let end = Instant::now() + limit;
    while !done(deaths) && Instant::now() < end {
        readable_within(reactor.as_raw_fd(), Duration::from_millis(20));
        reactor.dispatch(deaths).expect("dispatch");
    }
}

/// The whole scenario for one reactor (with no pending wake-up).
fn foreign_sig_ign(reactor: &mut Reactor<Deaths>, what: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut deaths = Deaths::default();
    let mut gate = Gate::new();
    let x = fork_gated(reactor, &gate, 0, record);
    reactor.dispatch(&mut deaths).expect("dispatch");

    // Other code ignores SIGCHLD.
    set_disposition(libc::SIG_IGN, 0);
    problems.extend(refuses_new_children(reactor, what));

    // X dies, and the kernel reaps it at once; no SIGCHLD.
    gate.open();
    util::wait_not_our_child(x.pid());
    let woke = readable_within(reactor.as_raw_fd(), Duration::from_secs(10));
    if !woke {
        problems.push(format!(
            "{what}: a registered child died under SIG_IGN (auto-reaped), and the reactor's \
             descriptor did not become readable within 10 s: a silent hang"
        ));
    }
    reactor.dispatch(&mut deaths).expect("dispatch");
    match deaths.seen.get(&x).map(Vec::as_slice) {
        Some([Outcome::Lost]) => {}
        other => problems.push(format!(
            "{what}: the auto-reaped child: expected [Lost] from the {} dispatch, got {other:?}",
            if woke { "woken" } else { "next" }
        )),
    }

    // SIG_DFL again: a new child's exit must wake the reactor.
    set_disposition(libc::SIG_DFL, 0);
    let mut deaths = Deaths::default();
    reactor.dispatch(&mut deaths).expect("dispatch");
    let y = reactor
        .spawn(&mut util::quiet_sh("exit 6"), record)
        .expect("spawn")
        .id;
    if !readable_within(reactor.as_raw_fd(), Duration::from_secs(10)) {
        problems.push(format!(
            "{what}: after SIG_DFL was restored, a new child's exit did not wake the reactor \
             within 10 s"
        ));
    }
    run_until(reactor, &mut deaths, Duration::from_secs(10), |d| {
        d.seen.contains_key(&y)
    });
    match deaths.seen.get(&y).map(Vec::as_slice) {
        Some([Outcome::Reaped(status)]) if *status == util::exited(6) => {}
        other => problems.push(format!(
            "{what}: after SIG_DFL, the new child: expected exactly one report, exit 6, got \
             {other:?}"
        )),
    }
    // Leave no child behind, whatever happened.
    let live: Vec<_> = reactor.children().collect();
    for id in live {
        let _ = reactor.kill(id, libc::SIGKILL);
    }
    let end = Instant::now() + Duration::from_secs(5);
    while !reactor.is_empty() && Instant::now() < end {
        readable_within(reactor.as_raw_fd(), Duration::from_millis(20));
        reactor.dispatch(&mut deaths).expect("dispatch");
    }
    problems
}

#[test]
fn foreign_sig_ign_with_sigchld_backends() {
    let check = Check::start();
    let _kill = KillOnPanic;
    // Reset SIGCHLD before `finish` releases the lock: a later reset would
    // land in the middle of the next test.
    let restore = RestoreDefault;
    let mut problems = Vec::new();
    for backend in SIGCHLD_BACKENDS {
        let mut reactor = util::library_with::<Deaths>(backend);
        problems.extend(foreign_sig_ign(&mut reactor, &format!("{backend:?}")));
        drop(reactor);
        set_disposition(libc::SIG_DFL, 0);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(restore);
    check.finish();
}

#[test]
fn foreign_sig_ign_with_library_always() {
    let check = Check::start();
    let _kill = KillOnPanic;
    // Reset SIGCHLD before `finish` releases the lock: a later reset would
    // land in the middle of the next test.
    let restore = RestoreDefault;
    let mut reactor = Reactor::<Deaths>::new(Hooks::new(SigchldOwner::LibraryAlways))
        .expect("Reactor::new(LibraryAlways)");
    // It wakes itself at creation: take that wake-up first.
    reactor.dispatch(&mut Deaths::default()).expect("dispatch");
    let problems = foreign_sig_ign(&mut reactor, "LibraryAlways");
    drop(reactor);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(restore);
    check.finish();
}

#[test]
fn foreign_sig_ign_with_pidfd_refuses_new_children() {
    let check = Check::start();
    let _kill = KillOnPanic;
    // Reset SIGCHLD before `finish` releases the lock: a later reset would
    // land in the middle of the next test.
    let restore = RestoreDefault;
    if !util::pidfd_or_skip("SIG_IGN") {
        drop(restore);
        return check.finish();
    }
    let mut reactor = util::library_with::<Deaths>(Backend::Pidfd);
    set_disposition(libc::SIG_IGN, 0);
    let problems = refuses_new_children(&mut reactor, "Pidfd");
    set_disposition(libc::SIG_DFL, 0);
    drop(reactor);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(restore);
    check.finish();
}
