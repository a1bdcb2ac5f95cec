//! Every raw (`libc`) system call evchild makes, each wrapped once, and the
//! few other things that need `unsafe` (the fork-safe lock, a value that
//! may be leaked in a forked child, the call through a chained handler).
//! Outside this module the crate is `#![deny(unsafe_code)]`, but for the
//! `unsafe fn` declarations of `Reactor::fork`, `fork_with` and
//! `supervise::Start::fork` (and the latter's call of `fork_with`).
//!
//! Each wrapper takes and returns safe types (`BorrowedFd`, `OwnedFd`,
//! [`Pid`](crate::Pid), `io::Result`), retries nothing it was not asked to,
//! and says in its docs whether it is async-signal-safe: those are the only
//! ones the handler, the `pthread_atfork` child handler and a forked child
//! before `exec` may call.
//!
//! * `wait.rs`: `waitid` (raw, with the resource usage), `wait4`, the
//!   [`Reap`](crate::reap::Reap) seam's real implementation.
//! * `signal.rs`: `kill`, `killpg`, `pidfd_send_signal`, `sigaction`, the
//!   call through a chained handler, `SIGPIPE` bookkeeping.
//! * `pidfd.rs`: `pidfd_open` and the one-time probe.
//! * `fd.rs`: pipes, `close`, one-byte writes, `epoll_ctl` on raw sets.
//! * `timer.rs`: the `timerfd` and `poll`.
//! * `lock.rs`: the process-wide lock (a futex word a forked child resets).
//! * `leak.rs`: [`Leakable`], a value dropped normally or leaked in a
//!   forked child.
//! * `fork.rs`: `fork`, `_exit`, `pthread_atfork`.
//! * `spawn.rs`: the start of a `Prepared` child (`clone` with
//!   `CLONE_VM | CLONE_VFORK | CLONE_FILES`, the async-signal-safe child
//!   function), its stack and argument arrays, and its descriptor slots.
//! * `worker.rs`: what `supervise` needs for its workers' status channel
//!   and start-up (`write`, `close`, `fcntl`, `prctl(PR_SET_PDEATHSIG)`).

#![allow(unsafe_code)]

mod fd;
mod fork;
mod leak;
mod lock;
mod pidfd;
mod signal;
pub(crate) mod spawn;
mod timer;
mod wait;
pub(crate) mod worker;

pub(crate) use fd::{close_in_forked_child, epoll_del, wake_pipe, write_byte, WakePipe};
pub(crate) use fork::{atfork_child, exit_now, fork};
pub(crate) use leak::Leakable;
pub(crate) use lock::{futex_wait, futex_wake_all, Lock, LockGuard};
pub(crate) use pidfd::{pidfd_open, pidfd_probe};
pub(crate) use signal::{
    call_chained, getpgid, kill, kill_group, pidfd_send_signal, raise_sigchld, sigchld_action,
    sigchld_query, sigchld_set, take_pending_sigpipe, Action, ActionSlot,
};
pub(crate) use timer::{timer_create, timer_drain, timer_set, wait_readable};
pub(crate) use wait::{is_unreaped_child, kill_and_reap, probe_child, SysReap};
