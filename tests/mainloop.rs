//! `Mainloop` mode: the application owns `SIGCHLD` and reaping, and tells
//! evchild about its children with `reaped` or `sigchld_occurred`.
//!
//! In its own binary: the tests install the application's own `SIGCHLD`
//! handler and reap with `waitpid(-1)`.

use evchild_testkit as util;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use evchild::{Error, Exit, Hooks, Outcome, Pid, Reactor, SigchldOwner};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use util::{
    exited, fork_gated, outcome_of, record, set_disposition, sh_exit, sigchld_handler, Gate,
};

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

impl util::Record for App {
    fn record(&mut self, exit: Exit) {
        self.deaths.push(exit);
    }
}

/// The application's set-up: its handler and self-pipe, then a `Mainloop`
/// reactor, and a loop that polls both. Bind them in this order, so the
/// handler is uninstalled last.
fn app_setup() -> (AppSignal, Reactor<App>, util::Loop) {
    let signal = AppSignal::install();
    let mut reactor = Reactor::new(Hooks::new(SigchldOwner::Mainloop)).expect("new");
    let lp = util::Loop::new(&mut reactor);
    lp.poll
        .registry()
        .register(
            &mut SourceFd(&signal.read.as_raw_fd()),
            APP,
            Interest::READABLE,
        )
        .expect("register self-pipe");
    (signal, reactor, lp)
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
/// own wake-up, drains the pipe and calls `on_sigchld`. Runs until `done`.
#[track_caller]
fn run_app_loop(
    lp: &mut util::Loop,
    reactor: &mut Reactor<App>,
    app: &mut App,
    signal: &AppSignal,
    mut on_sigchld: impl FnMut(&mut Reactor<App>, &mut App),
    done: impl Fn(&App) -> bool,
) {
    // The loop's `dispatch` is harmless in Mainloop mode.
    lp.run_with(
        reactor,
        app,
        LIMIT,
        |token, reactor, app| {
            if token == APP {
                signal.drain();
                on_sigchld(reactor, app);
            }
        },
        |_, app| done(app),
    );
}

#[test]
fn app_reaps_everything_and_reports_with_reaped() {
    let check = util::Check::start();
    {
        let (signal, mut reactor, mut lp) = app_setup();
        let mut app = App::default();

        let (mut g1, mut g2) = (Gate::new(), Gate::new());
        let p1 = fork_gated(&mut reactor, &g1, 4, record);
        let p2 = fork_gated(&mut reactor, &g2, 5, record);
        let theirs = Pid::from(sh_exit(3).id());
        assert_eq!(
            sigchld_handler(),
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

        assert_eq!(outcome_of(&app.deaths, p1), Outcome::Reaped(exited(4)));
        assert_eq!(outcome_of(&app.deaths, p2), Outcome::Reaped(exited(5)));
        assert_eq!(app.own, [(theirs, exited(3))]);
        assert!(reactor.is_empty());
        let stats = reactor.stats();
        assert_eq!(stats.reaped, 2);
        assert_eq!(stats.lost, 0);

        // A second report of the same pid is refused, and the pid is not
        // signalled any more.
        assert!(matches!(
            reactor.reaped(&mut app, p1.pid(), exited(4)),
            Err(Error::UnknownChild { pid }) if pid == p1.pid()
        ));
        assert_eq!(app.deaths.len(), 2);
        assert!(matches!(
            reactor.kill(p1, libc::SIGTERM),
            Err(Error::AlreadyReaped { pid }) if pid == p1.pid()
        ));
        assert_eq!(sigchld_handler(), app_handler_addr());
        drop(lp);
        drop(reactor);
        assert_eq!(
            sigchld_handler(),
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
        let (signal, mut reactor, mut lp) = app_setup();
        let mut app = App::default();

        let (mut g1, mut g2) = (Gate::new(), Gate::new());
        let p1 = fork_gated(&mut reactor, &g1, 0, record);
        let p2 = fork_gated(&mut reactor, &g2, 9, record);
        let mut theirs = Some(sh_exit(3));
        let their_pid = Pid::from(theirs.as_ref().map_or(0, Child::id));
        assert_eq!(
            sigchld_handler(),
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

        assert_eq!(outcome_of(&app.deaths, p1), Outcome::Reaped(exited(0)));
        assert_eq!(outcome_of(&app.deaths, p2), Outcome::Reaped(exited(9)));
        // std got its child's true status: evchild did not steal it.
        assert_eq!(app.own, [(their_pid, exited(3))]);
        assert_eq!(reactor.stats().reaped, 2);
        assert_eq!(reactor.stats().lost, 0);
        assert_eq!(sigchld_handler(), app_handler_addr());
    }
    check.finish();
}

#[test]
fn mode_checks_and_harmless_dispatch() {
    let check = util::Check::start();
    {
        // Library mode: evchild reaps; reports from the application are
        // refused.
        let mut library = Reactor::new(util::hooks(SigchldOwner::Library)).expect("new");
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
        let untouched = util::HandlerWatch::start();
        let mut reactor = Reactor::new(Hooks::new(SigchldOwner::Mainloop)).expect("new");
        let mut gate = Gate::new();
        let id = fork_gated(&mut reactor, &gate, 6, record);
        untouched.assert_untouched("Mainloop installs no handler");
        reactor.dispatch(&mut app).expect("dispatch is a no-op");
        assert!(reactor.contains(id));

        gate.open();
        util::wait_zombie(id.pid());
        reactor.dispatch(&mut app).expect("dispatch is a no-op");
        assert!(app.deaths.is_empty());
        assert!(reactor.contains(id));
        // The zombie is still there for the application to reap.
        assert!(util::has_exited(id.pid()), "zombie still waitable");

        reactor
            .sigchld_occurred(&mut app)
            .expect("sigchld_occurred");
        assert_eq!(app.deaths.len(), 1);
        assert_eq!(app.deaths[0].id, id);
        assert_eq!(app.deaths[0].outcome, Outcome::Reaped(exited(6)));
        assert_eq!(reactor.stats().reaped, 1);
        untouched.assert_untouched("Mainloop installs no handler");
    }
    check.finish();
}
