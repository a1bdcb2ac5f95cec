//! A prefork TCP server in the Apache style, on `evchild::supervise`.
//!
//! ```text
//! cargo run --example prefork -- --port 7000 --workers 2:16 --idle 1:4
//! printf 'echo hello\nsleep 200\n' | nc 127.0.0.1 7000
//! kill -USR1 <parent pid>   # print the scoreboard
//! kill -HUP <parent pid>    # reload: a new generation of workers
//! kill -TTIN <parent pid>   # one more worker at least (TTOU: one fewer)
//! kill -TERM <parent pid>   # graceful stop (or Ctrl-C)
//! ```
//!
//! Run `prefork --help` for the protocol, the signals and every option.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use evchild::supervise::{
    worker, Event, HasSupervisor, PoolConfig, PoolId, Start, Supervisor, WorkerState,
};
use evchild::{earliest, Hooks, Prepared, Reactor};
use mio::unix::pipe::{self, Receiver};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

const CHILDREN: Token = Token(0);
const POOLS: Token = Token(1);
const SIGNALS: Token = Token(2);
const LISTENER: Token = Token(3);

const HELP: &str = "\
prefork: a prefork TCP server on evchild::supervise

USAGE: prefork [OPTIONS]

The parent binds 127.0.0.1:PORT and runs one pool of workers. Each worker
(this program executed again with --worker FD, or with --fork a forked
child) accepts connections on the shared socket and serves a line protocol,
any number of requests per connection:
    echo TEXT    answers TEXT
    sleep MS     answers `ok` after MS milliseconds
    quit         closes the connection
A worker reports `busy` when it accepts a connection and `idle` when the
connection ends (evchild's status channel, see evchild::supervise::worker),
so the pool grows under load and shrinks after. On its stop signal a worker
finishes the request in hand, closes its connection (answering `bye` if
the client was between requests) and exits. A worker exits by itself when
the master is gone (a report fails), and with --pdeathsig (the default)
the kernel sends it SIGTERM when the master dies.

SIGNALS (to the parent):
    HUP          reload: start a new generation; each old worker is retired
                 once a new one is ready in its place (busy ones after the
                 drain time); a new generation that fails is abandoned and
                 the old one serves on. Lifts the crash throttle.
    USR1         print the scoreboard
    USR2         lift the crash throttle (and a give-up) now
    TTIN, TTOU   one worker more / fewer at least (the minimum, and the
                 maximum if needed)
    TERM, INT    graceful stop: the stop signal to every worker, SIGKILL
                 after --grace, exit once all are reaped

OPTIONS (durations in seconds, fractions allowed: 0.25):
    --port P               port to listen on (0: any, printed)   [0]
    --start N              workers at start                      [2]
    --workers MIN:MAX      fewest and most workers               [2:16]
    --idle MIN:MAX         fewest and most idle workers          [1:4]
    --interval S           maintenance interval                  [1]
    --max-spawn-rate N     most starts per interval              [32]
    --start-timeout S      time to report ready                  [10]
    --max-requests N       retire a worker after N connections   [none]
    --jitter N             spread max-requests by 0..=N          [0]
    --retire-grace S       stop signal to SIGKILL, retired       [10]
    --drain S              busy worker's time before its stop    [retire grace]
    --stop-signal SIG      TERM, INT, QUIT, USR1, USR2 or HUP    [TERM]
    --throttle D:MAX:RESET crash throttle                        [1:60:60]
    --strict-faults        every abnormal death is a fault
    --give-up N:S          stop starting after N faults in S     [never]
    --busy-timeout S       kill a worker busy that long          [none]
    --heartbeat S          kill a worker silent that long; workers
                           then beat every 100 ms                [none]
    --idle-timeout S       retire a worker idle that long        [none]
    --process-group        each worker in its own process group
    --no-pdeathsig         do not ask for SIGTERM at the master's death
    --no-demand            do not start a worker at once when a
                           connection waits and none is idle
    --grace S              stop grace at TERM                    [5]
    --fork                 fork workers instead of executing them
    --worker-program PATH  execute PATH --worker FD as a worker (read at
                           each start: replace it, then HUP)    [this program]
    -v                     print busy and idle changes too
    --single               no pool: serve every connection in this
                           process, one after the other (a baseline)
    -h, --help             this text
";

struct Options {
    port: u16,
    config: PoolConfig,
    grace: Duration,
    fork: bool,
    verbose: bool,
    single: bool,
    demand: bool,
    heartbeat: bool,
    pdeathsig: bool,
    program: Option<PathBuf>,
}

fn usage(problem: &str) -> ! {
    eprintln!("prefork: {problem}\nprefork --help for the options");
    std::process::exit(2)
}

fn signal_named(name: &str) -> i32 {
    match name.trim_start_matches("SIG") {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "HUP" => libc::SIGHUP,
        other => usage(&format!("unknown signal {other}")),
    }
}

fn parse_options() -> Options {
    let mut o = Options {
        port: 0,
        config: PoolConfig::new().start(2).workers(2, 16).idle(1, 4),
        pdeathsig: true,
        grace: Duration::from_secs(5),
        fork: false,
        verbose: false,
        single: false,
        demand: true,
        heartbeat: false,
        program: None,
    };
    let mut args = std::env::args().skip(1);
    let text = |v: Option<String>| v.unwrap_or_else(|| usage("an option lacks its value"));
    let num = |v: Option<String>| -> u64 {
        text(v)
            .parse()
            .unwrap_or_else(|_| usage("expected a number"))
    };
    let secs = |v: &str| -> Duration {
        v.parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or_else(|| usage(&format!("expected seconds, not {v:?}")))
    };
    let dur = |v: Option<String>| secs(&text(v));
    let pair = |v: Option<String>| -> (usize, usize) {
        text(v)
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or_else(|| usage("expected MIN:MAX"))
    };
    while let Some(arg) = args.next() {
        let c = o.config.clone();
        o.config = match arg.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--worker" => {
                let fd = num(args.next()) as RawFd;
                let beat = args.next().as_deref() == Some("--beat");
                std::process::exit(worker_main(fd, beat));
            }
            "--port" => {
                o.port = num(args.next()) as u16;
                c
            }
            "--start" => c.start(num(args.next()) as usize),
            "--workers" => {
                let (min, max) = pair(args.next());
                c.workers(min, max)
            }
            "--idle" => {
                let (min, max) = pair(args.next());
                c.idle(min, max)
            }
            "--interval" => c.interval(dur(args.next())),
            "--max-spawn-rate" => c.max_spawn_rate(num(args.next()) as usize),
            "--start-timeout" => c.start_timeout(dur(args.next())),
            "--max-requests" => c.max_requests(num(args.next())),
            "--jitter" => c.max_requests_jitter(num(args.next())),
            "--retire-grace" => c.retire_grace(dur(args.next())),
            "--drain" => c.drain(dur(args.next())),
            "--stop-signal" => c.stop_signal(signal_named(&text(args.next()))),
            "--throttle" => {
                let v = text(args.next());
                let parts: Vec<Duration> = v.split(':').map(secs).collect();
                let [d, max, reset] = parts[..] else {
                    usage("expected DELAY:MAX:RESET")
                };
                c.throttle(d, max, reset)
            }
            "--strict-faults" => c.strict_faults(true),
            "--give-up" => {
                let v = text(args.next());
                let (n, s) = v
                    .split_once(':')
                    .unwrap_or_else(|| usage("expected N:SECS"));
                c.give_up(
                    n.parse().unwrap_or_else(|_| usage("expected N:SECS")),
                    secs(s),
                )
            }
            "--busy-timeout" => c.busy_timeout(dur(args.next())),
            "--heartbeat" => {
                o.heartbeat = true;
                c.heartbeat(dur(args.next()))
            }
            "--idle-timeout" => c.idle_timeout(dur(args.next())),
            "--process-group" => c.process_group(true),
            "--no-pdeathsig" => {
                o.pdeathsig = false;
                c
            }
            "--no-demand" => {
                o.demand = false;
                c
            }
            "--grace" => {
                o.grace = dur(args.next());
                c
            }
            "--fork" => {
                o.fork = true;
                c
            }
            "--worker-program" => {
                o.program = Some(PathBuf::from(text(args.next())));
                c
            }
            "-v" => {
                o.verbose = true;
                c
            }
            "--single" => {
                o.single = true;
                c
            }
            other => usage(&format!("unknown option {other}")),
        };
    }
    if o.pdeathsig {
        o.config = o.config.parent_death_signal(libc::SIGTERM);
    }
    o
}

// ---------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Serves connections on the shared, non-blocking listener until its stop
/// signal, or until the master is gone.
fn worker_main(listener: RawFd, beat: bool) -> i32 {
    // The stop signal (SIGTERM unless configured otherwise; the parent's
    // choice is among these): finish the request in hand, then exit. No
    // SA_RESTART, so a worker waiting in poll(2) sees it at once. Ctrl-C
    // in a terminal reaches the whole process group: the parent handles
    // it, not us (unless it is the stop signal).
    let term = SigAction::new(
        SigHandler::Handler(on_term),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: `on_term` only stores to an atomic (async-signal-safe);
    // ignoring SIGINT is plain. A forked worker inherited the parent's
    // handlers and replaces these; SIGHUP, SIGUSR1 and the others are
    // handled below too, since they may be the stop signal.
    unsafe {
        let _ = sigaction(Signal::SIGINT, &ignore);
        for s in [
            Signal::SIGTERM,
            Signal::SIGQUIT,
            Signal::SIGHUP,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGTTIN,
            Signal::SIGTTOU,
        ] {
            let _ = sigaction(s, &term);
        }
    }
    if !worker::ready() && worker::is_orphaned() {
        return 1;
    }
    while !STOP.load(Ordering::Relaxed) {
        if beat && !worker::heartbeat() && worker::is_orphaned() {
            return 1;
        }
        let Some(conn) = accept(listener) else {
            if worker::is_orphaned() {
                return 1;
            }
            continue;
        };
        let reported = worker::busy();
        let _ = serve(conn, true);
        if (!reported || !worker::idle()) && worker::is_orphaned() {
            return 1;
        }
    }
    0
}

/// Waits at most 100 ms for a connection (so a stop signal that landed just
/// before is seen soon), then takes it, unless another worker did.
fn accept(listener: RawFd) -> Option<TcpStream> {
    let mut fds = [libc::pollfd {
        fd: listener,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, for the duration of the call.
    if unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) } <= 0 {
        return None;
    }
    // SAFETY: accept4(2) on our listener; it returns a new descriptor that
    // nothing else owns, or -1.
    let fd = unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    // SAFETY: `fd` was just returned by accept4 and is owned by no one else.
    (fd >= 0).then(|| TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The line protocol of one connection. A worker (`stoppable`) checks its
/// stop flag between requests: the connection's first request is the one
/// in hand once accepted; after it, between two requests, it answers `bye`
/// and closes.
fn serve(conn: TcpStream, stoppable: bool) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_millis(100)))?;
    conn.set_nodelay(true)?;
    let mut out = conn.try_clone()?;
    let mut input = conn;
    let mut pending: Vec<u8> = Vec::new();
    let mut answered = 0u64;
    let mut silent = Duration::ZERO;
    loop {
        if let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line[..nl]);
            let line = line.trim_end();
            silent = Duration::ZERO;
            let reply = if let Some(text) = line.strip_prefix("echo ") {
                text.to_owned()
            } else if let Some(ms) = line.strip_prefix("sleep ") {
                match ms.trim().parse::<u64>() {
                    Ok(ms) => {
                        std::thread::sleep(Duration::from_millis(ms.min(60_000)));
                        "ok".to_owned()
                    }
                    Err(_) => "error: sleep MS".to_owned(),
                }
            } else if line == "quit" {
                return Ok(());
            } else {
                "error: echo TEXT | sleep MS | quit".to_owned()
            };
            out.write_all(format!("{reply}\n").as_bytes())?;
            answered += 1;
            continue;
        }
        if stoppable && answered > 0 && pending.is_empty() && STOP.load(Ordering::Relaxed) {
            out.write_all(b"bye\n")?;
            return Ok(());
        }
        let mut buf = [0u8; 4096];
        match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                silent += Duration::from_millis(100);
                if silent >= Duration::from_secs(30) {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------

struct App {
    sup: Supervisor,
}

impl HasSupervisor for App {
    fn supervisor(&mut self) -> &mut Supervisor {
        &mut self.sup
    }
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let saved = Errno::last_raw();
    let byte = [signal as u8];
    // SAFETY: a one-byte write from a live local buffer to a descriptor that
    // stays open until the process exits; write(2) is async-signal-safe.
    unsafe { libc::write(SIGNAL_PIPE.load(Ordering::Relaxed), byte.as_ptr().cast(), 1) };
    Errno::set_raw(saved);
}

/// The parent's signals as bytes on a pipe in the loop. Executed workers
/// start with default dispositions (handlers are reset at exec); forked
/// ones replace them.
fn catch_signals() -> io::Result<Receiver> {
    let (sender, receiver) = pipe::new()?;
    SIGNAL_PIPE.store(sender.into_raw_fd(), Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGTERM,
        Signal::SIGINT,
    ] {
        // SAFETY: `on_signal` is async-signal-safe (see above).
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(receiver)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_options();
    let listener = TcpListener::bind(("127.0.0.1", options.port))?;
    let addr = listener.local_addr()?;
    if options.single {
        eprintln!("prefork: serving on {addr} in one process");
        for conn in listener.incoming() {
            let _ = serve(conn?, false);
        }
        return Ok(());
    }
    // Shared by every worker: non-blocking (each waits in poll, and one
    // takes each connection), and inherited across exec.
    listener.set_nonblocking(true)?;
    fcntl(&listener, FcntlArg::F_SETFD(FdFlag::empty()))?;
    let fd = listener.as_raw_fd();

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let mut reactor = Reactor::<App>::new(Hooks::default())?;
    let mut app = App {
        sup: Supervisor::new()?,
    };
    let mut signals = catch_signals()?;
    poll.registry()
        .register(&mut reactor, CHILDREN, Interest::READABLE)?;
    poll.registry()
        .register(&mut app.sup, POOLS, Interest::READABLE)?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;

    let beat = options.heartbeat;
    let start = if options.fork {
        // SAFETY: this program is single-threaded, so the forked child may
        // do anything; `worker_main` replaces the inherited signal handlers
        // first, and the pool `_exit`s with its result.
        unsafe { Start::fork(move |_| worker_main(fd, beat)) }
    } else {
        let exe = match &options.program {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        // The same program for every worker: described once, started
        // through `clone(CLONE_VFORK)` with no `pre_exec` (no fork of the
        // master). The child gets only its stdio, the status descriptor the
        // pool passes, and the listener, passed at its own number.
        let mut worker = Prepared::new(&exe);
        worker.args(["--worker", &fd.to_string()]);
        if beat {
            worker.arg("--beat");
        }
        worker.pass_fd(listener.as_fd().try_clone_to_owned()?, fd);
        Start::prepared(worker)
    };
    let t0 = Instant::now();
    let pool = app
        .sup
        .add_pool(&mut reactor, "prefork", options.config.clone(), start)?;
    eprintln!(
        "prefork: pid {} serving on {addr} (HUP: reload, USR1: scoreboard, USR2: unthrottle, \
         TTIN/TTOU: resize, TERM: stop)",
        std::process::id()
    );
    drain_events(&mut app.sup, t0, options.verbose);

    let mut stopping = false;
    // Postfix's trick: watch the listener only while no worker is idle, and
    // start one at once when a connection waits.
    let mut watching = false;
    while !app.sup.is_stopped() {
        let want = options.demand
            && !stopping
            && app.sup.pool(pool).is_some_and(|p| {
                p.count(WorkerState::Idle) == 0 && p.count(WorkerState::Starting) == 0
            });
        if want != watching {
            if want {
                poll.registry()
                    .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)?;
            } else {
                poll.registry().deregister(&mut SourceFd(&fd))?;
            }
            watching = want;
        }
        let timeout = earliest(reactor.timeout(), app.sup.timeout());
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            other => other?,
        }
        reactor.dispatch(&mut app)?;
        app.sup.run(&mut reactor)?;
        if watching && events.iter().any(|e| e.token() == LISTENER) {
            app.sup.demand(&mut reactor, pool)?;
        }
        for signal in read_signals(&mut signals) {
            match signal {
                libc::SIGHUP if !stopping => {
                    log(t0, "SIGHUP: reloading");
                    app.sup.reload(&mut reactor, pool)?;
                }
                libc::SIGUSR1 => print_scoreboard(&app.sup, pool, t0),
                libc::SIGUSR2 if !stopping => {
                    log(t0, "SIGUSR2: lifting the throttle");
                    app.sup.unthrottle(&mut reactor, pool)?;
                }
                libc::SIGTTIN | libc::SIGTTOU if !stopping => {
                    let c = app.sup.pool(pool).map(|p| p.config().clone());
                    if let Some(c) = c {
                        let (min, max) = c.worker_range();
                        let min = if signal == libc::SIGTTIN {
                            min + 1
                        } else {
                            min.saturating_sub(1).max(1)
                        };
                        let max = max.max(min);
                        log(t0, &format!("resizing to {min}:{max} workers"));
                        if let Err(e) = app.sup.resize(&mut reactor, pool, min, max) {
                            log(t0, &format!("resize refused: {e}"));
                        }
                    }
                }
                libc::SIGTERM | libc::SIGINT if !stopping => {
                    log(
                        t0,
                        &format!("stopping (grace {:.3} s)", options.grace.as_secs_f64()),
                    );
                    stopping = true;
                    app.sup.shutdown(&mut reactor, options.grace);
                }
                _ => {}
            }
        }
        drain_events(&mut app.sup, t0, options.verbose);
    }
    log(t0, "every worker reaped, bye");
    Ok(())
}

fn read_signals(signals: &mut Receiver) -> Vec<libc::c_int> {
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    loop {
        match signals.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend(buf[..n].iter().map(|&b| libc::c_int::from(b))),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return got,
        }
    }
}

/// One timestamped line on standard error.
fn log(t0: Instant, line: &str) {
    eprintln!("[{:>10.3}] prefork: {line}", t0.elapsed().as_secs_f64());
}

fn drain_events(sup: &mut Supervisor, t0: Instant, verbose: bool) {
    while let Some(event) = sup.next_event() {
        if !verbose && matches!(event, Event::Busy { .. } | Event::Idle { .. }) {
            continue;
        }
        log(t0, &event.to_string());
    }
}

fn print_scoreboard(sup: &Supervisor, pool: PoolId, t0: Instant) {
    let Some(p) = sup.pool(pool) else { return };
    let mut out = String::new();
    out.push_str(&format!(
        "pool {:?}: generation {}{}, {} active ({} idle, {} busy, {} starting, {} retiring), {} started{}{}\n",
        p.name(),
        p.generation(),
        if p.is_reloading() { " (reloading)" } else { "" },
        p.active(),
        p.count(WorkerState::Idle),
        p.count(WorkerState::Busy),
        p.count(WorkerState::Starting),
        p.count(WorkerState::Retiring),
        p.starts(),
        p.throttled_until()
            .map(|u| format!(
                ", throttled for {:.3} s",
                u.saturating_duration_since(Instant::now()).as_secs_f64()
            ))
            .unwrap_or_default(),
        if p.has_given_up() { ", gave up" } else { "" },
    ));
    out.push_str(&format!(
        "{:>8} {:>8} {:>9} {:>4} {:>9} {:>8}\n",
        "worker", "pid", "state", "gen", "started", "requests"
    ));
    for w in p.workers() {
        out.push_str(&format!(
            "{:>8} {:>8} {:>9} {:>4} {:>8.3}s {:>8}\n",
            w.id.number(),
            w.pid(),
            w.state.to_string(),
            w.generation,
            w.started.duration_since(t0).as_secs_f64(),
            w.requests
        ));
    }
    let exits: Vec<_> = p.last_exits().collect();
    if !exits.is_empty() {
        out.push_str("last exits:\n");
        for e in exits {
            out.push_str(&format!(
                "{:>8} {:>8} {:>20} {:>4} {:>8.3}s {:>8}{}\n",
                e.id.number(),
                e.exit.id.pid(),
                e.exit.status().map_or("lost".to_owned(), |s| s.to_string()),
                e.generation,
                e.lifetime.as_secs_f64(),
                e.requests,
                if e.fault { " fault" } else { "" }
            ));
        }
    }
    eprint!("{out}");
}
