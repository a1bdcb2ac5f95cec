//! `DropPolicy`: what dropping a reactor does to the children it still has.
//!
//! `Leave` and `Kill` leave children for someone else to reap, so those
//! tests reap them here (by pid, with `waitpid`), after checking what the
//! policy promised. `KillAndReap` promises no zombie at all.

use evchild_testkit as util;

use std::process::{Child, Command};
use std::sync::Arc as Rc;
use std::time::{Duration, Instant};

use evchild::{ChildId, DropPolicy, Exit, Pid, Reactor};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use util::{has_exited, reap_child, signaled, Check, KillOnPanic};

/// The reactors here have no context: no test dispatches, and dropped
/// children's callbacks never run.
type App = ();

/// Spawns `sleep 30` with a callback that holds a clone of `token` and
/// panics if it is ever called.
fn spawn_sleep(reactor: &mut Reactor<App>, token: &Rc<()>) -> ChildId {
    let token = Rc::clone(token);
    reactor
        .spawn(
            Command::new("sleep").arg("30"),
            move |_: &mut App, _: &mut Reactor<App>, exit: Exit| {
                let _keep = &token;
                panic!("callback of a dropped reactor ran: {exit:?}");
            },
        )
        .expect("spawn sleep")
        .id
}

/// `SIGKILL` to `pid`, outside the (dropped) reactor.
fn kill_pid(pid: Pid) {
    let pid = nix::unistd::Pid::from_raw(pid.as_raw());
    nix::sys::signal::kill(pid, Signal::SIGKILL).expect("kill");
}

/// Kills and reaps a std child the test owns.
fn kill_std(mut child: Child) {
    child.kill().expect("kill std child");
    child.wait().expect("wait std child");
}

/// Dispatches a fresh reactor until the orphan `pid` has been reaped (by
/// the process-wide orphan list, which any dispatch drains).
fn orphan_reaped_by_a_later_dispatch(pid: Pid) {
    let mut other = util::library::<App>();
    let mut app = ();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while util::is_our_child(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "orphan {pid} never reaped"
        );
        other.dispatch(&mut app).expect("dispatch");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `Leave` is the default: after the drop the child still runs, the
/// callback is dropped uncalled, and the handler is released. Once it dies
/// (here, killed by the test), a later dispatch of another reactor reaps
/// it: no zombie.
#[test]
fn leave_keeps_the_child_running() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let token = Rc::new(());
    let mut reactor = util::library::<App>();
    assert_eq!(reactor.drop_policy(), DropPolicy::Leave, "default policy");
    let id = spawn_sleep(&mut reactor, &token);
    assert!(!has_exited(id.pid()));

    drop(reactor);
    assert_eq!(Rc::strong_count(&token), 1, "callback not dropped");
    util::assert_no_registration("after drop");
    std::thread::sleep(Duration::from_millis(50));
    assert!(!has_exited(id.pid()), "Leave killed or lost the child");

    kill_pid(id.pid());
    orphan_reaped_by_a_later_dispatch(id.pid());
    check.finish();
}

/// `Leave` with a child that exits by itself after the drop: the orphan
/// list reaps it at a later dispatch, whatever the backend.
#[test]
fn leave_then_a_later_dispatch_reaps_the_orphan() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<App>();
    let id = reactor
        .spawn(&mut util::quiet_sh("sleep 0.1"), |_: &mut App, _, _| {
            panic!("callback of a dropped reactor ran")
        })
        .expect("spawn")
        .id;
    drop(reactor);
    util::wait_zombie(id.pid());
    orphan_reaped_by_a_later_dispatch(id.pid());
    check.finish();
}

/// `Kill` sends SIGKILL and does not wait: the child is left for us to
/// reap, killed by signal 9.
#[test]
fn kill_sends_sigkill_and_leaves_the_reap() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let token = Rc::new(());
    let mut reactor = util::library::<App>();
    reactor.set_drop_policy(DropPolicy::Kill);
    assert_eq!(reactor.drop_policy(), DropPolicy::Kill);
    let ids = [
        spawn_sleep(&mut reactor, &token),
        spawn_sleep(&mut reactor, &token),
    ];
    for id in ids {
        assert!(!has_exited(id.pid()));
    }

    drop(reactor);
    assert_eq!(Rc::strong_count(&token), 1, "callbacks not dropped");
    util::assert_no_registration("after drop");
    for id in ids {
        // Blocking waitpid succeeds: the drop did not reap.
        assert_eq!(reap_child(id.pid()), signaled(libc::SIGKILL));
    }
    check.finish();
}

/// `KillAndReap` kills and reaps every child before the drop returns: live
/// ones (one of which ignores SIGTERM, which SIGKILL does not care about)
/// and one that had already exited unreported. No zombie is left, and no
/// callback runs.
#[test]
fn kill_and_reap_leaves_no_zombie() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let token = Rc::new(());
    let mut reactor = util::library::<App>();
    reactor.set_drop_policy(DropPolicy::KillAndReap(Duration::from_secs(1)));

    let mut ids = vec![
        spawn_sleep(&mut reactor, &token),
        spawn_sleep(&mut reactor, &token),
    ];
    let keep = Rc::clone(&token);
    let trapping = reactor
        .spawn(
            Command::new("sh").args(["-c", "trap '' TERM; exec sleep 30"]),
            move |_: &mut App, _: &mut Reactor<App>, _: Exit| {
                let _keep = &keep;
                panic!("callback of a dropped reactor ran");
            },
        )
        .expect("spawn")
        .id;
    ids.push(trapping);
    for &id in &ids {
        assert!(!has_exited(id.pid()), "{id} not alive before the drop");
    }
    let exited = reactor
        .spawn(&mut Command::new("true"), |_: &mut App, _: &mut _, _| {
            panic!("callback of a dropped reactor ran")
        })
        .expect("spawn true")
        .id;
    util::wait_zombie(exited.pid());
    assert_eq!(reactor.len(), 4);

    let start = Instant::now();
    drop(reactor);
    let took = start.elapsed();
    util::assert_no_children();
    eprintln!("KillAndReap of 4 children took {took:?}");
    assert!(took < Duration::from_secs(5), "drop took {took:?}");
    assert_eq!(Rc::strong_count(&token), 1, "callbacks not dropped");
    util::assert_no_registration("after drop");
    check.finish();
}

/// Policies touch only the reactor's own children: a child started with
/// std is neither killed nor reaped by a `KillAndReap` drop.
#[test]
fn kill_and_reap_spares_other_children() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let token = Rc::new(());
    let stranger = Command::new("sleep").arg("30").spawn().expect("std spawn");
    let stranger_pid = Pid::from(stranger.id());
    let mut reactor = util::library::<App>();
    reactor.set_drop_policy(DropPolicy::KillAndReap(Duration::from_secs(1)));
    let id = spawn_sleep(&mut reactor, &token);

    drop(reactor);
    assert!(
        !has_exited(stranger_pid),
        "the stranger was killed or reaped"
    );
    match waitid(
        Id::Pid(nix::unistd::Pid::from_raw(id.pid().as_raw())),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
    ) {
        Err(nix::errno::Errno::ECHILD) => {}
        other => panic!("the reactor's child was not reaped: {other:?}"),
    }
    kill_std(stranger);
    check.finish();
}

/// A policy applies to the children still registered when the reactor is
/// dropped; changing it back to `Leave` before the drop leaves them alone.
#[test]
fn policy_is_read_at_drop() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let token = Rc::new(());
    let mut reactor = util::library::<App>();
    reactor.set_drop_policy(DropPolicy::KillAndReap(Duration::from_secs(1)));
    let id = spawn_sleep(&mut reactor, &token);
    reactor.set_drop_policy(DropPolicy::Leave);
    drop(reactor);
    assert!(!has_exited(id.pid()));
    kill_pid(id.pid());
    orphan_reaped_by_a_later_dispatch(id.pid());
    check.finish();
}
