//! Issue 7: a stop-report registration is never cleared. Once the only
//! child that asked for stop/continue reports (`on_state_change`) has died,
//! nobody wants them any more: evchild's handler, still installed for the
//! reactor's other live children, must have `SA_NOCLDSTOP` again (or be gone,
//! with `Pidfd`), so stops and continues of other children stop waking
//! every reactor. (`LibraryAlways`: see `regress_library_always.rs`.)

use evchild_testkit as util;

use std::time::Duration;

use evchild::Backend;
use util::{disposition, record, Check, Deaths, KillOnPanic, BACKENDS};

#[test]
fn stop_registration_is_cleared_when_its_child_dies() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let pidfd = util::pidfd_or_skip("stop registration");
    let mut problems = Vec::new();
    for backend in BACKENDS {
        if backend == Backend::Pidfd && !pidfd {
            continue;
        }
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(backend);
        let live = reactor
            .spawn(&mut util::quiet_sh("exec sleep 30"), record)
            .expect("spawn")
            .id;
        let stateful = reactor
            .spawn(&mut util::quiet_sh("exit 4"), record)
            .expect("spawn")
            .id;
        reactor
            .on_state_change(stateful, |_, _, _, _| {})
            .expect("on_state_change");
        lp.run_until(&mut reactor, &mut deaths, Duration::from_secs(5), |d| {
            d.total() == 1
        });
        deaths.assert_code(stateful, 4);
        let (handler, flags) = disposition();
        if handler != libc::SIG_DFL && flags & libc::SA_NOCLDSTOP == 0 {
            problems.push(format!(
                "{backend:?}: the only child that wanted stop reports is dead, yet the \
                 handler ({handler:#x}) is installed without SA_NOCLDSTOP (flags {flags:#x})"
            ));
        }
        reactor.kill(live, libc::SIGKILL).expect("kill");
        lp.run_until(&mut reactor, &mut deaths, Duration::from_secs(5), |d| {
            d.total() == 2
        });
        deaths.assert_signal(live, libc::SIGKILL);
        drop((reactor, lp));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    check.finish();
}
