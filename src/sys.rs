//! The system calls of the reaping and signalling paths, each wrapped once.
//!
//! Reaping uses `wait4` through `libc` rather than nix's `waitpid`: the raw
//! wait status reaches `ExitStatus::from_raw` untouched (nix decodes it into
//! an enum that cannot be turned back exactly for every status), and the
//! child's `struct rusage` comes with it at no extra cost.

#![allow(unsafe_code)]

use nix::errno::Errno;

use crate::reap::{Reap, Waited};
use crate::{Pid, ResourceUsage};

/// The real [`Reap`]: `wait4(2)` and `waitid(2)`, with `WNOHANG`.
#[derive(Debug, Default)]
pub(crate) struct SysReap;

/// `wait4(pid, &status, WNOHANG | extra, &rusage)`.
fn wait4(pid: libc::pid_t, extra: libc::c_int) -> Result<Option<(Pid, Waited)>, Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: all-zero is a valid `rusage` (plain integers); wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid, writable, and live for the
    // call; wait4 has no other memory effects.
    let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG | extra, &mut usage) };
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

impl Reap for SysReap {
    fn reap_pid(&mut self, pid: Pid) -> Result<Option<Waited>, Errno> {
        debug_assert!(pid.as_raw() > 0, "a single child, never a group");
        wait4(pid.as_raw(), 0).map(|r| r.map(|(_, waited)| waited))
    }

    fn reap_any(&mut self) -> Result<Option<(Pid, Waited)>, Errno> {
        wait4(-1, 0)
    }

    fn reap_pid_or_state(&mut self, pid: Pid) -> Result<Option<Waited>, Errno> {
        debug_assert!(pid.as_raw() > 0, "a single child, never a group");
        let extra = libc::WUNTRACED | libc::WCONTINUED;
        wait4(pid.as_raw(), extra).map(|r| r.map(|(_, waited)| waited))
    }

    fn peek(&mut self) -> Result<Option<Pid>, Errno> {
        use nix::sys::wait::{waitid, Id, WaitPidFlag};
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        // nix reads `si_pid` for us; 0 (no exited child) comes back as
        // `StillAlive`.
        Ok(waitid(Id::All, flags)?
            .pid()
            .map(|p| Pid::from_raw(p.as_raw())))
    }
}

/// `kill(pid, sig)` for one process (pid > 0, checked by the caller).
pub(crate) fn kill(pid: Pid, signal: libc::c_int) -> std::io::Result<()> {
    debug_assert!(pid.as_raw() > 0);
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid.as_raw(), signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `kill(-pgid, sig)`: the process group led by `pgid`.
pub(crate) fn kill_group(pgid: Pid, signal: libc::c_int) -> std::io::Result<()> {
    debug_assert!(pgid.as_raw() > 0);
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
