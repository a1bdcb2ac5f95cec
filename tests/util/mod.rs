//! Helpers shared by the integration tests.
//!
//! Every test binary is one process, and `cargo test` runs its tests on
//! several threads. The process-wide checks here (no zombie, no leaked
//! descriptor) are only meaningful if no other test of the same binary has
//! children or opens descriptors at the same time, so every test takes
//! [`Check::start`], which holds a process-wide lock (like nix's `FORK_MTX`)
//! and checks the whole process at the end.
//!
//! Forked test children: the test binary has other threads, so a child forked
//! here only calls async-signal-safe functions (`_exit`, `read`, `close`)
//! until it dies; each helper that forks says which.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use evchild::{Backend, ChildId, Error, Exit, Forked, Hooks, Outcome, Pid, Reactor, SigchldOwner};
use mio::unix::pipe::Receiver;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;

// ---------------------------------------------------------------------------
// One test at a time, and a clean process afterwards
// ---------------------------------------------------------------------------

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
/// waiting on a [`Gate`] have been let go by then (the gate is dropped
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
/// evchild keeps one descriptor for the life of the process (the orphan
/// set, opened by the first `Reactor::new`): it is opened here first, so it
/// is never counted as a test's leak.
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

// ---------------------------------------------------------------------------
// Statuses and death reports
// ---------------------------------------------------------------------------

/// The wait status of a process that called `exit(code)`.
pub fn exited(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

/// The wait status of a process killed by `signal` (no core dump).
pub fn signaled(signal: libc::c_int) -> ExitStatus {
    ExitStatus::from_raw(signal)
}

/// A test context that keeps the death reports it is given.
pub trait Record {
    fn record(&mut self, exit: Exit);
}

impl Record for Vec<Exit> {
    fn record(&mut self, exit: Exit) {
        self.push(exit);
    }
}

/// The plain death callback: records the report in the context.
pub fn record<C: Record>(ctx: &mut C, _: &mut Reactor<C>, exit: Exit) {
    ctx.record(exit);
}

/// The outcome of child `id`, which must have been reported exactly once in
/// `deaths`.
#[track_caller]
pub fn outcome_of(deaths: &[Exit], id: ChildId) -> Outcome {
    let found: Vec<_> = deaths.iter().filter(|e| e.id == id).collect();
    assert_eq!(found.len(), 1, "exactly one report for {id}: {deaths:?}");
    found[0].outcome
}

/// The one report in `deaths`, which must be a reap, as `(code, signal)`.
#[track_caller]
pub fn only_death(deaths: &[Exit]) -> (Option<i32>, Option<i32>) {
    assert_eq!(deaths.len(), 1, "expected one death: {deaths:?}");
    let status = deaths[0].status().expect("reaped, not lost");
    (status.code(), status.signal())
}

/// Asserts that `result` (of `call`) is the refusal [`Error::AlreadyReaped`]
/// for `pid`.
#[track_caller]
pub fn assert_already_reaped<T: std::fmt::Debug>(result: evchild::Result<T>, pid: Pid, call: &str) {
    match result {
        Err(Error::AlreadyReaped { pid: refused }) => assert_eq!(refused, pid, "{call}"),
        other => panic!("{call}: expected AlreadyReaped, got {other:?}"),
    }
}

/// Loose upper bound on how late an escalation to `SIGKILL` may come.
pub const LATE: Duration = Duration::from_secs(10);

/// Right after `terminate` or `terminate_group` with `grace`: the reactor
/// has a deadline, due within `grace`. Returns `timeout()`.
#[track_caller]
pub fn assert_deadline_within<C>(reactor: &Reactor<C>, grace: Duration) -> Duration {
    let timeout = reactor.timeout().expect("a deadline after terminate");
    assert!(timeout <= grace, "timeout {timeout:?} > grace {grace:?}");
    timeout
}

/// A death by `SIGKILL` after a `grace` period, reported `elapsed` after
/// the `terminate` call: not before the grace ran out, nor after [`LATE`].
#[track_caller]
pub fn assert_killed_after_grace(elapsed: Duration, grace: Duration) {
    assert!(
        elapsed >= grace,
        "killed after {elapsed:?}, before the {grace:?} grace ran out"
    );
    assert!(elapsed < LATE, "killed only after {elapsed:?}");
}

/// Every death report, per child: a child reported twice shows up as two
/// entries.
#[derive(Debug, Default)]
pub struct Deaths {
    pub seen: HashMap<ChildId, Vec<Outcome>>,
    /// Children started from inside callbacks.
    pub spawned: Vec<ChildId>,
    /// Children whose callback panicked on purpose (recorded first).
    pub panicked: Vec<ChildId>,
}

impl Deaths {
    pub fn total(&self) -> usize {
        self.seen.values().map(Vec::len).sum()
    }

    /// The status of `id`, which must have been reported exactly once, and
    /// reaped (not lost).
    #[track_caller]
    pub fn status(&self, id: ChildId) -> ExitStatus {
        match self.seen.get(&id).map(Vec::as_slice) {
            Some([Outcome::Reaped(status)]) => *status,
            other => panic!("child {id}: expected exactly one reaped report, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn assert_code(&self, id: ChildId, code: i32) {
        let status = self.status(id);
        assert_eq!(status.code(), Some(code), "child {id}: {status}");
        assert_eq!(status.signal(), None, "child {id}: {status}");
    }

    #[track_caller]
    pub fn assert_signal(&self, id: ChildId, signal: i32) {
        let status = self.status(id);
        assert_eq!(status.signal(), Some(signal), "child {id}: {status}");
        assert_eq!(status.code(), None, "child {id}: {status}");
    }
}

impl Record for Deaths {
    fn record(&mut self, exit: Exit) {
        self.seen.entry(exit.id).or_default().push(exit.outcome);
    }
}

// ---------------------------------------------------------------------------
// Pipes
// ---------------------------------------------------------------------------

/// A close-on-exec, blocking pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2")
}

/// `write(2)` of one byte, retrying `EINTR`. Async-signal-safe.
pub fn write_byte(fd: RawFd, byte: u8) -> bool {
    loop {
        // SAFETY: the buffer is one live byte; write is async-signal-safe.
        let rc = unsafe { libc::write(fd, std::ptr::addr_of!(byte).cast(), 1) };
        if rc == 1 {
            return true;
        }
        if rc == -1 && Errno::last() == Errno::EINTR {
            continue;
        }
        return false;
    }
}

/// Blocking `read(2)` of one byte, retrying `EINTR`; `None` at end of file
/// or on error. Async-signal-safe.
pub fn read_byte(fd: RawFd) -> Option<u8> {
    let mut byte = 0u8;
    loop {
        // SAFETY: the buffer is one live, writable byte; read is
        // async-signal-safe.
        let rc = unsafe { libc::read(fd, std::ptr::addr_of_mut!(byte).cast(), 1) };
        if rc == 1 {
            return Some(byte);
        }
        if rc == -1 && Errno::last() == Errno::EINTR {
            continue;
        }
        return None;
    }
}

/// Whether `fd` is readable (or hung up) within `timeout` (`poll(2)`).
pub fn readable_within(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid `pollfd`; poll only writes `revents`.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        match rc {
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => panic!("poll: {}", std::io::Error::last_os_error()),
            0 => return false,
            _ => return pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0,
        }
    }
}

/// Whether `fd` is readable right now.
pub fn readable(fd: RawFd) -> bool {
    readable_within(fd, Duration::ZERO)
}

// ---------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------

/// Calls `_exit(code)`. For forked test children: `_exit` is
/// async-signal-safe, and skips the parent's atexit handlers and buffers.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// A pipe that forked children block on until the test opens the gate
/// (drops the write end, which only the test holds).
///
/// It is also their lifeline: a child meant to wait until it is killed
/// ([`fork_waiting`]) blocks on a gate too, not in `pause()`. If the test
/// fails (its gates are dropped while unwinding) or the test process dies,
/// such children see end of file and exit, so a failing test leaves no
/// orphan behind holding the test runner's output pipes open.
pub struct Gate {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

/// The exit code of a [`fork_waiting`] child whose gate opened before anyone
/// killed it.
pub const NOT_KILLED: i32 = 86;

impl Gate {
    pub fn new() -> Self {
        let (read, write) = pipe();
        Gate {
            read,
            write: Some(write),
        }
    }

    /// The read end's descriptor number, for a forked child that waits on
    /// it by itself (closing every other descriptor first, as
    /// [`wait_in_child`](Self::wait_in_child) does).
    pub fn read_raw(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Lets the children waiting on this gate go.
    pub fn open(&mut self) {
        self.write = None;
    }

    /// In a forked child: closes every other descriptor (so the child holds
    /// no write end of this gate or any other, which would keep that gate
    /// shut), waits for end of file on the gate, then `_exit(code)`. Only
    /// calls `close(2)`, `read(2)` and `_exit(2)`, which are
    /// async-signal-safe, and allocates nothing.
    pub fn wait_in_child(&self, code: i32) -> ! {
        let gate = self.read.as_raw_fd();
        for fd in 3..1024 {
            if fd != gate {
                // SAFETY: close(2) is async-signal-safe; this process exits
                // below and uses none of these descriptors.
                unsafe { libc::close(fd) };
            }
        }
        read_byte(gate);
        exit_child(code)
    }
}

/// Forks through `reactor` a child that `_exit`s with `code` at once.
#[track_caller]
pub fn fork_exit<C>(
    reactor: &mut Reactor<C>,
    code: i32,
    on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
) -> ChildId {
    // SAFETY: the child only calls `_exit` (`exit_child`), which is
    // async-signal-safe.
    match unsafe { reactor.fork(on_death) } {
        Ok(Forked::Child) => exit_child(code),
        Ok(Forked::Parent(id)) => id,
        Err(e) => panic!("fork: {e}"),
    }
}

/// Forks through `reactor` a child that exits with `code` once `gate` opens.
#[track_caller]
pub fn fork_gated<C>(
    reactor: &mut Reactor<C>,
    gate: &Gate,
    code: i32,
    on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
) -> ChildId {
    // SAFETY: the child only runs `Gate::wait_in_child`, which is
    // async-signal-safe (see there).
    match unsafe { reactor.fork(on_death) } {
        Ok(Forked::Child) => gate.wait_in_child(code),
        Ok(Forked::Parent(id)) => id,
        Err(e) => panic!("fork: {e}"),
    }
}

/// Forks through `reactor` a child that waits until a signal kills it (or
/// `gate` opens: then it exits with [`NOT_KILLED`]).
#[track_caller]
pub fn fork_waiting<C>(
    reactor: &mut Reactor<C>,
    gate: &Gate,
    on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
) -> ChildId {
    fork_gated(reactor, gate, NOT_KILLED, on_death)
}

/// `nix::unistd::fork`, as a `fork_replacement` returns it: `Some(pid)` in
/// the parent, `None` in the child.
///
/// # Safety
/// As `fork(2)`: the child may only call async-signal-safe functions.
pub unsafe fn forward_fork() -> std::io::Result<Option<Pid>> {
    // SAFETY: forwarded to the caller.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(Pid::from_raw(child.as_raw()))),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// Blocks until `pid` has exited, without reaping it
/// (`waitid(P_PID, pid, WEXITED | WNOWAIT)`): afterwards the child is a
/// zombie that only its owner will reap.
#[track_caller]
pub fn wait_zombie(pid: Pid) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let id = || Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw()));
    loop {
        match waitid(id(), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => return,
            Err(Errno::EINTR) => continue,
            Err(e) => panic!("waitid({pid}, WNOWAIT): {e}"),
        }
    }
}

/// Whether `pid` has exited (is a zombie), without reaping it
/// (`waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)`).
#[track_caller]
pub fn has_exited(pid: Pid) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw())), flags) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(e) => panic!("waitid({pid}): {e}"),
    }
}

/// Reaps `pid` (blocking `waitpid(pid, 0)`, retrying `EINTR`) and returns
/// its status.
#[track_caller]
pub fn reap_child(pid: Pid) -> ExitStatus {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid, writable int.
        let rc = unsafe { libc::waitpid(pid.as_raw(), &mut status, 0) };
        if rc == pid.as_raw() {
            return ExitStatus::from_raw(status);
        }
        assert_eq!(Errno::last(), Errno::EINTR, "waitpid({pid})");
    }
}

/// Reads a child's output from the non-blocking `pipe` (in a `Poll` of its
/// own) until `count` whole lines have arrived, and returns every line read;
/// panics at end of file or after `limit`.
#[track_caller]
pub fn read_lines(pipe: &mut Receiver, count: usize, limit: Duration) -> Vec<String> {
    const OUTPUT: Token = Token(0);
    let mut poll = Poll::new().expect("mio::Poll::new");
    poll.registry()
        .register(pipe, OUTPUT, Interest::READABLE)
        .expect("register pipe");
    let mut events = Events::with_capacity(4);
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 256];
    while seen.iter().filter(|&&b| b == b'\n').count() < count {
        match pipe.read(&mut buf) {
            Ok(0) => panic!("EOF after {:?}", String::from_utf8_lossy(&seen)),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "timed out waiting for {count} lines: {:?}",
                    String::from_utf8_lossy(&seen)
                );
                match poll.poll(&mut events, Some(left)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("poll: {e}"),
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    poll.registry().deregister(pipe).expect("deregister");
    String::from_utf8(seen)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts `/bin/sh -c script` with `std::process::Command`, stdio to
/// `/dev/null`: a child of the process that evchild did not start.
#[track_caller]
pub fn shell(script: &str) -> Child {
    Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn /bin/sh")
}

/// Whether `pid` is an unreaped child of this process (`waitid(P_PID,
/// WNOWAIT)`, which reaps nothing).
pub fn is_our_child(pid: Pid) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw())), flags) != Err(Errno::ECHILD)
}

/// Waits until `pid` is no longer an unreaped child of this process (the
/// kernel reaped it, `SIGCHLD` being ignored, or someone else did). Asks
/// `waitid(P_PID, WNOWAIT)`, which reaps nothing and, unlike `kill(pid, 0)`,
/// cannot be fooled by another process that got the pid since.
#[track_caller]
pub fn wait_not_our_child(pid: Pid) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let deadline = Instant::now() + Duration::from_secs(10);
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    let id = || Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw()));
    while waitid(id(), flags) != Err(Errno::ECHILD) {
        if Instant::now() >= deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
            let disposition = disposition();
            panic!("child {pid} never went away: /proc stat {stat:?}, SIGCHLD {disposition:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `sh -c SCRIPT` with no stdio (nothing inherited from the test harness).
pub fn quiet_sh(script: &str) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// [`shell`] `exit code`.
#[track_caller]
pub fn sh_exit(code: i32) -> Child {
    shell(&format!("exit {code}"))
}

// ---------------------------------------------------------------------------
// One process per test
// ---------------------------------------------------------------------------

/// Names the test a re-executed test binary runs (see [`isolated`]).
pub const ISOLATED_VAR: &str = "EVCHILD_TEST_ISOLATED";

/// Runs the calling test, `name`, alone in a fresh process of this test
/// binary: for tests whose subject is process-wide and one-way (evchild's
/// `SIGCHLD` handler stays installed once taken, a foreign handler installed
/// before it is chained only if evchild never installed in that process).
///
/// In the test process: takes [`Check::start`] (so no other test of the
/// binary has children meanwhile), re-executes the binary with `--exact
/// NAME --test-threads=1` and [`ISOLATED_VAR`]` = NAME`, asserts it passed
/// (showing its output if not), and returns `false`: the test returns. In the
/// re-executed process it returns `true`: the test runs its body there, and
/// it is the only test running, on the only thread besides libtest's main
/// thread, which waits in a channel receive holding no lock (so a child
/// forked there may allocate).
#[track_caller]
pub fn isolated(name: &str) -> bool {
    if std::env::var(ISOLATED_VAR).as_deref() == Ok(name) {
        return true;
    }
    let check = Check::start();
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(ISOLATED_VAR, name)
        .stdin(Stdio::null())
        .output()
        .expect("re-execute the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in its own process: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    check.finish();
    false
}

// ---------------------------------------------------------------------------
// The SIGCHLD disposition
// ---------------------------------------------------------------------------

/// glibc adds `SA_RESTORER` (its signal trampoline) to every action it
/// installs and reports it back; it is not ours to compare.
pub const SA_RESTORER: libc::c_int = 0x0400_0000;

/// The current `SIGCHLD` action, as the kernel reports it.
#[track_caller]
pub fn sigchld_action() -> libc::sigaction {
    // SAFETY: an all-zero `sigaction` is a valid value; the kernel overwrites it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is a valid out-pointer.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) };
    assert_eq!(
        rc,
        0,
        "sigaction(SIGCHLD): {}",
        std::io::Error::last_os_error()
    );
    old
}

/// The current `SIGCHLD` handler address (`SIG_DFL`, `SIG_IGN` or a
/// function).
#[track_caller]
pub fn sigchld_handler() -> libc::sighandler_t {
    sigchld_action().sa_sigaction
}

/// The current `SIGCHLD` disposition: handler and flags (without
/// [`SA_RESTORER`]).
#[track_caller]
pub fn disposition() -> (libc::sighandler_t, libc::c_int) {
    let action = sigchld_action();
    (action.sa_sigaction, action.sa_flags & !SA_RESTORER)
}

/// Installs `handler` with `flags` (and an empty mask) as the `SIGCHLD`
/// disposition; returns the action it replaced.
///
/// `handler` must be `SIG_DFL`, `SIG_IGN`, or a function with the signature
/// `flags` tells the kernel: `extern "C" fn(c_int)`, or with `SA_SIGINFO`
/// `extern "C" fn(c_int, *mut siginfo_t, *mut c_void)`.
#[track_caller]
pub fn set_disposition(handler: libc::sighandler_t, flags: libc::c_int) -> libc::sigaction {
    // SAFETY: all-zero is a valid sigaction; the fields used are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler;
    action.sa_flags = flags;
    // SAFETY: `sa_mask` is a valid out-pointer.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: all-zero is a valid sigaction; the kernel overwrites it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `action` is fully initialised, and its handler has the
    // signature its flags tell the kernel (the caller's obligation, see
    // above); `old` is a valid out-pointer.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, &action, &mut old) };
    assert_eq!(rc, 0, "sigaction(SIGCHLD)");
    old
}

/// Reinstalls a `SIGCHLD` action obtained from the kernel.
#[track_caller]
pub fn restore_action(action: &libc::sigaction) {
    // SAFETY: `action` came from the kernel, so it is valid to install.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, action, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "sigaction(SIGCHLD)");
}

/// What evchild's handler machinery has done so far in this process:
/// `(installs, live registrations)`, read through evchild's `fuzzing`
/// feature (`--all-features`); `None` without it, and the checks built on
/// it are then skipped.
///
/// Once evchild installs its `SIGCHLD` handler it stays installed for the
/// life of the process, so "the reactor gave the handler up" is "no
/// registration is left", not "`SIGCHLD` is `SIG_DFL` again".
pub fn handler_use() -> Option<(u64, usize)> {
    #[cfg(feature = "fuzzing")]
    {
        use evchild::fuzzing::sigchld;
        Some((sigchld::installs(), sigchld::registrations()))
    }
    #[cfg(not(feature = "fuzzing"))]
    {
        None
    }
}

/// Asserts no reactor of the process holds a `SIGCHLD` registration (its
/// wake pipe in the handler's table): every reactor that needed the
/// handler has released it. Skipped without the `fuzzing` feature.
#[track_caller]
pub fn assert_no_registration(what: &str) {
    assert_registrations(0, what);
}

/// Asserts how many `SIGCHLD` registrations are live (one per reactor that
/// needs the handler now). Skipped without the `fuzzing` feature.
#[track_caller]
pub fn assert_registrations(expected: usize, what: &str) {
    if let Some((_, registrations)) = handler_use() {
        assert_eq!(registrations, expected, "{what}: SIGCHLD registrations");
    }
}

/// A snapshot of the `SIGCHLD` disposition and of evchild's installs, to
/// check that something (the pidfd backend, `Mainloop` mode) left the
/// handler alone.
pub struct HandlerWatch {
    disposition: (libc::sighandler_t, libc::c_int),
    installs: Option<u64>,
}

impl HandlerWatch {
    pub fn start() -> Self {
        HandlerWatch {
            disposition: disposition(),
            installs: handler_use().map(|(installs, _)| installs),
        }
    }

    /// The disposition is as it was, evchild installed nothing since
    /// [`start`](HandlerWatch::start), and holds no registration.
    #[track_caller]
    pub fn assert_untouched(&self, what: &str) {
        assert_eq!(
            disposition(),
            self.disposition,
            "{what}: disposition changed"
        );
        if let (Some(before), Some((now, _))) = (self.installs, handler_use()) {
            assert_eq!(now, before, "{what}: evchild installed its handler");
        }
        assert_no_registration(what);
    }
}

/// Puts `SIG_DFL` back when the test ends, even if it fails.
pub struct RestoreDefault;

impl Drop for RestoreDefault {
    fn drop(&mut self) {
        set_disposition(libc::SIG_DFL, 0);
    }
}

// ---------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------

pub const CHILDREN: Token = Token(0);

/// A mio loop around one reactor (under [`CHILDREN`]), driven the way the
/// reactor's documentation asks: `poll` sleeps no longer than
/// [`Reactor::timeout`], and `dispatch` runs after every return of `poll`,
/// on an event or on time-out.
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
        self.run_with(reactor, ctx, limit, |_, _, _| {}, |_, ctx| done(ctx));
    }

    /// Polls and dispatches until `done(reactor, ctx)` holds; panics after
    /// `limit`. Events of tokens other than [`CHILDREN`] (sources the test
    /// registered in [`Loop::poll`] itself) go to `on_event`, after the
    /// reactor's `dispatch`.
    #[track_caller]
    pub fn run_with<C>(
        &mut self,
        reactor: &mut Reactor<C>,
        ctx: &mut C,
        limit: Duration,
        mut on_event: impl FnMut(Token, &mut Reactor<C>, &mut C),
        mut done: impl FnMut(&Reactor<C>, &C) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !done(reactor, ctx) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {limit:?} waiting for the loop: {reactor:?}"
            );
            // Wake up for the reactor's next deadline, and for our limit.
            let sleep = reactor.timeout().map_or(left, |due| due.min(left));
            match self.poll.poll(&mut self.events, Some(sleep)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("poll: {e}"),
            }
            // After every return of `poll`, readiness or time-out: dispatch
            // also fires the deadlines that are due.
            reactor.dispatch(ctx).expect("dispatch");
            for event in &self.events {
                if event.token() != CHILDREN {
                    on_event(event.token(), reactor, ctx);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// The environment variable that picks the `Library`-mode backend of the
/// whole suite: `pidfd`, `peek` or `scan`; unset (or empty) means
/// [`Backend::Auto`]. CI runs the suite once per value.
pub const BACKEND_VAR: &str = "EVCHILD_TEST_BACKEND";

/// The backend this run of the suite asks for (see [`BACKEND_VAR`]). Panics
/// on any other value, so a typo cannot quietly test `Auto` instead.
#[track_caller]
pub fn test_backend() -> Backend {
    match std::env::var(BACKEND_VAR) {
        Err(std::env::VarError::NotPresent) => Backend::Auto,
        Ok(value) => match value.to_ascii_lowercase().as_str() {
            "" | "auto" => Backend::Auto,
            "pidfd" => Backend::Pidfd,
            "peek" => Backend::Peek,
            "scan" => Backend::Scan,
            other => panic!("{BACKEND_VAR}={other:?}: expected pidfd, peek, scan or auto"),
        },
        Err(e) => panic!("{BACKEND_VAR}: {e}"),
    }
}

/// Whether this system gives evchild pidfds (a reactor asked for
/// [`Backend::Pidfd`] gets it, rather than the fallback to peek).
pub fn pidfd_available() -> bool {
    Reactor::<()>::new(Hooks::new(SigchldOwner::Library).backend(Backend::Pidfd))
        .expect("Reactor::new(Library)")
        .backend()
        == Some(Backend::Pidfd)
}

/// The backends that work through the `SIGCHLD` handler, for tests about
/// the handler itself.
pub const SIGCHLD_BACKENDS: [Backend; 2] = [Backend::Scan, Backend::Peek];

/// Every backend a `Library` reactor can be asked for, `Auto` aside.
pub const BACKENDS: [Backend; 3] = [Backend::Pidfd, Backend::Peek, Backend::Scan];

/// Hooks for `owner` with this run's backend ([`test_backend`]). Other modes
/// ignore the backend, so any test may use this.
pub fn hooks<C>(owner: SigchldOwner) -> Hooks<C> {
    Hooks::new(owner).backend(test_backend())
}

/// A reactor in `Library` mode, the default, with this run's backend
/// ([`test_backend`]).
#[track_caller]
pub fn library<C>() -> Reactor<C> {
    Reactor::new(hooks(SigchldOwner::Library)).expect("Reactor::new(Library)")
}

/// A reactor in `Library` mode with `backend`, whatever this run's backend:
/// for tests about one backend (a `SIGCHLD` handler test asks for `Scan` or
/// `Peek`). Checks the reactor uses it (`Pidfd` needs a kernel with pidfds).
#[track_caller]
pub fn library_with<C>(backend: Backend) -> Reactor<C> {
    let reactor = Reactor::new(Hooks::new(SigchldOwner::Library).backend(backend))
        .expect("Reactor::new(Library)");
    assert_eq!(reactor.backend(), Some(backend), "the backend asked for");
    reactor
}

/// [`library_loop`] with `backend` (see [`library_with`]).
#[track_caller]
pub fn library_loop_with<C: Default>(backend: Backend) -> (Reactor<C>, Loop, C) {
    let mut reactor = library_with(backend);
    let lp = Loop::new(&mut reactor);
    (reactor, lp, C::default())
}

/// What most tests start with: a `Library` reactor (with this run's
/// backend), a [`Loop`] around it, and an empty context. Bind them in this
/// order (they drop in reverse).
#[track_caller]
pub fn library_loop<C: Default>() -> (Reactor<C>, Loop, C) {
    let mut reactor = library();
    let lp = Loop::new(&mut reactor);
    (reactor, lp, C::default())
}

/// The command that lists a process's open descriptors.
pub const LIST: &str = "ls -l /proc/self/fd/";

/// Forks through the reactor a child that execs `sh -c 'ls -l
/// /proc/self/fd/'` with its output in a pipe; returns the output and the
/// child's id.
#[track_caller]
pub fn fork_exec_listing(reactor: &mut Reactor<Deaths>) -> (String, ChildId) {
    use std::ffi::CString;
    let (read, write) = pipe();
    // Everything the child needs, allocated before the fork.
    let args: Vec<CString> = ["sh", "-c", LIST]
        .iter()
        .map(|s| CString::new(*s).expect("no NUL"))
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let path = CString::new("/bin/sh").expect("no NUL");
    let write_fd = write.as_raw_fd();

    // SAFETY: the child only calls `dup2`, `execv` and `_exit`, which are
    // async-signal-safe, with memory allocated before the fork.
    match unsafe { reactor.fork(record) } {
        Ok(Forked::Child) => {
            // SAFETY: see above. `dup2` onto stdout clears FD_CLOEXEC on the
            // copy only; `argv` is a null-terminated array of C strings.
            unsafe {
                libc::dup2(write_fd, 1);
                libc::execv(path.as_ptr(), argv.as_ptr());
            }
            exit_child(127)
        }
        Ok(Forked::Parent(id)) => {
            drop(write);
            let mut out = String::new();
            std::fs::File::from(read)
                .read_to_string(&mut out)
                .expect("read listing");
            (out, id)
        }
        Err(e) => panic!("fork: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Shared values for callbacks, which must be `Send`
// ---------------------------------------------------------------------------

/// `Rc<Cell<T>>` for `Send` callbacks: a shared `Copy` value behind a lock.
#[derive(Debug, Default)]
pub struct Shared<T>(std::sync::Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(std::sync::Arc::clone(&self.0))
    }
}

impl<T: Copy> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(std::sync::Arc::new(Mutex::new(value)))
    }

    pub fn get(&self) -> T {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set(&self, value: T) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }
}
