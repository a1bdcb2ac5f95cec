//! A child whose zombie another process holds: a tracer that is not the
//! parent. When a traced child exits, the kernel tells its tracer first;
//! the parent cannot reap it (`waitid` finds nothing) until the tracer has
//! seen the exit, and only then is the parent notified. The child's pidfd
//! becomes readable at the first notification, before the parent can reap.
//!
//! With each `Library` backend the reactor must not report the child while
//! the tracer holds it, and must report it, once, with its status, after
//! the tracer lets go, woken by that second notification alone (nothing
//! else happens in the process meanwhile). For the `Pidfd` backend this is
//! why a pidfd's epoll entry is edge-triggered and not one-shot: a one-shot
//! entry, disarmed by the first notification, would never report the
//! second, and the child would wait for an unrelated wake-up.
//!
//! Its own binary: the test's process forks a tracer (a plain child it
//! reaps itself) next to the reactor's children.

#![warn(clippy::undocumented_unsafe_blocks)]

use evchild_testkit as util;

use std::os::fd::{AsRawFd, OwnedFd};

use std::time::{Duration, Instant};

use evchild::{Backend, ChildId, Outcome, Pid, Reactor};
use util::{exited, fork_gated, record, Check, Deaths, Gate, KillOnPanic, BACKENDS};

/// How long the test waits for anything that should happen.
const LIMIT: Duration = Duration::from_secs(20);

/// Forks (not through the reactor) a tracer of `pid`: it seizes `pid`
/// (`PTRACE_SEIZE`: no stop), writes a byte to `ready`, waits until
/// `release` reaches end of file, then waits for `pid`'s exit with
/// `waitpid(pid, __WALL)` (which hands the zombie on to its parent) and
/// `_exit`s: 0 if all went well, 1 to 3 for the step that failed. It first
/// closes every other descriptor (the write ends of the gates). It only
/// calls `ptrace`, `write`, `read`, `waitpid`, `close` and `_exit`, which
/// are async-signal-safe system calls, and allocates nothing.
fn fork_tracer(pid: libc::pid_t, ready: &(OwnedFd, OwnedFd), release: &Gate) -> libc::pid_t {
    let (ready_write, release_read) = (ready.1.as_raw_fd(), release.read_raw());
    // SAFETY: the child runs only async-signal-safe system calls (above).
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            // SAFETY: (in the forked child) system calls on integers and
            // on buffers on this stack.
            unsafe {
                for fd in 3..1024 {
                    if fd != ready_write && fd != release_read {
                        libc::close(fd);
                    }
                }
                let null = std::ptr::null_mut::<libc::c_void>();
                if libc::ptrace(libc::PTRACE_SEIZE, pid, null, null) != 0 {
                    libc::_exit(1);
                }
                if libc::write(ready_write, [1u8].as_ptr().cast(), 1) != 1 {
                    libc::_exit(2);
                }
                let mut byte = 0u8;
                while libc::read(release_read, (&mut byte as *mut u8).cast(), 1) != 0 {}
                let mut status = 0;
                loop {
                    if libc::waitpid(pid, &mut status, libc::__WALL) == -1 {
                        libc::_exit(3);
                    }
                    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                        libc::_exit(0);
                    }
                }
            }
        }
        tracer => tracer,
    }
}

/// A child of `reactor` that exits with 7 while a tracer process (see
/// [`fork_tracer`]) holds it: returns once it is a zombie, with the
/// tracer's pid and the gate that lets the tracer go.
#[track_caller]
fn held_zombie(reactor: &mut Reactor<Deaths>, what: &str) -> (ChildId, libc::pid_t, Gate) {
    let mut gate = Gate::new();
    let child = fork_gated(reactor, &gate, 7, record);
    let ready = util::pipe();
    let release = Gate::new();
    let tracer = fork_tracer(child.pid().as_raw(), &ready, &release);
    drop(ready.1);
    assert_eq!(
        util::read_byte(ready.0.as_raw_fd()),
        Some(1),
        "{what}: seize"
    );
    // The child exits; its tracer holds the zombie.
    gate.open();
    // (A wait for it, even with `WNOWAIT`, would block until the tracer
    // lets go: look at its state instead.)
    let end = Instant::now() + LIMIT;
    while util::proc_state(child.pid().as_raw()) != Some('Z') {
        assert!(Instant::now() < end, "{what}: the child did not exit");
        std::thread::sleep(Duration::from_millis(2));
    }
    (child, tracer, release)
}

#[test]
fn a_zombie_held_by_another_tracer_is_reported_once_it_is_let_go() {
    let check = Check::start();
    if !util::ptrace::ptrace_or_skip() {
        return check.finish();
    }
    let pidfd = util::pidfd_or_skip("the Pidfd backend's part");
    let mut problems = Vec::new();
    {
        let _kill = KillOnPanic;
        for backend in BACKENDS {
            if backend == Backend::Pidfd && !pidfd {
                continue;
            }
            let what = format!("{backend:?}");
            let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(backend);
            let (child, tracer, mut release) = held_zombie(&mut reactor, &what);
            // The loop runs for 100 ms (taking every edge the exit gave, so
            // none is left over for later).
            let mut events = mio::Events::with_capacity(4);
            let end = Instant::now() + Duration::from_millis(100);
            while Instant::now() < end {
                match lp.poll.poll(&mut events, Some(Duration::from_millis(10))) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("poll: {e}"),
                }
                reactor.dispatch(&mut deaths).expect("dispatch");
            }
            if deaths.total() != 0 || !reactor.contains(child) {
                problems.push(format!(
                    "{what}: reported while the tracer held it: {:?}",
                    deaths.seen
                ));
            }
            // The tracer sees the exit and lets go: the reactor's own
            // wake-up must follow, with nothing else to wake it.
            release.open();
            let status = util::reap_child(Pid::from_raw(tracer));
            assert_eq!(status, exited(0), "{what}: the tracer failed");
            if !util::readable_within(reactor.as_raw_fd(), LIMIT) {
                problems.push(format!(
                    "{what}: nothing woke the reactor in {LIMIT:?} after the tracer let go"
                ));
            }
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == 1);
            match deaths.seen.get(&child).map(Vec::as_slice) {
                Some([Outcome::Reaped(status)]) if *status == exited(7) => {}
                other => problems.push(format!(
                    "{what}: expected one report, exit 7, after the tracer let go; got {other:?}"
                )),
            }
        }
    }
    check.finish();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `Pidfd`: while such a zombie waits, the reactor holds a `SIGCHLD`
/// registration (the tracer's letting go is signalled); once the child
/// leaves the reactor otherwise (`forget`), the registration goes with it
/// at once, and the caller reaps the child with the pidfd it got back.
#[test]
fn a_forgotten_held_zombie_keeps_no_handler() {
    let check = Check::start();
    if !util::ptrace::ptrace_or_skip() || !util::pidfd_or_skip("the whole test") {
        return check.finish();
    }
    {
        let _kill = KillOnPanic;
        let (mut reactor, _lp, mut deaths) = util::library_loop_with::<Deaths>(Backend::Pidfd);
        util::assert_no_registration("a Pidfd reactor with no child");
        let (child, tracer, mut release) = held_zombie(&mut reactor, "Pidfd");
        assert!(util::readable_within(reactor.as_raw_fd(), LIMIT));
        reactor.dispatch(&mut deaths).expect("dispatch");
        assert_eq!(deaths.total(), 0);
        util::assert_registrations(1, "a held zombie");
        let forgotten = reactor.forget(child).expect("forget");
        util::assert_no_registration("once the held zombie was forgotten");
        reactor.dispatch(&mut deaths).expect("dispatch");
        release.open();
        assert_eq!(util::reap_child(Pid::from_raw(tracer)), exited(0));
        let pidfd = forgotten.pidfd.expect("its pidfd");
        let status = nix::sys::wait::waitid(
            nix::sys::wait::Id::PIDFd(std::os::fd::AsFd::as_fd(&pidfd)),
            nix::sys::wait::WaitPidFlag::WEXITED,
        )
        .expect("waitid(P_PIDFD)");
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(child.pid().as_raw()), 7)
        );
        assert_eq!(deaths.total(), 0, "a forgotten child reported");
    }
    check.finish();
}
