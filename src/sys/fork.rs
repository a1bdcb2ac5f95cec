//! `fork(2)`, and what a child may call before it execs or exits.

use crate::Pid;

/// `fork(2)`.
///
/// # Safety
/// The caller's caller must uphold `Reactor::fork`'s contract: in the child,
/// only async-signal-safe work until `execve` or `_exit` if the parent had
/// other threads.
/// Returns the child's pid in the parent and `None` in the child.
pub(crate) unsafe fn fork() -> std::io::Result<Option<Pid>> {
    // SAFETY: forwarded to the caller (see above).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(Pid::from_raw(child.as_raw()))),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// `_exit(2)`: ends the process at once, running no destructor and no
/// `atexit` handler. Async-signal-safe, so a forked child may call it.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes an integer, touches no memory of ours and does
    // not return.
    unsafe { libc::_exit(code) }
}

/// `pthread_atfork(NULL, NULL, child)`: `child` runs in every child forked
/// through `fork(3)` (glibc's, so nix's and std's too), before `fork`
/// returns there. Whether it was registered (`ENOMEM` is the only failure).
pub(crate) fn atfork_child(child: extern "C" fn()) -> bool {
    // SAFETY: `child` is an `extern "C" fn()`, which lives for the life of
    // the process (a function of this crate); null prepare and parent
    // handlers are allowed. Whether `child` is fit to run in a forked child
    // of a multi-threaded parent (async-signal-safe) is the caller's
    // argument, made where the function is defined.
    unsafe { libc::pthread_atfork(None, None, Some(child)) == 0 }
}
