//! The application's side of the SIGCHLD agreement: who owns the signal, and
//! the hooks evchild calls (libxl's `libxl_childproc_hooks`).

use std::fmt;
use std::io;
use std::process::ExitStatus;

use crate::{ChildId, Pid};

/// Who owns `SIGCHLD` and who reaps (libxl's `libxl_sigchld_owner`).
///
/// See the crate documentation, section *SIGCHLD ownership*, for what the
/// application may and may not do in each mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SigchldOwner {
    /// evchild reaps only its own children, each named by its pidfd (the
    /// default `Pidfd` backend, no handler at all) or by pid (`Peek`,
    /// `Scan`, and children without a pidfd, woken through evchild's
    /// `SIGCHLD` handler, installed at the first child that needs it and
    /// kept for the life of the process). Other code in the process may
    /// have children and reap them by pid, as it likes.
    #[default]
    Library,
    /// The application owns `SIGCHLD` and reaping. It reports each child it
    /// reaps with [`Reactor::reaped`](crate::Reactor::reaped), or calls
    /// [`Reactor::sigchld_occurred`](crate::Reactor::sigchld_occurred) and lets
    /// evchild reap its own children. evchild installs no handler;
    /// `dispatch` still delivers statuses a `LibraryAlways` reactor of the
    /// process routed here.
    Mainloop,
    /// evchild owns `SIGCHLD` for as long as the reactor exists and reaps
    /// every child of the process (`waitpid(-1)`); children it did not start
    /// go to the unknown-child hook. At most one reactor per process.
    LibraryAlways,
}

/// How a `Library`-mode reactor finds out which of its children died.
///
/// All three reap only the reactor's own children; they differ in what a
/// wake-up costs. See the crate documentation, *Backends*, for the figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// The best one this system supports (see the crate docs for which and
    /// why); [`Reactor::backend`](crate::Reactor::backend) tells the choice.
    #[default]
    Auto,
    /// A pidfd per child in the reactor's epoll set (Linux ≥ 5.4, for
    /// `waitid(P_PIDFD)`), which is also the child's identity for reaping
    /// and signals: a wake-up names exactly the children that died, and no
    /// `SIGCHLD` handler is installed. One descriptor per live child.
    Pidfd,
    /// `SIGCHLD`, then `waitid(WNOWAIT)` to name the next exited child
    /// without reaping it: O(k) for k exits, no extra descriptor; falls back
    /// to the scan for a wake-up where someone else's zombie is first, or
    /// where the peek found nothing of ours (a child reaped by other code
    /// leaves no zombie: the scan reports it lost).
    Peek,
    /// `SIGCHLD`, then one `waitid(P_PID, WNOHANG | WNOWAIT)` probe per live
    /// child (and a reaping wait per death): O(N) per wake-up. The reference
    /// the others are tested against.
    Scan,
}

/// The unknown-child hook's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Claim {
    /// The application takes the status; evchild counts it as claimed.
    Claimed,
    /// The application does not know the child; evchild counts it as
    /// unclaimed and, with the `log` feature, logs a warning.
    Declined,
}

/// What `fork` returned, in the process that sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forked {
    /// This is the parent; the new child is registered under this id
    /// ([`ChildId::pid`] is its pid).
    Parent(ChildId),
    /// This is the new child process.
    Child,
}

pub(crate) type ForkFn = Box<dyn FnMut() -> io::Result<Option<Pid>> + Send>;
pub(crate) type UnknownFn<C> = Box<dyn FnMut(&mut C, Pid, ExitStatus) -> Claim + Send>;

/// The mode and hooks a [`Reactor`](crate::Reactor) is created with
/// (libxl's `libxl_childproc_hooks`).
///
/// ```
/// use evchild::{Claim, Hooks, SigchldOwner};
/// struct App { strays: u32 }
/// let hooks = Hooks::<App>::new(SigchldOwner::LibraryAlways)
///     .unknown_child(|app, pid, status| {
///         app.strays += 1;
///         eprintln!("reaped stray {pid}: {status}");
///         Claim::Claimed
///     });
/// # drop(hooks);
/// ```
pub struct Hooks<C> {
    pub(crate) owner: SigchldOwner,
    pub(crate) backend: Backend,
    pub(crate) fork_replacement: Option<ForkFn>,
    pub(crate) unknown_child: Option<UnknownFn<C>>,
}

impl<C> Hooks<C> {
    /// Hooks for the given mode, with no fork replacement and no
    /// unknown-child hook.
    pub fn new(owner: SigchldOwner) -> Self {
        Hooks {
            owner,
            backend: Backend::Auto,
            fork_replacement: None,
            unknown_child: None,
        }
    }

    /// The mode these hooks ask for.
    pub fn owner(&self) -> SigchldOwner {
        self.owner
    }

    /// Chooses how `Library` mode finds dead children (by default
    /// [`Backend::Auto`]). `Pidfd` where the kernel has no pidfds falls back
    /// to `Peek`. Other modes ignore it: `LibraryAlways` reaps everything
    /// with `waitpid(-1)`, and in `Mainloop` mode the application reaps.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Calls `f` instead of `fork(2)` in [`Reactor::fork`](crate::Reactor::fork).
    ///
    /// `f` must behave like `fork`: return `Ok(Some(pid))` in the parent, for a
    /// real child of this process, `Ok(None)` only in the new process,
    /// or an error having started nothing. Use it to learn pids, to wrap
    /// `fork` with bookkeeping of your own, or to inject failures in tests. A
    /// replacement that lies breaks no memory safety: a pid ≤ 0 or this
    /// process's own is refused with [`Error::InvalidPid`](crate::Error::InvalidPid)
    /// (nothing registered), and any other pid that is not our child is
    /// reported as [`Outcome::Lost`](crate::Outcome::Lost).
    pub fn fork_replacement(
        mut self,
        f: impl FnMut() -> io::Result<Option<Pid>> + Send + 'static,
    ) -> Self {
        self.fork_replacement = Some(Box::new(f));
        self
    }

    /// The hook for children evchild reaped but did not start (only in
    /// `LibraryAlways` mode, which reaps every child of the process).
    ///
    /// It runs in [`Reactor::dispatch`](crate::Reactor::dispatch), in the
    /// application's loop, with the application's context.
    pub fn unknown_child(
        mut self,
        f: impl FnMut(&mut C, Pid, ExitStatus) -> Claim + Send + 'static,
    ) -> Self {
        self.unknown_child = Some(Box::new(f));
        self
    }
}

impl<C> Default for Hooks<C> {
    fn default() -> Self {
        Hooks::new(SigchldOwner::Library)
    }
}

impl<C> fmt::Debug for Hooks<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("owner", &self.owner)
            .field("backend", &self.backend)
            .field("fork_replacement", &self.fork_replacement.is_some())
            .field("unknown_child", &self.unknown_child.is_some())
            .finish()
    }
}
