//! The checks every test ends with: no child (alive or zombie) and no new
//! descriptor is left, and the lock that makes those process-wide checks
//! mean something in a test binary that runs its tests on several threads.
//!
//! Every test binary is one process, and `cargo test` runs its tests on
//! several threads. The process-wide checks here are only meaningful if no
//! other test of the same binary has children or opens descriptors at the
//! same time, so every test takes [`Check::start`], which holds a
//! process-wide lock (like nix's `FORK_MTX`) and checks the whole process at
//! the end. A test that must own the whole process (a handler installed for
//! good, forced pid reuse) runs in a process of its own: see
//! [`crate::own_process`].

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use evchild::{Hooks, Reactor};
use nix::errno::Errno;

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

/// Declared right after [`Check::start`] (so dropped before the lock is
/// released, and after everything the test declares later): if the test panics,
/// reaps every child of the process (the test holds the process-wide lock of
/// [`Check`], so they are all its own), so that one failing test does not
/// make every later test of the binary fail at `Check::start`. Children
/// waiting on a [`Gate`](crate::Gate) have been let go by then (the gate is dropped
/// before this).
pub struct ReapOnPanic;

impl Drop for ReapOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            reap_every_child(Duration::from_secs(10));
        }
    }
}

/// `waitpid(-1, WNOHANG)` until the process has no child, or `limit` passed.
pub fn reap_every_child(limit: Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return, // ECHILD: none left
        }
    }
}

/// [`ReapOnPanic`] for tests whose children do not end by themselves
/// (`sleep 30`, a shell that ignores `SIGTERM`): if the test panics, sends
/// `SIGKILL` to every child of the process and reaps it, until none is left
/// (a child subreaper inherits the orphans of the children it kills), for at
/// most 10 s. Declare it right after [`Check::start`], so that it is dropped
/// after the test's reactor and before the `Check` lets the next test in.
pub struct KillOnPanic;

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            kill_every_child(Duration::from_secs(10));
        }
    }
}

/// `SIGKILL`s and reaps every child of the process until it has none (the
/// test holds the lock of [`Check`], so they are all its own), or `limit`
/// passed.
pub fn kill_every_child(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let children = children();
        if children.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in children {
            // A child that is already dead (a zombie) ignores it.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        reap_every_child(Duration::from_millis(100));
    }
}

/// The processes whose parent is this process (the `ppid` field of every
/// `/proc/<pid>/stat`), zombies included.
pub fn children() -> Vec<nix::unistd::Pid> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: libc::pid_t = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`; `comm` may hold spaces and parentheses.
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        let ppid = fields.nth(1)?;
        (ppid == me).then(|| nix::unistd::Pid::from_raw(pid))
    })
    .collect()
}

/// `waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT)` answers `ECHILD`: the process has
/// no child at all, so in particular no zombie.
#[track_caller]
pub fn assert_no_children() {
    let flags = nix::sys::wait::WaitPidFlag::WEXITED
        | nix::sys::wait::WaitPidFlag::WNOHANG
        | nix::sys::wait::WaitPidFlag::WNOWAIT;
    match nix::sys::wait::waitid(nix::sys::wait::Id::All, flags) {
        Err(Errno::ECHILD) => {}
        other => panic!("a child (or zombie) remains: waitid answered {other:?}"),
    }
}

/// The descriptors open in this process.
///
/// evchild keeps three descriptors for the life of the process (the
/// orphan set and its wake pipe, opened by the first `Reactor::new`): they
/// are opened here first, so they are never counted as a test's leak.
pub fn open_fds() -> BTreeSet<RawFd> {
    static ORPHAN_SET: std::sync::Once = std::sync::Once::new();
    ORPHAN_SET.call_once(|| drop(Reactor::<()>::new(Hooks::default())));
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Asserts no descriptor is open now that was not open in `before` (the
/// directory handle of the listing itself excepted, as it is closed by then).
#[track_caller]
pub fn assert_no_leaked_fds(before: &BTreeSet<RawFd>) {
    // The listing's own directory handle shows in it, under whatever number
    // was free then (perhaps one that was open in `before`'s listing and
    // has been closed since): it is closed by now, so only descriptors
    // that are still open count. A descriptor that another thread of the
    // harness has open for a moment is gone a little later: look twice.
    let leaked = || -> Vec<String> {
        open_fds()
            .difference(before)
            .filter_map(|fd| {
                let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
                Some(format!("{fd} -> {}", target.display()))
            })
            .collect()
    };
    if leaked().is_empty() {
        return;
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let detail = leaked();
    assert!(detail.is_empty(), "leaked descriptors: {detail:?}");
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
