//! Process file descriptors (Linux ≥ 5.3): one per child, readable when the
//! child exits.
//!
//! With the pidfd backend each child's pidfd sits in the reactor's inner
//! epoll set, so a wake-up names exactly the children that died: O(k)
//! selective reaping for k exits, and no `SIGCHLD` handler at all. The price
//! is one descriptor per live child: every later spawn copies the descriptor
//! table into the new process (and closes the close-on-exec entries at
//! exec), and `RLIMIT_NOFILE` caps the number of children.
//!
//! The pidfd is the child's identity: readiness, reaping
//! (`waitid(P_PIDFD)`, Linux >= 5.4) and every signal
//! (`pidfd_send_signal`) go through it, so a pid that other code reaped and
//! the kernel gave to another process is never waited for or signalled in
//! the child's place.
//!
//! `pidfd_open` and `waitid(P_PIDFD)` are probed once per process. `ENOSYS` (kernel too old),
//! `EINVAL` and `EPERM` (seccomp filters answer either) mean "not here": the
//! reactor then falls back to the peek backend. A failure for one child
//! later (`EMFILE`) makes that child alone fall back to `SIGCHLD`.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::Pid;

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static SUPPORTED: AtomicU8 = AtomicU8::new(UNKNOWN);

/// `pidfd_open(pid, 0)`: a close-on-exec descriptor for `pid`. The kernel
/// always sets `O_CLOEXEC` on it.
pub(crate) fn open(pid: Pid) -> io::Result<OwnedFd> {
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

/// Whether this kernel (and its seccomp filter) allows `pidfd_open`.
/// Probed once per process, on our own pid.
pub(crate) fn supported() -> bool {
    match SUPPORTED.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            // Reaping goes through `waitid(P_PIDFD)` (Linux >= 5.4): a
            // kernel with pidfds but without that is treated as without.
            let ok = match open(Pid::this()) {
                Ok(fd) => crate::sys::waitid_pidfd_works(fd.as_raw_fd()),
                Err(e) => !matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::EINVAL | libc::EPERM)
                ),
            };
            SUPPORTED.store(if ok { YES } else { NO }, Ordering::Relaxed);
            ok
        }
    }
}

/// `pidfd_send_signal(pidfd, signal, NULL, 0)`: signals exactly the process
/// the pidfd refers to, even if its pid has been recycled.
pub(crate) fn send_signal(pidfd: &OwnedFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: integers and a null `siginfo_t` pointer, which the call allows
    // (the kernel then fills in a siginfo as kill(2) would).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A child's pidfd while it sits in the reactor's epoll set.
///
/// Dropping it removes it from the set (`EPOLL_CTL_DEL`) before closing it.
/// Closing alone is not enough: epoll forgets a descriptor only when every
/// copy of it is closed, and a child forked without exec holds copies of
/// every pidfd open at the fork, so a dead child's pidfd would stay ready in
/// the set and keep the reactor readable forever.
#[derive(Debug)]
pub(crate) struct Polled {
    fd: OwnedFd,
    /// The epoll set's descriptor; the reactor drops every `Polled` before
    /// it closes the set.
    epoll: RawFd,
}

impl Polled {
    pub(crate) fn new(fd: OwnedFd, epoll: RawFd) -> Self {
        Polled { fd, epoll }
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Takes the pidfd out of the epoll set and hands it over.
    pub(crate) fn into_fd(self) -> OwnedFd {
        let this = std::mem::ManuallyDrop::new(self);
        this.remove();
        // SAFETY: `this` is never dropped, so `fd` is read out exactly once
        // and owned by the caller alone.
        unsafe { std::ptr::read(&this.fd) }
    }

    fn remove(&self) {
        // SAFETY: integers only; a null event is allowed for EPOLL_CTL_DEL.
        // Both descriptors are open: `fd` is ours, and the set outlives
        // every `Polled` (the reactor's field order). An error (ENOENT)
        // would only mean it was not in the set.
        unsafe {
            libc::epoll_ctl(
                self.epoll,
                libc::EPOLL_CTL_DEL,
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
    }
}

impl Drop for Polled {
    fn drop(&mut self) {
        self.remove();
    }
}
