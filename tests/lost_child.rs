//! A registered child reaped by other code in the process is reported
//! `Outcome::Lost`: exactly one callback, never a made-up status.
//!
//! In its own binary: the tests reap evchild's children behind its back, and
//! one uses `LibraryAlways`.

mod util;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use evchild::{Error, Exit, Forked, Hooks, Outcome, Pid, Reactor, SigchldOwner};
use mio::Events;
use nix::errno::Errno;
use nix::fcntl::OFlag;

const LIMIT: Duration = Duration::from_secs(30);

fn record(deaths: &mut Vec<Exit>, _: &mut Reactor<Vec<Exit>>, exit: Exit) {
    deaths.push(exit);
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

/// A pipe a forked child blocks on until the parent drops the write end.
struct Gate {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl Gate {
    fn new() -> Self {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
        Gate {
            read,
            write: Some(write),
        }
    }

    fn open(&mut self) {
        self.write = None;
    }
}

/// In a forked child: closes every other descriptor, waits for end-of-file
/// on `gate`, exits with `code`. Only `close(2)`, `read(2)` and `_exit(2)`:
/// async-signal-safe.
fn wait_then_exit(gate: RawFd, code: i32) -> ! {
    for fd in 3..1024 {
        if fd != gate {
            // SAFETY: close(2) is async-signal-safe; this process exits
            // below and uses none of these descriptors.
            unsafe { libc::close(fd) };
        }
    }
    let mut byte = 0u8;
    loop {
        // SAFETY: read(2) is async-signal-safe; `byte` is a live local.
        let rc = unsafe { libc::read(gate, std::ptr::addr_of_mut!(byte).cast(), 1) };
        if rc >= 0 || Errno::last() != Errno::EINTR {
            break;
        }
    }
    util::exit_child(code)
}

/// Forks a registered child that exits with `code` once `gate` opens.
fn fork_gated(reactor: &mut Reactor<Vec<Exit>>, gate: &Gate, code: i32) -> Pid {
    let fd = gate.read.as_raw_fd();
    // SAFETY: the child only calls close(2), read(2) and _exit(2), which are
    // async-signal-safe.
    match unsafe { reactor.fork(record) }.expect("fork") {
        Forked::Child => wait_then_exit(fd, code),
        Forked::Parent(pid) => pid,
    }
}

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

/// Waits for the next readiness of the reactor and dispatches once.
fn dispatch_once(lp: &mut util::Loop, reactor: &mut Reactor<Vec<Exit>>, deaths: &mut Vec<Exit>) {
    let deadline = Instant::now() + LIMIT;
    let mut events = Events::with_capacity(8);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for the reactor");
        match lp.poll.poll(&mut events, Some(left)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        if events.iter().any(|e| e.token() == util::CHILDREN) {
            reactor.dispatch(deaths).expect("dispatch");
            return;
        }
    }
}

#[test]
fn library_child_reaped_by_someone_else_is_lost() {
    let check = util::Check::start();
    {
        let mut reactor = Reactor::new(Hooks::new(SigchldOwner::Library)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut deaths = Vec::new();

        let (mut gl, mut gk) = (Gate::new(), Gate::new());
        let lost = fork_gated(&mut reactor, &gl, 9);
        let kept = fork_gated(&mut reactor, &gk, 2);
        gl.open();
        // Other code waits for our child before evchild's dispatch.
        assert_eq!(steal(lost), exited(9));

        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| !d.is_empty());
        assert_eq!(deaths.len(), 1);
        assert_eq!(deaths[0].pid, lost);
        assert_eq!(deaths[0].outcome, Outcome::Lost, "never a made-up status");
        assert_eq!(deaths[0].status(), None);
        assert!(!reactor.contains(lost));
        assert!(reactor.contains(kept), "the other child is unaffected");
        let stats = reactor.stats();
        assert_eq!(stats.lost, 1);
        assert_eq!(stats.reaped, 0);
        // Its pid may be reused by now: not signalled.
        assert!(matches!(
            reactor.kill(lost, libc::SIGTERM),
            Err(Error::AlreadyReaped { pid }) if pid == lost
        ));

        gk.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 2);
        assert_eq!(deaths[1].pid, kept);
        assert_eq!(deaths[1].outcome, Outcome::Reaped(exited(2)));
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
        let mut reactor = Reactor::new(Hooks::new(SigchldOwner::LibraryAlways)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut deaths = Vec::new();

        let (mut gl, mut gk) = (Gate::new(), Gate::new());
        let lost = fork_gated(&mut reactor, &gl, 9);
        let kept = fork_gated(&mut reactor, &gk, 2);
        gl.open();
        assert_eq!(steal(lost), exited(9));

        // `waitpid(-1)` cannot tell a stolen child from a live one while the
        // process has another child: nothing is reported yet.
        dispatch_once(&mut lp, &mut reactor, &mut deaths);
        assert!(deaths.is_empty(), "{deaths:?}");
        assert_eq!(reactor.len(), 2);

        // Once the last child is reaped, the process has none left, so the
        // stolen one is known to be lost.
        gk.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 2);
        let outcome_of = |pid| {
            let found: Vec<_> = deaths.iter().filter(|e| e.pid == pid).collect();
            assert_eq!(found.len(), 1, "exactly one report for {pid}");
            found[0].outcome
        };
        assert_eq!(outcome_of(kept), Outcome::Reaped(exited(2)));
        assert_eq!(outcome_of(lost), Outcome::Lost, "never a made-up status");
        let stats = reactor.stats();
        assert_eq!(stats.lost, 1);
        assert_eq!(stats.reaped, 1);
        assert_eq!(stats.unknown_claimed + stats.unknown_unclaimed, 0);
        assert!(reactor.is_empty());
    }
    check.finish();
}
