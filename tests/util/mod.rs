//! Helpers shared by the integration tests.
//!
//! Every test binary is one process, and `cargo test` runs its tests on
//! several threads. The process-wide checks here (no zombie, no leaked
//! descriptor) are only meaningful if no other test of the same binary has
//! children or opens descriptors at the same time, so every test takes
//! [`Check::start`], which holds a process-wide lock (like nix's `FORK_MTX`)
//! and checks the whole process at the end.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use evchild::Reactor;
use mio::{Events, Interest, Poll, Token};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the tests of one binary and checks, at [`Check::finish`],
/// that the test left no child (zombie or alive) and no descriptor behind.
pub struct Check {
    fds: BTreeSet<RawFd>,
    _serial: MutexGuard<'static, ()>,
}

impl Check {
    #[track_caller]
    pub fn start() -> Self {
        // A test that failed while holding the lock poisons it; the others
        // must still run, so ignore the poison.
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        assert_no_children();
        Check {
            fds: open_fds(),
            _serial: serial,
        }
    }

    /// Asserts no child and no new descriptor remain. Call it after every
    /// object of the test (reactor, poll, pipes) has been dropped.
    #[track_caller]
    pub fn finish(self) {
        assert_no_children();
        assert_no_leaked_fds(&self.fds);
    }
}

/// `waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT)` answers `ECHILD`: the process has
/// no child at all, so in particular no zombie.
#[track_caller]
pub fn assert_no_children() {
    let flags = nix::sys::wait::WaitPidFlag::WEXITED
        | nix::sys::wait::WaitPidFlag::WNOHANG
        | nix::sys::wait::WaitPidFlag::WNOWAIT;
    match nix::sys::wait::waitid(nix::sys::wait::Id::All, flags) {
        Err(nix::errno::Errno::ECHILD) => {}
        other => panic!("a child (or zombie) remains: waitid answered {other:?}"),
    }
}

/// The descriptors open in this process.
pub fn open_fds() -> BTreeSet<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Asserts no descriptor is open now that was not open in `before` (the
/// directory handle of the listing itself excepted, as it is closed by then).
#[track_caller]
pub fn assert_no_leaked_fds(before: &BTreeSet<RawFd>) {
    let now = open_fds();
    let leaked: Vec<_> = now.difference(before).collect();
    let detail: Vec<String> = leaked
        .iter()
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}"));
            format!("{fd} -> {target:?}")
        })
        .collect();
    assert!(leaked.is_empty(), "leaked descriptors: {detail:?}");
}

/// Asserts `fd` has `FD_CLOEXEC` and `O_NONBLOCK`.
#[track_caller]
pub fn assert_cloexec_nonblock(fd: &impl AsRawFd) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    // SAFETY: the caller's object owns the fd for the duration of the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let fd_flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
    let fl_flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
    assert!(fd_flags.contains(FdFlag::FD_CLOEXEC), "not close-on-exec");
    assert!(fl_flags.contains(OFlag::O_NONBLOCK), "not non-blocking");
}

pub const CHILDREN: Token = Token(0);

/// A mio loop around one reactor: the way an application drives it.
pub struct Loop {
    pub poll: Poll,
    events: Events,
}

impl Loop {
    pub fn new<C>(reactor: &mut Reactor<C>) -> Self {
        let poll = Poll::new().expect("mio::Poll::new");
        poll.registry()
            .register(reactor, CHILDREN, Interest::READABLE)
            .expect("register reactor");
        Loop {
            poll,
            events: Events::with_capacity(16),
        }
    }

    /// Polls and dispatches until `done(ctx)` holds; panics after `limit`.
    #[track_caller]
    pub fn run_until<C>(
        &mut self,
        reactor: &mut Reactor<C>,
        ctx: &mut C,
        limit: Duration,
        mut done: impl FnMut(&C) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !done(ctx) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {limit:?} waiting for the loop"
            );
            match self.poll.poll(&mut self.events, Some(left)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("poll: {e}"),
            }
            if self.events.iter().any(|e| e.token() == CHILDREN) {
                reactor.dispatch(ctx).expect("dispatch");
            }
        }
    }
}

/// Calls `_exit(code)`. For forked test children: `_exit` is
/// async-signal-safe, and skips the parent's atexit handlers and buffers.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}
