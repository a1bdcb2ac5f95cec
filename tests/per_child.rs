//! Per-child control outside the death callback: `try_wait`, `wait_for`,
//! `forget`, `cancel_terminate`, `pidfd`, typed signals, `fork_with`.
//! Real children, exact statuses, under this run's backend.

use evchild_testkit as util;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use evchild::{ChildStatus, Error, Exit, Outcome, Signal};
use util::{exited, record, signaled, Check, Deaths, KillOnPanic};

const LIMIT: Duration = Duration::from_secs(30);

/// try_wait on a running child, on one that exited but whose report is
/// pending, and on one whose callback ran; it never reaps behind the
/// callback's back.
#[test]
fn try_wait_running_exited_reported() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let mut gate = util::Gate::new();
        let id = util::fork_gated(&mut reactor, &gate, 5, record);
        assert_eq!(
            reactor.try_wait(id).expect("try_wait"),
            ChildStatus::Running
        );

        gate.open();
        util::wait_zombie(id.pid());
        // Dead, not yet reported: the status, and the zombie stays.
        assert_eq!(
            reactor.try_wait(id).expect("try_wait"),
            ChildStatus::Dead(Outcome::Reaped(exited(5)))
        );
        assert!(util::is_our_child(id.pid()), "try_wait reaped the child");
        assert_eq!(deaths.total(), 0);

        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
        deaths.assert_code(id, 5);
        assert_eq!(
            reactor.try_wait(id).expect("try_wait"),
            ChildStatus::Reported
        );
    }
    check.finish();
}

/// A report queued but not delivered (behind a callback that panicked) is
/// `Exited` with the status its callback will get.
#[test]
fn try_wait_sees_a_queued_report() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let mut reactor = util::library::<Deaths>();
        let mut deaths = Deaths::default();
        let boom = |_: &mut Deaths, _: &mut evchild::Reactor<Deaths>, _: Exit| panic!("boom");
        let one = util::fork_exit(&mut reactor, 1, boom);
        let two = util::fork_exit(&mut reactor, 2, boom);
        util::wait_zombie(one.pid());
        util::wait_zombie(two.pid());
        let mut dispatch_until_a_panic = |reactor: &mut evchild::Reactor<Deaths>| loop {
            util::readable_within(reactor.as_raw_fd(), LIMIT);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                reactor.dispatch(&mut deaths)
            }));
            if result.is_err() {
                return;
            }
        };
        dispatch_until_a_panic(&mut reactor);
        // One callback ran (and panicked); the other's report is queued.
        let statuses = [one, two].map(|id| reactor.try_wait(id).expect("try_wait"));
        match statuses {
            [ChildStatus::Reported, ChildStatus::Dead(Outcome::Reaped(s))] => {
                assert_eq!(s, exited(2))
            }
            [ChildStatus::Dead(Outcome::Reaped(s)), ChildStatus::Reported] => {
                assert_eq!(s, exited(1))
            }
            other => panic!("expected one reported and one queued: {other:?}"),
        }
        dispatch_until_a_panic(&mut reactor);
        for id in [one, two] {
            assert_eq!(
                reactor.try_wait(id).expect("try_wait"),
                ChildStatus::Reported
            );
        }
    }
    check.finish();
}

/// wait_for: times out on a running child (without killing it), returns
/// true once its callback ran, and runs the other callbacks meanwhile.
#[test]
fn wait_for_with_a_time_out() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let mut reactor = util::library::<Deaths>();
        let mut deaths = Deaths::default();
        let mut gate = util::Gate::new();
        let slow = util::fork_gated(&mut reactor, &gate, 7, record);
        let quick = util::fork_exit(&mut reactor, 3, record);

        let started = Instant::now();
        let done = reactor
            .wait_for(&mut deaths, slow, Some(Duration::from_millis(200)))
            .expect("wait_for");
        assert!(!done, "the gated child cannot have exited");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(reactor.contains(slow));
        // The other child's callback ran meanwhile.
        deaths.assert_code(quick, 3);

        gate.open();
        assert!(reactor
            .wait_for(&mut deaths, slow, Some(LIMIT))
            .expect("wait_for"));
        deaths.assert_code(slow, 7);
        // Already reported: true at once.
        assert!(reactor
            .wait_for(&mut deaths, slow, Some(Duration::ZERO))
            .expect("wait_for"));
    }
    check.finish();
}

/// forget: the callback never runs, the pidfd (if any) comes back, and the
/// caller reaps the child itself with its exact status.
#[test]
fn forget_then_reap_it_yourself() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let mut gate = util::Gate::new();
        let forgotten_id =
            util::fork_gated(&mut reactor, &gate, 9, |_: &mut Deaths, _, exit: Exit| {
                panic!("a forgotten child was reported: {exit:?}")
            });
        let other = util::fork_gated(&mut reactor, &gate, 4, record);
        reactor
            .terminate(forgotten_id, Duration::from_millis(50))
            .ok();
        let forgotten = reactor.forget(forgotten_id).expect("forget");
        assert_eq!(forgotten.pid, forgotten_id.pid());
        assert_eq!(
            forgotten.pidfd.is_some(),
            reactor.backend() == Some(evchild::Backend::Pidfd),
            "the pidfd comes back exactly when there was one"
        );
        assert!(!reactor.contains(forgotten_id));
        assert!(matches!(
            reactor.kill(forgotten_id, Signal::TERM),
            Err(Error::AlreadyReaped { .. })
        ));
        gate.open();
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
        deaths.assert_code(other, 4);
        // The forgotten one is ours to reap; its terminate deadline went
        // with it (the SIGTERM was sent: a gated child dies of it).
        let status = util::reap_child(forgotten.pid);
        assert!(
            status == signaled(libc::SIGTERM) || status == exited(9),
            "{status:?}"
        );
        drop(forgotten.pidfd);
        assert_eq!(deaths.total(), 1);
    }
    check.finish();
}

/// A cancelled deadline never kills: the child ignores SIGTERM, the grace
/// runs out, and it is still alive; then it is stopped by hand.
#[test]
fn a_cancelled_deadline_never_kills() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let id = reactor
            .spawn(&mut util::quiet_sh("trap '' TERM; sleep 30"), record)
            .expect("spawn")
            .id;
        // Let the shell set its trap before the SIGTERM.
        std::thread::sleep(Duration::from_millis(100));
        reactor
            .terminate(id, Duration::from_millis(100))
            .expect("terminate");
        assert!(reactor.cancel_terminate(id).expect("cancel"));
        assert!(!reactor.cancel_terminate(id).expect("cancel again"));
        assert_eq!(reactor.timeout(), None, "no deadline left");
        let until = Instant::now() + Duration::from_millis(400);
        while Instant::now() < until {
            util::readable_within(reactor.as_raw_fd(), Duration::from_millis(20));
            reactor.dispatch(&mut deaths).expect("dispatch");
        }
        assert!(reactor.contains(id), "the cancelled deadline killed it");
        assert_eq!(
            reactor.try_wait(id).expect("try_wait"),
            ChildStatus::Running
        );
        reactor.kill(id, Signal::KILL).expect("kill");
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
        deaths.assert_signal(id, libc::SIGKILL);
    }
    check.finish();
}

/// Typed signals: a constant, a nix signal, a checked raw number and a
/// real-time signal all arrive; a bad number is refused before sending.
#[test]
fn typed_signals() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let rt = Signal::realtime(3).expect("SIGRTMIN+3");
        let ids: Vec<_> = (0..4)
            .map(|_| {
                reactor
                    .spawn(&mut util::quiet_sh("exec sleep 30"), record)
                    .expect("spawn")
                    .id
            })
            .collect();
        assert!(matches!(
            reactor.kill(ids[0], 64_000),
            Err(Error::InvalidSignal { signal: 64_000 })
        ));
        assert!(matches!(
            Signal::realtime(1_000),
            Err(Error::InvalidSignal { .. })
        ));
        reactor.kill(ids[0], Signal::TERM).expect("Signal::TERM");
        reactor
            .kill(ids[1], nix::sys::signal::Signal::SIGUSR1)
            .expect("nix signal");
        reactor.kill(ids[2], libc::SIGHUP).expect("raw number");
        reactor.kill(ids[3], rt).expect("real-time signal");
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 4);
        deaths.assert_signal(ids[0], libc::SIGTERM);
        deaths.assert_signal(ids[1], libc::SIGUSR1);
        deaths.assert_signal(ids[2], libc::SIGHUP);
        deaths.assert_signal(ids[3], rt.as_raw());
    }
    check.finish();
}

/// The pidfd accessor: with the Pidfd backend, a descriptor that names the
/// child (a pidfd_send_signal through it arrives); otherwise none.
#[test]
fn pidfd_accessor() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let id = reactor
            .spawn(&mut util::quiet_sh("exec sleep 30"), record)
            .expect("spawn")
            .id;
        let pidfd = reactor.pidfd(id).expect("pidfd").map(|fd| fd.as_raw_fd());
        match reactor.backend() {
            Some(evchild::Backend::Pidfd) => {
                let fd = pidfd.expect("a Pidfd-backend child has a pidfd");
                // SAFETY: integers and a null siginfo, which the call allows.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd,
                        libc::SIGUSR2,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
                assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            }
            _ => {
                assert_eq!(pidfd, None);
                reactor.kill(id, Signal::USR2).expect("kill");
            }
        }
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
        deaths.assert_signal(id, libc::SIGUSR2);
        assert!(matches!(
            reactor.pidfd(id),
            Err(Error::AlreadyReaped { .. })
        ));
    }
    check.finish();
}

/// fork_with: the closure's return value is the exit code; a panic in the
/// forked child ends it with SIGABRT and never runs the parent's code
/// (here, the test's own `catch_unwind` around the call).
#[test]
fn fork_with_panic_in_the_child_aborts() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
        let me = evchild::Pid::this();
        // SAFETY: the child returns a number (then `_exit`), or panics
        // (then `abort`); see `fork_with`'s docs for the panic's caveat,
        // acceptable in a test that holds the serialisation lock.
        let returned = unsafe { reactor.fork_with(|| 6, record) }.expect("fork_with");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: as above.
            unsafe {
                reactor.fork_with(
                    || {
                        std::panic::set_hook(Box::new(|_| {}));
                        panic!("in the child")
                    },
                    record,
                )
            }
        }));
        // Only the parent ever gets here.
        assert_eq!(
            evchild::Pid::this(),
            me,
            "the child unwound into the caller"
        );
        let panicked = caught.expect("no panic in the parent").expect("fork_with");
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 2);
        deaths.assert_code(returned, 6);
        deaths.assert_signal(panicked, libc::SIGABRT);
    }
    check.finish();
}

/// Mainloop: the application's own wait4 usage reaches the callback.
#[test]
fn reaped_with_usage() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let mut reactor = evchild::Reactor::<Vec<Exit>>::new(evchild::Hooks::new(
            evchild::SigchldOwner::Mainloop,
        ))
        .expect("Mainloop");
        let mut deaths = Vec::new();
        let id = reactor
            .spawn(
                &mut util::quiet_sh("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"),
                record,
            )
            .expect("spawn")
            .id;
        let mut status = 0;
        // SAFETY: all-zero is a valid rusage; wait4 fills it in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointers for the call.
        let pid = unsafe { libc::wait4(id.pid().as_raw(), &mut status, 0, &mut usage) };
        assert_eq!(pid, id.pid().as_raw());
        use std::os::unix::process::ExitStatusExt;
        reactor
            .reaped_with_usage(
                &mut deaths,
                id.pid(),
                std::process::ExitStatus::from_raw(status),
                Some(usage.into()),
            )
            .expect("reaped_with_usage");
        assert_eq!(deaths.len(), 1);
        assert_eq!(deaths[0].outcome, Outcome::Reaped(exited(0)));
        let reported = deaths[0].usage.expect("usage");
        assert_eq!(reported, evchild::ResourceUsage::from(usage));
        assert!(reported.user_time + reported.system_time > Duration::ZERO);
    }
    check.finish();
}
