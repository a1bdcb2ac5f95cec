//! Issue 7, case 10: a `dispatch` that nothing woke does no system call per
//! child. With 20 live children, 100 such dispatches must not add a single
//! wait-family call (`Stats::wait_calls`): today `Scan` makes 2,000 `wait4`
//! and `Peek` 100 `waitid`.
//!
//! Also (issue 7): `Library` is the only mode with a backend; `backend()`
//! must not claim `Pidfd` for a `Mainloop` reactor, which watches nothing
//! through pidfds.

use evchild_testkit as util;

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use evchild::{Backend, ChildId, Hooks, Reactor, SigchldOwner};
use util::{readable, record, Check, Deaths, KillOnPanic, BACKENDS};

const LIVE: usize = 20;
const IDLE_DISPATCHES: u64 = 100;

fn sleeper() -> Command {
    let mut command = Command::new("/bin/sleep");
    command
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[test]
fn idle_dispatch_makes_no_wait_call_per_child() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let pidfd = util::pidfd_or_skip("idle dispatch");
    let mut problems = Vec::new();
    for backend in BACKENDS {
        if backend == Backend::Pidfd && !pidfd {
            continue;
        }
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(backend);
        let ids: Vec<ChildId> = (0..LIVE)
            .map(|_| reactor.spawn(&mut sleeper(), record).expect("spawn").id)
            .collect();
        // Whatever the spawns asked for is done by the first dispatches.
        for _ in 0..3 {
            reactor.dispatch(&mut deaths).expect("dispatch");
        }
        let woken = readable(reactor.as_raw_fd());
        let before = reactor.stats();
        for _ in 0..IDLE_DISPATCHES {
            reactor.dispatch(&mut deaths).expect("dispatch");
        }
        let after = reactor.stats();
        let calls = after.wait_calls - before.wait_calls;
        if woken || calls != 0 {
            problems.push(format!(
                "{backend:?}: {IDLE_DISPATCHES} dispatches with {LIVE} idle children made \
                 {calls} wait calls (expected 0; reactor readable before: {woken})"
            ));
        }
        assert_eq!(deaths.total(), 0, "{backend:?}: nobody died");
        // End them: each reported once, killed.
        for &id in &ids {
            reactor.kill(id, libc::SIGKILL).expect("kill");
        }
        lp.run_until(&mut reactor, &mut deaths, Duration::from_secs(10), |d| {
            d.total() == LIVE
        });
        for &id in &ids {
            deaths.assert_signal(id, libc::SIGKILL);
        }
        drop((reactor, lp));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    check.finish();
}

#[test]
fn mainloop_reactor_does_not_claim_the_pidfd_backend() {
    let check = Check::start();
    let mut problems = Vec::new();
    for asked in [Backend::Auto, Backend::Pidfd] {
        let reactor =
            Reactor::<()>::new(Hooks::new(SigchldOwner::Mainloop).backend(asked)).expect("new");
        if reactor.backend().is_some() {
            problems.push(format!(
                "Mainloop, asked {asked:?}: backend() = {:?}",
                reactor.backend()
            ));
        }
        let mut reactor =
            Reactor::<()>::new(Hooks::new(SigchldOwner::Library).backend(asked)).expect("new");
        reactor
            .set_mode(Hooks::new(SigchldOwner::Mainloop).backend(asked))
            .expect("set_mode");
        if reactor.backend().is_some() {
            problems.push(format!(
                "Library -> Mainloop (set_mode), asked {asked:?}: backend() = {:?}",
                reactor.backend()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    check.finish();
}
