//! The worker's side of the status channel: [`ready`], [`busy`], [`idle`].
//!
//! Each call writes one fixed 10-byte message with one `write(2)`: no
//! allocation, no lock, so it may be called in a worker forked without exec
//! (even from a multithreaded parent) as well as in an executed one. Where
//! the channel is comes from the pool: a forked worker is told before its
//! function runs; an executed worker reads [`ENV`](super::ENV)
//! (`"<descriptor>:<token>"`) once, on its first call, with `getenv(3)`,
//! which allocates nothing. (`getenv` races with `setenv` in another
//! thread: an executed worker should make its first call, or
//! [`is_worker`], before it starts threads that change the environment.)
//!
//! A process that is not a pool's worker has no channel: every call returns
//! `false` and does nothing, so a worker program also runs on its own.
//!
//! Workers in other languages speak the same protocol: each report is one
//! `write(2)` of 10 bytes to the descriptor named in
//! [`ENV`](super::ENV) (`"<descriptor>:<token>"`): the byte `0xE7`, then
//! `R` (ready), `B` (busy) or `I` (idle), then the token as an unsigned
//! 64-bit little-endian integer. In `sh`, for tokens below 256:
//!
//! ```sh
//! fd=${EVCHILD_WORKER%%:*}; token=${EVCHILD_WORKER#*:}
//! report() { eval "printf '\347$1\\$(printf %03o "$token")\0\0\0\0\0\0\0' >&$fd"; }
//! report R   # ready; then report B / report I around each request
//! ```
//!
//! What a worker promises its pool:
//! * `ready()` once it can take work (within the pool's start timeout);
//! * `busy()` when it takes a request and `idle()` when it is done, so the
//!   pool can size itself and count requests;
//! * on `SIGTERM`, finish the request in hand (if any) and exit: that is
//!   how the pool retires workers and stops gracefully. `SIGKILL` follows
//!   a grace period.

#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::core::Report;
use super::status::{encode, MSG_LEN};

/// Not looked up yet.
const UNKNOWN: i32 = -2;
/// Not a worker.
const NONE: i32 = -1;

static FD: AtomicI32 = AtomicI32::new(UNKNOWN);
static TOKEN: AtomicU64 = AtomicU64::new(0);

/// Tells the pool this worker can take work. Returns whether the message
/// was written (`false` outside a pool, or if the pipe is gone).
///
/// ```no_run
/// // In a worker's main loop:
/// evchild::supervise::worker::ready();
/// loop {
///     // let conn = listener.accept()?;
///     evchild::supervise::worker::busy();
///     // serve(conn);
///     evchild::supervise::worker::idle();
/// }
/// ```
pub fn ready() -> bool {
    send(Report::Ready)
}

/// Tells the pool this worker has taken a request. See [`ready`].
pub fn busy() -> bool {
    send(Report::Busy)
}

/// Tells the pool this worker has finished a request and takes the next.
/// See [`ready`].
pub fn idle() -> bool {
    send(Report::Idle)
}

/// Whether this process is a pool's worker (has a status channel).
pub fn is_worker() -> bool {
    channel().is_some()
}

/// Called by the pool in a forked worker, before the worker's function:
/// atomic stores only, so async-signal-safe.
pub(crate) fn set_channel(fd: RawFd, token: u64) {
    TOKEN.store(token, Ordering::Relaxed);
    FD.store(fd, Ordering::Release);
}

fn channel() -> Option<(RawFd, u64)> {
    let mut fd = FD.load(Ordering::Acquire);
    if fd == UNKNOWN {
        let (found, token) = from_env().unwrap_or((NONE, 0));
        // Two threads racing here compute the same answer.
        set_channel(found, token);
        fd = found;
    }
    (fd >= 0).then(|| (fd, TOKEN.load(Ordering::Relaxed)))
}

/// Parses `"<fd>:<token>"` from the environment without allocating.
fn from_env() -> Option<(RawFd, u64)> {
    // SAFETY: the name is a NUL-terminated literal; `getenv` returns NULL or
    // a pointer to a NUL-terminated string in the environment, which stays
    // valid until the environment is changed (see the module's note on
    // `setenv`). We read it at once and keep no reference.
    let value = unsafe {
        let p = libc::getenv(c"EVCHILD_WORKER".as_ptr());
        if p.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(p).to_bytes()
    };
    parse(value)
}

fn parse(value: &[u8]) -> Option<(RawFd, u64)> {
    let colon = value.iter().position(|&b| b == b':')?;
    let fd = number(&value[..colon])?;
    let token = number(&value[colon + 1..])?;
    Some((RawFd::try_from(fd).ok()?, token))
}

fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

fn send(report: Report) -> bool {
    let Some((fd, token)) = channel() else {
        return false;
    };
    let msg = encode(report, token);
    loop {
        // SAFETY: `msg` is a live stack buffer of MSG_LEN bytes. `fd` came
        // from the pool; if the worker closed it, `write` fails with EBADF
        // (or writes to whatever now has that number: the worker's own
        // mistake, which cannot corrupt memory). `write(2)` is
        // async-signal-safe.
        let n = unsafe { libc::write(fd, msg.as_ptr().cast(), MSG_LEN) };
        if n >= 0 {
            return n as usize == MSG_LEN;
        }
        if nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_environment_value() {
        assert_eq!(parse(b"5:42"), Some((5, 42)));
        assert_eq!(parse(b"5:"), None);
        assert_eq!(parse(b":42"), None);
        assert_eq!(parse(b"5x:42"), None);
        assert_eq!(parse(b"99999999999:1"), None);
        assert_eq!(parse(b"3:18446744073709551615"), Some((3, u64::MAX)));
        assert_eq!(parse(b"3:18446744073709551616"), None);
    }
}
