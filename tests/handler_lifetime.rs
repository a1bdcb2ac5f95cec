//! The lifetime of evchild's `SIGCHLD` handler and of its registry, across
//! other code's `sigaction` calls and across `fork`:
//!
//! * after other code set `SIG_IGN` and then put `SIG_DFL` back, the next
//!   child started through a reactor gets evchild's handler back, so its
//!   exit wakes the reactor (the stale "installed" flag bug);
//! * once installed, the handler stays for the life of the process: a loop
//!   with one child in flight at a time installs nothing per child;
//! * a forked child starts with an empty registry (fork generation): the
//!   handler it inherits writes to none of the parent's descriptor numbers,
//!   and it may create a `LibraryAlways` reactor of its own after dropping
//!   its copy of the parent's; through `fork(3)` (the `pthread_atfork`
//!   handler) and through `Reactor::fork` with a raw `clone(2)` that
//!   bypasses it.
//!
//! Each test runs in its own process ([`util::isolated`]): they change the
//! `SIGCHLD` disposition, depend on what evchild installed before in the
//! process, and fork children that allocate (the re-executed process runs
//! one test, and libtest's main thread only waits in a channel receive, so
//! no other thread holds a lock at the fork).

#![warn(clippy::undocumented_unsafe_blocks)]

use evchild_testkit as util;

use std::os::fd::{AsRawFd, RawFd};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use evchild::{Claim, Exit, Forked, Hooks, Outcome, Pid, Reactor, SigchldOwner};
use nix::errno::Errno;
use util::{disposition, exited, fork_exit, fork_gated, readable_within, record, set_disposition};
use util::{Gate, ReapOnPanic, RestoreDefault};

const LIMIT: Duration = Duration::from_secs(30);

/// Dispatches `reactor` until `deaths` holds `n` reports, waiting for its
/// descriptor to become readable before each `dispatch`: no manual wake-up,
/// so every report was announced by a byte the handler wrote.
#[track_caller]
fn reports_by_wakeups<C: util::Record>(
    reactor: &mut Reactor<C>,
    ctx: &mut C,
    count: impl Fn(&C) -> usize,
    n: usize,
) {
    while count(ctx) < n {
        assert!(
            readable_within(reactor.as_raw_fd(), LIMIT),
            "no wake-up: {} of {n} reports",
            count(ctx)
        );
        reactor.dispatch(ctx).expect("dispatch");
    }
}

/// (a) evchild's handler is replaced by `SIG_IGN`, then `SIG_DFL` is put
/// back (as code that ignored `SIGCHLD` for a while does). A child started
/// afterwards, while the reactor still holds its registration (a child
/// started before is alive), must wake the reactor when it exits: starting
/// it reinstalled the handler. For both `SIGCHLD` backends and for
/// `LibraryAlways`.
#[test]
fn exit_wakes_the_reactor_after_sig_ign_then_sig_dfl() {
    if !util::isolated("exit_wakes_the_reactor_after_sig_ign_then_sig_dfl") {
        return;
    }
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let _restore = RestoreDefault;
        for backend in util::SIGCHLD_BACKENDS {
            let mut reactor = util::library_with::<Vec<Exit>>(backend);
            let mut deaths = Vec::new();
            let mut early_gate = Gate::new();
            let early = fork_gated(&mut reactor, &early_gate, 1, record);
            let ours = disposition();
            assert_ne!(ours.0, libc::SIG_DFL, "{backend:?}: no handler");

            set_disposition(libc::SIG_IGN, 0);
            set_disposition(libc::SIG_DFL, 0);
            let mut late_gate = Gate::new();
            let late = fork_gated(&mut reactor, &late_gate, 2, record);
            assert_eq!(disposition(), ours, "{backend:?}: handler not reinstalled");
            assert!(!readable_within(reactor.as_raw_fd(), Duration::ZERO));

            late_gate.open();
            reports_by_wakeups(&mut reactor, &mut deaths, Vec::len, 1);
            assert_eq!(deaths[0].id, late);
            assert_eq!(deaths[0].outcome, Outcome::Reaped(exited(2)));
            early_gate.open();
            reports_by_wakeups(&mut reactor, &mut deaths, Vec::len, 2);
            assert_eq!(deaths[1].id, early);
            assert_eq!(deaths[1].outcome, Outcome::Reaped(exited(1)));
            set_disposition(libc::SIG_DFL, 0);
        }

        // LibraryAlways holds its registration from `new`.
        let mut reactor =
            Reactor::<Vec<Exit>>::new(Hooks::new(SigchldOwner::LibraryAlways)).expect("new");
        let mut deaths = Vec::new();
        // `new` makes the descriptor readable (zombies that predate it);
        // there are none.
        reactor.dispatch(&mut deaths).expect("dispatch");
        assert!(deaths.is_empty());
        let ours = disposition();
        set_disposition(libc::SIG_IGN, 0);
        set_disposition(libc::SIG_DFL, 0);
        let mut gate = Gate::new();
        let id = fork_gated(&mut reactor, &gate, 3, record);
        assert_eq!(
            disposition(),
            ours,
            "LibraryAlways: handler not reinstalled"
        );
        assert!(!readable_within(reactor.as_raw_fd(), Duration::ZERO));
        gate.open();
        reports_by_wakeups(&mut reactor, &mut deaths, Vec::len, 1);
        assert_eq!(deaths[0].id, id);
        assert_eq!(deaths[0].outcome, Outcome::Reaped(exited(3)));
    }
    check.finish();
}

/// The current `SIGCHLD` action's mask holds `SIGUSR2`.
fn marked() -> bool {
    let action = util::sigchld_action();
    // SAFETY: `sa_mask` is an initialised `sigset_t` from the kernel;
    // sigismember only reads it.
    unsafe { libc::sigismember(&action.sa_mask, libc::SIGUSR2) == 1 }
}

/// (b) Once evchild installed its handler, it stays: reactors that go idle
/// (their last child reaped), are dropped, or take and give up
/// `LibraryAlways` install nothing and remove nothing. Checked two ways:
/// evchild's own count of `sigaction` installs does not move (its hidden
/// test counters), and a marker the test adds to the installed action
/// (`SIGUSR2` in its mask; the handler and flags stay evchild's) survives,
/// which any reinstall would erase. Each start still costs one query
/// (`sigaction(SIGCHLD, NULL, &cur)`), which changes nothing.
#[test]
fn handler_stays_installed_and_nothing_is_installed_per_child() {
    const CHILDREN: i32 = 20;
    if !util::isolated("handler_stays_installed_and_nothing_is_installed_per_child") {
        return;
    }
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let _restore = RestoreDefault;
        // The first child installs the handler.
        let (mut reactor, mut lp, mut deaths) =
            util::library_loop_with::<Vec<Exit>>(util::SIGCHLD_BACKENDS[0]);
        fork_exit(&mut reactor, 0, record);
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 1);
        let ours = disposition();
        assert_ne!(ours.0, libc::SIG_DFL);

        // Mark the installed action.
        let mut action = util::sigchld_action();
        // SAFETY: `sa_mask` is an initialised `sigset_t`; SIGUSR2 is valid.
        unsafe { libc::sigaddset(&mut action.sa_mask, libc::SIGUSR2) };
        util::restore_action(&action);
        assert!(marked());
        let installs = util::handler_use().map(|(installs, _)| installs);

        for backend in util::SIGCHLD_BACKENDS {
            let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Vec<Exit>>(backend);
            for code in 0..CHILDREN {
                // One child in flight at a time: every child takes the
                // registration and gives it back.
                let id = if code % 2 == 0 {
                    fork_exit(&mut reactor, code, record)
                } else {
                    let script = format!("exit {code}");
                    let mut command = Command::new("/bin/sh");
                    command.args(["-c", &script]).stdin(Stdio::null());
                    reactor.spawn(&mut command, record).expect("spawn").id
                };
                util::assert_registrations(1, "a child in flight");
                lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 1);
                let death = deaths.pop().expect("one report");
                assert_eq!(
                    (death.id, death.outcome),
                    (id, Outcome::Reaped(exited(code)))
                );
                assert!(reactor.is_empty());
                util::assert_no_registration("idle");
                assert_eq!(disposition(), ours, "{backend:?}: child {code}");
                assert!(marked(), "{backend:?}: child {code}: reinstalled");
            }
        }
        let always = Reactor::<Vec<Exit>>::new(Hooks::new(SigchldOwner::LibraryAlways));
        drop(always.expect("LibraryAlways"));
        drop((lp, reactor));
        assert_eq!(disposition(), ours, "after every reactor was dropped");
        assert!(marked(), "reinstalled or removed");
        if let (Some(before), Some((after, _))) = (installs, util::handler_use()) {
            assert_eq!(after, before, "sigaction installs in steady state");
        }
    }
    check.finish();
}

// ---------------------------------------------------------------------------
// (c) Forked children
// ---------------------------------------------------------------------------

/// The application's context: death reports and strangers (children the
/// `LibraryAlways` reactor reaped without having started them).
#[derive(Default)]
struct App {
    deaths: Vec<Exit>,
    strays: Vec<(Pid, ExitStatus)>,
}

impl util::Record for App {
    fn record(&mut self, exit: Exit) {
        self.deaths.push(exit);
    }
}

fn claim(app: &mut App, pid: Pid, status: ExitStatus) -> Claim {
    app.strays.push((pid, status));
    Claim::Claimed
}

// The forked child's exit code: one bit per check that failed.
const REGISTRY_INHERITED: i32 = 1;
const NO_HANDLER: i32 = 2;
const HANDLER_WROTE: i32 = 4;
const GRANDCHILD_FAILED: i32 = 8;
const NEW_ALWAYS_REFUSED: i32 = 16;
const NOT_WOKEN: i32 = 32;
const WRONG_REPORT: i32 = 64;
const SETUP_FAILED: i32 = 128;

fn describe(code: i32) -> Vec<&'static str> {
    [
        (REGISTRY_INHERITED, "the child inherited registrations"),
        (NO_HANDLER, "the child has no SIGCHLD handler"),
        (
            HANDLER_WROTE,
            "the inherited handler wrote to the parent's wake-pipe number",
        ),
        (GRANDCHILD_FAILED, "fork/waitpid of a grandchild failed"),
        (
            NEW_ALWAYS_REFUSED,
            "Reactor::new(LibraryAlways) was refused",
        ),
        (NOT_WOKEN, "the child's own reactor was not woken"),
        (WRONG_REPORT, "the child's own reactor reported wrongly"),
        (SETUP_FAILED, "pipe2 or dup2 failed"),
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

/// The write end of the wake pipe of the reactor created between `before`
/// and now: its only new descriptor opened write-only.
#[track_caller]
fn new_write_end(before: &std::collections::BTreeSet<RawFd>) -> RawFd {
    let ends: Vec<RawFd> = util::open_fds()
        .difference(before)
        .copied()
        // SAFETY: F_GETFL only reads the descriptor's flags.
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_ACCMODE == libc::O_WRONLY)
        .collect();
    assert_eq!(ends.len(), 1, "write ends among the reactor's descriptors");
    ends[0]
}

/// Whether the non-blocking `fd` has nothing to read.
fn empty(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: one live writable byte; read(2) touches nothing else.
    let rc = unsafe { libc::read(fd, std::ptr::addr_of_mut!(byte).cast(), 1) };
    rc == -1 && Errno::last() == Errno::EAGAIN
}

/// Runs in the forked child, which has one thread and whose parent's other
/// thread held no lock at the fork, so it may allocate. Returns the failed
/// checks as bits.
///
/// 1. The registry is empty (evchild's own count).
/// 2. A fresh pipe is put under the number of the parent's wake-pipe write
///    end (`dup2`), then the child gets two `SIGCHLD`s of its own (one sent
///    to itself, delivered before `kill` returns; one from a grandchild's
///    exit, delivered before `waitpid` returns): the inherited handler runs
///    and must write nothing there.
/// 3. The child drops its copy of the parent's `LibraryAlways` reactor and
///    creates its own, which must be granted and must be woken by its own
///    child's exit with the right report.
fn child_checks(inherited: Reactor<App>, write_end: RawFd) -> i32 {
    let mut failures = 0;
    if util::handler_use().is_some_and(|(_, registrations)| registrations != 0) {
        failures |= REGISTRY_INHERITED;
    }
    if util::sigchld_handler() == libc::SIG_DFL {
        failures |= NO_HANDLER;
    }
    let mut probe = [0; 2];
    // SAFETY: `probe` is a valid out-array of two descriptors.
    if unsafe { libc::pipe2(probe.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0
        // SAFETY: dup2 only changes this process's descriptor table; the
        // number it replaces is the child's copy of the parent's write end.
        || unsafe { libc::dup2(probe[1], write_end) } != write_end
    {
        return failures | SETUP_FAILED;
    }
    // SAFETY: kill(2) of this process with SIGCHLD, which is handled.
    unsafe { libc::kill(libc::getpid(), libc::SIGCHLD) };
    // SAFETY: the grandchild only calls `_exit`.
    let grandchild = unsafe { libc::fork() };
    if grandchild == 0 {
        util::exit_child(0);
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer. EINTR cannot happen: the
    // handler is installed with SA_RESTART.
    if grandchild < 0 || unsafe { libc::waitpid(grandchild, &mut status, 0) } != grandchild {
        failures |= GRANDCHILD_FAILED;
    }
    if !empty(probe[0]) {
        failures |= HANDLER_WROTE;
    }

    drop(inherited);
    let hooks = Hooks::new(SigchldOwner::LibraryAlways).unknown_child(claim);
    let mut own = match Reactor::new(hooks) {
        Ok(reactor) => reactor,
        Err(_) => return failures | NEW_ALWAYS_REFUSED,
    };
    let mut app = App::default();
    // SAFETY: this process has one thread; the grandchild only calls `_exit`.
    let id = match unsafe { own.fork(util::record) } {
        Ok(Forked::Child) => util::exit_child(9),
        Ok(Forked::Parent(id)) => id,
        Err(_) => return failures | GRANDCHILD_FAILED,
    };
    while app.deaths.is_empty() {
        if !readable_within(own.as_raw_fd(), LIMIT) {
            return failures | NOT_WOKEN;
        }
        if own.dispatch(&mut app).is_err() {
            return failures | WRONG_REPORT;
        }
    }
    let reported = &app.deaths[0];
    if reported.id != id || reported.outcome != Outcome::Reaped(exited(9)) {
        failures |= WRONG_REPORT;
    }
    if !empty(probe[0]) {
        failures |= HANDLER_WROTE;
    }
    failures
}

/// (c) A child forked with `fork(3)` (the `pthread_atfork` handler runs) from
/// a process with a `LibraryAlways` reactor: see [`child_checks`]. The parent
/// reaps it as a stranger and gets its verdict.
#[test]
fn forked_child_starts_with_an_empty_registry() {
    if !util::isolated("forked_child_starts_with_an_empty_registry") {
        return;
    }
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let before = util::open_fds();
        let hooks = Hooks::new(SigchldOwner::LibraryAlways).unknown_child(claim);
        let mut reactor = Reactor::new(hooks).expect("LibraryAlways");
        let write_end = new_write_end(&before);
        util::assert_registrations(1, "LibraryAlways");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();

        // SAFETY: the child runs `child_checks`, which allocates: allowed,
        // since the only other thread of this process (libtest's main
        // thread) holds no lock (see `util::isolated`).
        let child = match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => util::exit_child(child_checks(reactor, write_end)),
            nix::unistd::ForkResult::Parent { child } => Pid::from_raw(child.as_raw()),
        };
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| !app.strays.is_empty());
        assert_eq!(app.strays.len(), 1);
        assert_eq!(app.strays[0].0, child);
        assert_child_passed(app.strays[0].1);
        // The parent's registration is intact.
        util::assert_registrations(1, "the parent's LibraryAlways");
    }
    check.finish();
}

/// A raw `clone(2)` with `SIGCHLD` as exit signal: a fork that bypasses
/// `pthread_atfork` handlers. `Some(pid)` in the parent, `None` in the child.
///
/// # Safety
/// As `fork(2)`; moreover libc's per-thread data in the child still
/// describes the parent's thread: the child must not use `raise` or
/// anything else that trusts the cached thread id.
unsafe fn raw_clone() -> std::io::Result<Option<evchild::Pid>> {
    // SAFETY: clone(SIGCHLD) with no stack is fork(2) without libc's
    // bookkeeping; the caller upholds the rest.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(libc::SIGCHLD),
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    match rc {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as libc::pid_t))),
    }
}

/// (c) The same through `Reactor::fork` with a `fork_replacement` that forks
/// by raw `clone(2)`, so the `pthread_atfork` handler does not run:
/// `Reactor::fork` advances the generation itself. The child is the
/// reactor's own, so its verdict comes as a death report.
#[test]
fn raw_clone_through_reactor_fork_starts_with_an_empty_registry() {
    if !util::isolated("raw_clone_through_reactor_fork_starts_with_an_empty_registry") {
        return;
    }
    let check = util::Check::start();
    {
        let _reap = ReapOnPanic;
        let before = util::open_fds();
        let hooks = Hooks::new(SigchldOwner::LibraryAlways)
            .unknown_child(claim)
            // SAFETY: the child runs `child_checks`, which uses no cached
            // thread id (`kill(getpid())`, not `raise`) and may allocate (as
            // in `forked_child_starts_with_an_empty_registry`).
            .fork_replacement(|| unsafe { raw_clone() });
        let mut reactor = Reactor::new(hooks).expect("LibraryAlways");
        let write_end = new_write_end(&before);
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();

        // SAFETY: see the fork replacement above.
        let child = match unsafe { reactor.fork(util::record) }.expect("fork") {
            Forked::Child => util::exit_child(child_checks(reactor, write_end)),
            Forked::Parent(id) => id,
        };
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| !app.deaths.is_empty());
        assert!(app.strays.is_empty());
        assert_eq!(app.deaths[0].id, child);
        match app.deaths[0].outcome {
            Outcome::Reaped(status) => assert_child_passed(status),
            other => panic!("forked child: {other:?}"),
        }
        util::assert_registrations(1, "the parent's LibraryAlways");
    }
    check.finish();
}
