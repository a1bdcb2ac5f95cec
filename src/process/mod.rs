//! All process-wide state, in one home: the `SIGCHLD` handler and the
//! table of wake pipes it writes to, the disposition, the routes between
//! reactors (claims, starts in flight, the inbox, the reap-all right), the
//! orphans of dropped reactors, and the fork generation that keeps all of
//! it from leaking into a forked child.
//!
//! What is not read by the signal handler sits in one [`State`] behind one
//! lock ([`lock`]): a futex word (`sys::Lock`), so a waiting thread sleeps
//! instead of spinning, and a forked child releases it with one atomic
//! store. No system call runs under it, except `sigaction` while the
//! handler is being (re)installed (rare: the first time, after other code
//! reset `SIGCHLD`, when stop reports are switched) and a few
//! `sched_yield`s while a running handler finishes its writes when a slot
//! is emptied (see *Internal workings*). What the handler reads
//! is atomics only (the slot table), written under the same lock.
//!
//! * `handler.rs`: the slot table, the handler itself, and the reader
//!   protocol that lets a slot be emptied before its descriptor is closed.
//!   A reactor that needs the handler holds a [`Registration`] (a slot).
//!   Cost: the handler writes one byte per used slot per signal.
//! * `disposition.rs`: reading, checking, installing and chaining the
//!   `SIGCHLD` disposition ([`before_start`]), and telling whether a
//!   handler installed over ours chains to it.
//! * `routes.rs`: who may reap which pid (the reap-all right
//!   [`ReapAllToken`], claims, starts in flight, the inbox).
//! * `orphans.rs`: children that dropped reactors left running.
//!
//! # Handler lifetime ("always selective reap")
//!
//! Once evchild installs its handler it stays installed for the life of the
//! process (until `exec`): the last registration leaving only empties its
//! slot, so a loop that has one child in flight at a time pays no
//! `rt_sigaction` per child. A handler installed later by other code is never
//! clobbered (ours then runs only if that handler chains to it). A previous
//! real handler is chained to from ours. Before every child start, and at
//! every registration, the disposition is queried once ([`before_start`]):
//!
//! | current disposition | result |
//! |---|---|
//! | `SIG_IGN`, or `SA_NOCLDWAIT` | [`Error::HandlerConflict`]: the kernel would reap the child itself, and its death would never be reported |
//! | ours | nothing to do |
//! | `SIG_DFL`, handler needed | ours is installed (again), chaining to nothing: libuv and libev reset `SIGCHLD` to `SIG_DFL` when they stop |
//! | a real handler we never replaced, handler needed | ours is installed, chaining to it |
//! | a real handler installed after ours | left alone: it may chain to ours, and installing over it could make the two call each other forever |
//!
//! # Fork generations
//!
//! A child forked without `exec` inherits the handler, the slot table (the
//! parent's descriptor numbers), the process lock (perhaps held by a thread
//! that does not exist in the child), the routes and the orphans. None of it may
//! act there. [`init`] (called by `Reactor::new`) registers, once, a
//! `pthread_atfork` child handler that runs [`advance_after_fork`]: it empties
//! every slot, resets the lock, the slot table's counts, the routes' counters and the orphan counts,
//! and advances [`FORK_GENERATION`]. evchild's own fork path calls it too if
//! the generation did not move (a `fork_replacement` that bypasses
//! `pthread_atfork`). A [`Registration`] or [`ReapAllToken`] remembers the
//! generation it was created in; dropped in another one it does nothing at
//! all (no lock, no allocation, no free), and the child may then create any
//! reactor, `LibraryAlways` included. A pid comparison could not do this:
//! pids are reused, and a grandchild may get its grandparent's.
//!
//! Why the inherited handler cannot write through an ancestor's slot: between
//! `fork` returning in the child and the atfork handler emptying the table,
//! the new child has no children of its own, so the kernel sends it no
//! `SIGCHLD`. Only an explicit `kill(child, SIGCHLD)` by another process
//! could land in that window, and then the descriptor numbers still name the
//! child's inherited copies of the very same pipes (nothing in the child can
//! have closed or reused them yet): the parent's reactor gets a spurious
//! wake-up, which is harmless.
//!
//! Not covered: processes created by raw `clone(2)` or `syscall(SYS_fork)`,
//! which bypass `pthread_atfork` handlers (glibc's `fork`, and so nix's and
//! std's, runs them; `vfork` and `posix_spawn` do not, and must not: the
//! child shares the parent's memory until it execs). Such a child keeps the
//! parent's table until it execs: its `SIGCHLD`s wake the parent's reactors
//! spuriously, and a descriptor number it reuses may receive stray bytes.
//!
//! # Internal workings
//!
//! The handler reads shared state through atomics only: it takes no lock,
//! allocates and frees nothing, and cannot panic. Writers (register,
//! unregister, install) are serialised by the process lock, and the slot
//! table they change is atomics, so the atfork child handler can reset it
//! with atomic stores. A slot
//! is emptied in two steps so the handler never writes to a descriptor that
//! has been closed (and perhaps reused for an unrelated file): the writer
//! clears the slot, then waits until every handler that might have read the
//! old value has finished. Handlers announce themselves in one of two reader
//! counters chosen by a reader generation; the writer flips the generation
//! and waits only for the old generation's counter, so a stream of new
//! signals cannot starve it (the scheme of signal-hook's `HalfLock`). That
//! wait yields rather than sleeps: what it waits for is a handler's few
//! one-byte writes, which cannot block.
//!
//! # Race conditions
//!
//! * A `sigaction(SIGCHLD)` by other code between our read of the current
//!   disposition and our install is detected after the swap and handled as if
//!   it had been there first.
//! * Previous dispositions that were chained to stay allocated for the life of
//!   the process (one small allocation per distinct previous handler), so a
//!   handler running on another thread never reads freed memory.
//! * A disposition changed by other code while no child is being started is
//!   seen only at the next start or registration: a `SIG_DFL` set while a
//!   `LibraryAlways` reactor is idle leaves it unwoken until then.
//! * Threads racing in the very first `Reactor::new` of the process: the
//!   losers do not wait for the winner's `pthread_atfork` (a wait could
//!   deadlock a forked child); a raw fork in that window is the uncovered case
//!   above, while evchild's own fork path advances the generation itself.

pub(crate) mod orphans;
pub(crate) mod routes;

mod disposition;
mod handler;

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::sys::{Lock, LockGuard};

pub(crate) use disposition::{before_start, refusal};
pub(crate) use handler::{register, Registration};
pub(crate) use routes::ReapAllToken;

/// Advanced in every forked child (see `# Fork generations`).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Everything process-wide that is not an atomic the handler reads: the
/// routes (claims, starts in flight, the inbox, the reap-all reactor) and
/// the orphans. Behind the one lock ([`lock`]).
#[derive(Default)]
pub(crate) struct State {
    /// The fork generation the contents belong to.
    generation: u64,
    pub(crate) routes: routes::Routes,
    pub(crate) orphans: orphans::Book,
}

/// The one process-wide lock. The inner value is replaced, leaked, at the
/// first use in a new fork generation (see [`lock`]).
static STATE: Lock<Option<ManuallyDrop<State>>> = Lock::new(None);

/// The process-wide state, locked. A futex lock: waiters sleep, nobody
/// spins; no system call runs while it is held, except `sigaction` when
/// the handler is (re)installed (rare: see `disposition.rs`).
///
/// In a forked child the first use finds contents of another generation
/// (perhaps half-changed by a thread that does not exist there) and
/// replaces them without dropping them: freeing is not safe where the
/// allocator's state is unknown, so they are leaked.
pub(crate) fn lock() -> Guard {
    let mut guard = STATE.lock();
    let generation = fork_generation();
    if guard.as_ref().map(|s| s.generation) != Some(generation) {
        *guard = Some(ManuallyDrop::new(State {
            generation,
            ..State::default()
        }));
    }
    Guard(guard)
}

/// [`lock`]'s guard: derefs to the [`State`].
pub(crate) struct Guard(LockGuard<'static, Option<ManuallyDrop<State>>>);

impl Deref for Guard {
    type Target = State;
    fn deref(&self) -> &State {
        self.0
            .as_ref()
            .map(|s| &**s)
            .unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut State {
        self.0
            .as_mut()
            .map(|s| &mut **s)
            .unwrap_or_else(|| unreachable!())
    }
}

/// Whether pidfds can be used here (`sys::pidfd_probe`, asked once per
/// process): 0 not asked yet, 1 yes, 2 no.
static PIDFDS: AtomicU8 = AtomicU8::new(0);

/// Whether `pidfd_open` and `waitid(P_PIDFD)` work in this process (Linux
/// ≥ 5.4, no seccomp veto). Probed at the first call.
pub(crate) fn pidfd_supported() -> bool {
    match PIDFDS.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let yes = crate::sys::pidfd_probe();
            PIDFDS.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Numbers reactors, so a `ChildId` says which reactor issued it.
static REACTORS: AtomicU32 = AtomicU32::new(0);

/// A new reactor's number (never reused in this process).
pub(crate) fn next_reactor() -> u32 {
    REACTORS.fetch_add(1, Ordering::Relaxed)
}

/// The current fork generation: one atomic load. Async-signal-safe.
pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Acquire)
}

/// What the `pthread_atfork` child handler does, in the (single-threaded)
/// child right after `fork`: empties the slot table, resets the slot table's
/// counts, the process lock, the routes' and orphans' counters, then advances the fork
/// generation, so that everything inherited from the parent is inert and the
/// child may create reactors of its own.
///
/// Async-signal-safe: atomic stores and one atomic increment, no lock, no
/// allocation, no panic. Calling it twice in a row is harmless (the second
/// call empties an already empty table and advances the generation again);
/// evchild's own fork path calls it only if the atfork handler did not run.
pub(crate) fn advance_after_fork() {
    handler::reset_in_child();
    routes::reset_in_child();
    orphans::reset_in_child();
    STATE.reset_in_child();
    // Last, with Release: whoever sees the new generation sees the reset.
    FORK_GENERATION.fetch_add(1, Ordering::AcqRel);
}

extern "C" fn atfork_child() {
    advance_after_fork();
}

/// 0: not registered, 1: being registered, 2: registered.
static ATFORK: AtomicU8 = AtomicU8::new(0);

/// Registers the `pthread_atfork` child handler, once per process (forked
/// children inherit the registration). Called by `Reactor::new`.
///
/// A thread that loses the race for the first registration does not wait for
/// the winner: waiting could deadlock a child forked meanwhile (see
/// `# Race conditions`).
pub(crate) fn init() {
    if ATFORK.load(Ordering::Acquire) == 2
        || ATFORK
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    // `atfork_child` is async-signal-safe (see `advance_after_fork`), as a
    // child handler of a multi-threaded parent must be. ENOMEM is the only
    // documented failure: try again at the next `new`; evchild's own fork
    // path still advances the generation meanwhile.
    let registered = crate::sys::atfork_child(atfork_child);
    ATFORK.store(if registered { 2 } else { 0 }, Ordering::Release);
}

/// Counters for evchild's own tests (`evchild::__private`): not part of the
/// API.
pub(crate) mod debug {
    /// How many `sigaction(SIGCHLD, &new, ..)` calls evchild has made to
    /// install or refresh its handler in this process.
    pub(crate) fn installs() -> u64 {
        super::disposition::installs()
    }

    /// How many registrations are live in this process's generation.
    pub(crate) fn registrations() -> usize {
        super::handler::users()
    }
}
