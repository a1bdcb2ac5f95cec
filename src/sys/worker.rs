//! The system calls of `supervise` (its workers' status channel and
//! start-up), each wrapped once. Every wrapper here is async-signal-safe
//! (one system call, no allocation, no lock), so it may run in a forked
//! child or a `pre_exec` closure; [`pass_status_fd`] is that closure.

use std::os::fd::RawFd;

use nix::errno::Errno;

/// `write(2)` of `buf` to `fd`, once (no retry on `EINTR`).
pub(crate) fn write(fd: RawFd, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is a live slice of `buf.len()` bytes for the call. `fd`
    // is a number: if it is not open, write fails with EBADF; if it names
    // another file, bytes go there (the caller's mistake, which cannot
    // corrupt memory). write(2) is async-signal-safe.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// `close(2)`, errors ignored: used in a forked worker on the parent's
/// descriptors that it must not keep.
pub(crate) fn close(fd: RawFd) {
    // SAFETY: closes a descriptor number; in the forked child, nothing
    // holds an owning Rust handle that is used afterwards (the child runs
    // the worker's function and `_exit`s, and never returns to the frames
    // that own these descriptors). close(2) is async-signal-safe.
    unsafe { libc::close(fd) };
}

/// Sets or clears `FD_CLOEXEC` on `fd`.
pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> Result<(), Errno> {
    // SAFETY: fcntl(2) with F_GETFD / F_SETFD takes and returns integers
    // only; a bad descriptor is EBADF. Async-signal-safe.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(Errno::last());
        }
        let flags = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        if libc::fcntl(fd, libc::F_SETFD, flags) < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// Whether `fd` is the write end of a pipe (`fstat`: a FIFO; `fcntl`:
/// opened write-only): what a worker's status channel is, and what an
/// unrelated descriptor that happens to have its number almost never is.
pub(crate) fn is_pipe_write_end(fd: RawFd) -> bool {
    // SAFETY: all-zero is a valid `stat`; fstat(2) fills it in and touches
    // no other memory; a bad descriptor is EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer for the call.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return false;
    }
    // SAFETY: fcntl(2) with F_GETFL takes and returns integers only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_ACCMODE == libc::O_WRONLY
}

/// `getppid(2)` (always succeeds). Async-signal-safe.
pub(crate) fn getppid() -> i32 {
    nix::unistd::getppid().as_raw()
}

/// `getpid(2)` (always succeeds). Async-signal-safe.
/// `setpgid(pid, pid)` (`pid` 0: the calling process), result ignored:
/// the caller sets a worker's group from both sides, and the loser's
/// `EACCES`/`ESRCH` is harmless. Async-signal-safe.
pub(crate) fn set_own_process_group(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::unistd::setpgid(pid, pid);
}

pub(crate) fn getpid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// In a new worker: `prctl(PR_SET_PDEATHSIG, signal)`, then, for the race
/// with a master that died before it, the signal to itself at once if its
/// parent is no longer `master`. `Err` if `signal` is no signal or `prctl`
/// failed. Async-signal-safe: three system calls, no allocation.
pub(crate) fn set_parent_death_signal(signal: i32, master: i32) -> Result<(), Errno> {
    let signal = nix::sys::signal::Signal::try_from(signal)?;
    nix::sys::prctl::set_pdeathsig(signal)?;
    if getppid() != master {
        nix::sys::signal::kill(nix::unistd::getpid(), signal)?;
    }
    Ok(())
}

/// Makes `cmd`'s child inherit `fd` (the worker's status write end, which
/// is close-on-exec in the parent, so no other spawn can inherit it) and,
/// with `pdeathsig`, get that signal when its parent (`master`) dies: a
/// `pre_exec` step (std then forks instead of using `posix_spawn`).
pub(crate) fn pass_status_fd(
    cmd: &mut std::process::Command,
    fd: RawFd,
    pdeathsig: Option<i32>,
    master: i32,
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec. It only
    // makes the async-signal-safe system calls of this file (fcntl, prctl,
    // getppid, kill) and allocates nothing (its captures are integers, and
    // `io::Error::from(Errno)` makes no allocation).
    unsafe {
        cmd.pre_exec(move || {
            set_cloexec(fd, false).map_err(std::io::Error::from)?;
            if let Some(signal) = pdeathsig {
                set_parent_death_signal(signal, master).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}
