//! The one error type of evchild.
//!
//! Every variant is a different thing a caller may do about it; every message
//! says what that is. A call that returns an error changed nothing, unless its
//! documentation says otherwise.

use crate::{ChildId, Pid};

/// What went wrong, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `set_mode` was called while children are registered with the reactor.
    ///
    /// Nothing changed. Wait for the death callbacks of the live children
    /// (keep calling `dispatch`), then change the mode.
    #[error(
        "cannot change the SIGCHLD mode while {live} child(ren) are registered: \
         wait for their death callbacks, then call set_mode again"
    )]
    ChildrenActive {
        /// How many children are registered.
        live: usize,
    },

    /// From [`reaped`](crate::Reactor::reaped) (`Mainloop` mode): the pid
    /// is not a child registered with this reactor, so its status is the
    /// application's own.
    #[error(
        "pid {pid} is not a child registered with this reactor: its status is yours to handle"
    )]
    UnknownChild {
        /// The pid the caller named.
        pid: Pid,
    },

    /// The [`ChildId`](crate::ChildId) was issued by another reactor: ask
    /// that one.
    #[error("{id} belongs to another reactor; call the reactor that started it")]
    ForeignId {
        /// The id the caller named.
        id: ChildId,
    },

    /// The number is not a signal `kill(2)` accepts (see
    /// [`Signal`](crate::Signal)). Nothing was sent.
    #[error("{signal} is not a signal number (0, 1 to 31, or SIGRTMIN..=SIGRTMAX)")]
    InvalidSignal {
        /// The number the caller gave.
        signal: libc::c_int,
    },

    /// [`Reactor::spawn`](crate::Reactor::spawn) could not start the
    /// command. Nothing was registered and no zombie is left.
    ///
    /// `source.kind()` tells why: `NotFound` (no such program, or no such
    /// working directory), `PermissionDenied` (not executable), or the error
    /// of `fork`/`clone` (`WouldBlock` for `EAGAIN` at the process limit).
    #[error("could not start {program:?}: {source}")]
    Spawn {
        /// The command's program, as given.
        program: String,
        /// The error std reported.
        #[source]
        source: std::io::Error,
    },

    /// [`Reactor::watch`](crate::Reactor::watch) was given a pid that is not
    /// an unreaped child of this process.
    ///
    /// Nothing changed. Only a parent can wait for a process; if the child
    /// has already been reaped, its status went to whoever reaped it.
    #[error("pid {pid} is not an unreaped child of this process, so it cannot be watched")]
    NotAChild {
        /// The pid given.
        pid: Pid,
    },

    /// [`Reactor::watch`](crate::Reactor::watch) was given a pid that is
    /// already registered with this reactor.
    ///
    /// Nothing changed; its death is already going to be reported once.
    #[error("child {pid} is already registered with this reactor")]
    AlreadyWatched {
        /// The pid given.
        pid: Pid,
    },

    /// [`Reactor::kill_group`](crate::Reactor::kill_group) was asked to
    /// signal the group of a child that does not lead one.
    ///
    /// Nothing was signalled. Start the child with
    /// `CommandExt::process_group(0)`, or signal it alone with `kill`.
    #[error(
        "child {pid} does not lead a process group: start it with process_group(0), or use kill"
    )]
    NotAGroupLeader {
        /// The child's pid.
        pid: Pid,
    },

    /// The child was reaped by this reactor and its death reported; its pid
    /// may already belong to an unrelated process, so it is not signalled.
    #[error(
        "child {pid} has already been reaped; its pid may have been recycled, \
         so it was not signalled"
    )]
    AlreadyReaped {
        /// The pid the child had.
        pid: Pid,
    },

    /// A fork replacement or [`watch`](crate::Reactor::watch) named a pid
    /// that cannot be a child of this process: zero or negative (which the
    /// wait and kill calls would read as a process group or "every
    /// process"), or this process's own pid. Nothing was registered.
    #[error(
        "pid {pid} cannot name a child of this process (it must be positive and not our own pid); \
         nothing was registered"
    )]
    InvalidPid {
        /// The pid that was given.
        pid: Pid,
    },

    /// The call is not allowed in the reactor's current SIGCHLD mode.
    #[error("{call} is not available in {mode:?} mode: {hint}")]
    WrongMode {
        /// The method that was called.
        call: &'static str,
        /// The mode the reactor is in.
        mode: crate::SigchldOwner,
        /// What to do instead.
        hint: &'static str,
    },

    /// Another reactor in this process is already in `LibraryAlways` mode.
    ///
    /// Two reap-all owners would steal each other's children. Use one
    /// `LibraryAlways` reactor per process and `Library` mode for the others.
    #[error(
        "another reactor in this process already reaps every child (LibraryAlways): \
         use Library mode for this one, or drop the other first"
    )]
    ReapAllTaken,

    /// The process-wide table of wake pipes is full: too many reactors need
    /// the `SIGCHLD` handler at once.
    ///
    /// Nothing changed. Use fewer reactors (one per event loop), or
    /// `Mainloop` mode for some of them.
    #[error(
        "{capacity} reactors already need the SIGCHLD handler in this process: \
         share a reactor per event loop, or use Mainloop mode"
    )]
    TooManyReactors {
        /// The table's capacity.
        capacity: usize,
    },

    /// The process's `SIGCHLD` disposition makes reaping impossible, or the
    /// handler cannot be installed.
    ///
    /// Checked at every child start (`spawn`, `fork`, `watch`) in every mode,
    /// and when a `LibraryAlways` reactor is created: `SIGCHLD` set to
    /// `SIG_IGN`, or a disposition with `SA_NOCLDWAIT`, makes the kernel reap
    /// children itself, so no exit status could ever be reported. Nothing was
    /// started and nothing changed; put `SIGCHLD` back to `SIG_DFL` (or a
    /// handler without `SA_NOCLDWAIT`) and try again.
    #[error("cannot own SIGCHLD: {reason}")]
    HandlerConflict {
        /// Why, and what to do about it.
        reason: &'static str,
    },

    /// The reactor was created in another process: this process is a child
    /// forked (without exec) from the one that created it.
    ///
    /// The reactor's descriptors are shared with the parent; using them would
    /// steal the parent's wake-ups. Create a new reactor in this process, or
    /// exec first.
    #[error(
        "this reactor belongs to process {owner}, and this is its forked child {current}: \
         create a new reactor here (or exec) instead"
    )]
    ForkedChild {
        /// The process that created the reactor.
        owner: Pid,
        /// This process.
        current: Pid,
    },

    /// A [`supervise::PoolConfig`](crate::supervise::PoolConfig) that cannot
    /// work, such as a minimum above its maximum.
    ///
    /// Nothing was created. Fix the configuration the reason names.
    #[error("invalid pool configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },

    /// A [`supervise`](crate::supervise) call named a pool that does not
    /// exist in this supervisor, or one that is stopping.
    ///
    /// Nothing changed.
    #[error("pool {pool}: {reason}")]
    Pool {
        /// The pool's index.
        pool: usize,
        /// Why the call was refused.
        reason: &'static str,
    },

    /// A system call failed; the error says which one.
    #[error("{call} failed: {source}")]
    Io {
        /// The failing call, such as `fork` or `pipe2`.
        call: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(call: &'static str, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            call,
            source: source.into(),
        }
    }
}

/// `Result` with evchild's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
