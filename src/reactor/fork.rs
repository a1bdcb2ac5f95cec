//! `Reactor::fork`: libxl's `libxl__ev_child_fork`, the raw primitive for
//! children that run Rust code of their own.
//!
//! The ordering that makes it safe against a child that dies at once:
//! where the reactor's children need the `SIGCHLD` handler (`Peek`, `Scan`,
//! `LibraryAlways`) it is installed (and our pipe registered) before
//! `fork(2)`; with `Pidfd`, the pidfd of a child that died at once is
//! readable at once. Either way the child is in the table before `fork`
//! returns, so before any `dispatch`
//! can look for it. Everything the parent needs is allocated before the
//! fork; the child touches nothing of the reactor's.
//!
//! With `supervise::Start::fork` (and its call of `fork_with`), the crate's
//! only `unsafe` outside `sys/`: these two functions are `unsafe` to call
//! (what the child may do is the caller's contract), so they are declared
//! `unsafe` and allowed item by item; their bodies only forward that
//! contract to `sys::fork`.

use crate::reactor::OnDeath;
use crate::{ChildId, Error, Exit, Forked, Reactor, Result};

impl<C> Reactor<C> {
    /// `fork(2)` as an event source (libxl's `libxl__ev_child_fork`): starts a
    /// child process and registers it, so that `on_death` runs exactly once
    /// when it dies.
    ///
    /// Where the reactor's children need the `SIGCHLD` handler (`Peek`,
    /// `Scan`, `LibraryAlways`) it is installed *before* the fork, and with
    /// `Pidfd` a child that died at once has a readable pidfd, so such a
    /// child is not missed; the child is registered before this returns, so
    /// before any `dispatch` can look for it. Returns [`Forked::Parent`] with the child's id in the parent and
    /// [`Forked::Child`] in the child. Uses the hooks' `fork_replacement` if
    /// there is one.
    ///
    /// Prefer [`std::process::Command`] for children that `exec` (its
    /// `posix_spawn` path is much faster than `fork` in a large process); this
    /// is the raw primitive for children that run Rust code of their own.
    ///
    /// # Safety
    ///
    /// As for `fork(2)` (see `nix::unistd::fork`): if the process has other
    /// threads, the child may only call async-signal-safe functions until it
    /// calls `execve(2)` or `_exit(2)`. No allocation, no locks (`println!`
    /// takes one), no panics. Memory allocated by others may be in an
    /// inconsistent state in the child.
    ///
    /// In the child, the reactor is a copy that belongs to the parent: every
    /// method returns [`Error::ForkedChild`], and dropping it only closes the
    /// child's copies of its descriptors. The child's copies of this
    /// reactor's [`spawn_output`](Reactor::spawn_output) pipes are closed
    /// before `fork` returns there, so it never holds such a child's stdin
    /// open (that child would never see end of file); pipes of other
    /// reactors, and the application's own, are the caller's business. evchild's handler, inherited by the
    /// child, never writes to the parent's wake pipe from the child. The
    /// `on_death` closure is leaked in the child (never dropped), so none of
    /// its destructors run there.
    ///
    /// # Errors
    ///
    /// Nothing is registered on error, and the handler's users are as they
    /// were (a handler installed for this call stays installed, as it does
    /// once evchild has taken `SIGCHLD`).
    /// * [`Error::Io`] if `fork` (or the replacement) fails: `EAGAIN` at the
    ///   process limit, `ENOMEM`.
    /// * [`Error::HandlerConflict`] if `SIGCHLD` is ignored or has
    ///   `SA_NOCLDWAIT` (checked before every start, in every mode: the
    ///   kernel would reap the child itself), or [`Error::TooManyReactors`]
    ///   if the handler cannot be installed.
    /// * [`Error::InvalidPid`] if the fork replacement returned a pid ≤ 0 or
    ///   this process's own; nothing is registered.
    /// * [`Error::ForkedChild`] in a forked child.
    ///
    /// # Example
    ///
    /// ```
    /// use evchild::{Forked, Hooks, Reactor};
    /// let mut children = Reactor::<Vec<i32>>::new(Hooks::default())?;
    /// // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    /// match unsafe { children.fork(|codes, _, exit| codes.extend(exit.status().and_then(|s| s.code()))) }? {
    ///     Forked::Child => unsafe { libc::_exit(7) },
    ///     Forked::Parent(_child) => {}
    /// }
    /// let mut codes = Vec::new();
    /// while codes.is_empty() {
    ///     children.dispatch(&mut codes)?; // a real program waits in mio::Poll
    /// }
    /// assert_eq!(codes, [7]);
    /// # Ok::<(), evchild::Error>(())
    /// ```
    #[allow(unsafe_code)] // an `unsafe fn`: see the module docs
    pub unsafe fn fork(
        &mut self,
        on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
    ) -> Result<Forked> {
        self.check_process()?;
        // Allocate everything the parent needs before the fork.
        let on_death: OnDeath<C> = Box::new(on_death);
        self.children.reserve_one();
        let acquired = self.watcher.before_start(self.children.len())?;
        let starting = self.watcher.start();
        let replaced = self.fork_replacement.is_some();
        let forked = match self.fork_replacement.as_mut() {
            Some(replacement) => replacement(),
            // SAFETY: forwarded to our caller, who upholds `fork`'s contract.
            None => unsafe { crate::sys::fork() },
        };
        match forked {
            // A replacement's pid is checked before anything acts on it: a
            // live process that is not our child (a grandchild, a stranger)
            // is never registered, signalled or waited for. (One
            // `waitid(WNOWAIT)`; evchild's own fork needs none.)
            Ok(Some(pid))
                if replaced
                    && pid.as_raw() > 0
                    && pid != self.owner
                    && crate::sys::probe_child(pid).is_err() =>
            {
                self.watcher.abort_start(acquired);
                Err(Error::InvalidPid { pid })
            }
            Ok(Some(pid)) => match self.register_started(starting, pid, on_death) {
                Ok(id) => Ok(Forked::Parent(id)),
                Err(e) => {
                    self.watcher.abort_start(acquired);
                    Err(e)
                }
            },
            Ok(None) => {
                // A `fork_replacement` may bypass the atfork handler: the
                // watcher makes this a new fork generation then
                // (async-signal-safe).
                starting.in_child();
                // The output pipes of `spawn_output` children are the
                // parent's to read and write: holding a stdin write end
                // would keep that child from ever seeing end of file.
                self.outputs.close_in_child();
                // Dropping the closure could free memory: not
                // async-signal-safe in the child of a threaded parent.
                std::mem::forget(on_death);
                Ok(Forked::Child)
            }
            Err(e) => {
                self.watcher.abort_start(acquired);
                Err(Error::io("fork", e))
            }
        }
    }

    /// [`fork`](Reactor::fork) for a child that runs `child` and never
    /// comes back: in the new process, `child` runs under `catch_unwind`,
    /// and the process then ends with `_exit(code)`, `code` being what
    /// `child` returned (no `atexit` handlers run and no Rust buffers are
    /// flushed: flush what you wrote). A panic aborts the process
    /// (`SIGABRT`, which its death callback in the parent reports) instead
    /// of unwinding into the caller's frames, where an application's own
    /// `catch_unwind` could catch it and run the parent's loop in the child.
    /// Returns the child's id in the parent.
    ///
    /// ```
    /// use evchild::{Hooks, Reactor};
    /// use std::os::unix::process::ExitStatusExt;
    /// let mut children = Reactor::<Option<i32>>::new(Hooks::default())?;
    /// // SAFETY: the child only returns a number, which `fork_with` passes to
    /// // `_exit`, which is async-signal-safe.
    /// let id = unsafe {
    ///     children.fork_with(
    ///         || 4,
    ///         |code, _, exit| *code = exit.status().and_then(|s| s.code()),
    ///     )
    /// }?;
    /// let mut code = None;
    /// children.wait_for(&mut code, id, None)?;
    /// assert_eq!(code, Some(4));
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// # Safety
    ///
    /// As for [`fork`](Reactor::fork): `child` runs in the forked process,
    /// under the same rules (only async-signal-safe functions if the parent
    /// has other threads). A panic there is no exception to them: the panic
    /// machinery formats a message and takes the standard error lock before
    /// the abort, so in the child of a multi-threaded process a panic may
    /// deadlock instead of aborting. Write the child so that it does not
    /// panic; the abort is the backstop that keeps it out of the parent's
    /// code.
    ///
    /// # Errors
    ///
    /// As for [`fork`](Reactor::fork).
    #[allow(unsafe_code)] // an `unsafe fn`: see the module docs
    pub unsafe fn fork_with(
        &mut self,
        child: impl FnOnce() -> i32,
        on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
    ) -> Result<ChildId> {
        // SAFETY: forwarded to our caller, who upholds `fork`'s contract.
        match unsafe { self.fork(on_death) }? {
            Forked::Parent(id) => Ok(id),
            Forked::Child => {
                // If `child` unwinds, end the process here rather than in
                // the parent's frames.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)) {
                    Ok(code) => crate::sys::exit_now(code),
                    Err(_) => std::process::abort(),
                }
            }
        }
    }
}
