//! Descriptors: the wake pipe, one-byte writes (the handler's), `close(2)`
//! in a forked child, and `EPOLL_CTL_DEL` on a set known by number.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;

/// A reactor's wake pipe: non-blocking and close-on-exec at both ends.
///
/// The `SIGCHLD` handler (through its slot table) and other reactors
/// (routing a status, ending the last start in flight) write one byte to
/// the write end; the reactor's epoll set watches the read end. Both ends
/// are `O_NONBLOCK`, so a full pipe never blocks a writer (the reader is
/// already due, so the lost byte does not matter), and `O_CLOEXEC`, so no
/// executed child inherits them.
///
/// Shared through an `Arc` with the process-wide routes, so a thread that
/// has decided to wake a reactor can write after it has let go of the
/// lock: the pipe (both ends) stays open until the last holder drops it,
/// and a late byte lands in a pipe nobody reads, never in a reused
/// descriptor and never on a pipe without readers (`SIGPIPE`).
///
/// The reader first empties the pipe and only then reaps. A signal that
/// lands during the reap writes a new byte, so the loop wakes again; the
/// opposite order could swallow that byte and lose the child until the
/// next signal.
#[derive(Debug)]
pub(crate) struct WakePipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// `pipe2(O_NONBLOCK | O_CLOEXEC)`.
pub(crate) fn wake_pipe() -> io::Result<WakePipe> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    Ok(WakePipe { read, write })
}

impl WakePipe {
    pub(crate) fn read_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The write end's number, for the handler's slot table (which never
    /// writes to it after the registration is dropped).
    pub(crate) fn write_raw(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// Empties the pipe; whether it held anything.
    pub(crate) fn drain(&self) -> io::Result<bool> {
        let mut buf = [0u8; 128];
        let mut any = false;
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) => return Ok(any), // cannot happen: we hold the write end
                // A short read emptied it: no `EAGAIN` round trip.
                Ok(n) if n < buf.len() => return Ok(true),
                Ok(_) => any = true,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(any),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Makes the read end readable. A full pipe (`EAGAIN`) already is.
    pub(crate) fn wake(&self) {
        write_byte(self.write.as_raw_fd());
    }

    /// Both ends' numbers, for [`close_in_forked_child`].
    pub(crate) fn raw_fds(&self) -> [RawFd; 2] {
        [self.read.as_raw_fd(), self.write.as_raw_fd()]
    }
}

/// `write(fd, "\x01", 1)`, ignoring the result (a full non-blocking pipe is
/// already readable). Async-signal-safe: the handler's one system call.
///
/// The caller guarantees `fd` is open: the handler through the slot
/// table's reader protocol, everyone else by holding the pipe.
pub(crate) fn write_byte(fd: RawFd) {
    let byte = 1u8;
    // SAFETY: a one-byte write from a live local; `write(2)` touches no
    // other memory and is async-signal-safe. A closed `fd` would be the
    // caller's bug (see above), and would at worst fail with EBADF.
    unsafe { libc::write(fd, std::ptr::addr_of!(byte).cast(), 1) };
}

/// `close(2)` on this process's copies of descriptors whose owners will
/// never be dropped ([`Leakable::leak`](super::Leakable::leak)): a reactor
/// dropped in a forked child. Async-signal-safe.
pub(crate) fn close_in_forked_child(fds: impl IntoIterator<Item = RawFd>) {
    for fd in fds {
        // SAFETY: close(2) takes an integer. Each `fd` is this process's
        // copy of a descriptor whose `OwnedFd` is leaked, never dropped, so
        // nothing closes the number again (and a number reused later is not
        // closed by a stale owner).
        unsafe { libc::close(fd) };
    }
}

/// `epoll_ctl(epoll, EPOLL_CTL_DEL, fd)`, for a pidfd handed out of a set
/// (or, in the orphan set, about to be closed): a copy of the descriptor in
/// a forked child would otherwise keep it in the set. `ENOENT`
/// (not in the set) is ignored.
///
/// `epoll` is a set the caller keeps open for as long as it calls this (a
/// reactor's own set outlives its pidfds; the orphan set lives as long as
/// its generation).
/// Likewise `fd`: a number the caller keeps open for the call (at worst,
/// a wrong number makes the call fail, or removes that descriptor from the
/// set, which only costs its wake-ups: nothing is read or written).
pub(crate) fn epoll_del(epoll: RawFd, fd: RawFd) {
    // SAFETY: integers only; a null event is allowed for EPOLL_CTL_DEL; the
    // call touches no memory of ours.
    unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
}
