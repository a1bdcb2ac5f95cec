//! Per-child calls outside the death callback: asking how a child is
//! (`try_wait`), waiting for one (`wait_for`), and letting go of one
//! (`forget`).

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::reactor::Pending;
use crate::reap::{Reap, Target};
use crate::sys::SysReap;
use crate::{ChildId, Error, Outcome, Pid, Reactor, Result};

/// How a child is, from [`Reactor::try_wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildStatus {
    /// Alive (stopped children included).
    Running,
    /// Dead, and its death callback has not run yet: the next `dispatch`
    /// runs it with this outcome ([`Outcome::Reaped`] with the status, or
    /// [`Outcome::Lost`] if other code reaped it).
    Dead(Outcome),
    /// `Mainloop` mode: reaped by the application, which has not reported
    /// it with [`reaped`](Reactor::reaped) yet; the callback runs then,
    /// with the status the application passes.
    AwaitingReport,
    /// A [`spawn_output`](Reactor::spawn_output) child that has died and
    /// been reaped (this is its outcome), whose output is still being read:
    /// its `on_done` runs once its pipes reach end of file or the drain
    /// time runs out ([`OutputOptions::drain_after_exit`](crate::OutputOptions::drain_after_exit)).
    ReadingOutput(Outcome),
    /// Its death callback (for a `spawn_output` child, its `on_done`) has
    /// run.
    Reported,
}

/// A child the reactor let go of, from [`Reactor::forget`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Forgotten {
    /// The child's pid: the caller now waits for it.
    pub pid: Pid,
    /// The child's pidfd, if the reactor watched it through one (out of the
    /// reactor's epoll set now): wait with `waitid(P_PIDFD)` to be sure to
    /// reap this very child.
    pub pidfd: Option<OwnedFd>,
}

impl<C> Reactor<C> {
    /// Whether `id` is running, dead with its report pending, dead with its
    /// output still being read (a `spawn_output` child), or reported,
    /// like tokio's `Child::try_wait`, but **it never reaps**: the status
    /// comes from a `waitid(WNOWAIT)` probe (by pidfd where the child has
    /// one; a child without one that a `LibraryAlways` reactor has already
    /// reaped is not probed by pid: its routed status is the answer), or
    /// from the report already queued, and the death callback
    /// still runs once, in `dispatch`, with the same status.
    ///
    /// # Errors
    ///
    /// * [`Error::ForeignId`] for an id of another reactor.
    /// * [`Error::ForkedChild`] in a forked child.
    /// * [`Error::Io`] if the probe fails unexpectedly.
    pub fn try_wait(&mut self, id: ChildId) -> Result<ChildStatus> {
        self.check_process()?;
        if id.reactor != self.number {
            return Err(Error::ForeignId { id });
        }
        if let Some(entry) = self.entry(id) {
            // Reaped by a reap-all reactor already: its pid may name another
            // child now, so the routed status, not a probe by pid.
            if let Some(status) = self.watcher.reaped_elsewhere(id, &entry.watch) {
                return Ok(ChildStatus::Dead(Outcome::Reaped(ExitStatus::from_raw(
                    status.raw,
                ))));
            }
            let target = Target {
                pid: id.pid,
                pidfd: entry.watch.pidfd(),
            };
            let mut sys = SysReap::default();
            let probed = loop {
                match sys.probe(target) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            self.stats.wait_calls += sys.calls;
            return match probed {
                Ok(Some(status)) if status.is_death() => Ok(ChildStatus::Dead(Outcome::Reaped(
                    ExitStatus::from_raw(status.raw),
                ))),
                Ok(_) => Ok(ChildStatus::Running),
                // Gone: a reap-all reactor may have routed its status here
                // (the callback gets it), or, in `Mainloop` mode, the
                // application reaped it and will report it.
                Err(nix::errno::Errno::ECHILD) => {
                    Ok(match crate::process::routes::peek_routed(id) {
                        Some(status) => {
                            ChildStatus::Dead(Outcome::Reaped(ExitStatus::from_raw(status.raw)))
                        }
                        None if self.mode() == crate::SigchldOwner::Mainloop => {
                            ChildStatus::AwaitingReport
                        }
                        None => ChildStatus::Dead(Outcome::Lost),
                    })
                }
                Err(e) => Err(Error::io("waitid(WNOWAIT)", e)),
            };
        }
        let reading = self
            .outputs
            .find(id)
            .and_then(|job| self.outputs.jobs[job].exit);
        Ok(match (self.queued(id), reading) {
            (Some(outcome), _) => ChildStatus::Dead(outcome),
            (None, Some(exit)) => ChildStatus::ReadingOutput(exit.outcome),
            (None, None) => ChildStatus::Reported,
        })
    }

    /// The outcome of `id` if its report is queued, not yet delivered.
    fn queued(&self, id: ChildId) -> Option<Outcome> {
        self.pending.iter().find_map(|pending| match pending {
            Pending::Death(_, exit) if exit.id == id => Some(exit.outcome),
            _ => None,
        })
    }

    /// Blocks until `id`'s death callback has run (for a
    /// [`spawn_output`](Reactor::spawn_output) child, its `on_done`, which
    /// may come after the death), or `timeout` has passed (`None`: no
    /// limit), dispatching meanwhile: the other callbacks that fall due run
    /// too, with `ctx`, and `terminate` deadlines fire. For shutdown paths
    /// and tests; a loop should not block in it.
    ///
    /// Returns `true` once the callback has run (at once if it already had),
    /// `false` on time-out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evchild::{Hooks, Reactor};
    /// let mut children = Reactor::<Option<i32>>::new(Hooks::default())?;
    /// let child = children.spawn(
    ///     std::process::Command::new("sh").args(["-c", "exit 3"]),
    ///     |code, _, exit| *code = exit.status().and_then(|s| s.code()),
    /// )?;
    /// let mut code = None;
    /// assert!(children.wait_for(&mut code, child.id, Some(Duration::from_secs(10)))?);
    /// assert_eq!(code, Some(3));
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`dispatch`](Reactor::dispatch) (a callback's panic
    /// propagates too), [`Error::ForeignId`] for an id of another
    /// reactor, and [`Error::WrongMode`] in `Mainloop` mode (the
    /// application reaps there: nothing in `wait_for` could).
    pub fn wait_for(
        &mut self,
        ctx: &mut C,
        id: ChildId,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        self.check_process()?;
        if id.reactor != self.number {
            return Err(Error::ForeignId { id });
        }
        if self.mode() == crate::SigchldOwner::Mainloop {
            return Err(Error::WrongMode {
                call: "wait_for",
                mode: self.mode(),
                hint: "the application reaps in this mode, so nothing in wait_for could: wait \
                       for the child yourself and report it with reaped",
            });
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let reading = self.outputs.find(id).is_some();
            if !self.contains(id) && self.queued(id).is_none() && !reading {
                return Ok(true);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(false);
            }
            let sleep = match (left, self.timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            crate::sys::wait_readable(self.watcher.fd(), sleep)
                .map_err(|e| Error::io("poll", e))?;
            self.dispatch(ctx)?;
        }
    }

    /// Stops watching a live child without reaping it, and hands it back
    /// (GLib's `g_source_remove` on a child watch, libuv's closing of a
    /// process handle): its death callback never runs (it is dropped now),
    /// its `terminate` deadlines are cancelled, its pidfd leaves the
    /// reactor's epoll set and is returned, and from now on the caller
    /// waits for it (`waitpid(pid)`, or `waitid(P_PIDFD)` on the pidfd).
    ///
    /// # Errors
    ///
    /// Nothing changed on error.
    /// * As for [`kill`](Reactor::kill): the child must be live and ours
    ///   ([`Error::AlreadyReaped`] once its death has been reaped, even if
    ///   the callback has not run yet).
    pub fn forget(&mut self, id: ChildId) -> Result<Forgotten> {
        self.check_live(id)?;
        // Reaped by a reap-all reactor already (its status on the way
        // here): too late to let go of; the next `dispatch` reports it.
        if !crate::process::routes::release_unless_routed(id) {
            return Err(Error::AlreadyReaped { pid: id.pid });
        }
        let entry = self
            .children
            .remove(id.pid)
            .ok_or(Error::AlreadyReaped { pid: id.pid })?;
        self.deadlines.remove(id);
        self.watcher.arm(self.deadlines.next());
        let pidfd = self.watcher.unwatch_keep_pidfd(entry.watch);
        drop(entry.on_death);
        self.forget_output(id);
        self.release_idle_handler();
        Ok(Forgotten { pid: id.pid, pidfd })
    }
}
