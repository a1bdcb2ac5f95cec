//! The reactor's wake pipe: non-blocking, close-on-exec.
//!
//! The `SIGCHLD` handler writes one byte to the write end; the event loop
//! watches the read end. Both ends are `O_NONBLOCK`, so a full pipe never
//! blocks the handler (the reader is already due, so the lost byte does not
//! matter), and `O_CLOEXEC`, so no executed child inherits them.
//!
//! # Correct order of handling
//!
//! The reader first empties the pipe and only then reaps. A signal that lands
//! during the reap writes a new byte, so the loop wakes again; the opposite
//! order could swallow that byte and lose the child until the next signal.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;

#[derive(Debug)]
pub(crate) struct SelfPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl SelfPipe {
    /// `pipe2(O_NONBLOCK | O_CLOEXEC)`: both flags are set atomically, so no
    /// concurrent `fork`+`exec` can inherit a half-made pipe.
    pub(crate) fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(SelfPipe { read, write })
    }

    /// The end the event loop watches.
    pub(crate) fn read_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The end the signal handler writes to.
    pub(crate) fn write_raw(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// Empties the pipe. Returns whether there was anything in it.
    ///
    /// Called only when the pipe is readable. Reads until a read comes back
    /// short: reads and writes of a pipe are serialised, so a short read
    /// left it empty, and a byte written after it finds the pipe empty and
    /// wakes its readers (some kernels, 5.5 to 5.15, wake a reader only on
    /// that transition). So the next byte is a new event, and the steady
    /// state makes one `read` per wake-up, not a second one that answers
    /// `EAGAIN`.
    pub(crate) fn drain(&self) -> io::Result<bool> {
        let mut buf = [0u8; 128];
        let mut any = false;
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) => return Ok(any), // cannot happen: we hold the write end
                Ok(n) if n < buf.len() => return Ok(true),
                Ok(_) => any = true,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(any),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Makes the read end readable, so the loop calls `dispatch` again.
    ///
    /// Errors are ignored on purpose: `EAGAIN` means the pipe is full, and a
    /// full pipe is already readable.
    pub(crate) fn wake(&self) {
        let _ = nix::unistd::write(&self.write, &[1]);
    }
}
