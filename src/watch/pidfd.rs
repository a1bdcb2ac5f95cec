//! A child's pidfd in its reactor's epoll set.
//!
//! With the `Pidfd` backend each child's pidfd sits in the reactor's epoll
//! set, so a wake-up names exactly the children that died: O(k) selective
//! reaping for k exits, and no `SIGCHLD` handler at all. The price is one
//! descriptor per live child: every later spawn copies the descriptor table
//! into the new process (and closes the close-on-exec entries at exec), and
//! `RLIMIT_NOFILE` caps the number of children.
//!
//! The pidfd is the child's identity: readiness, reaping
//! (`waitid(P_PIDFD)`, Linux ≥ 5.4) and every signal
//! (`pidfd_send_signal`) go through it, so a pid that other code reaped and
//! the kernel gave to another process is never waited for or signalled in
//! the child's place.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// A pidfd in a reactor's epoll set, one-shot (see `poller.rs`).
///
/// Dropping it closes the pidfd, which takes it out of the set with no
/// system call of its own: the set holds no reference to the descriptor.
/// If a child forked without exec holds a copy, the entry outlives the
/// close, but one-shot: a pidfd that has fired is disarmed, and one that
/// has not fires at most once more, with a tag that names no registered
/// child (see `Watcher::reap_fired`). Handing it out ([`into_fd`](Self::into_fd))
/// does take it out (`EPOLL_CTL_DEL`), since it lives on elsewhere.
#[derive(Debug)]
pub(crate) struct Polled {
    /// `None` only once handed out (`into_fd`).
    fd: Option<OwnedFd>,
    /// The reactor's epoll set, which outlives every `Polled` of it (the
    /// reactor drops its children before its watcher).
    epoll: RawFd,
}

impl Polled {
    pub(crate) fn new(fd: OwnedFd, epoll: RawFd) -> Self {
        Polled {
            fd: Some(fd),
            epoll,
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            Some(fd) => fd.as_fd(),
            None => unreachable!("a handed-out pidfd is never used"),
        }
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd().as_raw_fd()
    }

    /// Out of the set, for the caller to keep.
    pub(crate) fn into_fd(mut self) -> OwnedFd {
        self.remove();
        match self.fd.take() {
            Some(fd) => fd,
            None => unreachable!("handed out once"),
        }
    }

    fn remove(&self) {
        if let Some(fd) = &self.fd {
            crate::sys::epoll_del(self.epoll, fd.as_raw_fd());
        }
    }
}
