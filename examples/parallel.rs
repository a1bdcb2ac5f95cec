//! A small parallel command runner, like `xargs -P`: children, their output,
//! their time-outs and Ctrl-C in one `mio` loop.
//!
//! ```text
//! printf 'echo hi\nsleep 5\nfalse\n' | cargo run --example parallel -- -j 2 -t 1
//! cargo run --example parallel -- --demo
//! ```
//!
//! `Reactor::spawn_output_prepared` starts each line from one `Prepared`
//! (`sh -c LINE`, built once; `set_arg` swaps the line), reads its output and calls us once
//! with the status and both streams; `terminate_group` stops a command that
//! runs too long; Ctrl-C is a handler writing to a self-pipe in our `Poll`.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::io::{self, ErrorKind, IsTerminal, Read};
use std::os::{fd::IntoRawFd, unix::process::ExitStatusExt};
use std::process::exit;
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use evchild::{ChildId, DropPolicy, Hooks, Output, OutputOptions, Prepared, Reactor, Redirect};
use mio::{unix::pipe, Events, Interest, Poll, Token};
use nix::sys::signal::{signal, SigHandler, Signal};

const CHILDREN: Token = Token(0);
const SIGNALS: Token = Token(1);
/// Between `SIGTERM` and `SIGKILL`; the least wait for output after a death.
const GRACE: Duration = Duration::from_secs(1);
const DEMO: &str = "echo hello\nsleep 0.3; echo done\nexit 3\nyes | head -c 1000000\nsleep 30\n\
    trap '' TERM; sleep 30; echo not reached\nls /nonexistent\necho to stderr >&2; echo to stdout";
const USAGE: &str = "\
usage: parallel [-j N] [-t SECONDS] [--demo] < commands
  Runs each line of standard input with `sh -c LINE`, N at a time.
  -j N         run at most N commands at once (default 4)
  -t SECONDS   stop a command after SECONDS (default 10; 0: no limit)
  --demo       run a built-in list of commands (the default when standard
               input is a terminal), with -t 1 unless -t is given
Exits with 1 if any command failed, timed out or was not run (Ctrl-C),
0 otherwise.";

/// The write end of the signal pipe (never closed), and the last signal.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Async-signal-safe: stores the signal, writes a byte, keeps `errno`.
extern "C" fn on_signal(signal: libc::c_int) {
    let saved = nix::errno::Errno::last_raw();
    SIGNAL.store(signal, Relaxed);
    // SAFETY: a one-byte write from a live buffer to a descriptor left open.
    unsafe { libc::write(SIGNAL_PIPE.load(Relaxed), [0u8].as_ptr().cast(), 1) };
    nix::errno::Errno::set_raw(saved);
}

/// One line of input, and everything the table says about it.
#[derive(Default)]
struct Row {
    command: String,
    id: Option<ChildId>,
    started: Option<Instant>,
    /// When it times out; once dead, when we stop waiting for its output.
    deadline: Option<Instant>,
    dead: bool,
    /// Why we stopped it: "timed out" or "interrupted".
    stopped: Option<&'static str>,
    /// Once complete: its status, success, and the table's last columns.
    end: Option<(String, bool, String)>,
}

impl Row {
    fn status(&self) -> &str {
        self.end.as_ref().map_or("not run", |end| &end.0)
    }

    fn complete(&mut self, end: Result<Output, String>) {
        let (mut status, ok, cut, [stdout, stderr]) = match end {
            Err(why) => (why, false, false, [Vec::new(), Vec::new()]),
            Ok(out) => {
                // Lost (reaped by other code) cannot happen: nothing else waits.
                let s = out.exit.status();
                let status = match s.map(|s| (s.code(), s.signal())) {
                    Some((Some(code), _)) => format!("exit {code}"),
                    Some((None, signal)) => format!("signal {}", signal.unwrap_or(0)),
                    None => "lost".to_string(),
                };
                let cut = out.stdout_truncated || out.stderr_truncated;
                let ok = s.is_some_and(|s| s.success());
                (status, ok, cut, [out.stdout, out.stderr])
            }
        };
        let ok = ok && self.stopped.is_none() && !cut;
        if let Some(why) = self.stopped {
            status = format!("{why} ({status})");
        }
        status += if cut { ", output cut" } else { "" };
        let (mut line, err) = (last_line(&stdout), last_line(&stderr));
        if !err.is_empty() && (!ok || line.is_empty()) {
            line = format!("stderr: {err}");
        }
        let time = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let bytes = [stdout.len(), stderr.len()].map(human_bytes);
        let ([out, err], time) = (bytes, format!("{time:.2}s"));
        let columns = format!("{time:>7}  {out:>10}  {err:>10}  {}", clip(&line, 60));
        (self.deadline, self.end) = (None, Some((status, ok, columns)));
    }
}

fn last_line(s: &[u8]) -> String {
    let blank = |l: &&[u8]| l.iter().all(u8::is_ascii_whitespace);
    let line = s.split(|&b| b == b'\n').rfind(|l| !blank(l));
    let line = String::from_utf8_lossy(line.unwrap_or_default());
    line.trim().replace(char::is_control, " ")
}

/// Our context: `dispatch(&mut runner)` hands it to every callback.
#[derive(Default)]
struct Runner {
    rows: Vec<Row>,
    running: usize,
    next: usize,
    jobs: usize,
    timeout: Option<Duration>,
    interrupted: bool,
    /// `sh -c LINE`, built at the first start and reused.
    line: Option<Prepared>,
}

impl Runner {
    fn fill(&mut self, reactor: &mut Reactor<Runner>) {
        while self.running < self.jobs && self.next < self.rows.len() && !self.interrupted {
            let (row, now) = (self.next, Instant::now());
            self.next += 1;
            let r = &mut self.rows[row];
            // `sh -c LINE`, described once: each start rebuilds only the
            // LINE argument. Not our stdin (the list, or the terminal); a
            // group of its own.
            let line = self.line.get_or_insert_with(|| {
                let mut sh = Prepared::new("sh");
                sh.args(["-c", ""]).stdin(Redirect::Null).process_group(0);
                sh
            });
            line.set_arg(1, &r.command);
            let options = OutputOptions::new().cap(64 << 20); // per stream
            let done = move |runner: &mut Runner, reactor: &mut _, out| {
                runner.complete(row, Ok(out));
                runner.fill(reactor); // a slot is free: start the next now
            };
            (r.started, self.running) = (Some(now), self.running + 1);
            match reactor.spawn_output_prepared(line, options, done) {
                Ok(id) => (r.id, r.deadline) = (Some(id), self.timeout.map(|t| now + t)),
                Err(e) => self.complete(row, Err(format!("not started: {e}"))),
            }
        }
    }

    fn complete(&mut self, row: usize, end: Result<Output, String>) {
        self.running -= 1;
        let (done, total) = (self.next - self.running, self.rows.len());
        let (r, width) = (&mut self.rows[row], total.to_string().len());
        r.complete(end);
        eprintln!("[{done:>width$}/{total}] {:<24} {}", r.status(), r.command);
    }

    /// Notes deaths, Ctrl-C (`signal`), and acts on the deadlines that came.
    fn check(&mut self, reactor: &mut Reactor<Runner>, signal: Option<i32>) {
        if let Some(signal) = signal.filter(|_| !self.interrupted) {
            eprintln!("parallel: got signal {signal}: stopping the commands that run");
        }
        self.interrupted |= signal.is_some();
        let (now, grace) = (Instant::now(), Instant::now() + GRACE);
        for r in self.rows.iter_mut().filter(|r| r.end.is_none()) {
            let Some(id) = r.id else { continue };
            if !r.dead && !reactor.contains(id) {
                // Something it left behind may hold its output: wait a bit.
                let until = r.deadline.map(|d| d.max(grace));
                (r.dead, r.deadline) = (true, r.stopped.map(|_| grace).or(until));
            }
            // Ctrl-C: every command's time is up (output: in `GRACE`).
            if signal.is_some() && r.dead {
                r.deadline = Some(r.deadline.map_or(grace, |d| d.min(grace)));
            } else if signal.is_some() && r.stopped.is_none() {
                (r.stopped, r.deadline) = (Some("interrupted"), Some(now));
            }
            if r.deadline.is_some_and(|d| d <= now) {
                r.deadline = None;
                let stopped = match r.dead {
                    true => reactor.close_output(id), // its callback comes next
                    // SIGTERM to its group, SIGKILL after `GRACE` (`dispatch`).
                    false => reactor.terminate_group(id, GRACE),
                };
                r.stopped = r.stopped.or((!r.dead).then_some("timed out"));
                stopped.unwrap_or_else(|e| eprintln!("parallel: cannot stop {}: {e}", r.command));
            }
        }
    }
}

/// `-j`, `-t` (`None` if not given; zero for no limit) and `--demo`.
fn parse_args() -> Result<(usize, Option<Duration>, bool), String> {
    let (mut jobs, mut timeout, mut demo) = (4, None, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            exit(0);
        }
        demo |= arg == "--demo";
        let flag = arg.get(..2).unwrap_or_default();
        let value = match (arg.as_str(), flag) {
            ("--demo", _) => continue,
            (_, "-j" | "-t") if arg.len() > 2 => arg[2..].to_string(), // `-j4`
            (_, "-j" | "-t") => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
            _ => return Err(format!("unknown argument {arg:?}")),
        };
        let bad = || format!("{flag}: bad value {value:?}");
        if flag == "-j" {
            jobs = value.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
        } else {
            let seconds = value.parse().map(Duration::try_from_secs_f64);
            timeout = Some(seconds.ok().and_then(Result::ok).ok_or_else(bad)?);
        }
    }
    Ok((jobs, timeout, demo))
}

fn human_bytes(n: usize) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

fn clip(s: &str, width: usize) -> String {
    match s.chars().nth(width) {
        None => s.to_string(),
        Some(_) => s.chars().take(width - 1).chain(['…']).collect(),
    }
}

fn print_table(rows: &[Row]) {
    let width = |f: fn(&Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let cw = width(|r| r.command.chars().count()).clamp(7, 40);
    let sw = width(|r| r.status().chars().count()).max(6);
    let n = rows.len().to_string().len();
    let (h0, h1, h2, h3, h4, h5) = ("#", "command", "status", "time", "stdout", "stderr");
    println!("\n{h0:>n$}  {h1:<cw$}  {h2:<sw$}  {h3:>7}  {h4:>10}  {h5:>10}  last line");
    let never = format!("{:>7}  {:>10}  {:>10}", "-", "0 B", "0 B");
    for (i, r) in rows.iter().enumerate() {
        let (i, command, status) = (i + 1, clip(&r.command, cw), r.status());
        let columns = r.end.as_ref().map_or(&never, |end| &end.2);
        let line = format!("{i:>n$}  {command:<cw$}  {status:<sw$}  {columns}");
        println!("{}", line.trim_end());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (jobs, timeout, demo) = parse_args().unwrap_or_else(|e| {
        eprintln!("parallel: {e}\n{USAGE}");
        exit(2);
    });
    let (input, default) = match demo || io::stdin().is_terminal() {
        true => (DEMO.to_string(), 1),
        false => (io::read_to_string(io::stdin())?, 10),
    };
    if default == 1 {
        eprintln!("parallel: running the built-in demo (see --help)");
    }
    let timeout = Some(timeout.unwrap_or(Duration::from_secs(default))).filter(|t| !t.is_zero());
    let lines = input
        .lines()
        .filter(|l| !l.trim_matches([' ', '\t', '\r', '\x0c']).is_empty());
    let row = |command: &str| Row {
        command: command.into(),
        ..Row::default()
    };
    let rows: Vec<Row> = lines.map(row).collect();
    let limit = timeout.map_or("none".to_string(), |t| format!("{:.1}s", t.as_secs_f64()));
    let n = rows.len();
    eprintln!("parallel: {n} command(s), up to {jobs} at a time, time-out {limit}");

    let (mut poll, mut events) = (Poll::new()?, Events::with_capacity(64));
    let mut reactor = Reactor::<Runner>::new(Hooks::default())?;
    // Should an error below end the loop early, kill and reap what is left.
    reactor.set_drop_policy(DropPolicy::KillAndReap(GRACE));
    let (sender, mut signals) = pipe::new()?;
    SIGNAL_PIPE.store(sender.into_raw_fd(), Relaxed);
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: `on_signal` is async-signal-safe (see there).
        unsafe { signal(sig, SigHandler::Handler(on_signal)) }?;
    }
    let registry = poll.registry();
    registry.register(&mut reactor, CHILDREN, Interest::READABLE)?;
    registry.register(&mut signals, SIGNALS, Interest::READABLE)?;

    let mut runner = Runner::default();
    (runner.rows, runner.jobs, runner.timeout) = (rows, jobs, timeout);
    let started = Instant::now();
    runner.fill(&mut reactor);
    while runner.running > 0 || (!runner.interrupted && runner.next < runner.rows.len()) {
        // Sleep until the reactor's next SIGKILL or our next deadline.
        let ours = runner.rows.iter().filter_map(|r| r.deadline).min();
        let ours = ours.map(|d| d.saturating_duration_since(Instant::now()));
        let wait = evchild::earliest(reactor.timeout(), ours);
        match poll.poll(&mut events, wait) {
            // A signal handler ran; its pipe wakes the next poll.
            Err(e) if e.kind() == ErrorKind::Interrupted => events.clear(),
            other => other?,
        }
        // After *every* poll: reads output, reaps, sends SIGKILLs, calls us.
        reactor.dispatch(&mut runner)?;
        let signal = events.iter().any(|e| e.token() == SIGNALS);
        while signal && signals.read(&mut [0; 64]).is_ok_and(|n| n > 0) {}
        runner.check(&mut reactor, signal.then(|| SIGNAL.load(Relaxed)));
    }

    print_table(&runner.rows);
    let (total, elapsed) = (runner.rows.len(), started.elapsed().as_secs_f64());
    let ok = |r: &&Row| matches!(r.end, Some((_, true, _)));
    let failed = runner.rows.iter().filter(|r| !ok(r)).count();
    let summary = format!("{} succeeded, {failed} failed", total - failed);
    println!("\n{total} command(s) in {elapsed:.2}s: {summary}");
    exit(if failed > 0 { 1 } else { 0 });
}
