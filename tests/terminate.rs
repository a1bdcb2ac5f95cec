//! `terminate` (SIGTERM now, SIGKILL after a grace period), `timeout`, and
//! `kill` before and after the reap.
//!
//! The loop here is the one `Reactor::timeout` documents: it passes
//! `timeout()` to `poll` and calls `dispatch` after every return of `poll`,
//! on an event or on time-out. Grace periods are checked loosely: a long
//! grace where the child is expected to obey, a lower bound only (and a
//! generous upper one) where it must be killed.

mod util;

use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evchild::{ChildId, Error, Exit, Hooks, Pid, Reactor, SigchldOwner};
use mio::unix::pipe::Receiver;
use mio::{Events, Interest, Poll, Token};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};

const LIMIT: Duration = Duration::from_secs(30);
/// Loose upper bound on how late an escalation to SIGKILL may come.
const LATE: Duration = Duration::from_secs(10);

const CHILDREN: Token = Token(0);

/// The application's context in these tests.
#[derive(Default)]
struct App {
    /// Death reports with the time each callback ran.
    deaths: Vec<(Exit, Instant)>,
}

fn record(app: &mut App, _: &mut Reactor<App>, exit: Exit) {
    app.deaths.push((exit, Instant::now()));
}

fn library() -> Reactor<App> {
    Reactor::new(Hooks::new(SigchldOwner::Library)).expect("Reactor::new")
}

/// The application's loop with timers: `poll` for at most `timeout()`,
/// then `dispatch`, whatever woke `poll`. Until `done`, or panics after
/// `LIMIT`.
fn run_timed(reactor: &mut Reactor<App>, app: &mut App, done: impl Fn(&App) -> bool) {
    let mut poll = Poll::new().expect("mio::Poll::new");
    poll.registry()
        .register(reactor, CHILDREN, Interest::READABLE)
        .expect("register reactor");
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + LIMIT;
    while !done(app) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for the loop");
        let wait = reactor.timeout().map_or(left, |t| t.min(left));
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("poll: {e}"),
        }
        reactor.dispatch(app).expect("dispatch");
    }
    poll.registry().deregister(reactor).expect("deregister");
}

/// The one report the test expects: its signal and when it was delivered.
#[track_caller]
fn only_death(app: &App, id: ChildId) -> (Option<i32>, Instant) {
    assert_eq!(app.deaths.len(), 1, "expected one death: {:?}", app.deaths);
    let (exit, at) = app.deaths[0];
    assert_eq!(exit.id, id);
    let status = exit.status().expect("reaped, not lost");
    assert_eq!(status.code(), None, "exited instead of being signalled");
    (status.signal(), at)
}

/// Reads from `pipe` until `want` has been seen, for at most `LIMIT`.
fn wait_for_output(pipe: &mut Receiver, want: &str) {
    const OUTPUT: Token = Token(1);
    let mut poll = Poll::new().expect("mio::Poll::new");
    poll.registry()
        .register(pipe, OUTPUT, Interest::READABLE)
        .expect("register pipe");
    let mut events = Events::with_capacity(4);
    let mut seen = Vec::new();
    let deadline = Instant::now() + LIMIT;
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains(want) {
        match pipe.read(&mut buf) {
            Ok(0) => panic!(
                "EOF before {want:?}; got {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "timed out waiting for {want:?}");
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
}

/// Starts a child that ignores SIGTERM, and returns once it does (so a
/// SIGTERM cannot reach the shell before its trap is set). `exec` leaves
/// no orphan `sleep` behind, and the ignored disposition survives it.
fn spawn_trapping(reactor: &mut Reactor<App>) -> ChildId {
    let mut spawned = reactor
        .spawn(
            Command::new("sh")
                .args(["-c", "trap '' TERM; echo ready; exec sleep 30"])
                .stdout(Stdio::piped()),
            record,
        )
        .expect("spawn trapping child");
    wait_for_output(spawned.stdout.as_mut().expect("stdout"), "ready\n");
    spawned.id
}

fn spawn_sleep(reactor: &mut Reactor<App>) -> ChildId {
    reactor
        .spawn(Command::new("sleep").arg("30"), record)
        .expect("spawn sleep")
        .id
}

/// Whether `pid` is still running (not even a zombie), asked without
/// reaping it.
fn running(pid: Pid) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw())), flags) {
        Ok(WaitStatus::StillAlive) => true,
        Ok(_) => false,
        Err(e) => panic!("waitid({pid}): {e}"),
    }
}

/// `timeout()` is `None` with no deadline: a new reactor, and one with a
/// live child that nobody asked to stop.
#[test]
fn timeout_is_none_without_deadlines() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    assert_eq!(reactor.timeout(), None);
    let id = spawn_sleep(&mut reactor);
    assert_eq!(reactor.timeout(), None);
    reactor.kill(id, libc::SIGKILL).expect("kill");
    run_timed(&mut reactor, &mut app, |app| !app.deaths.is_empty());
    assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));
    assert_eq!(reactor.timeout(), None);
    drop(reactor);
    check.finish();
}

/// A child that obeys SIGTERM dies of signal 15, long before a 10 s grace
/// would have run out; its deadline is gone with it.
#[test]
fn terminate_obeyed_reports_sigterm() {
    const GRACE: Duration = Duration::from_secs(10);
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let id = spawn_sleep(&mut reactor);

    let start = Instant::now();
    reactor.terminate(id, GRACE).expect("terminate");
    let timeout = reactor.timeout().expect("a deadline after terminate");
    assert!(timeout <= GRACE, "timeout {timeout:?} > grace {GRACE:?}");
    assert!(timeout > GRACE / 2, "timeout {timeout:?} far below grace");

    run_timed(&mut reactor, &mut app, |app| !app.deaths.is_empty());
    let (signal, at) = only_death(&app, id);
    let elapsed = at - start;
    eprintln!("SIGTERM obeyed after {elapsed:?}");
    assert_eq!(signal, Some(libc::SIGTERM));
    assert!(
        elapsed < GRACE,
        "reported after {elapsed:?}, not before the grace ran out"
    );
    assert_eq!(reactor.timeout(), None, "deadline outlived its child");
    assert!(reactor.is_empty());

    drop(reactor);
    check.finish();
}

/// A child that ignores SIGTERM is killed (signal 9) once the grace period
/// has run out, not before.
#[test]
fn terminate_trapped_escalates_to_sigkill() {
    const GRACE: Duration = Duration::from_millis(200);
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let id = spawn_trapping(&mut reactor);

    let start = Instant::now();
    reactor.terminate(id, GRACE).expect("terminate");
    let timeout = reactor.timeout().expect("a deadline after terminate");
    assert!(timeout <= GRACE, "timeout {timeout:?} > grace {GRACE:?}");

    run_timed(&mut reactor, &mut app, |app| !app.deaths.is_empty());
    let (signal, at) = only_death(&app, id);
    let elapsed = at - start;
    eprintln!("SIGKILL after a {GRACE:?} grace: reported after {elapsed:?}");
    assert_eq!(signal, Some(libc::SIGKILL));
    assert!(
        elapsed >= GRACE,
        "killed after {elapsed:?}, before the grace ran out"
    );
    assert!(elapsed < LATE, "killed only after {elapsed:?}");
    assert_eq!(reactor.timeout(), None);

    drop(reactor);
    check.finish();
}

/// The SIGKILL is sent by `dispatch`, not by a timer of its own: a child
/// whose deadline has passed lives on until the loop dispatches.
#[test]
fn deadline_is_fired_by_dispatch() {
    const GRACE: Duration = Duration::from_millis(50);
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let id = spawn_trapping(&mut reactor);

    reactor.terminate(id, GRACE).expect("terminate");
    std::thread::sleep(GRACE * 4);
    assert_eq!(
        reactor.timeout(),
        Some(Duration::ZERO),
        "a due deadline is zero"
    );
    assert!(
        running(id.pid()),
        "killed without a dispatch, or obeyed SIGTERM"
    );

    run_timed(&mut reactor, &mut app, |app| !app.deaths.is_empty());
    assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));
    assert_eq!(reactor.timeout(), None);

    drop(reactor);
    check.finish();
}

/// A zero grace: the deadline is due at once, and the first `dispatch`
/// sends SIGKILL.
#[test]
fn terminate_with_zero_grace_kills_at_first_dispatch() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let id = spawn_trapping(&mut reactor);

    reactor.terminate(id, Duration::ZERO).expect("terminate");
    assert_eq!(reactor.timeout(), Some(Duration::ZERO));
    reactor.dispatch(&mut app).expect("dispatch");
    assert_eq!(reactor.timeout(), None, "the due deadline was not consumed");
    run_timed(&mut reactor, &mut app, |app| !app.deaths.is_empty());
    assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));

    drop(reactor);
    check.finish();
}

/// A grace too long to represent never runs out: SIGTERM is sent, but no
/// deadline is set and no SIGKILL follows.
#[test]
fn terminate_with_endless_grace_sets_no_deadline() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let id = spawn_trapping(&mut reactor);

    reactor.terminate(id, Duration::MAX).expect("terminate");
    assert_eq!(reactor.timeout(), None);
    std::thread::sleep(Duration::from_millis(100));
    reactor.dispatch(&mut app).expect("dispatch");
    assert!(running(id.pid()), "SIGKILL sent, or SIGTERM not ignored");
    assert!(app.deaths.is_empty());

    reactor.kill(id, libc::SIGKILL).expect("kill");
    run_timed(&mut reactor, &mut app, |app| !app.deaths.is_empty());
    assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));

    drop(reactor);
    check.finish();
}

/// Terminating twice keeps both deadlines; the earlier one wins, and both
/// are gone once the child is.
#[test]
fn terminate_twice_earliest_deadline_wins() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let id = spawn_trapping(&mut reactor);

    let start = Instant::now();
    reactor
        .terminate(id, Duration::from_secs(30))
        .expect("terminate");
    reactor
        .terminate(id, Duration::from_millis(100))
        .expect("terminate again");
    let timeout = reactor.timeout().expect("deadline");
    assert!(timeout <= Duration::from_millis(100), "timeout {timeout:?}");

    run_timed(&mut reactor, &mut app, |app| !app.deaths.is_empty());
    let (signal, at) = only_death(&app, id);
    assert_eq!(signal, Some(libc::SIGKILL));
    let elapsed = at - start;
    assert!(
        elapsed >= Duration::from_millis(100) && elapsed < LATE,
        "{elapsed:?}"
    );
    assert_eq!(
        reactor.timeout(),
        None,
        "the 30 s deadline outlived the child"
    );

    drop(reactor);
    check.finish();
}

/// Deadlines of several children: each is killed at its own.
#[test]
fn terminate_several_children() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let trapping = spawn_trapping(&mut reactor);
    let obeying = spawn_sleep(&mut reactor);

    let start = Instant::now();
    reactor
        .terminate(trapping, Duration::from_millis(150))
        .expect("terminate");
    reactor
        .terminate(obeying, Duration::from_secs(20))
        .expect("terminate");
    run_timed(&mut reactor, &mut app, |app| app.deaths.len() == 2);
    for (exit, at) in &app.deaths {
        let signal = exit.status().expect("reaped").signal();
        if exit.id == trapping {
            assert_eq!(signal, Some(libc::SIGKILL));
            assert!(*at - start >= Duration::from_millis(150));
        } else {
            assert_eq!(exit.id, obeying);
            assert_eq!(signal, Some(libc::SIGTERM));
            assert!(*at - start < Duration::from_secs(20));
        }
    }
    assert_eq!(reactor.timeout(), None);

    drop(reactor);
    check.finish();
}

/// `kill` signals a live child (signal 0 only probes it); a bad signal
/// number is an `Io` error that sends nothing; after the reap, `kill`,
/// `terminate` and `kill_group` are refused with `AlreadyReaped`, and a
/// refused `terminate` sets no deadline.
#[test]
fn kill_after_reap_is_refused() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut app = App::default();
    let id = spawn_sleep(&mut reactor);

    reactor.kill(id, 0).expect("signal 0 to a live child");
    match reactor.kill(id, 12_345) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EINVAL), "{source}");
        }
        other => panic!("expected Io(EINVAL), got {other:?}"),
    }
    assert!(running(id.pid()));
    reactor.kill(id, libc::SIGUSR1).expect("kill");
    run_timed(&mut reactor, &mut app, |app| !app.deaths.is_empty());
    assert_eq!(only_death(&app, id).0, Some(libc::SIGUSR1));
    assert!(!reactor.contains(id));

    for signal in [libc::SIGKILL, 0] {
        match reactor.kill(id, signal) {
            Err(Error::AlreadyReaped { pid }) => assert_eq!(pid, id.pid()),
            other => panic!("kill({signal}): expected AlreadyReaped, got {other:?}"),
        }
    }
    match reactor.terminate(id, Duration::from_millis(10)) {
        Err(Error::AlreadyReaped { pid }) => assert_eq!(pid, id.pid()),
        other => panic!("terminate: expected AlreadyReaped, got {other:?}"),
    }
    assert_eq!(
        reactor.timeout(),
        None,
        "a refused terminate set a deadline"
    );
    match reactor.kill_group(id, libc::SIGKILL) {
        Err(Error::AlreadyReaped { pid }) => assert_eq!(pid, id.pid()),
        other => panic!("kill_group: expected AlreadyReaped, got {other:?}"),
    }

    drop(reactor);
    check.finish();
}

/// An id from another reactor is `UnknownChild` and signals nothing.
#[test]
fn kill_with_another_reactors_id_is_refused() {
    let check = util::Check::start();
    let mut reactor = library();
    let mut other = library();
    let mut app = App::default();
    let id = spawn_sleep(&mut reactor);
    for result in [
        other.kill(id, libc::SIGKILL),
        other.terminate(id, Duration::ZERO),
        other.kill_group(id, libc::SIGKILL),
    ] {
        match result {
            Err(Error::UnknownChild { pid }) => assert_eq!(pid, id.pid()),
            other => panic!("expected UnknownChild, got {other:?}"),
        }
    }
    assert_eq!(other.timeout(), None);
    assert!(running(id.pid()));
    drop(other);

    reactor.kill(id, libc::SIGKILL).expect("kill");
    run_timed(&mut reactor, &mut app, |app| !app.deaths.is_empty());
    assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));

    drop(reactor);
    check.finish();
}
