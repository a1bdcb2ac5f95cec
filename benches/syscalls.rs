//! What one child costs the parent, for each backend and `LibraryAlways`,
//! next to a bare std spawn + `waitpid(-1)` loop doing the same stream:
//!
//! * `strace`: the parent's system calls per child, K = 1 and K = 8 deep,
//!   from `strace -f -ff` per-thread logs of a fresh process per cell,
//!   counted between two markers (the warm-up and the set-up are outside);
//! * `cpu`: the parent's user + system CPU per child at K = 8 (M = 0), every
//!   subject in a fresh process, interleaved over rounds in one run.
//!
//! ```sh
//! cargo bench --bench syscalls -- strace   # the system-call tables (needs strace)
//! cargo bench --bench syscalls -- cpu      # CPU per child and ratios to the bare loop
//! cargo bench --bench syscalls             # both
//! ```
//!
//! Knobs (environment):
//! * `EVCHILD_SYSCALLS_CHILDREN`: children measured per strace cell (default
//!   2000);
//! * `EVCHILD_SYSCALLS_DEPTHS`: depths K of the strace tables (default `1,8`);
//! * `EVCHILD_CPU_CHILDREN`: children measured per CPU cell (default 2000);
//! * `EVCHILD_CPU_ROUNDS`: CPU rounds (default 11);
//! * `EVCHILD_CPU_DEPTH`: K of the CPU comparison (default 8);
//! * `EVCHILD_SYSCALLS_SUBJECTS`: a subset of
//!   `bare,pidfd,prepared,peek,scan,always` (`prepared`: the `Pidfd`
//!   backend, started through `Reactor::spawn_prepared`);
//! * `EVCHILD_SYSCALLS_OUT=FILE`: also write the report there.
//!
//! Without `--bench` (under `cargo test --benches`) it runs a smoke-sized
//! CPU pass only. BENCHMARKS.md shows a run and says how to read it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use evchild::{Backend, Exit, Hooks, Prepared, Reactor, Redirect, SigchldOwner};
use evchild_testkit::bench::{load_average, median, min_max, rusage};
use mio::{Events, Interest, Poll, Token};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The short-lived child.
const TRUE: &str = "/bin/true";
/// Written to descriptor -1 (`EBADF`: nothing happens) around the measured
/// stream, so the strace log shows where it starts and ends.
const BEGIN: &[u8] = b"evchild-syscalls: begin";
const END: &[u8] = b"evchild-syscalls: end";
/// The variable that makes this program a worker: `SUBJECT,N,WARMUP,DEPTH`.
const WORKER: &str = "EVCHILD_SYSCALLS_WORKER";

// ---------------------------------------------------------------------------
// Subjects
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subject {
    Bare,
    Pidfd,
    Peek,
    Scan,
    Always,
    /// `Pidfd`, started through `Reactor::spawn_prepared`.
    Prepared,
}

impl Subject {
    const ALL: [Subject; 6] = [
        Subject::Bare,
        Subject::Pidfd,
        Subject::Prepared,
        Subject::Peek,
        Subject::Scan,
        Subject::Always,
    ];

    fn key(self) -> &'static str {
        match self {
            Subject::Bare => "bare",
            Subject::Pidfd => "pidfd",
            Subject::Peek => "peek",
            Subject::Scan => "scan",
            Subject::Always => "always",
            Subject::Prepared => "prepared",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Subject::Bare => "bare std spawn + waitpid(-1)",
            Subject::Pidfd => "Pidfd",
            Subject::Peek => "Peek",
            Subject::Scan => "Scan",
            Subject::Always => "LibraryAlways",
            Subject::Prepared => "Pidfd, spawn_prepared",
        }
    }

    fn from_key(key: &str) -> Res<Subject> {
        Subject::ALL
            .into_iter()
            .find(|s| s.key() == key.trim())
            .ok_or_else(|| format!("unknown subject {key:?}").into())
    }

    fn hooks(self) -> Option<(Hooks<Ctx>, Option<Backend>)> {
        let library = Hooks::new(SigchldOwner::Library);
        match self {
            Subject::Bare => None,
            Subject::Pidfd | Subject::Prepared => {
                Some((library.backend(Backend::Pidfd), Some(Backend::Pidfd)))
            }
            Subject::Peek => Some((library.backend(Backend::Peek), Some(Backend::Peek))),
            Subject::Scan => Some((library.backend(Backend::Scan), Some(Backend::Scan))),
            Subject::Always => Some((Hooks::new(SigchldOwner::LibraryAlways), None)),
        }
    }
}

// ---------------------------------------------------------------------------
// The worker: one subject's stream in a process of its own
// ---------------------------------------------------------------------------

fn mark(text: &[u8]) {
    // SAFETY: writing a valid buffer to an invalid descriptor: EBADF.
    unsafe { libc::write(-1, text.as_ptr().cast(), text.len()) };
}

fn waitpid_any() -> io::Result<ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is valid and writable for the call.
        let rc = unsafe { libc::waitpid(-1, &mut status, 0) };
        if rc > 0 {
            return Ok(ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn true_command() -> Command {
    let mut command = Command::new(TRUE);
    command.stdin(Stdio::null());
    command
}

/// std's `Command::spawn` (posix_spawn) and a blocking `waitpid(-1)`,
/// `depth` in flight.
fn bare_stream(command: &mut Command, n: usize, depth: usize) -> Res<()> {
    let (mut started, mut done) = (0, 0);
    while done < n {
        while started < n && started - done < depth {
            // std's Child neither waits nor kills on drop.
            drop(command.spawn()?);
            started += 1;
        }
        let status = waitpid_any()?;
        if !status.success() {
            return Err(format!("bare child failed: {status}").into());
        }
        done += 1;
    }
    Ok(())
}

#[derive(Default)]
struct Ctx {
    in_flight: usize,
    done: usize,
    failed: usize,
}

fn on_death(ctx: &mut Ctx, _: &mut Reactor<Ctx>, exit: Exit) {
    ctx.in_flight -= 1;
    ctx.done += 1;
    if !exit.status().is_some_and(|s| s.success()) {
        ctx.failed += 1;
    }
}

/// The README's loop: a `mio::Poll` with the reactor registered; after each
/// `dispatch`, start children until `depth` are running again.
struct Loop {
    poll: Poll,
    events: Events,
    reactor: Reactor<Ctx>,
    ctx: Ctx,
    command: Command,
    /// The same stream as `command`, for the `prepared` subject (built at
    /// set-up, so its descriptors are reserved low).
    prepared: Option<Prepared>,
}

impl Loop {
    fn new(hooks: Hooks<Ctx>, expected: Option<Backend>, prepared: bool) -> Res<Loop> {
        let reactor = Reactor::new(hooks)?;
        if expected.is_some() && reactor.backend() != expected {
            return Err(format!("asked for {expected:?}, got {:?}", reactor.backend()).into());
        }
        let mut lp = Loop {
            poll: Poll::new()?,
            events: Events::with_capacity(64),
            reactor,
            ctx: Ctx::default(),
            command: true_command(),
            prepared: None,
        };
        if prepared {
            let mut truth = Prepared::new(TRUE);
            truth.stdin(Redirect::Null);
            truth.build()?;
            lp.prepared = Some(truth);
        }
        lp.poll
            .registry()
            .register(&mut lp.reactor, Token(0), Interest::READABLE)?;
        Ok(lp)
    }

    fn stream(&mut self, n: usize, depth: usize) -> Res<()> {
        let mut started = 0;
        self.ctx.done = 0;
        loop {
            while started < n && self.ctx.in_flight < depth {
                match &mut self.prepared {
                    Some(prepared) => self.reactor.spawn_prepared(prepared, on_death)?,
                    None => self.reactor.spawn(&mut self.command, on_death)?,
                };
                started += 1;
                self.ctx.in_flight += 1;
            }
            if self.ctx.done == n {
                break;
            }
            match self.poll.poll(&mut self.events, self.reactor.timeout()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => other?,
            }
            self.reactor.dispatch(&mut self.ctx)?;
        }
        if self.ctx.failed != 0 || self.reactor.stats().lost != 0 {
            return Err(format!(
                "{} failed, {} lost",
                self.ctx.failed,
                self.reactor.stats().lost
            )
            .into());
        }
        Ok(())
    }
}

/// What the worker measured over its measured stream.
struct Sample {
    /// The parent's user + system CPU (`RUSAGE_SELF`).
    parent: Duration,
    /// The reaped children's (`RUSAGE_CHILDREN`).
    child: Duration,
    wall: Duration,
    /// `dispatch` calls, for evchild.
    wakeups: Option<u64>,
}

/// Runs `subject`: set-up and `warmup` children, then `BEGIN`, the measured
/// `n`, `END`. Only the measured part is in the sample (and between the
/// markers in a strace log).
fn work(subject: Subject, n: usize, warmup: usize, depth: usize) -> Res<Sample> {
    let (mut lp, mut command) = match subject.hooks() {
        Some((hooks, expected)) => (
            Some(Loop::new(hooks, expected, subject == Subject::Prepared)?),
            None,
        ),
        None => (None, Some(true_command())),
    };
    let stream =
        |lp: &mut Option<Loop>, command: &mut Option<Command>, count: usize| match (lp, command) {
            (Some(lp), _) => lp.stream(count, depth),
            (None, Some(command)) => bare_stream(command, count, depth),
            (None, None) => unreachable!(),
        };
    stream(&mut lp, &mut command, warmup)?;
    let wakeups_before = lp.as_ref().map(|lp| lp.reactor.stats().dispatches);
    let (parent, child, wall) = (
        rusage(libc::RUSAGE_SELF),
        rusage(libc::RUSAGE_CHILDREN),
        Instant::now(),
    );
    mark(BEGIN);
    stream(&mut lp, &mut command, n)?;
    mark(END);
    let sample = Sample {
        wall: wall.elapsed(),
        parent: rusage(libc::RUSAGE_SELF).saturating_sub(parent),
        child: rusage(libc::RUSAGE_CHILDREN).saturating_sub(child),
        wakeups: lp
            .as_ref()
            .zip(wakeups_before)
            .map(|(lp, before)| lp.reactor.stats().dispatches - before),
    };
    Ok(sample)
}

fn worker(spec: &str) -> Res<()> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [subject, n, warmup, depth] = parts[..] else {
        return Err(format!("{WORKER}={spec:?}").into());
    };
    let subject = Subject::from_key(subject)?;
    let x = work(subject, n.parse()?, warmup.parse()?, depth.parse()?)?;
    println!(
        "SAMPLE {} {} {} {} {}",
        std::process::id(),
        x.parent.as_nanos(),
        x.child.as_nanos(),
        x.wall.as_nanos(),
        x.wakeups.map_or(-1, |w| w as i64)
    );
    Ok(())
}

/// What a worker printed.
struct Report {
    pid: u32,
    sample: Sample,
}

fn parse_report(text: &str) -> Res<Report> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("SAMPLE "))
        .ok_or_else(|| format!("worker said {text:?}"))?;
    let f: Vec<i128> = line.split(' ').map(str::parse).collect::<Result<_, _>>()?;
    if f.len() != 5 {
        return Err(format!("worker said {text:?}").into());
    }
    let ns = |i: usize| Duration::from_nanos(f[i] as u64);
    Ok(Report {
        pid: f[0] as u32,
        sample: Sample {
            parent: ns(1),
            child: ns(2),
            wall: ns(3),
            wakeups: (f[4] >= 0).then_some(f[4] as u64),
        },
    })
}

/// This program as a worker for `subject`, optionally under `wrapper`
/// (strace and its arguments).
fn run_worker(
    wrapper: &[String],
    subject: Subject,
    n: usize,
    warmup: usize,
    depth: usize,
) -> Res<Report> {
    let exe = std::env::current_exe()?;
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg("--").arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let output = command
        .env(WORKER, format!("{},{n},{warmup},{depth}", subject.key()))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("{} worker failed: {}", subject.name(), output.status).into());
    }
    parse_report(&String::from_utf8(output.stdout)?)
}

// ---------------------------------------------------------------------------
// strace: the parent's calls per child
// ---------------------------------------------------------------------------

/// A name for the call on one strace line, with what tells its uses apart:
/// the `epoll_ctl` operation, the wait's id type, an `rt_sigaction` that
/// only reads, an error. `None` for lines that are not calls.
fn classify(line: &str, in_handler: bool) -> Option<String> {
    let line = line.trim();
    if line.starts_with("+++") || line.starts_with("---") {
        return None;
    }
    let open = line.find('(')?;
    let name = &line[..open];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let args = &line[open + 1..];
    let arg = |i: usize| args.split(", ").nth(i).unwrap_or("").trim_end_matches(')');
    let result = line.rsplit_once(" = ").map_or("", |(_, r)| r);
    let mut key = match name {
        "epoll_ctl" => format!("epoll_ctl({})", arg(1)),
        "rt_sigaction" if arg(1) == "NULL" => {
            format!("rt_sigaction({}, NULL, &old) (query)", arg(0))
        }
        "rt_sigaction" => format!("rt_sigaction({}, act) (change)", arg(0)),
        "rt_sigprocmask" => format!("rt_sigprocmask({})", arg(0)),
        "waitid" => {
            let wnowait = if args.contains("WNOWAIT") {
                ", WNOWAIT"
            } else {
                ""
            };
            format!("waitid({}{wnowait})", arg(0))
        }
        "wait4" if arg(0) == "-1" => "wait4(-1)".to_owned(),
        "wait4" => "wait4(pid)".to_owned(),
        "epoll_wait" | "epoll_pwait" => {
            // mio waits with the loop's timeout (-1 here); evchild's inner
            // set is asked with 0.
            let timeout = args
                .rsplit(", ")
                .next()
                .unwrap_or("")
                .split(')')
                .next()
                .unwrap_or("");
            if timeout == "0" {
                format!("{name}(inner set, timeout 0)")
            } else {
                format!("{name}(mio, timeout {timeout})")
            }
        }
        "openat" => {
            let path = arg(1);
            format!("openat({path})")
        }
        "write" if arg(0) == "-1" => return None, // the markers
        _ => name.to_owned(),
    };
    if let Some(errno) = result.strip_prefix("-1 ").and_then(|r| r.split(' ').next()) {
        let _ = write!(key, " → {errno}");
    } else if (name == "wait4" || name == "waitid") && result.starts_with('0') {
        // A look that found nothing.
        let empty = if name == "waitid" && !args.contains("si_pid=") {
            " → nothing"
        } else if name == "wait4" {
            " → 0 (nothing)"
        } else {
            ""
        };
        key.push_str(empty);
    } else if name == "read" && result == "0" {
        key.push_str(" → 0");
    }
    if in_handler {
        key.push_str(" [in SIGCHLD handler]");
    }
    Some(key)
}

/// Counts the calls between the markers in one strace log. A `SIGCHLD`
/// followed (before any other signal) by `rt_sigreturn` ran a handler, and
/// the calls in between are the handler's.
fn count_calls(log: &str) -> Res<BTreeMap<String, usize>> {
    let begin = String::from_utf8_lossy(BEGIN).into_owned();
    let end = String::from_utf8_lossy(END).into_owned();
    if log.contains("CLONE_THREAD") {
        return Err("the worker started a thread: count its log too".into());
    }
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("write(-1, ") && l.contains(&begin))
        .ok_or("no begin marker in the parent's log")?;
    let stop = lines
        .iter()
        .position(|l| l.starts_with("write(-1, ") && l.contains(&end))
        .ok_or("no end marker in the parent's log")?;
    let window = &lines[start + 1..stop];
    let mut counts = BTreeMap::new();
    let mut handler_until = None;
    for (i, line) in window.iter().enumerate() {
        let in_handler = handler_until.is_some_and(|end| i <= end);
        let key = if line.starts_with("--- SIGCHLD") {
            let ret = window[i + 1..]
                .iter()
                .take(16)
                .take_while(|l| !l.starts_with("---"))
                .position(|l| l.starts_with("rt_sigreturn("));
            handler_until = ret.map(|r| i + 1 + r);
            Some(
                if ret.is_some() {
                    "SIGCHLD, handler ran (a signal, not a call)"
                } else {
                    "SIGCHLD, default action (a signal, not a call; seen only under ptrace)"
                }
                .to_owned(),
            )
        } else if line.starts_with("rt_sigreturn(") {
            Some("rt_sigreturn [end of SIGCHLD handler]".to_owned())
        } else {
            classify(line, in_handler)
        };
        if let Some(key) = key {
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

struct StraceCell {
    subject: Subject,
    counts: BTreeMap<String, usize>,
    n: usize,
    wakeups: Option<u64>,
    logs: usize,
}

fn strace_cell(subject: Subject, n: usize, warmup: usize, depth: usize) -> Res<StraceCell> {
    let dir = std::env::temp_dir().join(format!(
        "evchild-syscalls-{}-{}-{depth}",
        std::process::id(),
        subject.key()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let prefix = dir.join("t");
    let wrapper: Vec<String> = [
        "strace",
        "-f",
        "-ff",
        "-qq",
        "-s",
        "40",
        "-o",
        prefix.to_str().ok_or("temp dir is not UTF-8")?,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let report = run_worker(&wrapper, subject, n, warmup, depth)?;
    let logs = std::fs::read_dir(&dir)?.count();
    let parent = std::fs::read_to_string(dir.join(format!("t.{}", report.pid)))?;
    let counts = count_calls(&parent)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(StraceCell {
        subject,
        counts,
        n,
        wakeups: report.sample.wakeups,
        logs,
    })
}

fn strace_table(depth: usize, cells: &[StraceCell]) -> String {
    let mut rows: Vec<&String> = cells.iter().flat_map(|c| c.counts.keys()).collect();
    rows.sort();
    rows.dedup();
    let mut s = String::new();
    s.push_str("| parent's call, per child |");
    for c in cells {
        let _ = write!(s, " {} |", c.subject.name());
    }
    s.push_str("\n|---|");
    for _ in cells {
        s.push_str("---:|");
    }
    s.push('\n');
    let per = |c: &StraceCell, k: usize| k as f64 / c.n as f64;
    let fmt = |x: f64| {
        if x == 0.0 {
            "–".to_owned()
        } else if x < 0.005 {
            "<0.01".to_owned()
        } else {
            format!("{x:.2}")
        }
    };
    for key in rows {
        let _ = write!(s, "| `{key}` |");
        for c in cells {
            let _ = write!(
                s,
                " {} |",
                fmt(per(c, c.counts.get(key).copied().unwrap_or(0)))
            );
        }
        s.push('\n');
    }
    let total = |c: &StraceCell| {
        c.counts
            .iter()
            .filter(|(k, _)| !k.contains("not a call"))
            .map(|(_, v)| v)
            .sum::<usize>()
    };
    s.push_str("| **system calls, total** |");
    for c in cells {
        let _ = write!(s, " **{:.2}** |", per(c, total(c)));
    }
    s.push_str("\n| exits per wake-up (`dispatch`) |");
    for c in cells {
        let _ = write!(
            s,
            " {} |",
            c.wakeups.map_or("–".into(), |w| format!(
                "{:.2}",
                c.n as f64 / w.max(1) as f64
            ))
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "\nK = {depth}; {} children per cell; {} per-process logs per cell (parent + children).",
        cells.first().map_or(0, |c| c.n),
        cells.iter().map(|c| c.logs).max().unwrap_or(0)
    );
    s
}

// ---------------------------------------------------------------------------
// CPU: the parent's CPU per child, interleaved
// ---------------------------------------------------------------------------

fn cpu(subjects: &[Subject], n: usize, warmup: usize, depth: usize, rounds: usize) -> Res<String> {
    let load_before = load_average();
    let started = Instant::now();
    // samples[i][round]
    let mut samples: Vec<Vec<Sample>> = subjects.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let t = Instant::now();
        for k in 0..subjects.len() {
            // Rotate, so no subject always runs first or after the same one.
            let i = (k + round) % subjects.len();
            let report = run_worker(&[], subjects[i], n, warmup, depth)?;
            samples[i].push(report.sample);
        }
        eprintln!("cpu: round {} took {:.1?}", round + 1, t.elapsed());
    }
    let us = |x: &Sample| x.parent.as_secs_f64() * 1e6 / n as f64;
    let bare = subjects.iter().position(|&s| s == Subject::Bare);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "K = {depth}, M = 0; {rounds} rounds × {n} children per cell (+{warmup} warm-up), \
         each cell in a fresh process, order rotated each round.\n"
    );
    s.push_str(
        "| subject | parent CPU/child (µs), median | min–max | ratio to bare (medians) | \
         per-round ratio: median | min–max | child CPU/child (µs) | children/s | exits/wake-up |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, subject) in subjects.iter().enumerate() {
        let xs: Vec<f64> = samples[i].iter().map(us).collect();
        let (lo, hi) = min_max(&xs);
        let med = median(xs.clone());
        let (ratio, paired, paired_range) = match bare {
            Some(b) => {
                let base = median(samples[b].iter().map(us).collect());
                let per_round: Vec<f64> = samples[i]
                    .iter()
                    .zip(&samples[b])
                    .map(|(x, y)| us(x) / us(y))
                    .collect();
                let (plo, phi) = min_max(&per_round);
                (
                    format!("{:.3}×", med / base),
                    format!("{:.3}×", median(per_round)),
                    format!("{plo:.3}–{phi:.3}"),
                )
            }
            None => ("–".into(), "–".into(), "–".into()),
        };
        let child = median(
            samples[i]
                .iter()
                .map(|x| x.child.as_secs_f64() * 1e6 / n as f64)
                .collect(),
        );
        let rate = median(
            samples[i]
                .iter()
                .map(|x| n as f64 / x.wall.as_secs_f64())
                .collect(),
        );
        let wakeups = if samples[i].iter().all(|x| x.wakeups.is_some()) {
            format!(
                "{:.2}",
                median(
                    samples[i]
                        .iter()
                        .map(|x| n as f64 / x.wakeups.unwrap_or(1).max(1) as f64)
                        .collect()
                )
            )
        } else {
            "–".into()
        };
        let _ = writeln!(
            s,
            "| {} | {med:.1} | {lo:.1}–{hi:.1} | {ratio} | {paired} | {paired_range} | {child:.1} | {rate:.0} | {wakeups} |",
            subject.name()
        );
    }
    let _ = writeln!(
        s,
        "\nRun time {:.1?}. Load average before: {load_before}; after: {}.",
        started.elapsed(),
        load_average()
    );
    Ok(s)
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

fn env_usize(name: &str, default: usize) -> Res<usize> {
    match std::env::var(name).ok().filter(|v| !v.is_empty()) {
        Some(v) => Ok(v.trim().replace('_', "").parse()?),
        None => Ok(default),
    }
}

fn main() -> Res<()> {
    if let Ok(spec) = std::env::var(WORKER) {
        return worker(&spec);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let want = |what: &str| {
        let named: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        named.is_empty() || named.iter().any(|a| *a == what)
    };
    let subjects: Vec<Subject> = match std::env::var("EVCHILD_SYSCALLS_SUBJECTS") {
        Ok(v) if !v.is_empty() => v
            .split(',')
            .map(Subject::from_key)
            .collect::<Res<Vec<_>>>()?,
        _ => Subject::ALL.to_vec(),
    };
    let mut report = String::new();
    let machine = format!(
        "{} CPUs, Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let _ = writeln!(report, "Machine: {machine}.\n");

    if !bench {
        // Smoke pass under `cargo test --benches`: every subject once, tiny.
        report.push_str(&cpu(&subjects, 10, 5, 4, 1)?);
        print!("{report}");
        return Ok(());
    }

    if want("strace") {
        let n = env_usize("EVCHILD_SYSCALLS_CHILDREN", 2000)?;
        let warmup = (n / 10).clamp(5, 100);
        let depths: Vec<usize> = match std::env::var("EVCHILD_SYSCALLS_DEPTHS") {
            Ok(v) if !v.is_empty() => v
                .split(',')
                .map(|d| d.trim().parse())
                .collect::<Result<_, _>>()?,
            _ => vec![1, 8],
        };
        for depth in depths {
            let mut cells = Vec::new();
            for &subject in &subjects {
                let t = Instant::now();
                cells.push(strace_cell(subject, n, warmup, depth)?);
                eprintln!(
                    "strace: {} at K = {depth} took {:.1?}",
                    subject.name(),
                    t.elapsed()
                );
            }
            let _ = writeln!(report, "### strace, K = {depth}\n");
            report.push_str(&strace_table(depth, &cells));
            report.push('\n');
        }
    }
    if want("cpu") {
        let n = env_usize("EVCHILD_CPU_CHILDREN", 2000)?;
        let rounds = env_usize("EVCHILD_CPU_ROUNDS", 11)?;
        let depth = env_usize("EVCHILD_CPU_DEPTH", 8)?;
        let _ = writeln!(report, "### Parent CPU per child\n");
        report.push_str(&cpu(&subjects, n, (n / 10).clamp(5, 100), depth, rounds)?);
    }
    print!("{report}");
    if let Ok(path) = std::env::var("EVCHILD_SYSCALLS_OUT") {
        if !path.is_empty() {
            std::fs::write(path, &report)?;
        }
    }
    Ok(())
}
