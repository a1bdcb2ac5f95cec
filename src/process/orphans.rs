//! Children that dropped reactors left running ([`DropPolicy::Leave`]):
//! reaped once they die, so they do not stay zombies (tokio's orphan
//! queue), at no cost until one of them dies.
//!
//! Each orphan is named by a pidfd wherever the system has them (the
//! reactor's own, or one opened at the drop), and every pidfd sits in one
//! process-wide epoll set, the *orphan set*, which every reactor's own
//! epoll set holds (nested epoll). While no orphan dies, nothing is ready:
//! a `dispatch` pays nothing for orphans (not even an atomic load). When
//! one dies, every reactor becomes readable; the first `dispatch` to look
//! reaps it (one `waitid(P_PIDFD)`), and the set is quiet again.
//!
//! Orphans without a pidfd (no pidfds on this system) are looked at, one
//! wait each, by a `dispatch` that a `SIGCHLD` woke ([`reap_signalled`]).
//!
//! A pid adopted again ([`take`], from `Reactor::watch` or a fork
//! replacement) leaves the list with its pidfd, which the adopting reactor
//! reuses: the orphan list never reaps a child a reactor watches.
//!
//! No system call runs under the process lock: an orphan being looked at is
//! marked busy under the lock, waited for outside it, and removed (and its
//! pidfd taken out of the set and closed) after.
//!
//! [`DropPolicy::Leave`]: crate::DropPolicy::Leave

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use slab::Slab;

use super::lock;
use crate::reap::{Reap, Target};
use crate::Pid;

/// One orphan.
struct Orphan {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    /// Its pidfd is in the orphan set. Otherwise it is looked at on
    /// `SIGCHLD` wake-ups.
    in_set: bool,
    /// Being looked at (or added to the set) by some thread, outside the
    /// lock: nobody else touches it meanwhile.
    busy: bool,
}

/// The orphan part of the process-wide state (under the lock).
#[derive(Default)]
pub(crate) struct Book {
    orphans: Slab<Orphan>,
    by_pid: HashMap<Pid, usize>,
    /// The orphan set of this fork generation, made by the first reactor.
    set: Option<Arc<Epoll>>,
}

/// Orphans listed: lets a start skip the lock when there are none.
static LISTED: AtomicUsize = AtomicUsize::new(0);
/// Orphans listed that are not in the set.
static PIDLESS: AtomicUsize = AtomicUsize::new(0);

/// In a forked child: the parent's orphans are not this process's
/// children (the list itself is replaced at the next lock).
/// Async-signal-safe: atomic stores.
pub(super) fn reset_in_child() {
    LISTED.store(0, Ordering::Release);
    PIDLESS.store(0, Ordering::Release);
}

/// The orphan set, made at the first call of the fork generation, for a
/// reactor to nest in its own set.
pub(crate) fn set() -> std::io::Result<Arc<Epoll>> {
    if let Some(set) = &lock().orphans.set {
        return Ok(Arc::clone(set));
    }
    let made = Arc::new(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?);
    let mut state = lock();
    let set = Arc::clone(state.orphans.set.get_or_insert(made));
    // If another thread won, ours is dropped (closed) after the lock.
    drop(state);
    Ok(set)
}

/// Puts the children of a dropped reactor on the list, each with its
/// pidfd (if it has one) in the orphan set first.
pub(crate) fn adopt(children: Vec<(Pid, Option<OwnedFd>)>) {
    if children.is_empty() {
        return;
    }
    let set = set().ok();
    let children: Vec<_> = children
        .into_iter()
        .map(|(pid, pidfd)| {
            // The event's data is the pid: `reap_ready` finds the orphan by
            // it (two live orphans never share a pid).
            let added = match (&pidfd, &set, u64::try_from(pid.as_raw())) {
                (Some(fd), Some(set), Ok(data)) => set
                    .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, data))
                    .is_ok(),
                _ => false,
            };
            // Not in the set: looked at on SIGCHLD wake-ups instead.
            (pid, pidfd, added)
        })
        .collect();
    let mut state = lock();
    let book = &mut state.orphans;
    for (pid, pidfd, in_set) in children {
        if !in_set {
            PIDLESS.fetch_add(1, Ordering::Release);
        }
        let key = book.orphans.insert(Orphan {
            pid,
            pidfd,
            in_set,
            busy: false,
        });
        book.by_pid.insert(pid, key);
        LISTED.fetch_add(1, Ordering::Release);
    }
}

/// Takes `pid` off the list, if it is an orphan, for a reactor that adopts
/// it (`watch`, a fork replacement, or a start that got the pid of an
/// orphan someone else reaped): `Some` with its pidfd (out of the set), if
/// it had one. One atomic load when there are no orphans.
pub(crate) fn take(pid: Pid) -> Option<Option<OwnedFd>> {
    if LISTED.load(Ordering::Acquire) == 0 {
        return None;
    }
    loop {
        let mut state = lock();
        let book = &mut state.orphans;
        let &key = book.by_pid.get(&pid)?;
        if book.orphans[key].busy {
            // Another thread is waiting for it (one `waitid`): let it
            // finish, then look again.
            drop(state);
            std::thread::yield_now();
            continue;
        }
        let orphan = book.remove(key);
        let set = book.set.clone();
        drop(state);
        if let (Some(fd), Some(set), true) = (&orphan.pidfd, set, orphan.in_set) {
            crate::sys::epoll_del(set.0.as_raw_fd(), fd.as_raw_fd());
        }
        return Some(orphan.pidfd);
    }
}

impl Book {
    fn remove(&mut self, key: usize) -> Orphan {
        let orphan = self.orphans.remove(key);
        if self.by_pid.get(&orphan.pid) == Some(&key) {
            self.by_pid.remove(&orphan.pid);
        }
        LISTED.fetch_sub(1, Ordering::Release);
        if !orphan.in_set {
            PIDLESS.fetch_sub(1, Ordering::Release);
        }
        orphan
    }
}

/// The orphan set is ready: reaps the orphans whose pidfds are, with
/// `sys` (one wait each), a batch of at most 64. Returns whether the set
/// may still hold ready ones (a full batch): the caller must look again
/// (its loop's registration may be edge-triggered).
pub(crate) fn reap_ready(set: &Epoll, sys: &mut impl Reap) -> bool {
    let mut events = [EpollEvent::empty(); 64];
    let n = loop {
        match set.wait(&mut events, 0u8) {
            Err(Errno::EINTR) => continue,
            Ok(n) => break n,
            Err(_) => return false,
        }
    };
    let pids: Vec<Pid> = events[..n]
        .iter()
        .filter_map(|e| libc::pid_t::try_from(e.data()).ok())
        .map(Pid::from_raw)
        .collect();
    let keys: Vec<usize> = {
        let state = lock();
        let by_pid = &state.orphans.by_pid;
        pids.iter().filter_map(|pid| by_pid.get(pid).copied()).collect()
    };
    look_at(keys.into_iter(), sys, Some(set));
    n == events.len()
}

/// A `SIGCHLD` woke a reactor: looks at the orphans without a pidfd (one
/// wait each). One atomic load when there are none.
pub(crate) fn reap_signalled(sys: &mut impl Reap) {
    if PIDLESS.load(Ordering::Acquire) == 0 {
        return;
    }
    let keys: Vec<usize> = {
        let state = lock();
        state
            .orphans
            .orphans
            .iter()
            .filter(|(_, o)| !o.in_set)
            .map(|(key, _)| key)
            .collect()
    };
    look_at(keys.into_iter(), sys, None);
}

/// Marks the orphans `keys` busy, waits for each outside the lock, then
/// removes those that died (closing their pidfds, out of `set`, after the
/// lock).
fn look_at(keys: impl Iterator<Item = usize>, sys: &mut impl Reap, set: Option<&Epoll>) {
    let mut targets = Vec::new();
    {
        let mut state = lock();
        for key in keys {
            if let Some(orphan) = state.orphans.orphans.get_mut(key) {
                if !orphan.busy {
                    orphan.busy = true;
                    let pidfd = orphan.pidfd.as_ref().map(AsRawFd::as_raw_fd);
                    targets.push((
                        key,
                        Target {
                            pid: orphan.pid,
                            pidfd,
                        },
                    ));
                }
            }
        }
    }
    if targets.is_empty() {
        return;
    }
    let mut gone = Vec::with_capacity(targets.len());
    for &(key, target) in &targets {
        let done = loop {
            match sys.reap(target) {
                Err(Errno::EINTR) => continue,
                // Dead and reaped now, or reaped by someone else.
                Ok(Some(status)) if status.is_death() => break true,
                Err(Errno::ECHILD) => break true,
                _ => break false,
            }
        };
        gone.push((key, done));
    }
    // Out of the set: those reaped, and those whose pidfd was ready yet
    // nothing could be reaped (a zombie a tracer holds), which would keep
    // every reactor waking: they are looked at on `SIGCHLD` wake-ups from
    // now on (kept busy until they have left the set).
    let mut reaped = Vec::new();
    let mut stuck = Vec::new();
    let mut state = lock();
    for (key, done) in gone {
        if done {
            let orphan = state.orphans.remove(key);
            if orphan.in_set {
                reaped.push(orphan.pidfd);
            }
        } else if let Some(orphan) = state.orphans.orphans.get_mut(key) {
            match (&orphan.pidfd, orphan.in_set) {
                (Some(fd), true) => {
                    orphan.in_set = false;
                    PIDLESS.fetch_add(1, Ordering::Release);
                    stuck.push((key, fd.as_raw_fd()));
                }
                _ => orphan.busy = false,
            }
        }
    }
    drop(state);
    let Some(set) = set else { return };
    for fd in reaped.iter().flatten() {
        crate::sys::epoll_del(set.0.as_raw_fd(), fd.as_raw_fd());
    }
    if stuck.is_empty() {
        return;
    }
    for &(_, fd) in &stuck {
        // Open: the orphan is busy, so nobody takes or closes it meanwhile.
        crate::sys::epoll_del(set.0.as_raw_fd(), fd);
    }
    let mut state = lock();
    for (key, _) in stuck {
        if let Some(orphan) = state.orphans.orphans.get_mut(key) {
            orphan.busy = false;
        }
    }
}
