//! A registered child reaped by other code in the process is reported
//! `Outcome::Lost`: exactly one callback, never a made-up status.
//!
//! In its own binary: the tests reap evchild's children behind its back, and
//! one uses `LibraryAlways`. The `Library` test runs with the backend of
//! `EVCHILD_TEST_BACKEND`.

use evchild_testkit as util;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use evchild::{Error, Exit, Hooks, Outcome, Pid, Reactor, SigchldOwner};
use nix::errno::Errno;
use util::{exited, fork_gated, outcome_of, record, Gate};

const LIMIT: Duration = Duration::from_secs(30);

/// Other code's blocking `waitpid(pid, 0)`: takes the child's status.
fn steal(pid: Pid) -> ExitStatus {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable int.
        let rc = unsafe { libc::waitpid(pid.as_raw(), &mut status, 0) };
        if rc == pid.as_raw() {
            return ExitStatus::from_raw(status);
        }
        assert_eq!(Errno::last(), Errno::EINTR, "waitpid({pid})");
    }
}

/// Waits for the next return of `poll` (with only the reactor registered:
/// its next readiness) and dispatches once.
#[track_caller]
fn dispatch_once(lp: &mut util::Loop, reactor: &mut Reactor<Vec<Exit>>, deaths: &mut Vec<Exit>) {
    let before = reactor.stats().dispatches;
    lp.run_with(
        reactor,
        deaths,
        LIMIT,
        |_, _, _| {},
        |r, _| r.stats().dispatches > before,
    );
}

/// Every backend reports the stolen child within the wake-up its exit
/// caused. (Peek too: a stolen child leaves no zombie to peek at, so a
/// wake-up whose peek finds nothing of ours runs the scan.)
#[test]
fn library_child_reaped_by_someone_else_is_lost() {
    let check = util::Check::start();
    {
        let _reap = util::ReapOnPanic;
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Vec<Exit>>();

        let (mut gl, mut gk) = (Gate::new(), Gate::new());
        let lost = fork_gated(&mut reactor, &gl, 9, record);
        let kept = fork_gated(&mut reactor, &gk, 2, record);
        gl.open();
        // Other code waits for our child before evchild's dispatch.
        assert_eq!(steal(lost.pid()), exited(9));

        {
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| !d.is_empty());
            assert_eq!(deaths.len(), 1);
            assert_eq!(deaths[0].id, lost);
            assert_eq!(deaths[0].outcome, Outcome::Lost, "never a made-up status");
            assert_eq!(deaths[0].status(), None);
            assert_eq!(deaths[0].usage, None, "no usage for a lost child");
            assert!(!reactor.contains(lost));
            assert!(reactor.contains(kept), "the other child is unaffected");
            let stats = reactor.stats();
            assert_eq!(stats.lost, 1);
            assert_eq!(stats.reaped, 0);
            // Its pid may be reused by now: not signalled.
            assert!(matches!(
                reactor.kill(lost, libc::SIGTERM),
                Err(Error::AlreadyReaped { pid }) if pid == lost.pid()
            ));
        }

        gk.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 2);
        assert_eq!(outcome_of(&deaths, kept), Outcome::Reaped(exited(2)));
        assert_eq!(outcome_of(&deaths, lost), Outcome::Lost);
        assert!(deaths.iter().all(|d| (d.id == lost) == d.usage.is_none()));
        assert!(matches!(
            reactor.kill(lost, libc::SIGTERM),
            Err(Error::AlreadyReaped { pid }) if pid == lost.pid()
        ));
        let stats = reactor.stats();
        assert_eq!((stats.lost, stats.reaped), (1, 1));
        assert!(reactor.is_empty());
    }
    check.finish();
}

#[test]
fn library_always_child_is_lost_once_no_child_is_left() {
    let check = util::Check::start();
    {
        let _reap = util::ReapOnPanic;
        let mut reactor = Reactor::new(Hooks::new(SigchldOwner::LibraryAlways)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut deaths = Vec::new();

        let (mut gl, mut gk) = (Gate::new(), Gate::new());
        let lost = fork_gated(&mut reactor, &gl, 9, record);
        let kept = fork_gated(&mut reactor, &gk, 2, record);
        gl.open();
        assert_eq!(steal(lost.pid()), exited(9));

        // `waitpid(-1)` cannot tell a stolen child from a live one while the
        // process has another child: nothing is reported yet.
        dispatch_once(&mut lp, &mut reactor, &mut deaths);
        assert!(deaths.is_empty(), "{deaths:?}");
        assert_eq!(reactor.len(), 2);

        // Once the last child is reaped, the process has none left, so the
        // stolen one is known to be lost.
        gk.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 2);
        assert_eq!(outcome_of(&deaths, kept), Outcome::Reaped(exited(2)));
        assert_eq!(outcome_of(&deaths, lost), Outcome::Lost);
        assert_eq!(
            outcome_of(&deaths, lost),
            Outcome::Lost,
            "never a made-up status"
        );
        let stats = reactor.stats();
        assert_eq!(stats.lost, 1);
        assert_eq!(stats.reaped, 1);
        assert_eq!(stats.unknown_claimed + stats.unknown_unclaimed, 0);
        assert!(reactor.is_empty());
    }
    check.finish();
}
