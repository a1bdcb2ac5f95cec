//! Spawn-and-reap figures: what a child's death costs the parent with M idle
//! children registered, for each `Library`-mode backend and for
//! `LibraryAlways`, and the same stream through a bare `posix_spawn` +
//! `waitpid` loop, `tokio::process` and `async-process`.
//!
//! ```sh
//! cargo bench -p evchild-async --bench reaping   # the full table, about two minutes
//! EVCHILD_BENCH_ROUNDS=1 EVCHILD_BENCH_IDLE=0,1000 cargo bench -p evchild-async --bench reaping  # quick
//! cargo bench --bench reaping            # the same without the tokio and async-process rows
//! ```
//!
//! This one file is built twice: as the evchild crate's own bench, whose
//! dev-dependencies hold no async runtime, and as the bench of the workspace
//! member `evchild-async` (examples/async/), whose build script sets
//! `cfg(evchild_async_peers)` and so adds the two async peers.
//!
//! Knobs (environment):
//! * `EVCHILD_BENCH_CHILDREN`: short-lived children measured per cell and
//!   round (default 1000);
//! * `EVCHILD_BENCH_ROUNDS`: rounds (default 5); in each round every cell of
//!   a level runs once, in a rotated order, and the table shows each
//!   column's median over the rounds and the spread;
//! * `EVCHILD_BENCH_IDLE`: the idle levels M, comma-separated (default
//!   `0,1000,10000`);
//! * `EVCHILD_BENCH_DEPTH`: children in flight at once (default 8);
//! * `EVCHILD_BENCH_REAPERS`: which evchild reapers to run, comma-separated
//!   from `pidfd,prepared,peek,peek-zombie,scan,always` (default: all;
//!   `prepared` is `pidfd` started through `Reactor::spawn_prepared`);
//! * `EVCHILD_BENCH_PEERS`: which peers to run, comma-separated from
//!   `posix_spawn,std,tokio,async-process` (default: all that are built in),
//!   or `0` for none;
//! * `EVCHILD_BENCH_PROGRAM`: the stream's program (default `/bin/true`);
//! * `EVCHILD_BENCH_OUT=FILE`: also write the report there.
//!
//! Without `--bench` (that is, under `cargo test --benches`), it runs a
//! smoke-sized pass: one round of 40 children, M = 0 and 16.
//!
//! BENCHMARKS.md says what each column means and shows a run.

use std::ffi::CString;
use std::fmt::Write as _;
use std::io;
use std::os::raw::c_char;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use evchild::{Backend, Exit, Hooks, Pid, Prepared, Reactor, Redirect, SigchldOwner};
use evchild_testkit::bench::{
    load_average, machine, median, pid_max, raise_nofile, rusage, thread_cpu,
};
use mio::{Events, Interest, Poll, Token};

/// The short-lived child.
/// The stream's program: `/bin/true`, or `EVCHILD_BENCH_PROGRAM` (a
/// statically linked one, say, to take the dynamic loader out of the
/// child's cost).
fn true_program() -> &'static str {
    static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        std::env::var("EVCHILD_BENCH_PROGRAM").unwrap_or_else(|_| "/bin/true".into())
    })
}
/// Descriptors kept free beside the pidfds (std, mio, the test harness).
const FD_MARGIN: u64 = 256;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

struct Config {
    children: usize,
    rounds: usize,
    warmup: usize,
    depth: usize,
    idle: Vec<usize>,
    variants: Vec<Variant>,
    peers: Vec<Peer>,
    out: Option<String>,
}

impl Config {
    fn from_env() -> Res<Config> {
        // cargo bench passes --bench; cargo test --benches does not.
        let bench = std::env::args().any(|a| a == "--bench");
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let children = match var("EVCHILD_BENCH_CHILDREN") {
            Some(v) => v.parse()?,
            None if bench => 1000,
            None => 40,
        };
        let rounds = match var("EVCHILD_BENCH_ROUNDS") {
            Some(v) => v.parse()?,
            None if bench => 5,
            None => 1,
        };
        let idle = match var("EVCHILD_BENCH_IDLE") {
            Some(v) => v
                .split(',')
                .map(|m| m.trim().replace('_', "").parse::<usize>())
                .collect::<Result<Vec<_>, _>>()?,
            None if bench => vec![0, 1000, 10_000],
            None => vec![0, 16],
        };
        let depth = match var("EVCHILD_BENCH_DEPTH") {
            Some(v) => v.parse()?,
            None => 8,
        };
        let variants = match var("EVCHILD_BENCH_REAPERS") {
            Some(v) => v
                .split(',')
                .map(|name| {
                    Variant::ALL
                        .into_iter()
                        .find(|x| x.key() == name.trim())
                        .ok_or_else(|| format!("EVCHILD_BENCH_REAPERS: unknown reaper {name:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Variant::ALL.to_vec(),
        };
        if children == 0 || depth == 0 || rounds == 0 {
            return Err("EVCHILD_BENCH_CHILDREN, _ROUNDS and _DEPTH must be positive".into());
        }
        Ok(Config {
            children,
            rounds,
            warmup: (children / 10).clamp(5, 100),
            depth,
            idle,
            variants,
            peers: match var("EVCHILD_BENCH_PEERS").as_deref() {
                Some("0") => Vec::new(),
                Some(v) => v
                    .split(',')
                    .map(|name| {
                        Peer::ALL
                            .into_iter()
                            .find(|x| x.key() == name.trim())
                            .ok_or_else(|| format!("EVCHILD_BENCH_PEERS: unknown peer {name:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                None => Peer::ALL.to_vec(),
            },
            out: var("EVCHILD_BENCH_OUT"),
        })
    }
}

// ---------------------------------------------------------------------------
// Samples (the clocks are in evchild_testkit::bench)
// ---------------------------------------------------------------------------

/// What one measured stream cost.
#[derive(Clone, Copy, Debug)]
struct Sample {
    exits: usize,
    wall: Duration,
    /// This process's CPU (every thread) over the stream.
    parent: Duration,
    /// Of which the calling thread spent inside the spawn calls.
    spawn: Duration,
    /// CPU of the children reaped during the stream.
    child: Duration,
    /// Reactor wake-ups handled (`dispatch` calls), if it has them.
    wakeups: Option<u64>,
}

impl Sample {
    fn per_exit(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e6 / self.exits as f64
    }
    fn parent_us(&self) -> f64 {
        self.per_exit(self.parent)
    }
    fn spawn_us(&self) -> f64 {
        self.per_exit(self.spawn)
    }
    /// The parent's CPU outside the spawn calls: waiting, reaping, callbacks.
    fn reap_us(&self) -> f64 {
        self.per_exit(self.parent.saturating_sub(self.spawn))
    }
    /// The reap part per wake-up rather than per exit: how long one
    /// `dispatch` (and the loop around it) takes, whatever the batching.
    fn reap_per_wakeup_us(&self) -> Option<f64> {
        let wakeups = self.wakeups?.max(1) as f64;
        Some(self.parent.saturating_sub(self.spawn).as_secs_f64() * 1e6 / wakeups)
    }
    fn child_us(&self) -> f64 {
        self.per_exit(self.child)
    }
    fn rate(&self) -> f64 {
        self.exits as f64 / self.wall.as_secs_f64()
    }
}

struct Meter {
    wall: Instant,
    parent: Duration,
    child: Duration,
}

impl Meter {
    fn start() -> Meter {
        Meter {
            parent: rusage(libc::RUSAGE_SELF),
            child: rusage(libc::RUSAGE_CHILDREN),
            wall: Instant::now(),
        }
    }

    fn stop(self, exits: usize, spawn: Duration, wakeups: Option<u64>) -> Sample {
        let wall = self.wall.elapsed();
        Sample {
            exits,
            wall,
            parent: rusage(libc::RUSAGE_SELF).saturating_sub(self.parent),
            spawn,
            child: rusage(libc::RUSAGE_CHILDREN).saturating_sub(self.child),
            wakeups,
        }
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`: the pid of an exited,
/// unreaped child, if any. Reaps nothing.
fn some_zombie() -> Option<libc::pid_t> {
    // SAFETY: all-zero is a valid `siginfo_t`; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is valid and writable for the call.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: waitid filled `info` (or left the zeroes: pid 0).
    let pid = unsafe { info.si_pid() };
    (rc == 0 && pid != 0).then_some(pid)
}

/// Blocks until `pid` has exited, without reaping it.
fn wait_exited_unreaped(pid: libc::pid_t) -> io::Result<()> {
    loop {
        // SAFETY: as in `some_zombie`.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid and writable for the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Blocking `waitpid(pid)`; `-1` for any child. Returns the pid and status.
fn waitpid_blocking(pid: libc::pid_t) -> io::Result<(libc::pid_t, ExitStatus)> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is valid and writable for the call.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc > 0 {
            return Ok((rc, ExitStatus::from_raw(status)));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

// ---------------------------------------------------------------------------
// Idle children
// ---------------------------------------------------------------------------

/// M `sleep` processes, started once per level (outside any reactor) and
/// adopted with `watch` by each cell's reactor. Dropping the set kills and
/// reaps them all, so a failed run leaves nothing behind; they also get
/// `SIGKILL` if this process dies first (`PR_SET_PDEATHSIG`).
struct Idle {
    pids: Vec<Pid>,
}

impl Idle {
    fn start(m: usize) -> Res<Idle> {
        let mut idle = Idle {
            pids: Vec::with_capacity(m),
        };
        let mut sleep = Command::new("sleep");
        sleep.arg("3600").stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: prctl is async-signal-safe. (This pushes std onto its fork
        // path; the idle children are set up once and not measured.)
        unsafe {
            sleep.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        for _ in 0..m {
            let child = sleep.spawn()?;
            idle.pids.push(Pid::from(child.id()));
        }
        idle.settle();
        Ok(idle)
    }

    /// Waits (at most a minute) until every idle child sleeps in `sleep`'s
    /// `nanosleep`: their exec and start-up (10,000 dynamic loaders) go on
    /// after `spawn` returns, and would otherwise share the CPUs with the
    /// first cells measured.
    fn settle(&self) {
        let asleep = |pid: &Pid| {
            std::fs::read_to_string(format!("/proc/{}/syscall", pid.as_raw())).is_ok_and(|s| {
                let nr = s
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<i64>().ok());
                nr == Some(libc::SYS_clock_nanosleep) || nr == Some(libc::SYS_nanosleep)
            })
        };
        let end = Instant::now() + Duration::from_secs(60);
        let mut from = 0;
        while from < self.pids.len() && Instant::now() < end {
            match self.pids[from..].iter().position(|pid| !asleep(pid)) {
                Some(i) => {
                    from += i;
                    std::thread::sleep(Duration::from_millis(20));
                }
                None => from = self.pids.len(),
            }
        }
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        for pid in &self.pids {
            // SAFETY: plain syscall; these pids are our unreaped children.
            unsafe { libc::kill(pid.as_raw(), libc::SIGKILL) };
        }
        for pid in &self.pids {
            // ECHILD would mean someone else reaped it; nothing to do then.
            let _ = waitpid_blocking(pid.as_raw());
        }
    }
}

/// The kernel's price of one look, with `idle` children and no zombie:
/// `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)` (the peek),
/// `wait4(-1, WNOHANG)` (`LibraryAlways`) and `wait4(pid, WNOHANG)` on a
/// running child (the scan, per child; the pidfd backend, per exit). In µs.
fn wait_costs(idle: &Idle) -> [Option<f64>; 3] {
    const LOOKS: u32 = 100;
    let time = |f: &dyn Fn()| {
        f(); // once to warm up
        let before = thread_cpu();
        for _ in 0..LOOKS {
            f();
        }
        Some((thread_cpu() - before).as_secs_f64() * 1e6 / f64::from(LOOKS))
    };
    let peek = time(&|| {
        let _ = some_zombie();
    });
    let any = time(&|| {
        let mut status = 0;
        // SAFETY: `status` and the null rusage pointer are valid for wait4.
        let rc = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, std::ptr::null_mut()) };
        assert!(rc <= 0, "wait4(-1) reaped {rc}: nothing may die here");
    });
    let one = idle.pids.get(idle.pids.len() / 2).and_then(|pid| {
        time(&|| {
            let mut status = 0;
            // SAFETY: as above.
            let rc = unsafe {
                libc::wait4(
                    pid.as_raw(),
                    &mut status,
                    libc::WNOHANG,
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(rc, 0, "idle child {pid} is not running");
        })
    });
    [peek, any, one]
}

// ---------------------------------------------------------------------------
// evchild cells
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Pidfd,
    Peek,
    /// Peek with one foreign (unregistered, unreaped) zombie first in line,
    /// which makes every pass fall back to the scan.
    PeekForeignZombie,
    Scan,
    LibraryAlways,
    /// `Pidfd`, started through `Reactor::spawn_prepared` (its `Prepared`
    /// built before the idle children are adopted).
    Prepared,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::Pidfd,
        Variant::Prepared,
        Variant::Peek,
        Variant::PeekForeignZombie,
        Variant::Scan,
        Variant::LibraryAlways,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Pidfd => "pidfd",
            Variant::Peek => "peek",
            Variant::PeekForeignZombie => "peek, 1 foreign zombie",
            Variant::Scan => "scan",
            Variant::LibraryAlways => "LibraryAlways",
            Variant::Prepared => "pidfd, spawn_prepared",
        }
    }

    /// The name `EVCHILD_BENCH_REAPERS` uses.
    fn key(self) -> &'static str {
        match self {
            Variant::Pidfd => "pidfd",
            Variant::Peek => "peek",
            Variant::PeekForeignZombie => "peek-zombie",
            Variant::Scan => "scan",
            Variant::LibraryAlways => "always",
            Variant::Prepared => "prepared",
        }
    }

    fn hooks(self) -> Hooks<Ctx> {
        match self {
            Variant::Pidfd | Variant::Prepared => {
                Hooks::new(SigchldOwner::Library).backend(Backend::Pidfd)
            }
            Variant::Peek | Variant::PeekForeignZombie => {
                Hooks::new(SigchldOwner::Library).backend(Backend::Peek)
            }
            Variant::Scan => Hooks::new(SigchldOwner::Library).backend(Backend::Scan),
            Variant::LibraryAlways => Hooks::new(SigchldOwner::LibraryAlways),
        }
    }

    fn expected_backend(self) -> Option<Backend> {
        match self {
            Variant::Pidfd | Variant::Prepared => Some(Backend::Pidfd),
            Variant::Peek | Variant::PeekForeignZombie => Some(Backend::Peek),
            Variant::Scan => Some(Backend::Scan),
            Variant::LibraryAlways => None,
        }
    }
}

#[derive(Default)]
struct Ctx {
    in_flight: usize,
    done: usize,
    failed: usize,
    idle_died: usize,
}

fn on_stream_death(ctx: &mut Ctx, _: &mut Reactor<Ctx>, exit: Exit) {
    ctx.in_flight -= 1;
    ctx.done += 1;
    if !exit.status().is_some_and(|s| s.success()) {
        ctx.failed += 1;
    }
}

fn on_idle_death(ctx: &mut Ctx, _: &mut Reactor<Ctx>, _: Exit) {
    ctx.idle_died += 1;
}

const CHILDREN: Token = Token(0);

struct Loop {
    poll: Poll,
    events: Events,
    reactor: Reactor<Ctx>,
    ctx: Ctx,
    command: Command,
    /// The same `/bin/true` stream, for the `prepared` variant.
    prepared: Option<Prepared>,
}

impl Loop {
    /// Spawns and reaps `n` children, `depth` at a time, replenishing after
    /// each `dispatch`. Returns the thread CPU spent in `spawn`.
    fn stream(&mut self, n: usize, depth: usize) -> Res<Duration> {
        let mut started = 0;
        let mut spawn = Duration::ZERO;
        self.ctx.done = 0;
        loop {
            while started < n && self.ctx.in_flight < depth {
                let before = thread_cpu();
                match &mut self.prepared {
                    Some(prepared) => self.reactor.spawn_prepared(prepared, on_stream_death)?,
                    None => self.reactor.spawn(&mut self.command, on_stream_death)?,
                };
                spawn += thread_cpu() - before;
                started += 1;
                self.ctx.in_flight += 1;
            }
            if self.ctx.done == n {
                return Ok(spawn);
            }
            match self.poll.poll(&mut self.events, self.reactor.timeout()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => other?,
            }
            self.reactor.dispatch(&mut self.ctx)?;
        }
    }
}

/// One cell: a reactor of `variant` with the idle children adopted, a warm-up
/// stream, then the measured one. `Ok(Err(reason))` if the cell cannot run
/// here.
fn evchild_cell(
    variant: Variant,
    idle: &Idle,
    cfg: &Config,
    nofile: u64,
) -> Res<Result<Sample, String>> {
    let m = idle.pids.len() as u64;
    let pidfds = matches!(variant, Variant::Pidfd | Variant::Prepared);
    if pidfds && m + FD_MARGIN > nofile {
        return Ok(Err(format!("n/a: RLIMIT_NOFILE {nofile}")));
    }
    let reactor = Reactor::new(variant.hooks())?;
    if let Some(backend) = variant.expected_backend() {
        if reactor.backend() != Some(backend) {
            return Ok(Err(format!("n/a: got {:?}", reactor.backend())));
        }
    }
    let mut command = Command::new(true_program());
    command.stdin(Stdio::null());
    let mut lp = Loop {
        poll: Poll::new()?,
        events: Events::with_capacity(64),
        reactor,
        ctx: Ctx::default(),
        command,
        prepared: None,
    };
    if variant == Variant::Prepared {
        lp.prepared = PREPARED.with(|p| p.borrow_mut().take());
    }
    lp.poll
        .registry()
        .register(&mut lp.reactor, CHILDREN, Interest::READABLE)?;
    for &pid in &idle.pids {
        lp.reactor.watch(pid, on_idle_death)?;
    }

    let zombie = if variant == Variant::PeekForeignZombie {
        // Not registered and not reaped until the cell is over: other code's
        // child that its owner has not collected yet.
        let child = Command::new(true_program()).stdin(Stdio::null()).spawn()?;
        let pid = child.id() as libc::pid_t;
        wait_exited_unreaped(pid)?;
        Some(pid)
    } else {
        None
    };

    lp.stream(cfg.warmup, cfg.depth)?;
    let wakeups_before = lp.reactor.stats().dispatches;
    let meter = Meter::start();
    let spawn = lp.stream(cfg.children, cfg.depth)?;
    let wakeups = lp.reactor.stats().dispatches - wakeups_before;
    let sample = meter.stop(cfg.children, spawn, Some(wakeups));

    let stats = lp.reactor.stats();
    if lp.ctx.failed != 0 || lp.ctx.idle_died != 0 || stats.lost != 0 {
        return Err(format!(
            "{}: {} failed, {} idle died, {} lost",
            variant.name(),
            lp.ctx.failed,
            lp.ctx.idle_died,
            stats.lost
        )
        .into());
    }
    if lp.reactor.len() != idle.pids.len() {
        return Err(format!(
            "{}: {} children left registered",
            variant.name(),
            lp.reactor.len()
        )
        .into());
    }
    // The reactor leaves the idle children alone (DropPolicy::Leave): the
    // next cell adopts them again.
    if let Some(prepared) = lp.prepared.take() {
        PREPARED.with(|p| *p.borrow_mut() = Some(prepared));
    }
    drop(lp);
    if let Some(pid) = zombie {
        waitpid_blocking(pid)?;
    }
    if let Some(pid) = some_zombie() {
        return Err(format!("{}: zombie {pid} left behind", variant.name()).into());
    }
    Ok(Ok(sample))
}

// ---------------------------------------------------------------------------
// Peers, at M = 0
// ---------------------------------------------------------------------------

/// std's `Command::spawn` (posix_spawn) and a blocking `waitpid(-1)`: the
/// floor for everything that spawns through std.
fn bare_std(n: usize, depth: usize) -> Res<(usize, Duration)> {
    let mut command = Command::new(true_program());
    command.stdin(Stdio::null());
    let (mut started, mut done, mut spawn) = (0, 0, Duration::ZERO);
    while done < n {
        while started < n && started - done < depth {
            let before = thread_cpu();
            // std's Child neither waits nor kills on drop.
            drop(command.spawn()?);
            spawn += thread_cpu() - before;
            started += 1;
        }
        let (_, status) = waitpid_blocking(-1)?;
        if !status.success() {
            return Err(format!("bare child failed: {status}").into());
        }
        done += 1;
    }
    Ok((n, spawn))
}

extern "C" {
    static environ: *const *mut c_char;
}

/// libc's `posix_spawn` with no file actions or attributes, and a blocking
/// `waitpid(-1)`: the floor for any spawner.
fn bare_posix_spawn(n: usize, depth: usize) -> Res<(usize, Duration)> {
    let path = CString::new(true_program())?;
    let argv: [*mut c_char; 2] = [path.as_ptr() as *mut c_char, std::ptr::null_mut()];
    let (mut started, mut done, mut spawn) = (0, 0, Duration::ZERO);
    while done < n {
        while started < n && started - done < depth {
            let before = thread_cpu();
            let mut pid: libc::pid_t = 0;
            // SAFETY: `path` and `argv` are NUL-terminated and outlive the
            // call; `environ` is the process's environment; null file
            // actions and attributes are allowed.
            let rc = unsafe {
                libc::posix_spawn(
                    &mut pid,
                    path.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    argv.as_ptr(),
                    environ,
                )
            };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc).into());
            }
            spawn += thread_cpu() - before;
            started += 1;
        }
        let (_, status) = waitpid_blocking(-1)?;
        if !status.success() {
            return Err(format!("posix_spawn child failed: {status}").into());
        }
        done += 1;
    }
    Ok((n, spawn))
}

/// The peers on an async runtime: built only into the `evchild-async`
/// member's copy of this bench (examples/async/), so that the evchild
/// crate's dev-dependencies hold no runtime.
#[cfg(evchild_async_peers)]
mod async_peers {
    use std::cell::Cell;
    use std::future::Future;
    use std::io;
    use std::pin::Pin;
    use std::process::{ExitStatus, Stdio};
    use std::rc::Rc;
    use std::task::Poll as TaskPoll;
    use std::time::Duration;

    use evchild_testkit::bench::thread_cpu;

    use super::{true_program, Res};

    type Task = Pin<Box<dyn Future<Output = io::Result<()>>>>;

    /// Runs `workers` to completion, polling `background` (never complete) along
    /// with them; the first error wins.
    async fn join(mut workers: Vec<Option<Task>>, mut background: Option<Task>) -> io::Result<()> {
        std::future::poll_fn(move |cx| {
            if let Some(task) = background.as_mut() {
                if let TaskPoll::Ready(result) = task.as_mut().poll(cx) {
                    result?;
                    background = None;
                }
            }
            let mut pending = false;
            for slot in &mut workers {
                if let Some(task) = slot {
                    match task.as_mut().poll(cx) {
                        TaskPoll::Ready(result) => {
                            result?;
                            *slot = None;
                        }
                        TaskPoll::Pending => pending = true,
                    }
                }
            }
            if pending {
                TaskPoll::Pending
            } else {
                TaskPoll::Ready(Ok(()))
            }
        })
        .await
    }

    /// Shared by the async workers of one stream.
    #[derive(Default)]
    struct Budget {
        started: Cell<usize>,
        spawn: Cell<Duration>,
    }

    impl Budget {
        fn take(&self, n: usize) -> bool {
            let started = self.started.get();
            self.started.set(started + 1);
            started < n
        }
        fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
            let before = thread_cpu();
            let value = f();
            self.spawn.set(self.spawn.get() + (thread_cpu() - before));
            value
        }
    }

    fn check(status: ExitStatus) -> io::Result<()> {
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("child failed: {status}")))
        }
    }

    /// `tokio::process` on a current-thread runtime: `depth` tasks, each
    /// spawning and awaiting one child at a time.
    pub fn tokio_stream(
        rt: &tokio::runtime::Runtime,
        n: usize,
        depth: usize,
    ) -> Res<(usize, Duration)> {
        let budget = Rc::new(Budget::default());
        let workers = (0..depth)
            .map(|_| {
                let budget = budget.clone();
                let task: Task = Box::pin(async move {
                    let mut command = tokio::process::Command::new(true_program());
                    command.stdin(Stdio::null());
                    while budget.take(n) {
                        let mut child = budget.timed(|| command.spawn())?;
                        check(child.wait().await?)?;
                    }
                    Ok(())
                });
                Some(task)
            })
            .collect();
        rt.block_on(join(workers, None))?;
        Ok((n, budget.spawn.get()))
    }

    /// `async-process` under `async_io::block_on` (smol's executor core), with
    /// its `driver()` polled on the same thread (no helper thread).
    pub fn async_process_stream(n: usize, depth: usize) -> Res<(usize, Duration)> {
        let budget = Rc::new(Budget::default());
        let workers = (0..depth)
            .map(|_| {
                let budget = budget.clone();
                let task: Task = Box::pin(async move {
                    let mut command = async_process::Command::new(true_program());
                    command.stdin(Stdio::null());
                    while budget.take(n) {
                        let mut child = budget.timed(|| command.spawn())?;
                        check(child.status().await?)?;
                    }
                    Ok(())
                });
                Some(task)
            })
            .collect();
        let driver: Task = Box::pin(async { match async_process::driver().await {} });
        async_io::block_on(join(workers, Some(driver)))?;
        Ok((n, budget.spawn.get()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    PosixSpawn,
    Std,
    #[cfg(evchild_async_peers)]
    Tokio,
    #[cfg(evchild_async_peers)]
    AsyncProcess,
}

impl Peer {
    #[cfg(not(evchild_async_peers))]
    const ALL: [Peer; 2] = [Peer::PosixSpawn, Peer::Std];
    #[cfg(evchild_async_peers)]
    const ALL: [Peer; 4] = [Peer::PosixSpawn, Peer::Std, Peer::Tokio, Peer::AsyncProcess];

    /// The name `EVCHILD_BENCH_PEERS` uses.
    fn key(self) -> &'static str {
        match self {
            Peer::PosixSpawn => "posix_spawn",
            Peer::Std => "std",
            #[cfg(evchild_async_peers)]
            Peer::Tokio => "tokio",
            #[cfg(evchild_async_peers)]
            Peer::AsyncProcess => "async-process",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Peer::PosixSpawn => "bare: posix_spawn + waitpid(-1)",
            Peer::Std => "bare: std spawn + waitpid(-1)",
            #[cfg(evchild_async_peers)]
            Peer::Tokio => "tokio::process (current_thread)",
            #[cfg(evchild_async_peers)]
            Peer::AsyncProcess => "async-process (async_io::block_on)",
        }
    }

    fn stream(self, n: usize, depth: usize, rt: &Runtime) -> Res<(usize, Duration)> {
        let _ = rt; // only the tokio peer has one
        match self {
            Peer::PosixSpawn => bare_posix_spawn(n, depth),
            Peer::Std => bare_std(n, depth),
            #[cfg(evchild_async_peers)]
            Peer::Tokio => match rt {
                Some(rt) => async_peers::tokio_stream(rt, n, depth),
                None => Err("no runtime".into()),
            },
            #[cfg(evchild_async_peers)]
            Peer::AsyncProcess => async_peers::async_process_stream(n, depth),
        }
    }
}

/// The tokio runtime of the tokio peer's cell (none for the others).
#[cfg(evchild_async_peers)]
type Runtime = Option<tokio::runtime::Runtime>;
#[cfg(not(evchild_async_peers))]
type Runtime = ();

/// Warm-up, then a measured stream of `peer`.
fn peer_cell(peer: Peer, cfg: &Config) -> Res<Sample> {
    #[cfg(evchild_async_peers)]
    let rt = match peer {
        Peer::Tokio => Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        ),
        _ => None,
    };
    #[cfg(not(evchild_async_peers))]
    let rt = ();
    peer.stream(cfg.warmup, cfg.depth, &rt)?;
    let meter = Meter::start();
    let (exits, spawn) = peer.stream(cfg.children, cfg.depth, &rt)?;
    let sample = meter.stop(exits, spawn, None);
    if let Some(pid) = some_zombie() {
        return Err(format!("zombie {pid} left behind by {}", peer.name()).into());
    }
    Ok(sample)
}

/// The variable that makes this program a peer helper: `KEY,N,WARMUP,DEPTH`.
const PEER_CELL: &str = "EVCHILD_BENCH_PEER_CELL";

/// Runs `peer`'s cell in a fresh process (this program, re-executed), so
/// that what a runtime leaves behind (async-io keeps a helper thread for
/// the rest of the process, for one) cannot cost the cells after it
/// anything. The helper measures itself with the same meters.
fn peer_cell_isolated(peer: Peer, cfg: &Config) -> Res<Sample> {
    let output = Command::new(std::env::current_exe()?)
        .env(
            PEER_CELL,
            format!(
                "{},{},{},{}",
                peer.key(),
                cfg.children,
                cfg.warmup,
                cfg.depth
            ),
        )
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("{} helper failed: {}", peer.name(), output.status).into());
    }
    let text = String::from_utf8(output.stdout)?;
    let fields: Vec<u128> = text
        .trim()
        .strip_prefix("SAMPLE ")
        .ok_or_else(|| format!("{} helper said {text:?}", peer.name()))?
        .split(' ')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let ns = |i: usize| Duration::from_nanos(fields[i] as u64);
    if fields.len() != 5 {
        return Err(format!("{} helper said {text:?}", peer.name()).into());
    }
    Ok(Sample {
        exits: fields[0] as usize,
        wall: ns(1),
        parent: ns(2),
        spawn: ns(3),
        child: ns(4),
        wakeups: None,
    })
}

/// The helper's side of [`peer_cell_isolated`].
fn peer_helper(spec: &str) -> Res<()> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [key, children, warmup, depth] = parts[..] else {
        return Err(format!("{PEER_CELL}={spec:?}").into());
    };
    let peer = Peer::ALL
        .into_iter()
        .find(|p| p.key() == key)
        .ok_or_else(|| format!("{PEER_CELL}: unknown peer {key:?}"))?;
    let cfg = Config {
        children: children.parse()?,
        rounds: 1,
        warmup: warmup.parse()?,
        depth: depth.parse()?,
        idle: Vec::new(),
        variants: Vec::new(),
        peers: Vec::new(),
        out: None,
    };
    let x = peer_cell(peer, &cfg)?;
    println!(
        "SAMPLE {} {} {} {} {}",
        x.exits,
        x.wall.as_nanos(),
        x.parent.as_nanos(),
        x.spawn.as_nanos(),
        x.child.as_nanos()
    );
    Ok(())
}

/// The current `SIGCHLD` handler (`SIG_DFL`, `SIG_IGN` or a function).
fn sigchld_handler() -> Option<libc::sighandler_t> {
    // SAFETY: all-zero is a valid `sigaction`; with a null new action,
    // sigaction only reads the current one into `old`.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `old` is valid and writable; a null `act` changes nothing.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) };
    (rc == 0).then_some(old.sa_sigaction)
}

// ---------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subject {
    Evchild(Variant),
    Peer(Peer),
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Evchild(v) => v.name(),
            Subject::Peer(p) => p.name(),
        }
    }

    fn run(self, idle: &Idle, cfg: &Config, nofile: u64) -> Res<Result<Sample, String>> {
        let before = sigchld_handler();
        let sample = match self {
            Subject::Evchild(v) => evchild_cell(v, idle, cfg, nofile)?,
            Subject::Peer(p) => Ok(peer_cell_isolated(p, cfg)?),
        };
        // A cell must leave `SIGCHLD` as it found it, so the next cell is
        // measured alike; except that evchild's own handler, once a
        // `SIGCHLD` variant installed it, stays installed for the life of
        // the process (the crate docs), and only costs a signal per exit.
        let after = sigchld_handler();
        let evchild_installed = matches!(self, Subject::Evchild(v) if v != Variant::Pidfd)
            && before == Some(libc::SIG_DFL)
            && after.is_some_and(|h| h != libc::SIG_DFL && h != libc::SIG_IGN);
        if after != before && !evchild_installed {
            let what = match after {
                Some(libc::SIG_DFL) => "the default action",
                Some(libc::SIG_IGN) => "SIGCHLD ignored",
                Some(_) => "another handler",
                None => "unknown (sigaction failed)",
            };
            return Err(format!("{}: SIGCHLD left with {what}", self.name()).into());
        }
        Ok(sample)
    }
}

/// One cell's rounds (or why it could not run).
struct Row {
    m: usize,
    subject: Subject,
    samples: Vec<Sample>,
    skipped: Option<String>,
}

impl Row {
    fn median(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.samples.iter().map(f).collect())
    }

    /// Half the range of the parent's CPU per exit over the rounds, as a
    /// percentage of its median.
    fn spread(&self) -> f64 {
        let values: Vec<f64> = self.samples.iter().map(Sample::parent_us).collect();
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        let min = values.iter().copied().fold(f64::MAX, f64::min);
        (max - min) / 2.0 / median(values) * 100.0
    }

    fn usable(&self) -> bool {
        self.skipped.is_none() && !self.samples.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| M idle | reaper | parent CPU/exit (µs) | ± | of which spawn | of which reap | \
         child CPU/spawn (µs) | children/s | exits/wake-up | reap/wake-up (µs) |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let (m, name) = (thousands(row.m), row.subject.name());
        if let Some(why) = &row.skipped {
            let _ = writeln!(s, "| {m} | {name} | {why} | | | | | | | |");
            continue;
        }
        let (wakeups, per_wakeup) = if row.samples.iter().all(|x| x.wakeups.is_some()) {
            (
                format!(
                    "{:.1}",
                    row.median(|x| x.exits as f64 / x.wakeups.unwrap_or(1).max(1) as f64)
                ),
                format!(
                    "{:.1}",
                    row.median(|x| x.reap_per_wakeup_us().unwrap_or(f64::NAN))
                ),
            )
        } else {
            ("–".into(), "–".into())
        };
        let _ = writeln!(
            s,
            "| {m} | {name} | {:.1} | {:.0}% | {:.1} | {:.1} | {:.1} | {} | {wakeups} | {per_wakeup} |",
            row.median(Sample::parent_us),
            row.spread(),
            row.median(Sample::spawn_us),
            row.median(Sample::reap_us),
            row.median(Sample::child_us),
            thousands(row.median(Sample::rate).round() as usize),
        );
    }
    s
}

fn ratios(rows: &[Row], levels: &[usize], variants: &[Variant]) -> String {
    let base = levels.iter().copied().min().unwrap_or(0);
    let others: Vec<usize> = levels.iter().copied().filter(|&m| m != base).collect();
    if others.is_empty() || variants.is_empty() {
        return String::new();
    }
    let find = |v: Variant, m: usize| {
        rows.iter()
            .find(|r| r.m == m && r.subject == Subject::Evchild(v) && r.usable())
    };
    let mut s = String::new();
    s.push_str("| reaper |");
    for &m in &others {
        let _ = write!(
            s,
            " parent CPU/exit, M={} ÷ M={} | reap part | reap/wake-up | child CPU/spawn |",
            thousands(m),
            thousands(base)
        );
    }
    s.push_str("\n|---|");
    for _ in &others {
        s.push_str("---:|---:|---:|---:|");
    }
    s.push('\n');
    for &variant in variants {
        let _ = write!(s, "| {} |", variant.name());
        for &m in &others {
            match (find(variant, base), find(variant, m)) {
                (Some(b), Some(x)) => {
                    let ratio = |f: fn(&Sample) -> f64| x.median(f) / b.median(f);
                    let _ = write!(
                        s,
                        " {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
                        ratio(Sample::parent_us),
                        ratio(Sample::reap_us),
                        ratio(|x| x.reap_per_wakeup_us().unwrap_or(f64::NAN)),
                        ratio(Sample::child_us)
                    );
                }
                _ => s.push_str(" n/a | n/a | n/a | n/a |"),
            }
        }
        s.push('\n');
    }
    s
}

thread_local! {
    /// The `prepared` variant's `/bin/true`, built at the start of the
    /// program, before any idle child or pidfd exists (between cells the
    /// idle children's pidfds stay open in the orphan list), so its
    /// descriptors are reserved low and each child copies a small table,
    /// as the docs of `Prepared::build` advise.
    static PREPARED: std::cell::RefCell<Option<Prepared>> = const { std::cell::RefCell::new(None) };
}

fn main() -> Res<()> {
    if let Ok(spec) = std::env::var(PEER_CELL) {
        return peer_helper(&spec);
    }
    let cfg = Config::from_env()?;
    let mut truth = Prepared::new(true_program());
    truth.stdin(Redirect::Null);
    truth.build()?;
    PREPARED.with(|p| *p.borrow_mut() = Some(truth));
    let started = Instant::now();
    let nofile = raise_nofile();
    let pid_max = pid_max();
    eprintln!(
        "reaping: {} round(s) of {} children per cell (+{} warm-up), {} in flight, M = {:?}; \
         RLIMIT_NOFILE {nofile}, pid_max {pid_max}",
        cfg.rounds, cfg.children, cfg.warmup, cfg.depth, cfg.idle
    );
    if sigchld_handler() != Some(libc::SIG_DFL) {
        return Err("SIGCHLD is not at its default action before the run: run this alone".into());
    }

    let mut levels = cfg.idle.clone();
    // The peers run at M = 0, beside evchild's M = 0 cells, each in a
    // process of its own.
    let peer_level = 0;
    if !cfg.peers.is_empty() && !levels.contains(&peer_level) {
        levels.push(peer_level);
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut looks = Vec::new();
    let load_before = load_average();
    for &m in &levels {
        let mut subjects: Vec<Subject> = Vec::new();
        if cfg.idle.contains(&m) {
            subjects.extend(cfg.variants.iter().map(|&v| Subject::Evchild(v)));
        }
        if m == peer_level {
            subjects.extend(cfg.peers.iter().map(|&p| Subject::Peer(p)));
        }
        let first = rows.len();
        rows.extend(subjects.iter().map(|&subject| Row {
            m,
            subject,
            samples: Vec::new(),
            skipped: None,
        }));
        if m + cfg.depth + 1000 > pid_max {
            for row in &mut rows[first..] {
                row.skipped = Some(format!("n/a: pid_max {pid_max}"));
            }
            continue;
        }
        let t = Instant::now();
        let idle = Idle::start(m)?;
        eprintln!("M = {m}: idle children started in {:.1?}", t.elapsed());
        if cfg.idle.contains(&m) {
            looks.push((m, wait_costs(&idle)));
        }
        for round in 0..cfg.rounds {
            let t = Instant::now();
            // Rotate, so no cell always follows the same neighbour.
            for k in 0..subjects.len() {
                let i = (k + round) % subjects.len();
                let row = &mut rows[first + i];
                if row.skipped.is_some() {
                    continue;
                }
                match subjects[i].run(&idle, &cfg, nofile)? {
                    Ok(sample) => row.samples.push(sample),
                    Err(why) => row.skipped = Some(why),
                }
            }
            eprintln!("M = {m}: round {} took {:.1?}", round + 1, t.elapsed());
        }
        let t = Instant::now();
        drop(idle);
        eprintln!(
            "M = {m}: idle children killed and reaped in {:.1?}",
            t.elapsed()
        );
    }
    // Rows by level, evchild first, in the order the levels were asked for.
    rows.sort_by_key(|r| {
        let level = cfg
            .idle
            .iter()
            .position(|&m| m == r.m)
            .unwrap_or(usize::MAX);
        (level, matches!(r.subject, Subject::Peer(_)))
    });

    let mut report = String::new();
    let _ = writeln!(
        report,
        "Machine: {}. {} round(s) × {} children per cell, {} in flight; RLIMIT_NOFILE {nofile}.\n",
        machine(),
        cfg.rounds,
        thousands(cfg.children),
        cfg.depth
    );
    report.push_str(&table(&rows));
    let ratio = ratios(&rows, &cfg.idle, &cfg.variants);
    if !ratio.is_empty() {
        report.push('\n');
        report.push_str(&ratio);
    }
    if !looks.is_empty() {
        report.push_str(
            "\nOne look, no zombie present (µs of CPU per call):\n\n\
             | M idle | waitid(P_ALL, WNOWAIT) | wait4(-1, WNOHANG) | wait4(pid, WNOHANG) |\n\
             |---:|---:|---:|---:|\n",
        );
        let cell = |x: Option<f64>| x.map_or("–".into(), |us| format!("{us:.2}"));
        for (m, [peek, any, one]) in &looks {
            let _ = writeln!(
                report,
                "| {} | {} | {} | {} |",
                thousands(*m),
                cell(*peek),
                cell(*any),
                cell(*one)
            );
        }
    }
    let _ = writeln!(
        report,
        "\nTotal run time: {:.1?}. Load average before: {load_before}; after: {}.",
        started.elapsed(),
        load_average()
    );
    print!("{report}");
    if let Some(path) = &cfg.out {
        std::fs::write(path, &report)?;
    }
    Ok(())
}
