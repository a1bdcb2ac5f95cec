//! Stop and continue reports (`on_state_change`), under every backend and in
//! `LibraryAlways` mode. Its own process: it makes the handler drop
//! `SA_NOCLDSTOP`, which every other test would see.

use evchild_testkit as util;

use std::process::Command;
use std::time::Duration;

use evchild::{Backend, ChildId, ChildState, Error, Exit, Hooks, Reactor, SigchldOwner};

const LIMIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Seen {
    states: Vec<(ChildId, ChildState)>,
    deaths: Vec<Exit>,
}

fn stop_continue_kill(hooks: Hooks<Seen>) {
    let check = util::Check::start();
    let _cleanup = util::KillOnPanic;
    {
        let mut reactor = Reactor::new(hooks).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut seen = Seen::default();
        let child = reactor
            .spawn(Command::new("sleep").arg("30"), |s: &mut Seen, _, e| {
                s.deaths.push(e)
            })
            .expect("spawn");
        reactor
            .on_state_change(child.id, |s: &mut Seen, _, id, state| {
                s.states.push((id, state))
            })
            .expect("on_state_change");
        let sa = util::sigchld_action();
        assert_eq!(sa.sa_flags & libc::SA_NOCLDSTOP, 0, "stops are signalled");

        reactor.kill(child.id, libc::SIGSTOP).expect("SIGSTOP");
        lp.run_until(&mut reactor, &mut seen, LIMIT, |s| !s.states.is_empty());
        assert_eq!(
            seen.states,
            [(child.id, ChildState::Stopped(libc::SIGSTOP))]
        );
        assert!(reactor.contains(child.id), "a stop is not a death");

        reactor.kill(child.id, libc::SIGCONT).expect("SIGCONT");
        lp.run_until(&mut reactor, &mut seen, LIMIT, |s| s.states.len() == 2);
        assert_eq!(seen.states[1], (child.id, ChildState::Continued));

        reactor.kill(child.id, libc::SIGKILL).expect("SIGKILL");
        lp.run_until(&mut reactor, &mut seen, LIMIT, |s| !s.deaths.is_empty());
        assert_eq!(seen.deaths.len(), 1);
        assert_eq!(seen.deaths[0].id, child.id);
        assert_eq!(seen.deaths[0].status(), Some(util::signaled(libc::SIGKILL)));
        assert_eq!(seen.states.len(), 2, "no state report after the death");
        // A few more passes report nothing twice.
        for _ in 0..3 {
            reactor.dispatch(&mut seen).expect("dispatch");
        }
        assert_eq!(seen.deaths.len(), 1);
    }
    check.finish();
}

#[test]
fn stop_and_continue_under_every_backend() {
    for backend in [Backend::Pidfd, Backend::Peek, Backend::Scan] {
        // Without pidfds a Pidfd reactor is a Peek one: say so, not pass.
        if backend == Backend::Pidfd && !util::pidfd_or_skip("the Pidfd backend's part") {
            continue;
        }
        stop_continue_kill(Hooks::new(SigchldOwner::Library).backend(backend));
    }
}

#[test]
fn stop_and_continue_in_library_always() {
    stop_continue_kill(Hooks::new(SigchldOwner::LibraryAlways));
}

#[test]
fn a_child_that_stops_itself() {
    let check = util::Check::start();
    let _cleanup = util::KillOnPanic;
    {
        let mut reactor = Reactor::new(Hooks::new(SigchldOwner::Library)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut seen = Seen::default();
        // The child stops itself with SIGSTOP (SIGTSTP would be discarded in an orphaned process group, as under some CI runners) once it is being watched (it
        // waits a little so `on_state_change` comes first; a stop before it
        // is reported too, since it stays waitable).
        let child = reactor
            .spawn(
                Command::new("sh").args(["-c", "kill -STOP $$; exit 5"]),
                |s: &mut Seen, _, e| s.deaths.push(e),
            )
            .expect("spawn");
        reactor
            .on_state_change(child.id, |s: &mut Seen, _, id, state| {
                s.states.push((id, state))
            })
            .expect("on_state_change");
        lp.run_until(&mut reactor, &mut seen, LIMIT, |s| !s.states.is_empty());
        assert_eq!(
            seen.states,
            [(child.id, ChildState::Stopped(libc::SIGSTOP))]
        );
        reactor.kill(child.id, libc::SIGCONT).expect("SIGCONT");
        lp.run_until(&mut reactor, &mut seen, LIMIT, |s| !s.deaths.is_empty());
        assert_eq!(seen.deaths[0].status(), Some(util::exited(5)));
        // It exits as soon as it continues: the kernel keeps only the latest
        // state, so the continue may be reported or swallowed by the death,
        // but nothing else may appear.
        assert!(seen.states[1..]
            .iter()
            .all(|s| *s == (child.id, ChildState::Continued)));
        assert!(seen.states.len() <= 2);
    }
    check.finish();
}

#[test]
fn refused_in_mainloop_mode_and_after_reap() {
    let check = util::Check::start();
    {
        let mut reactor = Reactor::<Seen>::new(Hooks::new(SigchldOwner::Mainloop)).expect("new");
        let child = reactor
            .spawn(&mut Command::new("true"), |s: &mut Seen, _, e| {
                s.deaths.push(e)
            })
            .expect("spawn");
        assert!(matches!(
            reactor.on_state_change(child.id, |_, _, _, _| {}),
            Err(Error::WrongMode { .. })
        ));
        // The application reaps in Mainloop mode.
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let pid = unsafe { libc::waitpid(child.id.pid().as_raw(), &mut status, 0) };
        assert_eq!(pid, child.id.pid().as_raw());
        let mut seen = Seen::default();
        use std::os::unix::process::ExitStatusExt;
        reactor
            .reaped(
                &mut seen,
                child.id.pid(),
                std::process::ExitStatus::from_raw(status),
            )
            .expect("reaped");
        assert!(matches!(
            reactor.on_state_change(child.id, |_, _, _, _| {}),
            Err(Error::AlreadyReaped { .. })
        ));
    }
    check.finish();
}
