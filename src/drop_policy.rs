//! What dropping a reactor does: to its live children (the application's
//! [`DropPolicy`]), and to its share of the process-wide handler.

use std::time::{Duration, Instant};

use crate::Reactor;

/// What dropping a [`Reactor`] does to the children it still has.
///
/// Set with [`Reactor::set_drop_policy`]. In every case the callbacks of
/// those children are dropped without being called (there is no context to
/// call them with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropPolicy {
    /// Leave them running (libxl's behaviour). They stay children of the
    /// process: whoever reaps next gets their statuses, and until then each
    /// that dies is a zombie. Choose it when the process is about to exit,
    /// when another reactor (or a `LibraryAlways` one) will adopt them with
    /// [`watch`](Reactor::watch), or when they must outlive the reactor.
    #[default]
    Leave,
    /// Send each `SIGKILL` and do not wait. Each is a zombie until something
    /// reaps it (the process's exit, a `LibraryAlways` reactor, init after
    /// the process exits). Only the children themselves are signalled, not
    /// their process groups: use [`kill_group`](Reactor::kill_group) first
    /// for those.
    Kill,
    /// Send each `SIGKILL`, then reap them, blocking the dropping thread for
    /// at most the given time (a child stuck in the kernel can outlast
    /// `SIGKILL` for a while). Children still unreaped then are left as with
    /// `Kill`. With a few milliseconds to spare, no zombie of the reactor's
    /// remains.
    KillAndReap(Duration),
}

impl<C> Reactor<C> {
    /// Chooses what dropping the reactor does to the children it still has
    /// (by default, [`DropPolicy::Leave`]).
    pub fn set_drop_policy(&mut self, policy: DropPolicy) {
        self.drop_policy = policy;
    }

    /// What dropping the reactor will do to the children it still has.
    pub fn drop_policy(&self) -> DropPolicy {
        self.drop_policy
    }

    /// Carries out the drop policy (in the creating process only).
    fn drop_children(&mut self) {
        let within = match self.drop_policy {
            DropPolicy::Leave => return,
            DropPolicy::Kill => None,
            DropPolicy::KillAndReap(within) => Some(within),
        };
        for pid in self.children.pids() {
            // ESRCH cannot happen (unreaped); nothing else can be done here.
            let _ = crate::sys::kill(pid, libc::SIGKILL);
        }
        let Some(within) = within else { return };
        let deadline = Instant::now().checked_add(within);
        loop {
            // Reaped children's entries (and callbacks) are simply dropped.
            let _ = crate::reap::reap_own(
                &mut crate::sys::SysReap,
                &mut self.children,
                &mut self.scratch,
                drop,
            );
            if self.children.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl<C> Drop for Reactor<C> {
    fn drop(&mut self) {
        if self.check_process().is_err() {
            // A forked child: the registry's lock may be held by a thread
            // that does not exist here, and freeing memory is not
            // async-signal-safe. Leak everything; the descriptors (the
            // child's own copies) are closed below, and close(2) is
            // async-signal-safe.
            std::mem::forget(std::mem::take(&mut self.children));
            std::mem::forget(std::mem::take(&mut self.pending));
            std::mem::forget(std::mem::take(&mut self.scratch));
            std::mem::forget(std::mem::take(&mut self.deadlines));
            std::mem::forget(self.fork_replacement.take());
            std::mem::forget(self.unknown_child.take());
            if let Some(registration) = self.registration.take() {
                registration.forget();
            }
            if let Some(token) = self.reap_all.take() {
                token.forget();
            }
            return;
        }
        self.drop_children();
        // Unregister (waiting out any handler still using the write end)
        // before the pipe is closed by the field drops.
        self.registration = None;
    }
}
