//! The pipes of `spawn_output` children in the reactor's epoll set: the
//! jobs (one per child, until its callback), the streams (one per pipe, by
//! slab key: the key is the stream's epoll data), reading and writing.
//!
//! Cost: reads go straight into the output buffers (64 KiB at a time);
//! past a stream's cap into one scratch buffer per reactor, made once. At
//! most 1 MiB per stream per `dispatch`, so a child that writes without
//! end (`yes`) cannot hold the loop; the reactor wakes itself to go on. No
//! allocation per wake-up beyond the buffers growing.
//!
//! Writing the input: `write(2)` to a pipe whose reader is gone raises
//! `SIGPIPE`, which kills a process that has not ignored it (a library must
//! not assume it has). So the writes block `SIGPIPE` in the calling thread
//! (`pthread_sigmask`), and after an `EPIPE` take the signal they raised
//! off the thread's pending set (`sigtimedwait` with a zero timeout) before
//! unblocking: two more system calls per wake-up of a stdin stream.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};

use mio::unix::pipe::{Receiver, Sender};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use slab::Slab;

use crate::reactor::output::Output;
use crate::reactor::Pending;
use crate::watch::Watcher;
use crate::{ChildId, Exit, Reactor};

/// Bytes read at once into an output buffer, and the size of the scratch
/// buffer for output past a cap.
const CHUNK: usize = 64 * 1024;
/// Bytes read from (or written to) one stream in one `dispatch`.
const BUDGET: usize = 1 << 20;

/// The callback of a `spawn_output` child.
pub(crate) type OnOutput<C> = Box<dyn FnOnce(&mut C, &mut Reactor<C>, Output) + Send>;

/// Stdout, stderr, stdin: the index of a stream in a job.
pub(crate) const STDOUT: usize = 0;
pub(crate) const STDERR: usize = 1;
pub(crate) const STDIN: usize = 2;

#[derive(Debug)]
pub(crate) enum Pipe {
    Read(Receiver),
    Write(Sender),
}

impl Pipe {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Pipe::Read(r) => r.as_fd(),
            Pipe::Write(w) => w.as_fd(),
        }
    }
}

/// A pipe in the reactor's epoll set, under its slab key.
#[derive(Debug)]
struct Stream {
    job: usize,
    which: usize,
    pipe: Pipe,
}

/// One `spawn_output` child, from its start until its callback.
pub(crate) struct Job<C> {
    /// `None` only while its start is in progress (or if it failed half-way).
    pub(crate) id: Option<ChildId>,
    pub(crate) on_done: OnOutput<C>,
    /// Its death report, once it came.
    pub(crate) exit: Option<Exit>,
    pub(crate) bufs: [Vec<u8>; 2],
    pub(crate) caps: [usize; 2],
    pub(crate) truncated: [bool; 2],
    pub(crate) input: Vec<u8>,
    pub(crate) written: usize,
    /// The keys of its streams still open: stdout, stderr, stdin.
    pub(crate) streams: [Option<usize>; 3],
    /// Its callback is queued (`complete_if_done`).
    pub(crate) queued: bool,
}

impl<C> Job<C> {
    /// Whether stdout or stderr is still open (stdin does not count: it is
    /// closed when the rest is done).
    pub(crate) fn reading(&self) -> bool {
        self.streams[STDOUT].is_some() || self.streams[STDERR].is_some()
    }
}

/// A reactor's `spawn_output` children and their pipes.
pub(crate) struct Outputs<C> {
    pub(crate) jobs: Slab<Job<C>>,
    streams: Slab<Stream>,
    /// Where output past a cap goes: `CHUNK` bytes, made at first use.
    discard: Vec<u8>,
    /// Keys of the streams that are ready (filled by the watcher's
    /// `collect`), reused between dispatches.
    pub(crate) ready: Vec<usize>,
}

impl<C> Default for Outputs<C> {
    fn default() -> Self {
        Outputs {
            jobs: Slab::new(),
            streams: Slab::new(),
            discard: Vec::new(),
            ready: Vec::new(),
        }
    }
}

/// How a read or write pass over one stream ended.
#[derive(PartialEq, Eq)]
enum Flow {
    /// Nothing more now (`EAGAIN`).
    Drained,
    /// The budget ran out with more to do: the reactor must wake itself.
    More,
    /// End of file, everything written, `EPIPE`, or an error: close it.
    Done,
}

impl<C> Outputs<C> {
    /// Takes a stream out of the set and closes it.
    pub(crate) fn close(&mut self, key: usize, poller: &Watcher) {
        if let Some(stream) = self.streams.try_remove(key) {
            poller.remove_stream(stream.pipe.fd());
            if let Some(job) = self.jobs.get_mut(stream.job) {
                job.streams[stream.which] = None;
            }
        }
    }

    /// Adds `pipe` as stream `which` of job `job`.
    pub(crate) fn add(
        &mut self,
        job: usize,
        which: usize,
        pipe: Pipe,
        poller: &Watcher,
    ) -> io::Result<()> {
        let entry = self.streams.vacant_entry();
        let key = entry.key();
        poller.add_stream(pipe.fd(), key, matches!(pipe, Pipe::Write(_)))?;
        entry.insert(Stream { job, which, pipe });
        self.jobs[job].streams[which] = Some(key);
        Ok(())
    }

    /// Removes a finished job (its streams closed) and returns its callback
    /// and output.
    pub(crate) fn finish(
        &mut self,
        job: usize,
        exit: Exit,
        poller: &Watcher,
    ) -> (OnOutput<C>, Output) {
        for key in self.jobs[job].streams.into_iter().flatten() {
            self.close(key, poller);
        }
        let Job {
            on_done,
            bufs: [stdout, stderr],
            truncated,
            ..
        } = self.jobs.remove(job);
        let output = Output {
            exit,
            stdout,
            stderr,
            stdout_truncated: truncated[STDOUT],
            stderr_truncated: truncated[STDERR],
        };
        (on_done, output)
    }

    /// If job `job` has its death report and both end-of-files, closes its
    /// stdin if still open and queues its callback (which finds the job by
    /// its key: the job stays until then).
    pub(crate) fn complete_if_done(
        &mut self,
        job: usize,
        poller: &Watcher,
        pending: &mut VecDeque<Pending<C>>,
    ) {
        let Some(entry) = self.jobs.get_mut(job) else {
            return;
        };
        if entry.reading() || entry.queued {
            return;
        }
        let Some(exit) = entry.exit.take() else {
            return;
        };
        entry.queued = true;
        if let Some(key) = entry.streams[STDIN] {
            self.close(key, poller);
        }
        let deliver = move |ctx: &mut C, reactor: &mut Reactor<C>, exit: Exit| {
            let (on_done, output) = reactor.outputs.finish(job, exit, &reactor.watcher);
            on_done(ctx, reactor, output);
        };
        pending.push_back(Pending::Death(Box::new(deliver), exit));
    }

    /// Reads or writes stream `key` as far as it goes now. Returns whether
    /// it has more to do at once (its budget ran out).
    pub(crate) fn service(
        &mut self,
        key: usize,
        poller: &Watcher,
        pending: &mut VecDeque<Pending<C>>,
    ) -> bool {
        let Some(stream) = self.streams.get_mut(key) else {
            return false; // closed earlier in this pass
        };
        let Some(job) = self.jobs.get_mut(stream.job) else {
            return false;
        };
        let flow = match &mut stream.pipe {
            Pipe::Read(pipe) => {
                let w = stream.which;
                let (buf, cap) = (&mut job.bufs[w], job.caps[w]);
                read(pipe, buf, cap, &mut job.truncated[w], &mut self.discard)
            }
            Pipe::Write(pipe) => write(pipe, &job.input, &mut job.written),
        };
        if flow == Flow::Done {
            let job = stream.job;
            self.close(key, poller);
            self.complete_if_done(job, poller, pending);
        }
        flow == Flow::More
    }

    /// The job of child `id`.
    pub(crate) fn find(&self, id: ChildId) -> Option<usize> {
        self.jobs
            .iter()
            .find(|(_, job)| job.id == Some(id) && !job.queued)
            .map(|(key, _)| key)
    }

    /// In a forked child: closes this process's copies of the pipes with
    /// `close(2)` (async-signal-safe) and nothing else. The caller must never
    /// drop `self` afterwards.
    pub(crate) fn fds_in_forked_child(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        // No EPOLL_CTL_DEL: the epoll set is shared with the parent.
        self.streams
            .iter()
            .map(|(_, stream)| stream.pipe.fd().as_raw_fd())
    }
}

/// Reads `pipe` into `buf` (up to `cap`, the rest into `discard`) until it
/// would block, ends, or the budget runs out.
fn read(
    pipe: &mut Receiver,
    buf: &mut Vec<u8>,
    cap: usize,
    truncated: &mut bool,
    discard: &mut Vec<u8>,
) -> Flow {
    let mut budget = BUDGET;
    while budget > 0 {
        let room = cap.saturating_sub(buf.len());
        let result = if room > 0 {
            // Straight into the buffer: grow it (amortised), read, trim.
            let len = buf.len();
            buf.resize(len + room.min(CHUNK), 0);
            let result = pipe.read(&mut buf[len..]);
            buf.truncate(len + result.as_ref().map_or(0, |&n| n));
            result
        } else {
            if discard.is_empty() {
                discard.resize(CHUNK, 0);
            }
            let result = pipe.read(discard);
            *truncated |= matches!(result, Ok(n) if n > 0);
            result
        };
        match result {
            Ok(0) => return Flow::Done,
            Ok(n) => budget = budget.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // Not for a pipe we made; whatever it was, nothing more
                // will come through it.
                *truncated = true;
                return Flow::Done;
            }
        }
    }
    Flow::More
}

/// Writes `input[*written..]` to `pipe` until it is all written, the pipe
/// is full, or the budget runs out. `EPIPE` (the child closed its stdin)
/// ends it, quietly.
fn write(pipe: &mut Sender, input: &[u8], written: &mut usize) -> Flow {
    let guard = SigpipeBlocked::new();
    let mut budget = BUDGET;
    while *written < input.len() {
        if budget == 0 {
            return Flow::More;
        }
        let end = input.len().min(*written + budget);
        match pipe.write(&input[*written..end]) {
            Ok(n) => {
                *written += n;
                budget -= n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    guard.take_pending();
                }
                return Flow::Done;
            }
        }
    }
    Flow::Done
}

/// `SIGPIPE` blocked in this thread while it lives (unless it already was).
struct SigpipeBlocked {
    /// We blocked it (it was not blocked before), so we unblock it.
    ours: bool,
}

impl SigpipeBlocked {
    fn new() -> Self {
        let mut set = SigSet::empty();
        set.add(Signal::SIGPIPE);
        let mut old = SigSet::empty();
        let ours = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).is_ok()
            && !old.contains(Signal::SIGPIPE);
        SigpipeBlocked { ours }
    }

    /// After `EPIPE`: takes the `SIGPIPE` our write raised off this thread's
    /// pending set, so unblocking does not deliver it. (Had it been blocked
    /// before, it stays pending, as the application arranged.)
    fn take_pending(&self) {
        if !self.ours {
            return;
        }
        // SIGPIPE is blocked in this thread (by us), as required.
        crate::sys::take_pending_sigpipe();
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        if self.ours {
            let mut set = SigSet::empty();
            set.add(Signal::SIGPIPE);
            let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
        }
    }
}
