//! The wait calls, each wrapped once.
//!
//! Reaping uses the raw `waitid(2)` system call and `wait4(2)` through
//! `libc` rather than nix's `waitpid`: the raw wait status reaches
//! `ExitStatus::from_raw` untouched (nix decodes it into an enum that
//! cannot be turned back exactly for every status), and the child's
//! `struct rusage` comes with it at no extra cost.

use nix::errno::Errno;

use std::os::fd::RawFd;

use crate::reap::{Reap, Target, Waited};
use crate::{Pid, ResourceUsage};

/// The real [`Reap`]: `waitid(2)` and `wait4(2)`, with `WNOHANG`. Counts
/// the calls it makes (`Stats::wait_calls`).
#[derive(Debug, Default)]
pub(crate) struct SysReap {
    pub(crate) calls: u64,
}

/// `wait4(-1, &status, WNOHANG, &rusage)`.
fn wait4_any() -> Result<Option<(Pid, Waited)>, Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: all-zero is a valid `rusage` (plain integers); wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid, writable, and live for the
    // call; wait4 has no other memory effects.
    let rc = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
    match rc {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some((
            Pid::from_raw(pid),
            Waited {
                raw: status,
                usage: Some(ResourceUsage::from_rusage(&usage)),
            },
        ))),
    }
}

/// The raw `waitid(2)` system call, whose fifth argument (which glibc's
/// wrapper does not expose) receives the child's resource usage.
/// `WNOHANG` is always added. Returns the pid and the status in `wait(2)`'s
/// encoding, or `None` if nothing is waitable now.
fn waitid(
    idtype: libc::idtype_t,
    id: libc::id_t,
    options: libc::c_int,
    want_usage: bool,
) -> Result<Option<(Pid, Waited)>, Errno> {
    // SAFETY: all-zero is a valid `siginfo_t` and `rusage` (plain data);
    // the kernel overwrites them. A zero `si_pid` afterwards means "nothing
    // waitable" under WNOHANG.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let usage_ptr: *mut libc::rusage = if want_usage {
        &mut usage
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: `info` is a valid, writable `siginfo_t`; `usage_ptr` is null
    // (allowed) or a valid, writable `rusage`; both live across the call,
    // which has no other memory effects.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_waitid,
            idtype,
            id,
            &mut info as *mut libc::siginfo_t,
            options | libc::WNOHANG,
            usage_ptr,
        )
    };
    if rc == -1 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel filled in a SIGCHLD siginfo (or left it zeroed),
    // for which `si_pid` and `si_status` are the valid union members.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        libc::CLD_STOPPED | libc::CLD_TRAPPED => ((status & 0xff) << 8) | 0x7f,
        libc::CLD_CONTINUED => 0xffff,
        _ => return Err(Errno::EINVAL),
    };
    let usage = want_usage.then(|| ResourceUsage::from_rusage(&usage));
    Ok(Some((Pid::from_raw(pid), Waited { raw, usage })))
}

/// `waitid` on one child: by pidfd where it has one, otherwise by pid.
fn wait_target(
    target: Target,
    options: libc::c_int,
    want_usage: bool,
) -> Result<Option<Waited>, Errno> {
    let (idtype, id) = match target.pidfd {
        Some(fd) => (libc::P_PIDFD, fd as libc::id_t),
        None if target.pid.as_raw() > 0 => (libc::P_PID, target.pid.as_raw() as libc::id_t),
        // Never a group or "any child": pid <= 0 is refused at registration.
        None => return Err(Errno::ECHILD),
    };
    waitid(idtype, id, options, want_usage).map(|r| r.map(|(_, waited)| waited))
}

impl Reap for SysReap {
    fn probe(&mut self, target: Target) -> Result<Option<Waited>, Errno> {
        self.calls += 1;
        wait_target(target, libc::WEXITED | libc::WNOWAIT, false)
    }

    fn reap(&mut self, target: Target) -> Result<Option<Waited>, Errno> {
        self.calls += 1;
        wait_target(target, libc::WEXITED, true)
    }

    fn reap_any(&mut self) -> Result<Option<(Pid, Waited)>, Errno> {
        self.calls += 1;
        wait4_any()
    }

    fn peek(&mut self) -> Result<Option<(Pid, Waited)>, Errno> {
        self.calls += 1;
        waitid(libc::P_ALL, 0, libc::WEXITED | libc::WNOWAIT, false)
    }

    fn reap_state(&mut self, target: Target) -> Result<Option<Waited>, Errno> {
        self.calls += 1;
        let options = libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED;
        wait_target(target, options, true)
    }
}

/// Whether `waitid(P_PIDFD)` works here (Linux ≥ 5.4): asked once, on a
/// pidfd of this process, which is not our child, so a kernel that knows
/// `P_PIDFD` answers `ECHILD` and one that does not, `EINVAL`.
pub(crate) fn waitid_pidfd_works(own_pidfd: RawFd) -> bool {
    waitid(libc::P_PIDFD, own_pidfd as libc::id_t, libc::WEXITED, false) == Err(Errno::ECHILD)
}

/// `waitid(target, WEXITED | WNOHANG | WNOWAIT)`, which reaps nothing,
/// retrying `EINTR`: `Err(ECHILD)` if `target` is not an unreaped child of
/// this process.
fn probe_target(target: Target) -> Result<(), Errno> {
    loop {
        match wait_target(target, libc::WEXITED | libc::WNOWAIT, false) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// Whether `pid` is a child of this process that has not been reaped
/// (by pid: for a pid not registered yet). `Err(ECHILD)` if it is not.
pub(crate) fn probe_child(pid: Pid) -> Result<(), Errno> {
    probe_target(Target { pid, pidfd: None })
}

/// Kills a child evchild started but could not register, and reaps it
/// (blocking: a `SIGKILL`ed child dies promptly), so it is neither left
/// running unobserved nor left a zombie.
pub(crate) fn kill_and_reap(pid: Pid) {
    if pid.as_raw() <= 0 {
        return;
    }
    let _ = super::kill(pid, libc::SIGKILL);
    loop {
        // SAFETY: a null status pointer is allowed; no other memory effects.
        let rc = unsafe { libc::waitpid(pid.as_raw(), std::ptr::null_mut(), 0) };
        if rc != -1 || Errno::last() != Errno::EINTR {
            return;
        }
    }
}

/// Whether `pidfd` names a child of this process that has not been reaped.
pub(crate) fn is_unreaped_child(pidfd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let target = Target {
        pid: Pid::from_raw(0),
        pidfd: Some(pidfd.as_raw_fd()),
    };
    probe_target(target).is_ok()
}
