//! `Reactor::watch`: adopting a child started elsewhere (here with
//! `std::process::Command`, whose `Child` is never waited for), and the
//! pids it refuses.

mod util;

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::time::Duration;

use evchild::{Error, Exit, Hooks, Pid, Reactor, SigchldOwner};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};

const LIMIT: Duration = Duration::from_secs(30);

/// The application's context in these tests.
#[derive(Default)]
struct App {
    /// Death reports, in callback order.
    deaths: Vec<Exit>,
}

fn record(app: &mut App, _: &mut Reactor<App>, exit: Exit) {
    app.deaths.push(exit);
}

fn library() -> Reactor<App> {
    Reactor::new(Hooks::new(SigchldOwner::Library)).expect("Reactor::new")
}

/// Starts `sh -c script` with std. The returned `Child` must never be
/// waited for: the reactor reaps it once watched. (Dropping a `Child`
/// neither waits nor kills.)
fn std_child(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", script])
        .spawn()
        .expect("std spawn")
}

fn pid_of(child: &Child) -> Pid {
    Pid::from(child.id())
}

fn nix_pid(pid: Pid) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(pid.as_raw())
}

/// Blocks until `pid` has exited, without reaping it (`WNOWAIT`): it is a
/// zombie afterwards.
fn wait_until_zombie(pid: Pid) {
    loop {
        match waitid(
            Id::Pid(nix_pid(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => return,
            Err(nix::errno::Errno::EINTR) => continue,
            other => panic!("waitid(WNOWAIT) on {pid}: {other:?}"),
        }
    }
}

/// The current `SIGCHLD` disposition (`sa_sigaction`).
fn sigchld_disposition() -> libc::sighandler_t {
    // SAFETY: an all-zero `sigaction` is a valid value (no handler, empty
    // mask); the kernel overwrites it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only queries; `old` is valid and writable.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "sigaction: {}", io::Error::last_os_error());
    old.sa_sigaction
}

/// The one report the test expects, as `(code, signal)`.
#[track_caller]
fn only_death(app: &App) -> (Option<i32>, Option<i32>) {
    assert_eq!(app.deaths.len(), 1, "expected one death: {:?}", app.deaths);
    let status = app.deaths[0].status().expect("reaped, not lost");
    (status.code(), status.signal())
}

/// A child started with std and watched: its callback gets its exit code.
#[test]
fn watch_std_child_reports_its_code() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let child = std_child("sleep 0.2; exit 5");
    let pid = pid_of(&child);
    drop(child); // never waited for by std
    let id = reactor.watch(pid, record).expect("watch");
    assert_eq!(id.pid(), pid);
    assert!(reactor.contains(id));
    assert_eq!(reactor.len(), 1);

    let mut ev = util::Loop::new(&mut reactor);
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| !app.deaths.is_empty());
    assert_eq!(only_death(&app), (Some(5), None));
    assert_eq!(app.deaths[0].id, id);
    assert_eq!(app.deaths[0].pid, pid);
    assert!(reactor.is_empty());

    drop((ev, reactor));
    check.finish();
}

/// A child that had already exited (a zombie) when it was watched: its
/// `SIGCHLD` came before any handler, yet the very next `dispatch`
/// reports it.
#[test]
fn watch_zombie_is_reported_by_next_dispatch() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let child = std_child("exit 9");
    let pid = pid_of(&child);
    drop(child);
    wait_until_zombie(pid);

    let id = reactor.watch(pid, record).expect("watch zombie");
    assert_eq!(reactor.len(), 1);
    reactor.dispatch(&mut app).expect("dispatch");
    assert_eq!(only_death(&app), (Some(9), None));
    assert_eq!(app.deaths[0].id, id);
    assert!(reactor.is_empty());
    assert_eq!(sigchld_disposition(), libc::SIG_DFL, "handler not released");

    drop(reactor);
    check.finish();
}

/// Pids that are not unreaped children of this process: init, ourselves,
/// non-positive pids, and a child std already reaped. Each is refused with
/// `NotAChild`, registers nothing and leaves no handler installed.
#[test]
fn watch_refuses_what_is_not_our_child() {
    let check = util::Check::start();
    let mut reactor = library();

    let mut reaped = std_child("exit 0");
    let reaped_pid = pid_of(&reaped);
    assert!(reaped.wait().expect("std wait").success());

    for raw in [
        1,
        std::process::id() as libc::pid_t,
        0,
        -1,
        reaped_pid.as_raw(),
    ] {
        let pid = Pid::from_raw(raw);
        match reactor.watch(pid, record) {
            Err(Error::NotAChild { pid: refused }) => assert_eq!(refused, pid),
            other => panic!("watch({raw}): expected NotAChild, got {other:?}"),
        }
        assert_eq!(reactor.len(), 0);
        assert_eq!(
            sigchld_disposition(),
            libc::SIG_DFL,
            "handler left installed"
        );
    }

    drop(reactor);
    check.finish();
}

/// Watching a pid twice, or a pid the reactor spawned, is `AlreadyWatched`;
/// the child still gets exactly one callback.
#[test]
fn watch_twice_is_already_watched() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();

    let child = std_child("exec sleep 30");
    let pid = pid_of(&child);
    drop(child);
    let id = reactor.watch(pid, record).expect("watch");
    match reactor.watch(pid, record) {
        Err(Error::AlreadyWatched { pid: refused }) => assert_eq!(refused, pid),
        other => panic!("expected AlreadyWatched, got {other:?}"),
    }
    assert_eq!(reactor.len(), 1);
    assert!(reactor.contains(id), "the first registration was disturbed");

    let spawned = reactor
        .spawn(Command::new("sleep").arg("30"), record)
        .expect("spawn");
    match reactor.watch(spawned.id.pid(), record) {
        Err(Error::AlreadyWatched { pid: refused }) => assert_eq!(refused, spawned.id.pid()),
        other => panic!("expected AlreadyWatched, got {other:?}"),
    }
    assert_eq!(reactor.len(), 2);

    // A watched child can be signalled through the reactor.
    reactor.kill(id, libc::SIGKILL).expect("kill watched");
    reactor
        .kill(spawned.id, libc::SIGKILL)
        .expect("kill spawned");
    let mut ev = util::Loop::new(&mut reactor);
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| app.deaths.len() == 2);
    // One more round: no second report may follow.
    reactor.dispatch(&mut app).expect("dispatch");
    assert_eq!(app.deaths.len(), 2, "{:?}", app.deaths);
    for exit in &app.deaths {
        assert_eq!(exit.status().expect("reaped").signal(), Some(libc::SIGKILL));
    }
    let mut ids: Vec<_> = app.deaths.iter().map(|e| e.id).collect();
    ids.sort();
    let mut expected = vec![id, spawned.id];
    expected.sort();
    assert_eq!(ids, expected);

    drop((ev, spawned, reactor));
    check.finish();
}

/// Once a watched child's death is reported, its id is refused by `kill`,
/// `terminate` and `kill_group` (`AlreadyReaped`), and its pid by `watch`
/// (`NotAChild`: it has been reaped).
#[test]
fn watched_child_after_reap_is_refused() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let child = std_child("exit 2");
    let pid = pid_of(&child);
    drop(child);
    let id = reactor.watch(pid, record).expect("watch");
    let mut ev = util::Loop::new(&mut reactor);
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| !app.deaths.is_empty());
    assert_eq!(only_death(&app), (Some(2), None));

    match reactor.kill(id, libc::SIGTERM) {
        Err(Error::AlreadyReaped { pid: refused }) => assert_eq!(refused, pid),
        other => panic!("kill: expected AlreadyReaped, got {other:?}"),
    }
    match reactor.terminate(id, Duration::from_secs(1)) {
        Err(Error::AlreadyReaped { pid: refused }) => assert_eq!(refused, pid),
        other => panic!("terminate: expected AlreadyReaped, got {other:?}"),
    }
    assert_eq!(
        reactor.timeout(),
        None,
        "a refused terminate set a deadline"
    );
    match reactor.kill_group(id, libc::SIGTERM) {
        Err(Error::AlreadyReaped { pid: refused }) => assert_eq!(refused, pid),
        other => panic!("kill_group: expected AlreadyReaped, got {other:?}"),
    }
    match reactor.watch(pid, record) {
        Err(Error::NotAChild { pid: refused }) => assert_eq!(refused, pid),
        other => panic!("watch: expected NotAChild, got {other:?}"),
    }
    assert!(reactor.is_empty());

    drop((ev, reactor));
    check.finish();
}
