//! `kill_group`: signalling the process group a child leads, so that its
//! descendants die with it.
//!
//! In its own binary, because it changes the process: every test here makes
//! the test process a child subreaper (`PR_SET_CHILD_SUBREAPER`), so the
//! orphaned grandchildren of a killed child become our children instead of
//! init's, and a `LibraryAlways` reactor's unknown-child hook can collect
//! them and show how they died.

mod util;

use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use evchild::{Claim, Error, Exit, Hooks, Pid, Reactor, SigchldOwner};
use mio::unix::pipe::Receiver;
use mio::{Events, Interest, Poll, Token};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};

const LIMIT: Duration = Duration::from_secs(30);

/// The application's context in these tests.
#[derive(Default)]
struct App {
    /// Death reports of the reactor's own children.
    deaths: Vec<Exit>,
    /// What the unknown-child hook collected.
    strays: Vec<(Pid, ExitStatus)>,
}

fn record(app: &mut App, _: &mut Reactor<App>, exit: Exit) {
    app.deaths.push(exit);
}

/// Makes this process a child subreaper, once for the whole binary.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes plain integers and touches no
        // memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "prctl: {}", io::Error::last_os_error());
    });
}

/// A reap-all reactor whose unknown-child hook keeps every stray.
fn reap_all() -> Reactor<App> {
    let hooks =
        Hooks::new(SigchldOwner::LibraryAlways).unknown_child(|app: &mut App, pid, status| {
            app.strays.push((pid, status));
            Claim::Claimed
        });
    Reactor::new(hooks).expect("Reactor::new(LibraryAlways)")
}

/// Reads whole lines from `pipe` until `count` have arrived, for at most
/// `LIMIT`.
fn read_lines(pipe: &mut Receiver, count: usize) -> Vec<String> {
    const OUTPUT: Token = Token(1);
    let mut poll = Poll::new().expect("mio::Poll::new");
    poll.registry()
        .register(pipe, OUTPUT, Interest::READABLE)
        .expect("register pipe");
    let mut events = Events::with_capacity(4);
    let mut seen = Vec::new();
    let deadline = Instant::now() + LIMIT;
    let mut buf = [0u8; 256];
    while seen.iter().filter(|&&b| b == b'\n').count() < count {
        match pipe.read(&mut buf) {
            Ok(0) => panic!("EOF after {:?}", String::from_utf8_lossy(&seen)),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "timed out waiting for {count} lines");
                match poll.poll(&mut events, Some(left)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("poll: {e}"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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

/// A shell in its own process group with two background `sleep`s: one
/// `kill_group(SIGKILL)` kills all three. The shell's callback says signal
/// 9; the two sleeps, orphaned to us, reach the unknown-child hook, each
/// with signal 9. Afterwards the process has no child at all, and the
/// reaped leader's group can no longer be signalled through the reactor.
#[test]
fn kill_group_kills_grandchildren() {
    let check = util::Check::start();
    become_subreaper();
    let mut reactor = reap_all();
    let mut app = App::default();
    let mut spawned = reactor
        .spawn(
            Command::new("sh")
                .args(["-c", "sleep 30 & echo $!; sleep 30 & echo $!; wait"])
                .stdout(Stdio::piped())
                .process_group(0),
            record,
        )
        .expect("spawn sh");
    let id = spawned.id;
    // Both sleeps exist once their pids are printed.
    let mut grandchildren: Vec<Pid> = read_lines(spawned.stdout.as_mut().expect("stdout"), 2)
        .iter()
        .map(|line| Pid::from_raw(line.parse().expect("a pid")))
        .collect();
    grandchildren.sort();
    drop(spawned);
    for &pid in &grandchildren {
        let pgid =
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid.as_raw()))).expect("getpgid");
        assert_eq!(pgid.as_raw(), id.pid().as_raw(), "{pid} not in the group");
    }

    reactor.kill_group(id, libc::SIGKILL).expect("kill_group");
    let mut ev = util::Loop::new(&mut reactor);
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| {
        app.deaths.len() == 1 && app.strays.len() == 2
    });

    assert_eq!(app.deaths[0].id, id);
    let status = app.deaths[0].status().expect("reaped, not lost");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "shell: {status}");
    let mut strays = app.strays.clone();
    strays.sort_by_key(|&(pid, _)| pid);
    let stray_pids: Vec<Pid> = strays.iter().map(|&(pid, _)| pid).collect();
    assert_eq!(stray_pids, grandchildren);
    for (pid, status) in &strays {
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "grandchild {pid}: {status}"
        );
    }
    assert_eq!(reactor.stats().unknown_claimed, 2);
    assert_eq!(reactor.stats().unknown_unclaimed, 0);
    util::assert_no_children();

    match reactor.kill_group(id, libc::SIGKILL) {
        Err(Error::AlreadyReaped { pid }) => assert_eq!(pid, id.pid()),
        other => panic!("kill_group after reap: expected AlreadyReaped, got {other:?}"),
    }

    drop((ev, reactor));
    check.finish();
}

/// A leader that has exited but whose death is not reported yet still
/// holds its group (a zombie keeps its pid and group id from being reused),
/// so `kill_group` is allowed and reaches the members it left behind.
#[test]
fn kill_group_of_an_exited_leader_before_its_report() {
    let check = util::Check::start();
    become_subreaper();
    let mut reactor = reap_all();
    let mut app = App::default();
    let mut spawned = reactor
        .spawn(
            Command::new("sh")
                .args(["-c", "sleep 30 & echo $!"])
                .stdout(Stdio::piped())
                .process_group(0),
            record,
        )
        .expect("spawn sh");
    let id = spawned.id;
    let member = Pid::from_raw(
        read_lines(spawned.stdout.as_mut().expect("stdout"), 1)[0]
            .parse()
            .expect("a pid"),
    );
    drop(spawned);
    // The shell exits 0 by itself; no dispatch until it is a zombie.
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    let sh = nix::unistd::Pid::from_raw(id.pid().as_raw());
    loop {
        match waitid(Id::Pid(sh), flags) {
            Ok(WaitStatus::Exited(_, 0)) => break,
            Err(nix::errno::Errno::EINTR) => {}
            other => panic!("waitid(WNOWAIT) on the shell: {other:?}"),
        }
    }
    assert!(reactor.contains(id));

    reactor.kill_group(id, libc::SIGKILL).expect("kill_group");
    let mut ev = util::Loop::new(&mut reactor);
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| {
        app.deaths.len() == 1 && app.strays.len() == 1
    });
    assert_eq!(app.deaths[0].status().expect("reaped").code(), Some(0));
    assert_eq!(app.strays[0].0, member);
    assert_eq!(app.strays[0].1.signal(), Some(libc::SIGKILL));
    util::assert_no_children();

    drop((ev, reactor));
    check.finish();
}

/// A child that shares our process group does not lead one: `kill_group`
/// is `NotAGroupLeader` and signals nothing (the child is still alive, and
/// so are we).
#[test]
fn kill_group_needs_a_group_leader() {
    let check = util::Check::start();
    become_subreaper();
    let mut reactor = reap_all();
    let mut app = App::default();
    let id = reactor
        .spawn(Command::new("sleep").arg("30"), record)
        .expect("spawn sleep")
        .id;
    match reactor.kill_group(id, libc::SIGKILL) {
        Err(Error::NotAGroupLeader { pid }) => assert_eq!(pid, id.pid()),
        other => panic!("expected NotAGroupLeader, got {other:?}"),
    }
    reactor.kill(id, 0).expect("still alive");
    assert!(reactor.contains(id));

    reactor.kill(id, libc::SIGKILL).expect("kill");
    let mut ev = util::Loop::new(&mut reactor);
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| !app.deaths.is_empty());
    assert_eq!(app.deaths.len(), 1);
    assert_eq!(
        app.deaths[0].status().expect("reaped").signal(),
        Some(libc::SIGKILL)
    );
    assert!(app.strays.is_empty(), "strays: {:?}", app.strays);

    drop((ev, reactor));
    check.finish();
}

/// `kill_group` with SIGTERM reaches the whole group too, however deep: the
/// leader, a subshell it started, and the subshell's own `sleep`, all by
/// signal 15.
#[test]
fn kill_group_sigterm_reaches_nested_members() {
    let check = util::Check::start();
    become_subreaper();
    let mut reactor = reap_all();
    let mut app = App::default();
    let mut spawned = reactor
        .spawn(
            Command::new("sh")
                .args(["-c", "(sleep 30 & echo $!; wait) & wait"])
                .stdout(Stdio::piped())
                .process_group(0),
            record,
        )
        .expect("spawn sh");
    let id = spawned.id;
    let nested: Pid = Pid::from_raw(
        read_lines(spawned.stdout.as_mut().expect("stdout"), 1)[0]
            .parse()
            .expect("a pid"),
    );
    drop(spawned);

    reactor.kill_group(id, libc::SIGTERM).expect("kill_group");
    let mut ev = util::Loop::new(&mut reactor);
    // The shell, plus the subshell and its sleep (both orphaned to us).
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| {
        app.deaths.len() == 1 && app.strays.len() == 2
    });
    assert_eq!(
        app.deaths[0].status().expect("reaped").signal(),
        Some(libc::SIGTERM)
    );
    assert!(
        app.strays.iter().any(|&(pid, _)| pid == nested),
        "{:?}",
        app.strays
    );
    for (pid, status) in &app.strays {
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{pid}: {status}");
    }
    util::assert_no_children();

    drop((ev, reactor));
    check.finish();
}
