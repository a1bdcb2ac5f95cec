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
//! Orphans outside the set (no pidfds on this system, or a pidfd that
//! could not be added, or one that was ready yet could not be reaped: a
//! zombie another process traces) are looked at, one wait each, on
//! `SIGCHLD`: the orphan list then takes a slot of evchild's handler for a
//! wake pipe of its own, whose read end sits in the orphan set, so a
//! `SIGCHLD` wakes every reactor as an orphan's death would. (If the
//! handler cannot be had, `SIG_IGN`, they are looked at when a reactor's
//! own pipe wakes it.)
//!
//! A pid adopted again ([`take`], from `Reactor::watch` or a fork
//! replacement) leaves the list with its pidfd, which the adopting reactor
//! reuses: the orphan list never reaps a child a reactor watches.
//!
//! No system call runs under the process lock: an orphan being looked at is
//! marked busy under the lock, waited for outside it, and removed (and its
//! pidfd taken out of the set and closed) after. Two short waits yield
//! instead of sleeping: [`take`] of an orphan another thread is waiting for
//! (one `waitid`).
//!
//! [`DropPolicy::Leave`]: crate::DropPolicy::Leave

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use slab::Slab;

use super::{lock, Registration};
use crate::reap::{Reap, Target};
use crate::sys::WakePipe;
use crate::Pid;

/// The orphan set's event data for the orphan list's own wake pipe (pids
/// are the data of the others, and never this large).
const WAKE: u64 = u64::MAX;

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

/// The orphan set and the orphan list's own wake pipe (its read end in the
/// set), made together by the first reactor of the fork generation, while
/// descriptors can be had (not at a drop that may find none).
struct Set {
    epoll: Arc<Epoll>,
    pipe: Arc<WakePipe>,
}

/// The orphan part of the process-wide state (under the lock).
#[derive(Default)]
pub(crate) struct Book {
    orphans: Slab<Orphan>,
    by_pid: HashMap<Pid, usize>,
    /// The orphan set of this fork generation, made by the first reactor.
    set: Option<Set>,
    /// The wake pipe's slot in the handler's table, taken when the first
    /// orphan outside the set appears, and kept.
    registration: Option<Registration>,
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
        return Ok(Arc::clone(&set.epoll));
    }
    let epoll = Arc::new(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?);
    let pipe = Arc::new(crate::sys::wake_pipe()?);
    epoll.add(pipe.read_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
    let made = Set { epoll, pipe };
    let mut state = lock();
    let (set, lost) = match &state.orphans.set {
        // Another thread won: ours is closed after the lock.
        Some(set) => (Arc::clone(&set.epoll), Some(made)),
        None => {
            let set = Arc::clone(&made.epoll);
            state.orphans.set = Some(made);
            (set, None)
        }
    };
    drop(state);
    drop(lost);
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
            (pid, pidfd, added)
        })
        .collect();
    let mut outside = false;
    let mut state = lock();
    let book = &mut state.orphans;
    for (pid, pidfd, in_set) in children {
        if !in_set {
            PIDLESS.fetch_add(1, Ordering::Release);
            outside = true;
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
    drop(state);
    if outside {
        ensure_wake();
    }
}

/// Orphans outside the set need `SIGCHLD` to wake the reactors: takes a
/// handler slot for the orphan list's wake pipe, once (no descriptor is
/// needed: the pipe was made with the set). Without the handler
/// (`SIG_IGN`), nothing changes: reactors' own pipe wake-ups still look at
/// them.
fn ensure_wake() {
    let pipe = {
        let state = lock();
        if state.orphans.registration.is_some() {
            return;
        }
        match &state.orphans.set {
            Some(set) => Arc::clone(&set.pipe),
            None => return,
        }
    };
    let Ok(registration) = super::register(pipe.write_raw()) else {
        return;
    };
    // A SIGCHLD may have come before the slot was there: look once now.
    pipe.wake();
    let mut state = lock();
    // If another thread won, ours is dropped (slot emptied) after the lock.
    let lost = match state.orphans.registration {
        Some(_) => Some(registration),
        None => {
            state.orphans.registration = Some(registration);
            None
        }
    };
    drop(state);
    drop(lost);
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
        let set = book.set.as_ref().map(|s| Arc::clone(&s.epoll));
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
/// `sys` (one wait each), a batch of at most 64, and, if the orphan list's
/// wake pipe is among them (a `SIGCHLD`), the orphans outside the set.
/// Returns whether the set may still hold ready ones (a full batch): the
/// caller must look again (its loop's registration may be edge-triggered).
pub(crate) fn reap_ready(set: &Epoll, sys: &mut impl Reap) -> bool {
    let mut events = [EpollEvent::empty(); 64];
    let n = loop {
        match set.wait(&mut events, 0u8) {
            Err(Errno::EINTR) => continue,
            Ok(n) => break n,
            Err(_) => return false,
        }
    };
    let ready = &events[..n];
    if ready.iter().any(|e| e.data() == WAKE) {
        let pipe = lock().orphans.set.as_ref().map(|s| Arc::clone(&s.pipe));
        if let Some(pipe) = pipe {
            // Before the waits: a SIGCHLD during them writes a new byte.
            let _ = pipe.drain();
        }
        reap_signalled(sys);
    }
    let pids: Vec<Pid> = ready
        .iter()
        .filter(|e| e.data() != WAKE)
        .filter_map(|e| libc::pid_t::try_from(e.data()).ok())
        .map(Pid::from_raw)
        .collect();
    if !pids.is_empty() {
        let keys: Vec<(usize, Pid)> = {
            let state = lock();
            let by_pid = &state.orphans.by_pid;
            pids.iter()
                .filter_map(|&pid| Some((*by_pid.get(&pid)?, pid)))
                .collect()
        };
        look_at(keys, sys, Some(set));
    }
    n == events.len()
}

/// A `SIGCHLD` woke a reactor (or the orphan list's own pipe): looks at the
/// orphans outside the set (one wait each). One atomic load when there are
/// none.
pub(crate) fn reap_signalled(sys: &mut impl Reap) {
    if PIDLESS.load(Ordering::Acquire) == 0 {
        return;
    }
    let keys: Vec<(usize, Pid)> = {
        let state = lock();
        state
            .orphans
            .orphans
            .iter()
            .filter(|(_, o)| !o.in_set)
            .map(|(key, o)| (key, o.pid))
            .collect()
    };
    look_at(keys, sys, None);
}

/// Marks the orphans `keys` busy (each only if it is still the orphan of
/// that pid: a key may have been reused since it was read), waits for each
/// outside the lock, then removes those that died (their pidfds out of
/// `set` and closed, after the lock).
fn look_at(keys: Vec<(usize, Pid)>, sys: &mut impl Reap, set: Option<&Epoll>) {
    let mut targets = Vec::new();
    {
        let mut state = lock();
        for (key, pid) in keys {
            if let Some(orphan) = state.orphans.orphans.get_mut(key) {
                if orphan.pid == pid && !orphan.busy {
                    orphan.busy = true;
                    let pidfd = orphan.pidfd.as_ref().map(AsRawFd::as_raw_fd);
                    targets.push((key, Target { pid, pidfd }));
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
    // nothing could be reaped (a zombie another process traces), which
    // would keep every reactor waking: they are looked at on `SIGCHLD`
    // from now on (kept busy until they have left the set).
    let mut removed: Vec<Orphan> = Vec::new();
    let mut stuck: Vec<(usize, RawFd)> = Vec::new();
    let mut state = lock();
    for (key, done) in gone {
        if done {
            removed.push(state.orphans.remove(key));
        } else if let Some(orphan) = state.orphans.orphans.get_mut(key) {
            match (&orphan.pidfd, orphan.in_set && set.is_some()) {
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
    // Closed here, after the lock (out of the set first).
    for orphan in removed {
        if let (Some(fd), Some(set), true) = (&orphan.pidfd, set, orphan.in_set) {
            crate::sys::epoll_del(set.0.as_raw_fd(), fd.as_raw_fd());
        }
    }
    let Some(set) = set else { return };
    if stuck.is_empty() {
        return;
    }
    for &(_, fd) in &stuck {
        // Open: the orphan is busy, so nobody takes or closes it meanwhile.
        crate::sys::epoll_del(set.0.as_raw_fd(), fd);
    }
    ensure_wake();
    let mut state = lock();
    for (key, _) in stuck {
        if let Some(orphan) = state.orphans.orphans.get_mut(key) {
            orphan.busy = false;
        }
    }
}
