//! What dropping a reactor does: to its live children (the application's
//! [`DropPolicy`]), and to its share of the process-wide handler.

use std::time::{Duration, Instant};

use crate::reactor::Entry;
use crate::{ChildId, Reactor, Result, SigchldOwner, Signal};

/// What dropping a [`Reactor`] does to the children it still has.
///
/// Set for the reactor with [`Reactor::set_drop_policy`], and for one
/// child, over the reactor's, with [`Reactor::set_drop_policy_for`]
/// (tokio's `kill_on_drop`). In every case the callbacks of those children
/// are dropped without being called (there is no context to call them
/// with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropPolicy {
    /// Leave them running (libxl's behaviour). In `Library` and
    /// `LibraryAlways` mode they go on the process's orphan list: any later
    /// [`dispatch`](Reactor::dispatch) of any reactor of the process reaps
    /// those that have died since (by pidfd wherever the system has pidfds,
    /// whatever the backend; by pid elsewhere), so they do
    /// not stay zombies; until such a dispatch, one that died is a zombie.
    /// (A `LibraryAlways` reactor reaps them anyway, as strangers.) In
    /// `Mainloop` mode they are left to the application, which reaps.
    /// Choose it when the process is about to exit, or when the children
    /// must outlive the reactor.
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

    /// What dropping the reactor will do to the children it still has
    /// (those without a policy of their own).
    pub fn drop_policy(&self) -> DropPolicy {
        self.drop_policy
    }

    /// Chooses what dropping the reactor does to the child `id`, over the
    /// reactor's [`drop_policy`](Self::drop_policy): tokio's `kill_on_drop`
    /// is `set_drop_policy_for(id, DropPolicy::Kill)` (or `KillAndReap`,
    /// to leave no zombie), and `Leave` keeps one child running from a
    /// reactor that kills the rest.
    ///
    /// ```
    /// use std::process::Command;
    /// use std::time::Duration;
    /// use evchild::{DropPolicy, Hooks, Reactor};
    /// let mut children = Reactor::<()>::new(Hooks::default())?;
    /// let sleeper = children.spawn(Command::new("sleep").arg("30"), |_, _, _| {})?;
    /// let reap = DropPolicy::KillAndReap(Duration::from_secs(5));
    /// children.set_drop_policy_for(sleeper.id, reap)?;
    /// assert_eq!(children.drop_policy_for(sleeper.id)?, reap);
    /// drop(children); // kills and reaps the sleep
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`kill`](Reactor::kill): the child must be live and ours.
    /// Nothing changed on error.
    pub fn set_drop_policy_for(&mut self, id: ChildId, policy: DropPolicy) -> Result<()> {
        self.check_live(id)?;
        if let Some(entry) = self.children.get_mut(id.pid) {
            entry.drop_policy = Some(policy);
        }
        Ok(())
    }

    /// What dropping the reactor will do to the child `id`: its own policy
    /// if it has one, otherwise the reactor's.
    ///
    /// # Errors
    ///
    /// As for [`kill`](Reactor::kill): the child must be live and ours.
    pub fn drop_policy_for(&self, id: ChildId) -> Result<DropPolicy> {
        self.check_live(id)?;
        Ok(self
            .entry(id)
            .and_then(|entry| entry.drop_policy)
            .unwrap_or(self.drop_policy))
    }

    /// Carries out the drop policies (in the creating process only): each
    /// child's own, or the reactor's. Each child is signalled through its
    /// pidfd where it has one, so a child that other code reaped (and
    /// whose pid may now be another process's) is never signalled by pid.
    fn drop_children(&mut self) {
        let default = self.drop_policy;
        let policy = |entry: &Entry<C>| entry.drop_policy.unwrap_or(default);
        let mut within: Option<Duration> = None;
        for (pid, entry) in self.children.iter() {
            match policy(entry) {
                DropPolicy::Leave => continue,
                DropPolicy::Kill => {}
                DropPolicy::KillAndReap(limit) => {
                    within = Some(within.map_or(limit, |w| w.max(limit)));
                }
            }
            // ESRCH: already reaped by someone else; nothing else can be
            // done here.
            let id = self.id(pid, entry.serial);
            let _ = self.watcher.signal(id, &entry.watch, Signal::KILL);
        }
        if let Some(within) = within {
            let deadline = Instant::now().checked_add(within);
            loop {
                // Reaped children's entries (and callbacks) are simply
                // dropped.
                self.watcher.reap_for_drop(&mut self.children);
                let waiting = self
                    .children
                    .iter()
                    .any(|(_, entry)| matches!(policy(entry), DropPolicy::KillAndReap(_)));
                if !waiting || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.orphan_children();
    }

    /// The children left to `DropPolicy::Leave` go on the process's orphan
    /// list, so that a later `dispatch` of any reactor reaps them once they
    /// die. Not in `Mainloop` mode, where the application reaps.
    fn orphan_children(&mut self) {
        if self.mode() == SigchldOwner::Mainloop || self.children.is_empty() {
            return;
        }
        let default = self.drop_policy;
        let Reactor {
            children, watcher, ..
        } = self;
        let leave: Vec<_> = children
            .iter()
            .filter(|(_, entry)| entry.drop_policy.unwrap_or(default) == DropPolicy::Leave)
            .map(|(pid, _)| pid)
            .collect();
        let orphans: Vec<_> = leave
            .into_iter()
            .filter_map(|pid| {
                let entry = children.remove(pid)?;
                Some(watcher.orphan(pid, entry.watch))
            })
            .collect();
        crate::process::orphans::adopt(orphans);
    }
}

impl<C> Drop for Reactor<C> {
    fn drop(&mut self) {
        if self.check_process().is_err() {
            // A forked child: freeing memory is not async-signal-safe (the
            // allocator's lock may be held by a thread that does not exist
            // here), and neither is the process-wide bookkeeping. Close this
            // process's copies of the descriptors (close(2) is
            // async-signal-safe) and leak everything else. (A pidfd is never
            // taken out of the epoll set here: the set is shared with the
            // parent.)
            let pidfds = self.children.iter().filter_map(|(_, e)| e.watch.pidfd());
            crate::sys::close_in_forked_child(pidfds);
            crate::sys::close_in_forked_child(self.outputs.fds_in_forked_child());
            crate::sys::close_in_forked_child(self.watcher.fds_in_forked_child());
            self.fork_replacement.leak();
            self.unknown_child.leak();
            self.children.leak();
            self.outputs.leak();
            self.pending.leak();
            self.deadlines.leak();
            self.unwatched.leak();
            self.watcher.leak();
            return;
        }
        self.drop_children();
        self.watcher.leave_routes();
        // The fields drop now, in declaration order: the children's pidfds
        // and the output pipes leave the watcher's epoll set before it is
        // closed; the watcher unregisters from the handler before its wake
        // pipe can be closed.
    }
}
