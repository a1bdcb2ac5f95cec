//! A small parallel command runner, like `xargs -P`: children's deaths,
//! their output, their time-outs and Ctrl-C in one `mio` loop.
//!
//! ```text
//! printf 'echo hi\nsleep 5\nfalse\n' | cargo run --example parallel -- -j 2 -t 1
//! cargo run --example parallel -- --demo
//! ```
//!
//! It reads standard input to the end, runs each non-blank line with
//! `sh -c LINE`, `-j N` at a time (default 4), stops any that runs longer
//! than `-t SECONDS` (default 10; 0: no limit), and prints a table: status,
//! time, bytes of stdout and stderr, last line of output. It exits with 1 if
//! any command failed, timed out or was stopped or skipped by Ctrl-C, 2 on
//! bad arguments, 0 otherwise. `--demo`, or a terminal as standard input,
//! runs a built-in list with a 1 s time-out.
//!
//! What it shows:
//! * `Reactor::spawn` (std's fast `posix_spawn` path), with stdout and stderr
//!   as non-blocking pipes in the reactor's `mio::Poll`, read to end-of-file;
//! * death callbacks that get our context (`&mut Runner`) and the reactor,
//!   and start the next command. A row is complete once the death report
//!   and both end-of-files have come, in any order;
//! * time-outs without a runtime: `poll` sleeps until the earlier of
//!   `Reactor::timeout` and our own deadlines, and `dispatch` runs after
//!   every `poll`. Each command leads its own process group, and
//!   `Reactor::terminate_group` stops all of it: `SIGTERM` to the group, and
//!   `SIGKILL` to the group if the shell is still alive after `GRACE`;
//! * Ctrl-C as one more event: a `SIGINT`/`SIGTERM` handler writes to a
//!   self-pipe in the same `Poll`. Handled signals are reset at exec, so the
//!   commands start with default dispositions and an empty mask, and need no
//!   `pre_exec` hook (which would make std `fork` instead of `posix_spawn`).
//!   In groups of their own, they do not get the terminal's Ctrl-C: we stop
//!   them, start no more, and still print the table.
//!
//! A process that outlives its shell (it ignored the `SIGTERM` the shell
//! obeyed, or ran in the background) is left alone: once the shell is
//! reaped, the group's id may be reused. Its output is read until the
//! command's time is up; then the row says "output cut".

#![warn(clippy::undocumented_unsafe_blocks)]

use std::io::{self, ErrorKind, IsTerminal, Read};
use std::os::fd::IntoRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use evchild::{ChildId, DropPolicy, Exit, Hooks, Reactor, SigchldOwner};
use mio::unix::pipe::{self, Receiver};
use mio::{Events, Interest, Poll, Registry, Token};
use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

const CHILDREN: Token = Token(0);
const SIGNALS: Token = Token(1);
/// Stream `s` (0: stdout, 1: stderr) of row `r` is `Token(FIRST_PIPE + 2 * r + s)`.
const FIRST_PIPE: usize = 2;

/// How long a stopped command has between `SIGTERM` and `SIGKILL`, and the
/// least time we read its pipes after its death.
const GRACE: Duration = Duration::from_secs(1);
/// At most this many bytes are read from one pipe in one pass of the loop:
/// a command that writes without end (`yes`) must not hold up the time-outs.
const READ_BUDGET: usize = 1 << 20;
/// How much of a command's output is kept to find its last line in.
const TAIL: usize = 4096;

const DEMO: &[&str] = &[
    "echo hello",
    "sleep 0.3; echo done",
    "exit 3",
    "yes | head -c 1000000",
    "sleep 30",
    "trap '' TERM; sleep 30; echo not reached",
    "ls /nonexistent",
    "echo to stderr >&2; echo to stdout",
];
const DEMO_TIMEOUT: Duration = Duration::from_secs(1);

const USAGE: &str = "\
usage: parallel [-j N] [-t SECONDS] [--demo] < commands
  Runs each line of standard input with `sh -c LINE`, N at a time.
  -j N         run at most N commands at once (default 4)
  -t SECONDS   stop a command after SECONDS (default 10; 0: no limit)
  --demo       run a built-in list of commands (the default when standard
               input is a terminal), with -t 1 unless -t is given
Exits with 1 if any command failed, timed out or was not run (Ctrl-C),
0 otherwise.";

/// The write end of the signal pipe, for the handler. Never closed.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// The `SIGINT`/`SIGTERM` handler, async-signal-safe: it saves `errno`
/// (`write` may change it under the code it interrupted), loads an atomic (no
/// lock), writes the signal's number as one byte to a non-blocking pipe
/// (ignoring `EAGAIN`: a full pipe is readable anyway), and restores `errno`.
extern "C" fn on_signal(signal: libc::c_int) {
    let saved = Errno::last_raw();
    let byte = [signal as u8];
    // SAFETY: a one-byte write from a live local buffer, to a descriptor that
    // stays open until the process exits (see `catch_signals`).
    unsafe { libc::write(SIGNAL_PIPE.load(Ordering::Relaxed), byte.as_ptr().cast(), 1) };
    Errno::set_raw(saved);
}

/// Installs `on_signal`; returns the read end of its pipe, for the loop.
fn catch_signals() -> io::Result<Receiver> {
    // Non-blocking, and close-on-exec: the commands do not inherit it.
    let (sender, receiver) = pipe::new()?;
    // Leaked on purpose: the handler may run until the process exits.
    SIGNAL_PIPE.store(sender.into_raw_fd(), Ordering::Relaxed);
    let handler = SigHandler::Handler(on_signal);
    let action = SigAction::new(handler, SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: `on_signal` is async-signal-safe (see there).
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(receiver)
}

/// Empties the signal pipe (`mio` is edge-triggered): its last signal.
fn take_signal(pipe: &mut Receiver) -> io::Result<Option<i32>> {
    let (mut buf, mut last) = ([0u8; 16], None);
    loop {
        match pipe.read(&mut buf) {
            Ok(n) if n > 0 => last = Some(i32::from(buf[n - 1])),
            Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(e),
            _ => return Ok(last), // empty (the write end is never closed)
        }
    }
}

/// How much a command wrote to one stream, and the end of it.
#[derive(Debug, Default)]
struct Capture {
    bytes: u64,
    /// The last `TAIL` bytes.
    tail: Vec<u8>,
}

impl Capture {
    fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(TAIL)..];
        let excess = (self.tail.len() + chunk.len()).saturating_sub(TAIL);
        self.tail.drain(..excess);
        self.tail.extend_from_slice(chunk);
    }

    /// The last line that is not blank.
    fn last_line(&self) -> &[u8] {
        let mut lines = self.tail.split(|&b| b == b'\n');
        lines.rfind(|line| !is_blank(line)).unwrap_or_default()
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// One line of input, and everything the table says about it.
#[derive(Debug, Default)]
struct Row {
    command: String,
    /// Set when it starts (but see the rare case in `start`).
    id: Option<ChildId>,
    started: Option<Instant>,
    /// When the command was dead and its pipes closed: the row is complete.
    finished: Option<Instant>,
    /// While the command lives: when it times out. After its death, while a
    /// pipe is open: when we stop reading.
    deadline: Option<Instant>,
    /// Set at its death or failed start: its status, or why there is none.
    end: Option<Result<ExitStatus, String>>,
    /// Why we stopped it: "timed out" or "interrupted".
    stopped: Option<&'static str>,
    /// Its stdout and stderr while they are open.
    pipes: [Option<Receiver>; 2],
    /// What its stdout and stderr carried.
    output: [Capture; 2],
    /// We stopped reading before end-of-file.
    output_cut: bool,
}

impl Row {
    fn pipes_closed(&self) -> bool {
        self.pipes.iter().all(Option::is_none)
    }

    fn succeeded(&self) -> bool {
        let exit_0 = matches!(self.end, Some(Ok(status)) if status.success());
        exit_0 && self.stopped.is_none() && !self.output_cut
    }

    fn status(&self) -> String {
        let mut status = match &self.end {
            Some(Ok(status)) => match status.code() {
                Some(code) => format!("exit {code}"),
                None => format!("signal {}", status.signal().unwrap_or(0)),
            },
            Some(Err(why)) => why.clone(),
            None => "not run".to_string(),
        };
        if let Some(why) = self.stopped {
            status = format!("{why} ({status})");
        }
        if self.output_cut {
            status.push_str(", output cut");
        }
        status
    }

    /// The last line of stderr if the command failed or wrote nothing else,
    /// of stdout otherwise.
    fn last_line(&self) -> String {
        let [out, err] = &self.output;
        let (out, err) = (out.last_line(), err.last_line());
        let (line, mark) = if !err.is_empty() && (!self.succeeded() || out.is_empty()) {
            (err, "stderr: ")
        } else {
            (out, "")
        };
        // Tabs and other control characters would upset the table.
        let line = String::from_utf8_lossy(line)
            .trim()
            .replace(char::is_control, " ");
        format!("{mark}{line}")
    }
}

/// Our context: `dispatch(&mut runner)` hands it to every death callback.
struct Runner {
    /// To register the pipes of commands started from death callbacks.
    registry: Registry,
    rows: Vec<Row>,
    /// Rows started and not complete.
    active: Vec<usize>,
    /// The next row to start.
    next: usize,
    jobs: usize,
    timeout: Option<Duration>,
    /// After Ctrl-C: start nothing more.
    interrupted: bool,
    /// Pipes whose read budget ran out: read them again before sleeping.
    backlog: Vec<Token>,
    buf: Box<[u8]>,
}

impl Runner {
    /// Starts commands until `jobs` are running or none is left. (In a death
    /// callback, the dead child is no longer counted in `reactor.len()`.)
    fn fill(&mut self, reactor: &mut Reactor<Runner>) {
        while reactor.len() < self.jobs && self.next < self.rows.len() && !self.interrupted {
            self.next += 1;
            self.start(reactor, self.next - 1);
        }
    }

    fn start(&mut self, reactor: &mut Reactor<Runner>, row: usize) {
        let mut command = Command::new("sh");
        command
            .args(["-c", &self.rows[row].command])
            // Not our stdin: that is the list of commands, or the terminal.
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own, so it can be stopped as a whole.
            .process_group(0);
        let now = Instant::now();
        let registered = reactor.len();
        let spawned = reactor.spawn(&mut command, move |runner, reactor, exit| {
            runner.died(reactor, row, exit);
        });
        let r = &mut self.rows[row];
        r.started = Some(now);
        match spawned {
            Ok(spawned) => {
                r.id = Some(spawned.id);
                r.deadline = self.timeout.and_then(|t| now.checked_add(t));
                self.active.push(row);
                self.watch(row, 0, spawned.stdout);
                self.watch(row, 1, spawned.stderr);
            }
            // Started, but its pipes could not be made non-blocking (not on
            // Linux): `spawn` has killed it, and its death callback will come.
            Err(e) if reactor.len() > registered => {
                eprintln!("parallel: {}: started without output: {e}", r.command);
                r.output_cut = true;
                self.active.push(row);
            }
            Err(e) => {
                r.end = Some(Err(format!("not started: {e}")));
                self.complete(row);
            }
        }
    }

    /// Registers one output pipe of `row` in the loop.
    fn watch(&mut self, row: usize, stream: usize, pipe: Option<Receiver>) {
        let Some(mut pipe) = pipe else { return };
        let token = Token(FIRST_PIPE + 2 * row + stream);
        match self.registry.register(&mut pipe, token, Interest::READABLE) {
            Ok(()) => self.rows[row].pipes[stream] = Some(pipe),
            // Dropping the pipe closes it: the command gets SIGPIPE if it
            // writes there, which the table shows.
            Err(e) => {
                eprintln!("parallel: cannot watch a pipe: {e}");
                self.rows[row].output_cut = true;
            }
        }
    }

    /// The death callback of `row`'s command.
    fn died(&mut self, reactor: &mut Reactor<Runner>, row: usize, exit: Exit) {
        let r = &mut self.rows[row];
        // Lost (reaped by other code) cannot happen: nothing else here waits.
        r.end = Some(exit.status().ok_or_else(|| "lost".to_string()));
        if r.pipes_closed() {
            self.complete(row);
        } else {
            // Its last output may still be on the way, or held by something
            // it left behind: read on until its time is up, and for at least
            // `GRACE`; without limit if it has no time limit.
            let grace = Instant::now() + GRACE;
            r.deadline = match r.stopped {
                Some(_) => Some(grace),
                None => r.deadline.map(|d| d.max(grace)),
            };
        }
        // A slot is free: the next command starts now, from the callback.
        self.fill(reactor);
    }

    /// Reads a pipe until it would block, it ends, or the budget runs out.
    fn read(&mut self, token: Token) {
        let (row, stream) = ((token.0 - FIRST_PIPE) / 2, (token.0 - FIRST_PIPE) % 2);
        let r = &mut self.rows[row];
        let Some(pipe) = &mut r.pipes[stream] else {
            return; // closed earlier in this pass
        };
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 {
                // Other pipes and the deadlines first. No new edge will come
                // for the data already waiting, so remember to read on.
                self.backlog.push(token);
                return;
            }
            match pipe.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    r.output[stream].feed(&self.buf[..n]);
                    budget = budget.saturating_sub(n);
                }
                // Edge-triggered: we are called again when more comes.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("parallel: reading a pipe: {e}");
                    r.output_cut = true;
                    break;
                }
            }
        }
        self.close(row, stream); // end-of-file (or an error): nothing more will come
    }

    /// Closes a pipe; completes its row if that was all the row waited for.
    fn close(&mut self, row: usize, stream: usize) {
        let r = &mut self.rows[row];
        let Some(mut pipe) = r.pipes[stream].take() else {
            return; // closed already
        };
        let _ = self.registry.deregister(&mut pipe); // closing does it too
        if r.end.is_some() && r.pipes_closed() {
            self.complete(row);
        }
    }

    /// The row has all it will get: mark it complete and say so.
    fn complete(&mut self, row: usize) {
        self.active.retain(|&a| a != row);
        // Every row before `next` is active or complete.
        let (done, total) = (self.next - self.active.len(), self.rows.len());
        let r = &mut self.rows[row];
        r.deadline = None;
        r.finished = Some(Instant::now());
        let width = digits(total);
        eprintln!("[{done:>width$}/{total}] {:<24} {}", r.status(), r.command);
    }

    /// Acts on the rows whose deadline has come.
    fn check_deadlines(&mut self, reactor: &mut Reactor<Runner>) {
        let now = Instant::now();
        // A copy: closing pipes can complete rows, which leave `active`.
        for row in self.active.clone() {
            let r = &mut self.rows[row];
            if !r.deadline.is_some_and(|d| d <= now) {
                continue;
            }
            r.deadline = None;
            if r.end.is_some() {
                // Dead, but something it left behind holds its pipes open.
                r.output_cut = true;
                self.close(row, 0);
                self.close(row, 1);
                continue;
            }
            // Alive: SIGTERM to its group now, and SIGKILL to the group after
            // `GRACE` if the shell is still alive (`dispatch` sends it). Its
            // death has not been reported, so the shell still leads its group.
            r.stopped.get_or_insert("timed out");
            let Some(id) = r.id else { continue };
            if let Err(e) = reactor.terminate_group(id, GRACE) {
                eprintln!("parallel: cannot stop {}: {e}", r.command);
            }
        }
    }

    /// Ctrl-C (or `SIGTERM`): start nothing more; every command's time is up.
    fn interrupt(&mut self, signal: i32) {
        if !self.interrupted {
            eprintln!("parallel: got signal {signal}: stopping the commands that run");
        }
        self.interrupted = true;
        let now = Instant::now();
        let grace = now + GRACE;
        for &row in &self.active {
            let r = &mut self.rows[row];
            if r.end.is_some() {
                // Dead, but its pipes are open: read them for `GRACE` at most.
                r.deadline = Some(r.deadline.map_or(grace, |d| d.min(grace)));
            } else if r.stopped.is_none() {
                r.stopped = Some("interrupted");
                r.deadline = Some(now);
            }
        }
    }

    fn finished(&self) -> bool {
        self.active.is_empty() && (self.interrupted || self.next == self.rows.len())
    }
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// `-j`, `-t` (`None` if not given; zero for no limit) and `--demo`.
fn parse_args() -> Result<(usize, Option<Duration>, bool), String> {
    let (mut jobs, mut timeout, mut demo) = (4, None, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let flag = match arg.as_str() {
            "--demo" => {
                demo = true;
                continue;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            a => match a.get(..2) {
                Some(flag @ ("-j" | "-t")) => flag,
                _ => return Err(format!("unknown argument {a:?}")),
            },
        };
        // `-j 4` or `-j4`.
        let value = match &arg[2..] {
            "" => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
            inline => inline.to_string(),
        };
        let bad = || format!("{flag}: bad value {value:?}");
        if flag == "-j" {
            jobs = value.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
        } else {
            let seconds = value
                .parse()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok());
            timeout = Some(seconds.ok_or_else(bad)?);
        }
    }
    Ok((jobs, timeout, demo))
}

fn human_bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// At most `width` characters of `s`.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let clipped: String = s.chars().take(width.saturating_sub(1)).collect();
    clipped + "…"
}

fn print_table(rows: &[Row]) {
    let width = |f: fn(&Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let command_width = width(|r| r.command.chars().count()).clamp(7, 40);
    let status_width = width(|r| r.status().chars().count()).max(6);
    let n = digits(rows.len());
    println!(
        "{:>n$}  {:<command_width$}  {:<status_width$}  {:>7}  {:>10}  {:>10}  last line",
        "#", "command", "status", "time", "stdout", "stderr"
    );
    for (i, r) in rows.iter().enumerate() {
        let time = match (r.started, r.finished) {
            (Some(s), Some(f)) => format!("{:.2}s", (f - s).as_secs_f64()),
            _ => "-".to_string(),
        };
        let line = format!(
            "{:>n$}  {:<command_width$}  {:<status_width$}  {time:>7}  {:>10}  {:>10}  {}",
            i + 1,
            clip(&r.command, command_width),
            r.status(),
            human_bytes(r.output[0].bytes),
            human_bytes(r.output[1].bytes),
            clip(&r.last_line(), 60),
        );
        println!("{}", line.trim_end());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (jobs, timeout, demo) = parse_args().unwrap_or_else(|e| {
        eprintln!("parallel: {e}\n{USAGE}");
        std::process::exit(2);
    });
    let (commands, timeout): (Vec<String>, _) = if demo || io::stdin().is_terminal() {
        eprintln!("parallel: running the built-in demo (see --help)");
        let commands = DEMO.iter().map(|&c| c.to_string()).collect();
        (commands, timeout.unwrap_or(DEMO_TIMEOUT))
    } else {
        let input = io::read_to_string(io::stdin())?;
        let lines = input.lines().filter(|line| !is_blank(line.as_bytes()));
        (
            lines.map(str::to_string).collect(),
            timeout.unwrap_or(Duration::from_secs(10)),
        )
    };
    let timeout = (!timeout.is_zero()).then_some(timeout);
    let limit = timeout.map_or("none".to_string(), |t| format!("{:.1}s", t.as_secs_f64()));
    let n = commands.len();
    eprintln!("parallel: {n} command(s), up to {jobs} at a time, time-out {limit}");

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut reactor = Reactor::<Runner>::new(Hooks::new(SigchldOwner::Library))?;
    // Should an error below end the loop early, kill and reap what is left.
    reactor.set_drop_policy(DropPolicy::KillAndReap(GRACE));
    let mut signals = catch_signals()?;
    let registry = poll.registry();
    registry.register(&mut reactor, CHILDREN, Interest::READABLE)?;
    registry.register(&mut signals, SIGNALS, Interest::READABLE)?;

    let row = |command| Row {
        command,
        ..Row::default()
    };
    let mut runner = Runner {
        registry: registry.try_clone()?,
        rows: commands.into_iter().map(row).collect(),
        active: Vec::new(),
        next: 0,
        jobs,
        timeout,
        interrupted: false,
        backlog: Vec::new(),
        buf: vec![0; 64 * 1024].into_boxed_slice(),
    };
    let started = Instant::now();
    runner.fill(&mut reactor);

    while !runner.finished() {
        // Sleep until the reactor's next SIGKILL or our next deadline, or not
        // at all if a pipe has data waiting. (`Option::min` would pick
        // `None`, which means no limit.)
        let ours = runner
            .active
            .iter()
            .filter_map(|&row| runner.rows[row].deadline)
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()));
        let busy = (!runner.backlog.is_empty()).then_some(Duration::ZERO);
        let wait = [reactor.timeout(), ours, busy].into_iter().flatten().min();
        match poll.poll(&mut events, wait) {
            Ok(()) => {}
            // Signal handlers (ours, evchild's SIGCHLD one) interrupt
            // epoll_wait; their pipes wake the next poll.
            Err(e) if e.kind() == ErrorKind::Interrupted => events.clear(),
            Err(e) => return Err(e.into()),
        }
        // After *every* return of poll: this also sends terminate_group's
        // SIGKILLs. Death callbacks run in here, and start the next commands.
        reactor.dispatch(&mut runner)?;
        // Pipes left unfinished last time; this pass's go to the next.
        let backlog = std::mem::take(&mut runner.backlog);
        for event in &events {
            match event.token() {
                CHILDREN => {} // dispatched above
                SIGNALS => {
                    if let Some(signal) = take_signal(&mut signals)? {
                        runner.interrupt(signal);
                    }
                }
                token => runner.read(token),
            }
        }
        for token in backlog {
            runner.read(token);
        }
        runner.check_deadlines(&mut reactor);
    }

    debug_assert!(reactor.is_empty() && runner.rows.iter().all(Row::pipes_closed));
    println!();
    print_table(&runner.rows);
    let (total, elapsed) = (runner.rows.len(), started.elapsed().as_secs_f64());
    let failed = runner.rows.iter().filter(|r| !r.succeeded()).count();
    let ok = total - failed;
    println!("\n{total} command(s) in {elapsed:.2}s: {ok} succeeded, {failed} failed");
    std::process::exit(if failed > 0 { 1 } else { 0 });
}
