//! A reactor after `fork` without `exec`: in the forked child every method
//! refuses with `Error::ForkedChild` (nothing is read from, or written to,
//! the parent's wake pipe, and nothing is signalled), and the `SIGCHLD`
//! handler the child inherits never wakes the parent's reactor, so the
//! parent gets every callback. The child starts with an empty handler table
//! (the fork generation), and dropping the parent's reactor there changes
//! nothing in either process. (`handler_lifetime.rs` checks the same with
//! a re-executed, single-threaded test process, where the child may
//! allocate: a descriptor planted under the parent's wake-pipe number, and
//! a `LibraryAlways` reactor of the child's own.)
//!
//! Its own binary, since the forked children here run for a while and the
//! checks look at the whole process.
//!
//! The test binary has other threads, so a forked child may only call
//! async-signal-safe functions: `_exit`, `fork`, `waitpid`, `read`, `write`,
//! `close`, `fcntl`, `getpid`, evchild's refusal paths, which compare
//! `getpid()` with the owner and build an error without allocating, and
//! evchild's registration count (an atomic load, through its hidden test
//! counters). Each
//! `unsafe` block says which it uses.

#![warn(clippy::undocumented_unsafe_blocks)]

use evchild_testkit as util;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use evchild::{ChildId, Error, Forked, Hooks, Pid, Reactor, SigchldOwner};
use nix::errno::Errno;
use util::{
    fork_waiting, pipe, read_byte, readable_within, record, write_byte, Deaths, Gate, ReapOnPanic,
};

const LIMIT: Duration = Duration::from_secs(30);

/// Forks a child that `_exit`s with `code` at once.
#[track_caller]
fn fork_exit(reactor: &mut Reactor<Deaths>, code: i32) -> ChildId {
    util::fork_exit(reactor, code, record)
}

/// Whether `result` is the refusal a forked child must get.
fn refused<T>(result: &evchild::Result<T>, parent: Pid, me: Pid) -> bool {
    matches!(
        result,
        Err(Error::ForkedChild { owner, current }) if *owner == parent && *current == me
    )
}

// The forked child's exit code: one bit per check that failed.
const DISPATCH_NOT_REFUSED: i32 = 1;
const KILL_NOT_REFUSED: i32 = 2;
const SET_MODE_NOT_REFUSED: i32 = 4;
const FORK_NOT_REFUSED: i32 = 8;
const DROP_DID_NOT_CLOSE: i32 = 16;
const GRANDCHILD_FORK_FAILED: i32 = 32;
const GRANDCHILD_WAIT_FAILED: i32 = 64;
const GRANDCHILD_STATUS_WRONG: i32 = 128;

/// What a failed child's exit code means.
fn describe(code: i32) -> Vec<&'static str> {
    [
        (
            DISPATCH_NOT_REFUSED,
            "dispatch was not refused with ForkedChild",
        ),
        (KILL_NOT_REFUSED, "kill was not refused with ForkedChild"),
        (
            SET_MODE_NOT_REFUSED,
            "set_mode was not refused with ForkedChild",
        ),
        (FORK_NOT_REFUSED, "fork was not refused with ForkedChild"),
        (
            DROP_DID_NOT_CLOSE,
            "dropping the reactor left its descriptor open",
        ),
        (GRANDCHILD_FORK_FAILED, "fork of a grandchild failed"),
        (GRANDCHILD_WAIT_FAILED, "waitpid of a grandchild failed"),
        (GRANDCHILD_STATUS_WRONG, "a grandchild's status was wrong"),
    ]
    .into_iter()
    .filter(|(bit, _)| code & bit != 0)
    .map(|(_, what)| what)
    .collect()
}

#[track_caller]
fn assert_child_passed(status: ExitStatus) {
    assert_eq!(
        status.code(),
        Some(0),
        "forked child: {status}: {:?}",
        status.code().map(describe)
    );
}

/// Runs in the forked child: every method of the parent's reactor refuses,
/// and dropping it closes (only) the child's copies of its descriptors.
/// Returns the failed checks as bits. Async-signal-safe: evchild's refusal
/// paths call `getpid` and build `Error::ForkedChild` (two integers); the
/// drop of a reactor in a forked child frees nothing and calls `close`;
/// `fcntl` is async-signal-safe.
fn refusals_in_child(
    mut reactor: Reactor<Deaths>,
    deaths: &mut Deaths,
    parent: Pid,
    sibling: ChildId,
    wake_fd: RawFd,
) -> i32 {
    let me = Pid::this();
    let mut failures = 0;
    if !refused(&reactor.dispatch(deaths), parent, me) {
        failures |= DISPATCH_NOT_REFUSED;
    }
    // SIGTERM: had it been sent, the sibling would die of it rather than of
    // the parent's later SIGKILL.
    if !refused(&reactor.kill(sibling, libc::SIGTERM), parent, me) {
        failures |= KILL_NOT_REFUSED;
    }
    // `Hooks::new` allocates nothing, so dropping the refused hooks frees
    // nothing.
    if !refused(
        &reactor.set_mode(Hooks::new(SigchldOwner::Mainloop)),
        parent,
        me,
    ) {
        failures |= SET_MODE_NOT_REFUSED;
    }
    // SAFETY: a refused fork starts nothing; if it wrongly forked, the
    // grandchild only calls `_exit`.
    match unsafe { reactor.fork(|_, _, _| {}) } {
        Ok(Forked::Child) => util::exit_child(99),
        result => {
            if !refused(&result, parent, me) {
                failures |= FORK_NOT_REFUSED;
            }
        }
    }
    drop(reactor);
    // SAFETY: fcntl(F_GETFD) is async-signal-safe and only inspects the
    // descriptor number.
    if unsafe { libc::fcntl(wake_fd, libc::F_GETFD) } != -1 || Errno::last() != Errno::EBADF {
        failures |= DROP_DID_NOT_CLOSE;
    }
    failures
}

/// In a forked child, the parent's reactor refuses `dispatch`, `kill`,
/// `set_mode` and `fork` with `Error::ForkedChild` naming both processes,
/// and dropping it closes the child's copies of its descriptors. The parent
/// meanwhile keeps working: the sibling the child tried to kill with
/// `SIGTERM` dies of the parent's `SIGKILL`, and both children are reported.
#[test]
fn reactor_refuses_in_forked_child() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let gate = Gate::new();
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let sibling = fork_waiting(&mut reactor, &gate, record);
        let parent = Pid::this();
        let wake_fd = reactor.as_raw_fd();

        // SAFETY: the child only runs `refusals_in_child` (async-signal-safe,
        // see there) and `_exit`.
        let child = match unsafe { reactor.fork(record) } {
            Ok(Forked::Child) => {
                let failures = refusals_in_child(reactor, &mut deaths, parent, sibling, wake_fd);
                util::exit_child(failures)
            }
            Ok(Forked::Parent(id)) => id,
            Err(e) => panic!("fork: {e}"),
        };

        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
        assert_child_passed(deaths.status(child));
        assert!(reactor.contains(sibling));
        // The parent's descriptor is still open and working.
        util::assert_cloexec_nonblock(&reactor);

        reactor.kill(sibling, libc::SIGKILL).expect("kill");
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 2);
        // Of our SIGKILL: the child's SIGTERM was not sent.
        assert_eq!(deaths.status(sibling).signal(), Some(libc::SIGKILL));
        assert_eq!(reactor.stats().reaped, 2);
    }
    check.finish();
}

/// Runs in the forked child: forks `n` grandchildren one after the other and
/// reaps each with `waitpid` (each death runs the inherited `SIGCHLD` handler
/// in this process), and after each tries the parent's reactor's `dispatch`,
/// which must refuse rather than read the parent's wake pipe. Returns the
/// failed checks as bits. Async-signal-safe: `fork` (this process has one
/// thread), `waitpid`, `_exit`, and evchild's refusal path.
fn grandchild_cycles(reactor: &mut Reactor<Deaths>, deaths: &mut Deaths, n: usize) -> i32 {
    let mut failures = 0;
    for _ in 0..n {
        // SAFETY: `fork` in a single-threaded process; the grandchild only
        // calls `_exit`.
        let grandchild = unsafe { libc::fork() };
        if grandchild == 0 {
            util::exit_child(7);
        }
        if grandchild < 0 {
            failures |= GRANDCHILD_FORK_FAILED;
            continue;
        }
        let mut status = 0;
        loop {
            // SAFETY: `status` is a valid out-pointer; waitpid is
            // async-signal-safe.
            let rc = unsafe { libc::waitpid(grandchild, &mut status, 0) };
            if rc == grandchild {
                if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7) {
                    failures |= GRANDCHILD_STATUS_WRONG;
                }
                break;
            }
            if rc == -1 && Errno::last() == Errno::EINTR {
                continue;
            }
            failures |= GRANDCHILD_WAIT_FAILED;
            break;
        }
        if !matches!(reactor.dispatch(deaths), Err(Error::ForkedChild { .. })) {
            failures |= DISPATCH_NOT_REFUSED;
        }
    }
    failures
}

/// A forked (non-exec) child that lives on, forks and reaps grandchildren
/// (so `SIGCHLD` runs the handler it inherited from the parent) and keeps
/// calling the parent's reactor's `dispatch`, neither wakes the parent's
/// reactor nor steals its wake-ups. The child works in three phases, each
/// started by the parent (a byte on `go`) and ended by the child (its
/// failures so far on `done`):
///
/// A. No child of the parent has died yet, so no `SIGCHLD` has reached the
///    parent and its wake pipe is empty. The child runs three grandchild
///    cycles; afterwards the parent's reactor must not be readable (the
///    child's handler wrote nothing to the parent's pipe).
/// B. One child of the parent has died and its wake-up is in the parent's
///    pipe, not yet dispatched. The child runs three more cycles, each
///    calling `dispatch`; afterwards the parent's reactor must still be
///    readable (the child read nothing from the parent's pipe).
/// C. Thirty children of the parent die while the child runs twenty more
///    cycles and then exits: the parent gets all 32 callbacks (the early
///    child's and the long-lived child's included), each exactly once and
///    with its status.
#[test]
fn forked_child_does_not_steal_wakeups() {
    const SIBLINGS: i32 = 30;
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let (done_read, done_write) = pipe();
        let (go_read, go_write) = pipe();
        let (done_r, done_w) = (done_read.as_raw_fd(), done_write.as_raw_fd());
        let (go_r, go_w) = (go_read.as_raw_fd(), go_write.as_raw_fd());
        let wake_fd = reactor.as_raw_fd();

        // SAFETY: the child only calls `close`, `read`, `write`, `_exit` and
        // `grandchild_cycles` (async-signal-safe, see there).
        let child = match unsafe { reactor.fork(record) } {
            Ok(Forked::Child) => {
                // SAFETY: close(2) is async-signal-safe. Closing the child's
                // copies of the parent's ends makes a dead parent visible as
                // end of file.
                unsafe {
                    libc::close(done_r);
                    libc::close(go_w);
                }
                let mut failures = 0;
                for cycles in [3, 3] {
                    failures |= grandchild_cycles(&mut reactor, &mut deaths, cycles);
                    if !write_byte(done_w, failures as u8) || read_byte(go_r).is_none() {
                        util::exit_child(100); // the parent is gone
                    }
                }
                failures |= grandchild_cycles(&mut reactor, &mut deaths, 20);
                util::exit_child(failures)
            }
            Ok(Forked::Parent(id)) => id,
            Err(e) => panic!("fork: {e}"),
        };
        drop(done_write);
        drop(go_read);
        let phase_done = |phase: &str| {
            assert!(
                readable_within(done_r, LIMIT),
                "the forked child did not finish phase {phase}"
            );
            let failures = read_byte(done_r).expect("the forked child's report");
            assert_eq!(
                failures,
                0,
                "forked child, phase {phase}: {:?}",
                describe(failures.into())
            );
        };

        // A. The child's SIGCHLDs wrote nothing to our wake pipe.
        phase_done("A");
        assert!(
            !readable_within(wake_fd, Duration::ZERO),
            "the forked child's SIGCHLD handler woke the parent's reactor"
        );

        // B. With a wake-up of ours pending, the child's dispatch calls
        // leave it where it is.
        let early = fork_exit(&mut reactor, 50);
        assert!(
            readable_within(wake_fd, LIMIT),
            "no wake-up for the early child"
        );
        assert!(write_byte(go_w, 1), "go");
        phase_done("B");
        assert!(
            readable_within(wake_fd, Duration::ZERO),
            "the forked child drained the parent's wake pipe"
        );
        assert!(deaths.seen.is_empty());

        // C. Our children die while the child keeps cycling.
        let siblings: Vec<ChildId> = (0..SIBLINGS).map(|i| fork_exit(&mut reactor, i)).collect();
        assert!(write_byte(go_w, 1), "go");
        let total = SIBLINGS as usize + 2;
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == total);
        for (code, &id) in siblings.iter().enumerate() {
            assert_eq!(deaths.status(id).code(), Some(code as i32), "sibling {id}");
        }
        assert_eq!(deaths.status(early).code(), Some(50));
        assert_child_passed(deaths.status(child));
        assert_eq!(deaths.seen.len(), total);
        let stats = reactor.stats();
        assert_eq!((stats.reaped, stats.lost), (total as u64, 0));
        drop(go_write);
        drop(done_read);
    }
    check.finish();
}

/// Reports, through a pipe, being dropped in a process other than `parent`.
struct DropProbe {
    parent: Pid,
    fd: RawFd,
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        // `getpid` and `write` are async-signal-safe, so this is fine in a
        // forked child too (which is the bug it detects).
        if Pid::this() != self.parent {
            write_byte(self.fd, 1);
        }
    }
}

/// `Reactor::fork` leaks the death callback in the child instead of
/// dropping it (dropping could free memory, or run destructors that belong
/// to the parent): a callback owning a [`DropProbe`] is dropped only in the
/// parent, after it ran there.
#[test]
fn callback_not_dropped_in_child() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let (probe_read, probe_write) = pipe();
        let probe = DropProbe {
            parent: Pid::this(),
            fd: probe_write.as_raw_fd(),
        };
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ran_in_callback = ran.clone();
        // SAFETY: the child only calls `_exit`; whatever evchild does with the
        // callback in the child before returning (it must leak it) is
        // async-signal-safe, and a wrongly run `DropProbe::drop` is too.
        let child = match unsafe {
            reactor.fork(move |d: &mut Deaths, r: &mut Reactor<Deaths>, exit| {
                let _probe = probe;
                ran_in_callback.store(true, std::sync::atomic::Ordering::Relaxed);
                record(d, r, exit);
            })
        } {
            Ok(Forked::Child) => util::exit_child(0),
            Ok(Forked::Parent(id)) => id,
            Err(e) => panic!("fork: {e}"),
        };
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
        assert_eq!(deaths.status(child).code(), Some(0));
        assert!(ran.load(std::sync::atomic::Ordering::Relaxed));
        // Every write end is closed now (ours here, the child's at its exit):
        // read to end of file.
        drop(probe_write);
        let mut out = Vec::new();
        io::Read::read_to_end(&mut std::fs::File::from(probe_read), &mut out).expect("read");
        assert!(
            out.is_empty(),
            "the callback was dropped in the forked child"
        );
    }
    check.finish();
}

/// The registry a child forked through `Reactor::fork` inherits is empty
/// (the fork generation advanced), even though the parent's reactor holds a
/// registration (`Peek`, a `SIGCHLD` backend, with a live child): and
/// dropping the parent's reactor in the child leaves it empty and the
/// parent's registration intact. Checked through evchild's registration
/// count (its hidden test counters).
#[test]
fn registry_is_empty_in_forked_child() {
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let mut gate = Gate::new();
        let (mut reactor, mut lp, mut deaths) =
            util::library_loop_with::<Deaths>(evchild::Backend::Peek);
        let live = fork_waiting(&mut reactor, &gate, record);
        util::assert_registrations(1, "a live child");

        let registrations = || util::handler_use().map_or(usize::MAX, |(_, r)| r);
        // SAFETY: the child only loads atomics (`handler_use`), drops the
        // reactor (which frees nothing and only closes descriptors in a
        // forked child) and calls `_exit`.
        let child = match unsafe { reactor.fork(record) } {
            Ok(Forked::Child) => {
                let mut failures = 0;
                if registrations() != 0 {
                    failures |= 1;
                }
                drop(reactor);
                if registrations() != 0 {
                    failures |= 2;
                }
                util::exit_child(failures)
            }
            Ok(Forked::Parent(id)) => id,
            Err(e) => panic!("fork: {e}"),
        };
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
        assert_eq!(
            deaths.status(child).code(),
            Some(0),
            "1: registrations inherited, 2: after dropping the reactor"
        );
        util::assert_registrations(1, "the parent's, after the child");
        gate.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 2);
        assert_eq!(deaths.status(live).code(), Some(util::NOT_KILLED));
        util::assert_no_registration("idle");
    }
    check.finish();
}
