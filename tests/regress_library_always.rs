//! Issue 7, `LibraryAlways` cases (this mode reaps with `waitpid(-1)` and
//! holds the handler for its whole life, so it has a file of its own):
//!
//! * case 9: a ptrace stop of a child (the reactor's process is the tracer)
//!   is not a death: `wait4(-1)` reports it, and it must not end the child;
//! * a stop-report registration (`on_state_change`) must be cleared once no
//!   child wants stop reports: the handler goes back to `SA_NOCLDSTOP`;
//! * `backend()` must not claim `Pidfd`: this mode watches nothing through
//!   pidfds.

use evchild_testkit as util;

use std::process::{Command, Stdio};
use std::time::Duration;

use evchild::{Backend, Hooks, Reactor, SigchldOwner};
use util::{disposition, record, Check, Deaths, KillOnPanic, Loop};

fn library_always() -> Reactor<Deaths> {
    Reactor::new(Hooks::new(SigchldOwner::LibraryAlways)).expect("Reactor::new(LibraryAlways)")
}

#[test]
fn library_always_ptrace_stop_is_not_a_death() {
    let check = Check::start();
    let _kill = KillOnPanic;
    if !util::ptrace::ptrace_or_skip() {
        return check.finish();
    }
    let mut reactor = library_always();
    let problems = util::ptrace::ptrace_stop_is_not_a_death(&mut reactor, "LibraryAlways");
    drop(reactor);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    check.finish();
}

#[test]
fn library_always_clears_the_stop_registration_after_the_death() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = library_always();
    let mut lp = Loop::new(&mut reactor);
    let mut deaths = Deaths::default();
    let child = reactor
        .spawn(
            Command::new("/bin/sh")
                .args(["-c", "exit 4"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            record,
        )
        .expect("spawn")
        .id;
    reactor
        .on_state_change(child, |_, _, _, _| {})
        .expect("on_state_change");
    lp.run_until(&mut reactor, &mut deaths, Duration::from_secs(5), |d| {
        d.total() == 1
    });
    deaths.assert_code(child, 4);
    let (handler, flags) = disposition();
    drop((reactor, lp));
    assert!(
        flags & libc::SA_NOCLDSTOP != 0,
        "no child wants stop reports any more, yet evchild's handler ({handler:#x}) is \
         still installed without SA_NOCLDSTOP (flags {flags:#x}): every stop and continue \
         of any child still wakes the reactor"
    );
    check.finish();
}

#[test]
fn library_always_does_not_claim_the_pidfd_backend() {
    let check = Check::start();
    let mut problems = Vec::new();
    for asked in [Backend::Auto, Backend::Pidfd] {
        let reactor = Reactor::<()>::new(Hooks::new(SigchldOwner::LibraryAlways).backend(asked))
            .expect("new");
        if reactor.backend().is_some() {
            problems.push(format!(
                "LibraryAlways, asked {asked:?}: backend() = {:?}",
                reactor.backend()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    check.finish();
}
