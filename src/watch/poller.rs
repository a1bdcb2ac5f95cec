//! The reactor's one descriptor: an epoll set holding its wake pipe, with
//! the pidfd backend each child's pidfd, and the pipes of children whose
//! output the reactor collects (`spawn_output`).
//!
//! The loop watches only the epoll descriptor, which is readable whenever
//! anything inside is; so the descriptor never changes whatever the backend,
//! and a loop registers it once. Inside, everything is level-triggered:
//! `dispatch` empties the pipe and reaps (closing) every ready pidfd, so the
//! set goes quiet and the loop's edge-triggered registration sees the next
//! event as a new edge.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::Pid;

/// The epoll data of the wake pipe. Pidfds carry their (positive, so
/// below 2^31) pid; output streams carry [`STREAM`] plus their slab key.
const PIPE: u64 = u64::MAX;
/// The epoll data of the deadline timer (`timerfd`).
const TIMER: u64 = u64::MAX - 1;
/// The orphan set (`process::orphans`), nested.
const ORPHANS: u64 = u64::MAX - 2;
/// The tag bit of an output stream's epoll data; the bits below it are the
/// stream's key (`output.rs`). Above every pid, and `PIPE` is told apart
/// first.
const STREAM: u64 = 1 << 40;

/// What the inner set said besides pidfds and streams.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Woken {
    /// The wake pipe has bytes (a `SIGCHLD`, a routed status, or a
    /// self-wake).
    pub(crate) pipe: bool,
    /// The deadline timer expired.
    pub(crate) timer: bool,
    /// An orphan died (the nested orphan set is ready).
    pub(crate) orphans: bool,
}

#[derive(Debug)]
pub(crate) struct Poller {
    epoll: Epoll,
    events: Vec<EpollEvent>,
}

impl Poller {
    /// `epoll_create1(EPOLL_CLOEXEC)`, made non-blocking too (like every
    /// descriptor a loop watches), with `pipe` inside.
    pub(crate) fn new(pipe: BorrowedFd<'_>) -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let flags = OFlag::from_bits_retain(fcntl(&epoll.0, FcntlArg::F_GETFL)?);
        fcntl(&epoll.0, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        epoll.add(pipe, EpollEvent::new(EpollFlags::EPOLLIN, PIPE))?;
        Ok(Poller {
            epoll,
            events: Vec::new(),
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// Nests the process's orphan set.
    pub(crate) fn add_orphans(&self, set: BorrowedFd<'_>) -> io::Result<()> {
        self.epoll
            .add(set, EpollEvent::new(EpollFlags::EPOLLIN, ORPHANS))?;
        Ok(())
    }

    /// Watches `pidfd` for `pid`'s exit, until the returned guard is
    /// dropped.
    pub(crate) fn add(&self, pid: Pid, pidfd: OwnedFd) -> io::Result<crate::watch::pidfd::Polled> {
        let data = u64::try_from(pid.as_raw()).map_err(|_| Errno::EINVAL)?;
        self.epoll
            .add(&pidfd, EpollEvent::new(EpollFlags::EPOLLIN, data))?;
        Ok(crate::watch::pidfd::Polled::new(
            pidfd,
            self.epoll.0.as_raw_fd(),
        ))
    }

    /// Watches an output stream (a child's stdout or stderr read end, for
    /// `EPOLLIN`, or its stdin write end, for `EPOLLOUT`), level-triggered,
    /// under `key`, until [`remove_stream`](Self::remove_stream).
    pub(crate) fn add_stream(
        &self,
        fd: BorrowedFd<'_>,
        key: usize,
        writable: bool,
    ) -> io::Result<()> {
        let key = u64::try_from(key).ok().filter(|&k| k < STREAM);
        let data = STREAM | key.ok_or(Errno::EINVAL)?;
        let flags = if writable {
            EpollFlags::EPOLLOUT
        } else {
            EpollFlags::EPOLLIN
        };
        self.epoll.add(fd, EpollEvent::new(flags, data))?;
        Ok(())
    }

    /// Watches the deadline timer (a `timerfd`) for as long as it is open.
    pub(crate) fn add_timer(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, TIMER))?;
        Ok(())
    }

    /// Takes a stream out of the set, before it is closed (a forked child may
    /// hold a copy of the descriptor, which would keep it in the set).
    pub(crate) fn remove_stream(&self, fd: BorrowedFd<'_>) {
        // ENOENT would only mean it was not in the set.
        let _ = self.epoll.delete(fd);
    }

    /// The pids whose pidfds are ready now (`epoll_wait` with no timeout),
    /// into `out`, the keys of the ready output streams into `streams`, and
    /// whether the wake pipe is readable. Reads until the kernel has nothing
    /// more, so nothing stays ready unseen.
    pub(crate) fn ready(
        &mut self,
        out: &mut Vec<Pid>,
        streams: &mut Vec<usize>,
    ) -> io::Result<Woken> {
        if self.events.is_empty() {
            self.events.resize(64, EpollEvent::empty());
        }
        loop {
            let n = match self.epoll.wait(&mut self.events, 0u8) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let woken = Woken {
                pipe: self.events[..n].iter().any(|e| e.data() == PIPE),
                timer: self.events[..n].iter().any(|e| e.data() == TIMER),
                orphans: self.events[..n].iter().any(|e| e.data() == ORPHANS),
            };
            for data in self.events[..n].iter().map(EpollEvent::data) {
                if data == PIPE || data == TIMER || data == ORPHANS {
                    continue;
                }
                if data & STREAM != 0 {
                    streams.extend(usize::try_from(data & (STREAM - 1)).ok());
                } else {
                    out.extend(libc::pid_t::try_from(data).ok().map(Pid::from_raw));
                }
            }
            // A full buffer may have left more behind; the ones returned are
            // reaped before the next call, so it cannot return them again,
            // but the caller reaps only after we return: ask once with a
            // bigger buffer instead.
            if n < self.events.len() {
                return Ok(woken);
            }
            let bigger = self.events.len() * 2;
            self.events.resize(bigger, EpollEvent::empty());
            out.clear();
            streams.clear();
        }
    }
}
