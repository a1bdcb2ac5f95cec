//! Collecting a child's output in the loop: `spawn_output`, the event-loop
//! equivalent of `Command::output()`.
//!
//! The child's stdout and stderr read ends (and its stdin write end, when
//! the application gives input) go into the reactor's own epoll set, next
//! to the wake pipe and the pidfds; they are level-triggered, under a tagged key
//! (see `poller.rs`). So the application's `Poll` needs no extra token: the
//! reactor's one descriptor becomes readable when output is there, and
//! `dispatch` reads it. Both streams are read as they come, so a child that
//! fills one pipe while we wait on the other never blocks, and without a
//! thread. The streams themselves (reading, writing, the cost) are in
//! `streams.rs`; the time-out and the drain time are deadlines of the
//! reactor's heap (`deadlines.rs`), so the reactor's descriptor becomes
//! readable when one is due.

use std::borrow::BorrowMut;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::reactor::deadlines::Target;
use crate::reactor::streams::{Job, Pipe, Stream, STDIN};
use crate::{ChildId, Error, Exit, Prepared, Reactor, Redirect, Result, Spawned};

/// What [`Reactor::spawn_output`] can start: std's `Command` (through
/// `spawn`) or a [`Prepared`] (through `spawn_prepared`), so that the
/// collection of the output is written once.
trait Launch {
    /// Pipes stdout and stderr; stdin null (`Some(false)`), piped
    /// (`Some(true)`) or as it is (`None`).
    fn output_stdio(&mut self, stdin: Option<bool>);

    fn launch<C>(
        &mut self,
        reactor: &mut Reactor<C>,
        on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
    ) -> Result<Spawned>;
}

impl Launch for Command {
    fn output_stdio(&mut self, stdin: Option<bool>) {
        self.stdout(Stdio::piped()).stderr(Stdio::piped());
        match stdin {
            Some(false) => self.stdin(Stdio::null()),
            Some(true) => self.stdin(Stdio::piped()),
            None => self,
        };
    }

    fn launch<C>(
        &mut self,
        reactor: &mut Reactor<C>,
        on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
    ) -> Result<Spawned> {
        reactor.spawn(self, on_death)
    }
}

impl Launch for Prepared {
    fn output_stdio(&mut self, stdin: Option<bool>) {
        self.stdout(Redirect::Piped).stderr(Redirect::Piped);
        match stdin {
            Some(false) => self.stdin(Redirect::Null),
            Some(true) => self.stdin(Redirect::Piped),
            None => self,
        };
    }

    fn launch<C>(
        &mut self,
        reactor: &mut Reactor<C>,
        on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
    ) -> Result<Spawned> {
        reactor.spawn_prepared(self, on_death)
    }
}

/// What the child's stdin is.
#[derive(Clone)]
enum Input {
    /// `Stdio::null()`, as `Command::output` does.
    Null,
    /// A pipe fed with these bytes.
    Bytes(Vec<u8>),
    /// Whatever the `Command` says.
    Command,
}

/// What [`Reactor::spawn_output`] gives the child, keeps of its output,
/// and how long it waits.
///
/// The defaults are those of `Command::output`, with one bound: stdin is
/// null, both streams are kept whole, there is no time-out, and once the
/// child has been reaped its pipes get [`DEFAULT_DRAIN`](Self::DEFAULT_DRAIN)
/// (100 ms) to reach end of file.
///
/// ```
/// use std::time::Duration;
/// use evchild::OutputOptions;
/// // Feed "hello" to the child's stdin; keep at most 1 MiB of each
/// // stream; give it 30 s, then SIGTERM (and SIGKILL 2 s later).
/// let options = OutputOptions::new()
///     .stdin(b"hello".to_vec())
///     .cap(1 << 20)
///     .timeout(Duration::from_secs(30))
///     .kill_grace(Duration::from_secs(2));
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct OutputOptions {
    stdin: Input,
    caps: [usize; 2],
    drain: Option<Duration>,
    timeout: Option<Duration>,
    kill_grace: Duration,
}

impl OutputOptions {
    /// How long, by default, the pipes may stay open once the child has
    /// been reaped: 100 ms (see [`drain_after_exit`](Self::drain_after_exit)).
    ///
    /// Everything the child itself wrote is in the pipes when it dies, and
    /// is read whatever the drain time; the wait is only for descendants
    /// that inherited the pipes. 100 ms lets those that are finishing
    /// anyway (the last stage of a pipeline, a background job in its last
    /// moments) close them even on a loaded machine, and keeps a daemon or
    /// a `sleep` that holds them from delaying `on_done` noticeably.
    pub const DEFAULT_DRAIN: Duration = Duration::from_millis(100);

    /// The default grace between the `SIGTERM` of a
    /// [`timeout`](Self::timeout) and the `SIGKILL`: 5 s.
    pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

    /// Stdin null, no cap, no time-out, [`DEFAULT_DRAIN`](Self::DEFAULT_DRAIN).
    pub fn new() -> Self {
        OutputOptions {
            stdin: Input::Null,
            caps: [usize::MAX; 2],
            drain: Some(Self::DEFAULT_DRAIN),
            timeout: None,
            kill_grace: Self::DEFAULT_KILL_GRACE,
        }
    }

    /// Writes `input` to the child's stdin (a pipe), as the pipe accepts it,
    /// then closes it, so the child sees end of file. If the child closes
    /// its stdin before reading it all (`head -c 1`), the rest is dropped:
    /// that is no error. Without this (or
    /// [`command_stdin`](Self::command_stdin)) the child's stdin is null,
    /// as with `Command::output`: it reads end of file at once.
    pub fn stdin(mut self, input: Vec<u8>) -> Self {
        self.stdin = Input::Bytes(input);
        self
    }

    /// Leaves the child's stdin as the [`Command`] says, instead of null:
    /// for a stage of a pipeline (the command's stdin is the previous
    /// stage's stdout, see [`IntoStdio`](crate::IntoStdio)), or to let the
    /// child read the parent's stdin (`Stdio::inherit()`, the `Command`'s
    /// own default).
    pub fn command_stdin(mut self) -> Self {
        self.stdin = Input::Command;
        self
    }

    /// Keeps at most `bytes` of stdout and of stderr each; see
    /// [`stdout_cap`](Self::stdout_cap).
    pub fn cap(self, bytes: usize) -> Self {
        self.stdout_cap(bytes).stderr_cap(bytes)
    }

    /// Keeps at most `bytes` of stdout. What comes past it is still read
    /// (the child never blocks on a full pipe), counted in
    /// [`Output::stdout_total`] and discarded, and
    /// [`Output::stdout_truncated`] says so. A cap of 0 keeps nothing
    /// (the bytes are only counted).
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

    /// Once the child has been reaped, waits at most `drain` for end of
    /// file on its stdout and stderr; then reads what is in the pipes,
    /// closes them, and calls `on_done` with what was read, with
    /// [`Output::cut`] set and the streams that had not ended marked
    /// truncated. `None` waits for end of file however long it takes (as
    /// `Command::output` does). Default:
    /// [`DEFAULT_DRAIN`](Self::DEFAULT_DRAIN).
    ///
    /// The pipes stay open after the child's death only while a descendant
    /// holds them: a background job of a shell (`sh -c 'daemon &'`), or a
    /// grandchild that outlived a killed shell (`sh -c 'sleep 30'` after
    /// `terminate`). Such a descendant that writes afterwards gets
    /// `SIGPIPE` or `EPIPE`; it is not signalled otherwise (a child started
    /// in its own process group can be ended with the group:
    /// [`timeout`](Self::timeout), [`Reactor::terminate_group`]).
    pub fn drain_after_exit(mut self, drain: Option<Duration>) -> Self {
        self.drain = drain;
        self
    }

    /// Terminates the child if it is still running `after` its start:
    /// `SIGTERM`, then `SIGKILL` after the [`kill_grace`](Self::kill_grace),
    /// as [`Reactor::terminate`] does; to the whole process group if the
    /// child leads one (it was started with `CommandExt::process_group(0)`:
    /// [`Reactor::terminate_group`]), so descendants that hold its pipes
    /// end too. [`Output::timed_out`] then says so. No time-out by default.
    ///
    /// The deadline is in the reactor's heap: the reactor's descriptor
    /// becomes readable when it is due, and [`Reactor::timeout`] counts it.
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// The grace between the `SIGTERM` of a [`timeout`](Self::timeout) and
    /// the `SIGKILL`. Default:
    /// [`DEFAULT_KILL_GRACE`](Self::DEFAULT_KILL_GRACE).
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
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
        /// `N bytes`, unquoted.
        struct Bytes(usize);
        impl fmt::Debug for Bytes {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} bytes", self.0)
            }
        }
        let bytes;
        let stdin: &dyn fmt::Debug = match &self.stdin {
            Input::Null => &"null",
            Input::Bytes(input) => {
                bytes = Bytes(input.len());
                &bytes
            }
            Input::Command => &"the command's",
        };
        f.debug_struct("OutputOptions")
            .field("stdin", stdin)
            .field("stdout_cap", &self.caps[0])
            .field("stderr_cap", &self.caps[1])
            .field("drain_after_exit", &self.drain)
            .field("timeout", &self.timeout)
            .field("kill_grace", &self.kill_grace)
            .finish()
    }
}

/// What a [`spawn_output`](Reactor::spawn_output) child left: its death
/// report and everything it wrote (up to the caps), in one callback.
///
/// Each buffer holds what was kept and no more (read through a scratch
/// buffer, appended, and trimmed with `shrink_to_fit` before `on_done`). [`stdout_total`](Self::stdout_total) counts every byte read,
/// kept or not, so `stdout_total > stdout.len()` means the cap cut it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Output {
    /// The child's death report, as a death callback gets it (a
    /// [`Lost`](crate::Outcome::Lost) child still delivers its output).
    pub exit: Exit,
    /// What the child wrote to stdout (up to the cap).
    pub stdout: Vec<u8>,
    /// What the child wrote to stderr (up to the cap).
    pub stderr: Vec<u8>,
    /// Whether stdout holds less than the child wrote: it went past the cap
    /// (`stdout_total > stdout.len()`), or the reading stopped before end
    /// of file ([`cut`](Self::cut)), or reading failed.
    pub stdout_truncated: bool,
    /// The same for stderr.
    pub stderr_truncated: bool,
    /// Bytes read from stdout, kept or not (past the cap they are counted
    /// and dropped).
    pub stdout_total: u64,
    /// Bytes read from stderr, kept or not.
    pub stderr_total: u64,
    /// Whether the reading stopped before end of file on stdout or stderr
    /// (that stream is marked truncated too): the
    /// [drain time](OutputOptions::drain_after_exit) ran out after the
    /// child's death while a descendant held a pipe, or
    /// [`Reactor::close_output`] was called.
    pub cut: bool,
    /// Whether the [`timeout`](OutputOptions::timeout) ran out and the
    /// child (or its group) was sent `SIGTERM` (the status says how it
    /// ended).
    pub timed_out: bool,
}

impl Output {
    /// The child's wait status, or `None` if it was
    /// [`Lost`](crate::Outcome::Lost) (reaped by other code): short for
    /// `output.exit.status()`.
    pub fn status(&self) -> Option<ExitStatus> {
        self.exit.status()
    }

    /// Whether the child exited with status 0 (`false` for a death by a
    /// signal, and for a lost child, whose status is unknown). Cut or
    /// truncated output does not count: check [`cut`](Self::cut) and the
    /// `*_truncated` flags for that.
    pub fn success(&self) -> bool {
        self.status().is_some_and(|status| status.success())
    }
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
    /// assert_eq!(output.status().and_then(|s| s.code()), Some(3));
    /// assert!(!output.success());
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// `command` is a [`Command`] or a `&mut Command`: a builder chain
    /// (`Command::new("ls").arg("-l")`) or a command built beforehand
    /// (taken by value, it is dropped once the child has started, with the
    /// parent's copies of any [`Stdio`] it held).
    ///
    /// The command's stdout and stderr are set to `Stdio::piped()`, and its
    /// stdin to `Stdio::null()` as `Command::output` does (a pipe with
    /// [`OutputOptions::stdin`]; the command's own setting with
    /// [`OutputOptions::command_stdin`]). The pipes go into the reactor's own epoll
    /// set: the loop needs no other token, the reactor becomes readable
    /// when output comes, and `dispatch` reads both streams as they fill
    /// (so a child that fills one while we wait on the other never blocks)
    /// and feeds the input as the pipe accepts it.
    ///
    /// `on_done` runs once the child has been reaped **and** both streams
    /// reached end of file, or the [drain
    /// time](OutputOptions::drain_after_exit) after the death (100 ms by
    /// default) ran out: a descendant that keeps the pipes open (a
    /// background job of a shell, a grandchild of a terminated shell) delays
    /// it that long at most, and the output is marked [cut](Output::cut).
    /// [`close_output`](Reactor::close_output) stops waiting at once. The
    /// child leaves [`len`](Reactor::len) at its death, which may come
    /// before its callback; [`try_wait`](Reactor::try_wait) says
    /// [`ReadingOutput`](crate::ChildStatus::ReadingOutput) in between.
    /// [`OutputOptions::timeout`] bounds the child's own life.
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
        mut command: impl BorrowMut<Command>,
        options: OutputOptions,
        on_done: impl FnOnce(&mut C, &mut Reactor<C>, Output) + Send + 'static,
    ) -> Result<ChildId> {
        self.spawn_output_with(command.borrow_mut(), options, on_done)
    }

    /// [`spawn_output`](Self::spawn_output) for a [`Prepared`] command:
    /// the same collection of the output, through
    /// [`spawn_prepared`](Self::spawn_prepared)'s start. The `Prepared`'s
    /// stdout and stderr are set to [`Redirect::Piped`], and its stdin to
    /// [`Redirect::Null`] (or `Piped` with [`OutputOptions::stdin`]; left
    /// as it is with [`OutputOptions::command_stdin`]); setting them to
    /// what they already are rebuilds nothing, so configure the `Prepared`
    /// that way once and every start reuses its slots.
    ///
    /// ```
    /// use evchild::{Hooks, Output, OutputOptions, Prepared, Reactor};
    ///
    /// let mut children = Reactor::<Vec<Output>>::new(Hooks::default())?;
    /// let mut line = Prepared::new("sh");
    /// line.args(["-c", ""]);
    /// for text in ["echo one", "echo two >&2; exit 2"] {
    ///     line.set_arg(1, text);
    ///     children.spawn_output_prepared(&mut line, OutputOptions::new(), |done, _, output| {
    ///         done.push(output)
    ///     })?;
    /// }
    /// let mut done = Vec::new();
    /// while done.len() < 2 {
    ///     children.dispatch(&mut done)?; // a real program waits in mio::Poll
    /// }
    /// done.sort_by_key(|o| o.status().and_then(|s| s.code()));
    /// assert_eq!(done[0].stdout, b"one\n");
    /// assert_eq!(done[1].stderr, b"two\n");
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`spawn_output`](Self::spawn_output).
    pub fn spawn_output_prepared(
        &mut self,
        prepared: &mut Prepared,
        options: OutputOptions,
        on_done: impl FnOnce(&mut C, &mut Reactor<C>, Output) + Send + 'static,
    ) -> Result<ChildId> {
        self.spawn_output_with(prepared, options, on_done)
    }

    fn spawn_output_with(
        &mut self,
        command: &mut impl Launch,
        options: OutputOptions,
        on_done: impl FnOnce(&mut C, &mut Reactor<C>, Output) + Send + 'static,
    ) -> Result<ChildId> {
        self.check_process()?;
        let input = match options.stdin {
            Input::Null => {
                command.output_stdio(Some(false));
                Vec::new()
            }
            Input::Bytes(bytes) => {
                command.output_stdio(Some(true));
                bytes
            }
            Input::Command => {
                command.output_stdio(None);
                Vec::new()
            }
        };
        let job = self.outputs.jobs.insert(Job {
            id: None,
            on_done: Box::new(on_done),
            exit: None,
            bufs: [Vec::new(), Vec::new()],
            caps: options.caps,
            truncated: [false; 2],
            totals: [0; 2],
            cut: false,
            drain: options.drain,
            kill_grace: options.kill_grace,
            timed_out: false,
            input,
            written: 0,
            streams: [None; 3],
            queued: false,
            on_chunk: None,
        });
        let serial = self.next_serial;
        let spawned = command.launch(self, move |ctx: &mut C, reactor: &mut Reactor<C>, exit| {
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
        if let Some(after) = options.timeout {
            self.add_deadline(id, after, Target::Timeout);
        }
        // Input to write: it is written by the first dispatch (the pipe is
        // writable at once, which makes the reactor readable).
        Ok(id)
    }

    /// Stops collecting the output of `id`, a [`spawn_output`](Self::spawn_output)
    /// child whose callback has not run: closes its pipes now, marks each
    /// stream that had not reached end of file truncated, and the output
    /// [cut](Output::cut). The callback
    /// runs once the child has died too (in the next `dispatch` if it
    /// already has), with what was read. The child itself is not signalled:
    /// a child that writes on gets `SIGPIPE` or `EPIPE`.
    ///
    /// For a child that died but left a descendant holding its pipes open,
    /// when the [drain time](OutputOptions::drain_after_exit) is not the
    /// bound wanted.
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
        let before = self.pending.len();
        self.outputs
            .cut(job, None, &self.watcher, &mut self.pending);
        if let Some(key) = self.outputs.jobs.get(job).and_then(|j| j.streams[STDIN]) {
            self.outputs.close(key, &self.watcher);
        }
        if self.pending.len() > before {
            self.watcher.wake();
        }
        Ok(())
    }

    /// Streams the output of `id`, a [`spawn_output`](Self::spawn_output)
    /// child whose callback has not run: `on_chunk` gets each chunk as it
    /// is read, in [`dispatch`](Self::dispatch), with the context, the
    /// child's id and the [`Stream`] it came from. The chunks are what each
    /// `read(2)` returned (not lines: a line may span two), every byte
    /// once and in order per stream, including those past the cap. The
    /// final [`Output`] is unchanged; to keep nothing of a stream, give it
    /// a cap of 0 ([`OutputOptions::cap`]). Replaces an earlier
    /// `on_chunk` of the child.
    ///
    /// Call it right after `spawn_output`: the first chunks are read by the
    /// next `dispatch`, so none is missed.
    ///
    /// ```
    /// use evchild::{Hooks, OutputOptions, Reactor, Stream};
    /// let mut children = Reactor::<Vec<String>>::new(Hooks::default())?;
    /// let id = children.spawn_output(
    ///     std::process::Command::new("echo").arg("hi"),
    ///     OutputOptions::new().cap(0), // stream it, keep nothing
    ///     |_, _, output| assert_eq!(output.stdout_total, 3),
    /// )?;
    /// children.on_output(id, |lines, id, stream, bytes| {
    ///     if stream == Stream::Stdout {
    ///         lines.push(format!("[{}] {}", id.pid(), String::from_utf8_lossy(bytes)));
    ///     }
    /// })?;
    /// let mut lines = Vec::new();
    /// children.wait_for(&mut lines, id, None)?; // a real program polls
    /// assert_eq!(lines.concat(), format!("[{}] hi\n", id.pid()));
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// A panicking `on_chunk` propagates out of `dispatch` as a death
    /// callback's does: the chunk was counted and kept, and the reading
    /// goes on in the next `dispatch`.
    ///
    /// # Errors
    ///
    /// As for [`close_output`](Self::close_output); nothing changed on
    /// error.
    pub fn on_output(
        &mut self,
        id: ChildId,
        on_chunk: impl FnMut(&mut C, ChildId, Stream, &[u8]) + Send + 'static,
    ) -> Result<()> {
        self.check_process()?;
        let job = match self.outputs.find(id) {
            Some(job) => job,
            None if id.reactor == self.number => return Err(Error::AlreadyReaped { pid: id.pid }),
            None => return Err(Error::ForeignId { id }),
        };
        self.outputs.jobs[job].on_chunk = Some(Box::new(on_chunk));
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
    /// runs `on_done` now if both streams have ended; otherwise sets the
    /// drain deadline.
    fn output_exited(&mut self, ctx: &mut C, job: usize, exit: Exit) {
        let Some(entry) = self.outputs.jobs.get_mut(job) else {
            return;
        };
        if entry.reading() {
            entry.exit = Some(exit);
            if let Some(drain) = entry.drain {
                self.add_deadline(exit.id, drain, Target::Drain);
            }
            return;
        }
        let (on_done, output) = self.outputs.finish(job, exit, &self.watcher);
        on_done(ctx, self, output);
    }

    /// `dispatch`'s step for the output streams that are ready: reads and
    /// writes them (chunks to `on_chunk` callbacks, with `ctx`), and queues
    /// the callbacks of the children that are done.
    pub(crate) fn pump_outputs(&mut self, ctx: &mut C) {
        if self.outputs.ready.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.outputs.ready);
        let mut more = false;
        let pumped = panic::catch_unwind(AssertUnwindSafe(|| {
            for &key in &keys {
                more |= self
                    .outputs
                    .service(key, &self.watcher, &mut self.pending, ctx);
            }
        }));
        self.outputs.ready = keys;
        if more || pumped.is_err() {
            // Data is left in a pipe (no new edge would announce it), or an
            // `on_chunk` panicked: the rest of this dispatch (deadlines,
            // callbacks) is the next one's.
            self.watcher.wake();
        }
        if let Err(panic) = pumped {
            panic::resume_unwind(panic);
        }
    }
}
