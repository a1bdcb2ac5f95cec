//! The system calls of the reaping and signalling paths, each wrapped once.
//!
//! `waitpid` is called through `libc` rather than `nix` so the raw wait
//! status reaches `ExitStatus::from_raw` untouched (nix decodes it into an
//! enum that cannot be turned back exactly for every status).

#![allow(unsafe_code)]

use nix::errno::Errno;

use crate::reap::Reap;
use crate::Pid;

/// The real [`Reap`]: `waitpid(2)` with `WNOHANG`.
#[derive(Debug, Default)]
pub(crate) struct SysReap;

fn waitpid(pid: libc::pid_t) -> Result<Option<(Pid, libc::c_int)>, Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid, writable `int`; waitpid has no other
    // memory effects.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match rc {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some((Pid::from_raw(pid), status))),
    }
}

impl Reap for SysReap {
    fn reap_pid(&mut self, pid: Pid) -> Result<Option<libc::c_int>, Errno> {
        debug_assert!(pid.as_raw() > 0, "a single child, never a group");
        waitpid(pid.as_raw()).map(|r| r.map(|(_, status)| status))
    }

    fn reap_any(&mut self) -> Result<Option<(Pid, libc::c_int)>, Errno> {
        waitpid(-1)
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
