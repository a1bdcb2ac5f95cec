//! How a reactor learns of its children's deaths and acts on them: the one
//! place that decides, per child, how it is watched (a pidfd in the
//! reactor's epoll set, or `SIGCHLD` through the wake pipe, and stop
//! reports), which reaping passes a wake-up calls for ([`Watcher::reap`]),
//! how a child is named to the wait calls and to signals (by pidfd where it
//! has one; never by pid once a reap-all reactor has reaped it), and when
//! the reactor needs the process-wide handler ([`Watcher::before_start`]).
//!
//! The reactor, its starts, control calls, `dispatch`, output streams and
//! drop code ask the [`Watcher`]; no other module touches the handler
//! registration, the reap-all token, the routes' claims, the orphan set or
//! the epoll set.
//!
//! * `poller.rs`: the epoll set (the reactor's one descriptor).
//! * `pidfd.rs`: a child's pidfd in that set.
//!
//! # What it costs (not guaranteed: the current situation)
//!
//! | | |
//! |---|---|
//! | descriptor | an epoll set holding the wake pipe, the process's orphan set (nested), with `Pidfd` one pidfd per child, the pipes of `spawn_output` children (tagged epoll data: a stream bit plus a slab key), and from the first `terminate` on a `timerfd` |
//! | wake-up | with `Pidfd`, the pidfds; otherwise one `SIGCHLD` handler per process, installed once, writing to each registered wake pipe (a fixed table of 256 slots, held while the reactor needs the handler) |
//! | a start | one `sigaction(SIGCHLD, NULL)` query (see *Coexistence*; made by the child instead for a `spawn_prepared` start whose reactor needs no handler); with `Pidfd`, `pidfd_open` (not for `spawn_prepared`: its `clone` returns the pidfd) and `EPOLL_CTL_ADD` (one-shot: no `EPOLL_CTL_DEL` at the end, the close takes it out); two uncontended rounds of the process lock (the routes' claim) and one atomic load for the orphan list |
//! | `Library` reaping | see the crate docs' *Backends* |
//! | `LibraryAlways` reaping | `wait4(-1, WNOHANG)` until nothing is left: k+1 calls for k exits; while starts are in flight, a peek and a reap per exit (see `process::routes`) |
//! | orphans | nothing until one dies; then one `waitid` each, by the first reactor to look |
//! | timers | a binary heap of deadlines (`terminate`'s grace periods, `spawn_output`'s time-outs and drain times): O(log n) each; the `timerfd` is set only when the earliest deadline changes |
//! | per wake-up allocation | none in steady state (queues and scratch space are reused); `spawn_output` reads straight into the output buffers, at most 1 MiB per stream per `dispatch` |

pub(crate) mod pidfd;
pub(crate) mod poller;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::sys::epoll::Epoll;

use crate::process::{self, orphans, routes, ReapAllToken, Registration};
use crate::reap::table::ChildTable;
use crate::reap::{self as passes, Reaped, Waited, Watched};
use crate::sys::{self, SysReap, WakePipe};
use crate::watch::pidfd::Polled;
use crate::watch::poller::{Poller, Tag, Woken};
use crate::{Backend, ChildId, Error, Pid, Result, SigchldOwner, Signal};

/// How one registered child is watched.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// The child's pidfd, in the reactor's epoll set: the child's identity
    /// for waits and signals. `None` for a child watched through `SIGCHLD`.
    pidfd: Option<Polled>,
    /// A `Pidfd`-backend child without a pidfd (`pidfd_open` failed), which
    /// needs the handler.
    fallback: bool,
    /// The child asked for stop/continue reports, which need the handler.
    stops: bool,
}

impl Watch {
    pub(crate) fn pidfd(&self) -> Option<RawFd> {
        self.pidfd.as_ref().map(Polled::raw)
    }

    pub(crate) fn pidfd_borrowed(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(Polled::fd)
    }
}

impl Watched for Watch {
    fn pidfd(&self) -> Option<RawFd> {
        Watch::pidfd(self)
    }
}

/// A start in flight, from [`Watcher::start`] to [`Watcher::claim`].
#[derive(Debug)]
pub(crate) struct Starting {
    start: routes::Start,
    generation: u64,
}

impl Starting {
    /// In the child of `Reactor::fork`: leaves the routes alone, and makes
    /// this process a new fork generation if the `pthread_atfork` handler
    /// did not (a `fork_replacement` may bypass it). Async-signal-safe.
    pub(crate) fn in_child(self) {
        if process::fork_generation() == self.generation {
            process::advance_after_fork();
        }
        self.start.forget();
    }
}

/// A reactor's watching machinery; see the module docs.
#[derive(Debug)]
pub(crate) struct Watcher {
    /// The reactor's number (its claims, its routed statuses).
    reactor: u32,
    mode: SigchldOwner,
    /// The `Library`-mode backend (never `Auto`).
    backend: Backend,
    /// Held while some child is watched through `SIGCHLD`, and in
    /// `LibraryAlways` mode always. Dropped before `pipe` is closed.
    registration: Option<Registration>,
    reap_all: Option<ReapAllToken>,
    /// Live children watched through `SIGCHLD` in the `Pidfd` backend.
    fallbacks: usize,
    /// Live children with stop reports.
    stops: usize,
    /// Children with stop reports (possibly stale: pruned by each pass).
    stateful: Vec<Pid>,
    /// Tags of the pidfds `epoll_wait` reported, reused between calls.
    ready: Vec<Tag>,
    /// Tags of pidfds that fired (so are disarmed: one-shot) and whose
    /// children have not been reaped yet: those of this wake-up, and any
    /// that could not be reaped (a zombie another process's tracer holds),
    /// looked at again by every `dispatch`; meanwhile the reactor holds
    /// the `SIGCHLD` handler, whose signal says when the tracer lets go.
    fired: Vec<Tag>,
    /// Strangers of a reap-all pass being routed, reused.
    strangers: Vec<(Pid, Waited)>,
    /// Statuses routed to this reactor, reused.
    routed: Vec<(ChildId, Waited)>,
    /// Probe results of a scan, reused.
    scratch: Vec<(Pid, Option<Waited>)>,
    /// The `terminate` deadline timer, made at the first deadline; closed
    /// (so out of the epoll set) before the set.
    timer: Option<OwnedFd>,
    /// The deadline the timer is set for, if any.
    armed: Option<std::time::Instant>,
    /// The descriptor the loop watches: an epoll set holding `pipe`, the
    /// orphan set, pidfds, output streams and the timer.
    poller: Poller,
    /// The process's orphan set, nested in `poller`.
    orphan_set: Arc<Epoll>,
    pipe: Arc<WakePipe>,
}

impl Watcher {
    pub(crate) fn new(reactor: u32) -> Result<Self> {
        let pipe = Arc::new(sys::wake_pipe().map_err(|e| Error::io("pipe2", e))?);
        let poller = Poller::new(pipe.read_fd()).map_err(|e| Error::io("epoll_create1", e))?;
        let orphan_set = orphans::set().map_err(|e| Error::io("epoll_create1", e))?;
        poller
            .add_orphans(orphan_set.0.as_fd())
            .map_err(|e| Error::io("epoll_ctl", e))?;
        Ok(Watcher {
            reactor,
            mode: SigchldOwner::Library,
            backend: Backend::Scan,
            registration: None,
            reap_all: None,
            fallbacks: 0,
            stops: 0,
            stateful: Vec::new(),
            ready: Vec::new(),
            fired: Vec::new(),
            strangers: Vec::new(),
            routed: Vec::new(),
            scratch: Vec::new(),
            timer: None,
            armed: None,
            poller,
            orphan_set,
            pipe,
        })
    }

    /// Switches to `mode`, with no child registered. Acquires what the new
    /// mode needs first; on error nothing changed.
    pub(crate) fn apply(&mut self, mode: SigchldOwner, backend: Backend) -> Result<()> {
        let always = mode == SigchldOwner::LibraryAlways;
        let token = match (always, self.reap_all.is_some()) {
            (true, false) => Some(ReapAllToken::take(self.reactor, &self.pipe)?),
            _ => None,
        };
        let registration = match (always, self.registration.is_some()) {
            (true, false) => Some(process::register(self.pipe.write_raw())?),
            _ => None,
        };
        if always {
            self.reap_all = self.reap_all.take().or(token);
            self.registration = self.registration.take().or(registration);
            // Children that died before we took over are already waiting:
            // make the first dispatch look for them.
            self.pipe.wake();
        } else {
            // No child is registered, so neither Library nor Mainloop needs
            // the handler now.
            self.reap_all = None;
            self.registration = None;
        }
        self.mode = mode;
        self.backend = match backend {
            Backend::Auto | Backend::Pidfd if process::pidfd_supported() => Backend::Pidfd,
            Backend::Auto | Backend::Pidfd => Backend::Peek,
            other => other,
        };
        self.fallbacks = 0;
        self.stops = 0;
        self.stateful.clear();
        self.fired.clear();
        Ok(())
    }

    pub(crate) fn mode(&self) -> SigchldOwner {
        self.mode
    }

    /// The backend `Library` mode uses; `None` in the other modes.
    pub(crate) fn backend(&self) -> Option<Backend> {
        (self.mode == SigchldOwner::Library).then_some(self.backend)
    }

    /// Whether children are watched (and named) through pidfds.
    pub(crate) fn uses_pidfds(&self) -> bool {
        self.backend() == Some(Backend::Pidfd)
    }

    /// The one rule for when the reactor needs evchild's handler, with
    /// `live` children: always in `LibraryAlways` mode, never in
    /// `Mainloop`; in `Library` mode with a `SIGCHLD` backend while it has
    /// children, and with `Pidfd` while some child has no pidfd or asked
    /// for stop reports, or whose pidfd fired before it could be reaped.
    fn needs_handler(&self, live: usize) -> bool {
        match (self.mode, self.backend) {
            (SigchldOwner::LibraryAlways, _) => true,
            (SigchldOwner::Mainloop, _) => false,
            (_, Backend::Pidfd) => self.fallbacks > 0 || self.stops > 0 || !self.fired.is_empty(),
            _ => live > 0,
        }
    }

    /// Before starting or adopting a child, in every mode: refuses a
    /// `SIGCHLD` disposition that makes the kernel reap children by itself
    /// (and wakes the reactor, since children it already has may have been
    /// reaped that way and are then reported lost by the next dispatch),
    /// and makes sure the handler is there if this reactor's children need
    /// it (reinstalling it after other code reset `SIGCHLD` to `SIG_DFL`).
    /// Returns whether this call acquired the registration, so a failed
    /// start can give it back.
    /// `live`: the children the reactor has now.
    pub(crate) fn before_start(&mut self, live: usize) -> Result<bool> {
        // With the child about to start.
        let needs_handler = self.needs_handler(live + 1);
        let acquire = needs_handler && self.registration.is_none();
        // One disposition query either way: registering makes it too.
        let checked = match acquire {
            true => process::register(self.pipe.write_raw()).map(|r| self.registration = Some(r)),
            false => process::before_start(needs_handler),
        };
        if let Err(e) = checked {
            self.pipe.wake();
            return Err(e);
        }
        Ok(acquire)
    }

    /// [`before_start`](Self::before_start) for a start whose child can
    /// check the `SIGCHLD` disposition itself (a `Prepared` start: its child
    /// reads every disposition anyway, and stops before `execve` if
    /// `SIGCHLD` is ignored or has `SA_NOCLDWAIT`). When this reactor's
    /// children do not need the handler, nothing is asked of the kernel
    /// here, and the second value is `true`: the child must check. When
    /// they do, this is `before_start`, and the second value `false`.
    pub(crate) fn before_start_checked_by_child(&mut self, live: usize) -> Result<(bool, bool)> {
        if self.needs_handler(live + 1) {
            return self.before_start(live).map(|acquired| (acquired, false));
        }
        Ok((false, true))
    }

    /// The child of a start found `SIGCHLD` ignored (or with
    /// `SA_NOCLDWAIT`) and stopped: the error `before_start` would have
    /// returned, with the same wake-up (children the reactor already has
    /// may have been reaped by the kernel: the next dispatch reports them
    /// lost).
    pub(crate) fn refused_by_child(&self, ignored: bool) -> Error {
        self.pipe.wake();
        process::refusal(ignored)
    }

    /// Undoes [`before_start`](Self::before_start) after a start failed.
    pub(crate) fn abort_start(&mut self, acquired: bool) {
        if acquired {
            self.registration = None;
        }
    }

    /// Watches a child that has just started (or is being adopted), to be
    /// registered as `serial`, and returns how, with `pidfd` the child's
    /// pidfd if the caller has one (an orphan's, taken back; or the one
    /// `clone` gave). With the `Pidfd` backend that opens its
    /// pidfd if there is none; if that fails (`EMFILE`), the child is
    /// watched through `SIGCHLD` instead, and if even the handler cannot be
    /// had, the error is returned: the caller must not keep a child nothing
    /// would report.
    pub(crate) fn watch(&mut self, pid: Pid, serial: u64, pidfd: Option<OwnedFd>) -> Result<Watch> {
        if !self.uses_pidfds() {
            return Ok(Watch::default());
        }
        let opened = match pidfd {
            Some(fd) => Ok(fd),
            None => sys::pidfd_open(pid),
        };
        match opened.and_then(|fd| self.poller.add(pid, serial, fd)) {
            Ok(fd) => Ok(Watch {
                pidfd: Some(fd),
                ..Watch::default()
            }),
            Err(_e) => {
                #[cfg(feature = "log")]
                log::warn!("evchild: no pidfd for child {pid} ({_e}); watching it through SIGCHLD");
                self.hold_handler()?;
                self.fallbacks += 1;
                // It may have died before the handler was there: look now.
                self.pipe.wake();
                Ok(Watch {
                    fallback: true,
                    ..Watch::default()
                })
            }
        }
    }

    /// A child is about to be started (or adopted): counted as a start in
    /// flight in the routes (a reap-all reactor leaves it alone until it is
    /// claimed or given up; dropping the [`Starting`] gives it up).
    pub(crate) fn start(&self) -> Starting {
        Starting {
            start: routes::Start::begin(),
            generation: process::fork_generation(),
        }
    }

    /// A child has been registered as `id`: claim its pid in the routes
    /// (so a reap-all reactor hands its status here) and end its start.
    pub(crate) fn claim(&self, starting: Starting, id: ChildId) {
        starting.start.finish(id, &self.pipe);
    }

    /// A child has left the table: forget how it was watched (closing its
    /// pidfd, which takes it out of the epoll set: see `pidfd.rs`). The last child with
    /// stop reports gone, the handler stops asking for them.
    pub(crate) fn unwatch(&mut self, watch: Watch) {
        self.fallbacks -= usize::from(watch.fallback);
        if watch.stops {
            self.stops -= 1;
            if self.stops == 0 {
                if let Some(registration) = self.registration.as_mut() {
                    registration.drop_stops();
                }
            }
        }
    }

    /// [`unwatch`](Self::unwatch) for a child the caller takes over: its
    /// pidfd, out of the epoll set, is handed back.
    pub(crate) fn unwatch_keep_pidfd(&mut self, mut watch: Watch) -> Option<OwnedFd> {
        let pidfd = watch.pidfd.take().map(Polled::into_fd);
        self.unwatch(watch);
        pidfd
    }

    /// A child left running by a dropped reactor: its pidfd for the orphan
    /// list, the reactor's own, or one opened now wherever the system has
    /// pidfds (it may die long after, and a pid alone could by then name
    /// another child of the process, which the orphan reaper would take).
    pub(crate) fn orphan(&mut self, pid: Pid, watch: Watch) -> (Pid, Option<OwnedFd>) {
        let pidfd = self
            .unwatch_keep_pidfd(watch)
            .or_else(|| process::pidfd_supported().then(|| sys::pidfd_open(pid).ok())?);
        (pid, pidfd)
    }

    /// Stop/continue reports for `pid`: they come through `SIGCHLD`
    /// whatever the backend, so this takes the handler (without
    /// `SA_NOCLDSTOP`).
    pub(crate) fn want_stops(&mut self, pid: Pid, watch: &mut Watch) -> Result<()> {
        self.hold_handler()?;
        if let Some(registration) = self.registration.as_mut() {
            registration.want_stops();
        }
        if !watch.stops {
            watch.stops = true;
            self.stops += 1;
            self.stateful.push(pid);
        }
        // A stop before now sent no signal (SA_NOCLDSTOP) but is still
        // waitable: look at once.
        self.pipe.wake();
        Ok(())
    }

    /// Sends `signal` to the child `id`, the one rule for signalling a
    /// child: through its pidfd where it has one (`ESRCH` then means it has
    /// been reaped, by someone else: never another process); otherwise by
    /// pid, unless a reap-all reactor has already reaped it (its status
    /// routed here, not yet collected: [`Error::AlreadyReaped`]).
    pub(crate) fn signal(&self, id: ChildId, watch: &Watch, signal: Signal) -> Result<()> {
        if let Some(pidfd) = &watch.pidfd {
            return sys::pidfd_send_signal(pidfd.fd(), signal.as_raw())
                .map_err(|e| Error::io("pidfd_send_signal", e));
        }
        if self.reaped_elsewhere(id, watch).is_some() {
            return Err(Error::AlreadyReaped { pid: id.pid });
        }
        sys::kill(id.pid, signal.as_raw()).map_err(|e| Error::io("kill", e))
    }

    /// The one rule before acting on a child by pid: a child without a
    /// pidfd that a reap-all reactor has already reaped (its status routed
    /// here, not yet collected, or a pass running that may have) has a pid
    /// that may now be another process's, or another child's. Its routed
    /// status, if so. (A child with a pidfd is named by it: `None`.)
    pub(crate) fn reaped_elsewhere(&self, id: ChildId, watch: &Watch) -> Option<Waited> {
        match watch.pidfd {
            Some(_) => None,
            None => routes::peek_routed(id),
        }
    }

    /// Sends `signal` to the process group the child `id` leads: first
    /// [`signal`](Self::signal)'s checks (with the null signal: the leader
    /// is still ours and unreaped, so its pid still names the group), then
    /// `killpg`.
    pub(crate) fn signal_group(&self, id: ChildId, watch: &Watch, signal: Signal) -> Result<()> {
        self.signal(id, watch, Signal::CHECK)?;
        if sys::getpgid(id.pid).map_err(|e| Error::io("getpgid", e))? != id.pid {
            return Err(Error::NotAGroupLeader { pid: id.pid });
        }
        sys::kill_group(id.pid, signal.as_raw()).map_err(|e| Error::io("killpg", e))
    }

    /// What needs doing, found without any wait call: one `epoll_wait`
    /// with no timeout on the reactor's set. Drains the wake pipe if it had
    /// bytes (before any reaping: a `SIGCHLD` that lands during the reap
    /// writes a new byte, so the loop wakes again), notes the pids of ready
    /// pidfds, and leaves the keys of ready output streams in `streams`.
    pub(crate) fn collect(&mut self, streams: &mut Vec<usize>) -> io::Result<Woken> {
        streams.clear();
        // The pidfds reported are disarmed (one-shot): they go to `fired`
        // at once, so an error below cannot lose their only report.
        let woken = self.poller.ready(&mut self.ready, streams);
        self.fired.append(&mut self.ready);
        let woken = woken?;
        if woken.pipe {
            self.pipe.drain()?;
        }
        if woken.timer {
            if let Some(timer) = &self.timer {
                sys::timer_drain(timer.as_fd());
            }
            // The expiry is spent: `arm` sets the next one.
            self.armed = None;
        }
        Ok(woken)
    }

    /// The reaping a wake-up calls for: the strategy, decided here alone.
    /// Each outcome goes to `out` after the child left `table`; the wait
    /// calls made are counted in `sys`.
    ///
    /// 1. Orphans of dropped reactors that died (the orphan set was ready;
    ///    or, for orphans without a pidfd, a `SIGCHLD` woke us).
    /// 2. Children whose pidfds are ready: one `waitid(P_PIDFD)` each.
    /// 3. On a pipe wake-up: statuses routed here by a reap-all reactor
    ///    (every mode but `LibraryAlways`), then the mode's pass over the
    ///    children without a pidfd (`Peek`, `Scan`, the `Pidfd` backend's
    ///    fallbacks; `LibraryAlways` reaps everything and routes; `Mainloop`
    ///    reaps nothing: the application does), then stop reports.
    ///
    /// Nothing woke us: no wait call at all.
    pub(crate) fn reap<T: Watched>(
        &mut self,
        woken: Woken,
        table: &mut ChildTable<T>,
        sys: &mut SysReap,
        out: &mut dyn FnMut(Reaped<T>),
    ) -> Result<()> {
        if woken.orphans && orphans::reap_ready(&self.orphan_set, sys) {
            // More may be ready than one batch: look again soon.
            self.pipe.wake();
        }
        if woken.pipe {
            orphans::reap_signalled(sys);
        }
        if !self.fired.is_empty() {
            self.reap_fired(table, sys, out)?;
        }
        if !woken.pipe {
            return Ok(());
        }
        if self.mode != SigchldOwner::LibraryAlways {
            self.take_routed(table, out);
        }
        match self.backend() {
            None if self.mode == SigchldOwner::LibraryAlways => {
                self.reap_everything(table, sys, out)?
            }
            None => return Ok(()),
            _ if table.is_empty() => {}
            Some(Backend::Peek) => passes::reap_peek(sys, table, &mut self.scratch, &mut *out)
                .map_err(|e| Error::io("waitid", e))?,
            Some(_) if self.scans() => self.reap_own(table, sys, out)?,
            Some(_) => {}
        }
        self.reap_states(table, sys, out)
    }

    /// Reaps the children whose pidfds fired, now or before: one
    /// `waitid(P_PIDFD)` each. A report whose tag names no registered child
    /// with a pidfd (a pidfd closed since, whose copy a forked child holds)
    /// is dropped. A child that fired but cannot be reaped yet (a zombie
    /// another process's tracer holds: the kernel notifies the pidfd at the
    /// exit, and again when the tracer lets go, but the entry is disarmed)
    /// is kept in `fired`, looked at by every pass, and the reactor takes
    /// the `SIGCHLD` handler for it: the tracer's letting go sends this
    /// process a `SIGCHLD`. If the handler cannot be had, the child is
    /// still looked at by every `dispatch`.
    fn reap_fired<T: Watched>(
        &mut self,
        table: &mut ChildTable<T>,
        sys: &mut SysReap,
        out: &mut dyn FnMut(Reaped<T>),
    ) -> Result<()> {
        let current = |table: &ChildTable<T>, tag: &Tag| {
            table
                .get(tag.pid)
                .is_some_and(|v| v.pidfd().is_some() && Tag::of(tag.pid, v.serial()) == *tag)
        };
        self.fired.retain(|tag| current(table, tag));
        let pids = self.fired.iter().map(|tag| tag.pid);
        let reaped = passes::reap_listed(sys, table, pids, &mut *out)
            .map_err(|e| Error::io("waitid(P_PIDFD)", e));
        self.fired.retain(|tag| current(table, tag));
        // Let go before the handler was there: look again.
        if !self.fired.is_empty() && self.hold_handler().is_ok_and(|acquired| acquired) {
            self.pipe.wake();
        }
        reaped
    }

    /// Takes the handler registration if the reactor does not hold it yet;
    /// whether this call took it.
    fn hold_handler(&mut self) -> Result<bool> {
        if self.registration.is_some() {
            return Ok(false);
        }
        self.registration = Some(process::register(self.pipe.write_raw())?);
        Ok(true)
    }

    /// One probe per child without a pidfd (`Scan`, the `Pidfd` backend's
    /// fallbacks, `Mainloop`'s `sigchld_occurred`).
    pub(crate) fn reap_own<T: Watched>(
        &mut self,
        table: &mut ChildTable<T>,
        sys: &mut SysReap,
        out: &mut dyn FnMut(Reaped<T>),
    ) -> Result<()> {
        passes::reap_scan(sys, table, &mut self.scratch, out).map_err(|e| Error::io("waitid", e))
    }

    /// The drop policy's final reaping, by pidfd where there is one.
    pub(crate) fn reap_for_drop<T: Watched>(&mut self, table: &mut ChildTable<T>) {
        let mut sys = SysReap::default();
        let _ = passes::reap_scan_all(&mut sys, table, &mut self.scratch, drop);
    }

    /// Statuses a reap-all reactor routed to this reactor's children.
    fn take_routed<T: Watched>(
        &mut self,
        table: &mut ChildTable<T>,
        out: &mut dyn FnMut(Reaped<T>),
    ) {
        routes::take_routed(self.reactor, &mut self.routed);
        for (id, status) in self.routed.drain(..) {
            if table.get(id.pid).is_some_and(|v| v.serial() == id.serial) {
                if let Some(value) = table.remove(id.pid) {
                    out(Reaped::Died(id.pid, status, value));
                }
            }
        }
    }

    /// `LibraryAlways`: reaps every dead child of the process; the children
    /// other reactors registered get their status routed to them, and only
    /// the rest go to `out` as strangers (see `process::routes`).
    fn reap_everything<T: Watched>(
        &mut self,
        table: &mut ChildTable<T>,
        sys: &mut SysReap,
        out: &mut dyn FnMut(Reaped<T>),
    ) -> Result<()> {
        let pass = routes::Pass::begin();
        let strangers = &mut self.strangers;
        let mut sink = |reaped| match reaped {
            Reaped::Stranger(pid, status) => strangers.push((pid, status)),
            other => out(other),
        };
        let reaped = match pass.careful() {
            true => passes::reap_all_careful(sys, table, |pid| pass.may_reap(pid), &mut sink),
            false => passes::reap_all(sys, table, &mut sink),
        };
        // Whatever happened, route what was reaped: a claimant may be
        // waiting for it.
        pass.route(strangers);
        for (pid, status) in self.strangers.drain(..) {
            out(Reaped::Stranger(pid, status));
        }
        reaped.map_err(|e| Error::io("wait4(-1)", e))
    }

    /// Stop/continue reports and deaths of the children that asked for
    /// state reports, found by one `waitid(WEXITED | WSTOPPED | WCONTINUED)`
    /// each.
    fn reap_states<T: Watched>(
        &mut self,
        table: &mut ChildTable<T>,
        sys: &mut SysReap,
        out: &mut dyn FnMut(Reaped<T>),
    ) -> Result<()> {
        if self.stateful.is_empty() || self.mode == SigchldOwner::Mainloop {
            return Ok(());
        }
        passes::reap_states(sys, table, &mut self.stateful, out).map_err(|e| Error::io("waitid", e))
    }

    /// Keeps the deadline timer (a `timerfd` in the reactor's epoll set,
    /// made at the first deadline) set for `next`, the earliest `terminate`
    /// deadline, so the reactor's descriptor becomes readable when it is
    /// due and a loop needs no timer of its own. A system call only when
    /// `next` changes. If the timer cannot be had (`EMFILE`), nothing
    /// breaks: [`Reactor::timeout`](crate::Reactor::timeout) still tells
    /// the loop when to call `dispatch`.
    pub(crate) fn arm(&mut self, next: Option<std::time::Instant>) {
        if next == self.armed {
            return;
        }
        if self.timer.is_none() {
            if next.is_none() {
                return;
            }
            let made = sys::timer_create().and_then(|fd| {
                self.poller.add_timer(fd.as_fd())?;
                Ok(fd)
            });
            match made {
                Ok(fd) => self.timer = Some(fd),
                Err(_e) => {
                    #[cfg(feature = "log")]
                    log::warn!("evchild: no timerfd for terminate deadlines ({_e}); use timeout()");
                    return;
                }
            }
        }
        if let Some(timer) = &self.timer {
            let after = next.map(|at| at.saturating_duration_since(std::time::Instant::now()));
            if sys::timer_set(timer.as_fd(), after).is_ok() {
                self.armed = next;
            }
        }
    }

    /// Watches an output stream of a `spawn_output` child in the reactor's
    /// set, under `key`.
    pub(crate) fn add_stream(
        &self,
        fd: BorrowedFd<'_>,
        key: usize,
        writable: bool,
    ) -> io::Result<()> {
        self.poller.add_stream(fd, key, writable)
    }

    /// Takes an output stream out of the set, before it is closed.
    pub(crate) fn remove_stream(&self, fd: BorrowedFd<'_>) {
        self.poller.remove_stream(fd)
    }

    /// Whether a pipe wake-up calls for a `SIGCHLD`-driven pass over the
    /// children without a pidfd.
    fn scans(&self) -> bool {
        !self.uses_pidfds() || self.fallbacks > 0
    }

    /// Makes the reactor readable, so the loop calls `dispatch` again.
    pub(crate) fn wake(&self) {
        self.pipe.wake();
    }

    /// Gives up the handler when no live child needs it any more (`Library`
    /// mode only; `LibraryAlways` keeps it until drop).
    pub(crate) fn release_idle(&mut self, live: usize, mut is_live: impl FnMut(Pid) -> bool) {
        if self.mode != SigchldOwner::Library || self.registration.is_none() {
            return;
        }
        self.stateful.retain(|&pid| is_live(pid));
        // A child that left the table (`forget`) keeps no handler.
        self.fired.retain(|tag| is_live(tag.pid));
        if !self.needs_handler(live) {
            self.registration = None;
        }
    }

    /// The reactor is going away: withdraw its claims and routed statuses.
    pub(crate) fn leave_routes(&self) {
        routes::forget_reactor(self.reactor);
    }

    /// The reactor's descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.poller.fd()
    }

    /// In a forked child: the numbers of this process's copies of the
    /// watcher's own descriptors (not the pidfds: see the reactor's drop),
    /// to close with `close(2)`; the caller then leaks the watcher.
    pub(crate) fn fds_in_forked_child(&self) -> impl Iterator<Item = RawFd> {
        let timer = self.timer.as_ref().map(AsRawFd::as_raw_fd);
        [self.poller.fd().as_raw_fd()]
            .into_iter()
            .chain(self.pipe.raw_fds())
            .chain(timer)
    }
}
