//! Routing statuses between the reactors of one process: when a
//! `LibraryAlways` reactor reaps a child that another reactor registered,
//! that reactor gets the exact status instead of `Lost`.
//!
//! Every reactor *claims* the pids it registers (pid → reactor number and
//! wake pipe). A reap-all pass hands each child it reaped that is not its
//! own to the claimant (into the process-wide *inbox*, waking the claimant),
//! and only unclaimed pids to the unknown-child hook.
//!
//! # The fork-in-progress protocol
//!
//! A child can die, and be reaped by the reap-all reactor, before the
//! reactor that started it has registered (and claimed) its pid. So every
//! start is bracketed: [`Start::begin`] counts a start in flight before the
//! fork, [`Start::finish`] claims the pid and ends it. A reap-all pass that
//! reaps an unclaimed pid while a start is in flight *parks* the status
//! instead of calling it a stranger; the last start to finish wakes the
//! reap-all reactor, whose next pass looks at the parked statuses again.
//!
//! # The claimant's side
//!
//! A claimant learns that its child is gone from `ECHILD` (or a readable
//! pidfd whose wait says `ECHILD`). Before it reports the child lost, it
//! waits for any reap-all pass still running (the pass may have reaped the
//! child and not yet routed it: [`PASSES`]), then looks in the inbox.
//!
//! # Orphans
//!
//! Children a `Library` or `LibraryAlways` reactor still had when it was
//! dropped with [`DropPolicy::Leave`](crate::DropPolicy::Leave) go on an
//! orphan list (each with a pidfd wherever the system has them, opened at
//! the drop if the reactor had none for it), and any later `dispatch` of
//! any reactor of the process reaps those that have died since (one
//! `waitid(WNOHANG)` each, by pidfd where there is one), so they
//! do not stay zombies (tokio's orphan queue). A dispatch with no orphans
//! pays one atomic load.
//!
//! # Fork safety
//!
//! The state sits behind a spin lock, not a `Mutex`, so that a forked child
//! can reset it: [`after_fork_in_child`] (run by the `pthread_atfork` child
//! handler) releases the lock with an atomic store, and the first use in
//! the new generation drops the inherited contents without freeing them
//! (they are leaked: freeing is not safe where the parent's allocator
//! state is unknown).

#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::errno::Errno;

use crate::reap::{Reap, Target, Waited};
use crate::Pid;

/// Who registered a pid.
#[derive(Clone, Copy, Debug)]
struct Claimant {
    reactor: u32,
    /// The claimant's wake pipe (write end): open while the claim exists
    /// (a reactor withdraws its claims before closing its pipe).
    wake: RawFd,
}

#[derive(Default)]
struct Routes {
    generation: u64,
    claims: HashMap<Pid, Claimant>,
    /// Starts between `Start::begin` and `Start::finish`.
    in_flight: usize,
    /// Statuses reaped while starts were in flight, not yet claimed.
    parked: Vec<(Pid, Waited)>,
    /// Statuses routed to their claimant, not yet collected.
    inbox: HashMap<Pid, (u32, Waited)>,
    /// The reap-all reactor's wake pipe, if there is one.
    reap_all_wake: Option<RawFd>,
    /// Children of dropped reactors, reaped when they die.
    orphans: Vec<(Pid, Option<OwnedFd>)>,
}

struct Shared {
    locked: AtomicBool,
    routes: UnsafeCell<Option<ManuallyDrop<Routes>>>,
}

// SAFETY: `routes` is only reached through `lock()`, which gives one thread
// at a time exclusive access (the spin lock's acquire/release orderings
// publish the contents between them).
unsafe impl Sync for Shared {}

static SHARED: Shared = Shared {
    locked: AtomicBool::new(false),
    routes: UnsafeCell::new(None),
};

/// Reap-all passes running (reaped, not yet routed).
static PASSES: AtomicUsize = AtomicUsize::new(0);
/// Whether the orphan list may be non-empty (checked without the lock).
static ORPHANS: AtomicBool = AtomicBool::new(false);

struct Guard {
    routes: &'static mut Routes,
}

impl Drop for Guard {
    fn drop(&mut self) {
        SHARED.locked.store(false, Ordering::Release);
    }
}

impl std::ops::Deref for Guard {
    type Target = Routes;
    fn deref(&self) -> &Routes {
        self.routes
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Routes {
        self.routes
    }
}

fn lock() -> Guard {
    while SHARED
        .locked
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
    // SAFETY: we hold the lock, so no other reference to the contents
    // exists until the guard releases it.
    let slot = unsafe { &mut *SHARED.routes.get() };
    let generation = crate::process::fork_generation();
    match slot {
        Some(routes) if routes.generation == generation => {}
        _ => {
            // First use, or first use in a forked child: the inherited
            // contents (if any) belong to the parent and are leaked
            // (`ManuallyDrop`), never freed here.
            *slot = Some(ManuallyDrop::new(Routes {
                generation,
                ..Routes::default()
            }));
        }
    }
    let routes: &mut Routes = slot.as_mut().expect("just set");
    Guard { routes }
}

/// In a forked child, from the `pthread_atfork` child handler: releases the
/// lock that a thread which does not exist here may have held.
/// Async-signal-safe (one atomic store).
pub(crate) fn after_fork_in_child() {
    SHARED.locked.store(false, Ordering::Release);
    PASSES.store(0, Ordering::Release);
    // The parent's orphans are not this process's children.
    ORPHANS.store(false, Ordering::Release);
}

/// Puts children of a dropped reactor on the orphan list.
pub(crate) fn adopt_orphans(children: impl IntoIterator<Item = (Pid, Option<OwnedFd>)>) {
    let mut routes = lock();
    let before = routes.orphans.len();
    routes.orphans.extend(children);
    if routes.orphans.len() > before {
        ORPHANS.store(true, Ordering::Release);
    }
}

/// Reaps the orphans that have died (see the module docs) with `sys`.
pub(crate) fn reap_orphans(sys: &mut impl Reap) {
    if !ORPHANS.load(Ordering::Acquire) {
        return;
    }
    let mut routes = lock();
    routes.orphans.retain(|(pid, pidfd)| {
        let target = Target {
            pid: *pid,
            pidfd: pidfd.as_ref().map(AsRawFd::as_raw_fd),
        };
        loop {
            match sys.reap(target) {
                Err(Errno::EINTR) => continue,
                // Dead and reaped now (or reaped by someone else: ECHILD).
                Ok(Some(status)) if status.is_death() => return false,
                Err(Errno::ECHILD) => return false,
                _ => return true,
            }
        }
    });
    if routes.orphans.is_empty() {
        ORPHANS.store(false, Ordering::Release);
    }
}

fn wake(fd: RawFd) {
    let byte = 1u8;
    // SAFETY: a one-byte write from a live local to a descriptor that is
    // open while it is in the routes (see `Claimant::wake`); a full pipe
    // (EAGAIN) is already readable, so the result does not matter.
    unsafe { libc::write(fd, std::ptr::addr_of!(byte).cast(), 1) };
}

/// A start in flight (see the module docs). Dropping it unfinished ends
/// the start without a claim.
#[derive(Debug)]
pub(crate) struct Start {
    open: bool,
}

impl Start {
    pub(crate) fn begin() -> Start {
        lock().in_flight += 1;
        Start { open: true }
    }

    /// Claims `pid` for `reactor` (woken through `wake`) and ends the start.
    pub(crate) fn finish(mut self, pid: Pid, reactor: u32, wake: RawFd) {
        self.end(Some((pid, Claimant { reactor, wake })));
    }

    fn end(&mut self, claim: Option<(Pid, Claimant)>) {
        if !std::mem::replace(&mut self.open, false) {
            return;
        }
        let mut routes = lock();
        if let Some((pid, claimant)) = claim {
            routes.claims.insert(pid, claimant);
        }
        routes.in_flight -= 1;
        if routes.in_flight == 0 && !routes.parked.is_empty() {
            if let Some(fd) = routes.reap_all_wake {
                wake(fd);
            }
        }
    }

    /// In a forked child: forget the start without touching the routes.
    pub(crate) fn forget(mut self) {
        self.open = false;
    }
}

impl Drop for Start {
    fn drop(&mut self) {
        self.end(None);
    }
}

/// A child of `reactor` left its table (reported): withdraw its claim.
pub(crate) fn release(pid: Pid, reactor: u32) {
    lock().withdraw(pid, reactor);
}

impl Routes {
    /// Removes `reactor`'s claim on `pid`, if it has one.
    fn withdraw(&mut self, pid: Pid, reactor: u32) {
        if self.claims.get(&pid).is_some_and(|c| c.reactor == reactor) {
            self.claims.remove(&pid);
        }
    }
}

/// `reactor` found its child `pid` gone (`ECHILD`): the status a reap-all
/// reactor routed to it, if any. Withdraws the claim either way.
pub(crate) fn collect(pid: Pid, reactor: u32) -> Option<Waited> {
    // A pass that reaped the child may not have routed it yet.
    while PASSES.load(Ordering::Acquire) > 0 {
        std::thread::yield_now();
    }
    let mut routes = lock();
    routes.withdraw(pid, reactor);
    match routes.inbox.get(&pid) {
        Some(&(owner, waited)) if owner == reactor => {
            routes.inbox.remove(&pid);
            Some(waited)
        }
        // Reaped while its start was in flight and not routed yet: the
        // pid is ours (it was claimed since), so is the status.
        _ => {
            let at = routes.parked.iter().position(|&(p, _)| p == pid)?;
            Some(routes.parked.swap_remove(at).1)
        }
    }
}

/// A reactor goes away (or leaves a mode): withdraw all its claims and
/// statuses, and its reap-all wake-up, before its pipe is closed.
pub(crate) fn forget_reactor(reactor: u32, reap_all_wake: Option<RawFd>) {
    let mut routes = lock();
    routes.claims.retain(|_, c| c.reactor != reactor);
    routes.inbox.retain(|_, (owner, _)| *owner != reactor);
    if reap_all_wake.is_some() && routes.reap_all_wake == reap_all_wake {
        routes.reap_all_wake = None;
    }
}

/// The reap-all reactor's wake pipe, for the end of the last start in
/// flight.
pub(crate) fn set_reap_all_wake(fd: Option<RawFd>) {
    lock().reap_all_wake = fd;
}

/// A reap-all pass: from `begin` to `route`, claimants that find a child
/// gone wait for it.
#[derive(Debug)]
pub(crate) struct Pass(());

impl Pass {
    pub(crate) fn begin() -> Pass {
        PASSES.fetch_add(1, Ordering::AcqRel);
        Pass(())
    }

    /// Routes the strangers of the pass (and those parked earlier): each
    /// claimed one goes to its claimant; the others are kept for the
    /// unknown-child hook, unless starts are in flight (then they are
    /// parked). `strangers` is left holding those for the hook.
    pub(crate) fn route(self, strangers: &mut Vec<(Pid, Waited)>) {
        let mut routes = lock();
        let routes = &mut *routes;
        let parked = std::mem::take(&mut routes.parked);
        strangers.extend(parked);
        strangers.retain(|&(pid, waited)| match routes.claims.remove(&pid) {
            Some(claimant) => {
                routes.inbox.insert(pid, (claimant.reactor, waited));
                wake(claimant.wake);
                false
            }
            None if routes.in_flight > 0 => {
                routes.parked.push((pid, waited));
                false
            }
            None => true,
        });
        drop(self);
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        PASSES.fetch_sub(1, Ordering::AcqRel);
    }
}
