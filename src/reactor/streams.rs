//! The pipes of `spawn_output` children in the reactor's epoll set: the
//! jobs (one per child, until its callback), the streams (one per pipe, by
//! slab key: the key is the stream's epoll data), reading and writing.
//!
//! Cost: reads go into one scratch buffer per reactor (64 KiB, made once)
//! and are copied onto the end of the output buffers, which therefore hold
//! what was read and no more (an empty stream keeps no capacity at all;
//! the buffers grow by doubling and are trimmed to their length before
//! `on_done`). Past a stream's cap, bytes are only counted. At most 1 MiB
//! per stream per `dispatch`, so a child that writes without end (`yes`)
//! cannot hold the loop; the reactor wakes itself to go on. No allocation
//! per wake-up beyond the buffers growing.
//!
//! Drain time: once a job's child has been reaped, a `Drain` deadline
//! (`deadlines.rs`) bounds the wait for end of file; when it comes due,
//! each stream still open is read once more (what is in the pipe is not
//! lost), then closed and marked cut.
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
use std::time::Duration;

use mio::unix::pipe::{Receiver, Sender};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
use slab::Slab;

use crate::reactor::output::Output;
use crate::reactor::Pending;
use crate::watch::Watcher;
use crate::{ChildId, Exit, Reactor};

/// Bytes read at once: the size of the scratch buffer.
const CHUNK: usize = 64 * 1024;
/// Bytes read from (or written to) one stream in one `dispatch`.
const BUDGET: usize = 1 << 20;

/// The callback of a `spawn_output` child.
pub(crate) type OnOutput<C> = Box<dyn FnOnce(&mut C, &mut Reactor<C>, Output) + Send>;

/// The per-chunk callback of a `spawn_output` child (`Reactor::on_output`).
pub(crate) type OnChunk<C> = Box<dyn FnMut(&mut C, ChildId, Stream, &[u8]) + Send>;

/// Which output stream of a [`spawn_output`](Reactor::spawn_output) child
/// a chunk comes from (see [`Reactor::on_output`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stream {
    /// The child's standard output.
    Stdout,
    /// The child's standard error.
    Stderr,
}

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
struct Piped {
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
    /// Bytes read from stdout and stderr, kept or not.
    pub(crate) totals: [u64; 2],
    /// Reading stopped before end of file on some stream.
    pub(crate) cut: bool,
    /// How long to wait for end of file once the child is reaped.
    pub(crate) drain: Option<Duration>,
    /// `terminate`'s grace when the time-out runs out.
    pub(crate) kill_grace: Duration,
    /// The time-out ran out and the child was told to terminate.
    pub(crate) timed_out: bool,
    pub(crate) input: Vec<u8>,
    pub(crate) written: usize,
    /// The keys of its streams still open: stdout, stderr, stdin.
    pub(crate) streams: [Option<usize>; 3],
    /// Called with each chunk read, in `dispatch` (`Reactor::on_output`).
    pub(crate) on_chunk: Option<OnChunk<C>>,
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
    streams: Slab<Piped>,
    /// What each read goes into first: `CHUNK` bytes, made at first use.
    scratch: Vec<u8>,
    /// Keys of the streams that are ready (filled by the watcher's
    /// `collect`), reused between dispatches.
    pub(crate) ready: Vec<usize>,
    /// In a forked child, the pipes were closed already.
    closed_in_child: bool,
}

impl<C> Default for Outputs<C> {
    fn default() -> Self {
        Outputs {
            jobs: Slab::new(),
            streams: Slab::new(),
            scratch: Vec::new(),
            ready: Vec::new(),
            closed_in_child: false,
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
        entry.insert(Piped { job, which, pipe });
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
            bufs: [mut stdout, mut stderr],
            truncated,
            totals,
            cut,
            timed_out,
            ..
        } = self.jobs.remove(job);
        // Hold what was read and no more (a no-op for an exact fit, or an
        // empty buffer).
        stdout.shrink_to_fit();
        stderr.shrink_to_fit();
        let output = Output {
            exit,
            stdout,
            stderr,
            stdout_truncated: truncated[STDOUT],
            stderr_truncated: truncated[STDERR],
            stdout_total: totals[STDOUT],
            stderr_total: totals[STDERR],
            cut,
            timed_out,
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

    /// Reads or writes stream `key` as far as it goes now, handing each
    /// chunk read to the job's `on_chunk` with `ctx`. Returns whether it
    /// has more to do at once (its budget ran out).
    pub(crate) fn service(
        &mut self,
        key: usize,
        poller: &Watcher,
        pending: &mut VecDeque<Pending<C>>,
        ctx: &mut C,
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
                let kept = Kept {
                    buf: &mut job.bufs[w],
                    cap: job.caps[w],
                    total: &mut job.totals[w],
                    truncated: &mut job.truncated[w],
                };
                let which = if w == STDOUT {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                };
                let mut sink = |bytes: &[u8]| {
                    if let (Some(on_chunk), Some(id)) = (job.on_chunk.as_mut(), job.id) {
                        on_chunk(ctx, id, which, bytes);
                    }
                };
                read(pipe, kept, &mut self.scratch, &mut sink)
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

    /// Stops reading job `job`'s stdout and stderr (the drain time ran
    /// out, or `close_output`): reads each stream still open once more if
    /// `last_read` gives the context for it (up to the budget: what is in
    /// the pipe is not lost),
    /// then closes those still open and marks them truncated and the job
    /// cut. Queues the callback if the child has been reaped.
    pub(crate) fn cut(
        &mut self,
        job: usize,
        mut last_read: Option<&mut C>,
        poller: &Watcher,
        pending: &mut VecDeque<Pending<C>>,
    ) {
        for which in [STDOUT, STDERR] {
            let key = self.jobs.get(job).and_then(|entry| entry.streams[which]);
            if let (Some(key), Some(ctx)) = (key, last_read.as_deref_mut()) {
                self.service(key, poller, pending, ctx);
            }
        }
        let Some(entry) = self.jobs.get_mut(job) else {
            return;
        };
        if entry.queued {
            return;
        }
        let open: Vec<usize> = [STDOUT, STDERR]
            .into_iter()
            .filter_map(|which| entry.streams[which].map(|key| (which, key)))
            .map(|(which, key)| {
                entry.truncated[which] = true;
                entry.cut = true;
                key
            })
            .collect();
        for key in open {
            self.close(key, poller);
        }
        self.complete_if_done(job, poller, pending);
    }

    /// The job of child `id`.
    pub(crate) fn find(&self, id: ChildId) -> Option<usize> {
        self.jobs
            .iter()
            .find(|(_, job)| job.id == Some(id) && !job.queued)
            .map(|(key, _)| key)
    }

    /// In a forked child: the numbers of this process's copies of the
    /// pipes, to close with `close(2)` (async-signal-safe); the caller then
    /// never drops `self`. Empty once [`close_in_child`](Self::close_in_child)
    /// has closed them.
    pub(crate) fn fds_in_forked_child(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        // No EPOLL_CTL_DEL: the epoll set is shared with the parent.
        self.streams
            .iter()
            .filter(|_| !self.closed_in_child)
            .map(|(_, stream)| stream.pipe.fd().as_raw_fd())
    }

    /// In the child of `Reactor::fork`, before any of the caller's code:
    /// closes this process's copies of the pipes, so that a child forked
    /// without exec never holds a `spawn_output` child's stdin (which would
    /// then never see end of file) or its stdout and stderr. Async-signal-
    /// safe: `close(2)` and a plain store; nothing is freed.
    pub(crate) fn close_in_child(&mut self) {
        crate::sys::close_in_forked_child(self.fds_in_forked_child());
        self.closed_in_child = true;
    }
}

/// Where a read stream's bytes go: the kept buffer (up to its cap), the
/// count of everything read, and whether anything was not kept.
struct Kept<'a> {
    buf: &'a mut Vec<u8>,
    cap: usize,
    total: &'a mut u64,
    truncated: &'a mut bool,
}

/// Reads `pipe` into `scratch`, then onto the end of the kept buffer (up to
/// its cap; the rest is counted, not kept) and to `sink`, until it would
/// block, ends, or the budget runs out.
fn read(
    pipe: &mut Receiver,
    kept: Kept<'_>,
    scratch: &mut Vec<u8>,
    sink: &mut dyn FnMut(&[u8]),
) -> Flow {
    if scratch.is_empty() {
        scratch.resize(CHUNK, 0);
    }
    let mut budget = BUDGET;
    while budget > 0 {
        match pipe.read(scratch) {
            Ok(0) => return Flow::Done,
            Ok(n) => {
                *kept.total = kept.total.saturating_add(n as u64);
                let keep = n.min(kept.cap.saturating_sub(kept.buf.len()));
                kept.buf.extend_from_slice(&scratch[..keep]);
                *kept.truncated |= keep < n;
                budget = budget.saturating_sub(n);
                // Last: a panicking callback leaves the bytes counted.
                sink(&scratch[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // Not for a pipe we made; whatever it was, nothing more
                // will come through it.
                *kept.truncated = true;
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
