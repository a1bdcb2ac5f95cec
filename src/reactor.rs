//! The event source: one wake descriptor for the loop, a table of children,
//! and the SIGCHLD mode's resources (handler registration, reap-all token).
//!
//! Reaping and callbacks live in `dispatch.rs`, `fork` in `fork.rs`; this
//! file holds creation, mode changes, `kill` and the `mio` integration.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::mode::{ForkFn, UnknownFn};
use crate::poller::Poller;
use crate::selfpipe::SelfPipe;
use crate::sigchld::{self, ReapAllToken, Registration};
use crate::table::ChildTable;
use crate::timer::Deadlines;
use crate::{
    Backend, ChildId, ChildState, DropPolicy, Error, Exit, Hooks, Pid, Result, SigchldOwner,
};

/// A death callback: runs once, in [`Reactor::dispatch`] (or `reaped` /
/// `sigchld_occurred`), after the child has left the reactor's tables. It
/// gets the application's context, the reactor itself (to start, signal or
/// adopt other children), and the report.
pub(crate) type OnDeath<C> = Box<dyn FnOnce(&mut C, &mut Reactor<C>, Exit)>;

/// A stop/continue callback (see `Reactor::on_state_change`).
pub(crate) type OnState<C> = Box<dyn FnMut(&mut C, &mut Reactor<C>, ChildId, ChildState)>;

/// Work waiting to be handed to the application.
pub(crate) enum Pending<C> {
    Death(OnDeath<C>, Exit),
    State(ChildId, ChildState),
    Stranger(Pid, libc::c_int),
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
}

/// A registered child: its serial (the rest of its [`ChildId`]) and what to
/// do when it dies.
pub(crate) struct Entry<C> {
    pub(crate) serial: u64,
    pub(crate) on_death: OnDeath<C>,
    /// With the pidfd backend, the child's pidfd (in the poller's set). None
    /// in other backends, and for a child whose pidfd could not be opened,
    /// which is then watched through `SIGCHLD`.
    pub(crate) pidfd: Option<crate::pidfd::Polled>,
    /// With the pidfd backend, a child whose pidfd could not be opened and
    /// which is watched through `SIGCHLD` instead.
    pub(crate) fallback: bool,
    /// Stop/continue callback, for children that asked for one.
    pub(crate) on_state: Option<OnState<C>>,
}

/// Numbers reactors, so a [`ChildId`] says which reactor issued it.
static REACTORS: AtomicU32 = AtomicU32::new(0);

/// An event source for a `mio` loop that starts children and reports each
/// one's death exactly once (libxl's `libxl__ev_child`).
///
/// `C` is the application's context: [`dispatch`](Reactor::dispatch) takes a
/// `&mut C` and hands it to every callback, so callbacks need no `Rc` or
/// globals.
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
/// calling them. Children left alone remain children of the process, and
/// whoever reaps them next gets their status: keep the reactor until its
/// children are gone, or choose [`DropPolicy::KillAndReap`], to avoid
/// zombies.
///
/// Dropped in a forked child, it only closes that child's copies of its
/// descriptors and frees nothing (freeing memory is not async-signal-safe).
pub struct Reactor<C> {
    /// The process that created the reactor; any other process is a forked
    /// child and gets `Error::ForkedChild`.
    pub(crate) owner: Pid,
    pub(crate) mode: SigchldOwner,
    /// The `Library`-mode backend in use (never `Auto`).
    pub(crate) backend: Backend,
    pub(crate) fork_replacement: Option<ForkFn>,
    pub(crate) unknown_child: Option<UnknownFn<C>>,
    /// This reactor's number, part of every [`ChildId`] it issues.
    pub(crate) number: u32,
    /// The serial of the next child registered.
    pub(crate) next_serial: u64,
    pub(crate) children: ChildTable<Entry<C>>,
    pub(crate) pending: VecDeque<Pending<C>>,
    pub(crate) scratch: Vec<(Pid, Option<crate::reap::Waited>)>,
    /// Pids whose pidfds are ready (pidfd backend), reused.
    pub(crate) ready: Vec<Pid>,
    /// Children of the pidfd backend without a pidfd (`Entry::fallback`).
    pub(crate) unpolled: usize,
    /// Children with a stop/continue callback (possibly stale: pruned by
    /// each pass).
    pub(crate) stateful: Vec<Pid>,
    /// SIGKILL deadlines of `terminate`.
    pub(crate) deadlines: Deadlines,
    pub(crate) drop_policy: DropPolicy,
    pub(crate) stats: Stats,
    /// Held in `Library` mode while children are registered, and in
    /// `LibraryAlways` mode always. Dropped before `pipe` is closed.
    pub(crate) registration: Option<Registration>,
    pub(crate) reap_all: Option<ReapAllToken>,
    /// The descriptor the loop watches: an epoll set holding `pipe` (and
    /// pidfds).
    pub(crate) poller: Poller,
    pub(crate) pipe: SelfPipe,
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
    /// * [`Error::Io`] if the wake pipe cannot be made (`pipe2`: usually
    ///   `EMFILE`, too many open descriptors).
    /// * `LibraryAlways` only: [`Error::ReapAllTaken`] if another reactor of
    ///   the process is in that mode; [`Error::HandlerConflict`] if `SIGCHLD`
    ///   is ignored or has `SA_NOCLDWAIT`; [`Error::TooManyReactors`].
    pub fn new(hooks: Hooks<C>) -> Result<Self> {
        sigchld::init();
        let pipe = SelfPipe::new().map_err(|e| Error::io("pipe2", e))?;
        let poller = Poller::new(pipe.read_fd()).map_err(|e| Error::io("epoll_create1", e))?;
        let mut reactor = Reactor {
            owner: Pid::this(),
            mode: SigchldOwner::Library,
            backend: Backend::Scan,
            fork_replacement: None,
            unknown_child: None,
            number: REACTORS.fetch_add(1, Ordering::Relaxed),
            next_serial: 0,
            children: ChildTable::default(),
            pending: VecDeque::new(),
            scratch: Vec::new(),
            ready: Vec::new(),
            unpolled: 0,
            stateful: Vec::new(),
            deadlines: Deadlines::default(),
            drop_policy: DropPolicy::Leave,
            stats: Stats::default(),
            registration: None,
            reap_all: None,
            poller,
            pipe,
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

    /// Acquires what the new mode needs, then commits; on error the reactor
    /// is as it was (a newly taken token or registration is dropped again).
    fn apply(&mut self, hooks: Hooks<C>) -> Result<()> {
        let always = hooks.owner == SigchldOwner::LibraryAlways;
        let token = match (always, self.reap_all.is_some()) {
            (true, false) => Some(ReapAllToken::take()?),
            _ => None,
        };
        let registration = match (always, self.registration.is_some()) {
            (true, false) => Some(sigchld::register(self.pipe.write_raw())?),
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
        self.mode = hooks.owner;
        self.backend = match hooks.backend {
            Backend::Auto | Backend::Pidfd if crate::pidfd::supported() => Backend::Pidfd,
            Backend::Auto | Backend::Pidfd => Backend::Peek,
            other => other,
        };
        self.fork_replacement = hooks.fork_replacement;
        self.unknown_child = hooks.unknown_child;
        Ok(())
    }

    /// Adds a started child to the table and returns its id. With the pidfd
    /// backend, opens the child's pidfd and puts it in the poller's set; if
    /// that fails (`EMFILE`), the child is watched through `SIGCHLD`.
    pub(crate) fn register(&mut self, pid: Pid, on_death: OnDeath<C>) -> ChildId {
        let serial = self.next_serial;
        self.next_serial += 1;
        let pidfd = if self.uses_pidfds() {
            self.open_pidfd(pid)
        } else {
            None
        };
        let fallback = self.uses_pidfds() && pidfd.is_none();
        self.unpolled += usize::from(fallback);
        let entry = Entry {
            serial,
            on_death,
            pidfd,
            fallback,
            on_state: None,
        };
        if let Some(stale) = self.children.insert(pid, entry) {
            // The kernel gave out this pid again, so the child we had under
            // it was reaped by someone else.
            self.stats.lost += 1;
            self.unpolled -= usize::from(stale.fallback);
            let stale_id = self.id(pid, stale.serial);
            self.pending
                .push_back(Pending::Death(stale.on_death, Exit::lost(stale_id)));
            self.pipe.wake();
        }
        self.id(pid, serial)
    }

    /// Whether this reactor watches its children through pidfds.
    pub(crate) fn uses_pidfds(&self) -> bool {
        self.mode == SigchldOwner::Library && self.backend == Backend::Pidfd
    }

    fn open_pidfd(&mut self, pid: Pid) -> Option<crate::pidfd::Polled> {
        let opened = crate::pidfd::open(pid).and_then(|fd| self.poller.add(pid, fd));
        match opened {
            Ok(fd) => Some(fd),
            Err(_e) => {
                #[cfg(feature = "log")]
                log::warn!("evchild: no pidfd for child {pid} ({_e}); watching it through SIGCHLD");
                if self.registration.is_none() {
                    // If even this fails, the child is still scanned by every
                    // dispatch (`unpolled`), which something else may wake.
                    self.registration = sigchld::register(self.pipe.write_raw()).ok();
                }
                // It may have died before the handler was there: look now.
                self.pipe.wake();
                None
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
        self.mode
    }

    /// The backend `Library` mode uses to find dead children: the one asked
    /// for in [`Hooks::backend`], or what `Auto` chose, or `Peek` where
    /// pidfds are not available. Never [`Backend::Auto`].
    pub fn backend(&self) -> Backend {
        self.backend
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
        id.reactor == self.number
            && self
                .children
                .get(id.pid)
                .is_some_and(|entry| entry.serial == id.serial)
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

    /// `Err(ForkedChild)` unless this is the process that created the reactor.
    /// Allocation-free, so it is fine to call in a forked child.
    pub(crate) fn check_process(&self) -> Result<()> {
        let current = Pid::this();
        if current == self.owner {
            Ok(())
        } else {
            Err(Error::ForkedChild {
                owner: self.owner,
                current,
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
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poller.fd()
    }
}

impl<C> AsRawFd for Reactor<C> {
    fn as_raw_fd(&self) -> RawFd {
        self.poller.fd().as_raw_fd()
    }
}

impl<C> fmt::Debug for Reactor<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("mode", &self.mode)
            .field("backend", &self.backend)
            .field("children", &self.children.len())
            .field("pending", &self.pending.len())
            .field("fd", &self.as_raw_fd())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
