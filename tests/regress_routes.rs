//! Regression tests for the routes between a `LibraryAlways` reactor and
//! the other reactors of the process (issue 12): statuses routed to a
//! `Mainloop` reactor reach its `dispatch`, `try_wait` looks in the inbox, a
//! routed child is never signalled by pid, the inbox is keyed by the claim
//! (pid reuse), and std's own fork path is never robbed of its child.
//!
//! Its own test binary: the reap-all reactor reaps every child of the
//! process.

use evchild_testkit as util;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evchild::{ChildStatus, Claim, Error, Hooks, Outcome, Reactor, SigchldOwner};
use util::{Check, Deaths};

/// A `LibraryAlways` reactor dispatching on its own thread until dropped.
struct ReapAll {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReapAll {
    fn start() -> ReapAll {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let hooks = Hooks::new(SigchldOwner::LibraryAlways)
                .unknown_child(|_: &mut (), _, _| Claim::Claimed);
            let mut reactor = Reactor::<()>::new(hooks).expect("LibraryAlways");
            ready_tx.send(()).expect("ready");
            while !flag.load(Ordering::Acquire) {
                let _ = util::readable_within(reactor.as_raw_fd(), Duration::from_millis(5));
                reactor.dispatch(&mut ()).expect("reap-all dispatch");
            }
        });
        ready_rx.recv().expect("reap-all reactor up");
        ReapAll {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ReapAll {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn dispatch_until(reactor: &mut Reactor<Deaths>, deaths: &mut Deaths, total: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    while deaths.total() < total {
        assert!(Instant::now() < end, "no report: {deaths:?}");
        let _ = util::readable_within(reactor.as_raw_fd(), Duration::from_millis(50));
        reactor.dispatch(deaths).expect("dispatch");
    }
}

/// A `Mainloop` reactor's child, reaped by the reap-all reactor, with its
/// status routed to the `Mainloop` reactor (which is then readable);
/// `check` runs then, before any dispatch.
fn routed_to_mainloop(check_routed: impl FnOnce(&mut Reactor<Deaths>, evchild::ChildId)) {
    let check = Check::start();
    {
        let _reap_all = ReapAll::start();
        let mut mainloop = Reactor::<Deaths>::new(Hooks::new(SigchldOwner::Mainloop)).expect("new");
        let mut deaths = Deaths::default();
        let id = mainloop
            .spawn(Command::new("sh").args(["-c", "exit 7"]), util::record)
            .expect("spawn")
            .id;
        assert!(
            util::readable_within(mainloop.as_raw_fd(), Duration::from_secs(10)),
            "the routed status did not wake the reactor"
        );
        check_routed(&mut mainloop, id);
        dispatch_until(&mut mainloop, &mut deaths, 1);
        deaths.assert_code(id, 7);
        assert_eq!(
            mainloop.try_wait(id).expect("try_wait"),
            ChildStatus::Reported
        );
    }
    check.finish();
}

/// `dispatch` alone (no `sigchld_occurred`) delivers a routed status to a
/// `Mainloop` reactor, with the exact status.
#[test]
fn mainloop_reactors_get_routed_statuses_through_dispatch() {
    routed_to_mainloop(|_, _| {});
}

/// `forget` refuses a child whose status was routed (it has been reaped:
/// too late to let go of), and the next `dispatch` still reports it.
#[test]
fn a_routed_child_cannot_be_forgotten() {
    routed_to_mainloop(|reactor, id| match reactor.forget(id) {
        Err(Error::AlreadyReaped { .. }) => {}
        other => panic!("a routed child was forgotten: {other:?}"),
    });
}

/// `try_wait` finds a routed status in the inbox: the child exited (its
/// callback will get that status), not lost.
#[test]
fn try_wait_sees_a_routed_status() {
    routed_to_mainloop(
        |reactor, id| match reactor.try_wait(id).expect("try_wait") {
            ChildStatus::Dead(Outcome::Reaped(status)) => assert_eq!(status.code(), Some(7)),
            other => panic!("try_wait: {other:?}"),
        },
    );
}

/// A child whose status was routed (reaped by the reap-all reactor, not yet
/// collected) is never signalled by pid: its pid may be another process's.
#[test]
fn a_routed_child_is_not_signalled_by_pid() {
    routed_to_mainloop(|reactor, id| match reactor.kill(id, libc::SIGTERM) {
        Err(Error::AlreadyReaped { .. }) => {}
        other => panic!("a routed child was signalled by pid: {other:?}"),
    });
}

/// Two statuses for one pid (reused between two reactors' children) are
/// both kept: the inbox is keyed by the claim, not the pid. Forces the pid
/// through `ns_last_pid`: as root, or else alone in a user and pid
/// namespace (`evchild_testkit::pid_reuse`); skips, visibly, elsewhere.
#[test]
fn the_inbox_keeps_two_statuses_of_one_pid() {
    if !util::force_pids_or_skip("the_inbox_keeps_two_statuses_of_one_pid") {
        return;
    }
    let check = Check::start();
    {
        let _reap_all = ReapAll::start();
        let mut first = Reactor::<Deaths>::new(Hooks::new(SigchldOwner::Mainloop)).expect("new");
        let mut second = Reactor::<Deaths>::new(Hooks::new(SigchldOwner::Mainloop)).expect("new");
        let (mut d1, mut d2) = (Deaths::default(), Deaths::default());
        let a = first
            .spawn(Command::new("sh").args(["-c", "exit 1"]), util::record)
            .expect("spawn a")
            .id;
        assert!(util::readable_within(
            first.as_raw_fd(),
            Duration::from_secs(10)
        ));
        // `a` is reaped and routed, not collected. Give its pid to a child
        // of the second reactor (other processes may take it first: retry).
        let mut b = None;
        for _ in 0..50 {
            util::next_pid_will_be(a.pid().as_raw()).expect("ns_last_pid");
            let id = second
                .spawn(Command::new("sh").args(["-c", "exit 2"]), util::record)
                .expect("spawn b")
                .id;
            if id.pid() == a.pid() {
                b = Some(id);
                break;
            }
            let seen = d2.total();
            dispatch_until(&mut second, &mut d2, seen + 1);
        }
        let b = b.expect("could not reuse the pid");
        assert!(util::readable_within(
            second.as_raw_fd(),
            Duration::from_secs(10)
        ));
        dispatch_until(&mut first, &mut d1, 1);
        let end = Instant::now() + Duration::from_secs(10);
        while !d2.seen.contains_key(&b) {
            assert!(Instant::now() < end, "no report for b");
            let _ = util::readable_within(second.as_raw_fd(), Duration::from_millis(50));
            second.dispatch(&mut d2).expect("dispatch");
        }
        d1.assert_code(a, 1);
        d2.assert_code(b, 2);
    }
    check.finish();
}

/// std's fork path (forced by `pre_exec`) waits for a child whose `exec`
/// failed, and panics if someone else reaped it: the reap-all reactor
/// leaves a start in flight alone, so every such spawn fails cleanly.
#[test]
fn failed_execs_on_stds_fork_path_never_panic_next_to_reap_all() {
    let check = Check::start();
    {
        let _reap_all = ReapAll::start();
        let mut reactor = util::library::<Deaths>();
        for _ in 0..300 {
            let mut command = Command::new("/nonexistent/evchild-test");
            // SAFETY: the closure does nothing (it only forces std's fork
            // path).
            unsafe { command.pre_exec(|| Ok(())) };
            match reactor.spawn(&mut command, util::record) {
                Err(Error::Spawn { source, .. }) => {
                    assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(reactor.is_empty());
    }
    check.finish();
}
