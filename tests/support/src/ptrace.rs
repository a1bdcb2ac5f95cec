//! A child in a ptrace stop (issue 7, case 9), shared by
//! `regress_ptrace.rs` (every `Library` backend) and
//! `regress_library_always.rs`: the reactor's process is the tracer of its
//! child, so `wait4(pid)`/`waitid` report the child's ptrace stops.

use std::time::{Duration, Instant};

use evchild::{ChildId, Forked, Outcome, Reactor};

use crate::fd::readable_within;
use crate::fork::exit_child;
use crate::process::proc_state;
use crate::report::{exited, record, Deaths};
/// Forks through the reactor a child that asks to be traced by us, stops
/// itself, and once let go `_exit`s with 5.
pub fn fork_traced(reactor: &mut Reactor<Deaths>) -> ChildId {
    // SAFETY: the child only calls `ptrace`, `raise` and `_exit`, which are
    // async-signal-safe system calls.
    match unsafe { reactor.fork(record) } {
        Ok(Forked::Child) => unsafe {
            libc::ptrace(
                libc::PTRACE_TRACEME,
                0,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            );
            libc::raise(libc::SIGSTOP);
            exit_child(5)
        },
        Ok(Forked::Parent(id)) => id,
        Err(e) => panic!("fork: {e}"),
    }
}

/// Waits (bounded) until `pid` is in a ptrace stop (`t` in
/// `/proc/<pid>/stat`).
#[track_caller]
pub fn wait_traced_stop(pid: libc::pid_t) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match proc_state(pid) {
            Some('t') => return,
            other if Instant::now() >= end => {
                panic!("child {pid} not in a ptrace stop after 5 s: state {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Lets a tracee in a ptrace stop go on, without a signal.
pub fn detach(pid: libc::pid_t) -> bool {
    // SAFETY: PTRACE_DETACH of our own tracee; no memory is passed.
    unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        ) == 0
    }
}

/// Reaps `pid` if it is still our child (a zombie the reactor let go of).
pub fn reap_if_ours(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } == -1
        && nix::errno::Errno::last() == nix::errno::Errno::EINTR
    {}
}

/// The whole check for one reactor: returns the problems seen.
pub fn ptrace_stop_is_not_a_death(reactor: &mut Reactor<Deaths>, what: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut deaths = Deaths::default();
    let id = fork_traced(reactor);
    let pid = id.pid().as_raw();
    wait_traced_stop(pid);
    for _ in 0..5 {
        reactor.dispatch(&mut deaths).expect("dispatch");
    }
    if deaths.total() != 0 {
        problems.push(format!(
            "{what}: a ptrace stop was reported as a death: {:?}",
            deaths.seen
        ));
    }
    if !reactor.contains(id) {
        problems.push(format!("{what}: the stopped child left the reactor"));
    }
    if !detach(pid) {
        problems.push(format!(
            "{what}: PTRACE_DETACH failed: {}",
            std::io::Error::last_os_error()
        ));
        // SAFETY: kill(2) of our own child, which we must not leave stopped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let end = Instant::now() + Duration::from_secs(5);
    while reactor.contains(id) && Instant::now() < end {
        readable_within(
            std::os::fd::AsRawFd::as_raw_fd(reactor),
            Duration::from_millis(20),
        );
        reactor.dispatch(&mut deaths).expect("dispatch");
    }
    reap_if_ours(pid);
    match deaths.seen.get(&id).map(Vec::as_slice) {
        Some([Outcome::Reaped(status)]) if *status == exited(5) => {}
        other => problems.push(format!(
            "{what}: expected exactly one report, exit 5, after the detach; got {other:?}"
        )),
    }
    problems
}

/// Whether a child may ask to be traced by this process; if not (Yama's
/// `kernel.yama.ptrace_scope` is 3: no ptrace at all), [`skip!`]s and
/// returns `false`. Other refusals (a seccomp filter) fail the test, loudly.
///
/// [`skip!`]: crate::skip!
pub fn ptrace_or_skip() -> bool {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope");
    if scope.is_ok_and(|s| s.trim() == "3") {
        crate::skip!("ptrace is disabled here (kernel.yama.ptrace_scope = 3)");
        return false;
    }
    true
}
