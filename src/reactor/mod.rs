//! The [`Reactor`]: the event source the application holds, its table of
//! children, and the operations on it. How a child is watched, reaped and
//! signalled is the [`Watcher`]'s to decide (`watch/`); what happens
//! process-wide is `process/`'s. Here:
//!
//! * `mod.rs`: the struct, creation and mode changes, registration (the one
//!   place a child enters the table), the `mio` integration.
//! * `spawn.rs`, `fork.rs`: starting children (`spawn`, `watch`; `fork`,
//!   `fork_with`).
//! * `control.rs`: signals, process groups, `terminate`'s deadlines
//!   (`deadlines.rs`: the heap).
//! * `lifecycle.rs`: `try_wait`, `wait_for`, `forget`.
//! * `dispatch.rs`: `dispatch`, `reaped`, `sigchld_occurred`, and the queue
//!   of callbacks.
//! * `output.rs`, `streams.rs`, `stdio.rs`: `spawn_output` (the API, the
//!   streams in the epoll set) and pipelines.
//! * `drop.rs`: the drop policy and what dropping does.

mod control;
mod deadlines;
mod dispatch;
mod drop;
mod fork;
mod lifecycle;
mod output;
mod prepared;
mod spawn;
mod stdio;
pub(crate) mod streams;

pub use drop::DropPolicy;
pub use lifecycle::{ChildStatus, Forgotten};
pub use output::{Output, OutputOptions};
pub use spawn::Spawned;
pub use stdio::IntoStdio;
pub use streams::Stream;

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::reactor::deadlines::Deadlines;
use crate::reap::table::ChildTable;
use crate::reap::Watched;
use crate::sys::Leakable;
use crate::types::{ForkFn, UnknownFn};
use crate::watch::{Starting, Watch, Watcher};
use crate::{Backend, ChildId, ChildState, Error, Exit, Hooks, Pid, Result, SigchldOwner};

/// A death callback: runs once, in [`Reactor::dispatch`] (or `reaped` /
/// `sigchld_occurred`), after the child has left the reactor's tables. It
/// gets the application's context, the reactor itself (to start, signal or
/// adopt other children), and the report.
pub(crate) type OnDeath<C> = Box<dyn FnOnce(&mut C, &mut Reactor<C>, Exit) + Send>;

/// A stop/continue callback (see `Reactor::on_state_change`).
pub(crate) type OnState<C> = Box<dyn FnMut(&mut C, &mut Reactor<C>, ChildId, ChildState) + Send>;

/// Work waiting to be handed to the application.
pub(crate) enum Pending<C> {
    Death(OnDeath<C>, Exit),
    State(ChildId, ChildState),
    Stranger(Pid, crate::reap::Waited),
}

/// Counters of what a reactor has seen, from [`Reactor::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Registered children whose true status was delivered.
    pub reaped: u64,
    /// Registered children reported [`Outcome::Lost`](crate::Outcome::Lost):
    /// reaped by other code in this process.
    pub lost: u64,
    /// Strangers (children the reactor did not start, reaped in
    /// `LibraryAlways` mode) that the unknown-child hook claimed.
    pub unknown_claimed: u64,
    /// Strangers that nobody claimed: there was no hook, or it declined.
    /// With the `log` feature each one is also logged as a warning.
    pub unknown_unclaimed: u64,
    /// Calls of `dispatch` in the process that created the reactor, spurious
    /// ones included.
    pub dispatches: u64,
    /// Wait-family system calls (`waitid`, `wait4`) the reactor made, for
    /// reaping and for probing. A `dispatch` that nothing woke makes none.
    pub wait_calls: u64,
}

/// A registered child: its serial (the rest of its [`ChildId`]), how it is
/// watched, and what to do when it dies.
pub(crate) struct Entry<C> {
    pub(crate) serial: u64,
    pub(crate) on_death: OnDeath<C>,
    pub(crate) watch: Watch,
    /// Stop/continue callback, for children that asked for one.
    pub(crate) on_state: Option<OnState<C>>,
    /// Its own drop policy (`set_drop_policy_for`), over the reactor's.
    pub(crate) drop_policy: Option<DropPolicy>,
}

impl<C> Watched for Entry<C> {
    fn pidfd(&self) -> Option<RawFd> {
        self.watch.pidfd()
    }
    fn serial(&self) -> u64 {
        self.serial
    }
}

/// An event source for a `mio` loop that starts children and reports each
/// one's death exactly once (libxl's `libxl__ev_child`).
///
/// `C` is the application's context: [`dispatch`](Reactor::dispatch) takes a
/// `&mut C` and hands it to every callback, so callbacks need no `Rc` or
/// globals. The reactor is `Send` whatever `C` is (callbacks are `Send`), so
/// it can move into another thread or a task of a multi-threaded runtime;
/// it is not `Sync`: one thread drives it at a time.
///
/// The reactor shows the loop one descriptor however many children it has.
/// Register it with `mio` like a socket ([`Source`]), or watch
/// [`as_raw_fd`](AsRawFd::as_raw_fd) for readability in another loop. When
/// it is readable, call [`dispatch`](Reactor::dispatch). Spurious readiness
/// is harmless.
///
/// # Drop
///
/// Dropping the reactor first applies its [`DropPolicy`] to the children it
/// still has (by default it leaves them running), then releases its
/// `SIGCHLD` registration (the handler itself stays installed for the life
/// of the process), gives up `LibraryAlways`, closes its
/// descriptors and drops the callbacks of children still alive without
/// calling them. Children left running (`Leave`, in `Library` and
/// `LibraryAlways` mode) go on the process's orphan list, and the next
/// `dispatch` of any reactor that their death wakes reaps them; children killed but not reaped (`Kill`) stay zombies until
/// something reaps them. Keep the reactor until its children are gone, or
/// choose [`DropPolicy::KillAndReap`], to be sure no zombie is left.
///
/// Dropped in a forked child, it only closes that process's copies of its
/// descriptors (`close(2)`, async-signal-safe) and neither allocates nor
/// frees memory (the allocator's lock may be held by a thread that does not
/// exist in the child).
pub struct Reactor<C> {
    /// The process that created the reactor (for error messages and pid
    /// checks).
    pub(crate) owner: Pid,
    /// The fork generation the reactor was created in: any other is a
    /// forked child, which gets `Error::ForkedChild`.
    pub(crate) generation: u64,
    pub(crate) fork_replacement: Leakable<Option<ForkFn>>,
    pub(crate) unknown_child: Leakable<Option<UnknownFn<C>>>,
    /// This reactor's number, part of every [`ChildId`] it issues.
    pub(crate) number: u32,
    /// The serial of the next child registered.
    pub(crate) next_serial: u64,
    pub(crate) drop_policy: DropPolicy,
    pub(crate) stats: Stats,
    // The fields below are dropped in this order (declaration order), or
    // leaked in a forked child (see `drop.rs`): the children's pidfds and
    // the output pipes leave the watcher's epoll set before it is closed.
    pub(crate) children: Leakable<ChildTable<Entry<C>>>,
    /// `spawn_output` children and their pipes (in the watcher's set).
    pub(crate) outputs: Leakable<streams::Outputs<C>>,
    pub(crate) pending: Leakable<VecDeque<Pending<C>>>,
    /// SIGKILL deadlines of `terminate`.
    pub(crate) deadlines: Leakable<Deadlines>,
    /// How reaped children were watched, between a pass and `unwatch`
    /// (reused, so a steady state allocates nothing).
    pub(crate) unwatched: Leakable<Vec<Watch>>,
    /// Last: the epoll set, the wake pipe, the handler registration.
    pub(crate) watcher: Leakable<Watcher>,
}

impl<C> Reactor<C> {
    /// Creates a reactor in the mode `hooks` asks for.
    ///
    /// ```
    /// use evchild::{Hooks, Reactor, SigchldOwner};
    /// let children = Reactor::<()>::new(Hooks::new(SigchldOwner::Library))?;
    /// assert_eq!(children.mode(), SigchldOwner::Library);
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Nothing is left behind on error.
    /// * [`Error::Io`] if the wake pipe or the epoll set cannot be made
    ///   (`pipe2`, `epoll_create1`: usually `EMFILE`, too many open
    ///   descriptors).
    /// * `LibraryAlways` only: [`Error::ReapAllTaken`] if another reactor of
    ///   the process is in that mode; [`Error::HandlerConflict`] if `SIGCHLD`
    ///   is ignored or has `SA_NOCLDWAIT`; [`Error::TooManyReactors`].
    pub fn new(hooks: Hooks<C>) -> Result<Self> {
        crate::process::init();
        let number = crate::process::next_reactor();
        let mut reactor = Reactor {
            owner: Pid::this(),
            generation: crate::process::fork_generation(),
            fork_replacement: Leakable::default(),
            unknown_child: Leakable::default(),
            number,
            next_serial: 0,
            drop_policy: DropPolicy::Leave,
            stats: Stats::default(),
            children: Leakable::default(),
            outputs: Leakable::default(),
            pending: Leakable::default(),
            deadlines: Leakable::default(),
            unwatched: Leakable::default(),
            watcher: Leakable::new(Watcher::new(number)?),
        };
        reactor.apply(hooks)?;
        Ok(reactor)
    }

    /// Changes the mode and hooks (libxl's `libxl_childproc_setmode`).
    ///
    /// Allowed only while no child is registered. Callbacks of children that
    /// already died but have not run yet are kept and run as usual.
    ///
    /// # Errors
    ///
    /// The call changed nothing on error.
    /// * [`Error::ChildrenActive`] if children are registered.
    /// * [`Error::ForkedChild`] in a forked child.
    /// * Switching to `LibraryAlways`: as for [`new`](Reactor::new).
    pub fn set_mode(&mut self, hooks: Hooks<C>) -> Result<()> {
        self.check_process()?;
        if !self.children.is_empty() {
            return Err(Error::ChildrenActive {
                live: self.children.len(),
            });
        }
        self.apply(hooks)
    }

    fn apply(&mut self, hooks: Hooks<C>) -> Result<()> {
        self.watcher.apply(hooks.owner, hooks.backend)?;
        *self.fork_replacement = hooks.fork_replacement;
        *self.unknown_child = hooks.unknown_child;
        Ok(())
    }

    /// Adds a child that has just been started (or is being adopted) to
    /// the table and returns its id.
    ///
    /// A pid that cannot name a child (≤ 0, or this process) is refused
    /// with [`Error::InvalidPid`]. A pid on the process's orphan list (a
    /// child a dropped reactor left running) is taken off it, with its
    /// pidfd, so the orphan reaper never takes a child this reactor
    /// watches. If the child cannot be watched (no pidfd and no handler
    /// either), the error is returned and nothing is registered: the caller
    /// decides what becomes of the child.
    pub(crate) fn register(&mut self, pid: Pid, on_death: OnDeath<C>) -> Result<ChildId> {
        self.register_with(pid, None, on_death)
    }

    /// [`register`](Self::register) with the child's pidfd, if the caller
    /// has it (from `clone(CLONE_PIDFD)`): the watcher uses it instead of
    /// opening one. A pidfd given with a backend that does not use pidfds
    /// is closed.
    pub(crate) fn register_with(
        &mut self,
        pid: Pid,
        given: Option<std::os::fd::OwnedFd>,
        on_death: OnDeath<C>,
    ) -> Result<ChildId> {
        if pid.as_raw() <= 0 || pid == self.owner {
            return Err(Error::InvalidPid { pid });
        }
        // An orphan's pidfd is reused only if it still names an unreaped
        // child (someone else may have reaped the orphan, and the kernel
        // given its pid to this new child).
        let orphan = crate::process::orphans::take(pid)
            .flatten()
            .filter(|fd| crate::sys::is_unreaped_child(fd.as_fd()));
        let pidfd = given.or(orphan);
        let serial = self.next_serial;
        let watch = self.watcher.watch(pid, serial, pidfd)?;
        self.next_serial += 1;
        let entry = Entry {
            serial,
            on_death,
            watch,
            on_state: None,
            drop_policy: None,
        };
        if let Some(stale) = self.children.insert(pid, entry) {
            // The kernel gave out this pid again, so the child we had under
            // it was reaped by someone else: a reap-all reactor (which
            // routed its status here) or code that broke the contract.
            let stale_id = self.id(pid, stale.serial);
            self.watcher.unwatch(stale.watch);
            let exit = match crate::process::routes::collect(stale_id) {
                Some(status) => {
                    self.stats.reaped += 1;
                    Exit::reaped(stale_id, status.raw, status.usage)
                }
                None => {
                    self.stats.lost += 1;
                    Exit::lost(stale_id)
                }
            };
            self.pending.push_back(Pending::Death(stale.on_death, exit));
            self.watcher.wake();
        }
        Ok(self.id(pid, serial))
    }

    /// The bracket of every `spawn` and `spawn_prepared`: room in the table;
    /// the `SIGCHLD` check and, where needed, the handler, before the child
    /// exists (`Watcher::before_start`; with `child_may_check`,
    /// `before_start_checked_by_child`); the start marked in flight in the
    /// routes; `launch`, told whether the child must check the disposition
    /// itself; then the registration, which claims the start (a child that
    /// cannot be registered is killed and reaped). On every error the
    /// handler acquired for this start is given back. `launch` returns the
    /// child's pid, its pidfd if the start gave one, and whatever else the
    /// caller needs afterwards.
    pub(crate) fn start_child<T>(
        &mut self,
        child_may_check: bool,
        on_death: OnDeath<C>,
        launch: impl FnOnce(&Watcher, bool) -> Result<(Pid, Option<std::os::fd::OwnedFd>, T)>,
    ) -> Result<(ChildId, T)> {
        self.children.reserve_one();
        let live = self.children.len();
        let (acquired, child_checks) = match child_may_check {
            true => self.watcher.before_start_checked_by_child(live)?,
            false => (self.watcher.before_start(live)?, false),
        };
        let starting = self.watcher.start();
        let launched = launch(&self.watcher, child_checks);
        let registered = launched.and_then(|(pid, pidfd, extra)| {
            self.register_started_with(starting, pid, pidfd, on_death)
                .map(|id| (id, extra))
        });
        if registered.is_err() {
            self.watcher.abort_start(acquired);
        }
        registered
    }

    /// [`register`](Self::register) for a child this reactor started: if it
    /// cannot be registered, it is killed and reaped at once (the caller
    /// gets no id, so nothing could ever stop or report it), and the error
    /// is returned. The start ends with the child claimed.
    pub(crate) fn register_started(
        &mut self,
        starting: Starting,
        pid: Pid,
        on_death: OnDeath<C>,
    ) -> Result<ChildId> {
        self.register_started_with(starting, pid, None, on_death)
    }

    /// [`register_started`](Self::register_started) with the child's
    /// pidfd, if the start gave one.
    pub(crate) fn register_started_with(
        &mut self,
        starting: Starting,
        pid: Pid,
        pidfd: Option<std::os::fd::OwnedFd>,
        on_death: OnDeath<C>,
    ) -> Result<ChildId> {
        match self.register_with(pid, pidfd, on_death) {
            Ok(id) => {
                self.watcher.claim(starting, id);
                Ok(id)
            }
            Err(e @ Error::InvalidPid { .. }) => Err(e),
            Err(e) => {
                crate::sys::kill_and_reap(pid);
                Err(e)
            }
        }
    }

    pub(crate) fn id(&self, pid: Pid, serial: u64) -> ChildId {
        ChildId {
            pid,
            reactor: self.number,
            serial,
        }
    }

    /// The SIGCHLD mode.
    pub fn mode(&self) -> SigchldOwner {
        self.watcher.mode()
    }

    /// The backend `Library` mode uses to find dead children: the one asked
    /// for in [`Hooks::backend`], or what `Auto` chose, or `Peek` where
    /// pidfds are not available. Never [`Backend::Auto`]. `None` in
    /// `Mainloop` mode (the application reaps) and `LibraryAlways` mode
    /// (which reaps every child with `wait4(-1)`).
    pub fn backend(&self) -> Option<Backend> {
        self.watcher.backend()
    }

    /// How many children are registered (started and not yet reported dead).
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether no child is registered.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Whether `id` is a registered, live child of this reactor (its death
    /// not yet reported).
    pub fn contains(&self, id: ChildId) -> bool {
        self.entry(id).is_some()
    }

    pub(crate) fn entry(&self, id: ChildId) -> Option<&Entry<C>> {
        if id.reactor != self.number {
            return None;
        }
        self.children
            .get(id.pid)
            .filter(|entry| entry.serial == id.serial)
    }

    /// The ids of the registered children, in no particular order.
    pub fn children(&self) -> impl Iterator<Item = ChildId> + '_ {
        self.children
            .iter()
            .map(|(pid, entry)| self.id(pid, entry.serial))
    }

    /// Counters of what the reactor has seen.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// `Err(ForkedChild)` unless this is the process that created the
    /// reactor: one atomic load of the fork generation, no system call.
    /// Allocation-free, so it is fine to call in a forked child.
    pub(crate) fn check_process(&self) -> Result<()> {
        if self.generation == crate::process::fork_generation() {
            Ok(())
        } else {
            Err(Error::ForkedChild {
                owner: self.owner,
                current: Pid::this(),
            })
        }
    }
}

impl<C> Source for Reactor<C> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.as_raw_fd()).deregister(registry)
    }
}

impl<C> AsFd for Reactor<C> {
    /// The descriptor that becomes readable when `dispatch` has work. Watch
    /// it for readability only; never read from it yourself.
    ///
    /// It is the same open descriptor for the reactor's whole life (created
    /// in [`new`](Reactor::new), closed when the reactor is dropped, never
    /// replaced by `set_mode` or a backend), so a runtime that registers it
    /// once (tokio's `AsyncFd`, `async-io`'s `Async`) may rely on it until
    /// the reactor is dropped.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.watcher.fd()
    }
}

impl<C> AsRawFd for Reactor<C> {
    fn as_raw_fd(&self) -> RawFd {
        self.watcher.fd().as_raw_fd()
    }
}

impl<C> fmt::Debug for Reactor<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("mode", &self.mode())
            .field("backend", &self.backend())
            .field("children", &self.children.len())
            .field("pending", &self.pending.len())
            .field("fd", &self.as_raw_fd())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
