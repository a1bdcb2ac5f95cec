//! `pidfd_open(2)`, and whether pidfds can be used here at all.
//!
//! `pidfd_open` and `waitid(P_PIDFD)` are probed once per process
//! (`process::pidfd_supported` keeps the answer). `ENOSYS`
//! (kernel too old), `EINVAL` and `EPERM` (seccomp filters answer either)
//! mean "not here": `Backend::Auto` then chooses `Peek`. A failure for one
//! child later (`EMFILE`) makes that child alone fall back to `SIGCHLD`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::Pid;

/// `pidfd_open(pid, 0)`: close-on-exec (the kernel always sets it).
pub(crate) fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or
    // -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nobody
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `pidfd_open` and `waitid(P_PIDFD)` (Linux ≥ 5.4) work here,
/// asked on a pidfd of this process itself (which is not our child, so a
/// kernel that knows `P_PIDFD` answers `ECHILD`, one that does not,
/// `EINVAL`). `process::pidfd_supported` asks once per process.
pub(crate) fn pidfd_probe() -> bool {
    match pidfd_open(Pid::this()) {
        Ok(fd) => super::wait::waitid_pidfd_works(fd.as_raw_fd()),
        Err(e) => !matches!(
            e.raw_os_error(),
            Some(libc::ENOSYS | libc::EINVAL | libc::EPERM)
        ),
    }
}
