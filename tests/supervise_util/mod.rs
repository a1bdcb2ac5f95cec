//! Helpers of the `supervise_*` tests: a worker program (this test binary,
//! executed again), real TCP clients on loopback, and a loop driver.
//!
//! The workers are executed, not forked: the test process is
//! multithreaded, and an executed worker may allocate, sleep and use std's
//! networking freely. Each `supervise_*` binary has a `worker_entry` test
//! that calls [`worker_main_if_asked`]: run normally, it returns at once;
//! run by [`worker_command`] (with [`WORKER_ENV`] set), it is the worker
//! and exits the process.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evchild::supervise::{Event, HasSupervisor, PoolId, Supervisor, WorkerState};
use evchild::{Hooks, Reactor};
use mio::{Events, Interest, Poll, Token};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Set in a worker's environment: `"<listener fd>:<mode>"`.
pub const WORKER_ENV: &str = "EVCHILD_SUPERVISE_TEST_WORKER";

// ---------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::Relaxed);
}

/// In the `worker_entry` test: if this process was started as a worker,
/// serve, then exit the process.
pub fn worker_main_if_asked() {
    let Ok(value) = std::env::var(WORKER_ENV) else {
        return;
    };
    let (fd, mode) = value.split_once(':').expect("fd:mode");
    let fd: RawFd = fd.parse().expect("listener fd");
    std::process::exit(serve(fd, mode));
}

/// The worker: for each connection, report busy, write `hello <pid>`, then
/// answer lines (`echo X` → `X`, `sleep MS` → `ok` after MS ms) until end
/// of file, and report idle. `SIGTERM` (unless `mode` is `stubborn`):
/// finish the request in hand, close the connection (between requests of a
/// persistent connection too), then exit 0. Mode `beat`: a heartbeat every
/// loop (100 ms), and exit 3 as soon as a report fails (the master is
/// gone). Mode `first-slow`: the first request sleeps 10 s whatever it asks.
/// Mode `ready-exit`: report ready and exit 0 at once.
fn serve(listener: RawFd, mode: &str) -> i32 {
    let handler = if mode == "stubborn" {
        SigHandler::SigIgn
    } else {
        SigHandler::Handler(on_term)
    };
    // No SA_RESTART: poll(2) returns EINTR at once.
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe { sigaction(Signal::SIGTERM, &action) }.expect("sigaction");
    evchild::supervise::worker::ready();
    if mode == "ready-exit" {
        return 0;
    }
    let beat = mode == "beat";
    let pid = std::process::id();
    let mut served = 0;
    while !TERM.load(Ordering::Relaxed) {
        if beat && !evchild::supervise::worker::heartbeat() {
            return 3;
        }
        // The listener is non-blocking and shared: wait for it at most
        // 100 ms, so a SIGTERM that came before the poll is seen soon.
        let mut fds = [libc::pollfd {
            fd: listener,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) } <= 0 {
            continue;
        }
        // SAFETY: plain accept4 on the inherited listener; a new descriptor
        // or -1 (EAGAIN when another worker took it).
        let conn = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if conn < 0 {
            continue;
        }
        // SAFETY: accept4 just returned this descriptor, owned by nobody.
        let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(conn) });
        evchild::supervise::worker::busy();
        let slow = mode == "first-slow" && served == 0;
        let _ = handle(stream, pid, slow);
        served += 1;
        evchild::supervise::worker::idle();
    }
    0
}

/// One connection: lines until end of file, or `SIGTERM` between two
/// requests.
fn handle(stream: TcpStream, pid: u32, slow: bool) -> std::io::Result<()> {
    // Short reads, so that the stop flag is seen between requests.
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut out = stream.try_clone()?;
    let mut input = stream;
    writeln!(out, "hello {pid}")?;
    let mut pending: Vec<u8> = Vec::new();
    let mut waited = Duration::ZERO;
    let mut answered = 0;
    loop {
        if let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line[..nl]).into_owned();
            waited = Duration::ZERO;
            if let Some(ms) = line.strip_prefix("sleep ") {
                let ms = if slow {
                    10_000
                } else {
                    ms.trim().parse().unwrap_or(0)
                };
                std::thread::sleep(Duration::from_millis(ms));
                writeln!(out, "ok")?;
            } else if let Some(text) = line.strip_prefix("echo ") {
                writeln!(out, "{text}")?;
            } else {
                writeln!(out, "?")?;
            }
            answered += 1;
            continue;
        }
        if answered > 0 && pending.is_empty() && TERM.load(Ordering::Relaxed) {
            // Between requests (the connection's first request is the one
            // in hand once accepted): say so and close; the client sends
            // its next request on a new connection.
            writeln!(out, "bye")?;
            return Ok(());
        }
        let mut buf = [0u8; 512];
        match std::io::Read::read(&mut input, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                waited += Duration::from_millis(100);
                if waited >= Duration::from_secs(5) {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A loopback listener whose descriptor workers inherit (not close-on-exec)
/// and share (non-blocking).
pub fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    fcntl(&listener, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Workers that run `sh -c script`.
pub fn sh(script: &'static str) -> evchild::supervise::Start {
    evchild::supervise::Start::command(move |_| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    })
}

/// The command of a worker: this test binary, running only `worker_entry`,
/// serving on the inheritable `listener` (a descriptor number, as a
/// `try_clone` would be close-on-exec).
pub fn worker_command(listener: RawFd, mode: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "worker_entry", "--test-threads=1", "--quiet"])
        .env(WORKER_ENV, format!("{listener}:{mode}"))
        .stdout(Stdio::null());
    cmd
}

/// Workers that run [`worker_command`] in `mode`, serving on `listener`.
pub fn serving(listener: &TcpListener, mode: &'static str) -> evchild::supervise::Start {
    let fd = listener.as_raw_fd();
    evchild::supervise::Start::command(move |_| worker_command(fd, mode))
}

/// Sends `SIGKILL` to `pid`, which must exist.
pub fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// The end of a test with executed workers on `listener`: stops the
/// harness (a grace of 2 s, within 10 s), closes the listener, then
/// finishes the leak check.
pub fn stop_and_check(mut h: Harness, listener: TcpListener, check: evchild_testkit::Check) {
    h.stop(Duration::from_secs(2), Duration::from_secs(10));
    drop(h);
    drop(listener);
    check.finish();
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// One request's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub started: Instant,
    pub ended: Instant,
    /// The pid the worker greeted with, if it did.
    pub worker: Option<u32>,
    pub ok: bool,
}

/// One request: connect, read the greeting, `sleep ms`, read `ok`.
pub fn request(addr: SocketAddr, ms: u64) -> Outcome {
    let started = Instant::now();
    let mut worker = None;
    let ok = (|| -> std::io::Result<bool> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut out = stream.try_clone()?;
        let mut lines = BufReader::new(stream).lines();
        let hello = lines.next().transpose()?.unwrap_or_default();
        worker = hello.strip_prefix("hello ").and_then(|p| p.parse().ok());
        writeln!(out, "sleep {ms}")?;
        Ok(lines.next().transpose()?.as_deref() == Some("ok"))
    })()
    .unwrap_or(false);
    Outcome {
        started,
        ended: Instant::now(),
        worker,
        ok,
    }
}

/// A persistent client: one connection for many requests (`sleep ms`), and
/// a new connection when the server closes one between requests (as an
/// HTTP keep-alive client does). A request is failed if it was sent and
/// got no answer.
pub fn persistent(addr: SocketAddr, ms: u64, stop: Arc<AtomicBool>) -> (usize, usize, usize) {
    let (mut ok, mut failed, mut connections) = (0, 0, 0);
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            failed += 1;
            continue;
        };
        connections += 1;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut lines = BufReader::new(stream).lines();
        if !matches!(lines.next(), Some(Ok(h)) if h.starts_with("hello ")) {
            failed += 1;
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            if writeln!(out, "sleep {ms}").is_err() {
                continue 'connect;
            }
            match lines.next() {
                Some(Ok(l)) if l == "ok" => ok += 1,
                // The server closed between requests, before reading this
                // one: send it again on a new connection.
                Some(Ok(l)) if l == "bye" => continue 'connect,
                _ => {
                    failed += 1;
                    continue 'connect;
                }
            }
        }
    }
    (ok, failed, connections)
}

/// `clients` threads each sending requests of `ms` until `stop` is set.
pub fn load_while(
    addr: SocketAddr,
    clients: usize,
    ms: u64,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Outcome>>> {
    (0..clients)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    outcomes.push(request(addr, ms));
                }
                outcomes
            })
        })
        .collect()
}

/// `clients` threads each sending requests of `ms` until `until`.
pub fn load(
    addr: SocketAddr,
    clients: usize,
    ms: u64,
    until: Instant,
) -> Vec<std::thread::JoinHandle<Vec<Outcome>>> {
    (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                while Instant::now() < until {
                    outcomes.push(request(addr, ms));
                }
                outcomes
            })
        })
        .collect()
}

pub fn join(handles: Vec<std::thread::JoinHandle<Vec<Outcome>>>) -> Vec<Outcome> {
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect()
}

// ---------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------

/// The tests' context: the supervisor, every event seen, and the pids the
/// unknown-child hook was given.
pub struct App {
    pub sup: Supervisor,
    pub events: Vec<(Instant, Event)>,
    pub unknown: Vec<evchild::Pid>,
}

impl HasSupervisor for App {
    fn supervisor(&mut self) -> &mut Supervisor {
        &mut self.sup
    }
}

/// A reactor and a supervisor in one `mio::Poll`.
pub struct Harness {
    pub poll: Poll,
    pub events: Events,
    pub reactor: Reactor<App>,
    pub app: App,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_hooks(Hooks::default().backend(crate::util::test_backend()))
    }

    pub fn with_hooks(hooks: Hooks<App>) -> Self {
        let poll = Poll::new().unwrap();
        let mut reactor = Reactor::new(hooks).unwrap();
        let mut app = App {
            sup: Supervisor::new().unwrap(),
            events: Vec::new(),
            unknown: Vec::new(),
        };
        poll.registry()
            .register(&mut reactor, Token(0), Interest::READABLE)
            .unwrap();
        poll.registry()
            .register(&mut app.sup, Token(1), Interest::READABLE)
            .unwrap();
        Harness {
            poll,
            events: Events::with_capacity(64),
            reactor,
            app,
        }
    }

    /// One turn of the loop, sleeping at most `max`.
    pub fn turn(&mut self, max: Duration) {
        let timeout = evchild::earliest(
            evchild::earliest(self.reactor.timeout(), self.app.sup.timeout()),
            Some(max),
        );
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => other.unwrap(),
        }
        self.reactor.dispatch(&mut self.app).unwrap();
        self.app.sup.run(&mut self.reactor).unwrap();
        let now = Instant::now();
        while let Some(event) = self.app.sup.next_event() {
            self.app.events.push((now, event));
        }
    }

    /// Turns until `done` or `limit` passed; whether `done` came true.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if done(self) {
                return true;
            }
            self.turn(Duration::from_millis(20));
        }
        done(self)
    }

    /// `Supervisor::add_pool`, which must succeed.
    pub fn add_pool(
        &mut self,
        name: &str,
        config: evchild::supervise::PoolConfig,
        start: evchild::supervise::Start,
    ) -> PoolId {
        self.app
            .sup
            .add_pool(&mut self.reactor, name, config, start)
            .unwrap()
    }

    /// When each event that `pred` picks was seen.
    pub fn times(&self, pred: impl Fn(&Event) -> bool) -> Vec<Instant> {
        self.app
            .events
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Whether an event that `pred` picks was seen.
    pub fn seen(&self, pred: impl Fn(&Event) -> bool) -> bool {
        self.app.events.iter().any(|(_, e)| pred(e))
    }

    /// Turns until every one of `handles` has finished.
    pub fn turn_until_finished<T>(&mut self, handles: &[std::thread::JoinHandle<T>]) {
        while !handles.iter().all(|c| c.is_finished()) {
            self.turn(Duration::from_millis(20));
        }
    }

    /// Whether every live worker of the pool is of `generation`.
    pub fn all_of_generation(&self, pool: PoolId, generation: u64) -> bool {
        self.app
            .sup
            .pool(pool)
            .unwrap()
            .workers()
            .all(|w| w.generation == generation)
    }

    pub fn count(&self, pool: PoolId, state: WorkerState) -> usize {
        self.app.sup.pool(pool).unwrap().count(state)
    }

    pub fn active(&self, pool: PoolId) -> usize {
        self.app.sup.pool(pool).unwrap().active()
    }

    /// The pids of the pool's live workers.
    pub fn pids(&self, pool: PoolId) -> HashSet<u32> {
        self.app
            .sup
            .pool(pool)
            .unwrap()
            .workers()
            .map(|w| w.pid().as_raw() as u32)
            .collect()
    }

    /// Shuts everything down with `grace` and runs until stopped.
    pub fn stop(&mut self, grace: Duration, limit: Duration) -> Duration {
        let t0 = Instant::now();
        self.app.sup.shutdown(&mut self.reactor, grace);
        assert!(
            self.run_until(limit, |h| h.app.sup.is_stopped() && h.reactor.is_empty()),
            "the supervisor did not stop within {limit:?}"
        );
        t0.elapsed()
    }
}
