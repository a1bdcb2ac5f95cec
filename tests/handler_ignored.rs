//! A `SIGCHLD` disposition that makes the kernel reap children itself
//! (`SIG_IGN`, or `SA_NOCLDWAIT`) leaves nothing to wait for: evchild must
//! refuse to own the signal with `Error::HandlerConflict`, change nothing,
//! and start no child. This holds for every mode and every child start
//! (`fork`, `spawn`, `watch`): in `Mainloop` mode too, since the
//! application could never reap such a child and its callback would never
//! run.
//!
//! The refusals of `Library` forks are about evchild's handler, so they are
//! checked for each backend that has one (scan, peek), whatever
//! `EVCHILD_TEST_BACKEND` says.
//!
//! In its own binary: the tests change the process's `SIGCHLD` disposition.

use evchild_testkit as util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use evchild::{Backend, Error, Exit, Forked, Hooks, Outcome, Pid, Reactor, SigchldOwner};
use util::{
    disposition, exited, fork_exit, fork_gated, record, restore_action, set_disposition,
    sigchld_action, wait_zombie, Gate, RestoreDefault,
};

const LIMIT: Duration = Duration::from_secs(30);

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// A real handler. Async-signal-safe: one atomic increment.
extern "C" fn counting_handler(_: libc::c_int) {
    CALLS.fetch_add(1, Ordering::SeqCst);
}

fn handler_addr() -> libc::sighandler_t {
    counting_handler as extern "C" fn(libc::c_int) as libc::sighandler_t
}

/// Asserts `new(LibraryAlways)` and a `Library` fork (with a `SIGCHLD`
/// backend, scan or peek) are refused with `HandlerConflict`, leaving the
/// disposition `(handler, flags)` as it is and starting and registering
/// nothing.
#[track_caller]
fn assert_refused(handler: libc::sighandler_t, flags: libc::c_int) {
    for backend in util::SIGCHLD_BACKENDS {
        assert_refused_with(backend, handler, flags);
    }
}

#[track_caller]
fn assert_refused_with(backend: Backend, handler: libc::sighandler_t, flags: libc::c_int) {
    let before = disposition();
    assert_eq!(before.0, handler);
    assert_eq!(before.1 & flags, flags);

    let err = Reactor::<Vec<Exit>>::new(Hooks::new(SigchldOwner::LibraryAlways))
        .expect_err("LibraryAlways must be refused");
    assert!(matches!(err, Error::HandlerConflict { .. }), "{err:?}");
    // Again: the refused attempt gave the reap-all right back (not
    // ReapAllTaken).
    let err = Reactor::<Vec<Exit>>::new(Hooks::new(SigchldOwner::LibraryAlways))
        .expect_err("LibraryAlways must be refused again");
    assert!(matches!(err, Error::HandlerConflict { .. }), "{err:?}");
    assert_eq!(disposition(), before, "refusal changed the disposition");

    // The same through set_mode, which then changes nothing.
    let mut library =
        Reactor::<Vec<Exit>>::new(Hooks::new(SigchldOwner::Library)).expect("Library new");
    let err = library
        .set_mode(Hooks::new(SigchldOwner::LibraryAlways))
        .expect_err("set_mode(LibraryAlways) must be refused");
    assert!(matches!(err, Error::HandlerConflict { .. }), "{err:?}");
    assert_eq!(library.mode(), SigchldOwner::Library);
    drop(library);
    assert_eq!(disposition(), before, "refusal changed the disposition");

    // Library mode needs the handler only once it forks; with a fork
    // replacement we can see that no child is started at all (with SIG_IGN
    // the kernel would reap one at once, so a zombie check could not).
    let forks = util::Shared::new(0);
    let counter = forks.clone();
    let hooks = Hooks::new(SigchldOwner::Library)
        .backend(backend)
        .fork_replacement(move || {
            counter.set(counter.get() + 1);
            Err(std::io::Error::other(
                "the fork replacement must not be called",
            ))
        });
    let mut reactor = Reactor::<Vec<Exit>>::new(hooks).expect("Library new needs no handler");
    // SAFETY: the fork replacement never forks; nothing runs in a child.
    let err = unsafe { reactor.fork(record) }.expect_err("fork must be refused");
    assert!(matches!(err, Error::HandlerConflict { .. }), "{err:?}");
    assert_eq!(forks.get(), 0, "no child may be started");
    assert!(reactor.is_empty());
    assert_eq!(disposition(), before);

    // The same with the real fork(2).
    let mut reactor = util::library_with::<Vec<Exit>>(backend);
    // SAFETY: should a child be started after all, it only calls _exit(2),
    // which is async-signal-safe.
    match unsafe { reactor.fork(record) } {
        Ok(Forked::Child) => util::exit_child(99),
        Ok(Forked::Parent(id)) => panic!("fork started child {id}"),
        Err(Error::HandlerConflict { .. }) => {}
        Err(e) => panic!("expected HandlerConflict, got {e:?}"),
    }
    assert!(reactor.is_empty());
    assert_eq!(disposition(), before);
}

/// After a refusal and with `SIG_DFL` back, a fork works (evchild installs
/// its handler again), no registration is left once its child is reaped (so
/// the refusals left no user behind), and `LibraryAlways` is available (no
/// reap-all right leaked); for each `SIGCHLD` backend.
#[track_caller]
fn assert_works_after_restore() {
    set_disposition(libc::SIG_DFL, 0);
    for backend in util::SIGCHLD_BACKENDS {
        let mut reactor = util::library_with(backend);
        assert_works_after_restore_from(&mut reactor);
    }
}

/// One fork-and-reap cycle through a mio loop with exact status, after which
/// evchild's handler is still installed and no registration is left; then
/// `LibraryAlways` must be available.
#[track_caller]
fn assert_works_after_restore_from(reactor: &mut Reactor<Vec<Exit>>) {
    let mut lp = util::Loop::new(reactor);
    let mut deaths = Vec::new();
    let mut gate = Gate::new();
    let id = fork_gated(reactor, &gate, 6, record);
    assert_ne!(
        disposition().0,
        libc::SIG_DFL,
        "handler installed for the child"
    );
    gate.open();
    lp.run_until(reactor, &mut deaths, LIMIT, |d| !d.is_empty());
    assert_eq!(deaths[0].id, id);
    assert_eq!(deaths[0].outcome, Outcome::Reaped(exited(6)));
    let ours = disposition();
    assert_ne!(ours.0, libc::SIG_DFL, "handler removed when idle");
    util::assert_no_registration("idle");

    let always = Reactor::<Vec<Exit>>::new(Hooks::new(SigchldOwner::LibraryAlways))
        .expect("LibraryAlways after SIG_DFL was restored");
    drop(always);
    assert_eq!(disposition(), ours, "the handler stays");
    util::assert_no_registration("after drop");
}

#[test]
fn sig_ign_is_refused() {
    let check = util::Check::start();
    {
        let _restore = RestoreDefault;
        set_disposition(libc::SIG_IGN, 0);
        assert_refused(libc::SIG_IGN, 0);
        assert_works_after_restore();
    }
    check.finish();
}

#[test]
fn real_handler_with_sa_nocldwait_is_refused() {
    let check = util::Check::start();
    {
        let _restore = RestoreDefault;
        set_disposition(handler_addr(), libc::SA_NOCLDWAIT | libc::SA_RESTART);
        assert_refused(handler_addr(), libc::SA_NOCLDWAIT);
        assert_works_after_restore();
    }
    check.finish();
}

#[test]
fn sig_dfl_with_sa_nocldwait_is_refused() {
    let check = util::Check::start();
    {
        let _restore = RestoreDefault;
        set_disposition(libc::SIG_DFL, libc::SA_NOCLDWAIT);
        assert_refused(libc::SIG_DFL, libc::SA_NOCLDWAIT);
        assert_works_after_restore();
    }
    check.finish();
}

/// `Mainloop` mode installs no handler, but a child started while the kernel
/// reaps children itself could never be reported: `fork`, `spawn` and
/// `watch` are refused with `HandlerConflict` and start or register nothing;
/// with `SIG_DFL` back, the same reactor works, still installing nothing.
#[test]
fn mainloop_start_is_refused_when_ignored() {
    let check = util::Check::start();
    {
        let _restore = RestoreDefault;
        set_disposition(libc::SIG_IGN, 0);
        // Creating reactors needs no handler.
        drop(Reactor::<Vec<Exit>>::new(Hooks::new(SigchldOwner::Library)).expect("Library"));
        let forks = util::Shared::new(0);
        let counter = forks.clone();
        let hooks = Hooks::new(SigchldOwner::Mainloop).fork_replacement(move || {
            counter.set(counter.get() + 1);
            // SAFETY: the test's child only calls `_exit` (below).
            unsafe { util::forward_fork() }
        });
        let mut reactor = Reactor::new(hooks).expect("Mainloop new succeeds");
        let mut deaths = Vec::new();

        // SAFETY: should a child be started, it only calls _exit(2).
        match unsafe { reactor.fork(record) } {
            Ok(Forked::Child) => util::exit_child(99),
            Err(Error::HandlerConflict { .. }) => {}
            other => panic!("fork: expected HandlerConflict, got {other:?}"),
        }
        assert_eq!(forks.get(), 0, "fork: a child was started");
        let spawned = reactor.spawn(
            std::process::Command::new("/bin/true").stdin(std::process::Stdio::null()),
            record,
        );
        assert!(
            matches!(spawned, Err(Error::HandlerConflict { .. })),
            "spawn: {spawned:?}"
        );
        let watched = reactor.watch(Pid::from_raw(1), record);
        assert!(
            matches!(watched, Err(Error::HandlerConflict { .. })),
            "watch: {watched:?}"
        );
        assert!(reactor.is_empty());
        assert_eq!(
            disposition(),
            (libc::SIG_IGN, 0),
            "Mainloop installs nothing"
        );

        set_disposition(libc::SIG_DFL, 0);
        let id = fork_exit(&mut reactor, 3, record);
        assert_eq!(forks.get(), 1);
        assert_eq!(
            disposition(),
            (libc::SIG_DFL, 0),
            "Mainloop installs nothing"
        );
        wait_zombie(id.pid());
        reactor
            .sigchld_occurred(&mut deaths)
            .expect("sigchld_occurred");
        assert_eq!(deaths.len(), 1);
        assert_eq!(deaths[0].id, id);
        assert_eq!(deaths[0].outcome, Outcome::Reaped(exited(3)));
        util::assert_no_registration("Mainloop");
    }
    check.finish();
}

/// Other code replaces evchild's handler while evchild has a child, so that
/// evchild cannot restore the previous disposition when it goes idle; later
/// that code sets `SIGCHLD` to `SIG_IGN`. A new `Library` fork must still be
/// refused with `HandlerConflict`, not start a child that the kernel reaps.
#[test]
fn sig_ign_set_after_ours_was_replaced_is_still_refused() {
    let check = util::Check::start();
    let mut results = Vec::new();
    for backend in util::SIGCHLD_BACKENDS {
        let _restore = RestoreDefault;
        let mut reactor = util::library_with(backend);
        let mut deaths = Vec::new();

        let mut gate = Gate::new();
        let id = fork_gated(&mut reactor, &gate, 0, record);
        let evchilds = sigchld_action();
        // Other code installs a handler of its own (that does not chain), so
        // the loop is not woken and a dispatch that nothing woke looks at
        // nothing. Once evchild's handler is back, a SIGCHLD wakes it.
        set_disposition(handler_addr(), libc::SA_RESTART);
        gate.open();
        wait_zombie(id.pid());
        reactor.dispatch(&mut deaths).expect("dispatch");
        assert!(deaths.is_empty(), "an idle dispatch makes no wait call");
        restore_action(&evchilds);
        // SAFETY: raise(3) with a valid signal number; our handler runs.
        unsafe { libc::raise(libc::SIGCHLD) };
        reactor.dispatch(&mut deaths).expect("dispatch");
        assert_eq!(deaths.len(), 1);
        assert_eq!(deaths[0].id, id);
        assert_eq!(deaths[0].outcome, Outcome::Reaped(exited(0)));
        set_disposition(handler_addr(), libc::SA_RESTART);

        // The other code now ignores SIGCHLD.
        set_disposition(libc::SIG_IGN, 0);
        // SAFETY: should a child be started, it only calls _exit(2), which is
        // async-signal-safe.
        let result = match unsafe { reactor.fork(record) } {
            Ok(Forked::Child) => util::exit_child(0),
            other => other,
        };
        assert_eq!(disposition(), (libc::SIG_IGN, 0));
        // And LibraryAlways must be refused too.
        let always = Reactor::<Vec<Exit>>::new(Hooks::new(SigchldOwner::LibraryAlways));
        let always_refused = matches!(always, Err(Error::HandlerConflict { .. }));
        drop(always);
        if let Ok(Forked::Parent(id)) = result {
            // The kernel reaps it. Wait until it is gone, settle it (lost),
            // and put evchild's handler back by hand so evchild can restore
            // SIG_DFL and the process is clean for the other tests.
            util::wait_not_our_child(id.pid());
            reactor.dispatch(&mut deaths).expect("dispatch");
            assert_eq!(deaths.len(), 2);
            assert_eq!(deaths[1].outcome, Outcome::Lost);
        }
        restore_action(&evchilds);
        assert_works_after_restore_from(&mut reactor);
        let refused = matches!(result, Err(Error::HandlerConflict { .. }));
        results.push((backend, refused, format!("{result:?}"), always_refused));
    }
    check.finish();
    for (backend, refused, result, always_refused) in results {
        assert!(
            refused,
            "{backend:?}: fork with SIGCHLD ignored must be refused, got {result}"
        );
        assert!(
            always_refused,
            "{backend:?}: new(LibraryAlways) with SIGCHLD ignored must be refused"
        );
    }
}

/// With pidfds evchild needs no handler, but `SIG_IGN` (or `SA_NOCLDWAIT`)
/// still makes the kernel reap its children by itself, so nothing can be
/// waited for: a `Library` fork or spawn with the pidfd backend must be
/// refused with `HandlerConflict` too (the crate docs, *Coexistence*:
/// "evchild refuses it ... rather than report every child lost"), starting
/// nothing.
#[test]
fn pidfd_backend_refuses_when_children_are_reaped_by_the_kernel() {
    let check = util::Check::start();
    if !util::pidfd_or_skip("the whole test") {
        return check.finish();
    }
    let mut outcomes = Vec::new();
    {
        let _restore = RestoreDefault;
        for (what, handler, flags) in [
            ("SIG_IGN", libc::SIG_IGN, 0),
            (
                "SIG_DFL with SA_NOCLDWAIT",
                libc::SIG_DFL,
                libc::SA_NOCLDWAIT,
            ),
            (
                "a handler with SA_NOCLDWAIT",
                handler_addr(),
                libc::SA_NOCLDWAIT | libc::SA_RESTART,
            ),
        ] {
            set_disposition(handler, flags);
            let before = disposition();
            let mut reactor = util::library_with::<Vec<Exit>>(Backend::Pidfd);
            let mut deaths = Vec::new();
            // SAFETY: should a child be started, it only calls _exit(2),
            // which is async-signal-safe.
            let forked = match unsafe { reactor.fork(record) } {
                Ok(Forked::Child) => util::exit_child(0),
                other => other.map(|_| ()),
            };
            let spawned = reactor
                .spawn(
                    std::process::Command::new("/bin/true").stdin(std::process::Stdio::null()),
                    record,
                )
                .map(|_| ());
            // A prepared start: here the child checks the disposition (no
            // query in the parent) and must stop before running anything.
            let mark = std::env::temp_dir().join(format!(
                "evchild-ign-prepared-{}-{}",
                std::process::id(),
                outcomes.len()
            ));
            let _ = std::fs::remove_file(&mark);
            let mut prepared = evchild::Prepared::new("sh");
            prepared
                .args(["-c", "touch \"$0\""])
                .arg(&mark)
                .stdin(evchild::Redirect::Null);
            let prepared_result = reactor.spawn_prepared(&mut prepared, record).map(|_| ());
            std::thread::sleep(Duration::from_millis(50));
            let ran = mark.exists();
            let _ = std::fs::remove_file(&mark);
            assert_eq!(disposition(), before, "{what}: the disposition changed");
            // Settle whatever was started: the kernel reaps it, evchild can
            // only report it lost (if at all: a child whose pidfd could not
            // be opened, because the kernel had reaped it already, is
            // watched through the handler, which cannot be installed).
            let started = usize::from(forked.is_ok())
                + usize::from(spawned.is_ok())
                + usize::from(prepared_result.is_ok());
            let deadline = Instant::now() + Duration::from_secs(2);
            while deaths.len() < started && Instant::now() < deadline {
                reactor.dispatch(&mut deaths).expect("dispatch");
                std::thread::sleep(Duration::from_millis(1));
            }
            let refused = |r: &evchild::Result<()>| matches!(r, Err(Error::HandlerConflict { .. }));
            if !refused(&forked) || !refused(&spawned) || !refused(&prepared_result) || ran {
                outcomes.push(format!(
                    "{what}: fork {forked:?}, spawn {spawned:?}, spawn_prepared \
                     {prepared_result:?} (the command ran: {ran}); {started} started, reports {:?}",
                    deaths.iter().map(|d| d.outcome).collect::<Vec<_>>()
                ));
            }
        }
    }
    check.finish();
    assert!(
        outcomes.is_empty(),
        "with SIGCHLD reaped by the kernel, the pidfd backend started children \
         it can only report lost:\n{outcomes:#?}"
    );
}
