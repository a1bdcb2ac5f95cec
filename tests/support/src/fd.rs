//! Pipes and single bytes: the raw, async-signal-safe I/O that forked test
//! children and their tests talk through.

use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;

/// A close-on-exec, blocking pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2")
}

/// `write(2)` of one byte, retrying `EINTR`. Async-signal-safe.
pub fn write_byte(fd: RawFd, byte: u8) -> bool {
    loop {
        // SAFETY: the buffer is one live byte; write is async-signal-safe.
        let rc = unsafe { libc::write(fd, std::ptr::addr_of!(byte).cast(), 1) };
        if rc == 1 {
            return true;
        }
        if rc == -1 && Errno::last() == Errno::EINTR {
            continue;
        }
        return false;
    }
}

/// Blocking `read(2)` of one byte, retrying `EINTR`; `None` at end of file
/// or on error. Async-signal-safe.
pub fn read_byte(fd: RawFd) -> Option<u8> {
    let mut byte = 0u8;
    loop {
        // SAFETY: the buffer is one live, writable byte; read is
        // async-signal-safe.
        let rc = unsafe { libc::read(fd, std::ptr::addr_of_mut!(byte).cast(), 1) };
        if rc == 1 {
            return Some(byte);
        }
        if rc == -1 && Errno::last() == Errno::EINTR {
            continue;
        }
        return None;
    }
}

/// Whether `fd` is readable (or hung up) within `timeout` (`poll(2)`).
pub fn readable_within(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid `pollfd`; poll only writes `revents`.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        match rc {
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => panic!("poll: {}", std::io::Error::last_os_error()),
            0 => return false,
            _ => return pfd.revents & (libc::POLLIN | libc::POLLHUP) != 0,
        }
    }
}

/// Whether `fd` is readable right now.
pub fn readable(fd: RawFd) -> bool {
    readable_within(fd, Duration::ZERO)
}
