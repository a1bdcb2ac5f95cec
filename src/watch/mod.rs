//! How a reactor learns of its children's deaths and acts on them: the one
//! place that decides, per child, how it is watched (a pidfd in the
//! reactor's epoll set, or `SIGCHLD` through the wake pipe, and stop
//! reports), how it is named to the wait calls and to signals (by pidfd
//! where it has one), and when the reactor needs the process-wide handler.
//!
//! The reactor, `spawn`, `fork`, `watch`, the control calls, `dispatch` and
//! the drop code ask the [`Watcher`]; none of them touches the handler
//! registration, the reap-all token or the epoll set.

#![allow(unsafe_code)]

pub(crate) mod pidfd;
pub(crate) mod poller;
pub(crate) mod wake;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use crate::process::{self, ReapAllToken, Registration};
use crate::reap::Watched;
use crate::watch::pidfd::Polled;
use crate::watch::poller::{Poller, Woken};
use crate::watch::wake::SelfPipe;
use crate::{Backend, Error, Pid, Result, SigchldOwner};

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
        self.pidfd.as_ref().map(|p| p.fd().as_fd())
    }
}

impl Watched for Watch {
    fn pidfd(&self) -> Option<RawFd> {
        Watch::pidfd(self)
    }
}

/// A reactor's watching machinery; see the module docs.
#[derive(Debug)]
pub(crate) struct Watcher {
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
    pub(crate) stateful: Vec<Pid>,
    /// Pids whose pidfds are ready, reused between dispatches.
    pub(crate) ready: Vec<Pid>,
    /// Keys of the output streams that are ready (`output.rs`), reused.
    pub(crate) streams: Vec<usize>,
    /// Strangers of a reap-all pass being routed, reused.
    pub(crate) strangers: Vec<(Pid, crate::reap::Waited)>,
    /// The `terminate` deadline timer, made at the first deadline; closed
    /// (so out of the epoll set) before the set.
    timer: Option<std::os::fd::OwnedFd>,
    /// The deadline the timer is set for, if any.
    armed: Option<std::time::Instant>,
    /// The descriptor the loop watches: an epoll set holding `pipe` (and
    /// pidfds).
    poller: Poller,
    pipe: SelfPipe,
}

impl Watcher {
    pub(crate) fn new() -> Result<Self> {
        let pipe = SelfPipe::new().map_err(|e| Error::io("pipe2", e))?;
        let poller = Poller::new(pipe.read_fd()).map_err(|e| Error::io("epoll_create1", e))?;
        Ok(Watcher {
            mode: SigchldOwner::Library,
            backend: Backend::Scan,
            registration: None,
            reap_all: None,
            fallbacks: 0,
            stops: 0,
            stateful: Vec::new(),
            ready: Vec::new(),
            streams: Vec::new(),
            strangers: Vec::new(),
            timer: None,
            armed: None,
            poller,
            pipe,
        })
    }

    /// Switches to `mode`, with no child registered. Acquires what the new
    /// mode needs first; on error nothing changed.
    pub(crate) fn apply(
        &mut self,
        reactor: u32,
        mode: SigchldOwner,
        backend: Backend,
    ) -> Result<()> {
        let always = mode == SigchldOwner::LibraryAlways;
        let token = match (always, self.reap_all.is_some()) {
            (true, false) => Some(ReapAllToken::take()?),
            _ => None,
        };
        let registration = match (always, self.registration.is_some()) {
            (true, false) => Some(process::register(self.pipe.write_raw())?),
            _ => None,
        };
        if always {
            self.reap_all = self.reap_all.take().or(token);
            self.registration = self.registration.take().or(registration);
            crate::process::routes::set_reap_all_wake(Some(self.pipe.write_raw()));
            // Children that died before we took over are already waiting:
            // make the first dispatch look for them.
            self.pipe.wake();
        } else {
            // No child is registered, so neither Library nor Mainloop needs
            // the handler now.
            if self.reap_all.is_some() {
                crate::process::routes::forget_reactor(reactor, Some(self.pipe.write_raw()));
            }
            self.reap_all = None;
            self.registration = None;
        }
        self.mode = mode;
        self.backend = match backend {
            Backend::Auto | Backend::Pidfd if crate::watch::pidfd::supported() => Backend::Pidfd,
            Backend::Auto | Backend::Pidfd => Backend::Peek,
            other => other,
        };
        self.fallbacks = 0;
        self.stops = 0;
        self.stateful.clear();
        Ok(())
    }

    pub(crate) fn mode(&self) -> SigchldOwner {
        self.mode
    }

    /// The backend `Library` mode uses; `None` in the other modes.
    pub(crate) fn backend(&self) -> Option<Backend> {
        (self.mode == SigchldOwner::Library).then_some(self.backend)
    }

    fn uses_pidfds(&self) -> bool {
        self.backend() == Some(Backend::Pidfd)
    }

    /// Before starting or adopting a child, in every mode: refuses a
    /// `SIGCHLD` disposition that makes the kernel reap children by itself
    /// (and wakes the reactor, since children it already has may have been
    /// reaped that way and are then reported lost by the next dispatch),
    /// and makes sure the handler is there if this child will be watched
    /// through it. Returns whether this call acquired the registration, so
    /// a failed start can give it back.
    pub(crate) fn before_start(&mut self) -> Result<bool> {
        let needs_handler = self.mode == SigchldOwner::LibraryAlways
            || self.backend() == Some(Backend::Peek)
            || self.backend() == Some(Backend::Scan);
        // One disposition query either way: registering makes it too.
        let acquire = needs_handler && self.registration.is_none();
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

    /// Undoes [`before_start`](Self::before_start) after a start failed.
    pub(crate) fn abort_start(&mut self, acquired: bool) {
        if acquired {
            self.registration = None;
        }
    }

    /// Watches a child that has just started (or been adopted). With the
    /// `Pidfd` backend that opens its pidfd; if that fails (`EMFILE`), the
    /// child is watched through `SIGCHLD` instead, and if even the handler
    /// cannot be had, the error is returned: the caller must not keep a
    /// child nothing would report.
    pub(crate) fn watch(&mut self, pid: Pid) -> Result<Watch> {
        if !self.uses_pidfds() {
            return Ok(Watch::default());
        }
        let opened = crate::watch::pidfd::open(pid).and_then(|fd| self.poller.add(pid, fd));
        match opened {
            Ok(fd) => Ok(Watch {
                pidfd: Some(fd),
                ..Watch::default()
            }),
            Err(_e) => {
                #[cfg(feature = "log")]
                log::warn!("evchild: no pidfd for child {pid} ({_e}); watching it through SIGCHLD");
                if self.registration.is_none() {
                    self.registration = Some(process::register(self.pipe.write_raw())?);
                }
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

    /// A child has left the table: forget how it was watched (closing its
    /// pidfd, after taking it out of the epoll set). The last child with
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
    pub(crate) fn unwatch_keep_pidfd(&mut self, mut watch: Watch) -> Option<std::os::fd::OwnedFd> {
        let pidfd = watch.pidfd.take().map(Polled::into_fd);
        self.unwatch(watch);
        pidfd
    }

    /// Stop/continue reports for `pid`: they come through `SIGCHLD`
    /// whatever the backend, so this takes the handler (without
    /// `SA_NOCLDSTOP`).
    pub(crate) fn want_stops(&mut self, pid: Pid, watch: &mut Watch) -> Result<()> {
        if self.registration.is_none() {
            self.registration = Some(process::register(self.pipe.write_raw())?);
        }
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

    /// Sends `signal` to the child: through its pidfd where it has one
    /// (`ESRCH` then means it has been reaped, by someone else: never
    /// another process), otherwise with `kill(pid)`.
    pub(crate) fn signal(&self, pid: Pid, watch: &Watch, signal: libc::c_int) -> Result<()> {
        match &watch.pidfd {
            Some(pidfd) => crate::watch::pidfd::send_signal(pidfd.fd(), signal)
                .map_err(|e| Error::io("pidfd_send_signal", e)),
            None => crate::sys::kill(pid, signal).map_err(|e| Error::io("kill", e)),
        }
    }

    /// What needs doing, found without any wait call: one `epoll_wait`
    /// with no timeout on the inner set. Drains the wake pipe if it had
    /// bytes (before any reaping: a `SIGCHLD` that lands during the reap
    /// writes a new byte, so the loop wakes again), and leaves the pids of
    /// ready pidfds in `self.ready` and the keys of ready output streams in
    /// `self.streams`.
    pub(crate) fn collect(&mut self) -> io::Result<Woken> {
        self.ready.clear();
        self.streams.clear();
        let woken = self.poller.ready(&mut self.ready, &mut self.streams)?;
        if woken.pipe {
            self.pipe.drain()?;
        }
        if woken.timer {
            if let Some(timer) = &self.timer {
                crate::sys::timer_drain(timer.as_fd());
            }
            // The expiry is spent: `arm` sets the next one.
            self.armed = None;
        }
        Ok(woken)
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
            let made = crate::sys::timer_create().and_then(|fd| {
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
            if crate::sys::timer_set(timer.as_fd(), after).is_ok() {
                self.armed = next;
            }
        }
    }

    /// The reactor's epoll set, for the output streams (`output.rs`).
    pub(crate) fn poller(&self) -> &Poller {
        &self.poller
    }

    /// Whether a pipe wake-up calls for a `SIGCHLD`-driven pass over the
    /// children without a pidfd.
    pub(crate) fn scans(&self) -> bool {
        !self.uses_pidfds() || self.fallbacks > 0
    }

    /// The wake pipe's write end, for other reactors to wake this one
    /// (`routes`).
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.pipe.write_raw()
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
        let needed = match self.backend {
            Backend::Pidfd => self.fallbacks > 0 || self.stops > 0,
            _ => live > 0,
        };
        if !needed {
            self.registration = None;
        }
    }

    /// The reactor is going away: withdraw its claims (and its reap-all
    /// wake-up) from the routes while its pipe is still open.
    pub(crate) fn leave_routes(&self, reactor: u32) {
        let reap_all = self.reap_all.as_ref().map(|_| self.pipe.write_raw());
        crate::process::routes::forget_reactor(reactor, reap_all);
    }

    /// The reactor's descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.poller.fd()
    }

    /// In a forked child: closes this process's copies of the watcher's own
    /// descriptors (not the pidfds: see `Reactor`'s drop) with `close(2)`,
    /// which is async-signal-safe, and nothing else. The caller must then
    /// never drop `self` (its owned descriptors would be closed twice, and
    /// its registration and vectors would be freed).
    pub(crate) fn close_in_forked_child(&self) {
        let timer = self.timer.as_ref().map(AsRawFd::as_raw_fd);
        for fd in [
            self.poller.fd().as_raw_fd(),
            self.pipe.read_fd().as_raw_fd(),
            self.pipe.write_raw(),
        ]
        .into_iter()
        .chain(timer)
        {
            // SAFETY: close(2) on descriptors this process holds copies of;
            // the caller guarantees the owners are never dropped, so nothing
            // closes them again.
            unsafe { libc::close(fd) };
        }
    }
}
