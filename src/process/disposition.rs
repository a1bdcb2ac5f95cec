//! Reading, checking and installing the `SIGCHLD` disposition, and chaining
//! to the handler ours replaced.
//!
//! Every child start and every registration costs one
//! `sigaction(SIGCHLD, NULL, &cur)` query (but a `spawn_prepared` start
//! whose reactor needs no handler: its child checks, see
//! `Watcher::before_start_checked_by_child`); an install (`sigaction` with a new
//! action) happens only the first time, after other code reset `SIGCHLD` to
//! `SIG_DFL`, or when stop reports are switched on or off. See the parent
//! module's `# Handler lifetime` for the decision table.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::handler::{on_sigchld, wants_stops};
use crate::sys::{self, Action, ActionSlot};
use crate::Error;

/// The disposition to chain to, if any: kept for the life of the process.
static PREV: ActionSlot = ActionSlot::empty();
/// We installed our handler at least once in this process (so a real
/// handler that is not ours was installed after ours, and shadows it).
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// `sigaction` calls that installed or refreshed our handler (for tests).
static INSTALLS: AtomicU64 = AtomicU64::new(0);

/// Installs and refreshes so far (for tests).
pub(super) fn installs() -> u64 {
    INSTALLS.load(Ordering::Relaxed)
}

/// Before a child is started (by `spawn`, `fork`, `watch`, or a
/// `spawn_prepared` whose reactor needs the handler; in every mode): refuses a disposition that would make the kernel reap the child,
/// and, if `needs_handler`, makes sure our handler will run (see the parent
/// module's `# Handler lifetime`). One `sigaction(SIGCHLD, NULL, &cur)`
/// query, without the lock, when nothing needs installing (the steady
/// state); the lock only to install.
///
/// # Errors
/// [`Error::HandlerConflict`] if `SIGCHLD` is ignored or has
/// `SA_NOCLDWAIT`; [`Error::Io`] if `sigaction` fails. The disposition is
/// then as it was.
pub(crate) fn before_start(needs_handler: bool) -> Result<(), Error> {
    let cur = current()?;
    check_usable(&cur)?;
    if !needs_handler || cur.is(on_sigchld) {
        return Ok(());
    }
    if shadowed(&cur) {
        return check_chains(&cur);
    }
    let state = super::lock();
    let shadowing = ensure(wants_stops())?;
    // The check raises a signal into other code's handler: not under the
    // lock.
    drop(state);
    match shadowing {
        Some(cur) => check_chains(&cur),
        None => Ok(()),
    }
}

/// The handler address last found to chain to ours, and the last found not
/// to (so the check below runs once per handler installed over ours).
static CHAINS: AtomicUsize = AtomicUsize::new(0);
static DOES_NOT_CHAIN: AtomicUsize = AtomicUsize::new(0);

/// A real handler installed over ours, where a reactor needs ours to run:
/// does it call ours? Asked once per such handler by raising `SIGCHLD` in
/// this thread (delivered before `raise` returns, if the thread does not
/// block it; a spurious `SIGCHLD` is harmless to any correct handler) and
/// seeing whether ours ran. If the thread blocks `SIGCHLD`, nothing can be
/// told, and the handler is given the benefit of the doubt.
///
/// # Errors
/// [`Error::HandlerConflict`] if it does not chain: every reactor that
/// needs `SIGCHLD` would wait for ever.
fn check_chains(cur: &Action) -> Result<(), Error> {
    let conflict = Error::HandlerConflict {
        reason: "a SIGCHLD handler installed after evchild's does not call it, so evchild \
                 never learns of its children's deaths; make that handler chain to the one \
                 it replaced, or use Mainloop mode",
    };
    if CHAINS.load(Ordering::Relaxed) == cur.handler() {
        return Ok(());
    }
    if DOES_NOT_CHAIN.load(Ordering::Relaxed) == cur.handler() {
        return Err(conflict);
    }
    let before = on_sigchld_calls();
    if !sys::raise_sigchld() {
        return Ok(());
    }
    if on_sigchld_calls() == before {
        DOES_NOT_CHAIN.store(cur.handler(), Ordering::Relaxed);
        return Err(conflict);
    }
    CHAINS.store(cur.handler(), Ordering::Relaxed);
    Ok(())
}

fn on_sigchld_calls() -> usize {
    super::handler::CALLS.load(Ordering::Relaxed)
}

/// A real handler installed after ours: left alone (it may chain to us,
/// and installing over it could make the two call each other for ever).
fn shadowed(cur: &Action) -> bool {
    cur.handler() != libc::SIG_DFL && !cur.is(on_sigchld) && INSTALLED.load(Ordering::Relaxed)
}

/// [`before_start`] with the process lock held by the caller (which keeps
/// installs from racing each other); `stops`: whether a registration wants
/// stop reports. Returns the disposition of a handler installed over ours,
/// which the caller checks ([`check_chains`]) once it has let go of the
/// lock.
fn ensure(stops: bool) -> Result<Option<Action>, Error> {
    let cur = current()?;
    check_usable(&cur)?;
    if cur.is(on_sigchld) {
        return Ok(None);
    }
    if cur.handler() == libc::SIG_DFL {
        // First use, or other code reset SIGCHLD after we installed: nothing
        // to chain to. (This also repairs the case where our handler was
        // replaced by SIG_IGN and SIG_DFL restored later.)
        PREV.set(None);
        return install(&cur, stops).map(|()| None);
    }
    if shadowed(&cur) {
        return Ok(Some(cur));
    }
    remember_prev(&cur);
    install(&cur, stops).map(|()| None)
}

/// Reinstalls our handler with or without `SA_NOCLDSTOP` (`stops`), if it
/// is ours and current (otherwise whoever replaced it decides, and chains to
/// us or not). Under the process lock.
pub(super) fn refresh_flags(stops: bool) {
    if !current().is_ok_and(|c| c.is(on_sigchld)) {
        return;
    }
    INSTALLS.fetch_add(1, Ordering::Relaxed);
    // A failure leaves the previous flags, which only costs or saves
    // spurious wake-ups. A handler other code installed between the query
    // and the set is put back: it is never clobbered.
    if let Ok(old) = sys::sigchld_set(&our_action(stops)) {
        if !old.is(on_sigchld) {
            let _ = sys::sigchld_set(&old);
        }
    }
}

/// Calls the handler that was installed before ours. Async-signal-safe as
/// far as that handler is: we add only an atomic load and an indirect call.
pub(super) fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if let Some(prev) = PREV.get() {
        sys::call_chained(prev, on_sigchld, sig, info, ctx);
    }
}

/// The current disposition.
fn current() -> Result<Action, Error> {
    sys::sigchld_query().map_err(|e| Error::io("sigaction(SIGCHLD)", e))
}

fn check_usable(old: &Action) -> Result<(), Error> {
    if old.handler() == libc::SIG_IGN {
        return Err(refusal(true));
    }
    if old.flags() & libc::SA_NOCLDWAIT != 0 {
        return Err(refusal(false));
    }
    Ok(())
}

/// The error for a `SIGCHLD` disposition that makes the kernel reap
/// children: ignored (`SIG_IGN`), or (not `ignored`) with `SA_NOCLDWAIT`.
pub(crate) fn refusal(ignored: bool) -> Error {
    Error::HandlerConflict {
        reason: match ignored {
            true => {
                "SIGCHLD is ignored (SIG_IGN), so the kernel reaps children at once and no \
                 exit status can be waited for; set SIGCHLD back to SIG_DFL, or reap \
                 without evchild"
            }
            false => {
                "the SIGCHLD disposition has SA_NOCLDWAIT, so the kernel reaps children at \
                 once and no exit status can be waited for; install the handler without \
                 SA_NOCLDWAIT"
            }
        },
    }
}

/// Remembers `old` for chaining, reusing the saved copy when nothing changed
/// (so the same previous handler is allocated once). `SIG_DFL` and ours
/// leave `PREV` as it is: there is nothing to chain to in the first, and
/// chaining to ours would recurse for ever.
fn remember_prev(old: &Action) {
    if old.is(on_sigchld) || old.handler() == libc::SIG_DFL {
        return;
    }
    if PREV.get().is_some_and(|prev| prev.same_as(old)) {
        return;
    }
    PREV.set(Some(*old));
}

/// Our `sigaction`: `SA_NOCLDSTOP` unless a registration wants stop reports
/// or the handler we chain to wanted them.
fn our_action(stops: bool) -> Action {
    let prev_wants_stops = PREV.get().is_some_and(|prev| {
        prev.handler() != libc::SIG_DFL
            && prev.handler() != libc::SIG_IGN
            && prev.flags() & libc::SA_NOCLDSTOP == 0
    });
    sys::sigchld_action(on_sigchld, stops || prev_wants_stops)
}

/// Installs `on_sigchld` over `old` (just read, and usable), with `PREV`
/// already set for it. On error, the disposition is what it was.
fn install(old: &Action, stops: bool) -> Result<(), Error> {
    INSTALLS.fetch_add(1, Ordering::Relaxed);
    let swapped =
        sys::sigchld_set(&our_action(stops)).map_err(|e| Error::io("sigaction(SIGCHLD)", e))?;
    if !swapped.same_as(old) {
        // Someone changed the disposition between our read and our swap.
        if let Err(e) = check_usable(&swapped) {
            let _ = sys::sigchld_set(&swapped);
            return Err(e);
        }
        if swapped.handler() == libc::SIG_DFL {
            PREV.set(None);
        } else {
            remember_prev(&swapped);
        }
    }
    INSTALLED.store(true, Ordering::Relaxed);
    Ok(())
}
