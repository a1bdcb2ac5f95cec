//! The one process-wide `SIGCHLD` handler, and the registry of wake pipes it
//! writes to.
//!
//! `SIGCHLD` is a process-wide resource, so all reactors of the process share
//! one handler. A reactor that needs it (`Library` mode with live children,
//! `LibraryAlways` from creation to drop) holds a [`Registration`]: a slot in a
//! fixed-capacity table holding its wake pipe's write end and the pid of the
//! process that registered it. The first registration installs the handler;
//! the last one removes it.
//!
//! # Coexistence
//!
//! Installing saves the previous disposition. A previous real handler is
//! called from ours after the wake-ups ("chained"), so code that installed its
//! own handler before evchild keeps working. If the previous handler wanted
//! stop/continue notifications (no `SA_NOCLDSTOP`), ours asks for them too.
//! A previous `SIG_IGN`, or `SA_NOCLDWAIT`, makes the kernel reap children
//! itself so nothing can be waited for: that is refused with
//! [`Error::HandlerConflict`]. On removal the previous disposition is restored
//! only if ours is still the installed one; a handler installed after ours is
//! never clobbered (ours then stays reachable through it, if it chains).
//!
//! # Internal workings
//!
//! The handler reads shared state through atomics only: it takes no lock,
//! allocates and frees nothing, and cannot panic. Registering and
//! unregistering happen outside the handler, serialised by a mutex. A slot is
//! emptied in two steps so the handler never writes to a descriptor that has
//! been closed (and perhaps reused for an unrelated file): the writer clears
//! the slot, then waits until every handler that might have read the old value
//! has finished. Handlers announce themselves in one of two reader counters
//! chosen by a generation number; the writer flips the generation and waits
//! only for the old generation's counter, so a stream of new signals cannot
//! starve it (the scheme of signal-hook's `HalfLock`).
//!
//! # Race conditions
//!
//! * A `sigaction(SIGCHLD)` by other code between our read of the previous
//!   disposition and our install is detected after the swap and handled as if
//!   it had been there first.
//! * Previous dispositions that were chained to stay allocated for the life of
//!   the process (one small allocation per distinct previous handler), so a
//!   handler running on another thread never reads freed memory.
//! * In a child forked while another thread held the registry lock, creating a
//!   reactor would deadlock; see *Fork safety* in the crate docs.

#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;

use crate::Error;

/// How many reactors may hold a registration at once.
pub(crate) const CAPACITY: usize = 256;

struct Slot {
    /// The write end of a wake pipe, or -1.
    fd: AtomicI32,
    /// The process that registered `fd`.
    pid: AtomicI32,
}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialise SLOTS
const EMPTY_SLOT: Slot = Slot {
    fd: AtomicI32::new(-1),
    pid: AtomicI32::new(0),
};
static SLOTS: [Slot; CAPACITY] = [EMPTY_SLOT; CAPACITY];
/// One past the highest slot ever used: the handler scans `SLOTS[..HIGH]`.
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// Reader generation and the two reader counters (see `# Internal workings`).
static GENERATION: AtomicUsize = AtomicUsize::new(0);
static READERS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
/// The disposition that was in place when we installed ours, for chaining.
/// Null when there is nothing to chain to. Points to a leaked allocation.
static PREV: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());

struct State {
    /// Live registrations.
    users: usize,
    /// Live registrations that want stop/continue reports (the handler is
    /// then installed without `SA_NOCLDSTOP`).
    stops: usize,
    /// We installed our handler and have not restored the previous one
    /// (either ours is current, or a later handler shadows it).
    installed: bool,
    used: [bool; CAPACITY],
}

static STATE: Mutex<State> = Mutex::new(State {
    users: 0,
    stops: 0,
    installed: false,
    used: [false; CAPACITY],
});

fn state() -> MutexGuard<'static, State> {
    // Nothing panics while the lock is held, but if it ever did the state
    // would still be consistent: every update is a single assignment.
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A reactor's claim on the handler: while it lives, every `SIGCHLD` in the
/// registering process writes a byte to `fd`.
#[derive(Debug)]
pub(crate) struct Registration {
    slot: usize,
    stops: bool,
}

/// Registers `wake_fd` (non-blocking; must stay open until the registration
/// is dropped), installing the handler if this is the first registration.
///
/// # Errors
/// [`Error::HandlerConflict`] if `SIGCHLD` is ignored or `SA_NOCLDWAIT` is set,
/// or `sigaction` fails; [`Error::TooManyReactors`] if the table is full. In
/// both cases nothing changed.
pub(crate) fn register(wake_fd: RawFd) -> Result<Registration, Error> {
    debug_assert!(wake_fd >= 0);
    let mut st = state();
    let slot = st
        .used
        .iter()
        .position(|u| !u)
        .ok_or(Error::TooManyReactors { capacity: CAPACITY })?;
    if st.users == 0 {
        ensure_installed(&mut st)?;
    }
    st.used[slot] = true;
    st.users += 1;
    // The pid first, then the fd with Release: a handler that sees the fd
    // (Acquire) sees the pid.
    SLOTS[slot]
        .pid
        .store(nix::unistd::getpid().as_raw(), Ordering::Relaxed);
    SLOTS[slot].fd.store(wake_fd, Ordering::Release);
    HIGH.fetch_max(slot + 1, Ordering::AcqRel);
    Ok(Registration { slot, stops: false })
}

/// Makes sure our handler will run, for the first user after an idle time.
///
/// The disposition is read again every time, since other code may have
/// changed it while nobody needed ours: libuv and libev reset it to
/// `SIG_DFL` when they stop, and someone may have set `SIG_IGN`. If a real
/// handler installed after ours is still there (we were *shadowed* when the
/// last user left, and did not clobber it), ours stays reachable only through
/// it, and installing over it could make the two call each other forever;
/// so it is left in place. Anything else gets a fresh install, with its
/// checks.
fn ensure_installed(st: &mut State) -> Result<(), Error> {
    let cur = current()?;
    let ours = cur.sa_sigaction == on_sigchld_addr();
    let shadowed = st.installed
        && !ours
        && cur.sa_sigaction != libc::SIG_DFL
        && cur.sa_sigaction != libc::SIG_IGN
        && cur.sa_flags & libc::SA_NOCLDWAIT == 0;
    if !ours && !shadowed {
        install(st.stops > 0)?;
    }
    st.installed = true;
    Ok(())
}

impl Registration {
    /// Asks for `SIGCHLD` on stop and continue too, for as long as this
    /// registration lives (the handler is reinstalled without
    /// `SA_NOCLDSTOP`, if it is ours and current).
    pub(crate) fn want_stops(&mut self) {
        if self.stops {
            return;
        }
        let mut st = state();
        self.stops = true;
        st.stops += 1;
        if st.stops == 1 {
            refresh_flags(&st);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut st = state();
        SLOTS[self.slot].fd.store(-1, Ordering::SeqCst);
        wait_for_readers();
        // Now no handler can still write to the old descriptor: the caller may
        // close it.
        st.used[self.slot] = false;
        st.users -= 1;
        if self.stops {
            st.stops -= 1;
            if st.stops == 0 && st.users > 0 {
                refresh_flags(&st);
            }
        }
        if st.users == 0 && st.installed && uninstall() {
            st.installed = false;
        }
    }
}

/// Flips the reader generation and waits until every handler that entered
/// under the old one has left.
fn wait_for_readers() {
    let old = GENERATION.fetch_add(1, Ordering::SeqCst);
    while READERS[old & 1].load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// The `SIGCHLD` handler.
///
/// Every step is async-signal-safe (signal-safety(7)):
/// 1. Save `errno`: reading a thread-local integer. The `write(2)` calls below
///    may change it, and the interrupted code must not see that.
/// 2. `getpid(2)`: on the list of async-signal-safe functions. A slot whose
///    pid differs was registered by the parent of this forked process; waking
///    it would steal the parent's wake-up, so it is skipped.
/// 3. Enter the reader generation: atomic loads and read-modify-writes only,
///    no lock, so a handler interrupting a registering thread cannot deadlock.
/// 4. For each used slot, `write(2)` one byte: on the list. The pipe is
///    non-blocking; `EAGAIN` (pipe full, reader already due) and any other
///    error are ignored, since there is nothing a handler could do about them.
/// 5. Leave the generation: one atomic decrement.
/// 6. Chain to the previous handler (`Prev::call`): a plain function call
///    through a pointer read atomically from memory that is never freed.
/// 7. Restore `errno`.
///
/// No allocation, no lock, no panic: there is no `unwrap`, indexing stays in
/// bounds by construction (`HIGH <= CAPACITY`), and no formatting happens.
extern "C" fn on_sigchld(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let saved_errno = Errno::last_raw();
    let me = nix::unistd::getpid().as_raw();
    let generation = enter_read();
    let high = HIGH.load(Ordering::Acquire).min(CAPACITY);
    for slot in &SLOTS[..high] {
        let fd = slot.fd.load(Ordering::Acquire);
        if fd >= 0 && slot.pid.load(Ordering::Relaxed) == me {
            let byte = 1u8;
            // SAFETY: `write(2)` is async-signal-safe. The buffer is a live
            // local of one byte. `fd` cannot have been closed yet: the owner
            // clears the slot and waits for this generation's readers to
            // leave before it closes the descriptor, and we entered before
            // reading the slot.
            unsafe { libc::write(fd, ptr::addr_of!(byte).cast(), 1) };
        }
    }
    leave_read(generation);
    chain(sig, info, ctx);
    Errno::set_raw(saved_errno);
}

/// Announces a reader in the current generation; async-signal-safe (atomics
/// only). Retries if the generation moved between the load and the increment,
/// so a writer that flipped it in between never misses this reader.
fn enter_read() -> usize {
    loop {
        let generation = GENERATION.load(Ordering::SeqCst);
        READERS[generation & 1].fetch_add(1, Ordering::SeqCst);
        if GENERATION.load(Ordering::SeqCst) == generation {
            return generation;
        }
        READERS[generation & 1].fetch_sub(1, Ordering::SeqCst);
    }
}

/// Async-signal-safe (one atomic decrement).
fn leave_read(generation: usize) {
    READERS[generation & 1].fetch_sub(1, Ordering::SeqCst);
}

/// Calls the handler that was installed before ours. Async-signal-safe as far
/// as that handler is: we add only an atomic load and an indirect call.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREV.load(Ordering::Acquire);
    if prev.is_null() {
        return;
    }
    // SAFETY: `PREV` only ever holds null or a pointer from `Box::leak`, which
    // is never freed, so the reference is valid for the life of the process.
    let prev = unsafe { &*prev };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN || handler == on_sigchld_addr() {
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO the kernel would have called this address
        // as `void (*)(int, siginfo_t *, void *)`; we pass on exactly the
        // arguments the kernel gave us.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the kernel would have called this address
        // as `void (*)(int)`.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

fn on_sigchld_addr() -> libc::sighandler_t {
    on_sigchld as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t
}

/// Reads the current disposition (`sigaction(SIGCHLD, NULL, &old)`).
fn current() -> Result<libc::sigaction, Error> {
    // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, no flags,
    // empty mask); the kernel overwrites it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is a valid out-pointer.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, ptr::null(), &mut old) };
    if rc != 0 {
        return Err(Error::io(
            "sigaction(SIGCHLD)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(old)
}

/// Prepares the process-wide state; called by every `Reactor::new`.
pub(crate) fn init() {}

/// The fork generation (placeholder until fork generations land).
pub(crate) fn fork_generation() -> u64 {
    0
}

/// Called before every child start: refuses a disposition that makes the
/// kernel reap children by itself, and, if `needs_handler`, puts our handler
/// back when someone reset `SIGCHLD` to `SIG_DFL` after we installed it
/// (libuv and libev do that when they stop).
pub(crate) fn before_start(needs_handler: bool) -> Result<(), Error> {
    let cur = current()?;
    check_usable(&cur)?;
    if needs_handler && cur.sa_sigaction == libc::SIG_DFL {
        let mut st = state();
        install(st.stops > 0)?;
        st.installed = true;
    }
    Ok(())
}

fn check_usable(old: &libc::sigaction) -> Result<(), Error> {
    if old.sa_sigaction == libc::SIG_IGN {
        return Err(Error::HandlerConflict {
            reason: "SIGCHLD is ignored (SIG_IGN), so the kernel reaps children at once and no \
                     exit status can be waited for; set SIGCHLD back to SIG_DFL, or use \
                     Mainloop mode and reap yourself",
        });
    }
    if old.sa_flags & libc::SA_NOCLDWAIT != 0 {
        return Err(Error::HandlerConflict {
            reason: "the SIGCHLD disposition has SA_NOCLDWAIT, so the kernel reaps children at \
                     once and no exit status can be waited for; install the handler without \
                     SA_NOCLDWAIT, or use Mainloop mode",
        });
    }
    Ok(())
}

fn same_action(a: &libc::sigaction, b: &libc::sigaction) -> bool {
    a.sa_sigaction == b.sa_sigaction && a.sa_flags == b.sa_flags && {
        // SAFETY: both masks are initialised `sigset_t`s; `sigismember` only
        // reads them, and every signal number in 1..NSIG is valid.
        (1..libc::SIGRTMAX()).all(|s| unsafe {
            libc::sigismember(&a.sa_mask, s) == libc::sigismember(&b.sa_mask, s)
        })
    }
}

/// Remembers `old` for chaining, reusing the saved copy when nothing changed
/// (so repeated install/remove cycles allocate nothing).
fn remember_prev(old: &libc::sigaction) {
    if old.sa_sigaction == on_sigchld_addr() {
        // Ours was put back by someone who had saved it: chaining to it would
        // recurse forever. Keep the older previous handler.
        return;
    }
    let cur = PREV.load(Ordering::Acquire);
    // SAFETY: see `chain`: PREV is null or a leaked, never-freed allocation.
    if !cur.is_null() && same_action(unsafe { &*cur }, old) {
        return;
    }
    PREV.store(Box::leak(Box::new(*old)), Ordering::Release);
}

/// Our `sigaction`: `SA_NOCLDSTOP` unless a registration wants stop reports
/// or the handler we chain to wanted them.
fn our_action(stops: bool) -> libc::sigaction {
    // SAFETY: all-zero is a valid `sigaction`; every field we rely on is set
    // below.
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = on_sigchld_addr();
    new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_NOCLDSTOP;
    let prev = PREV.load(Ordering::Acquire);
    let prev_wants_stops = !prev.is_null() && {
        // SAFETY: see `chain`: PREV is null or a leaked, never-freed
        // allocation, and it is not null here.
        let prev = unsafe { &*prev };
        prev.sa_sigaction != libc::SIG_DFL
            && prev.sa_sigaction != libc::SIG_IGN
            && prev.sa_flags & libc::SA_NOCLDSTOP == 0
    };
    if stops || prev_wants_stops {
        new.sa_flags &= !libc::SA_NOCLDSTOP;
    }
    // SAFETY: `new.sa_mask` is a valid out-pointer to a `sigset_t`.
    unsafe { libc::sigemptyset(&mut new.sa_mask) };
    new
}

/// Reinstalls our handler with the flags `st` asks for, if it is ours and
/// current (otherwise whoever replaced it decides, and chains to us or not).
fn refresh_flags(st: &State) {
    if !st.installed || !current().is_ok_and(|c| c.sa_sigaction == on_sigchld_addr()) {
        return;
    }
    let new = our_action(st.stops > 0);
    // SAFETY: `new` is fully initialised, as in `install`. A failure leaves
    // the previous flags, which only costs or saves spurious wake-ups.
    unsafe { libc::sigaction(libc::SIGCHLD, &new, ptr::null_mut()) };
}

/// Installs `on_sigchld`, refusing dispositions that make reaping impossible.
/// On error, the disposition is what it was.
fn install(stops: bool) -> Result<(), Error> {
    let old = current()?;
    check_usable(&old)?;
    remember_prev(&old);
    let new = our_action(stops);

    // SAFETY: zeroed is valid; the kernel fills it in.
    let mut swapped: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `new` is fully initialised and its handler is an
    // `extern "C" fn(c_int, *mut siginfo_t, *mut c_void)`, matching SA_SIGINFO;
    // `swapped` is a valid out-pointer.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, &new, &mut swapped) };
    if rc != 0 {
        return Err(Error::io(
            "sigaction(SIGCHLD)",
            std::io::Error::last_os_error(),
        ));
    }
    if !same_action(&swapped, &old) {
        // Someone changed the disposition between our read and our swap.
        if let Err(e) = check_usable(&swapped) {
            // SAFETY: `swapped` came from the kernel, so it is a valid action.
            unsafe { libc::sigaction(libc::SIGCHLD, &swapped, ptr::null_mut()) };
            return Err(e);
        }
        remember_prev(&swapped);
    }
    Ok(())
}

/// Restores the previous disposition if ours is still installed. Returns
/// whether it did; if not, ours stays reachable through whoever replaced it.
fn uninstall() -> bool {
    let Ok(cur) = current() else { return false };
    if cur.sa_sigaction != on_sigchld_addr() {
        return false;
    }
    let prev = PREV.load(Ordering::Acquire);
    let restore = if prev.is_null() {
        // SAFETY: all-zero is SIG_DFL with no flags and an empty mask.
        unsafe { std::mem::zeroed() }
    } else {
        // SAFETY: see `chain`.
        unsafe { *prev }
    };
    // SAFETY: `restore` is the action the kernel gave us earlier (or
    // SIG_DFL), so it is valid to install.
    unsafe { libc::sigaction(libc::SIGCHLD, &restore, ptr::null_mut()) == 0 }
}

static REAP_ALL_TAKEN: AtomicBool = AtomicBool::new(false);

/// The right to reap every child of the process (`LibraryAlways`); at most
/// one exists per process.
#[derive(Debug)]
pub(crate) struct ReapAllToken(());

impl ReapAllToken {
    pub(crate) fn take() -> Result<Self, Error> {
        REAP_ALL_TAKEN
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ReapAllToken(()))
            .map_err(|_| Error::ReapAllTaken)
    }
}

impl Drop for ReapAllToken {
    fn drop(&mut self) {
        REAP_ALL_TAKEN.store(false, Ordering::Release);
    }
}
