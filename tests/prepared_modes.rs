//! `spawn_prepared` in the two modes where the application or a reap-all
//! reactor is involved: `LibraryAlways` (its reactor reaps every child of
//! the process, so a `Prepared` child of another reactor must be routed to
//! that reactor, and a failed start must not be taken for a stranger) and
//! `Mainloop` (the application reaps and reports).
//!
//! Its own binary: a `LibraryAlways` reactor reaps children that are not
//! its own, so it must not share a process with other tests' children.

use evchild_testkit as util;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use evchild::{Claim, Error, Hooks, Outcome, Pid, Prepared, Reactor, Redirect, SigchldOwner};
use util::{exited, Deaths};

const LIMIT: Duration = Duration::from_secs(30);

fn exit_with(code: i32) -> Prepared {
    let mut prepared = Prepared::new("sh");
    prepared
        .args(["-c", &format!("exit {code}")])
        .stdin(Redirect::Null);
    prepared
}

/// Under a `LibraryAlways` reactor, the children it starts itself from a
/// `Prepared` and those another (`Library`) reactor starts are each
/// reported once, to their own reactor, with their status; a `Prepared`
/// whose program is missing fails with `NotFound` and is never handed to
/// the unknown-child hook.
#[test]
fn library_always_routes_prepared_children_and_never_takes_a_failed_start() {
    let check = util::Check::start();
    {
        let strays = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Pid>::new()));
        let seen = std::sync::Arc::clone(&strays);
        let hooks = Hooks::new(SigchldOwner::LibraryAlways).unknown_child(
            move |_: &mut Deaths, pid: Pid, _: ExitStatus| {
                seen.lock().unwrap().push(pid);
                Claim::Claimed
            },
        );
        let mut always = Reactor::<Deaths>::new(hooks).expect("LibraryAlways");
        let mut other = util::library::<Deaths>();
        let mut lp = util::Loop::new(&mut always);
        let (mut mine, mut theirs) = (Deaths::default(), Deaths::default());
        let mut seven = exit_with(7);
        let mut nine = exit_with(9);
        let mut missing = Prepared::new("/nonexistent/evchild-prepared");
        let mut ids = Vec::new();
        for round in 0..20 {
            ids.push((
                always
                    .spawn_prepared(&mut seven, util::record)
                    .expect("spawn")
                    .id,
                7,
            ));
            let id = other
                .spawn_prepared(&mut nine, util::record)
                .expect("spawn")
                .id;
            ids.push((id, 9));
            match other.spawn_prepared(&mut missing, util::record) {
                Err(Error::Spawn { source, .. }) => {
                    assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "round {round}")
                }
                other => panic!("a missing program: {other:?}"),
            }
        }
        lp.run_until(&mut always, &mut mine, LIMIT, |d| d.total() == 20);
        let end = std::time::Instant::now() + LIMIT;
        while theirs.total() < 20 {
            assert!(
                std::time::Instant::now() < end,
                "the other reactor's reports"
            );
            util::readable_within(std::os::fd::AsRawFd::as_raw_fd(&other), LIMIT);
            other.dispatch(&mut theirs).expect("dispatch");
        }
        for (id, code) in ids {
            let deaths = if code == 7 { &mine } else { &theirs };
            match deaths.seen.get(&id).map(Vec::as_slice) {
                Some([Outcome::Reaped(status)]) => assert_eq!(*status, exited(code), "{id}"),
                other => panic!("{id}: expected one report, got {other:?}"),
            }
        }
        assert_eq!(*strays.lock().unwrap(), [], "children taken for strangers");
        drop(other);
        drop(always);
    }
    check.finish();
}

/// `Mainloop`: the application reaps a `Prepared` child itself and reports
/// it; the callback gets that status.
#[test]
fn mainloop_prepared_children_are_reported_by_the_application() {
    let check = util::Check::start();
    {
        let mut reactor = Reactor::<Deaths>::new(Hooks::new(SigchldOwner::Mainloop)).expect("new");
        let mut deaths = Deaths::default();
        let mut five = exit_with(5);
        let id = reactor
            .spawn_prepared(&mut five, util::record)
            .expect("spawn")
            .id;
        let status = util::reap_child(id.pid());
        assert_eq!(status, exited(5));
        reactor
            .reaped(
                &mut deaths,
                id.pid(),
                ExitStatus::from_raw(status.into_raw()),
            )
            .expect("reaped");
        deaths.assert_code(id, 5);
    }
    check.finish();
}
