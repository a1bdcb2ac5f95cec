//! The `timerfd` behind `terminate`'s deadlines, and `poll(2)` on one
//! descriptor (for `wait_for`).

use nix::errno::Errno;

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
