//! `LibraryAlways`: one reactor reaps every child of the process.
//!
//! In its own binary: a `LibraryAlways` reactor reaps children that are not
//! its own (that is the point), so it must not share a process with tests
//! whose children it would steal.

use evchild_testkit as util;

use std::process::ExitStatus;
use std::time::Duration;

use evchild::{Claim, Error, Exit, Hooks, Outcome, Pid, Reactor, SigchldOwner, Stats};
use util::{exited, fork_gated, record, sh_exit, sigchld_handler, wait_zombie, Gate};

const LIMIT: Duration = Duration::from_secs(30);

/// The application's context in these tests.
#[derive(Default)]
struct App {
    /// Death reports of our own children, in callback order.
    deaths: Vec<Exit>,
    /// What the unknown-child hook was given.
    strays: Vec<(Pid, ExitStatus)>,
}

impl util::Record for App {
    fn record(&mut self, exit: Exit) {
        self.deaths.push(exit);
    }
}

fn claim(app: &mut App, pid: Pid, status: ExitStatus) -> Claim {
    app.strays.push((pid, status));
    Claim::Claimed
}

fn always() -> Hooks<App> {
    Hooks::new(SigchldOwner::LibraryAlways)
}

/// Drives the loop until `done` holds of the reactor's counters.
#[track_caller]
fn run_until_stats(
    lp: &mut util::Loop,
    reactor: &mut Reactor<App>,
    app: &mut App,
    done: impl Fn(&Stats) -> bool,
) {
    lp.run_with(reactor, app, LIMIT, |_, _, _| {}, |r, _| done(&r.stats()));
}

#[test]
fn own_children_get_exact_statuses() {
    let check = util::Check::start();
    {
        let mut reactor = Reactor::new(always()).expect("new");
        assert_eq!(reactor.mode(), SigchldOwner::LibraryAlways);
        assert_ne!(sigchld_handler(), libc::SIG_DFL, "handler installed by new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();

        let (mut ga, mut gb, gc) = (Gate::new(), Gate::new(), Gate::new());
        let a = fork_gated(&mut reactor, &ga, 0, record);
        let b = fork_gated(&mut reactor, &gb, 7, record);
        let c = fork_gated(&mut reactor, &gc, 1, record);
        assert_eq!(reactor.len(), 3);
        assert!(reactor.contains(a) && reactor.contains(b) && reactor.contains(c));

        ga.open();
        gb.open();
        reactor.kill(c, libc::SIGTERM).expect("kill live child");
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| app.deaths.len() == 3);

        let status_of = |id| util::outcome_of(&app.deaths, id);
        assert_eq!(status_of(a), Outcome::Reaped(exited(0)));
        assert_eq!(status_of(b), Outcome::Reaped(exited(7)));
        assert_eq!(status_of(c), Outcome::Reaped(util::signaled(libc::SIGTERM)));
        assert!(app.strays.is_empty());
        assert!(reactor.is_empty());

        let stats = reactor.stats();
        assert_eq!(stats.reaped, 3);
        assert_eq!(stats.lost, 0);
        assert_eq!(stats.unknown_claimed, 0);
        assert_eq!(stats.unknown_unclaimed, 0);
        assert!(stats.dispatches >= 1);

        // A reaped child's id has left the API.
        assert!(matches!(
            reactor.kill(a, libc::SIGTERM),
            Err(Error::AlreadyReaped { pid }) if pid == a.pid()
        ));
        // evchild reaps in this mode; the application must not report.
        assert!(matches!(
            reactor.reaped(&mut app, a.pid(), exited(0)),
            Err(Error::WrongMode {
                call: "reaped",
                mode: SigchldOwner::LibraryAlways,
                ..
            })
        ));
        assert!(matches!(
            reactor.sigchld_occurred(&mut app),
            Err(Error::WrongMode {
                call: "sigchld_occurred",
                mode: SigchldOwner::LibraryAlways,
                ..
            })
        ));
        // With no child left, the handler stays until the reactor is dropped.
        assert_ne!(sigchld_handler(), libc::SIG_DFL);
        drop(gc);
        drop(lp);
        drop(reactor);
        // The handler stays installed for the life of the process; the
        // registration is gone.
        assert_ne!(sigchld_handler(), libc::SIG_DFL, "handler removed at drop");
        util::assert_no_registration("after drop");
    }
    check.finish();
}

#[test]
fn only_one_reap_all_owner_per_process() {
    let check = util::Check::start();
    {
        let first = Reactor::new(always()).expect("first LibraryAlways");
        assert!(matches!(Reactor::new(always()), Err(Error::ReapAllTaken)));

        let mut other = Reactor::new(util::hooks(SigchldOwner::Library)).expect("Library");
        assert!(matches!(other.set_mode(always()), Err(Error::ReapAllTaken)));
        assert_eq!(
            other.mode(),
            SigchldOwner::Library,
            "failed set_mode changed nothing"
        );

        drop(first);
        // The registration belonged to `first` only; the refusals left none.
        util::assert_no_registration("after drop(first)");

        other.set_mode(always()).expect("free again after drop");
        assert_eq!(other.mode(), SigchldOwner::LibraryAlways);
        assert!(matches!(Reactor::new(always()), Err(Error::ReapAllTaken)));
        // Asking again for the mode one already has is not a second owner.
        other.set_mode(always()).expect("LibraryAlways again");

        other
            .set_mode(util::hooks(SigchldOwner::Library))
            .expect("give it up");
        util::assert_no_registration("after set_mode(Library)");
        let again = Reactor::new(always()).expect("free after set_mode(Library)");
        drop(again);
        drop(other);
        util::assert_no_registration("after drop(other)");
    }
    check.finish();
}

#[test]
fn std_child_goes_to_unknown_hook_with_exact_status() {
    let check = util::Check::start();
    {
        let mut reactor = Reactor::new(always().unknown_child(claim)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();

        let child = sh_exit(3);
        let pid = Pid::from(child.id());
        // std's Child does not reap when dropped: the zombie is evchild's.
        drop(child);
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| !app.strays.is_empty());

        assert_eq!(app.strays, [(pid, exited(3))]);
        assert!(app.deaths.is_empty());
        let stats = reactor.stats();
        assert_eq!(stats.unknown_claimed, 1);
        assert_eq!(stats.unknown_unclaimed, 0);
        assert_eq!(stats.reaped, 0);
        assert_eq!(stats.lost, 0);
        // It was never ours: no id names it, so it cannot be signalled
        // through the reactor either.
        assert!(reactor.children().all(|id| id.pid() != pid));
    }
    check.finish();
}

#[test]
fn declined_or_missing_hook_counts_unclaimed() {
    let check = util::Check::start();
    {
        let hooks = always().unknown_child(|app: &mut App, pid, status| {
            app.strays.push((pid, status));
            Claim::Declined
        });
        let mut reactor = Reactor::new(hooks).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();

        let pid = Pid::from(sh_exit(3).id());
        run_until_stats(&mut lp, &mut reactor, &mut app, |s| {
            s.unknown_unclaimed == 1
        });
        assert_eq!(app.strays, [(pid, exited(3))], "the hook saw it");
        assert_eq!(reactor.stats().unknown_claimed, 0);
    }
    {
        let mut reactor = Reactor::new(always()).expect("new, no hook");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();

        drop(sh_exit(4));
        run_until_stats(&mut lp, &mut reactor, &mut app, |s| {
            s.unknown_unclaimed == 1
        });
        let stats = reactor.stats();
        assert_eq!(stats.unknown_claimed, 0);
        assert_eq!(stats.reaped, 0);
        assert!(app.strays.is_empty() && app.deaths.is_empty());
    }
    check.finish();
}

#[test]
fn zombie_from_before_creation_is_collected_by_first_dispatch() {
    let check = util::Check::start();
    {
        let child = sh_exit(5);
        let pid = Pid::from(child.id());
        drop(child);
        wait_zombie(pid);
        // Its SIGCHLD is long gone: only the reactor's own wake-up at
        // creation makes the loop look for it.
        let mut reactor = Reactor::new(always().unknown_child(claim)).expect("new");
        let mut lp = util::Loop::new(&mut reactor);
        let mut app = App::default();
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| !app.strays.is_empty());

        assert_eq!(app.strays, [(pid, exited(5))]);
        assert_eq!(
            reactor.stats().dispatches,
            1,
            "collected by the first dispatch"
        );
        assert_eq!(reactor.stats().unknown_claimed, 1);
    }
    check.finish();
}

#[test]
fn set_mode_library_to_library_always_and_back() {
    let check = util::Check::start();
    {
        let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
        util::assert_no_registration("Library: none while idle");

        // Library, with a live child: the mode cannot change.
        let mut g1 = Gate::new();
        let p1 = fork_gated(&mut reactor, &g1, 2, record);
        assert!(matches!(
            reactor.set_mode(always()),
            Err(Error::ChildrenActive { live: 1 })
        ));
        assert_eq!(reactor.mode(), SigchldOwner::Library);
        g1.open();
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| app.deaths.len() == 1);
        assert_eq!(app.deaths[0].id, p1);
        assert_eq!(app.deaths[0].outcome, Outcome::Reaped(exited(2)));
        util::assert_no_registration("released when idle");

        // Library -> LibraryAlways: strangers now reach the hook.
        reactor
            .set_mode(always().unknown_child(claim))
            .expect("to LibraryAlways");
        assert_eq!(reactor.mode(), SigchldOwner::LibraryAlways);
        assert_ne!(sigchld_handler(), libc::SIG_DFL);
        assert!(matches!(Reactor::new(always()), Err(Error::ReapAllTaken)));
        let stray = Pid::from(sh_exit(3).id());
        let mut g2 = Gate::new();
        let p2 = fork_gated(&mut reactor, &g2, 4, record);
        g2.open();
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| {
            app.deaths.len() == 2 && app.strays.len() == 1
        });
        assert_eq!(app.strays, [(stray, exited(3))]);
        assert_eq!(app.deaths[1].id, p2);
        assert_eq!(app.deaths[1].outcome, Outcome::Reaped(exited(4)));

        // LibraryAlways -> Library: the right to reap all is given back, and
        // a child of someone else is left to its owner.
        reactor
            .set_mode(util::hooks(SigchldOwner::Library))
            .expect("back to Library");
        assert_eq!(reactor.mode(), SigchldOwner::Library);
        util::assert_no_registration("back to Library");
        drop(Reactor::new(always()).expect("LibraryAlways is free again"));
        let mut theirs = sh_exit(6);
        let mut g3 = Gate::new();
        let p3 = fork_gated(&mut reactor, &g3, 8, record);
        wait_zombie(Pid::from(theirs.id()));
        g3.open();
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| app.deaths.len() == 3);
        assert_eq!(app.deaths[2].id, p3);
        assert_eq!(app.deaths[2].outcome, Outcome::Reaped(exited(8)));
        assert_eq!(theirs.wait().expect("std reaps its own child"), exited(6));

        let stats = reactor.stats();
        assert_eq!(stats.reaped, 3);
        assert_eq!(stats.unknown_claimed, 1);
        assert_eq!(stats.unknown_unclaimed, 0);
        assert_eq!(stats.lost, 0);
    }
    check.finish();
}
