//! Sending signals, by pid, by process group and by pidfd.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::Pid;

/// `kill(pid, sig)` for one process. A pid <= 0 (a group, or every process
/// we may signal) is refused with `ESRCH`, never sent.
pub(crate) fn kill(pid: Pid, signal: libc::c_int) -> std::io::Result<()> {
    if pid.as_raw() <= 0 {
        return Err(Errno::ESRCH.into());
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid.as_raw(), signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `kill(-pgid, sig)`: the process group led by `pgid`.
pub(crate) fn kill_group(pgid: Pid, signal: libc::c_int) -> std::io::Result<()> {
    if pgid.as_raw() <= 1 {
        return Err(Errno::ESRCH.into());
    }
    // SAFETY: as for `kill`.
    if unsafe { libc::kill(-pgid.as_raw(), signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `getpgid(pid)`.
pub(crate) fn getpgid(pid: Pid) -> std::io::Result<Pid> {
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid.as_raw())))?;
    Ok(Pid::from_raw(pgid.as_raw()))
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`: signals exactly the process
/// the pidfd names; `ESRCH` once it has been reaped, whoever has its pid
/// now.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: integers and a null `siginfo_t` pointer, which the call allows
    // (the kernel then fills in a siginfo as kill(2) would).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A `SA_SIGINFO` handler's type.
pub(crate) type SigInfoHandler =
    extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// A signal disposition (`struct sigaction`), as read or to be installed.
#[derive(Clone, Copy)]
pub(crate) struct Action(libc::sigaction);

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Action")
            .field("handler", &self.handler())
            .field("flags", &self.flags())
            .finish()
    }
}

impl Action {
    /// The handler address, or `SIG_DFL`/`SIG_IGN`.
    pub(crate) fn handler(&self) -> libc::sighandler_t {
        self.0.sa_sigaction
    }

    pub(crate) fn flags(&self) -> libc::c_int {
        self.0.sa_flags
    }

    /// Whether `handler` is this very function.
    pub(crate) fn is(&self, handler: SigInfoHandler) -> bool {
        self.handler() == handler as libc::sighandler_t
    }

    /// Same handler, flags and mask.
    pub(crate) fn same_as(&self, other: &Action) -> bool {
        self.handler() == other.handler() && self.flags() == other.flags() && {
            // SAFETY: both masks are initialised `sigset_t`s; `sigismember`
            // only reads them, and every number in 1..SIGRTMAX is valid.
            (1..libc::SIGRTMAX()).all(|s| unsafe {
                libc::sigismember(&self.0.sa_mask, s) == libc::sigismember(&other.0.sa_mask, s)
            })
        }
    }
}

/// Our disposition: `handler` with `SA_SIGINFO | SA_RESTART`, plus
/// `SA_NOCLDSTOP` unless `stops`, and an empty mask.
pub(crate) fn sigchld_action(handler: SigInfoHandler, stops: bool) -> Action {
    // SAFETY: all-zero is a valid `sigaction` (SIG_DFL, no flags, empty
    // mask); every field we rely on is set below.
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = handler as libc::sighandler_t;
    new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    if !stops {
        new.sa_flags |= libc::SA_NOCLDSTOP;
    }
    // SAFETY: `new.sa_mask` is a valid out-pointer to a `sigset_t`.
    unsafe { libc::sigemptyset(&mut new.sa_mask) };
    Action(new)
}

/// `sigaction(SIGCHLD, NULL, &cur)`: the current disposition.
pub(crate) fn sigchld_query() -> std::io::Result<Action> {
    // SAFETY: all-zero is a valid `sigaction`; the kernel overwrites it.
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `cur` is a valid out-pointer.
    if unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut cur) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Action(cur))
}

/// `sigaction(SIGCHLD, new, &old)`: installs `new`, returns what it
/// replaced. On error nothing changed.
pub(crate) fn sigchld_set(new: &Action) -> std::io::Result<Action> {
    // SAFETY: zeroed is valid; the kernel fills it in.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `new` is a complete `sigaction` (read from the kernel or made
    // by `sigchld_action`, whose handler matches SA_SIGINFO); `old` is a
    // valid out-pointer.
    if unsafe { libc::sigaction(libc::SIGCHLD, &new.0, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Action(old))
}

/// Calls the handler of `prev` (a disposition that was installed before
/// ours) the way the kernel would have: with the three arguments for
/// `SA_SIGINFO`, with the signal number alone otherwise. `SIG_DFL`,
/// `SIG_IGN` and `ours` are not called. Async-signal-safe as far as that
/// handler is: this adds only an indirect call.
pub(crate) fn call_chained(
    prev: &Action,
    ours: SigInfoHandler,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    let handler = prev.handler();
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN || prev.is(ours) {
        return;
    }
    if prev.flags() & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO the kernel would have called this address
        // as `void (*)(int, siginfo_t *, void *)`; we pass on exactly the
        // arguments the kernel gave us.
        let f: SigInfoHandler = unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the kernel would have called this
        // address as `void (*)(int)`.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// A disposition kept for the life of the process, readable from a signal
/// handler: an atomic pointer to an allocation that is never freed (one per
/// distinct value stored), so a handler running on another thread never
/// reads freed memory.
#[derive(Debug)]
pub(crate) struct ActionSlot(std::sync::atomic::AtomicPtr<Action>);

impl ActionSlot {
    pub(crate) const fn empty() -> Self {
        ActionSlot(std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()))
    }

    /// The stored action. Async-signal-safe (one atomic load).
    pub(crate) fn get(&self) -> Option<&'static Action> {
        let p = self.0.load(std::sync::atomic::Ordering::Acquire);
        // SAFETY: the slot only ever holds null or a pointer from
        // `Box::leak`, which is never freed: valid for the life of the
        // process, and never written through after it is published.
        unsafe { p.as_ref() }
    }

    /// Stores `action` (leaking one allocation), or empties the slot.
    pub(crate) fn set(&self, action: Option<Action>) {
        let p = action.map_or(std::ptr::null_mut(), |a| {
            Box::leak(Box::new(a)) as *mut Action
        });
        self.0.store(p, std::sync::atomic::Ordering::Release);
    }
}

/// After a write failed with `EPIPE` while this thread blocked `SIGPIPE`:
/// takes the `SIGPIPE` that write raised off the thread's pending set, so
/// unblocking does not deliver it.
pub(crate) fn take_pending_sigpipe() {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGPIPE);
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid signal set and timeout, and a null `siginfo_t`
    // pointer, which sigtimedwait allows. The caller has SIGPIPE blocked in
    // this thread, as sigtimedwait requires.
    unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &zero) };
}

/// Raises `SIGCHLD` in this thread, if the thread does not block it: then
/// it is delivered (the handler has run) before this returns. Whether it
/// was raised.
pub(crate) fn raise_sigchld() -> bool {
    let mut current = nix::sys::signal::SigSet::empty();
    let blocked = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        None,
        Some(&mut current),
    )
    .map_or(true, |()| {
        current.contains(nix::sys::signal::Signal::SIGCHLD)
    });
    if blocked {
        return false;
    }
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGCHLD).is_ok()
}
