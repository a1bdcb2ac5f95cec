//! `terminate` (SIGTERM now, SIGKILL after a grace period), `timeout`, and
//! `kill` before and after the reap.
//!
//! The loop here (`util::Loop`) is the one `Reactor::timeout` documents: it passes
//! `timeout()` to `poll` and calls `dispatch` after every return of `poll`,
//! on an event or on time-out. Grace periods are checked loosely: a long
//! grace where the child is expected to obey, a lower bound only (and a
//! generous upper one) where it must be killed.

use evchild_testkit as util;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evchild::{ChildId, Error, Exit, Reactor};
use util::{
    assert_already_reaped, assert_deadline_within, assert_killed_after_grace, has_exited, record,
    Check, KillOnPanic, Loop, Record,
};

const LIMIT: Duration = Duration::from_secs(30);

/// The application's context in these tests.
#[derive(Default)]
struct App {
    /// Death reports with the time each callback ran.
    deaths: Vec<(Exit, Instant)>,
}

impl Record for App {
    fn record(&mut self, exit: Exit) {
        self.deaths.push((exit, Instant::now()));
    }
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

/// Runs the loop until the first death report.
#[track_caller]
fn run_until_death(lp: &mut Loop, reactor: &mut Reactor<App>, app: &mut App) {
    lp.run_until(reactor, app, LIMIT, |app| !app.deaths.is_empty());
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
    let stdout = spawned.stdout.as_mut().expect("stdout");
    assert_eq!(util::read_lines(stdout, 1, LIMIT), ["ready"]);
    spawned.id
}

fn spawn_sleep(reactor: &mut Reactor<App>) -> ChildId {
    reactor
        .spawn(Command::new("sleep").arg("30"), record)
        .expect("spawn sleep")
        .id
}

/// `timeout()` is `None` with no deadline: a new reactor, and one with a
/// live child that nobody asked to stop.
#[test]
fn timeout_is_none_without_deadlines() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    assert_eq!(reactor.timeout(), None);
    let id = spawn_sleep(&mut reactor);
    assert_eq!(reactor.timeout(), None);
    reactor.kill(id, libc::SIGKILL).expect("kill");
    run_until_death(&mut lp, &mut reactor, &mut app);
    assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));
    assert_eq!(reactor.timeout(), None);
    drop((lp, reactor));
    check.finish();
}

/// A child that obeys SIGTERM dies of signal 15, long before a 10 s grace
/// would have run out; its deadline is gone with it.
#[test]
fn terminate_obeyed_reports_sigterm() {
    const GRACE: Duration = Duration::from_secs(10);
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let id = spawn_sleep(&mut reactor);

    let start = Instant::now();
    reactor.terminate(id, GRACE).expect("terminate");
    let timeout = assert_deadline_within(&reactor, GRACE);
    assert!(timeout > GRACE / 2, "timeout {timeout:?} far below grace");

    run_until_death(&mut lp, &mut reactor, &mut app);
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

    drop((lp, reactor));
    check.finish();
}

/// A child that ignores SIGTERM is killed (signal 9) once the grace period
/// has run out, not before.
#[test]
fn terminate_trapped_escalates_to_sigkill() {
    const GRACE: Duration = Duration::from_millis(200);
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let id = spawn_trapping(&mut reactor);

    let start = Instant::now();
    reactor.terminate(id, GRACE).expect("terminate");
    assert_deadline_within(&reactor, GRACE);

    run_until_death(&mut lp, &mut reactor, &mut app);
    let (signal, at) = only_death(&app, id);
    let elapsed = at - start;
    eprintln!("SIGKILL after a {GRACE:?} grace: reported after {elapsed:?}");
    assert_eq!(signal, Some(libc::SIGKILL));
    assert_killed_after_grace(elapsed, GRACE);
    assert_eq!(reactor.timeout(), None);

    drop((lp, reactor));
    check.finish();
}

/// The SIGKILL is sent by `dispatch`, not by a timer of its own: a child
/// whose deadline has passed lives on until the loop dispatches.
#[test]
fn deadline_is_fired_by_dispatch() {
    const GRACE: Duration = Duration::from_millis(50);
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let id = spawn_trapping(&mut reactor);

    reactor.terminate(id, GRACE).expect("terminate");
    std::thread::sleep(GRACE * 4);
    assert_eq!(
        reactor.timeout(),
        Some(Duration::ZERO),
        "a due deadline is zero"
    );
    assert!(
        !has_exited(id.pid()),
        "killed without a dispatch, or obeyed SIGTERM"
    );

    run_until_death(&mut lp, &mut reactor, &mut app);
    assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));
    assert_eq!(reactor.timeout(), None);

    drop((lp, reactor));
    check.finish();
}

/// A zero grace: the deadline is due at once, and the first `dispatch`
/// sends SIGKILL.
#[test]
fn terminate_with_zero_grace_kills_at_first_dispatch() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let id = spawn_trapping(&mut reactor);

    reactor.terminate(id, Duration::ZERO).expect("terminate");
    assert_eq!(reactor.timeout(), Some(Duration::ZERO));
    reactor.dispatch(&mut app).expect("dispatch");
    assert_eq!(reactor.timeout(), None, "the due deadline was not consumed");
    run_until_death(&mut lp, &mut reactor, &mut app);
    assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));

    drop((lp, reactor));
    check.finish();
}

/// A grace too long to represent never runs out: SIGTERM is sent, but no
/// deadline is set and no SIGKILL follows.
#[test]
fn terminate_with_endless_grace_sets_no_deadline() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let id = spawn_trapping(&mut reactor);

    reactor.terminate(id, Duration::MAX).expect("terminate");
    assert_eq!(reactor.timeout(), None);
    std::thread::sleep(Duration::from_millis(100));
    reactor.dispatch(&mut app).expect("dispatch");
    assert!(
        !has_exited(id.pid()),
        "SIGKILL sent, or SIGTERM not ignored"
    );
    assert!(app.deaths.is_empty());

    reactor.kill(id, libc::SIGKILL).expect("kill");
    run_until_death(&mut lp, &mut reactor, &mut app);
    assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));

    drop((lp, reactor));
    check.finish();
}

/// Terminating twice keeps both deadlines; the earlier one wins, and both
/// are gone once the child is.
#[test]
fn terminate_twice_earliest_deadline_wins() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let id = spawn_trapping(&mut reactor);

    const GRACE: Duration = Duration::from_millis(100);
    let start = Instant::now();
    reactor
        .terminate(id, Duration::from_secs(30))
        .expect("terminate");
    reactor.terminate(id, GRACE).expect("terminate again");
    assert_deadline_within(&reactor, GRACE);

    run_until_death(&mut lp, &mut reactor, &mut app);
    let (signal, at) = only_death(&app, id);
    assert_eq!(signal, Some(libc::SIGKILL));
    assert_killed_after_grace(at - start, GRACE);
    assert_eq!(
        reactor.timeout(),
        None,
        "the 30 s deadline outlived the child"
    );

    drop((lp, reactor));
    check.finish();
}

/// Deadlines of several children: each is killed at its own.
#[test]
fn terminate_several_children() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let trapping = spawn_trapping(&mut reactor);
    let obeying = spawn_sleep(&mut reactor);

    let start = Instant::now();
    reactor
        .terminate(trapping, Duration::from_millis(150))
        .expect("terminate");
    reactor
        .terminate(obeying, Duration::from_secs(20))
        .expect("terminate");
    lp.run_until(&mut reactor, &mut app, LIMIT, |app| app.deaths.len() == 2);
    for (exit, at) in &app.deaths {
        let signal = exit.status().expect("reaped").signal();
        if exit.id == trapping {
            assert_eq!(signal, Some(libc::SIGKILL));
            assert_killed_after_grace(*at - start, Duration::from_millis(150));
        } else {
            assert_eq!(exit.id, obeying);
            assert_eq!(signal, Some(libc::SIGTERM));
            assert!(*at - start < Duration::from_secs(20));
        }
    }
    assert_eq!(reactor.timeout(), None);

    drop((lp, reactor));
    check.finish();
}

/// `kill` signals a live child (signal 0 only probes it); a bad signal
/// number is an `Io` error that sends nothing; after the reap, `kill`,
/// `terminate`, `kill_group` and `terminate_group` are refused with
/// `AlreadyReaped`, and a refused `terminate` or `terminate_group` sets no
/// deadline.
#[test]
fn kill_after_reap_is_refused() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let id = spawn_sleep(&mut reactor);

    reactor.kill(id, 0).expect("signal 0 to a live child");
    match reactor.kill(id, 12_345) {
        Err(Error::InvalidSignal { signal: 12_345 }) => {}
        other => panic!("expected InvalidSignal, got {other:?}"),
    }
    assert!(!has_exited(id.pid()));
    reactor.kill(id, libc::SIGUSR1).expect("kill");
    run_until_death(&mut lp, &mut reactor, &mut app);
    assert_eq!(only_death(&app, id).0, Some(libc::SIGUSR1));
    assert!(!reactor.contains(id));

    for signal in [libc::SIGKILL, 0] {
        let result = reactor.kill(id, signal);
        assert_already_reaped(result, id.pid(), &format!("kill({signal})"));
    }
    let grace = Duration::from_millis(10);
    assert_already_reaped(reactor.terminate(id, grace), id.pid(), "terminate");
    assert_eq!(
        reactor.timeout(),
        None,
        "a refused terminate set a deadline"
    );
    assert_already_reaped(
        reactor.kill_group(id, libc::SIGKILL),
        id.pid(),
        "kill_group",
    );
    let result = reactor.terminate_group(id, grace);
    assert_already_reaped(result, id.pid(), "terminate_group");
    assert_eq!(
        reactor.timeout(),
        None,
        "a refused terminate_group set a deadline"
    );

    drop((lp, reactor));
    check.finish();
}

/// An id from another reactor is `ForeignId` and signals nothing.
#[test]
fn kill_with_another_reactors_id_is_refused() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let mut other = util::library::<App>();
    let id = spawn_sleep(&mut reactor);
    for result in [
        other.kill(id, libc::SIGKILL),
        other.terminate(id, Duration::ZERO),
        other.kill_group(id, libc::SIGKILL),
        other.terminate_group(id, Duration::ZERO),
    ] {
        match result {
            Err(Error::ForeignId { id: foreign }) => assert_eq!(foreign, id),
            other => panic!("expected ForeignId, got {other:?}"),
        }
    }
    assert_eq!(other.timeout(), None);
    assert!(!has_exited(id.pid()));
    drop(other);

    reactor.kill(id, libc::SIGKILL).expect("kill");
    run_until_death(&mut lp, &mut reactor, &mut app);
    assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));

    drop((lp, reactor));
    check.finish();
}

/// The deadline wakes the reactor by itself: a loop that never asks for
/// `timeout()` (it polls with no limit) still gets the `SIGKILL` on time,
/// because the reactor's descriptor becomes readable when it is due.
#[test]
fn deadline_wakes_a_loop_that_ignores_timeout() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let mut reactor = util::library::<App>();
        let mut app = App::default();
        let mut poll = mio::Poll::new().expect("poll");
        poll.registry()
            .register(&mut reactor, mio::Token(0), mio::Interest::READABLE)
            .expect("register");
        let mut events = mio::Events::with_capacity(8);
        let id = reactor
            .spawn(&mut util::quiet_sh("trap '' TERM; sleep 30"), record)
            .expect("spawn")
            .id;
        // Let the shell set its trap before the SIGTERM.
        std::thread::sleep(Duration::from_millis(100));
        let grace = Duration::from_millis(200);
        let started = std::time::Instant::now();
        reactor.terminate(id, grace).expect("terminate");
        while reactor.contains(id) {
            assert!(started.elapsed() < Duration::from_secs(20), "never killed");
            // No limit: only the reactor's own readiness wakes us.
            match poll.poll(&mut events, None) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => other.expect("poll"),
            }
            reactor.dispatch(&mut app).expect("dispatch");
        }
        assert!(
            started.elapsed() >= grace,
            "killed before the grace ran out"
        );
        assert_eq!(only_death(&app, id).0, Some(libc::SIGKILL));
        drop(poll);
    }
    check.finish();
}
