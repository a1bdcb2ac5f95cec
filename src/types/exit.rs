//! Death reports: what a death callback is told.

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

/// A process id.
///
/// A pid names a process only until that process is reaped: after that the
/// kernel may give the same number to an unrelated process. evchild therefore
/// refuses to signal a pid once it has reported its death.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(libc::pid_t);

impl Pid {
    /// Wraps a raw pid. Only positive values name a single process.
    pub const fn from_raw(pid: libc::pid_t) -> Self {
        Pid(pid)
    }

    /// The raw `pid_t`.
    pub const fn as_raw(self) -> libc::pid_t {
        self.0
    }

    /// The pid of this process (`getpid(2)`). This is async-signal-safe.
    pub fn this() -> Self {
        Pid(crate::sys::worker::getpid())
    }
}

impl From<u32> for Pid {
    /// From `std::process::Child::id`.
    fn from(id: u32) -> Self {
        Pid(id as libc::pid_t)
    }
}

impl From<nix::unistd::Pid> for Pid {
    fn from(pid: nix::unistd::Pid) -> Self {
        Pid(pid.as_raw())
    }
}

impl From<Pid> for nix::unistd::Pid {
    fn from(pid: Pid) -> Self {
        nix::unistd::Pid::from_raw(pid.0)
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A child registered with a reactor: its pid, plus a serial number that no
/// later child of the same reactor shares, even one the kernel gives the
/// same pid.
///
/// Calls that act on a child ([`Reactor::kill`](crate::Reactor::kill) and
/// friends) take a `ChildId`, so a stale one is refused
/// ([`Error::AlreadyReaped`](crate::Error::AlreadyReaped)) instead of
/// signalling whatever process has the pid now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildId {
    pub(crate) pid: Pid,
    pub(crate) reactor: u32,
    pub(crate) serial: u64,
}

impl ChildId {
    /// The child's pid. It names the child only until the child's death is
    /// reported.
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (child #{})", self.pid, self.serial)
    }
}

/// What a child used, from `wait4(2)`'s `struct rusage`.
///
/// Covers the child and those of its own children it waited for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceUsage {
    /// CPU time spent in user mode (`ru_utime`).
    pub user_time: Duration,
    /// CPU time spent in the kernel on its behalf (`ru_stime`).
    pub system_time: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`). On Linux this counts
    /// from the fork, so a child that execs a small program after being
    /// forked from a large parent shows at least the parent's size then.
    pub max_rss_kib: u64,
}

impl From<libc::rusage> for ResourceUsage {
    /// From the `struct rusage` that `wait4(2)`, `waitid(2)` or
    /// `getrusage(2)` filled in (for [`Reactor::reaped_with_usage`](crate::Reactor::reaped_with_usage)).
    fn from(ru: libc::rusage) -> Self {
        ResourceUsage::from_rusage(&ru)
    }
}

impl ResourceUsage {
    pub(crate) fn from_rusage(ru: &libc::rusage) -> Self {
        let time = |tv: libc::timeval| {
            Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64)
        };
        ResourceUsage {
            user_time: time(ru.ru_utime),
            system_time: time(ru.ru_stime),
            max_rss_kib: ru.ru_maxrss.max(0) as u64,
        }
    }
}

/// A change of a live child's state, for children that asked for them with
/// [`Reactor::on_state_change`](crate::Reactor::on_state_change).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChildState {
    /// Stopped by this signal (`WIFSTOPPED`, `WSTOPSIG`): `SIGSTOP`,
    /// `SIGTSTP`, `SIGTTIN` or `SIGTTOU`.
    Stopped(i32),
    /// Resumed by `SIGCONT` (`WIFCONTINUED`).
    Continued,
}

/// How a registered child ended, as far as evchild could learn.
///
/// Its `Debug` shows the status as `ExitStatus`'s `Display` does:
/// `Reaped(exit status: 3)`, `Reaped(signal: 15 (SIGTERM))`, `Lost`.
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// evchild reaped the child (or, in `Mainloop` mode, the application did
    /// and reported it): this is its true wait status.
    Reaped(ExitStatus),
    /// Someone else in this process reaped the child before evchild could
    /// (`waitpid` answered `ECHILD`): its status is unknown. This means other
    /// code called `waitpid(-1)` or waited for this pid; evchild never makes up
    /// a status for it.
    Lost,
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `ExitStatus`'s own `Debug` is the raw wait status
            // (`unix_wait_status(15)`); its `Display` says what it means.
            Outcome::Reaped(status) => f
                .debug_tuple("Reaped")
                .field(&format_args!("{status}"))
                .finish(),
            Outcome::Lost => f.write_str("Lost"),
        }
    }
}

/// The report a death callback receives: exactly one per child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Exit {
    /// The child's id, as its start returned it. Its pid
    /// ([`ChildId::pid`]) no longer names the child: do not signal it.
    pub id: ChildId,
    /// How the child ended.
    pub outcome: Outcome,
    /// What the child used, when evchild reaped it (or a `LibraryAlways`
    /// reactor did and routed it here), or what the application passed to
    /// [`Reactor::reaped_with_usage`](crate::Reactor::reaped_with_usage);
    /// `None` for a [`Outcome::Lost`] child and for a status reported with
    /// [`Reactor::reaped`](crate::Reactor::reaped).
    pub usage: Option<ResourceUsage>,
}

impl Exit {
    pub(crate) fn reaped(
        id: ChildId,
        raw_status: libc::c_int,
        usage: Option<ResourceUsage>,
    ) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Exit {
            id,
            outcome: Outcome::Reaped(ExitStatus::from_raw(raw_status)),
            usage,
        }
    }

    pub(crate) fn lost(id: ChildId) -> Self {
        Exit {
            id,
            outcome: Outcome::Lost,
            usage: None,
        }
    }

    /// The child's wait status, or `None` if it was [`Outcome::Lost`].
    ///
    /// ```
    /// # fn f(exit: evchild::Exit) {
    /// use std::os::unix::process::ExitStatusExt;
    /// match exit.status() {
    ///     Some(s) if s.success() => println!("{} succeeded", exit.id),
    ///     Some(s) => println!("{} failed: code {:?} signal {:?}", exit.id, s.code(), s.signal()),
    ///     None => println!("{} was reaped by someone else", exit.id),
    /// }
    /// # }
    /// ```
    pub fn status(&self) -> Option<ExitStatus> {
        match self.outcome {
            Outcome::Reaped(status) => Some(status),
            Outcome::Lost => None,
        }
    }
}
