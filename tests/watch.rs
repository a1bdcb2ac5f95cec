//! `Reactor::watch`: adopting a child started elsewhere (here with
//! `std::process::Command`, whose `Child` is never waited for: the reactor
//! reaps it once watched, and dropping a `Child` neither waits nor kills),
//! and the pids it refuses.

use evchild_testkit as util;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::time::Duration;

use evchild::{Error, Exit, Pid};
use util::{assert_already_reaped, only_death, record, shell, Check, KillOnPanic};

const LIMIT: Duration = Duration::from_secs(30);

fn pid_of(child: &Child) -> Pid {
    Pid::from(child.id())
}

/// A child started with std and watched: its callback gets its exit code.
#[test]
fn watch_std_child_reports_its_code() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut deaths) = util::library_loop::<Vec<Exit>>();
    let child = shell("sleep 0.2; exit 5");
    let pid = pid_of(&child);
    drop(child); // never waited for by std
    let id = reactor.watch(pid, record).expect("watch");
    assert_eq!(id.pid(), pid);
    assert!(reactor.contains(id));
    assert_eq!(reactor.len(), 1);

    lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| !d.is_empty());
    assert_eq!(only_death(&deaths), (Some(5), None));
    assert_eq!(deaths[0].id, id);
    assert_eq!(deaths[0].id.pid(), pid);
    assert!(reactor.is_empty());

    drop((lp, reactor));
    check.finish();
}

/// A child that had already exited (a zombie) when it was watched: its
/// `SIGCHLD` came before any handler, yet the very next `dispatch`
/// reports it.
#[test]
fn watch_zombie_is_reported_by_next_dispatch() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library();
    let mut deaths = Vec::new();
    let child = shell("exit 9");
    let pid = pid_of(&child);
    drop(child);
    util::wait_zombie(pid);

    let id = reactor.watch(pid, record).expect("watch zombie");
    assert_eq!(reactor.len(), 1);
    reactor.dispatch(&mut deaths).expect("dispatch");
    assert_eq!(only_death(&deaths), (Some(9), None));
    assert_eq!(deaths[0].id, id);
    assert!(reactor.is_empty());
    util::assert_no_registration("not released");

    drop(reactor);
    check.finish();
}

/// Pids that are not unreaped children of this process: init, ourselves,
/// non-positive pids, and a child std already reaped. Each is refused with
/// `NotAChild`, registers nothing and leaves no handler installed.
#[test]
fn watch_refuses_what_is_not_our_child() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Vec<Exit>>();

    let mut reaped = shell("exit 0");
    let reaped_pid = pid_of(&reaped);
    assert!(reaped.wait().expect("std wait").success());

    let own = std::process::id() as libc::pid_t;
    for raw in [1, own, 0, -1, reaped_pid.as_raw()] {
        let pid = Pid::from_raw(raw);
        match reactor.watch(pid, record) {
            // No pid <= 0 or our own is ever probed or stored.
            Err(Error::InvalidPid { pid: refused }) if raw <= 0 || raw == own => {
                assert_eq!(refused, pid)
            }
            Err(Error::NotAChild { pid: refused }) if raw > 0 && raw != own => {
                assert_eq!(refused, pid)
            }
            other => panic!("watch({raw}): expected InvalidPid or NotAChild, got {other:?}"),
        }
        assert_eq!(reactor.len(), 0);
        util::assert_no_registration("failed watch");
    }

    drop(reactor);
    check.finish();
}

/// Watching a pid twice, or a pid the reactor spawned, is `AlreadyWatched`;
/// the child still gets exactly one callback.
#[test]
fn watch_twice_is_already_watched() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut deaths) = util::library_loop::<Vec<Exit>>();

    let child = shell("exec sleep 30");
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
    lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 2);
    // One more round: no second report may follow.
    reactor.dispatch(&mut deaths).expect("dispatch");
    assert_eq!(deaths.len(), 2, "{:?}", deaths);
    for exit in &deaths {
        assert_eq!(exit.status().expect("reaped").signal(), Some(libc::SIGKILL));
    }
    let mut ids: Vec<_> = deaths.iter().map(|e| e.id).collect();
    ids.sort();
    let mut expected = vec![id, spawned.id];
    expected.sort();
    assert_eq!(ids, expected);

    drop((lp, spawned, reactor));
    check.finish();
}

/// Once a watched child's death is reported, its id is refused by `kill`,
/// `terminate`, `kill_group` and `terminate_group` (`AlreadyReaped`), and
/// its pid by `watch` (`NotAChild`: it has been reaped).
#[test]
fn watched_child_after_reap_is_refused() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut deaths) = util::library_loop::<Vec<Exit>>();
    let child = shell("exit 2");
    let pid = pid_of(&child);
    drop(child);
    let id = reactor.watch(pid, record).expect("watch");
    lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| !d.is_empty());
    assert_eq!(only_death(&deaths), (Some(2), None));

    assert_already_reaped(reactor.kill(id, libc::SIGTERM), pid, "kill");
    let grace = Duration::from_secs(1);
    assert_already_reaped(reactor.terminate(id, grace), pid, "terminate");
    assert_eq!(
        reactor.timeout(),
        None,
        "a refused terminate set a deadline"
    );
    assert_already_reaped(reactor.kill_group(id, libc::SIGTERM), pid, "kill_group");
    let result = reactor.terminate_group(id, grace);
    assert_already_reaped(result, pid, "terminate_group");
    assert_eq!(
        reactor.timeout(),
        None,
        "a refused terminate_group set a deadline"
    );
    match reactor.watch(pid, record) {
        Err(Error::NotAChild { pid: refused }) => assert_eq!(refused, pid),
        other => panic!("watch: expected NotAChild, got {other:?}"),
    }
    assert!(reactor.is_empty());

    drop((lp, reactor));
    check.finish();
}
