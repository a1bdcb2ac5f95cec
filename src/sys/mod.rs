//! The system calls of the reaping and signalling paths, each wrapped once.
//!
//! Reaping uses `wait4` through `libc` rather than nix's `waitpid`: the raw
//! wait status reaches `ExitStatus::from_raw` untouched (nix decodes it into
//! an enum that cannot be turned back exactly for every status), and the
//! child's `struct rusage` comes with it at no extra cost.

#![allow(unsafe_code)]

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

/// `kill(pid, sig)` for one process. A pid <= 0 (a group, or every process
/// we may signal) is refused with `ESRCH`, never sent.
pub(crate) fn kill(pid: Pid, signal: libc::c_int) -> std::io::Result<()> {
    if pid.as_raw() <= 0 {
        return Err(Errno::ESRCH.into());
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid.as_raw(), signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `kill(-pgid, sig)`: the process group led by `pgid`.
pub(crate) fn kill_group(pgid: Pid, signal: libc::c_int) -> std::io::Result<()> {
    if pgid.as_raw() <= 1 {
        return Err(Errno::ESRCH.into());
    }
    // SAFETY: as for `kill`.
    if unsafe { libc::kill(-pgid.as_raw(), signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `getpgid(pid)`.
pub(crate) fn getpgid(pid: Pid) -> std::io::Result<Pid> {
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid.as_raw())))?;
    Ok(Pid::from_raw(pgid.as_raw()))
}

/// Whether `pid` is a child of this process that has not been reaped:
/// `waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)`, which reaps nothing.
/// `Err(ECHILD)` if it is not.
pub(crate) fn probe_child(pid: Pid) -> Result<(), Errno> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    if pid.as_raw() <= 0 {
        return Err(Errno::ECHILD);
    }
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw())), flags) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// Kills a child evchild started but could not register, and reaps it
/// (blocking: a `SIGKILL`ed child dies promptly), so it is neither left
/// running unobserved nor left a zombie.
pub(crate) fn kill_and_reap(pid: Pid) {
    if pid.as_raw() <= 0 {
        return;
    }
    let _ = kill(pid, libc::SIGKILL);
    loop {
        // SAFETY: a null status pointer is allowed; no other memory effects.
        let rc = unsafe { libc::waitpid(pid.as_raw(), std::ptr::null_mut(), 0) };
        if rc != -1 || Errno::last() != Errno::EINTR {
            return;
        }
    }
}

/// `poll(2)` for readability of `fd`, for at most `timeout` (`None`: no
/// limit). `EINTR` counts as a return: the caller looks again anyway.
pub(crate) fn wait_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    timeout: Option<std::time::Duration>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ms = timeout.map_or(-1, |t| {
        // Round up, so a short wait is not a busy loop.
        let ms = t.as_micros().div_ceil(1000);
        libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
    });
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd` for the duration of the call.
    match unsafe { libc::poll(&mut pollfd, 1, ms) } {
        -1 if Errno::last() == Errno::EINTR => Ok(()),
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// `timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)`: the
/// clock `Instant` uses.
pub(crate) fn timer_create() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: integers only; returns a new descriptor or -1.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned `fd` as a new descriptor nobody else
    // owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Sets the timer to expire once, `after` from now (at least 1 ns, so a
/// deadline already due still expires), or disarms it (`None`).
pub(crate) fn timer_set(
    timer: std::os::fd::BorrowedFd<'_>,
    after: Option<std::time::Duration>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = match after {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        Some(after) => libc::timespec {
            tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(after.subsec_nanos().max(u32::from(after.is_zero()))),
        },
    };
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: value,
    };
    // SAFETY: `spec` is a valid `itimerspec` for the call; a null old value
    // is allowed.
    let rc = unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads the timer's expiry count, which re-arms its readiness.
pub(crate) fn timer_drain(timer: std::os::fd::BorrowedFd<'_>) {
    let mut expirations = [0u8; 8];
    // `EAGAIN` (not expired, or read already) is fine: nothing to clear.
    let _ = nix::unistd::read(timer, &mut expirations);
}

/// `fork(2)`.
///
/// # Safety
/// The caller's caller must uphold `Reactor::fork`'s contract: in the child,
/// only async-signal-safe work until `execve` or `_exit` if the parent had
/// other threads.
/// Returns the child's pid in the parent and `None` in the child.
pub(crate) unsafe fn fork() -> std::io::Result<Option<Pid>> {
    // SAFETY: forwarded to the caller (see above).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(Pid::from_raw(child.as_raw()))),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}
