//! The reactor's one descriptor: an epoll set holding its wake pipe, with
//! the pidfd backend each child's pidfd, and the pipes of children whose
//! output the reactor collects (`spawn_output`).
//!
//! The loop watches only the epoll descriptor, which is readable whenever
//! anything inside is; so the descriptor never changes whatever the backend,
//! and a loop registers it once. Inside, the pipe, the timer, the orphan set
//! and the streams are level-triggered: `dispatch` empties the pipe, so the
//! set goes quiet and the loop's edge-triggered registration sees the next
//! event as a new edge. A pidfd is one-shot (`EPOLLONESHOT`): a child dies
//! once, so its pidfd is reported once and then disarmed. That is what lets
//! its close take it out of the set without an `EPOLL_CTL_DEL`: if a child
//! forked without exec holds a copy of the pidfd, the closed pidfd's entry
//! stays in the set, but disarmed, so it can never make the set readable
//! again (not even at the reap, which notifies the pidfd once more).
//! (An entry that has not fired when its pidfd is closed may still fire
//! once; its epoll data names the registration, so that report is told
//! apart from a live child's and dropped.) The one child whose exit is
//! notified twice, a zombie another process's tracer holds (reapable only
//! after the second notification, when the tracer lets go), is the
//! watcher's business: it takes the `SIGCHLD` handler while such a child
//! waits (`Watcher::reap_fired`; `tests/regress_foreign_tracer.rs`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::Pid;

/// The epoll data of the wake pipe. Pidfds carry their (positive, so
/// below 2^31) pid in the low 32 bits and the low 30 bits of their
/// registration's serial above ([`pidfd_data`]); output streams carry
/// [`STREAM`] plus their slab key.
const PIPE: u64 = u64::MAX;
/// The epoll data of the deadline timer (`timerfd`).
const TIMER: u64 = u64::MAX - 1;
/// The orphan set (`process::orphans`), nested.
const ORPHANS: u64 = u64::MAX - 2;
/// The tag bit of an output stream's epoll data; the bits below it are the
/// stream's key (`output.rs`). Above every pidfd's data, and `PIPE`,
/// `TIMER` and `ORPHANS` are told apart first.
const STREAM: u64 = 1 << 62;

/// A pidfd's epoll data: its pid and (the low 30 bits of) the serial of its
/// registration, so a report of a pidfd closed since is not taken for the
/// report of a later child with the same pid.
fn pidfd_data(pid: Pid, serial: u64) -> Option<u64> {
    let pid = u64::try_from(pid.as_raw()).ok()?;
    Some((serial & ((1 << 30) - 1)) << 32 | pid)
}

/// A ready pidfd, as its epoll data names it: the pid, and the low 30 bits
/// of the serial of the registration it was added for. Compare with
/// [`Tag::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) pid: Pid,
    serial: u32,
}

impl Tag {
    /// The tag a registration's pidfd carries.
    pub(crate) fn of(pid: Pid, serial: u64) -> Tag {
        Tag {
            pid,
            serial: (serial & ((1 << 30) - 1)) as u32,
        }
    }

    fn from_data(data: u64) -> Option<Tag> {
        let pid = libc::pid_t::try_from(data & 0xffff_ffff).ok()?;
        Some(Tag {
            pid: Pid::from_raw(pid),
            serial: (data >> 32) as u32,
        })
    }
}

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

    /// Watches `pidfd` for the exit of `pid`, registered as `serial`:
    /// reported once (one-shot), then disarmed; closing the returned guard
    /// takes it out of the set.
    pub(crate) fn add(
        &self,
        pid: Pid,
        serial: u64,
        pidfd: OwnedFd,
    ) -> io::Result<crate::watch::pidfd::Polled> {
        let data = pidfd_data(pid, serial).ok_or(Errno::EINVAL)?;
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT;
        self.epoll.add(&pidfd, EpollEvent::new(flags, data))?;
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

    /// The tags of the pidfds ready now (`epoll_wait` with no timeout),
    /// into `out` (each reported once: they are one-shot), the keys of the ready output streams into `streams`, and
    /// whether the wake pipe is readable. Reads until the kernel has nothing
    /// more, so nothing stays ready unseen.
    pub(crate) fn ready(
        &mut self,
        out: &mut Vec<Tag>,
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
                    out.extend(Tag::from_data(data));
                }
            }
            // A full buffer may have left more behind: ask again (the
            // pidfds returned are disarmed, so they are not returned twice;
            // a level-triggered stream may be: duplicates are dropped), with
            // a bigger buffer.
            if n < self.events.len() {
                return Ok(woken);
            }
            let bigger = self.events.len() * 2;
            self.events.resize(bigger, EpollEvent::empty());
            let more = self.ready(out, streams)?;
            streams.sort_unstable();
            streams.dedup();
            return Ok(Woken {
                pipe: woken.pipe || more.pipe,
                timer: woken.timer || more.timer,
                orphans: woken.orphans || more.orphans,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel side of the one-shot pidfds: a pidfd closed while a copy
    /// lives on (as in a child forked without exec) stays in the set; it
    /// reports the death once, with the tag of the registration it was
    /// added for (not that of a later registration of the same pid), and
    /// then never again, not even when the reap notifies the pidfd once
    /// more, so the set goes quiet.
    #[test]
    fn a_closed_pidfd_with_a_live_copy_reports_once_with_its_own_tag() {
        let Ok(pipe) = crate::sys::wake_pipe() else {
            panic!("pipe2")
        };
        let mut poller = Poller::new(pipe.read_fd()).expect("epoll");
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = Pid::from_raw(child.id() as libc::pid_t);
        let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
            evchild_testkit::skip!("no pidfd_open here");
            let _ = child.wait();
            return;
        };
        let copy = pidfd.try_clone().expect("dup");
        let polled = poller.add(pid, 7, pidfd).expect("add");
        drop(polled);
        // Dead (not reaped): the pidfd is readable.
        nix::poll::poll(
            std::slice::from_mut(&mut nix::poll::PollFd::new(
                copy.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )),
            nix::poll::PollTimeout::from(10_000u16),
        )
        .expect("poll");
        let (mut tags, mut streams) = (Vec::new(), Vec::new());
        poller.ready(&mut tags, &mut streams).expect("ready");
        assert_eq!(tags, [Tag::of(pid, 7)]);
        assert_ne!(tags[0], Tag::of(pid, 8), "a later registration's tag");
        assert_ne!(tags[0], Tag::of(pid, 7 + (1 << 30) + 1));
        for _ in 0..3 {
            tags.clear();
            poller.ready(&mut tags, &mut streams).expect("ready");
            assert_eq!(tags, [], "reported again");
        }
        child.wait().expect("wait");
        tags.clear();
        poller.ready(&mut tags, &mut streams).expect("ready");
        assert_eq!(tags, [], "reported again after the reap");
        drop(copy);
    }

    #[test]
    fn tags_keep_pid_and_serial_apart_from_the_other_kinds() {
        for (pid, serial) in [(1, 0), (4_194_304, 1 << 29), (i32::MAX, (1 << 30) - 1)] {
            let pid = Pid::from_raw(pid);
            let data = pidfd_data(pid, serial).expect("data");
            assert!(data & STREAM == 0 && data < ORPHANS);
            assert_eq!(Tag::from_data(data), Some(Tag::of(pid, serial)));
        }
        assert_eq!(pidfd_data(Pid::from_raw(-1), 0), None);
    }
}
