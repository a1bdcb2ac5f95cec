//! Reading, checking and installing the `SIGCHLD` disposition, and chaining
//! to the handler ours replaced.
//!
//! Every child start and every registration costs one
//! `sigaction(SIGCHLD, NULL, &cur)` query; an install (`sigaction` with a new
//! action) happens only the first time, after other code reset `SIGCHLD` to
//! `SIG_DFL`, or when stop reports are switched on or off. See the parent
//! module's `# Handler lifetime` for the decision table.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use super::handler::{on_sigchld, wants_stops};
use crate::Error;

/// The disposition to chain to, or null for none. Points to a leaked
/// allocation that is never freed.
static PREV: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());
/// We installed our handler at least once in this process (so a real
/// handler that is not ours was installed after ours, and shadows it).
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// `sigaction` calls that installed or refreshed our handler (for tests).
static INSTALLS: AtomicU64 = AtomicU64::new(0);

/// Installs and refreshes so far (for tests).
#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn installs() -> u64 {
    INSTALLS.load(Ordering::Relaxed)
}

/// `sigaction(SIGCHLD, NULL, &cur)` before a child is started (by
/// `spawn`, `fork` or `watch`, in every mode): refuses a disposition that
/// would make the kernel reap the child, and, if `needs_handler`, makes sure
/// our handler will run (see the parent module's `# Handler lifetime`).
///
/// # Errors
/// [`Error::HandlerConflict`] if `SIGCHLD` is ignored or has
/// `SA_NOCLDWAIT`; [`Error::Io`] if `sigaction` fails. The disposition is
/// then as it was.
pub(crate) fn before_start(needs_handler: bool) -> Result<(), Error> {
    if !needs_handler {
        // A query only: no lock.
        return check_reapable();
    }
    let _guard = super::lock();
    ensure(needs_handler, wants_stops())
}

/// `Err(HandlerConflict)` if the current disposition makes the kernel reap
/// children by itself (`SIG_IGN`, `SA_NOCLDWAIT`); installs nothing.
pub(crate) fn check_reapable() -> Result<(), Error> {
    check_usable(&current()?)
}

/// [`before_start`], with the writers' lock held by the caller; `stops`:
/// whether a registration wants stop reports.
pub(super) fn ensure(needs_handler: bool, stops: bool) -> Result<(), Error> {
    let cur = current()?;
    check_usable(&cur)?;
    if !needs_handler || cur.sa_sigaction == our_addr() {
        return Ok(());
    }
    if cur.sa_sigaction == libc::SIG_DFL {
        // First use, or other code reset SIGCHLD after we installed: nothing
        // to chain to. (This also repairs the case where our handler was
        // replaced by SIG_IGN and SIG_DFL restored later.)
        PREV.store(ptr::null_mut(), Ordering::Release);
        return install(&cur, stops);
    }
    if INSTALLED.load(Ordering::Relaxed) {
        // A real handler installed after ours: leave it (it may chain to us).
        return Ok(());
    }
    remember_prev(&cur);
    install(&cur, stops)
}

/// Reinstalls our handler with or without `SA_NOCLDSTOP` (`stops`), if it
/// is ours and current (otherwise whoever replaced it decides, and chains to
/// us or not). Under the writers' lock.
pub(super) fn refresh_flags(stops: bool) {
    if !current().is_ok_and(|c| c.sa_sigaction == our_addr()) {
        return;
    }
    let new = our_action(stops);
    INSTALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `new` is fully initialised, as in `install`. A failure leaves
    // the previous flags, which only costs or saves spurious wake-ups.
    unsafe { libc::sigaction(libc::SIGCHLD, &new, ptr::null_mut()) };
}

/// Calls the handler that was installed before ours. Async-signal-safe as far
/// as that handler is: we add only an atomic load and an indirect call.
pub(super) fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREV.load(Ordering::Acquire);
    if prev.is_null() {
        return;
    }
    // SAFETY: `PREV` only ever holds null or a pointer from `Box::leak`, which
    // is never freed, so the reference is valid for the life of the process.
    let prev = unsafe { &*prev };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN || handler == our_addr() {
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

fn our_addr() -> libc::sighandler_t {
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

fn check_usable(old: &libc::sigaction) -> Result<(), Error> {
    if old.sa_sigaction == libc::SIG_IGN {
        return Err(Error::HandlerConflict {
            reason: "SIGCHLD is ignored (SIG_IGN), so the kernel reaps children at once and no \
                     exit status can be waited for; set SIGCHLD back to SIG_DFL, or reap \
                     without evchild",
        });
    }
    if old.sa_flags & libc::SA_NOCLDWAIT != 0 {
        return Err(Error::HandlerConflict {
            reason: "the SIGCHLD disposition has SA_NOCLDWAIT, so the kernel reaps children at \
                     once and no exit status can be waited for; install the handler without \
                     SA_NOCLDWAIT",
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
/// (so the same previous handler is allocated once). `SIG_DFL` and ours
/// leave `PREV` as it is: there is nothing to chain to in the first, and
/// chaining to ours would recurse forever.
fn remember_prev(old: &libc::sigaction) {
    if old.sa_sigaction == our_addr() || old.sa_sigaction == libc::SIG_DFL {
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
    new.sa_sigaction = our_addr();
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

/// Installs `on_sigchld` over `old` (just read, and usable), with `PREV`
/// already set for it. On error, the disposition is what it was.
fn install(old: &libc::sigaction, stops: bool) -> Result<(), Error> {
    let new = our_action(stops);
    // SAFETY: zeroed is valid; the kernel fills it in.
    let mut swapped: libc::sigaction = unsafe { std::mem::zeroed() };
    INSTALLS.fetch_add(1, Ordering::Relaxed);
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
    if !same_action(&swapped, old) {
        // Someone changed the disposition between our read and our swap.
        if let Err(e) = check_usable(&swapped) {
            // SAFETY: `swapped` came from the kernel, so it is a valid action.
            unsafe { libc::sigaction(libc::SIGCHLD, &swapped, ptr::null_mut()) };
            return Err(e);
        }
        if swapped.sa_sigaction == libc::SIG_DFL {
            PREV.store(ptr::null_mut(), Ordering::Release);
        } else {
            remember_prev(&swapped);
        }
    }
    INSTALLED.store(true, Ordering::Relaxed);
    Ok(())
}
