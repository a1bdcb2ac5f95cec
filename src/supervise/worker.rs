//! The worker's side of the status channel: [`ready`], [`busy`], [`idle`],
//! [`heartbeat`].
//!
//! Each call writes one fixed 10-byte message with one `write(2)`: no
//! allocation, no lock, so it may be called in a worker forked without exec
//! (even from a multithreaded parent) as well as in an executed one. Where
//! the channel is comes from the pool: a forked worker is told before its
//! function runs; an executed worker reads [`ENV`]
//! (`"<descriptor>:<token>"`) and [`MASTER_ENV`] once, on its first call
//! (or [`is_worker`]), through `std::env` (under std's environment lock,
//! so it does not race with `set_var` on another thread; that first call
//! allocates), removes both, checks that the descriptor is a pipe's write
//! end (a process that inherited the variable with something else under
//! that number has no channel), and makes the descriptor close-on-exec, so
//! that the worker's own children do not
//! inherit it.
//!
//! A report fails (returns `false`), rather than blocking for ever, once the
//! master is gone: the worker holds no read end of the pipe, so the write
//! fails with `EPIPE` (Rust programs ignore `SIGPIPE`; others should too),
//! and [`is_orphaned`] says so. A report that blocks because the master
//! is alive but behind (a full pipe) fails with `EINTR` when a signal
//! handler installed without `SA_RESTART` runs, so that a `SIGTERM`
//! handler that sets a flag is seen (with `SA_RESTART`, as signal-hook
//! installs them, the write resumes).
//!
//! A process that is not a pool's worker has no channel: every call returns
//! `false` and does nothing, so a worker program also runs on its own.
//!
//! Workers in other languages speak the same protocol: each report is one
//! `write(2)` of 10 bytes to the descriptor named in
//! [`ENV`] (`"<descriptor>:<token>"`): the byte `0xE7`, then
//! `R` (ready), `B` (busy), `I` (idle) or `H` (heartbeat), then the token
//! as an unsigned 64-bit little-endian integer. In `sh`, for tokens below
//! 256 (through `/proc/self/fd`: POSIX shells take only descriptors 0 to 9
//! in `>&N`, and the channel's number may be higher):
//!
//! ```sh
//! fd=${EVCHILD_WORKER%%:*}; token=${EVCHILD_WORKER#*:}
//! report() { eval "printf '\347$1\\$(printf %03o "$token")\0\0\0\0\0\0\0' >/proc/self/fd/$fd"; }
//! report R   # ready; then report B / report I around each request
//! ```
//!
//! What a worker promises its pool:
//! * `ready()` once it can take work (within the pool's start timeout);
//! * `busy()` when it takes a request and `idle()` when it is done, so the
//!   pool can size itself and count requests;
//! * `heartbeat()` (or any report) more often than the pool's heartbeat
//!   interval, if it has one;
//! * on the stop signal (`SIGTERM` unless configured), finish the request
//!   in hand (if any) and exit, between requests on a persistent
//!   connection too: that is how the pool retires workers and stops
//!   gracefully. `SIGKILL` follows a grace period;
//! * exit when a report fails and [`is_orphaned`] is true: the master is
//!   gone.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use nix::errno::Errno;

use super::core::Report;
use super::status::{encode, ENV, MASTER_ENV};
use crate::sys::worker as sys;

/// Not looked up yet.
const UNKNOWN: i32 = -2;
/// Not a worker.
const NONE: i32 = -1;

static FD: AtomicI32 = AtomicI32::new(UNKNOWN);
static TOKEN: AtomicU64 = AtomicU64::new(0);
/// The master's pid, as seen when the channel was set.
static MASTER: AtomicI32 = AtomicI32::new(0);
/// A report failed with `EPIPE`: nobody reads the channel any more.
static ORPHANED: AtomicBool = AtomicBool::new(false);

/// Tells the pool this worker can take work. Returns whether the message
/// was written (`false` outside a pool, if the master is gone, or if a
/// signal interrupted a report blocked on a full pipe).
///
/// ```no_run
/// use evchild::supervise::worker;
/// // In a worker's main loop:
/// worker::ready();
/// loop {
///     // let conn = listener.accept()?;
///     if !worker::busy() && worker::is_orphaned() {
///         break; // the master is gone
///     }
///     // serve(conn);
///     worker::idle();
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

/// Tells the pool this worker is alive, without changing its state: for a
/// pool with a [heartbeat](super::PoolConfig::heartbeat) interval, call it
/// (or any report) more often than that, idle or busy. No allocation, like
/// [`ready`].
pub fn heartbeat() -> bool {
    send(Report::Heartbeat)
}

/// Whether this process is a pool's worker (has a status channel).
pub fn is_worker() -> bool {
    channel().is_some()
}

/// Whether the master that started this worker is gone: a report failed
/// because nobody reads the channel any more, or this process has another
/// parent than the master it was started by. A worker should then finish
/// what it is doing and exit. Async-signal-safe and allocation-free once
/// the channel is known (a forked worker's always is; an executed
/// worker's after its first report or [`is_worker`]).
pub fn is_orphaned() -> bool {
    if ORPHANED.load(Ordering::Relaxed) {
        return true;
    }
    let master = MASTER.load(Ordering::Relaxed);
    channel().is_some() && master != 0 && sys::getppid() != master
}

/// Called by the pool in a forked worker, before the worker's function,
/// with the master's pid: atomic stores only, so async-signal-safe.
pub(crate) fn set_channel(fd: RawFd, token: u64, master: i32) {
    TOKEN.store(token, Ordering::Relaxed);
    MASTER.store(if fd >= 0 { master } else { 0 }, Ordering::Relaxed);
    ORPHANED.store(false, Ordering::Relaxed);
    FD.store(fd, Ordering::Release);
}

fn channel() -> Option<(RawFd, u64)> {
    let mut fd = FD.load(Ordering::Acquire);
    if fd == UNKNOWN {
        let (found, token, master) = from_env().unwrap_or((NONE, 0, 0));
        // Two threads racing here compute the same answer (the second
        // finds the variables gone, and the descriptor already set).
        if FD.load(Ordering::Acquire) == UNKNOWN {
            set_channel(found, token, master);
        }
        fd = found;
    }
    (fd >= 0).then(|| (fd, TOKEN.load(Ordering::Relaxed)))
}

/// Parses `"<fd>:<token>"` and the master's pid from the environment
/// (through std, under its lock), removes both variables (the worker's own
/// children must not take them, nor the descriptor, for theirs), and makes
/// the descriptor close-on-exec. A descriptor that is not the write end of
/// a pipe is no channel: the variable may have reached a process that has
/// something else under that number.
fn from_env() -> Option<(RawFd, u64, i32)> {
    let found = read_env();
    std::env::remove_var(ENV);
    std::env::remove_var(MASTER_ENV);
    let (fd, token, master) = found?;
    if !sys::is_pipe_write_end(fd) {
        return None;
    }
    sys::set_cloexec(fd, true).ok()?;
    Some((fd, token, master.unwrap_or_else(sys::getppid)))
}

/// The channel and the master's pid as the environment gives them (read
/// through std, under its lock), unchecked.
fn read_env() -> Option<(RawFd, u64, Option<i32>)> {
    let value = std::env::var_os(ENV)?;
    let master = std::env::var_os(MASTER_ENV)
        .and_then(|m| number(std::os::unix::ffi::OsStrExt::as_bytes(m.as_os_str())))
        .and_then(|m| i32::try_from(m).ok());
    let (fd, token) = parse(std::os::unix::ffi::OsStrExt::as_bytes(value.as_os_str()))?;
    Some((fd, token, master))
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
    match sys::write(fd, &msg) {
        Ok(n) => n == msg.len(),
        Err(Errno::EPIPE) => {
            ORPHANED.store(true, Ordering::Relaxed);
            false
        }
        // EINTR: the write blocked on a full pipe and a handler ran (a
        // `SIGTERM` to see, say): nothing was written. Anything else: the
        // channel is broken.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, item 10: the environment is read under std's lock, so a
    /// safe `remove_var` on another thread (which moves the variables after
    /// the one it removes) cannot race with the lookup.
    #[test]
    fn the_channel_lookup_does_not_race_with_set_var() {
        const N: usize = 5000;
        let (_read, write) = nix::unistd::pipe().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&write);
        // Variables before ours: each removal moves ours down one slot.
        for i in 0..N {
            std::env::set_var(format!("EVCHILD_TEST_CHURN_{i}"), "x");
        }
        std::env::set_var(ENV, format!("{fd}:42"));
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let d = std::sync::Arc::clone(&done);
        let churn = std::thread::spawn(move || {
            for i in 0..N {
                std::env::remove_var(format!("EVCHILD_TEST_CHURN_{i}"));
            }
            d.store(true, Ordering::Relaxed);
        });
        let (mut lookups, mut wrong) = (0, 0);
        while !done.load(Ordering::Relaxed) {
            lookups += 1;
            if read_env().map(|(fd, token, _)| (fd, token)) != Some((fd, 42)) {
                wrong += 1;
            }
        }
        churn.join().unwrap();
        std::env::remove_var(ENV);
        assert_eq!(wrong, 0, "{wrong} of {lookups} lookups went wrong");
    }

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
