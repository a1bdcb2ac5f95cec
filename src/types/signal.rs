//! Signal numbers that are checked before anything is sent.

use std::convert::Infallible;
use std::fmt;

use crate::Error;

/// A signal that [`Reactor::kill`](crate::Reactor::kill) and friends may
/// send: a standard signal, a real-time one (`SIGRTMIN..=SIGRTMAX`, as the C
/// library leaves them to applications), or [`Signal::CHECK`] (0: checks
/// that the child can be signalled, sends nothing).
///
/// The signalling calls take anything that converts into one, so a wrong
/// number is a typed error before any system call:
///
/// ```
/// use evchild::{Error, Signal};
/// assert_eq!(Signal::try_from(libc::SIGTERM)?, Signal::TERM);
/// assert_eq!(Signal::from(nix::sys::signal::Signal::SIGKILL), Signal::KILL);
/// assert_eq!(Signal::realtime(2)?.as_raw(), libc::SIGRTMIN() + 2);
/// assert!(matches!(Signal::try_from(12_345), Err(Error::InvalidSignal { signal: 12_345 })));
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(libc::c_int);

impl Signal {
    /// 0: sends nothing, but checks that the child can be signalled.
    pub const CHECK: Signal = Signal(0);
    /// `SIGHUP`.
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// `SIGINT`.
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGQUIT`.
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    /// `SIGKILL`.
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGUSR1`.
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// `SIGUSR2`.
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// `SIGTERM`.
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGCONT`.
    pub const CONT: Signal = Signal(libc::SIGCONT);
    /// `SIGSTOP`.
    pub const STOP: Signal = Signal(libc::SIGSTOP);

    /// The real-time signal `SIGRTMIN + n`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSignal`] if that is past `SIGRTMAX`.
    pub fn realtime(n: libc::c_int) -> Result<Signal, Error> {
        let raw = libc::SIGRTMIN().checked_add(n).unwrap_or(-1);
        if n < 0 {
            return Err(Error::InvalidSignal { signal: raw });
        }
        Signal::try_from(raw)
    }

    /// The signal number.
    pub const fn as_raw(self) -> libc::c_int {
        self.0
    }
}

impl TryFrom<libc::c_int> for Signal {
    type Error = Error;

    /// Accepts 0, the standard signals (1 to 31 on Linux) and
    /// `SIGRTMIN..=SIGRTMAX`; the numbers the C library keeps for itself
    /// (32 to `SIGRTMIN - 1`) and anything else are [`Error::InvalidSignal`].
    fn try_from(signal: libc::c_int) -> Result<Self, Error> {
        let standard = (0..32).contains(&signal);
        let realtime = (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal);
        if standard || realtime {
            Ok(Signal(signal))
        } else {
            Err(Error::InvalidSignal { signal })
        }
    }
}

impl From<nix::sys::signal::Signal> for Signal {
    fn from(signal: nix::sys::signal::Signal) -> Self {
        Signal(signal as libc::c_int)
    }
}

impl From<Infallible> for Error {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match nix::sys::signal::Signal::try_from(self.0) {
            Ok(signal) => write!(f, "{signal:?}"),
            Err(_) if self.0 == 0 => f.write_str("CHECK"),
            Err(_) => write!(f, "SIGRTMIN+{}", self.0 - libc::SIGRTMIN()),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
