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

use crate::reactor::{Entry, Pending};
use crate::reap::{self, Reaped};
use crate::sys::SysReap;
use crate::table::ChildTable;
use crate::{
    Backend, ChildId, ChildState, Claim, Error, Exit, Pid, Reactor, Result, SigchldOwner, Stats,
};

impl<C> Reactor<C> {
    /// Does what the wake-up asked for: reaps the children that died and
    /// runs their death callbacks (and, in `LibraryAlways` mode, the
    /// unknown-child hook), with `ctx`. Call it when the reactor's descriptor
    /// is readable; calling it at other times is harmless.
    ///
    /// In order:
    /// 1. Empty the wake pipe, *before* reaping: a `SIGCHLD` that lands during
    ///    the reap writes a new byte, so the loop wakes again.
    /// 2. Reap: `Library`, one `waitpid(pid, WNOHANG)` per registered child,
    ///    never another pid; `LibraryAlways`, `waitpid(-1, WNOHANG)` until
    ///    nothing is left; `Mainloop`, nothing (the application reaps).
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
        // 1. Drain first (see above).
        let drained = self
            .pipe
            .drain()
            .map_err(|e| Error::io("read(wake pipe)", e));
        self.stats.dispatches += 1;
        // 2-3. Reap; outcomes leave the table and join the queue.
        let reaped = match self.mode {
            SigchldOwner::Library if !self.children.is_empty() => match self.backend {
                Backend::Pidfd => self.reap_ready(),
                Backend::Peek => self.reap_peeked(),
                _ => self.reap_own(),
            },
            SigchldOwner::LibraryAlways => self.reap_everything(),
            _ => Ok(()),
        };
        // Stop/continue reports, for the children that asked.
        let reaped = reaped.and_then(|()| self.reap_states());
        // 4. Grace periods that ran out: SIGKILL, now that the reap has
        // removed every child that already died.
        self.fire_deadlines();
        // 5. Callbacks, after all bookkeeping.
        self.deliver(ctx);
        self.release_idle_handler();
        drained?;
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
        self.check_mainloop("reaped")?;
        let entry = self
            .children
            .remove(pid)
            .ok_or(Error::UnknownChild { pid })?;
        self.stats.reaped += 1;
        let id = self.id(pid, entry.serial);
        self.pending.push_back(Pending::Death(
            entry.on_death,
            Exit::reaped(id, status.into_raw(), None),
        ));
        self.deliver(ctx);
        Ok(())
    }

    /// `Mainloop` mode: the application saw `SIGCHLD` and asks evchild to
    /// reap its own children (libxl's `libxl_childproc_sigchld_occurred`).
    /// One `waitpid(pid, WNOHANG)` per registered child; never another pid.
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
        let reaped = self.reap_own();
        self.deliver(ctx);
        reaped
    }

    fn check_mainloop(&self, call: &'static str) -> Result<()> {
        self.check_process()?;
        if self.mode == SigchldOwner::Mainloop {
            Ok(())
        } else {
            Err(Error::WrongMode {
                call,
                mode: self.mode,
                hint: "evchild reaps its own children in this mode: do not wait for them, \
                       call dispatch when the reactor is readable",
            })
        }
    }

    /// Runs one reaping pass of `reap.rs` over the table with the real
    /// system calls, queueing each outcome for `deliver`.
    fn pass(
        &mut self,
        call: &'static str,
        run: impl FnOnce(
            &mut ChildTable<Entry<C>>,
            &mut Vec<(Pid, Option<reap::Waited>)>,
            &mut dyn FnMut(Reaped<Entry<C>>),
        ) -> std::io::Result<()>,
    ) -> Result<()> {
        let Reactor {
            children,
            scratch,
            pending,
            stats,
            number,
            unpolled,
            ..
        } = self;
        let mut out = |r| queue(pending, stats, *number, unpolled, r);
        run(children, scratch, &mut out).map_err(|e| Error::io(call, e))
    }

    fn reap_own(&mut self) -> Result<()> {
        self.pass("waitpid", |table, scratch, out| {
            reap::reap_own(&mut SysReap, table, scratch, out)
        })
    }

    /// Pidfd backend: the children whose pidfds are ready, plus, if some
    /// child has no pidfd (and so the handler is installed), a scan.
    fn reap_ready(&mut self) -> Result<()> {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        let polled = self
            .poller
            .ready(&mut ready)
            .map_err(|e| Error::io("epoll_wait", e));
        let reaped = self.pass("waitpid", |table, _, out| {
            reap::reap_listed(&mut SysReap, table, &ready, out)
        });
        self.ready = ready;
        polled?;
        reaped?;
        if self.unpolled > 0 {
            self.reap_own()?;
        }
        Ok(())
    }

    /// Stop/continue reports and deaths of the children that asked for
    /// state reports, found by one `waitpid(WUNTRACED | WCONTINUED)` each.
    fn reap_states(&mut self) -> Result<()> {
        if self.stateful.is_empty() || self.mode == SigchldOwner::Mainloop {
            return Ok(());
        }
        let mut changes = Vec::new();
        let Reactor {
            children,
            pending,
            stats,
            number,
            stateful,
            unpolled,
            ..
        } = self;
        let reaped = reap::reap_states(&mut SysReap, children, stateful, |r| match r {
            Reaped::Stopped(pid, signal) => changes.push((pid, ChildState::Stopped(signal))),
            Reaped::Continued(pid) => changes.push((pid, ChildState::Continued)),
            other => queue(pending, stats, *number, unpolled, other),
        })
        .map_err(|e| Error::io("waitpid", e));
        for (pid, state) in changes {
            if let Some(entry) = self.children.get(pid) {
                let id = self.id(pid, entry.serial);
                self.pending.push_back(Pending::State(id, state));
            }
        }
        reaped
    }

    fn reap_peeked(&mut self) -> Result<()> {
        self.pass("waitpid", |table, scratch, out| {
            reap::reap_peek(&mut SysReap, table, scratch, out)
        })
    }

    fn reap_everything(&mut self) -> Result<()> {
        self.pass("waitpid(-1)", |table, _, out| {
            reap::reap_all(&mut SysReap, table, out)
        })
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
                    self.pipe.wake();
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
    fn stranger(&mut self, ctx: &mut C, pid: Pid, status: libc::c_int) {
        let status = ExitStatus::from_raw(status);
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

    /// In `Library` mode the handler is needed only while children live,
    /// and with the pidfd backend only while some child has no pidfd.
    fn release_idle_handler(&mut self) {
        if self.mode != SigchldOwner::Library || self.registration.is_none() {
            return;
        }
        let needed = match self.backend {
            Backend::Pidfd => {
                self.unpolled > 0
                    || self
                        .stateful
                        .iter()
                        .any(|&p| self.children.get(p).is_some())
            }
            _ => !self.children.is_empty(),
        };
        if !needed {
            self.registration = None;
        }
    }
}

fn queue<C>(
    pending: &mut VecDeque<Pending<C>>,
    stats: &mut Stats,
    reactor: u32,
    unpolled: &mut usize,
    reaped: Reaped<Entry<C>>,
) {
    let id = |pid, entry: &Entry<C>| ChildId {
        pid,
        reactor,
        serial: entry.serial,
    };
    match reaped {
        Reaped::Died(pid, status, entry) => {
            stats.reaped += 1;
            *unpolled -= usize::from(entry.fallback);
            let exit = Exit::reaped(id(pid, &entry), status.raw, status.usage);
            pending.push_back(Pending::Death(entry.on_death, exit));
        }
        Reaped::Lost(pid, entry) => {
            stats.lost += 1;
            *unpolled -= usize::from(entry.fallback);
            let exit = Exit::lost(id(pid, &entry));
            pending.push_back(Pending::Death(entry.on_death, exit));
        }
        Reaped::Stranger(pid, status) => pending.push_back(Pending::Stranger(pid, status.raw)),
        // Only `reap_states` reports these, and it does not come through here.
        Reaped::Stopped(..) | Reaped::Continued(..) => {}
    }
}
