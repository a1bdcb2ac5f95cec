//! `LibraryAlways`: one reactor reaps every child of the process.
//!
//! In its own binary: a `LibraryAlways` reactor reaps children that are not
//! its own (that is the point), so it must not share a process with tests
//! whose children it would steal.

mod util;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use evchild::{Claim, Error, Exit, Forked, Hooks, Outcome, Pid, Reactor, SigchldOwner, Stats};
use mio::Events;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitid, Id, WaitPidFlag};

const LIMIT: Duration = Duration::from_secs(30);

/// The application's context in these tests.
#[derive(Default)]
struct App {
    /// Death reports of our own children, in callback order.
    deaths: Vec<Exit>,
    /// What the unknown-child hook was given.
    strays: Vec<(Pid, ExitStatus)>,
}

fn record(app: &mut App, _: &mut Reactor<App>, exit: Exit) {
    app.deaths.push(exit);
}

fn claim(app: &mut App, pid: Pid, status: ExitStatus) -> Claim {
    app.strays.push((pid, status));
    Claim::Claimed
}

fn always() -> Hooks<App> {
    Hooks::new(SigchldOwner::LibraryAlways)
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

/// In a forked child: closes every descriptor but `gate` (so the child holds
/// no write end of any gate), waits for end-of-file on `gate`, exits with
/// `code`. Only `close(2)`, `read(2)` and `_exit(2)`: async-signal-safe.
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

fn sh_exit(code: i32) -> std::process::Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exit {code}"))
        .spawn()
        .expect("spawn /bin/sh")
}

/// Blocks until `pid` is a zombie, without reaping it.
fn wait_zombie(pid: u32) {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    loop {
        match waitid(Id::Pid(pid), flags) {
            Err(Errno::EINTR) => continue,
            other => {
                other.expect("waitid(WNOWAIT)");
                return;
            }
        }
    }
}

/// The current `SIGCHLD` handler address (`SIG_DFL`, `SIG_IGN` or a function).
fn disposition() -> libc::sighandler_t {
    // SAFETY: all-zero is a valid sigaction; the kernel overwrites it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is a valid out-pointer.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "sigaction query");
    old.sa_sigaction
}

/// Drives the loop until `done` holds of the reactor's counters.
fn run_until_stats(
    lp: &mut util::Loop,
    reactor: &mut Reactor<App>,
    app: &mut App,
    done: impl Fn(&Stats) -> bool,
) {
    let deadline = Instant::now() + LIMIT;
    let mut events = Events::with_capacity(8);
    while !done(&reactor.stats()) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out; stats {:?}", reactor.stats());
        match lp.poll.poll(&mut events, Some(left)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        if events.iter().any(|e| e.token() == util::CHILDREN) {
            reactor.dispatch(app).expect("dispatch");
        }
    }
}

#[test]
fn own_children_get_exact_statuses() {
    let check = util::Check::start();
    {
        let mut reactor = Reactor::new(always()).expect("new");
        assert_eq!(reactor.mode(), SigchldOwner::LibraryAlways);
        assert_ne!(disposition(), libc::SIG_DFL, "handler installed by new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();

        let (mut ga, mut gb, gc) = (Gate::new(), Gate::new(), Gate::new());
        let a = fork_gated(&mut reactor, &ga, 0);
        let b = fork_gated(&mut reactor, &gb, 7);
        let c = fork_gated(&mut reactor, &gc, 1);
        assert_eq!(reactor.len(), 3);
        assert!(reactor.contains(a) && reactor.contains(b) && reactor.contains(c));

        ga.open();
        gb.open();
        reactor.kill(c, libc::SIGTERM).expect("kill live child");
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| app.deaths.len() == 3);

        let status_of = |pid| {
            let found: Vec<_> = app.deaths.iter().filter(|e| e.pid == pid).collect();
            assert_eq!(found.len(), 1, "exactly one report for {pid}");
            found[0].outcome
        };
        assert_eq!(status_of(a), Outcome::Reaped(exited(0)));
        assert_eq!(status_of(b), Outcome::Reaped(exited(7)));
        assert_eq!(
            status_of(c),
            Outcome::Reaped(ExitStatus::from_raw(libc::SIGTERM))
        );
        assert!(app.strays.is_empty());
        assert!(reactor.is_empty());

        let stats = reactor.stats();
        assert_eq!(stats.reaped, 3);
        assert_eq!(stats.lost, 0);
        assert_eq!(stats.unknown_claimed, 0);
        assert_eq!(stats.unknown_unclaimed, 0);
        assert!(stats.dispatches >= 1);

        // A reaped child's pid has left the API.
        assert!(matches!(
            reactor.kill(a, libc::SIGTERM),
            Err(Error::AlreadyReaped { pid }) if pid == a
        ));
        // evchild reaps in this mode; the application must not report.
        assert!(matches!(
            reactor.reaped(&mut app, a, exited(0)),
            Err(Error::WrongMode {
                call: "reaped",
                mode: SigchldOwner::LibraryAlways,
                ..
            })
        ));
        assert!(matches!(
            reactor.sigchld_occurred(&mut app),
            Err(Error::WrongMode {
                call: "sigchld_occurred",
                mode: SigchldOwner::LibraryAlways,
                ..
            })
        ));
        // With no child left, the handler stays until the reactor is dropped.
        assert_ne!(disposition(), libc::SIG_DFL);
        drop(gc);
        drop(lp);
        drop(reactor);
        assert_eq!(disposition(), libc::SIG_DFL, "handler removed at drop");
    }
    check.finish();
}

#[test]
fn only_one_reap_all_owner_per_process() {
    let check = util::Check::start();
    {
        let first = Reactor::new(always()).expect("first LibraryAlways");
        assert!(matches!(Reactor::new(always()), Err(Error::ReapAllTaken)));

        let mut other = Reactor::new(Hooks::new(SigchldOwner::Library)).expect("Library");
        assert!(matches!(other.set_mode(always()), Err(Error::ReapAllTaken)));
        assert_eq!(
            other.mode(),
            SigchldOwner::Library,
            "failed set_mode changed nothing"
        );

        drop(first);
        // The handler belonged to `first` only; the refusals left no user.
        assert_eq!(disposition(), libc::SIG_DFL);

        other.set_mode(always()).expect("free again after drop");
        assert_eq!(other.mode(), SigchldOwner::LibraryAlways);
        assert!(matches!(Reactor::new(always()), Err(Error::ReapAllTaken)));
        // Asking again for the mode one already has is not a second owner.
        other.set_mode(always()).expect("LibraryAlways again");

        other
            .set_mode(Hooks::new(SigchldOwner::Library))
            .expect("give it up");
        assert_eq!(disposition(), libc::SIG_DFL);
        let again = Reactor::new(always()).expect("free after set_mode(Library)");
        drop(again);
        drop(other);
        assert_eq!(disposition(), libc::SIG_DFL);
    }
    check.finish();
}

#[test]
fn std_child_goes_to_unknown_hook_with_exact_status() {
    let check = util::Check::start();
    {
        let mut reactor = Reactor::new(always().unknown_child(claim)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();

        let child = sh_exit(3);
        let pid = Pid::from(child.id());
        // std's Child does not reap when dropped: the zombie is evchild's.
        drop(child);
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| !app.strays.is_empty());

        assert_eq!(app.strays, [(pid, exited(3))]);
        assert!(app.deaths.is_empty());
        let stats = reactor.stats();
        assert_eq!(stats.unknown_claimed, 1);
        assert_eq!(stats.unknown_unclaimed, 0);
        assert_eq!(stats.reaped, 0);
        assert_eq!(stats.lost, 0);
        // It was never ours: not ours to signal either.
        assert!(matches!(
            reactor.kill(pid, 0),
            Err(Error::UnknownChild { pid: p }) if p == pid
        ));
    }
    check.finish();
}

#[test]
fn declined_or_missing_hook_counts_unclaimed() {
    let check = util::Check::start();
    {
        let hooks = always().unknown_child(|app: &mut App, pid, status| {
            app.strays.push((pid, status));
            Claim::Declined
        });
        let mut reactor = Reactor::new(hooks).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();

        let pid = Pid::from(sh_exit(3).id());
        run_until_stats(&mut lp, &mut reactor, &mut app, |s| {
            s.unknown_unclaimed == 1
        });
        assert_eq!(app.strays, [(pid, exited(3))], "the hook saw it");
        assert_eq!(reactor.stats().unknown_claimed, 0);
    }
    {
        let mut reactor = Reactor::new(always()).expect("new, no hook");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();

        drop(sh_exit(4));
        run_until_stats(&mut lp, &mut reactor, &mut app, |s| {
            s.unknown_unclaimed == 1
        });
        let stats = reactor.stats();
        assert_eq!(stats.unknown_claimed, 0);
        assert_eq!(stats.reaped, 0);
        assert!(app.strays.is_empty() && app.deaths.is_empty());
    }
    check.finish();
}

#[test]
fn zombie_from_before_creation_is_collected_by_first_dispatch() {
    let check = util::Check::start();
    {
        let child = sh_exit(5);
        let pid = Pid::from(child.id());
        drop(child);
        wait_zombie(pid.as_raw() as u32);
        // Its SIGCHLD is long gone: only the reactor's own wake-up at
        // creation makes the loop look for it.
        let mut reactor = Reactor::new(always().unknown_child(claim)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| !app.strays.is_empty());

        assert_eq!(app.strays, [(pid, exited(5))]);
        assert_eq!(
            reactor.stats().dispatches,
            1,
            "collected by the first dispatch"
        );
        assert_eq!(reactor.stats().unknown_claimed, 1);
    }
    check.finish();
}

#[test]
fn set_mode_library_to_library_always_and_back() {
    let check = util::Check::start();
    {
        let mut reactor = Reactor::new(Hooks::new(SigchldOwner::Library)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();
        assert_eq!(
            disposition(),
            libc::SIG_DFL,
            "Library: no handler while idle"
        );

        // Library, with a live child: the mode cannot change.
        let mut g1 = Gate::new();
        let p1 = fork_gated(&mut reactor, &g1, 2);
        assert!(matches!(
            reactor.set_mode(always()),
            Err(Error::ChildrenActive { live: 1 })
        ));
        assert_eq!(reactor.mode(), SigchldOwner::Library);
        g1.open();
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| app.deaths.len() == 1);
        assert_eq!(app.deaths[0].pid, p1);
        assert_eq!(app.deaths[0].outcome, Outcome::Reaped(exited(2)));
        assert_eq!(disposition(), libc::SIG_DFL, "handler released when idle");

        // Library -> LibraryAlways: strangers now reach the hook.
        reactor
            .set_mode(always().unknown_child(claim))
            .expect("to LibraryAlways");
        assert_eq!(reactor.mode(), SigchldOwner::LibraryAlways);
        assert_ne!(disposition(), libc::SIG_DFL);
        assert!(matches!(Reactor::new(always()), Err(Error::ReapAllTaken)));
        let stray = Pid::from(sh_exit(3).id());
        let mut g2 = Gate::new();
        let p2 = fork_gated(&mut reactor, &g2, 4);
        g2.open();
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| {
            app.deaths.len() == 2 && app.strays.len() == 1
        });
        assert_eq!(app.strays, [(stray, exited(3))]);
        assert_eq!(app.deaths[1].pid, p2);
        assert_eq!(app.deaths[1].outcome, Outcome::Reaped(exited(4)));

        // LibraryAlways -> Library: the right to reap all is given back, and
        // a child of someone else is left to its owner.
        reactor
            .set_mode(Hooks::new(SigchldOwner::Library))
            .expect("back to Library");
        assert_eq!(reactor.mode(), SigchldOwner::Library);
        assert_eq!(disposition(), libc::SIG_DFL);
        drop(Reactor::new(always()).expect("LibraryAlways is free again"));
        let mut theirs = sh_exit(6);
        let mut g3 = Gate::new();
        let p3 = fork_gated(&mut reactor, &g3, 8);
        wait_zombie(theirs.id());
        g3.open();
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| app.deaths.len() == 3);
        assert_eq!(app.deaths[2].pid, p3);
        assert_eq!(app.deaths[2].outcome, Outcome::Reaped(exited(8)));
        assert_eq!(theirs.wait().expect("std reaps its own child"), exited(6));

        let stats = reactor.stats();
        assert_eq!(stats.reaped, 3);
        assert_eq!(stats.unknown_claimed, 1);
        assert_eq!(stats.unknown_unclaimed, 0);
        assert_eq!(stats.lost, 0);
    }
    check.finish();
}
