//! Collecting a child's output in the loop: `spawn_output`, the event-loop
//! equivalent of `Command::output()`.
//!
//! The child's stdout and stderr read ends (and its stdin write end, when
//! the application gives input) go into the reactor's own epoll set, next
//! to the wake pipe and the pidfds, level-triggered, under a tagged key
//! (see `poller.rs`). So the application's `Poll` needs no extra token: the
//! reactor's one descriptor becomes readable when output is there, and
//! `dispatch` reads it. Both streams are read as they come, so a child that
//! fills one pipe while we wait on the other never blocks, and without a
//! thread. The streams themselves (reading, writing, the cost) are in
//! `streams.rs`.

use std::fmt;
use std::process::{Command, Stdio};

use crate::reactor::streams::{Job, Pipe, STDERR, STDOUT};
use crate::{ChildId, Error, Exit, Reactor, Result};

/// What [`Reactor::spawn_output`] gives the child and keeps of its output.
///
/// ```
/// use evchild::OutputOptions;
/// // Feed "hello" to the child's stdin; keep at most 1 MiB of each stream.
/// let options = OutputOptions::new().stdin(b"hello".to_vec()).cap(1 << 20);
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct OutputOptions {
    stdin: Option<Vec<u8>>,
    caps: [usize; 2],
}

impl OutputOptions {
    /// No input (the command's own stdin setting stands), no cap.
    pub fn new() -> Self {
        OutputOptions {
            stdin: None,
            caps: [usize::MAX; 2],
        }
    }

    /// Writes `input` to the child's stdin (a pipe), as the pipe accepts it,
    /// then closes it, so the child sees end of file. If the child closes
    /// its stdin before reading it all (`head -c 1`), the rest is dropped:
    /// that is no error. Without this, the command's stdin is what the
    /// [`Command`] says (by default, inherited: set `Stdio::null()` for
    /// none, as `Command::output` does).
    pub fn stdin(mut self, input: Vec<u8>) -> Self {
        self.stdin = Some(input);
        self
    }

    /// Keeps at most `bytes` of stdout and of stderr each; see
    /// [`stdout_cap`](Self::stdout_cap).
    pub fn cap(self, bytes: usize) -> Self {
        self.stdout_cap(bytes).stderr_cap(bytes)
    }

    /// Keeps at most `bytes` of stdout. What comes past it is still read
    /// (the child never blocks on a full pipe) and discarded, and
    /// [`Output::stdout_truncated`] says so.
    pub fn stdout_cap(mut self, bytes: usize) -> Self {
        self.caps[0] = bytes;
        self
    }

    /// Keeps at most `bytes` of stderr, as
    /// [`stdout_cap`](Self::stdout_cap) does for stdout.
    pub fn stderr_cap(mut self, bytes: usize) -> Self {
        self.caps[1] = bytes;
        self
    }
}

impl Default for OutputOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for OutputOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputOptions")
            .field("stdin", &self.stdin.as_ref().map(Vec::len))
            .field("stdout_cap", &self.caps[0])
            .field("stderr_cap", &self.caps[1])
            .finish()
    }
}

/// What a [`spawn_output`](Reactor::spawn_output) child left: its death
/// report and everything it wrote (up to the caps), in one callback.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Output {
    /// The child's death report, as a death callback gets it (a
    /// [`Lost`](crate::Outcome::Lost) child still delivers its output).
    pub exit: Exit,
    /// What the child wrote to stdout.
    pub stdout: Vec<u8>,
    /// What the child wrote to stderr.
    pub stderr: Vec<u8>,
    /// Whether stdout holds less than the child wrote: it went past the cap,
    /// the reading was stopped ([`Reactor::close_output`]), or reading
    /// failed.
    pub stdout_truncated: bool,
    /// The same for stderr.
    pub stderr_truncated: bool,
}

impl<C> Reactor<C> {
    /// Starts `command` and collects its output in the loop, the event-loop
    /// `Command::output()`: `on_done` runs once, in `dispatch`, with the
    /// child's death report and everything it wrote to stdout and stderr.
    ///
    /// ```
    /// use std::process::Command;
    /// use evchild::{Hooks, Output, OutputOptions, Reactor};
    ///
    /// let mut children = Reactor::<Option<Output>>::new(Hooks::default())?;
    /// children.spawn_output(
    ///     Command::new("sh").args(["-c", "tr a-z A-Z; echo oops >&2; exit 3"]),
    ///     OutputOptions::new().stdin(b"hello\n".to_vec()),
    ///     |done, _, output| *done = Some(output),
    /// )?;
    /// let mut done = None;
    /// while done.is_none() {
    ///     children.dispatch(&mut done)?; // a real program waits in mio::Poll
    /// }
    /// let output = done.unwrap();
    /// assert_eq!(output.stdout, b"HELLO\n");
    /// assert_eq!(output.stderr, b"oops\n");
    /// assert_eq!(output.exit.status().and_then(|s| s.code()), Some(3));
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// The command's stdout and stderr are set to `Stdio::piped()` (and its
    /// stdin too, with [`OutputOptions::stdin`]; otherwise its stdin is
    /// what the command says). The pipes go into the reactor's own epoll
    /// set: the loop needs no other token, the reactor becomes readable
    /// when output comes, and `dispatch` reads both streams as they fill
    /// (so a child that fills one while we wait on the other never blocks)
    /// and feeds the input as the pipe accepts it.
    ///
    /// `on_done` runs once the child has been reaped **and** both streams
    /// reached end of file. A descendant that keeps them open (a
    /// background job of a shell) delays it until it exits or closes them,
    /// as with `Command::output`; [`close_output`](Reactor::close_output)
    /// stops waiting. The child leaves [`len`](Reactor::len) at its death,
    /// which may come before its callback.
    ///
    /// Otherwise it is a child like any other: exactly one report (an
    /// [`Outcome::Lost`](crate::Outcome::Lost) child still delivers what
    /// was read), [`kill`](Reactor::kill) and
    /// [`terminate`](Reactor::terminate) take its id, and dropping the
    /// reactor applies the [`DropPolicy`](crate::DropPolicy) to it, closes
    /// its pipes (a child that writes on gets `SIGPIPE`) and drops
    /// `on_done` uncalled ([`forget`](Reactor::forget) does the same,
    /// and closes the pipes). Output is read only by
    /// [`dispatch`](Reactor::dispatch), in every mode.
    ///
    /// # Errors
    ///
    /// As for [`spawn`](Reactor::spawn): on [`Error::Spawn`] (program
    /// missing, ...), [`Error::HandlerConflict`],
    /// [`Error::TooManyReactors`] and [`Error::ForkedChild`] nothing was
    /// started and nothing is registered. On [`Error::Io`] the child had
    /// started (a pipe could not be set up: `fcntl`, or `epoll_ctl` with
    /// `ENOMEM`/`ENOSPC`) and has been sent `SIGKILL`; `on_done` still
    /// runs once, with both streams marked truncated.
    pub fn spawn_output(
        &mut self,
        command: &mut Command,
        options: OutputOptions,
        on_done: impl FnOnce(&mut C, &mut Reactor<C>, Output) + Send + 'static,
    ) -> Result<ChildId> {
        self.check_process()?;
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        if options.stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let job = self.outputs.jobs.insert(Job {
            id: None,
            on_done: Box::new(on_done),
            exit: None,
            bufs: [Vec::new(), Vec::new()],
            caps: options.caps,
            truncated: [false; 2],
            input: options.stdin.unwrap_or_default(),
            written: 0,
            streams: [None; 3],
            queued: false,
        });
        let serial = self.next_serial;
        let spawned = self.spawn(command, move |ctx, reactor, exit| {
            reactor.output_exited(ctx, job, exit);
        });
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                if self.next_serial == serial {
                    // Nothing was registered: no death will come.
                    self.outputs.jobs.remove(job);
                } else {
                    // Registered and killed: its death will come, with
                    // nothing read.
                    self.outputs.jobs[job].truncated = [true; 2];
                }
                return Err(e);
            }
        };
        let id = spawned.id;
        self.outputs.jobs[job].id = Some(id);
        let mut added = Ok(());
        let pipes = [
            spawned.stdout.map(Pipe::Read),
            spawned.stderr.map(Pipe::Read),
            spawned.stdin.map(Pipe::Write),
        ];
        for (which, pipe) in pipes.into_iter().enumerate() {
            let Some(pipe) = pipe else { continue };
            if added.is_ok() {
                added = self.outputs.add(job, which, pipe, &self.watcher);
            }
        }
        if let Err(e) = added {
            self.outputs.jobs[job].truncated = [true; 2];
            for key in self.outputs.jobs[job].streams.into_iter().flatten() {
                self.outputs.close(key, &self.watcher);
            }
            let _ = self.kill(id, libc::SIGKILL);
            return Err(Error::io("epoll_ctl", e));
        }
        // Input to write: it is written by the first dispatch (the pipe is
        // writable at once, which makes the reactor readable).
        Ok(id)
    }

    /// Stops collecting the output of `id`, a [`spawn_output`](Self::spawn_output)
    /// child whose callback has not run: closes its pipes now, and marks
    /// each stream that had not reached end of file truncated. The callback
    /// runs once the child has died too (in the next `dispatch` if it
    /// already has), with what was read. The child itself is not signalled:
    /// a child that writes on gets `SIGPIPE` or `EPIPE`.
    ///
    /// For a child that died but left a descendant holding its pipes open.
    ///
    /// # Errors
    ///
    /// Nothing changed on error.
    /// * [`Error::AlreadyReaped`] if the child's output callback has run
    ///   (or is queued), or `id` is not a `spawn_output` child.
    /// * [`Error::ForeignId`] if `id` comes from another reactor.
    /// * [`Error::ForkedChild`] in a forked child.
    pub fn close_output(&mut self, id: ChildId) -> Result<()> {
        self.check_process()?;
        let job = match self.outputs.find(id) {
            Some(job) => job,
            None if id.reactor == self.number => return Err(Error::AlreadyReaped { pid: id.pid }),
            None => return Err(Error::ForeignId { id }),
        };
        let poller = &self.watcher;
        let entry = &mut self.outputs.jobs[job];
        for which in [STDOUT, STDERR] {
            entry.truncated[which] |= entry.streams[which].is_some();
        }
        for key in entry.streams.into_iter().flatten() {
            self.outputs.close(key, poller);
        }
        let before = self.pending.len();
        self.outputs
            .complete_if_done(job, &self.watcher, &mut self.pending);
        if self.pending.len() > before {
            self.watcher.wake();
        }
        Ok(())
    }

    /// [`forget`](Reactor::forget) let go of `id`: its output job goes
    /// too (pipes closed, `on_done` dropped uncalled), if it had one.
    pub(crate) fn forget_output(&mut self, id: ChildId) {
        if let Some(job) = self.outputs.find(id) {
            for key in self.outputs.jobs[job].streams.into_iter().flatten() {
                self.outputs.close(key, &self.watcher);
            }
            self.outputs.jobs.remove(job);
        }
    }

    /// The death callback of a `spawn_output` child: keeps the report, and
    /// runs `on_done` now if both streams have ended.
    fn output_exited(&mut self, ctx: &mut C, job: usize, exit: Exit) {
        let Some(entry) = self.outputs.jobs.get_mut(job) else {
            return;
        };
        if entry.reading() {
            entry.exit = Some(exit);
            return;
        }
        let (on_done, output) = self.outputs.finish(job, exit, &self.watcher);
        on_done(ctx, self, output);
    }

    /// `dispatch`'s step for the output streams that are ready: reads and
    /// writes them, and queues the callbacks of the children that are done.
    pub(crate) fn pump_outputs(&mut self) {
        if self.outputs.ready.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.outputs.ready);
        let mut more = false;
        for &key in &keys {
            more |= self.outputs.service(key, &self.watcher, &mut self.pending);
        }
        self.outputs.ready = keys;
        if more {
            // Data is left in a pipe; no new edge would announce it.
            self.watcher.wake();
        }
    }
}
