//! `kill_group` and `terminate_group`: signalling the process group a child
//! leads, so that its descendants die with it.
//!
//! In its own binary, because it changes the process: every test here makes
//! the test process a child subreaper (`PR_SET_CHILD_SUBREAPER`), so the
//! orphaned grandchildren of a killed child become our children instead of
//! init's, and a `LibraryAlways` reactor's unknown-child hook can collect
//! them and show how they died.

use evchild_testkit as util;

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use evchild::{ChildId, Claim, Error, Exit, Hooks, Pid, Reactor, SigchldOwner};
use util::{
    assert_already_reaped, assert_deadline_within, assert_killed_after_grace, record, Check,
    KillOnPanic, Loop, Record,
};

const LIMIT: Duration = Duration::from_secs(30);

/// The application's context in these tests.
#[derive(Default)]
struct App {
    /// Death reports of the reactor's own children.
    deaths: Vec<Exit>,
    /// What the unknown-child hook collected.
    strays: Vec<(Pid, ExitStatus)>,
    /// When the first report (a death or a stray) arrived.
    first_report: Option<Instant>,
}

impl App {
    fn note_report(&mut self) {
        self.first_report.get_or_insert_with(Instant::now);
    }
}

impl Record for App {
    fn record(&mut self, exit: Exit) {
        self.note_report();
        self.deaths.push(exit);
    }
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
            app.note_report();
            app.strays.push((pid, status));
            Claim::Claimed
        });
    Reactor::new(hooks).expect("Reactor::new(LibraryAlways)")
}

/// What every test starts with (after its [`Check`]): this process as a
/// subreaper, a [`reap_all`] reactor, a [`Loop`] around it, and an empty
/// context. Bind them in this order (they drop in reverse).
fn reap_all_loop() -> (Reactor<App>, Loop, App) {
    become_subreaper();
    let mut reactor = reap_all();
    let ev = Loop::new(&mut reactor);
    (reactor, ev, App::default())
}

/// Asserts that `result` is the refusal `NotAGroupLeader` for `id`.
#[track_caller]
fn assert_not_a_group_leader(result: evchild::Result<()>, id: ChildId) {
    match result {
        Err(Error::NotAGroupLeader { pid }) => assert_eq!(pid, id.pid()),
        other => panic!("expected NotAGroupLeader, got {other:?}"),
    }
}

/// Spawns `sh -c script` as the leader of a new process group, with stdout
/// piped, and reads the first `count` lines it prints, each a pid.
fn spawn_group(reactor: &mut Reactor<App>, script: &str, count: usize) -> (ChildId, Vec<Pid>) {
    let mut spawned = reactor
        .spawn(
            Command::new("sh")
                .args(["-c", script])
                .stdout(Stdio::piped())
                .process_group(0),
            record,
        )
        .expect("spawn sh");
    let pipe = spawned.stdout.as_mut().expect("stdout");
    let pids = util::read_lines(pipe, count, LIMIT)
        .iter()
        .map(|line| Pid::from_raw(line.parse().expect("a pid")))
        .collect();
    (spawned.id, pids)
}

/// Asserts that `pid` is in the process group that `id` leads.
#[track_caller]
fn assert_in_group(pid: Pid, id: ChildId) {
    let pgid =
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid.as_raw()))).expect("getpgid");
    assert_eq!(pgid.as_raw(), id.pid().as_raw(), "{pid} not in the group");
}

/// The strays, sorted by pid.
fn sorted_strays(app: &App) -> Vec<(Pid, ExitStatus)> {
    let mut strays = app.strays.clone();
    strays.sort_by_key(|&(pid, _)| pid);
    strays
}

/// A shell in its own process group with two background `sleep`s: one
/// `kill_group(SIGKILL)` kills all three. The shell's callback says signal
/// 9; the two sleeps, orphaned to us, reach the unknown-child hook, each
/// with signal 9. Afterwards the process has no child at all, and the
/// reaped leader's group can no longer be signalled through the reactor.
#[test]
fn kill_group_kills_grandchildren() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut ev, mut app) = reap_all_loop();
    // Both sleeps exist once their pids are printed.
    let (id, mut grandchildren) = spawn_group(
        &mut reactor,
        "sleep 30 & echo $!; sleep 30 & echo $!; wait",
        2,
    );
    grandchildren.sort();
    for &pid in &grandchildren {
        assert_in_group(pid, id);
    }

    reactor.kill_group(id, libc::SIGKILL).expect("kill_group");
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| {
        app.deaths.len() == 1 && app.strays.len() == 2
    });

    assert_eq!(app.deaths[0].id, id);
    let status = app.deaths[0].status().expect("reaped, not lost");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "shell: {status}");
    let strays = sorted_strays(&app);
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

    assert_already_reaped(
        reactor.kill_group(id, libc::SIGKILL),
        id.pid(),
        "kill_group",
    );

    drop((ev, reactor));
    check.finish();
}

/// A leader that has exited but whose death is not reported yet still
/// holds its group (a zombie keeps its pid and group id from being reused),
/// so `kill_group` is allowed and reaches the members it left behind.
#[test]
fn kill_group_of_an_exited_leader_before_its_report() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut ev, mut app) = reap_all_loop();
    let (id, members) = spawn_group(&mut reactor, "sleep 30 & echo $!", 1);
    // The shell exits 0 by itself; no dispatch until it is a zombie.
    util::wait_zombie(id.pid());
    assert!(reactor.contains(id));

    reactor.kill_group(id, libc::SIGKILL).expect("kill_group");
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| {
        app.deaths.len() == 1 && app.strays.len() == 1
    });
    assert_eq!(app.deaths[0].status().expect("reaped").code(), Some(0));
    assert_eq!(app.strays[0].0, members[0]);
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
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut ev, mut app) = reap_all_loop();
    let id = reactor
        .spawn(Command::new("sleep").arg("30"), record)
        .expect("spawn sleep")
        .id;
    assert_not_a_group_leader(reactor.kill_group(id, libc::SIGKILL), id);
    reactor.kill(id, 0).expect("still alive");
    assert!(reactor.contains(id));

    reactor.kill(id, libc::SIGKILL).expect("kill");
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
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut ev, mut app) = reap_all_loop();
    let (id, nested) = spawn_group(&mut reactor, "(sleep 30 & echo $!; wait) & wait", 1);

    reactor.kill_group(id, libc::SIGTERM).expect("kill_group");
    // The shell, plus the subshell and its sleep (both orphaned to us).
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| {
        app.deaths.len() == 1 && app.strays.len() == 2
    });
    assert_eq!(
        app.deaths[0].status().expect("reaped").signal(),
        Some(libc::SIGTERM)
    );
    assert!(
        app.strays.iter().any(|&(pid, _)| pid == nested[0]),
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

/// `terminate_group` on a group that obeys: `timeout()` is the grace at
/// most; the leader and its member die of the group's SIGTERM (15), long
/// before a 10 s grace runs out, and the deadline is gone with the leader.
#[test]
fn terminate_group_obeyed_reports_sigterm() {
    const GRACE: Duration = Duration::from_secs(10);
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut ev, mut app) = reap_all_loop();
    let (id, members) = spawn_group(&mut reactor, "sleep 30 & echo $!; wait", 1);
    assert_in_group(members[0], id);
    assert_eq!(reactor.timeout(), None);

    let started = Instant::now();
    reactor.terminate_group(id, GRACE).expect("terminate_group");
    let timeout = assert_deadline_within(&reactor, GRACE);
    assert!(timeout > GRACE / 2, "timeout {timeout:?} far below grace");

    ev.run_until(&mut reactor, &mut app, LIMIT, |app| {
        app.deaths.len() == 1 && app.strays.len() == 1
    });
    let elapsed = app.first_report.expect("reported") - started;
    eprintln!("group obeyed SIGTERM after {elapsed:?}");
    assert!(elapsed < GRACE, "reported after {elapsed:?}");
    assert_eq!(app.deaths[0].id, id);
    let status = app.deaths[0].status().expect("reaped, not lost");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "leader: {status}");
    assert_eq!(app.strays[0].0, members[0]);
    let status = app.strays[0].1;
    assert_eq!(status.signal(), Some(libc::SIGTERM), "member: {status}");
    assert_eq!(reactor.timeout(), None, "deadline outlived its leader");
    util::assert_no_children();

    drop((ev, reactor));
    check.finish();
}

/// `terminate_group` on a group whose leader and members all ignore SIGTERM
/// (`SIG_IGN` is inherited through fork and exec, and keeps the shell in its
/// `wait`): once the grace has run out, `dispatch` kills the whole group.
/// The leader's callback says signal 9, and so does the unknown-child hook
/// for both members, orphaned to us; none of them is reported before the
/// grace has run out.
#[test]
fn terminate_group_kills_a_group_that_ignores_sigterm() {
    const GRACE: Duration = Duration::from_millis(200);
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut ev, mut app) = reap_all_loop();
    // The trap is set before the first pid is printed.
    let (id, mut members) = spawn_group(
        &mut reactor,
        "trap '' TERM; sleep 30 & echo $!; sleep 30 & echo $!; wait",
        2,
    );
    members.sort();
    for &pid in &members {
        assert_in_group(pid, id);
    }

    let started = Instant::now();
    reactor.terminate_group(id, GRACE).expect("terminate_group");
    assert_deadline_within(&reactor, GRACE);

    ev.run_until(&mut reactor, &mut app, LIMIT, |app| {
        app.deaths.len() == 1 && app.strays.len() == 2
    });
    let elapsed = app.first_report.expect("reported") - started;
    eprintln!("group SIGKILLed after a {GRACE:?} grace: first report after {elapsed:?}");
    assert_killed_after_grace(elapsed, GRACE);
    assert_eq!(app.deaths[0].id, id);
    let status = app.deaths[0].status().expect("reaped, not lost");
    assert_eq!(status, util::signaled(libc::SIGKILL), "leader: {status}");
    let strays = sorted_strays(&app);
    let stray_pids: Vec<Pid> = strays.iter().map(|&(pid, _)| pid).collect();
    assert_eq!(stray_pids, members);
    for (pid, status) in &strays {
        assert_eq!(
            *status,
            util::signaled(libc::SIGKILL),
            "member {pid}: {status}"
        );
    }
    assert_eq!(reactor.timeout(), None);
    assert_eq!(reactor.stats().unknown_claimed, 2);
    util::assert_no_children();

    drop((ev, reactor));
    check.finish();
}

/// The limit of `terminate_group`: its SIGKILL is sent only while the leader
/// is alive. Here the leader obeys SIGTERM (signal 15) but its member
/// ignores it; the deadline goes with the leader, so once the grace has run
/// out nothing has killed the member, which is orphaned to us and still
/// running. Cleaning it up is the caller's business: the test kills it
/// itself, and the unknown-child hook collects it (signal 9).
#[test]
fn terminate_group_spares_members_once_the_leader_is_gone() {
    const GRACE: Duration = Duration::from_millis(300);
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut ev, mut app) = reap_all_loop();
    // The member prints its pid (`exec` keeps it) once its trap is set.
    let (id, members) = spawn_group(
        &mut reactor,
        r#"sh -c 'trap "" TERM; echo $$; exec sleep 30' & wait"#,
        1,
    );
    let member = members[0];
    assert_in_group(member, id);

    let started = Instant::now();
    reactor.terminate_group(id, GRACE).expect("terminate_group");
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| !app.deaths.is_empty());
    let status = app.deaths[0].status().expect("reaped, not lost");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "leader: {status}");
    assert_eq!(reactor.timeout(), None, "deadline outlived its leader");

    // Past the grace, a dispatch has nothing to fire: the member lives on.
    std::thread::sleep((started + 2 * GRACE).saturating_duration_since(Instant::now()));
    reactor.dispatch(&mut app).expect("dispatch");
    assert!(!util::has_exited(member), "the member was killed");
    assert!(app.strays.is_empty(), "strays: {:?}", app.strays);
    assert_already_reaped(
        reactor.kill_group(id, libc::SIGKILL),
        id.pid(),
        "kill_group",
    );

    let member_raw = nix::unistd::Pid::from_raw(member.as_raw());
    nix::sys::signal::kill(member_raw, nix::sys::signal::Signal::SIGKILL).expect("kill member");
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| !app.strays.is_empty());
    assert_eq!(app.strays, [(member, util::signaled(libc::SIGKILL))]);
    assert_eq!(app.deaths.len(), 1);
    util::assert_no_children();

    drop((ev, reactor));
    check.finish();
}

/// `terminate_group` is refused like `kill_group`, and a refusal sets no
/// deadline: `NotAGroupLeader` for a child in our own group (which is not
/// signalled), `AlreadyReaped` for a leader, and for that child, once
/// their deaths are reported.
#[test]
fn terminate_group_refusals_set_no_deadline() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut ev, mut app) = reap_all_loop();
    let member = reactor
        .spawn(Command::new("sleep").arg("30"), record)
        .expect("spawn sleep")
        .id;
    let leader = reactor
        .spawn(Command::new("sleep").arg("30").process_group(0), record)
        .expect("spawn sleep in its own group")
        .id;

    let result = reactor.terminate_group(member, Duration::from_millis(10));
    assert_not_a_group_leader(result, member);
    assert_eq!(
        reactor.timeout(),
        None,
        "a refused terminate_group set a deadline"
    );
    reactor.kill(member, 0).expect("still alive");
    assert!(!util::has_exited(member.pid()), "signalled by a refusal");

    reactor.kill(member, libc::SIGKILL).expect("kill");
    reactor
        .kill_group(leader, libc::SIGKILL)
        .expect("kill_group");
    ev.run_until(&mut reactor, &mut app, LIMIT, |app| app.deaths.len() == 2);
    for exit in &app.deaths {
        let status = exit.status().expect("reaped");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{}: {status}",
            exit.id
        );
    }
    for id in [leader, member] {
        assert_already_reaped(
            reactor.terminate_group(id, Duration::from_millis(10)),
            id.pid(),
            "terminate_group",
        );
        assert_eq!(
            reactor.timeout(),
            None,
            "a refused terminate_group set a deadline"
        );
    }
    assert!(app.strays.is_empty(), "strays: {:?}", app.strays);

    drop((ev, reactor));
    check.finish();
}
