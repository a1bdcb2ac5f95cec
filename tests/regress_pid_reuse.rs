//! Issue 7, cases 3 and 4: a registered child A is reaped by other code
//! against the contract (here: the test's own `waitpid(A)`), and the kernel
//! gives A's pid to a new child B of the process (forced through
//! `/proc/sys/kernel/ns_last_pid`: as root, or else with the test alone in a
//! new user and pid namespace, see `evchild_testkit::pid_reuse`). Whatever the reactor does for A
//! afterwards must not touch B:
//!
//! * the `Pidfd` backend knows A is gone (its pidfd says so): A is reported
//!   `Lost`, exactly once and promptly, and B's status stays B's owner's;
//! * no backend's `terminate` deadline, nor `DropPolicy::Kill` /
//!   `KillAndReap`, sends B a `SIGKILL` meant for A.
//!
//! This file forces pid reuse, so it holds nothing else. Skips, visibly
//! (`evchild_testkit::skip!`), where pids cannot be forced.

use evchild_testkit as util;

use std::process::Child;
use std::time::{Duration, Instant};

use evchild::{Backend, ChildId, DropPolicy, Outcome, Pid, Reactor};
use util::{
    exited, force_pids_or_skip, pidfd_or_skip, proc_state, reap_child, record, signaled,
    spawn_with_pid, wait_zombie, Check, Deaths, KillOnPanic,
};

/// Registers A (`sleep 30`) with `reactor`.
fn spawn_a(reactor: &mut Reactor<Deaths>) -> ChildId {
    reactor
        .spawn(&mut util::quiet_sh("exec sleep 30"), record)
        .expect("spawn A")
        .id
}

/// Starts B (`script`) under A's freed pid; `None` (after a skip line) if
/// another process of the machine kept taking it.
fn b_under(a: ChildId, script: &str) -> Option<Child> {
    let b = spawn_with_pid(&mut util::quiet_sh(script), a.pid().as_raw());
    if b.is_none() {
        util::skip!("could not get pid {} again for B", a.pid());
    }
    b
}

/// Whether B is still running, and stays so for a while (a `SIGKILL` sent
/// to it is not acted on at once): not reaped by anyone, not a zombie.
fn alive(b: &mut Child) -> Result<(), String> {
    for _ in 0..30 {
        alive_now(b)?;
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn alive_now(b: &mut Child) -> Result<(), String> {
    match b.try_wait() {
        Ok(None) => match proc_state(b.id() as libc::pid_t) {
            Some('Z') | None => Err(format!("B ({}) is dead: a zombie", b.id())),
            Some(_) => Ok(()),
        },
        Ok(Some(status)) => Err(format!("B ({}) was killed: {status}", b.id())),
        Err(e) => Err(format!(
            "B ({}) was killed and reaped by someone else: try_wait: {e}",
            b.id()
        )),
    }
}

/// Waits for the reactor (at most 20 ms at a time, and no later than its
/// next deadline) and dispatches, for `span`, whatever happens.
fn run_for(reactor: &mut Reactor<Deaths>, deaths: &mut Deaths, span: Duration) {
    let end = Instant::now() + span;
    while Instant::now() < end {
        let nap = reactor.timeout().map_or(Duration::from_millis(20), |t| {
            t.min(Duration::from_millis(20))
        });
        let _ = util::readable_within(std::os::fd::AsRawFd::as_raw_fd(reactor), nap);
        reactor.dispatch(deaths).expect("dispatch");
    }
}

/// A's reports so far.
fn reports(deaths: &Deaths, a: ChildId) -> Vec<Outcome> {
    deaths.seen.get(&a).cloned().unwrap_or_default()
}

/// Ends B ourselves and checks we get its status: nobody else reaped it.
#[track_caller]
fn kill_and_wait(mut b: Child) {
    let _ = b.kill();
    let status = b.wait().expect("wait for B");
    assert_eq!(status, signaled(libc::SIGKILL), "B's status");
}

// ---------------------------------------------------------------------------
// Case 3: the Pidfd backend reaps by pid
// ---------------------------------------------------------------------------

#[test]
fn pidfd_child_stolen_then_pid_reused_by_an_exited_child_is_lost() {
    if !force_pids_or_skip("pidfd_child_stolen_then_pid_reused_by_an_exited_child_is_lost") {
        return;
    }
    let check = Check::start();
    let _kill = KillOnPanic;
    if !pidfd_or_skip("pid reuse, B exited") {
        return check.finish();
    }
    let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(Backend::Pidfd);
    let a = reactor
        .spawn(&mut util::quiet_sh("exit 0"), record)
        .expect("spawn A")
        .id;
    // Other code takes A, against the contract.
    assert_eq!(reap_child(a.pid()), exited(0), "A's status");
    let Some(mut b) = b_under(a, "exit 7") else {
        drop((reactor, lp));
        return check.finish();
    };
    // B has exited too: a zombie under A's old pid, for B's owner to reap.
    wait_zombie(Pid::from(b.id()));

    lp.run_until(&mut reactor, &mut deaths, Duration::from_secs(3), |d| {
        d.total() > 0
    });
    for _ in 0..3 {
        reactor.dispatch(&mut deaths).expect("dispatch");
    }
    let b_status = b.try_wait();
    assert_eq!(
        reports(&deaths, a),
        [Outcome::Lost],
        "A must be reported Lost, once (B's status is not A's); B: try_wait = {b_status:?}"
    );
    assert!(
        matches!(b_status, Ok(Some(s)) if s == exited(7)),
        "B's status must stay B's owner's: try_wait = {b_status:?}"
    );
    drop((reactor, lp));
    check.finish();
}

#[test]
fn pidfd_child_stolen_then_pid_reused_by_a_running_child_is_lost_promptly() {
    if !force_pids_or_skip("pidfd_child_stolen_then_pid_reused_by_a_running_child_is_lost_promptly")
    {
        return;
    }
    let check = Check::start();
    let _kill = KillOnPanic;
    if !pidfd_or_skip("pid reuse, B running") {
        return check.finish();
    }
    let mut reactor = util::library_with::<Deaths>(Backend::Pidfd);
    let mut deaths = Deaths::default();
    let a = reactor
        .spawn(&mut util::quiet_sh("exit 0"), record)
        .expect("spawn A")
        .id;
    assert_eq!(reap_child(a.pid()), exited(0), "A's status");
    let Some(mut b) = b_under(a, "exec sleep 30") else {
        drop(reactor);
        return check.finish();
    };

    // Within a few dispatches (each after a wait of at most 50 ms): a count
    // of rounds, not a time, so the machine's speed does not matter.
    let start = Instant::now();
    let mut rounds = 0;
    while deaths.total() == 0 && rounds < 20 {
        let _ = util::readable_within(
            std::os::fd::AsRawFd::as_raw_fd(&reactor),
            Duration::from_millis(50),
        );
        reactor.dispatch(&mut deaths).expect("dispatch");
        rounds += 1;
    }
    // And no second report.
    for _ in 0..3 {
        reactor.dispatch(&mut deaths).expect("dispatch");
    }
    let b_alive = alive(&mut b);
    assert_eq!(
        reports(&deaths, a),
        [Outcome::Lost],
        "A must be reported Lost within a few dispatches ({rounds} rounds, {:?}), while B \
         (same pid) runs on; B: {b_alive:?}",
        start.elapsed()
    );
    assert_eq!(b_alive, Ok(()), "B must be untouched");
    kill_and_wait(b);
    drop(reactor);
    check.finish();
}

// ---------------------------------------------------------------------------
// Case 4: deadlines and the drop policy signal by pid
// ---------------------------------------------------------------------------

#[test]
fn terminate_deadline_never_kills_the_new_owner_of_a_stolen_pid_pidfd() {
    if !force_pids_or_skip("terminate_deadline_never_kills_the_new_owner_of_a_stolen_pid_pidfd") {
        return;
    }
    let check = Check::start();
    let _kill = KillOnPanic;
    if pidfd_or_skip("terminate deadline") {
        terminate_deadline_case(&[Backend::Pidfd]);
    }
    check.finish();
}

// Peek and Scan name a child by pid alone: with the contract broken (other
// code reaped A) and the pid given to B, a per-pid signal reaches B. That is
// the window the crate docs (*Identity*) document; only a pidfd closes it,
// so the cases above run with the Pidfd backend only.

fn terminate_deadline_case(backends: &[Backend]) {
    let mut problems = Vec::new();
    for &backend in backends {
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(backend);
        let a = spawn_a(&mut reactor);
        let grace = Duration::from_millis(300);
        reactor.terminate(a, grace).expect("terminate A");
        let terminated = Instant::now();
        // A obeys the SIGTERM, and other code reaps it before any dispatch.
        assert_eq!(reap_child(a.pid()), signaled(libc::SIGTERM), "A's status");
        let Some(mut b) = b_under(a, "exec sleep 30") else {
            drop((reactor, lp));
            continue;
        };
        // Well past A's deadline.
        run_for(
            &mut reactor,
            &mut deaths,
            (grace + Duration::from_millis(500)).saturating_sub(terminated.elapsed()),
        );
        if let Err(e) = alive(&mut b) {
            problems.push(format!(
                "{backend:?}: A's terminate deadline killed B, which has A's old pid: {e}; \
                 A's reports: {:?}",
                reports(&deaths, a)
            ));
            let _ = b.kill();
            let _ = b.wait();
        } else {
            kill_and_wait(b);
            // B is gone for good now, so every backend can tell A is not there.
            lp.run_until(&mut reactor, &mut deaths, Duration::from_secs(3), |d| {
                d.seen.contains_key(&a)
            });
            let seen = reports(&deaths, a);
            if seen != [Outcome::Lost] {
                problems.push(format!("{backend:?}: A reported {seen:?}, expected [Lost]"));
            }
        }
        drop((reactor, lp));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn drop_policy_never_kills_the_new_owner_of_a_stolen_pid_pidfd() {
    if !force_pids_or_skip("drop_policy_never_kills_the_new_owner_of_a_stolen_pid_pidfd") {
        return;
    }
    let check = Check::start();
    let _kill = KillOnPanic;
    if pidfd_or_skip("drop policy") {
        drop_policy_case(&[Backend::Pidfd]);
    }
    check.finish();
}

fn drop_policy_case(backends: &[Backend]) {
    let mut problems = Vec::new();
    for &backend in backends {
        for policy in [
            DropPolicy::Kill,
            DropPolicy::KillAndReap(Duration::from_millis(500)),
        ] {
            let mut reactor = util::library_with::<Deaths>(backend);
            let a = spawn_a(&mut reactor);
            // Other code kills and reaps A, against the contract.
            // SAFETY: kill(2) of our own unreaped child A.
            assert_eq!(unsafe { libc::kill(a.pid().as_raw(), libc::SIGKILL) }, 0);
            assert_eq!(reap_child(a.pid()), signaled(libc::SIGKILL), "A's status");
            let Some(mut b) = b_under(a, "exec sleep 30") else {
                continue;
            };
            reactor.set_drop_policy(policy);
            drop(reactor);
            match alive(&mut b) {
                Ok(()) => kill_and_wait(b),
                Err(e) => {
                    problems.push(format!(
                        "{backend:?}, {policy:?}: dropping the reactor killed B, which has A's \
                         old pid: {e}"
                    ));
                    let _ = b.kill();
                    let _ = b.wait();
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The orphan list (`DropPolicy::Leave`) names each orphan by a pidfd even
/// when its reactor watched it through `SIGCHLD`: A, orphaned by a `Peek`
/// or `Scan` reactor, is stolen and its pid given to B; a later dispatch of
/// another reactor must not reap B in A's place.
#[test]
fn orphan_reaper_never_reaps_the_new_owner_of_a_stolen_pid() {
    if !force_pids_or_skip("orphan_reaper_never_reaps_the_new_owner_of_a_stolen_pid") {
        return;
    }
    let check = Check::start();
    let _kill = KillOnPanic;
    if !pidfd_or_skip("the orphan reaper by pidfd") {
        return check.finish();
    }
    for backend in util::SIGCHLD_BACKENDS {
        let mut reactor = util::library_with::<Deaths>(backend);
        let a = spawn_a(&mut reactor);
        drop(reactor); // Leave: A goes on the orphan list
        nix::sys::signal::kill(a.pid().into(), nix::sys::signal::Signal::SIGKILL).expect("kill A");
        wait_zombie(a.pid());
        assert_eq!(reap_child(a.pid()), signaled(libc::SIGKILL), "the steal");
        let Some(mut b) = b_under(a, "sleep 0.2; exit 7") else {
            continue;
        };
        let mut other = util::library_with::<Deaths>(backend);
        let mut deaths = Deaths::default();
        let until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < until {
            other.dispatch(&mut deaths).expect("dispatch");
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = b.wait().expect("B's own wait: the orphan reaper took B");
        assert_eq!(status, exited(7), "{backend:?}");
        drop(other);
    }
    check.finish();
}
