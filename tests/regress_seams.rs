//! Regression tests for the defects that sat on the seams of the old
//! layout (issue 12): orphans, adoption, the handler's lifetime, fork
//! replacements and foreign handlers. `Library` mode only (the reap-all
//! cases are in `regress_routes.rs`, a process of their own).

use evchild_testkit as util;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evchild::{Backend, ChildState, Error, Hooks, Pid, Reactor, SigchldOwner};
use util::{Check, Deaths};

fn dispatch_until<C>(
    reactor: &mut Reactor<C>,
    ctx: &mut C,
    limit: Duration,
    mut done: impl FnMut(&C) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while !done(ctx) {
        if Instant::now() >= end {
            return false;
        }
        let _ = util::readable_within(
            std::os::fd::AsRawFd::as_raw_fd(reactor),
            Duration::from_millis(50),
        );
        reactor.dispatch(ctx).expect("dispatch");
    }
    true
}

/// Children left running by a dropped reactor cost another reactor's idle
/// dispatches nothing: no wait call (the old orphan list made one `waitid`
/// per orphan in every dispatch of every reactor, under a process-wide
/// lock). Once they die, an idle reactor is woken and reaps them.
#[test]
fn orphans_cost_nothing_until_they_die() {
    let check = Check::start();
    let pidfd = util::pidfd_or_skip("the Pidfd backend's part");
    for backend in util::BACKENDS {
        if backend == Backend::Pidfd && !pidfd {
            continue;
        }
        let mut left = util::library_with::<Deaths>(backend);
        let mut pids = Vec::new();
        for _ in 0..200 {
            let spawned = left
                .spawn(Command::new("sleep").arg("60"), util::record)
                .expect("spawn sleep");
            pids.push(spawned.id.pid());
        }
        drop(left); // DropPolicy::Leave: 200 orphans
        let mut other = util::library_with::<Deaths>(backend);
        let mut deaths = Deaths::default();
        for _ in 0..2_000 {
            other.dispatch(&mut deaths).expect("idle dispatch");
        }
        assert_eq!(
            other.stats().wait_calls,
            0,
            "{backend:?}: idle dispatches made wait calls for orphans"
        );
        for pid in &pids {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.as_raw()),
                nix::sys::signal::SIGKILL,
            )
            .expect("kill orphan");
        }
        // The orphans' deaths wake `other` (pidfds through the nested
        // orphan set; without pidfds, SIGCHLD while `other` has a child of
        // its own), and its dispatches reap them.
        let keep = other
            .spawn(Command::new("sleep").arg("60"), util::record)
            .expect("spawn")
            .id;
        let end = Instant::now() + Duration::from_secs(10);
        while util::children().len() > 1 {
            assert!(Instant::now() < end, "{backend:?}: orphans not reaped");
            let _ = util::readable_within(
                std::os::fd::AsRawFd::as_raw_fd(&other),
                Duration::from_millis(50),
            );
            other.dispatch(&mut deaths).expect("dispatch");
        }
        other.kill(keep, libc::SIGKILL).expect("kill");
        assert!(dispatch_until(
            &mut other,
            &mut deaths,
            Duration::from_secs(10),
            |d| d.total() == 1
        ));
        assert!(deaths.total() == 1, "{deaths:?}");
    }
    check.finish();
}

/// A child a dropped reactor left running, adopted by another reactor with
/// `watch`, is reported with its exit status (the orphan list used to reap
/// it first, and `watch` then reported it lost).
#[test]
fn watch_of_a_left_child_keeps_its_status() {
    let check = Check::start();
    let pidfd = util::pidfd_or_skip("the Pidfd backend's part");
    for backend in util::BACKENDS {
        if backend == Backend::Pidfd && !pidfd {
            continue;
        }
        let mut a = util::library_with::<Deaths>(backend);
        let mut command = Command::new("sh");
        command
            .args(["-c", "read x; exit 13"])
            .stdin(Stdio::piped());
        let spawned = a.spawn(&mut command, util::record).expect("spawn");
        let pid = spawned.id.pid();
        let mut gate =
            std::fs::File::from(std::os::fd::OwnedFd::from(spawned.stdin.expect("stdin")));
        drop(a);
        let mut b = util::library_with::<Deaths>(backend);
        let mut deaths = Deaths::default();
        // Dispatches of any reactor used to reap orphans: one now must not.
        b.dispatch(&mut deaths).expect("dispatch");
        let id = b.watch(pid, util::record).expect("watch the left child");
        // Blocking write: the pipe end was non-blocking, one byte fits.
        gate.write_all(b"\n").expect("let the child exit");
        drop(gate);
        assert!(
            dispatch_until(&mut b, &mut deaths, Duration::from_secs(10), |d| d.total()
                == 1),
            "{backend:?}: no report"
        );
        deaths.assert_code(id, 13);
    }
    check.finish();
}

/// A `Pidfd` reactor's children that need the handler (here: stop
/// reports) are still served after other code resets `SIGCHLD` to
/// `SIG_DFL` (libuv and libev do when they stop): the next start puts the
/// handler back (it used to only query the disposition).
#[test]
fn pidfd_children_needing_the_handler_survive_sig_dfl() {
    if !util::pidfd_or_skip("the whole test") {
        return;
    }
    let check = Check::start();
    // Dropped (SIG_DFL back) before `check.finish()` releases the suite's
    // lock: after it, the reset would hit the next test.
    let restore = util::RestoreDefault;
    #[derive(Default)]
    struct Ctx {
        stops: usize,
        deaths: Deaths,
    }
    impl util::Record for Ctx {
        fn record(&mut self, exit: evchild::Exit) {
            self.deaths.record(exit);
        }
    }
    let mut reactor = util::library_with::<Ctx>(Backend::Pidfd);
    let mut ctx = Ctx::default();
    let id = reactor
        .spawn(Command::new("sleep").arg("60"), util::record)
        .expect("spawn")
        .id;
    reactor
        .on_state_change(id, |ctx: &mut Ctx, _, _, state| {
            if matches!(state, ChildState::Stopped(_)) {
                ctx.stops += 1;
            }
        })
        .expect("stop reports");
    // Other code resets SIGCHLD.
    util::set_disposition(libc::SIG_DFL, 0);
    // The next start must put evchild's handler back.
    let other = reactor
        .spawn(&mut Command::new("true"), util::record)
        .expect("spawn true")
        .id;
    reactor.kill(id, libc::SIGSTOP).expect("SIGSTOP");
    assert!(
        dispatch_until(&mut reactor, &mut ctx, Duration::from_secs(5), |c| c.stops
            == 1),
        "the stop was never reported"
    );
    reactor.kill(id, libc::SIGKILL).expect("SIGKILL");
    assert!(dispatch_until(
        &mut reactor,
        &mut ctx,
        Duration::from_secs(10),
        |c| c.deaths.total() == 2
    ));
    ctx.deaths.assert_signal(id, libc::SIGKILL);
    ctx.deaths.assert_code(other, 0);
    drop(reactor);
    drop(restore);
    check.finish();
}

/// A fork replacement that returns a live process which is not our child
/// (a grandchild here) is refused with `InvalidPid`: nothing is
/// registered, and the process is never signalled through the reactor.
#[test]
fn fork_replacement_returning_a_stranger_is_refused() {
    let check = Check::start();
    // A grandchild: `sh` starts `sleep` in the background, prints its pid
    // and exits; `sleep` is reparented away from us.
    let out = Command::new("sh")
        .args(["-c", "sleep 60 >/dev/null 2>&1 & echo $!"])
        .output()
        .expect("sh");
    let grandchild: libc::pid_t = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pid");
    let hooks = Hooks::new(SigchldOwner::Library)
        .backend(util::test_backend())
        .fork_replacement(move || Ok(Some(Pid::from_raw(grandchild))));
    let mut reactor = Reactor::<Deaths>::new(hooks).expect("new");
    // SAFETY: the replacement forks nothing; no child code runs.
    let forked = unsafe { reactor.fork(util::record) };
    assert!(
        matches!(forked, Err(Error::InvalidPid { pid }) if pid.as_raw() == grandchild),
        "{forked:?}"
    );
    assert!(reactor.is_empty());
    // Still alive: nothing signalled it.
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(grandchild), None).is_ok(),
        "the stranger was signalled"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(grandchild),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill the grandchild");
    drop(reactor);
    check.finish();
}

extern "C" fn swallow(_: libc::c_int) {}

/// A handler installed over evchild's that does not chain to it would
/// leave every `SIGCHLD`-woken reactor waiting for ever: a start that needs
/// the handler detects it and is refused with `HandlerConflict`, and a
/// chaining one is accepted.
#[test]
fn a_non_chaining_handler_over_ours_is_detected() {
    let check = Check::start();
    // Dropped (SIG_DFL back) before `check.finish()` releases the suite's
    // lock: after it, the reset would hit the next test.
    let restore = util::RestoreDefault;
    let mut reactor = util::library_with::<Deaths>(Backend::Scan);
    let mut deaths = Deaths::default();
    let first = reactor
        .spawn(&mut Command::new("true"), util::record)
        .expect("spawn: installs evchild's handler");
    assert!(dispatch_until(
        &mut reactor,
        &mut deaths,
        Duration::from_secs(10),
        |d| d.total() == 1
    ));
    deaths.assert_code(first.id, 0);
    // Other code installs a handler that swallows SIGCHLD.
    util::set_disposition(swallow as *const () as libc::sighandler_t, libc::SA_RESTART);
    match reactor.spawn(&mut Command::new("true"), util::record) {
        Err(Error::HandlerConflict { .. }) => {}
        other => panic!("a non-chaining handler went unnoticed: {other:?}"),
    }
    assert!(reactor.is_empty(), "nothing started");
    drop(reactor);
    drop(restore);
    check.finish();
}

/// An application that reaps a left child itself (by pid, as the docs
/// allow once it is an orphan it kept) gets its status; adopting it
/// afterwards says it is no child any more, and the orphan list never
/// reaps another process in its place.
#[test]
fn a_left_child_reaped_by_the_application_is_not_adopted() {
    let check = Check::start();
    let mut a = util::library::<Deaths>();
    let pid = a
        .spawn(&mut Command::new("true"), util::record)
        .expect("spawn")
        .id
        .pid();
    drop(a);
    // Reap it ourselves (the application's right once it is an orphan it
    // knows about), then try to adopt it: not a child any more.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid.as_raw()), None);
    let mut b = util::library::<Deaths>();
    match b.watch(pid, util::record) {
        Err(Error::NotAChild { .. }) => {}
        other => panic!("{other:?}"),
    }
    // The orphan list lets go of it (its pidfd, ready, says ECHILD) at the
    // next dispatch of any reactor.
    b.dispatch(&mut Deaths::default()).expect("dispatch");
    drop(b);
    check.finish();
}

/// An orphan without a pidfd (none could be opened at the drop:
/// descriptors exhausted) is still reaped once it dies, although the only
/// reactor left is an idle `Pidfd` one that holds no `SIGCHLD` handler
/// slot: the orphan list takes one for a wake pipe in the orphan set.
#[test]
fn an_orphan_without_a_pidfd_is_reaped_with_no_handler_reactor() {
    if !util::pidfd_available() {
        util::skip!("no pidfds here");
        return;
    }
    let check = Check::start();
    let mut left = util::library_with::<Deaths>(Backend::Peek);
    let mut command = Command::new("sh");
    command.args(["-c", "read x; exit 4"]).stdin(Stdio::piped());
    let spawned = left.spawn(&mut command, util::record).expect("spawn");
    let mut gate = std::fs::File::from(std::os::fd::OwnedFd::from(spawned.stdin.expect("stdin")));
    let mut other = util::library_with::<Deaths>(Backend::Pidfd);
    // No descriptor can be opened while the reactor drops: its child
    // becomes an orphan without a pidfd.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer for getrlimit.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let low = libc::rlimit {
        rlim_cur: 3,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: valid `rlimit` values; only this process's limit changes, and
    // the test holds the suite's lock.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    drop(left);
    // SAFETY: as above, restoring what getrlimit gave.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    gate.write_all(b"\n").expect("let the child exit");
    drop(gate);
    let mut deaths = Deaths::default();
    let end = Instant::now() + Duration::from_secs(10);
    while !util::children().is_empty() {
        assert!(
            Instant::now() < end,
            "the orphan without a pidfd stayed a zombie"
        );
        let _ = util::readable_within(
            std::os::fd::AsRawFd::as_raw_fd(&other),
            Duration::from_millis(50),
        );
        other.dispatch(&mut deaths).expect("dispatch");
    }
    assert_eq!(deaths.total(), 0, "an orphan is nobody's callback");
    drop(other);
    check.finish();
}
