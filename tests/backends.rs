//! The three `Library` backends side by side, whatever `EVCHILD_TEST_BACKEND`
//! says: each test asks for each backend in turn ([`Backend::Pidfd`] only
//! where the kernel has pidfds; elsewhere those parts are skipped, with a
//! skip line: `evchild_testkit::skip!`).
//!
//! * pidfd: one pidfd per live child in the reactor's epoll set, no
//!   `SIGCHLD` handler at all;
//! * peek: `SIGCHLD`, then `waitid(WNOWAIT)` names the next exited child,
//!   falling back to the scan when another owner's zombie is first in line;
//! * scan: `SIGCHLD`, then one `waitpid(pid, WNOHANG)` per live child.
//!
//! Also `Exit::usage` (from `wait4`) for each backend and the other modes.
//!
//! Its own binary: the tests count the process's pidfds, look at its
//! `SIGCHLD` disposition and its children's resource usage
//! (`RUSAGE_CHILDREN`), so each holds [`util::Check`] and runs alone.
//!
//! Forks: the test binary has other threads, so every forked child only
//! calls async-signal-safe functions (`_exit`, `read`, `close`) until it
//! dies; each `unsafe` block says which.

#![warn(clippy::undocumented_unsafe_blocks)]

use evchild_testkit as util;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evchild::{Backend, ChildId, Exit, Forked, Hooks, Outcome, Reactor, SigchldOwner};
use util::{
    exited, fork_exit, fork_gated, fork_waiting, record, shell, sigchld_handler, wait_zombie,
    Deaths, Gate, KillOnPanic, Loop,
};

/// How long any test waits for its children; far more than any needs.
const LIMIT: Duration = Duration::from_secs(30);

/// What `/proc/self/fd/N` links to for a pidfd.
const PIDFD: &str = "anon_inode:[pidfd]";

/// The backends this system has: all three, or scan and peek where there
/// are no pidfds.
fn backends() -> Vec<Backend> {
    let pidfd = util::pidfd_or_skip("the Pidfd backend's part");
    util::BACKENDS
        .into_iter()
        .filter(|&b| pidfd || b != Backend::Pidfd)
        .collect()
}

/// The descriptors of this process that are pidfds.
fn pidfds() -> Vec<RawFd> {
    util::open_fds()
        .into_iter()
        .filter(|fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|target| target.as_os_str() == PIDFD)
        })
        .collect()
}

/// Asserts the process holds `expected` pidfds.
#[track_caller]
fn assert_pidfds(expected: usize, what: &str) {
    let found = pidfds();
    assert_eq!(found.len(), expected, "pidfds {what}: {found:?}");
}

/// A `Library` reactor with `backend`, its loop, and a context.
#[track_caller]
fn setup<C: Default>(backend: Backend) -> (Reactor<C>, Loop, C) {
    let (reactor, lp, ctx) = util::library_loop_with::<C>(backend);
    assert_eq!(reactor.backend(), Some(backend), "the backend asked for");
    (reactor, lp, ctx)
}

/// `reactor.backend()` is what `Hooks::backend` asked for; `Auto` (and the
/// default hooks) resolve to pidfd where the kernel has pidfds, else peek;
/// `set_mode` changes it, and other modes report the resolved one without
/// using it.
#[test]
fn backend_is_what_was_asked() {
    let check = util::Check::start();
    {
        let auto = if util::pidfd_available() {
            Backend::Pidfd
        } else {
            Backend::Peek
        };
        for backend in backends() {
            let reactor = Reactor::<()>::new(Hooks::new(SigchldOwner::Library).backend(backend))
                .expect("new");
            assert_eq!(reactor.backend(), Some(backend));
        }
        let mut reactor =
            Reactor::<()>::new(Hooks::new(SigchldOwner::Library)).expect("new(default)");
        assert_eq!(reactor.backend(), Some(auto), "the default backend");
        let asked = Hooks::new(SigchldOwner::Library).backend(Backend::Auto);
        assert_eq!(
            Reactor::<()>::new(asked).expect("new").backend(),
            Some(auto)
        );
        for backend in backends() {
            reactor
                .set_mode(Hooks::new(SigchldOwner::Library).backend(backend))
                .expect("set_mode with no child");
            assert_eq!(reactor.backend(), Some(backend), "after set_mode");
        }
        reactor
            .set_mode(Hooks::new(SigchldOwner::Mainloop))
            .expect("set_mode(Mainloop)");
        assert_eq!(reactor.backend(), None, "no backend: the application reaps");
        util::assert_no_registration("Mainloop");
    }
    check.finish();
}

/// Exact statuses end to end through a mio loop, for each backend: exit
/// codes 0, 1, 42 and 255 (forked), 7 (spawned), `SIGKILL` and `SIGTERM`
/// sent through `Reactor::kill`. With pidfds, no handler is installed at any
/// point and exactly one pidfd is open per registered child, dead or alive,
/// until its report.
#[test]
fn exact_statuses_through_a_mio_loop() {
    let check = util::Check::start();
    {
        let _kill = KillOnPanic;
        for backend in backends() {
            let pidfd = backend == Backend::Pidfd;
            let before = pidfds().len();
            let untouched = util::HandlerWatch::start();
            let gate = Gate::new();
            let (mut reactor, mut lp, mut deaths) = setup::<Deaths>(backend);

            let codes: Vec<(ChildId, i32)> = [0, 1, 42, 255]
                .into_iter()
                .map(|code| (fork_exit(&mut reactor, code, record), code))
                .collect();
            let killed = fork_waiting(&mut reactor, &gate, record);
            let termed = fork_waiting(&mut reactor, &gate, record);
            let spawned = reactor
                .spawn(
                    Command::new("/bin/sh")
                        .args(["-c", "exit 7"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null()),
                    record,
                )
                .expect("spawn")
                .id;
            if pidfd {
                untouched.assert_untouched("pidfd");
                assert_pidfds(before + 7, "one per registered child");
            } else {
                assert_ne!(sigchld_handler(), libc::SIG_DFL, "{backend:?}: no handler");
                assert_pidfds(before, "with a SIGCHLD backend");
            }
            reactor.kill(killed, libc::SIGKILL).expect("kill SIGKILL");
            reactor.kill(termed, libc::SIGTERM).expect("kill SIGTERM");

            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 7);
            for &(id, code) in &codes {
                deaths.assert_code(id, code);
            }
            deaths.assert_code(spawned, 7);
            deaths.assert_signal(killed, libc::SIGKILL);
            deaths.assert_signal(termed, libc::SIGTERM);
            assert_eq!(deaths.seen.len(), 7, "{backend:?}");
            let stats = reactor.stats();
            assert_eq!((stats.reaped, stats.lost), (7, 0), "{backend:?}");
            assert!(reactor.is_empty());
            assert_pidfds(before, "after every report");
            util::assert_no_registration(&format!("{backend:?}"));
            // More wake-ups find nothing.
            reactor.dispatch(&mut deaths).expect("dispatch");
            assert_eq!(deaths.total(), 7);
        }
    }
    check.finish();
}

/// With pidfds, the `SIGCHLD` disposition is left alone while children live
/// (no handler is installed, no registration taken), and the descriptors the children cost are exactly one
/// pidfd per live child: 20 children open 20, each report closes one, and
/// none is left at the end. A forked child that execs, a spawned one and a
/// watched one alike.
#[test]
fn pidfd_backend_installs_no_handler_and_holds_one_pidfd_per_child() {
    const N: usize = 20;
    let check = util::Check::start();
    if !util::pidfd_or_skip("the whole test") {
        return check.finish();
    }
    {
        let _kill = KillOnPanic;
        let before = pidfds().len();
        let gate = Gate::new();
        let untouched = util::HandlerWatch::start();
        let fds_before = util::open_fds().len();
        let (mut reactor, mut lp, mut deaths) = setup::<Deaths>(Backend::Pidfd);
        let reactor_fds = util::open_fds().len() - fds_before;
        untouched.assert_untouched("new");

        let mut ids: Vec<ChildId> = (0..N - 2)
            .map(|_| fork_waiting(&mut reactor, &gate, record))
            .collect();
        let sleeper = reactor
            .spawn(Command::new("sleep").arg("30"), record)
            .expect("spawn sleep")
            .id;
        ids.push(sleeper);
        let mut adopted = shell("sleep 30");
        let watched = reactor
            .watch(evchild::Pid::from(adopted.id()), record)
            .expect("watch");
        ids.push(watched);
        untouched.assert_untouched("a handler for pidfds");
        assert_pidfds(before + N, "one per live child");
        // And nothing else: the reactor's own descriptors, plus the pidfds.
        assert_eq!(
            util::open_fds().len(),
            fds_before + reactor_fds + N,
            "descriptors besides one pidfd per child"
        );

        for (i, &id) in ids.iter().enumerate().step_by(2) {
            reactor.kill(id, libc::SIGKILL).expect("kill");
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == i / 2 + 1);
            untouched.assert_untouched("a handler for pidfds");
        }
        assert_pidfds(before + N / 2, "after half the reports");
        for &id in ids.iter().skip(1).step_by(2) {
            reactor.kill(id, libc::SIGKILL).expect("kill");
        }
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == N);
        for &id in &ids {
            deaths.assert_signal(id, libc::SIGKILL);
        }
        assert_pidfds(before, "after every report");
        untouched.assert_untouched("after every report");
        // std's handle of the watched child: evchild reaped it.
        assert!(adopted.try_wait().is_err(), "std could still wait for it");
    }
    check.finish();
}

/// A thousand children alive at once, killed at once: each reported exactly
/// once, with `SIGKILL`, under each backend. (Where `RLIMIT_NOFILE` is
/// lower than a thousand pidfds, the children beyond it fall back to
/// `SIGCHLD`: see `pidfd_fallback.rs`.)
#[test]
fn thousand_children_reported_exactly_once() {
    const N: usize = 1000;
    let check = util::Check::start();
    {
        let _kill = KillOnPanic;
        for backend in backends() {
            let gate = Gate::new();
            let started = Instant::now();
            let (mut reactor, mut lp, mut deaths) = setup::<Deaths>(backend);
            let ids: Vec<ChildId> = (0..N)
                .map(|_| fork_waiting(&mut reactor, &gate, record))
                .collect();
            let forked = started.elapsed();
            for &id in &ids {
                reactor.kill(id, libc::SIGKILL).expect("kill");
            }
            let killed = Instant::now();
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() >= N);
            let reaped = killed.elapsed();
            for &id in &ids {
                deaths.assert_signal(id, libc::SIGKILL);
            }
            assert_eq!(deaths.total(), N, "{backend:?}: reported exactly once");
            reactor.dispatch(&mut deaths).expect("dispatch");
            assert_eq!(deaths.total(), N, "{backend:?}: a report twice");
            let stats = reactor.stats();
            assert_eq!((stats.reaped, stats.lost), (N as u64, 0), "{backend:?}");
            eprintln!(
                "{backend:?}: {N} children forked in {forked:?}; killed and all reported \
                 in {reaped:?} ({} dispatches)",
                stats.dispatches
            );
        }
    }
    check.finish();
}

/// Peek's fallback: another owner's child (a std `Command` child) that has
/// exited and that its owner has not waited for yet is a zombie first in
/// line, so the peek cannot see past it. evchild's children that die
/// meanwhile are all still reported (by the fallback scan), exactly once;
/// a second such zombie that appears later changes nothing; and the std
/// children's own `try_wait()` afterwards still gets their statuses: peek
/// never reaps them. The same holds with scan and pidfd.
#[test]
fn foreign_zombie_first_in_line() {
    let check = util::Check::start();
    {
        let _kill = KillOnPanic;
        for backend in backends() {
            let gate = Gate::new();
            let (mut reactor, mut lp, mut deaths) = setup::<Deaths>(backend);
            // The oldest child, so the first the kernel names.
            let mut first = util::sh_exit(3);
            wait_zombie(evchild::Pid::from(first.id()));

            let waiting = fork_waiting(&mut reactor, &gate, record);
            let ids: Vec<ChildId> = (0..10)
                .map(|code| fork_exit(&mut reactor, code, record))
                .collect();
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 10);
            for (code, &id) in ids.iter().enumerate() {
                deaths.assert_code(id, code as i32);
            }

            // Another one, dead before evchild's last child.
            let mut second = util::sh_exit(4);
            wait_zombie(evchild::Pid::from(second.id()));
            let more: Vec<ChildId> = (20..25)
                .map(|code| fork_exit(&mut reactor, code, record))
                .collect();
            reactor.kill(waiting, libc::SIGKILL).expect("kill");
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 16);
            for (code, &id) in (20..).zip(&more) {
                deaths.assert_code(id, code);
            }
            deaths.assert_signal(waiting, libc::SIGKILL);
            reactor.dispatch(&mut deaths).expect("dispatch");
            assert_eq!(deaths.total(), 16, "{backend:?}: a report twice");
            let stats = reactor.stats();
            assert_eq!((stats.reaped, stats.lost), (16, 0), "{backend:?}");

            // Both zombies are still there for their owner.
            let status = first.try_wait().expect("try_wait").expect("waitable");
            assert_eq!(status, exited(3), "{backend:?}");
            let status = second.try_wait().expect("try_wait").expect("waitable");
            assert_eq!(status, exited(4), "{backend:?}");
        }
    }
    check.finish();
}

/// `kill` with each backend (through `pidfd_send_signal` where a pidfd is
/// held): `SIGTERM` is reported as signal 15, signal 0 only checks, and a
/// child that has exited but is not yet reaped (a zombie, still
/// registered) can still be signalled, harmlessly, as with `kill(2)`.
#[test]
fn kill_with_each_backend() {
    let check = util::Check::start();
    {
        let _kill = KillOnPanic;
        for backend in backends() {
            let gate = Gate::new();
            let (mut reactor, mut lp, mut deaths) = setup::<Deaths>(backend);
            let termed = fork_waiting(&mut reactor, &gate, record);
            reactor.kill(termed, 0).expect("kill(0)");
            reactor.kill(termed, libc::SIGTERM).expect("kill(SIGTERM)");
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
            deaths.assert_signal(termed, libc::SIGTERM);
            assert_eq!(deaths.status(termed).signal(), Some(15));

            let zombie = fork_exit(&mut reactor, 6, record);
            wait_zombie(zombie.pid());
            reactor
                .kill(zombie, libc::SIGTERM)
                .unwrap_or_else(|e| panic!("{backend:?}: kill of a zombie: {e}"));
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 2);
            deaths.assert_code(zombie, 6);
        }
    }
    check.finish();
}

// ---------------------------------------------------------------------------
// Resource usage
// ---------------------------------------------------------------------------

/// A shell loop that burns 120 ms of CPU, however fast the machine: it
/// spins until its own user + system time (fields 14 and 15 of
/// `/proc/$$/stat`, in clock ticks of 10 ms) reaches 12 ticks. (A fixed
/// count of iterations would burn less than the checks below need on a
/// fast enough machine.)
const BURN: &str = "while :; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; \
                    read -r s < /proc/$$/stat; set -- $s; \
                    [ $(( ${14} + ${15} )) -ge 12 ] && break; done";

/// User + system time of this process's reaped children
/// (`getrusage(RUSAGE_CHILDREN)`).
fn children_cpu() -> Duration {
    // SAFETY: all-zero is a valid `rusage`, overwritten by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let time = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    time(ru.ru_utime) + time(ru.ru_stime)
}

/// Starts [`BURN`] through `reactor`.
#[track_caller]
fn spawn_burner<C: util::Record + 'static>(reactor: &mut Reactor<C>) -> ChildId {
    reactor
        .spawn(
            Command::new("/bin/sh")
                .args(["-c", BURN])
                .stdin(Stdio::null()),
            record,
        )
        .expect("spawn burner")
        .id
}

/// The report of a busy child has its resource usage: the CPU it burned
/// (more than 20 ms of user + system time, and no more than the kernel
/// added to `RUSAGE_CHILDREN` when it was reaped, which must be over 50 ms
/// so the check means something) and a peak RSS.
#[track_caller]
fn assert_busy_usage(exit: &Exit, cpu_before: Duration, what: &str) {
    let added = children_cpu().saturating_sub(cpu_before);
    assert_eq!(exit.status(), Some(exited(0)), "{what}");
    let usage = exit
        .usage
        .unwrap_or_else(|| panic!("{what}: no usage in {exit:?}"));
    let cpu = usage.user_time + usage.system_time;
    eprintln!("{what}: {usage:?} (RUSAGE_CHILDREN grew by {added:?})");
    assert!(
        added > Duration::from_millis(50),
        "{what}: the burner burned only {added:?}"
    );
    assert!(cpu > Duration::from_millis(20), "{what}: {usage:?}");
    assert!(
        cpu <= added + Duration::from_millis(1),
        "{what}: {usage:?} is more than the {added:?} the kernel counted"
    );
    assert!(usage.max_rss_kib > 0, "{what}: {usage:?}");
}

/// `Exit::usage` of a child that burns CPU, under each backend, in
/// `LibraryAlways` mode, and in `Mainloop` mode through `sigchld_occurred`
/// (evchild reaps, so it knows); `None` for a status the application
/// reports with `reaped` (it did the waiting).
#[test]
fn usage_of_a_busy_child() {
    let check = util::Check::start();
    {
        let _kill = KillOnPanic;
        for backend in backends() {
            let (mut reactor, mut lp, mut deaths) = setup::<Vec<Exit>>(backend);
            let cpu_before = children_cpu();
            let id = spawn_burner(&mut reactor);
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 1);
            assert_eq!(deaths[0].id, id);
            assert_busy_usage(&deaths[0], cpu_before, &format!("{backend:?}"));
        }

        {
            let mut reactor =
                Reactor::new(Hooks::new(SigchldOwner::LibraryAlways)).expect("new(LibraryAlways)");
            let mut lp = Loop::new(&mut reactor);
            let mut deaths = Vec::new();
            let pidfds_before = pidfds().len();
            let cpu_before = children_cpu();
            let id = spawn_burner(&mut reactor);
            assert_pidfds(pidfds_before, "LibraryAlways opens none");
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d: &Vec<Exit>| {
                d.len() == 1
            });
            assert_eq!(deaths[0].id, id);
            assert_busy_usage(&deaths[0], cpu_before, "LibraryAlways");
        }

        let mut reactor = Reactor::new(Hooks::new(SigchldOwner::Mainloop)).expect("new(Mainloop)");
        let mut deaths: Vec<Exit> = Vec::new();
        let cpu_before = children_cpu();
        let id = spawn_burner(&mut reactor);
        wait_zombie(id.pid());
        reactor
            .sigchld_occurred(&mut deaths)
            .expect("sigchld_occurred");
        assert_eq!(deaths.len(), 1);
        assert_busy_usage(&deaths[0], cpu_before, "Mainloop, sigchld_occurred");

        let id = spawn_burner(&mut reactor);
        let status = util::reap_child(id.pid());
        reactor
            .reaped(&mut deaths, id.pid(), status)
            .expect("reaped");
        assert_eq!(deaths[1].id, id);
        assert_eq!(deaths[1].status(), Some(exited(0)));
        assert_eq!(deaths[1].usage, None, "usage made up for `reaped`");
    }
    check.finish();
}

/// A child reaped by other code is reported `Lost`, with no usage, under
/// each backend (peek finds out by its fallback scan once the process has
/// no child left).
#[test]
fn lost_child_has_no_usage() {
    let check = util::Check::start();
    {
        let _kill = KillOnPanic;
        for backend in backends() {
            let (mut reactor, mut lp, mut deaths) = setup::<Vec<Exit>>(backend);
            let mut gate = Gate::new();
            let id = fork_gated(&mut reactor, &gate, 9, record);
            gate.open();
            // Other code's waitpid(pid) takes it.
            assert_eq!(util::reap_child(id.pid()), exited(9));
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.len() == 1);
            assert_eq!(deaths[0].id, id);
            assert_eq!(deaths[0].outcome, Outcome::Lost, "{backend:?}");
            assert_eq!(deaths[0].usage, None, "{backend:?}: usage of a lost child");
            assert_eq!(reactor.stats().lost, 1);
        }
    }
    check.finish();
}

// ---------------------------------------------------------------------------
// A forked child holding copies of the pidfds
// ---------------------------------------------------------------------------

/// Forks through `reactor` a child that keeps every descriptor it inherits
/// (as a child that runs Rust code without exec does) and waits until
/// `hold`'s write end, held by the test only, is closed; then `_exit(0)`.
/// It only calls `close(2)`, `read(2)` and `_exit(2)`, which are
/// async-signal-safe.
#[track_caller]
fn fork_holder<C>(reactor: &mut Reactor<C>, hold: &(OwnedFd, OwnedFd)) -> ChildId
where
    C: util::Record + 'static,
{
    let (read, write) = (hold.0.as_raw_fd(), hold.1.as_raw_fd());
    // SAFETY: the child only calls `close`, `read` and `_exit`, which are
    // async-signal-safe.
    match unsafe { reactor.fork(record) } {
        Ok(Forked::Child) => {
            // SAFETY: close(2) is async-signal-safe; this copy of the write
            // end is the child's own.
            unsafe { libc::close(write) };
            util::read_byte(read);
            util::exit_child(0)
        }
        Ok(Forked::Parent(id)) => id,
        Err(e) => panic!("fork: {e}"),
    }
}

/// A child forked without exec inherits the pidfds open at the fork (it
/// does not exec, so close-on-exec does not close them). The epoll set
/// holds a pidfd until *every* copy is closed, so after the parent reports
/// an earlier child and closes its pidfd, that pidfd (ready for good: its
/// process is gone) could stay in the reactor's set while the forked child
/// lives, and keep the reactor's descriptor readable after every
/// `dispatch`: a loop that watches it level-triggered would spin.
///
/// With each backend: after the earlier child is reported, the reactor's
/// descriptor is quiet.
#[test]
fn reported_child_leaves_the_reactor_quiet_while_a_forked_child_holds_its_pidfd() {
    let check = util::Check::start();
    let mut spurious = Vec::new();
    {
        let _kill = KillOnPanic;
        for backend in backends() {
            let gate = Gate::new();
            let (mut reactor, mut lp, mut deaths) = setup::<Deaths>(backend);
            let early = fork_waiting(&mut reactor, &gate, record);
            let hold = util::pipe();
            let holder = fork_holder(&mut reactor, &hold);
            reactor.kill(early, libc::SIGKILL).expect("kill");
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
            deaths.assert_signal(early, libc::SIGKILL);

            // The reactor has nothing to do: its descriptor must be quiet,
            // now and after another dispatch.
            let quiet_now = !util::readable(reactor.as_raw_fd());
            reactor.dispatch(&mut deaths).expect("dispatch");
            let quiet_later =
                !util::readable_within(reactor.as_raw_fd(), Duration::from_millis(20));
            // How often a level-triggered loop would wake in 50 ms.
            let started = Instant::now();
            let mut wakeups = 0;
            while started.elapsed() < Duration::from_millis(50) {
                if util::readable_within(reactor.as_raw_fd(), Duration::from_millis(50)) {
                    wakeups += 1;
                    reactor.dispatch(&mut deaths).expect("dispatch");
                }
            }
            // And how often the test's mio loop (edge-triggered) would.
            let mut events = mio::Events::with_capacity(4);
            let mut mio_wakeups = 0;
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(50) {
                match lp.poll.poll(&mut events, Some(Duration::from_millis(50))) {
                    Ok(()) if !events.is_empty() => {
                        mio_wakeups += 1;
                        reactor.dispatch(&mut deaths).expect("dispatch");
                    }
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("poll: {e}"),
                }
            }
            if !(quiet_now && quiet_later) || wakeups > 0 || mio_wakeups > 0 {
                spurious.push(format!(
                    "{backend:?}: readable after the report (now {}, after a dispatch {}); \
                     in 50 ms a level-triggered loop woke {wakeups} times, the mio loop \
                     {mio_wakeups} times",
                    !quiet_now, !quiet_later
                ));
            }
            assert_eq!(deaths.total(), 1);

            drop(hold);
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 2);
            deaths.assert_code(holder, 0);
        }
    }
    check.finish();
    assert!(spurious.is_empty(), "{spurious:#?}");
}
