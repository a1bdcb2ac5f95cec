//! Who may reap which pid, process-wide: the reap-all right
//! (`LibraryAlways`), the claims every reactor makes on the pids it
//! registers, the starts in flight, and the inbox of statuses a reap-all
//! reactor reaped for another reactor.
//!
//! # Claims and the inbox
//!
//! Every reactor *claims* each pid it registers ([`Start::finish`]): the
//! claim names the child ([`ChildId`]) and the reactor's wake pipe. A
//! reap-all pass hands each child it reaped that is not its own to the
//! claimant: the status goes into the *inbox*, keyed by the claim (so a
//! second status for a reused pid never overwrites the first), and the
//! claimant is woken. Only unclaimed pids go to the unknown-child hook. The
//! claimant takes its statuses in its next `dispatch`
//! ([`take_routed`]), whatever its mode, or when a wait for the child says
//! `ECHILD` ([`collect`]).
//!
//! # Starts in flight
//!
//! A child exists (and can die) before the reactor that started it has
//! claimed it; and std's own fork path waits for a child whose `exec`
//! failed, and panics if someone else reaped it. So a reap-all pass never
//! reaps a child that a start in flight may own:
//! * [`Start::begin`] (before the fork) waits while a pass runs, then counts
//!   the start in flight; [`Start::finish`] claims the pid and ends it.
//! * A pass that begins with no start in flight reaps with `wait4(-1)`
//!   (no start can begin until it ends). One that begins with starts in
//!   flight is *careful*: it peeks (`waitid(WNOWAIT)`) and reaps a pid only
//!   if it is claimed or no start is in flight any more
//!   ([`Pass::may_reap`]); otherwise it stops, and the last start to end
//!   wakes the reap-all reactor again.
//!
//! A claimant that finds its child gone waits for any pass still running
//! (it may have reaped the child and not yet routed it) before it looks in
//! the inbox: [`PASSES`], a futex word, so it sleeps.
//!
//! # No system call under the lock
//!
//! Wake-ups are written after the lock is released: the routes hold each
//! claimant's pipe through an `Arc`, so it stays open (both ends) until
//! the write is done, even if the reactor is dropped meanwhile. Pipes
//! dropped by the routes are dropped after the lock is released too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use super::{fork_generation, lock};
use crate::reap::Waited;
use crate::sys::{futex_wait, futex_wake_all, WakePipe};
use crate::{ChildId, Error, Pid};

/// Who registered a pid, and how to wake it.
struct Claimant {
    id: ChildId,
    wake: Arc<WakePipe>,
}

/// The reap-all reactor.
struct ReapAll {
    reactor: u32,
    wake: Arc<WakePipe>,
}

/// The routing part of the process-wide state (under the lock).
#[derive(Default)]
pub(crate) struct Routes {
    claims: HashMap<Pid, Claimant>,
    /// Starts between `Start::begin` and their end.
    in_flight: usize,
    /// A careful pass stopped at an unclaimed child: wake the reap-all
    /// reactor when the last start in flight ends.
    deferred: bool,
    /// Statuses routed to their claimant, not yet taken.
    inbox: HashMap<ChildId, Waited>,
    reap_all: Option<ReapAll>,
}

/// Reap-all passes running: from [`Pass::begin`] to the end of routing.
/// Raised under the lock; a futex word that starts and claimants sleep on.
static PASSES: AtomicU32 = AtomicU32::new(0);
/// Threads sleeping on [`PASSES`]: a pass that ends wakes them only if
/// there are any (no system call otherwise).
static PASS_WAITERS: AtomicU32 = AtomicU32::new(0);
/// Statuses in the inbox: lets `dispatch` skip the lock when there is none.
static INBOX: AtomicUsize = AtomicUsize::new(0);

/// In a forked child, from the atfork handler: no pass runs, the inbox is
/// empty (the routes themselves are replaced at the next lock).
/// Async-signal-safe: atomic stores.
pub(super) fn reset_in_child() {
    PASSES.store(0, Ordering::Release);
    PASS_WAITERS.store(0, Ordering::Release);
    INBOX.store(0, Ordering::Release);
}

/// Sleeps until no reap-all pass is running.
fn wait_passes() {
    while PASSES.load(Ordering::Acquire) != 0 {
        sleep_on_passes();
    }
}

/// Sleeps until [`PASSES`] changes (or a spurious wake-up). The waiter
/// count is raised before `PASSES` is read again, and a pass lowers
/// `PASSES` before it reads the count (both sequentially consistent), so
/// either the sleeper sees the pass ended or the pass sees the sleeper.
fn sleep_on_passes() {
    PASS_WAITERS.fetch_add(1, Ordering::SeqCst);
    let passes = PASSES.load(Ordering::SeqCst);
    if passes != 0 {
        futex_wait(&PASSES, passes);
    }
    PASS_WAITERS.fetch_sub(1, Ordering::SeqCst);
}

/// The right to reap every child of the process (`LibraryAlways`): at most
/// one exists per process, since two `waitpid(-1)` loops would steal each
/// other's children. Dropping it gives the right back; dropped in a forked
/// child (another fork generation), it does nothing at all.
#[derive(Debug)]
pub(crate) struct ReapAllToken {
    reactor: u32,
    generation: u64,
}

impl ReapAllToken {
    /// Takes the right for `reactor`, woken through `wake` when the last
    /// start in flight ends after a careful pass stopped.
    ///
    /// # Errors
    /// [`Error::ReapAllTaken`] if another reactor of the process has it.
    pub(crate) fn take(reactor: u32, wake: &Arc<WakePipe>) -> Result<Self, Error> {
        let mut state = lock();
        if state.routes.reap_all.is_some() {
            return Err(Error::ReapAllTaken);
        }
        state.routes.reap_all = Some(ReapAll {
            reactor,
            wake: Arc::clone(wake),
        });
        Ok(ReapAllToken {
            reactor,
            generation: fork_generation(),
        })
    }
}

impl Drop for ReapAllToken {
    fn drop(&mut self) {
        if self.generation != fork_generation() {
            return;
        }
        let released;
        let mut state = lock();
        let ours = matches!(&state.routes.reap_all, Some(r) if r.reactor == self.reactor);
        released = if ours {
            state.routes.reap_all.take()
        } else {
            None
        };
        drop(state);
        drop(released);
    }
}

/// A start in flight (see the module docs). Dropping it unfinished ends
/// the start without a claim.
#[derive(Debug)]
pub(crate) struct Start {
    open: bool,
}

impl Start {
    /// Counts a start in flight, once no reap-all pass runs (it sleeps
    /// meanwhile: a pass is a few wait calls).
    pub(crate) fn begin() -> Start {
        loop {
            let mut state = lock();
            if PASSES.load(Ordering::Acquire) == 0 {
                state.routes.in_flight += 1;
                return Start { open: true };
            }
            drop(state);
            sleep_on_passes();
        }
    }

    /// Claims the child `id` (its reactor woken through `wake`) and ends
    /// the start.
    pub(crate) fn finish(mut self, id: ChildId, wake: &Arc<WakePipe>) {
        self.open = false;
        let replaced;
        let mut state = lock();
        replaced = state.routes.claims.insert(
            id.pid,
            Claimant {
                id,
                wake: Arc::clone(wake),
            },
        );
        let reap_all = state.routes.end_start();
        drop(state);
        drop(replaced);
        if let Some(reap_all) = reap_all {
            reap_all.wake();
        }
    }

    /// In a forked child: forget the start without touching the routes.
    pub(crate) fn forget(mut self) {
        self.open = false;
    }
}

impl Drop for Start {
    fn drop(&mut self) {
        if std::mem::replace(&mut self.open, false) {
            let reap_all = lock().routes.end_start();
            if let Some(reap_all) = reap_all {
                reap_all.wake();
            }
        }
    }
}

impl Routes {
    /// One start fewer in flight; the reap-all reactor's pipe if it must
    /// look again now.
    fn end_start(&mut self) -> Option<Arc<WakePipe>> {
        self.in_flight -= 1;
        if self.in_flight > 0 || !std::mem::take(&mut self.deferred) {
            return None;
        }
        self.reap_all.as_ref().map(|r| Arc::clone(&r.wake))
    }

    /// Removes `id`'s claim and routed status, if any; the claim removed.
    fn withdraw(&mut self, id: ChildId) -> Option<Claimant> {
        if self.inbox.remove(&id).is_some() {
            INBOX.fetch_sub(1, Ordering::Release);
        }
        match self.claims.get(&id.pid) {
            Some(c) if c.id == id => self.claims.remove(&id.pid),
            _ => None,
        }
    }
}

/// The child `id` left its reactor's table (reported, or forgotten):
/// withdraw its claim and any status routed to it.
pub(crate) fn release(id: ChildId) {
    let withdrawn;
    let mut state = lock();
    withdrawn = state.routes.withdraw(id);
    drop(state);
    drop(withdrawn);
}

/// The child `id` was found gone (`ECHILD`): the status a reap-all reactor
/// routed to it, if any. Waits for a pass still running first. Withdraws
/// the claim either way.
pub(crate) fn collect(id: ChildId) -> Option<Waited> {
    wait_passes();
    let withdrawn;
    let mut state = lock();
    let status = state.routes.inbox.get(&id).copied();
    withdrawn = state.routes.withdraw(id);
    drop(state);
    drop(withdrawn);
    status
}

/// The status routed to `id` and not yet taken, without taking it (for
/// `try_wait`). No lock when nothing was ever routed and no pass runs.
pub(crate) fn peek_routed(id: ChildId) -> Option<Waited> {
    // PASSES first: at 0, read after our probe saw the child gone, the pass
    // that reaped it has routed it, so INBOX shows it.
    if PASSES.load(Ordering::Acquire) == 0 && INBOX.load(Ordering::Acquire) == 0 {
        return None;
    }
    wait_passes();
    lock().routes.inbox.get(&id).copied()
}

/// Takes every status routed to `reactor`'s children, into `out`. No lock
/// when the inbox is empty.
pub(crate) fn take_routed(reactor: u32, out: &mut Vec<(ChildId, Waited)>) {
    if INBOX.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut withdrawn = Vec::new();
    let mut state = lock();
    let routes = &mut state.routes;
    routes.inbox.retain(|id, waited| {
        let mine = id.reactor == reactor;
        if mine {
            out.push((*id, *waited));
            INBOX.fetch_sub(1, Ordering::Release);
        }
        !mine
    });
    for (id, _) in out.iter() {
        withdrawn.extend(routes.withdraw(*id));
    }
    drop(state);
    drop(withdrawn);
}

/// The child `id` is let go of (`forget`): withdraws its claim, unless a
/// reap-all reactor has already reaped it (its status routed here, or a
/// pass running that may have): then `false`, and nothing changed (the
/// next `dispatch` delivers the status).
pub(crate) fn release_unless_routed(id: ChildId) -> bool {
    wait_passes();
    let withdrawn;
    let mut state = lock();
    if state.routes.inbox.contains_key(&id) {
        return false;
    }
    withdrawn = state.routes.withdraw(id);
    drop(state);
    drop(withdrawn);
    true
}

/// A reactor goes away: withdraw all its claims and statuses.
pub(crate) fn forget_reactor(reactor: u32) {
    let mut withdrawn = Vec::new();
    let mut state = lock();
    let routes = &mut state.routes;
    let before = routes.inbox.len();
    routes.inbox.retain(|id, _| id.reactor != reactor);
    INBOX.fetch_sub(before - routes.inbox.len(), Ordering::Release);
    let pids: Vec<Pid> = routes
        .claims
        .iter()
        .filter(|(_, c)| c.id.reactor == reactor)
        .map(|(pid, _)| *pid)
        .collect();
    for pid in pids {
        withdrawn.extend(routes.claims.remove(&pid));
    }
    drop(state);
    drop(withdrawn);
}

/// A reap-all pass: from `begin` to `route`, starts wait and claimants that
/// find a child gone wait for it.
#[derive(Debug)]
pub(crate) struct Pass {
    careful: bool,
    open: bool,
}

impl Pass {
    pub(crate) fn begin() -> Pass {
        let state = lock();
        PASSES.fetch_add(1, Ordering::SeqCst);
        let careful = state.routes.in_flight > 0;
        Pass {
            careful,
            open: true,
        }
    }

    /// Whether starts were in flight when the pass began: it must then
    /// peek and ask [`may_reap`](Self::may_reap) before each reap.
    pub(crate) fn careful(&self) -> bool {
        self.careful
    }

    /// A careful pass peeked `pid`, dead: may it reap it? Yes if a reactor
    /// claimed it or no start is in flight any more; otherwise the pass
    /// must stop (the end of the last start wakes the reap-all reactor).
    pub(crate) fn may_reap(&self, pid: Pid) -> bool {
        let mut state = lock();
        let routes = &mut state.routes;
        if routes.claims.contains_key(&pid) || routes.in_flight == 0 {
            return true;
        }
        routes.deferred = true;
        false
    }

    /// Routes what the pass reaped: each claimed pid's status goes to its
    /// claimant (woken after the lock is released); `strangers` is left
    /// holding the others, for the unknown-child hook. Ends the pass.
    pub(crate) fn route(mut self, strangers: &mut Vec<(Pid, Waited)>) {
        let mut wakes = Vec::new();
        let mut state = lock();
        let routes = &mut state.routes;
        strangers.retain(|&(pid, waited)| match routes.claims.remove(&pid) {
            Some(claimant) => {
                routes.inbox.insert(claimant.id, waited);
                INBOX.fetch_add(1, Ordering::Release);
                wakes.push(claimant.wake);
                false
            }
            None => true,
        });
        drop(state);
        self.end();
        for wake in &wakes {
            wake.wake();
        }
    }

    fn end(&mut self) {
        if std::mem::replace(&mut self.open, false) {
            PASSES.fetch_sub(1, Ordering::SeqCst);
            if PASS_WAITERS.load(Ordering::SeqCst) != 0 {
                futex_wake_all(&PASSES);
            }
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.end();
    }
}
