//! The slot table of wake pipes, the `SIGCHLD` handler that writes to them,
//! and the reader protocol that makes emptying a slot safe.
//!
//! A slot holds a wake pipe's write end, or -1. The handler scans the slots
//! below [`HIGH`] and writes one byte to each used one: O(slots ever used)
//! per signal, with no lock. The table has a fixed capacity
//! ([`CAPACITY`]); past it, registering fails with
//! [`Error::TooManyReactors`]. See the parent module for the process lock,
//! the fork generation and the reader protocol.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use nix::errno::Errno;

use super::{disposition, fork_generation, lock};
use crate::sys;
use crate::Error;

/// How many reactors may hold a registration at once.
pub(crate) const CAPACITY: usize = 256;

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise SLOTS
const EMPTY_SLOT: AtomicI32 = AtomicI32::new(-1);
/// The write end of a wake pipe per slot, or -1. Read by the handler.
static SLOTS: [AtomicI32; CAPACITY] = [EMPTY_SLOT; CAPACITY];
/// One past the highest slot used in this generation: the handler scans
/// `SLOTS[..HIGH]`.
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// Reader generation and the two reader counters (see the parent module's
/// `# Internal workings`).
static READ_GENERATION: AtomicUsize = AtomicUsize::new(0);
static READERS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

// The writers' state, only changed under the process lock (and reset by the
// atfork child handler). Atomics so that reset is a plain atomic store.
#[allow(clippy::declare_interior_mutable_const)] // only used to initialise USED
const FREE: AtomicBool = AtomicBool::new(false);
/// Which slots belong to a live registration.
static USED: [AtomicBool; CAPACITY] = [FREE; CAPACITY];
/// Live registrations.
static USERS: AtomicUsize = AtomicUsize::new(0);
/// Live registrations that want stop/continue reports (the handler is then
/// installed without `SA_NOCLDSTOP`).
static STOPS: AtomicUsize = AtomicUsize::new(0);

/// A reactor's claim on the handler: while it lives, every `SIGCHLD` of this
/// process writes a byte to its wake pipe.
///
/// Dropping it empties the slot and returns once no handler can still write
/// to the descriptor (the caller may then close it). Dropped in a forked
/// child (another fork generation), it does nothing at all.
#[derive(Debug)]
pub(crate) struct Registration {
    slot: usize,
    stops: bool,
    generation: u64,
}

/// Registers `wake_fd` (non-blocking; must stay open until the registration
/// is dropped), after checking the disposition and installing our handler
/// if it is needed ([`super::before_start`] with a handler needed).
///
/// The disposition is checked (and our handler installed) before the
/// process lock is taken for the slot: in the steady state (our handler
/// current) that is one query and no system call under the lock.
///
/// # Errors
/// [`Error::HandlerConflict`] if `SIGCHLD` is ignored or `SA_NOCLDWAIT` is set,
/// or `sigaction` fails, and nothing changed; [`Error::TooManyReactors`] if
/// the table is full (our handler may have been installed: it stays
/// installed anyway, see the parent module).
pub(crate) fn register(wake_fd: RawFd) -> Result<Registration, Error> {
    debug_assert!(wake_fd >= 0);
    disposition::before_start(true)?;
    let _guard = lock();
    let slot = USED
        .iter()
        .position(|u| !u.load(Ordering::Relaxed))
        .ok_or(Error::TooManyReactors { capacity: CAPACITY })?;
    USED[slot].store(true, Ordering::Relaxed);
    USERS.fetch_add(1, Ordering::Relaxed);
    // Release: a handler that sees the fd (Acquire) sees a complete slot.
    SLOTS[slot].store(wake_fd, Ordering::Release);
    HIGH.fetch_max(slot + 1, Ordering::AcqRel);
    Ok(Registration {
        slot,
        stops: false,
        generation: fork_generation(),
    })
}

/// Whether some registration wants stop/continue reports. Under the lock.
pub(super) fn wants_stops() -> bool {
    STOPS.load(Ordering::Relaxed) > 0
}

/// Live registrations (for tests).
pub(super) fn users() -> usize {
    USERS.load(Ordering::Relaxed)
}

impl Registration {
    /// Asks for `SIGCHLD` on stop and continue too, for as long as this
    /// registration lives (the handler is reinstalled without
    /// `SA_NOCLDSTOP`, if it is ours and current).
    pub(crate) fn want_stops(&mut self) {
        if self.stops || self.generation != fork_generation() {
            return;
        }
        let _guard = lock();
        self.stops = true;
        if STOPS.fetch_add(1, Ordering::Relaxed) == 0 {
            disposition::refresh_flags(true);
        }
    }

    /// Undoes [`want_stops`](Self::want_stops) once no child of the
    /// registration wants stop reports any more (the handler gets
    /// `SA_NOCLDSTOP` back when no registration wants them).
    pub(crate) fn drop_stops(&mut self) {
        if !self.stops || self.generation != fork_generation() {
            return;
        }
        let _guard = lock();
        self.stops = false;
        if STOPS.fetch_sub(1, Ordering::Relaxed) == 1 {
            disposition::refresh_flags(false);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.generation != fork_generation() {
            // A forked child: the slot was emptied by the atfork handler,
            // and may belong to a registration of this process by now.
            return;
        }
        let _guard = lock();
        SLOTS[self.slot].store(-1, Ordering::SeqCst);
        wait_for_readers();
        // Now no handler can still write to the old descriptor: the caller may
        // close it.
        USED[self.slot].store(false, Ordering::Relaxed);
        USERS.fetch_sub(1, Ordering::Relaxed);
        if self.stops && STOPS.fetch_sub(1, Ordering::Relaxed) == 1 {
            disposition::refresh_flags(false);
        }
        // The handler stays installed (see `# Handler lifetime`).
    }
}

/// In a forked child: empties every slot and resets the writers' state.
/// Async-signal-safe: atomic stores only. See `super::advance_after_fork`.
pub(super) fn reset_in_child() {
    // Slots first: from here on an inherited handler writes nowhere.
    for slot in &SLOTS {
        slot.store(-1, Ordering::SeqCst);
    }
    HIGH.store(0, Ordering::SeqCst);
    // Readers that were inside the handler on other threads at the fork do
    // not exist here; this thread is not inside it (it is running the atfork
    // handler, called from `fork`, which the handler never calls).
    for readers in &READERS {
        readers.store(0, Ordering::SeqCst);
    }
    for used in &USED {
        used.store(false, Ordering::Relaxed);
    }
    USERS.store(0, Ordering::Relaxed);
    STOPS.store(0, Ordering::Relaxed);
}

/// Flips the reader generation and waits until every handler that entered
/// under the old one has left.
fn wait_for_readers() {
    let old = READ_GENERATION.fetch_add(1, Ordering::SeqCst);
    while READERS[old & 1].load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// Calls of [`on_sigchld`] so far: how `disposition` tells whether a
/// handler installed over ours chains to it.
pub(super) static CALLS: AtomicUsize = AtomicUsize::new(0);

/// The `SIGCHLD` handler.
///
/// Every step is async-signal-safe (signal-safety(7)):
/// 1. Save `errno`: reading a thread-local integer. The `write(2)` calls below
///    may change it, and the interrupted code must not see that.
/// 2. Count the call (one atomic increment: how `disposition` tells whether
///    a handler installed over ours chains to it). Enter the reader
///    generation: atomic loads and read-modify-writes only,
///    no lock, so a handler interrupting a registering thread cannot deadlock.
/// 3. For each used slot, `write(2)` one byte: on the list. The pipe is
///    non-blocking; `EAGAIN` (pipe full, reader already due) and any other
///    error are ignored, since there is nothing a handler could do about them.
///    There is no `getpid()` test: in a forked child the slots were emptied
///    by the atfork handler before the child could have a child of its own
///    (see `# Fork generations`).
/// 4. Leave the generation: one atomic decrement.
/// 5. Chain to the previous handler (`disposition::chain`): a plain function
///    call through a pointer read atomically from memory that is never freed.
/// 6. Restore `errno`.
///
/// No allocation, no lock, no panic: there is no `unwrap`, indexing stays in
/// bounds by construction (`HIGH <= CAPACITY`), and no formatting happens.
pub(super) extern "C" fn on_sigchld(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    let saved_errno = Errno::last_raw();
    CALLS.fetch_add(1, Ordering::Relaxed);
    let generation = enter_read();
    let high = HIGH.load(Ordering::Acquire).min(CAPACITY);
    for slot in &SLOTS[..high] {
        let fd = slot.load(Ordering::Acquire);
        if fd >= 0 {
            // `fd` cannot have been closed yet: the owner clears the slot
            // and waits for this generation's readers to leave before it
            // closes the descriptor, and we entered before reading the slot.
            sys::write_byte(fd);
        }
    }
    leave_read(generation);
    disposition::chain(sig, info, ctx);
    Errno::set_raw(saved_errno);
}

/// Announces a reader in the current generation; async-signal-safe (atomics
/// only). Retries if the generation moved between the load and the increment,
/// so a writer that flipped it in between never misses this reader.
fn enter_read() -> usize {
    loop {
        let generation = READ_GENERATION.load(Ordering::SeqCst);
        READERS[generation & 1].fetch_add(1, Ordering::SeqCst);
        if READ_GENERATION.load(Ordering::SeqCst) == generation {
            return generation;
        }
        READERS[generation & 1].fetch_sub(1, Ordering::SeqCst);
    }
}

/// Async-signal-safe (one atomic decrement).
fn leave_read(generation: usize) {
    READERS[generation & 1].fetch_sub(1, Ordering::SeqCst);
}
