//! Issue 7, case 2: a pid that cannot name a child (-1, 0, our own pid),
//! from a `fork_replacement` or given to `watch`, is refused with
//! `Error::InvalidPid`: nothing is registered, and the reactor never turns it
//! into `wait4(-1)`/`wait4(0)` (which would steal the application's
//! children) or `kill(-1)` (every process we may signal). Never a panic,
//! debug build included.
//!
//! The bad pid is never signalled here, even when the current code registers
//! it: the tests only dispatch (reaping is the observable harm) and drop the
//! reactor with the default `DropPolicy::Leave`.

use evchild_testkit as util;

use std::panic::{self, AssertUnwindSafe};
use std::process::Child;

use evchild::{Backend, Error, Forked, Hooks, Pid, Reactor, SigchldOwner};
use util::{sh_exit, wait_zombie, Check, ReapOnPanic, BACKENDS};

/// The pids that name no child: every process (-1), our process group (0),
/// ourselves.
fn bad_pids() -> [(&'static str, Pid); 3] {
    [
        ("-1", Pid::from_raw(-1)),
        ("0", Pid::from_raw(0)),
        ("getpid()", Pid::this()),
    ]
}

fn backends() -> Vec<Backend> {
    let pidfd = util::pidfd_or_skip("the Pidfd backend's part");
    BACKENDS
        .into_iter()
        .filter(|&b| b != Backend::Pidfd || pidfd)
        .collect()
}

/// A std child of the test (exit 3), already a zombie: what a stray
/// `wait4(-1)` or `wait4(0)` would steal.
fn bystander() -> Child {
    let child = sh_exit(3);
    wait_zombie(Pid::from(child.id()));
    child
}

/// Dispatches a few times; returns the problems seen (a panic, an error).
fn dispatch_a_few(reactor: &mut Reactor<Vec<evchild::Exit>>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut deaths = Vec::new();
    for _ in 0..3 {
        match panic::catch_unwind(AssertUnwindSafe(|| reactor.dispatch(&mut deaths))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("dispatch failed: {e}")),
            Err(_) => problems.push("dispatch panicked".into()),
        }
    }
    if !deaths.is_empty() {
        problems.push(format!("death reports for a pid never started: {deaths:?}"));
    }
    problems
}

/// The bystander must still be ours to wait for, with its exact status.
fn check_bystander(mut child: Child, problems: &mut Vec<String>) {
    match child.try_wait() {
        Ok(Some(status)) if status.code() == Some(3) => {}
        other => problems.push(format!(
            "the application's own child {} was taken: try_wait answered {other:?} \
             (expected exit 3)",
            child.id()
        )),
    }
}

#[test]
fn fork_replacement_returning_an_invalid_pid_is_refused() {
    let check = Check::start();
    let _reap = ReapOnPanic;
    let mut problems = Vec::new();
    for backend in backends() {
        for (name, bad) in bad_pids() {
            let what = format!("{backend:?}, fork_replacement -> {name}");
            let child = bystander();
            let hooks = Hooks::new(SigchldOwner::Library)
                .backend(backend)
                .fork_replacement(move || Ok(Some(bad)));
            let mut reactor = Reactor::<Vec<evchild::Exit>>::new(hooks).expect("Reactor::new");
            // SAFETY: the replacement does not fork: there is no child side.
            let forked =
                panic::catch_unwind(AssertUnwindSafe(|| unsafe { reactor.fork(|_, _, _| {}) }));
            match forked {
                Ok(Err(Error::InvalidPid { pid })) if pid == bad => {}
                Ok(Ok(Forked::Child)) => unreachable!("the replacement returned a pid"),
                Ok(other) => problems.push(format!(
                    "{what}: expected Err(InvalidPid {{ pid: {bad} }}), got {other:?}"
                )),
                Err(_) => problems.push(format!("{what}: fork panicked")),
            }
            after_refusal(reactor, child, &what, &mut problems);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    check.finish();
}

/// After a refused call: nothing registered, dispatch is quiet, and the
/// bystander child was neither reaped nor signalled.
fn after_refusal(
    mut reactor: evchild::Reactor<Vec<evchild::Exit>>,
    child: std::process::Child,
    what: &str,
    problems: &mut Vec<String>,
) {
    if !reactor.is_empty() {
        problems.push(format!(
            "{what}: {} child(ren) registered after the refusal",
            reactor.len()
        ));
    }
    for p in dispatch_a_few(&mut reactor) {
        problems.push(format!("{what}: {p}"));
    }
    drop(reactor);
    let mut mine = Vec::new();
    check_bystander(child, &mut mine);
    problems.extend(mine.into_iter().map(|p| format!("{what}: {p}")));
}

#[test]
fn watch_of_an_invalid_pid_is_refused() {
    let check = Check::start();
    let _reap = ReapOnPanic;
    let mut problems = Vec::new();
    for backend in backends() {
        for (name, bad) in bad_pids() {
            let what = format!("{backend:?}, watch({name})");
            let child = bystander();
            let mut reactor = util::library_with::<Vec<evchild::Exit>>(backend);
            let watched =
                panic::catch_unwind(AssertUnwindSafe(|| reactor.watch(bad, |_, _, _| {})));
            match watched {
                Ok(Err(Error::InvalidPid { pid })) if pid == bad => {}
                Ok(other) => problems.push(format!(
                    "{what}: expected Err(InvalidPid {{ pid: {bad} }}), got {other:?}"
                )),
                Err(_) => problems.push(format!("{what}: watch panicked")),
            }
            after_refusal(reactor, child, &what, &mut problems);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    check.finish();
}
