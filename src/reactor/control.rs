//! Acting on live children: signals, process groups, and `terminate`'s
//! deadlines.
//!
//! Every call takes a [`ChildId`] and checks it against the table first, so
//! a child is signalled only between its registration and the report of its
//! death, while the kernel cannot have given its pid (or its process group
//! id) to anything else.

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::reactor::deadlines::Target;
use crate::{ChildId, ChildState, Error, Reactor, Result, SigchldOwner, Signal};

impl<C> Reactor<C> {
    /// `Ok(())` if `id` is a live child of this reactor; otherwise the error
    /// that says why not.
    pub(crate) fn check_live(&self, id: ChildId) -> Result<()> {
        self.check_process()?;
        if self.contains(id) {
            Ok(())
        } else if id.reactor == self.number {
            Err(Error::AlreadyReaped { pid: id.pid })
        } else {
            Err(Error::ForeignId { id })
        }
    }

    /// Sends `signal` to a live registered child.
    ///
    /// `signal` is a [`Signal`], or anything that converts into one: a
    /// `nix::sys::signal::Signal`, or a raw number such as `libc::SIGTERM`
    /// (checked: a number that is no signal is [`Error::InvalidSignal`],
    /// before anything is sent). Real-time signals are fine
    /// ([`Signal::realtime`]); [`Signal::CHECK`] (0) checks that the child
    /// can be signalled without sending anything.
    ///
    /// ```no_run
    /// # use evchild::{Hooks, Reactor, Signal};
    /// # let mut children = Reactor::<()>::new(Hooks::default())?;
    /// # let id = children.spawn(&mut std::process::Command::new("sleep"), |_, _, _| {})?.id;
    /// children.kill(id, Signal::TERM)?;
    /// children.kill(id, libc::SIGUSR1)?; // checked, then sent
    /// children.kill(id, nix::sys::signal::Signal::SIGCONT)?;
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// A child with a pidfd (the `Pidfd` backend) is signalled through it
    /// (`pidfd_send_signal`): if other code reaped it, the call fails with
    /// `ESRCH` and no other process is touched, even one that now has its
    /// pid. Without a pidfd the pid is used: between registration and the
    /// report of the death it cannot name another process *while nobody
    /// else reaps the child* (the kernel does not reuse the pid of an
    /// unreaped child). In `Mainloop` mode that means the application calls
    /// [`reaped`](Reactor::reaped) before it signals through the reactor;
    /// see *Identity* in the crate docs for the window that remains.
    ///
    /// # Errors
    ///
    /// Nothing is signalled on error.
    /// * [`Error::AlreadyReaped`] if the child's death has been reported (or
    ///   is about to be, in this `dispatch`): the pid may have been recycled.
    /// * [`Error::ForeignId`] if `id` comes from another reactor.
    /// * [`Error::InvalidSignal`] for a number that is no signal.
    /// * [`Error::Io`] from `pidfd_send_signal(2)` or `kill(2)`: `ESRCH`
    ///   from the pidfd if other code reaped the child (it is reported
    ///   `Lost` by the next `dispatch`), `EPERM`.
    /// * [`Error::ForkedChild`] in a forked child.
    pub fn kill<S>(&mut self, id: ChildId, signal: S) -> Result<()>
    where
        S: TryInto<Signal>,
        Error: From<S::Error>,
    {
        self.send(id, signal.try_into()?)
    }

    /// [`kill`](Reactor::kill) with a checked signal.
    pub(crate) fn send(&mut self, id: ChildId, signal: Signal) -> Result<()> {
        self.check_live(id)?;
        let entry = self.entry(id).ok_or(Error::AlreadyReaped { pid: id.pid })?;
        self.watcher.signal(id, &entry.watch, signal)
    }

    /// The child's pidfd, if it is watched through one (the `Pidfd`
    /// backend), borrowed: for `pidfd_getfd(2)`, `process_madvise(2)` and
    /// the like. Do not wait on it or close it (the reactor reaps the
    /// child); `None` for a child without one.
    ///
    /// # Errors
    ///
    /// As for [`kill`](Reactor::kill): the child must be live and ours.
    pub fn pidfd(&self, id: ChildId) -> Result<Option<std::os::fd::BorrowedFd<'_>>> {
        self.check_live(id)?;
        Ok(self
            .entry(id)
            .and_then(|entry| entry.watch.pidfd_borrowed()))
    }

    /// Asks for reports of the child's stops and continues
    /// (`WUNTRACED | WCONTINUED`): `on_state` runs, in `dispatch`, with
    /// [`ChildState::Stopped`] (and the signal) or [`ChildState::Continued`]
    /// each time. The death callback still runs exactly once. The kernel
    /// keeps only a child's latest state: a continue followed at once by
    /// the death may be reported as the death alone.
    ///
    /// Such a child is watched through `SIGCHLD` whatever the backend (a
    /// pidfd does not report stops), and while any is registered evchild's
    /// handler is installed without `SA_NOCLDSTOP`, so every stop and
    /// continue of any child of the process wakes the reactors. Each
    /// wake-up costs one extra `waitpid` per such child.
    ///
    /// ```no_run
    /// # use evchild::{ChildState, Hooks, Reactor};
    /// # use std::process::Command;
    /// # let mut children = Reactor::<()>::new(Hooks::default())?;
    /// let child = children.spawn(&mut Command::new("vim"), |_, _, _| {})?;
    /// children.on_state_change(child.id, |_, _, id, state| match state {
    ///     ChildState::Stopped(sig) => println!("{id} stopped by signal {sig}"),
    ///     ChildState::Continued => println!("{id} continued"),
    ///     _ => {}
    /// })?;
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Nothing changed on error.
    /// * As for [`kill`](Reactor::kill): the child must be live and ours.
    /// * [`Error::WrongMode`] in `Mainloop` mode (the application reaps,
    ///   and sees the stops itself with `WUNTRACED`).
    /// * [`Error::HandlerConflict`] / [`Error::TooManyReactors`] if the
    ///   handler cannot be installed.
    pub fn on_state_change(
        &mut self,
        id: ChildId,
        on_state: impl FnMut(&mut C, &mut Reactor<C>, ChildId, ChildState) + Send + 'static,
    ) -> Result<()> {
        self.check_live(id)?;
        if self.mode() == SigchldOwner::Mainloop {
            return Err(Error::WrongMode {
                call: "on_state_change",
                mode: self.mode(),
                hint: "the application reaps in this mode; wait with WUNTRACED | WCONTINUED \
                       to see stops yourself",
            });
        }
        let Reactor {
            watcher, children, ..
        } = self;
        if let Some(entry) = children.get_mut(id.pid) {
            watcher.want_stops(id.pid, &mut entry.watch)?;
            entry.on_state = Some(Box::new(on_state));
        }
        Ok(())
    }

    /// Asks a child to stop: `SIGTERM` now, and `SIGKILL` if it is still
    /// alive after `grace`.
    ///
    /// The death callback still fires exactly once, with the true status:
    /// signal 15 if the child obeyed (or died otherwise), 9 if it had to be
    /// killed. The `SIGKILL` is sent by the first [`dispatch`](Reactor::dispatch)
    /// at or after the deadline; the reactor's descriptor becomes readable
    /// then (see [`timeout`](Reactor::timeout)), so a loop that dispatches
    /// on its events makes that happen on time. Calling it again for the same
    /// child sends another `SIGTERM` and adds another deadline; the earliest
    /// wins.
    ///
    /// # Errors
    ///
    /// As for [`kill`](Reactor::kill); nothing is sent and no deadline is set.
    pub fn terminate(&mut self, id: ChildId, grace: Duration) -> Result<()> {
        self.send(id, Signal::TERM)?;
        self.add_deadline(id, grace, Target::Child);
        Ok(())
    }

    /// Cancels the `SIGKILL` deadlines that [`terminate`](Reactor::terminate)
    /// and [`terminate_group`](Reactor::terminate_group) set for `id` (the
    /// child promised to exit, say): it will not be killed by them. Returns
    /// whether there was one. The `SIGTERM` already sent stays sent.
    ///
    /// # Errors
    ///
    /// As for [`kill`](Reactor::kill): the child must be live and ours.
    pub fn cancel_terminate(&mut self, id: ChildId) -> Result<bool> {
        self.check_live(id)?;
        let removed = self.deadlines.remove_where(id, Target::is_kill);
        self.watcher.arm(self.deadlines.next());
        Ok(removed)
    }

    /// [`terminate`](Reactor::terminate) for the whole process group a child
    /// leads: `SIGTERM` to the group now, and `SIGKILL` to the group if the
    /// child is still alive after `grace`.
    ///
    /// The `SIGKILL` goes to the group (and to the leader itself, should it
    /// have left the group) while the leader is alive, so members that ignore
    /// `SIGTERM` cannot outlive a leader that the deadline kills.
    /// If the leader obeys and dies first, the group is no longer signalled
    /// (see [`kill_group`](Reactor::kill_group)); members still running then
    /// are left alone.
    ///
    /// # Errors
    ///
    /// As for [`kill_group`](Reactor::kill_group); nothing is sent and no
    /// deadline is set.
    pub fn terminate_group(&mut self, id: ChildId, grace: Duration) -> Result<()> {
        self.send_group(id, Signal::TERM)?;
        self.add_deadline(id, grace, Target::Group);
        Ok(())
    }

    pub(crate) fn add_deadline(&mut self, id: ChildId, grace: Duration, target: Target) {
        // A grace too long to represent never runs out.
        if let Some(at) = Instant::now().checked_add(grace) {
            self.deadlines.push(at, id, target);
            self.watcher.arm(self.deadlines.next());
        }
    }

    /// How long the loop may sleep in `poll` before the reactor has a
    /// deadline due, or `None` if it has none. Zero means one is due now.
    ///
    /// The reactor's descriptor also becomes readable when a deadline is
    /// due (a `timerfd` in its own epoll set), so a loop that dispatches on
    /// the reactor's events needs no timer of its own. This is for loops
    /// that prefer to sleep no longer than the next deadline anyway, and
    /// the fallback if the process could not spare a descriptor for the
    /// timer: a loop that passes this to `poll` and calls
    /// [`dispatch`](Reactor::dispatch) whenever `poll` returns (on an event
    /// for the reactor *or* on time-out) needs nothing else for the
    /// reactor's timers. A loop with deadlines of its own sleeps for the
    /// shorter of the two, where `None` means no limit (mind that
    /// `Option::min` would pick `None`).
    ///
    /// ```no_run
    /// # use evchild::{Hooks, Reactor};
    /// # let mut poll = mio::Poll::new()?;
    /// # let mut events = mio::Events::with_capacity(8);
    /// # let mut children = Reactor::<()>::new(Hooks::default())?;
    /// loop {
    ///     match poll.poll(&mut events, children.timeout()) {
    ///         // SIGCHLD interrupts epoll_wait; that is no error.
    ///         Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
    ///         other => other?,
    ///     }
    ///     children.dispatch(&mut ())?; // cheap when there is nothing to do
    ///     // ... handle the other events ...
    /// #   break;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timeout(&self) -> Option<Duration> {
        self.deadlines
            .next()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Sends `SIGKILL` to every child whose grace period has run out,
    /// terminates `spawn_output` children whose time-out ran out, stops
    /// reading the pipes of those whose drain time ran out, and forgets
    /// deadlines that no longer matter.
    pub(crate) fn fire_deadlines(&mut self, ctx: &mut C) {
        let now = Instant::now();
        while let Some((id, target)) = self.deadlines.pop_due(now) {
            if target == Target::Drain {
                // The child is dead; its output job waits for end of file.
                if let Some(job) = self.outputs.find(id) {
                    self.drain_ran_out(job, ctx);
                }
                continue;
            }
            if !self.contains(id) {
                continue;
            }
            if target == Target::Timeout {
                self.time_out(id);
                continue;
            }
            // Errors are not the caller's to handle in dispatch. ESRCH from
            // the pidfd means other code reaped the child: it is reported
            // lost by the next pass, and nothing is sent to its pid.
            if target == Target::Group {
                // ESRCH if the leader has left its group since: the
                // leader itself still gets the SIGKILL below.
                let _ = self.send_group(id, Signal::KILL);
            }
            let _ = self.send(id, Signal::KILL);
        }
        let Reactor {
            deadlines,
            children,
            outputs,
            ..
        } = self;
        deadlines.prune(|id, target| {
            if target.outlives_child() {
                return outputs.find(id).is_none();
            }
            !children
                .get(id.pid)
                .is_some_and(|entry| entry.serial == id.serial)
        });
        self.watcher.arm(self.deadlines.next());
    }

    /// A dead `spawn_output` child's drain time ran out: a last read of its
    /// pipes (chunks to its `on_chunk`), then they are closed and its
    /// callback queued. If `on_chunk` panics, the pipes are closed all the
    /// same and the panic propagates.
    fn drain_ran_out(&mut self, job: usize, ctx: &mut C) {
        let before = self.pending.len();
        let read = panic::catch_unwind(AssertUnwindSafe(|| {
            self.outputs
                .cut(job, Some(ctx), &self.watcher, &mut self.pending);
        }));
        if read.is_err() {
            self.outputs
                .cut(job, None, &self.watcher, &mut self.pending);
        }
        if self.pending.len() > before || read.is_err() {
            self.watcher.wake();
        }
        if let Err(panic) = read {
            panic::resume_unwind(panic);
        }
    }

    /// A `spawn_output` child's time-out ran out: `terminate_group` if it
    /// leads a process group, `terminate` otherwise, with its job's grace.
    fn time_out(&mut self, id: ChildId) {
        let Some(job) = self.outputs.find(id) else {
            return;
        };
        let entry = &mut self.outputs.jobs[job];
        entry.timed_out = true;
        let grace = entry.kill_grace;
        // Errors are not the caller's to handle in dispatch (ESRCH: other
        // code reaped it; it is reported lost by the next pass).
        if let Err(Error::NotAGroupLeader { .. }) = self.terminate_group(id, grace) {
            let _ = self.terminate(id, grace);
        }
    }

    /// `kill(-pgid, signal)`: signals the process group a child leads, for a
    /// child started in its own group (`CommandExt::process_group(0)`), so
    /// its descendants get the signal too.
    ///
    /// # Errors
    ///
    /// Nothing is signalled on error.
    /// * As for [`kill`](Reactor::kill): `AlreadyReaped` once the child's
    ///   death has been reported, even if other members of the group live on.
    ///   Once the leader is reaped, evchild cannot tell whether the group id
    ///   still names the same group, so it does not guess: signal a group
    ///   before its leader's death is reported (in the leader's own death
    ///   callback it is already too late). `terminate_group` does this for
    ///   you.
    /// * [`Error::NotAGroupLeader`] if the child does not lead a process
    ///   group (`getpgid(pid) != pid`).
    pub fn kill_group<S>(&mut self, id: ChildId, signal: S) -> Result<()>
    where
        S: TryInto<Signal>,
        Error: From<S::Error>,
    {
        self.send_group(id, signal.try_into()?)
    }

    fn send_group(&mut self, id: ChildId, signal: Signal) -> Result<()> {
        self.check_live(id)?;
        let entry = self.entry(id).ok_or(Error::AlreadyReaped { pid: id.pid })?;
        self.watcher.signal_group(id, &entry.watch, signal)
    }
}
