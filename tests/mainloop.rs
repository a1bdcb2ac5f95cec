//! `Mainloop` mode: the application owns `SIGCHLD` and reaping, and tells
//! evchild about its children with `reaped` or `sigchld_occurred`.
//!
//! In its own binary: the tests install the application's own `SIGCHLD`
//! handler and reap with `waitpid(-1)`.

mod util;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use evchild::{Error, Exit, Forked, Hooks, Outcome, Pid, Reactor, SigchldOwner};
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitid, Id, WaitPidFlag};

const LIMIT: Duration = Duration::from_secs(30);
/// The application's own self-pipe, in the same `mio::Poll` as the reactor.
const APP: Token = Token(1);

/// The write end of the application's self-pipe, or -1.
static APP_PIPE: AtomicI32 = AtomicI32::new(-1);

/// The application's `SIGCHLD` handler. Async-signal-safe: it saves and
/// restores errno, loads an atomic and calls `write(2)` on a non-blocking
/// pipe (a full pipe is fine: the loop is already due).
extern "C" fn app_handler(_: libc::c_int) {
    let saved = Errno::last_raw();
    let fd = APP_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a live local;
        // `fd` stays open until after the handler is uninstalled.
        unsafe { libc::write(fd, std::ptr::addr_of!(byte).cast(), 1) };
    }
    Errno::set_raw(saved);
}

fn app_handler_addr() -> libc::sighandler_t {
    app_handler as extern "C" fn(libc::c_int) as libc::sighandler_t
}

/// Installs `handler` with `flags` as the `SIGCHLD` disposition.
fn set_disposition(handler: libc::sighandler_t, flags: libc::c_int) {
    // SAFETY: all-zero is a valid sigaction; the fields used are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler;
    action.sa_flags = flags;
    // SAFETY: `sa_mask` is a valid out-pointer.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialised; `handler` is SIG_DFL or an
    // `extern "C" fn(c_int)` (no SA_SIGINFO), as the kernel expects.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "sigaction(SIGCHLD)");
}

/// The current `SIGCHLD` handler address.
fn disposition() -> libc::sighandler_t {
    // SAFETY: all-zero is a valid sigaction; the kernel overwrites it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is a valid out-pointer.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "sigaction query");
    old.sa_sigaction
}

/// The application's side: its handler and self-pipe. Dropping it puts
/// `SIG_DFL` back before the pipe is closed.
struct AppSignal {
    read: OwnedFd,
    _write: OwnedFd,
}

impl AppSignal {
    fn install() -> Self {
        let flags = OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let (read, write) = nix::unistd::pipe2(flags).expect("pipe2");
        APP_PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
        set_disposition(app_handler_addr(), libc::SA_RESTART | libc::SA_NOCLDSTOP);
        AppSignal {
            read,
            _write: write,
        }
    }

    /// Empties the self-pipe (before reaping, so no signal is missed).
    fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) => unreachable!("we hold the write end"),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(e) => panic!("read(self-pipe): {e}"),
            }
        }
    }
}

impl Drop for AppSignal {
    fn drop(&mut self) {
        set_disposition(libc::SIG_DFL, 0);
        APP_PIPE.store(-1, Ordering::SeqCst);
    }
}

/// The application's context.
#[derive(Default)]
struct App {
    /// Death reports of evchild's children.
    deaths: Vec<Exit>,
    /// Statuses of the application's own children.
    own: Vec<(Pid, ExitStatus)>,
}

fn record(app: &mut App, _: &mut Reactor<App>, exit: Exit) {
    app.deaths.push(exit);
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

fn sh_exit(code: i32) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exit {code}"))
        .spawn()
        .expect("spawn /bin/sh")
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
fn fork_gated(reactor: &mut Reactor<App>, gate: &Gate, code: i32) -> Pid {
    let fd = gate.read.as_raw_fd();
    // SAFETY: the child only calls close(2), read(2) and _exit(2), which are
    // async-signal-safe.
    match unsafe { reactor.fork(record) }.expect("fork") {
        Forked::Child => wait_then_exit(fd, code),
        Forked::Parent(pid) => pid,
    }
}

/// `waitpid(-1, WNOHANG)`: the next exited child of the process.
fn reap_any() -> Option<(Pid, ExitStatus)> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable int.
        let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match rc {
            0 => return None,
            -1 => match Errno::last() {
                Errno::EINTR => continue,
                Errno::ECHILD => return None,
                e => panic!("waitpid(-1): {e}"),
            },
            pid => return Some((Pid::from_raw(pid), ExitStatus::from_raw(status))),
        }
    }
}

/// The application's loop: polls the reactor and its own self-pipe; on its
/// own wake-up, calls `on_sigchld`. Runs until `done`.
fn run_app_loop(
    lp: &mut util::Loop,
    reactor: &mut Reactor<App>,
    app: &mut App,
    signal: &AppSignal,
    mut on_sigchld: impl FnMut(&mut Reactor<App>, &mut App),
    done: impl Fn(&App) -> bool,
) {
    let deadline = Instant::now() + LIMIT;
    let mut events = Events::with_capacity(8);
    while !done(app) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for the loop");
        match lp.poll.poll(&mut events, Some(left)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        for event in &events {
            if event.token() == util::CHILDREN {
                // Harmless in Mainloop mode.
                reactor.dispatch(app).expect("dispatch");
            } else if event.token() == APP {
                signal.drain();
                on_sigchld(reactor, app);
            }
        }
    }
}

#[test]
fn app_reaps_everything_and_reports_with_reaped() {
    let check = util::Check::start();
    {
        let signal = AppSignal::install();
        let mut reactor = Reactor::new(Hooks::new(SigchldOwner::Mainloop)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        lp.poll
            .registry()
            .register(
                &mut SourceFd(&signal.read.as_raw_fd()),
                APP,
                Interest::READABLE,
            )
            .expect("register self-pipe");
        let mut app = App::default();

        let (mut g1, mut g2) = (Gate::new(), Gate::new());
        let p1 = fork_gated(&mut reactor, &g1, 4);
        let p2 = fork_gated(&mut reactor, &g2, 5);
        let theirs = Pid::from(sh_exit(3).id());
        assert_eq!(
            disposition(),
            app_handler_addr(),
            "evchild installs no handler"
        );
        g1.open();
        g2.open();

        run_app_loop(
            &mut lp,
            &mut reactor,
            &mut app,
            &signal,
            |reactor, app| {
                while let Some((pid, status)) = reap_any() {
                    match reactor.reaped(app, pid, status) {
                        Ok(()) => {}
                        Err(Error::UnknownChild { pid: p }) if p == pid => {
                            app.own.push((pid, status));
                        }
                        Err(e) => panic!("reaped({pid}): {e}"),
                    }
                }
            },
            |app| app.deaths.len() == 2 && app.own.len() == 1,
        );

        let outcome_of = |pid| {
            let found: Vec<_> = app.deaths.iter().filter(|e| e.pid == pid).collect();
            assert_eq!(found.len(), 1, "exactly one report for {pid}");
            found[0].outcome
        };
        assert_eq!(outcome_of(p1), Outcome::Reaped(exited(4)));
        assert_eq!(outcome_of(p2), Outcome::Reaped(exited(5)));
        assert_eq!(app.own, [(theirs, exited(3))]);
        assert!(reactor.is_empty());
        let stats = reactor.stats();
        assert_eq!(stats.reaped, 2);
        assert_eq!(stats.lost, 0);

        // A second report of the same pid is refused, and the pid is not
        // signalled any more.
        assert!(matches!(
            reactor.reaped(&mut app, p1, exited(4)),
            Err(Error::UnknownChild { pid }) if pid == p1
        ));
        assert_eq!(app.deaths.len(), 2);
        assert!(matches!(
            reactor.kill(p1, libc::SIGTERM),
            Err(Error::AlreadyReaped { pid }) if pid == p1
        ));
        assert_eq!(disposition(), app_handler_addr());
        drop(lp);
        drop(reactor);
        assert_eq!(
            disposition(),
            app_handler_addr(),
            "drop leaves the app's handler"
        );
    }
    check.finish();
}

#[test]
fn app_calls_sigchld_occurred_and_waits_for_its_own_child() {
    let check = util::Check::start();
    {
        let signal = AppSignal::install();
        let mut reactor = Reactor::new(Hooks::new(SigchldOwner::Mainloop)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        lp.poll
            .registry()
            .register(
                &mut SourceFd(&signal.read.as_raw_fd()),
                APP,
                Interest::READABLE,
            )
            .expect("register self-pipe");
        let mut app = App::default();

        let (mut g1, mut g2) = (Gate::new(), Gate::new());
        let p1 = fork_gated(&mut reactor, &g1, 0);
        let p2 = fork_gated(&mut reactor, &g2, 9);
        let mut theirs = Some(sh_exit(3));
        let their_pid = Pid::from(theirs.as_ref().map_or(0, Child::id));
        assert_eq!(
            disposition(),
            app_handler_addr(),
            "evchild installs no handler"
        );
        g1.open();
        g2.open();

        run_app_loop(
            &mut lp,
            &mut reactor,
            &mut app,
            &signal,
            |reactor, app| {
                // evchild reaps its own children, one pid at a time...
                reactor.sigchld_occurred(app).expect("sigchld_occurred");
                // ...and the application waits for its own with std.
                if let Some(child) = theirs.as_mut() {
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        app.own.push((their_pid, status));
                        theirs = None;
                    }
                }
            },
            |app| app.deaths.len() == 2 && app.own.len() == 1,
        );

        let outcome_of = |pid| {
            let found: Vec<_> = app.deaths.iter().filter(|e| e.pid == pid).collect();
            assert_eq!(found.len(), 1, "exactly one report for {pid}");
            found[0].outcome
        };
        assert_eq!(outcome_of(p1), Outcome::Reaped(exited(0)));
        assert_eq!(outcome_of(p2), Outcome::Reaped(exited(9)));
        // std got its child's true status: evchild did not steal it.
        assert_eq!(app.own, [(their_pid, exited(3))]);
        assert_eq!(reactor.stats().reaped, 2);
        assert_eq!(reactor.stats().lost, 0);
        assert_eq!(disposition(), app_handler_addr());
    }
    check.finish();
}

#[test]
fn mode_checks_and_harmless_dispatch() {
    let check = util::Check::start();
    {
        // Library mode: evchild reaps; reports from the application are
        // refused.
        let mut library = Reactor::new(Hooks::new(SigchldOwner::Library)).expect("new");
        let mut app = App::default();
        assert!(matches!(
            library.reaped(&mut app, Pid::from_raw(1), exited(0)),
            Err(Error::WrongMode {
                call: "reaped",
                mode: SigchldOwner::Library,
                ..
            })
        ));
        assert!(matches!(
            library.sigchld_occurred(&mut app),
            Err(Error::WrongMode {
                call: "sigchld_occurred",
                mode: SigchldOwner::Library,
                ..
            })
        ));
        drop(library);

        // Mainloop mode: evchild installs no handler, and dispatch reaps
        // nothing, even a child that has exited.
        assert_eq!(disposition(), libc::SIG_DFL);
        let mut reactor = Reactor::new(Hooks::new(SigchldOwner::Mainloop)).expect("new");
        let mut gate = Gate::new();
        let pid = fork_gated(&mut reactor, &gate, 6);
        assert_eq!(disposition(), libc::SIG_DFL, "Mainloop installs no handler");
        reactor.dispatch(&mut app).expect("dispatch is a no-op");
        assert!(reactor.contains(pid));

        gate.open();
        let raw = nix::unistd::Pid::from_raw(pid.as_raw());
        while let Err(Errno::EINTR) =
            waitid(Id::Pid(raw), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
        {}
        reactor.dispatch(&mut app).expect("dispatch is a no-op");
        assert!(app.deaths.is_empty());
        assert!(reactor.contains(pid));
        // The zombie is still there for the application to reap.
        let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let still = waitid(Id::Pid(raw), peek).expect("zombie still waitable");
        assert_eq!(still.pid(), Some(raw));

        reactor
            .sigchld_occurred(&mut app)
            .expect("sigchld_occurred");
        assert_eq!(app.deaths.len(), 1);
        assert_eq!(app.deaths[0].pid, pid);
        assert_eq!(app.deaths[0].outcome, Outcome::Reaped(exited(6)));
        assert_eq!(reactor.stats().reaped, 1);
        assert_eq!(disposition(), libc::SIG_DFL);
    }
    check.finish();
}
