//! Turning wake-ups into callbacks: `dispatch`, and the `Mainloop` mode's
//! `reaped` and `sigchld_occurred`.
//!
//! Every path goes drain → reap → remove from the table → queue → callback.
//! The queue (`Reactor::pending`) is what makes a panicking callback
//! harmless: each report is popped before its callback runs, so a panic
//! loses nothing but that callback's own work, and the reports behind it stay
//! queued for the next `dispatch` (the reactor wakes itself so there is one).

use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitStatus;

use std::collections::VecDeque;

use crate::process::routes;
use crate::reactor::{Entry, Pending};
use crate::reap::table::ChildTable;
use crate::reap::{self, Reaped};
use crate::sys::SysReap;
use crate::watch::{Watch, Watcher};
use crate::{ChildId, ChildState, Claim, Error, Exit, Pid, Reactor, Result, SigchldOwner, Stats};

impl<C> Reactor<C> {
    /// Does what the wake-up asked for: reaps the children that died and
    /// runs their death callbacks (and, in `LibraryAlways` mode, the
    /// unknown-child hook), with `ctx`. Call it when the reactor's descriptor
    /// is readable; calling it at other times is harmless.
    ///
    /// In order:
    /// 1. Find what woke the reactor, with one `epoll_wait` (no timeout) on
    ///    its own set: the wake pipe, which is emptied *before* reaping (a
    ///    `SIGCHLD` that lands during the reap writes a new byte, so the
    ///    loop wakes again), the pidfds that are readable, and the orphan
    ///    set. Nothing woke it: no wait call at all.
    /// 2. Reap, as the watcher decides (see `watch/mod.rs`): orphans that
    ///    died (their death woke every reactor); children whose pidfds are
    ///    readable, one `waitid(P_PIDFD)` each; after a wake-up through the
    ///    pipe, statuses a `LibraryAlways` reactor routed here (every mode),
    ///    then by mode: `Library`, the peek or the scan over the children
    ///    without a pidfd, never another pid; `LibraryAlways`, every dead
    ///    child of the process, routing children of other reactors to them;
    ///    `Mainloop`, none of its own (the application reaps).
    /// 3. Send `SIGKILL` to children whose [`terminate`](Reactor::terminate)
    ///    grace period has run out (after the reap, so a child that obeyed
    ///    is not signalled).
    /// 4. Each reaped child has left the tables; now its callback runs.
    ///
    /// A callback may fork, kill and register children, and call `dispatch`
    /// again. If a callback panics, the panic propagates out of `dispatch`
    /// after the reactor has been left consistent: that child is gone from
    /// the tables, and reports not yet delivered are delivered by the next
    /// `dispatch` (the reactor makes its descriptor readable for it).
    ///
    /// # Errors
    ///
    /// * [`Error::ForkedChild`] in a forked child (nothing was read).
    /// * [`Error::Io`] if reading the wake pipe or `waitpid` fails
    ///   unexpectedly; the reports gathered before the failure are still
    ///   delivered first.
    pub fn dispatch(&mut self, ctx: &mut C) -> Result<()> {
        self.check_process()?;
        self.stats.dispatches += 1;
        // 1. What woke us, without a wait call: the wake pipe (drained
        //    first, see above), the ready pidfds, streams, timer, orphans.
        let woken = self
            .watcher
            .collect(&mut self.outputs.ready)
            .map_err(|e| Error::io("epoll_wait/read(wake pipe)", e));
        // 2. Reap, as the watcher decides; outcomes leave the table and
        //    join the queue. Nothing woke us: no wait call at all.
        let reaped = match woken {
            Ok(woken) => self.pass(|watcher, table, sys, out| watcher.reap(woken, table, sys, out)),
            Err(e) => Err(e),
        };
        if reaped.is_err() {
            // Work may be left that no new event will announce.
            self.watcher.wake();
        }
        // 2b. Output streams of `spawn_output` children that are ready:
        // read and write them; children done are queued.
        self.pump_outputs(ctx);
        // 3. Grace periods that ran out: SIGKILL, now that the reap has
        // removed every child that already died.
        self.fire_deadlines(ctx);
        // 4. Callbacks, after all bookkeeping.
        self.deliver(ctx);
        self.release_idle_handler();
        reaped
    }

    /// `Mainloop` mode: the application reaped `pid` itself and reports its
    /// status (libxl's `libxl_childproc_reaped`). If `pid` is one of ours, its
    /// death callback runs now, with `ctx`.
    ///
    /// ```
    /// use evchild::{Error, Hooks, Pid, Reactor, SigchldOwner};
    /// use std::os::unix::process::ExitStatusExt;
    /// let mut children = Reactor::<()>::new(Hooks::new(SigchldOwner::Mainloop))?;
    /// // A pid the reactor did not start is the application's business:
    /// let status = std::process::ExitStatus::from_raw(0);
    /// assert!(matches!(
    ///     children.reaped(&mut (), Pid::from_raw(1), status),
    ///     Err(Error::UnknownChild { .. })
    /// ));
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Nothing changed on error.
    /// * [`Error::UnknownChild`] if `pid` is not a registered child: the
    ///   status is the application's.
    /// * [`Error::WrongMode`] outside `Mainloop` mode (evchild reaps its own
    ///   children there; the application must not).
    /// * [`Error::ForkedChild`] in a forked child.
    pub fn reaped(&mut self, ctx: &mut C, pid: Pid, status: ExitStatus) -> Result<()> {
        self.reaped_with_usage(ctx, pid, status, None)
    }

    /// [`reaped`](Reactor::reaped), with the resource usage the application
    /// got from its own `wait4(2)` (or `waitid(2)`), which the death
    /// callback then finds in [`Exit::usage`].
    ///
    /// ```no_run
    /// # use evchild::{Hooks, Pid, Reactor, SigchldOwner};
    /// # use std::os::unix::process::ExitStatusExt;
    /// # let mut children = Reactor::<()>::new(Hooks::new(SigchldOwner::Mainloop))?;
    /// let mut status = 0;
    /// // SAFETY: all-zero is a valid `rusage`; wait4 fills it in.
    /// let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    /// // SAFETY: valid out-pointers for the call.
    /// let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
    /// if pid > 0 {
    ///     let status = std::process::ExitStatus::from_raw(status);
    ///     let _ = children.reaped_with_usage(&mut (), Pid::from_raw(pid), status, Some(usage.into()));
    /// }
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`reaped`](Reactor::reaped).
    pub fn reaped_with_usage(
        &mut self,
        ctx: &mut C,
        pid: Pid,
        status: ExitStatus,
        usage: Option<crate::ResourceUsage>,
    ) -> Result<()> {
        self.check_mainloop("reaped")?;
        let entry = self
            .children
            .remove(pid)
            .ok_or(Error::UnknownChild { pid })?;
        self.stats.reaped += 1;
        let id = self.id(pid, entry.serial);
        self.watcher.unwatch(entry.watch);
        crate::process::routes::release(id);
        self.pending.push_back(Pending::Death(
            entry.on_death,
            Exit::reaped(id, status.into_raw(), usage),
        ));
        self.deliver(ctx);
        Ok(())
    }

    /// `Mainloop` mode: the application saw `SIGCHLD` and asks evchild to
    /// reap its own children (libxl's `libxl_childproc_sigchld_occurred`).
    /// One `waitid(P_PID, WNOHANG | WNOWAIT)` probe per registered child,
    /// and a reaping `waitid` for each that died; never another pid.
    /// Callbacks run now, with `ctx`.
    ///
    /// # Errors
    ///
    /// * [`Error::WrongMode`] outside `Mainloop` mode (there, `dispatch` does
    ///   this).
    /// * [`Error::ForkedChild`] in a forked child.
    /// * [`Error::Io`] if `waitpid` fails unexpectedly (after delivering what
    ///   was reaped before the failure).
    pub fn sigchld_occurred(&mut self, ctx: &mut C) -> Result<()> {
        self.check_mainloop("sigchld_occurred")?;
        let reaped = self.pass(|watcher, table, sys, out| watcher.reap_own(table, sys, out));
        self.deliver(ctx);
        reaped
    }

    fn check_mainloop(&self, call: &'static str) -> Result<()> {
        self.check_process()?;
        if self.mode() == SigchldOwner::Mainloop {
            Ok(())
        } else {
            Err(Error::WrongMode {
                call,
                mode: self.mode(),
                hint: "evchild reaps its own children in this mode: do not wait for them, \
                       call dispatch when the reactor is readable",
            })
        }
    }

    /// Runs reaping passes (chosen by `run`, through the watcher) over the
    /// table with the real system calls (counted in `Stats::wait_calls`),
    /// queueing each outcome for `deliver`.
    fn pass(
        &mut self,
        run: impl FnOnce(
            &mut Watcher,
            &mut ChildTable<Entry<C>>,
            &mut SysReap,
            &mut dyn FnMut(Reaped<Entry<C>>),
        ) -> Result<()>,
    ) -> Result<()> {
        let Reactor {
            children,
            pending,
            stats,
            number,
            watcher,
            unwatched,
            ..
        } = self;
        let mut sys = SysReap::default();
        let mut changes = Vec::new();
        let mode = watcher.mode();
        let mut out = |r| queue(pending, stats, *number, mode, unwatched, &mut changes, r);
        let result = run(watcher, children, &mut sys, &mut out);
        for watch in unwatched.drain(..) {
            watcher.unwatch(watch);
        }
        stats.wait_calls += sys.calls;
        for (pid, state) in changes {
            if let Some(entry) = self.children.get(pid) {
                let id = self.id(pid, entry.serial);
                self.pending.push_back(Pending::State(id, state));
            }
        }
        result
    }

    /// Runs queued callbacks until the queue is empty. A panicking callback
    /// propagates, after making sure the rest will be delivered.
    pub(crate) fn deliver(&mut self, ctx: &mut C) {
        while let Some(next) = self.pending.pop_front() {
            let result = panic::catch_unwind(AssertUnwindSafe(|| match next {
                Pending::Death(on_death, exit) => on_death(ctx, self, exit),
                Pending::State(id, state) => self.state_changed(ctx, id, state),
                Pending::Stranger(pid, status) => self.stranger(ctx, pid, status),
            }));
            if let Err(panic) = result {
                if !self.pending.is_empty() {
                    self.watcher.wake();
                }
                panic::resume_unwind(panic);
            }
        }
    }

    /// Runs a child's stop/continue callback, if the child is still there
    /// (the callback is taken out while it runs, so it may use the reactor
    /// freely; a panicking one is not put back).
    fn state_changed(&mut self, ctx: &mut C, id: ChildId, state: ChildState) {
        let entry = self
            .children
            .get_mut(id.pid)
            .filter(|e| e.serial == id.serial);
        let Some(mut on_state) = entry.and_then(|e| e.on_state.take()) else {
            return;
        };
        on_state(ctx, self, id, state);
        if let Some(entry) = self.children.get_mut(id.pid) {
            if entry.serial == id.serial && entry.on_state.is_none() {
                entry.on_state = Some(on_state);
            }
        }
    }

    /// Hands a child we did not start to the unknown-child hook.
    fn stranger(&mut self, ctx: &mut C, pid: Pid, status: reap::Waited) {
        let status = ExitStatus::from_raw(status.raw);
        let claim = match self.unknown_child.as_mut() {
            Some(hook) => hook(ctx, pid, status),
            None => Claim::Declined,
        };
        match claim {
            Claim::Claimed => self.stats.unknown_claimed += 1,
            Claim::Declined => {
                self.stats.unknown_unclaimed += 1;
                #[cfg(feature = "log")]
                log::warn!("evchild: reaped child {pid} that nobody claimed ({status})");
            }
        }
    }

    /// In `Library` mode the handler is needed only while some child is
    /// watched through it.
    pub(crate) fn release_idle_handler(&mut self) {
        let Reactor {
            watcher, children, ..
        } = self;
        watcher.release_idle(children.len(), |pid| children.get(pid).is_some());
    }
}

fn queue<C>(
    pending: &mut VecDeque<Pending<C>>,
    stats: &mut Stats,
    reactor: u32,
    mode: SigchldOwner,
    unwatch: &mut Vec<Watch>,
    changes: &mut Vec<(Pid, ChildState)>,
    reaped: Reaped<Entry<C>>,
) {
    let id = |pid, serial| ChildId {
        pid,
        reactor,
        serial,
    };
    match reaped {
        Reaped::Died(pid, status, entry) => {
            stats.reaped += 1;
            let id = id(pid, entry.serial);
            let exit = Exit::reaped(id, status.raw, status.usage);
            unwatch.push(entry.watch);
            routes::release(id);
            pending.push_back(Pending::Death(entry.on_death, exit));
        }
        Reaped::Lost(pid, entry) => {
            // Another reaper took it. If that was a reap-all reactor of
            // this process, it routed the status here. (The reap-all
            // reactor itself has nobody to route to it, and must not wait
            // for its own pass.)
            let id = id(pid, entry.serial);
            let routed = match mode {
                SigchldOwner::LibraryAlways => {
                    routes::release(id);
                    None
                }
                _ => routes::collect(id),
            };
            let exit = match routed {
                Some(status) => {
                    stats.reaped += 1;
                    Exit::reaped(id, status.raw, status.usage)
                }
                None => {
                    stats.lost += 1;
                    Exit::lost(id)
                }
            };
            unwatch.push(entry.watch);
            pending.push_back(Pending::Death(entry.on_death, exit));
        }
        Reaped::Stranger(pid, status) => pending.push_back(Pending::Stranger(pid, status)),
        // Queued after the pass, with the child's id (it is still
        // registered).
        Reaped::Stopped(pid, signal) => changes.push((pid, ChildState::Stopped(signal))),
        Reaped::Continued(pid) => changes.push((pid, ChildState::Continued)),
    }
}
