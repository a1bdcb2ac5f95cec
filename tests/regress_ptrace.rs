//! Issue 7, case 9: ptrace stops reported as deaths. The reactor's process is
//! also the tracer of its child, so `wait4(pid)`/`waitid` report the child's
//! ptrace stops (even without `WUNTRACED`). Only a death ends a child: while
//! it sits in a ptrace stop, no death callback, and it stays registered; once
//! the tracer lets it go, exactly one callback with its true status.
//!
//! This file makes the test process a tracer, so it holds nothing else.

use evchild_testkit as util;

use evchild::Backend;
use util::ptrace::ptrace_stop_is_not_a_death;
use util::{Check, Deaths, KillOnPanic, BACKENDS};

#[test]
fn ptrace_stop_is_not_a_death_in_any_backend() {
    let check = Check::start();
    let _kill = KillOnPanic;
    if !util::ptrace::ptrace_or_skip() {
        return check.finish();
    }
    let pidfd = util::pidfd_or_skip("ptrace stops");
    let mut problems = Vec::new();
    for backend in BACKENDS {
        if backend == Backend::Pidfd && !pidfd {
            continue;
        }
        let mut reactor = util::library_with::<Deaths>(backend);
        problems.extend(ptrace_stop_is_not_a_death(
            &mut reactor,
            &format!("{backend:?}"),
        ));
        drop(reactor);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    check.finish();
}
