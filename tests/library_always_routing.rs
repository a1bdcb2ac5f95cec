//! A `LibraryAlways` reactor next to `Library` reactors: it reaps every
//! child of the process, but a child another reactor registered gets its
//! exact status there (routed), never `Lost`; only children nobody
//! registered go to the unknown-child hook.
//!
//! In its own binary: the reap-all reactor takes every child of the process.

use evchild_testkit as util;

use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evchild::{Claim, Exit, Hooks, Outcome, Pid, Reactor, SigchldOwner};
use mio::{Events, Interest, Poll, Token};

const LIMIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Strays(Vec<(Pid, ExitStatus)>);

fn reap_all_reactor() -> Reactor<Strays> {
    Reactor::new(Hooks::new(SigchldOwner::LibraryAlways).unknown_child(
        |s: &mut Strays, pid, status| {
            s.0.push((pid, status));
            Claim::Claimed
        },
    ))
    .expect("LibraryAlways")
}

/// Whether `pid` is no longer a waitable child of ours (reaped).
fn reaped_by_someone(pid: Pid) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    let id = Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw()));
    waitid(id, flags) == Err(nix::errno::Errno::ECHILD)
}

/// Runs the reap-all reactor's loop on a thread of its own until `stop`.
fn reap_all_on_a_thread(
    mut reactor: Reactor<Strays>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Reactor<Strays>, Strays)> {
    std::thread::spawn(move || {
        let mut poll = Poll::new().expect("poll");
        poll.registry()
            .register(&mut reactor, Token(0), Interest::READABLE)
            .expect("register");
        let mut events = Events::with_capacity(8);
        let mut strays = Strays::default();
        while !stop.load(Ordering::Acquire) {
            match poll.poll(&mut events, Some(Duration::from_millis(20))) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => other.expect("poll"),
            }
            reactor.dispatch(&mut strays).expect("dispatch");
        }
        (reactor, strays)
    })
}

/// Same thread: the reap-all reactor reaps the Library reactor's child
/// first; the Library reactor gets the exact status.
#[test]
fn a_child_of_another_reactor_gets_its_exact_status() {
    let check = util::Check::start();
    {
        let mut always = reap_all_reactor();
        let (mut library, mut lp, mut deaths) = util::library_loop::<Vec<Exit>>();
        let child = library
            .spawn(Command::new("sh").args(["-c", "exit 7"]), util::record)
            .expect("spawn")
            .id;
        let stranger = util::sh_exit(3);
        let stranger_pid = Pid::from(stranger.id());
        // Let the reap-all reactor take both.
        let mut strays = Strays::default();
        let deadline = Instant::now() + LIMIT;
        while strays.0.is_empty() || !reaped_by_someone(child.pid()) {
            assert!(
                Instant::now() < deadline,
                "the reap-all reactor reaped nothing"
            );
            always.dispatch(&mut strays).expect("dispatch");
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(stranger); // std's Child does not wait on drop
        assert_eq!(
            strays.0,
            [(stranger_pid, util::exited(3))],
            "only the stranger"
        );
        lp.run_until(&mut library, &mut deaths, LIMIT, |d| !d.is_empty());
        assert_eq!(deaths.len(), 1);
        assert_eq!(deaths[0].id, child);
        assert_eq!(deaths[0].outcome, Outcome::Reaped(util::exited(7)));
        assert!(
            deaths[0].usage.is_some(),
            "the reaper's resource usage came along"
        );
        assert_eq!(library.stats().lost, 0);
        assert_eq!(always.stats().unknown_claimed, 1);
        drop(library);
        drop(lp);
        drop(always);
    }
    check.finish();
}

/// Another thread reaps everything while this one starts children that die
/// at once: each start is in flight when its child dies, and none may be
/// taken for a stranger (the fork-in-progress protocol).
#[test]
fn children_that_die_at_once_are_routed_not_lost() {
    const N: usize = 300;
    let check = util::Check::start();
    {
        let stop = Arc::new(AtomicBool::new(false));
        let reaper = reap_all_on_a_thread(reap_all_reactor(), Arc::clone(&stop));
        let (mut library, mut lp, mut deaths) = util::library_loop::<Vec<Exit>>();
        let mut ids = Vec::with_capacity(N);
        for i in 0..N {
            let code = (i % 50) as i32;
            let id = library
                .spawn(
                    Command::new("sh").args(["-c", &format!("exit {code}")]),
                    util::record,
                )
                .expect("spawn")
                .id;
            ids.push((id, code));
            // Keep a few in flight while the other thread reaps.
            library.dispatch(&mut deaths).expect("dispatch");
        }
        lp.run_until(&mut library, &mut deaths, LIMIT, |d| d.len() == N);
        stop.store(true, Ordering::Release);
        let (always, strays) = reaper.join().expect("reaper thread");
        assert!(
            strays.0.is_empty(),
            "children of ours taken as strangers: {:?}",
            strays.0
        );
        for (id, code) in ids {
            assert_eq!(
                util::outcome_of(&deaths, id),
                Outcome::Reaped(util::exited(code)),
                "{id}"
            );
        }
        assert_eq!(library.stats().lost, 0);
        assert_eq!(library.stats().reaped, N as u64);
        drop(always);
        drop(library);
        drop(lp);
    }
    check.finish();
}
