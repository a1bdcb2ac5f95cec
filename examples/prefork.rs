//! A prefork TCP server in the Apache style, on `evchild::supervise`.
//!
//! ```text
//! cargo run --example prefork -- --port 7000 --workers 2:16 --idle 1:4
//! printf 'echo hello\nsleep 200\n' | nc 127.0.0.1 7000
//! kill -USR1 <parent pid>   # print the scoreboard
//! kill -HUP <parent pid>    # reload: a new generation of workers
//! kill -TERM <parent pid>   # graceful stop (or Ctrl-C)
//! ```
//!
//! The parent binds the listening socket and runs one pool; each worker
//! (this binary executed again with `--worker FD`, or with `--fork` a
//! forked child) accepts connections on the shared socket and serves a line
//! protocol: `echo TEXT` answers `TEXT`, `sleep MS` answers `ok` after MS
//! milliseconds, `quit` closes. A worker reports `busy` when it accepts a
//! connection and `idle` when the connection ends, so the pool grows under
//! load and shrinks after. On `SIGTERM` a worker finishes the connection in
//! hand and exits.
//!
//! Options: `--port P` (0: any, printed), `--start N`, `--workers MIN:MAX`,
//! `--idle MIN:MAX`, `--max-requests N`, `--grace SECS` (default 5),
//! `--fork` (fork workers instead of executing them), `-v` (print busy and
//! idle changes too), and `--single`: no pool, serve every connection in
//! this one process, one after the other (the baseline of BENCHMARKS.md).

#![warn(clippy::undocumented_unsafe_blocks)]

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use evchild::supervise::{
    earliest, worker, Event, HasSupervisor, PoolConfig, PoolId, Start, Supervisor, WorkerState,
};
use evchild::{Hooks, Reactor};
use mio::unix::pipe::{self, Receiver};
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

const CHILDREN: Token = Token(0);
const POOLS: Token = Token(1);
const SIGNALS: Token = Token(2);

struct Options {
    port: u16,
    config: PoolConfig,
    grace: Duration,
    fork: bool,
    verbose: bool,
    single: bool,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "prefork: {problem}\nusage: prefork [--port P] [--start N] [--workers MIN:MAX] \
         [--idle MIN:MAX] [--max-requests N] [--grace SECS] [--fork] [-v] [--single]"
    );
    std::process::exit(2)
}

fn parse_options() -> Options {
    let mut o = Options {
        port: 0,
        config: PoolConfig::new().start(2).workers(2, 16).idle(1, 4),
        grace: Duration::from_secs(5),
        fork: false,
        verbose: false,
        single: false,
    };
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>| -> u64 {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage("expected a number"))
    };
    let pair = |v: Option<String>| -> (usize, usize) {
        v.as_deref()
            .and_then(|v| v.split_once(':'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or_else(|| usage("expected MIN:MAX"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--worker" => {
                let fd = num(args.next()) as RawFd;
                std::process::exit(worker_main(fd));
            }
            "--port" => o.port = num(args.next()) as u16,
            "--start" => o.config = o.config.start(num(args.next()) as usize),
            "--workers" => {
                let (min, max) = pair(args.next());
                o.config = o.config.workers(min, max);
            }
            "--idle" => {
                let (min, max) = pair(args.next());
                o.config = o.config.idle(min, max);
            }
            "--max-requests" => o.config = o.config.max_requests(num(args.next())),
            "--grace" => o.grace = Duration::from_secs(num(args.next())),
            "--fork" => o.fork = true,
            "-v" => o.verbose = true,
            "--single" => o.single = true,
            other => usage(&format!("unknown option {other}")),
        }
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

/// Serves connections on the shared, non-blocking listener until `SIGTERM`.
fn worker_main(listener: RawFd) -> i32 {
    // SIGTERM: finish the connection in hand, then exit. No SA_RESTART, so
    // a worker waiting in poll(2) sees it at once. Ctrl-C in a terminal
    // reaches the whole process group: the parent handles it, not us.
    let term = SigAction::new(
        SigHandler::Handler(on_term),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: `on_term` only stores to an atomic (async-signal-safe); the
    // others are the default and ignoring. A forked worker inherited the
    // parent's handlers and replaces them all here.
    unsafe {
        let _ = sigaction(Signal::SIGTERM, &term);
        let _ = sigaction(Signal::SIGINT, &ignore);
        let _ = sigaction(Signal::SIGHUP, &default);
        let _ = sigaction(Signal::SIGUSR1, &default);
    }
    worker::ready();
    while !STOP.load(Ordering::Relaxed) {
        let Some(conn) = accept(listener) else {
            continue;
        };
        worker::busy();
        let _ = serve(conn);
        worker::idle();
    }
    0
}

/// Waits at most 100 ms for a connection (so a `SIGTERM` that landed just
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

/// The line protocol of one connection.
fn serve(conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.set_nodelay(true)?;
    let mut out = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
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

/// `SIGHUP`, `SIGUSR1`, `SIGTERM` and `SIGINT` as bytes on a pipe in the
/// loop. Executed workers start with default dispositions (handlers are
/// reset at exec); forked ones replace them.
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
            let _ = serve(conn?);
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

    let start = if options.fork {
        // SAFETY: this program is single-threaded, so the forked child may
        // do anything; `worker_main` replaces the inherited signal handlers
        // first, and the pool `_exit`s with its result.
        unsafe { Start::fork(move |_| worker_main(fd)) }
    } else {
        let exe = std::env::current_exe()?;
        Start::command(move |_| {
            let mut cmd = Command::new(&exe);
            cmd.args(["--worker", &fd.to_string()]);
            cmd
        })
    };
    let pool = app
        .sup
        .add_pool(&mut reactor, "prefork", options.config.clone(), start)?;
    eprintln!(
        "prefork: pid {} serving on {addr} (SIGUSR1: scoreboard, SIGHUP: reload, SIGTERM: stop)",
        std::process::id()
    );

    let t0 = Instant::now();
    let mut stopping = false;
    while !app.sup.is_stopped() {
        let timeout = earliest(reactor.timeout(), app.sup.timeout());
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            other => other?,
        }
        reactor.dispatch(&mut app)?;
        app.sup.run(&mut reactor)?;
        for signal in read_signals(&mut signals) {
            match signal {
                libc::SIGHUP if !stopping => {
                    eprintln!("prefork: SIGHUP, reloading");
                    app.sup.reload(&mut reactor, pool)?;
                }
                libc::SIGUSR1 => print_scoreboard(&app.sup, pool, t0),
                libc::SIGTERM | libc::SIGINT if !stopping => {
                    eprintln!("prefork: stopping (grace {:?})", options.grace);
                    stopping = true;
                    app.sup.shutdown(&mut reactor, options.grace);
                }
                _ => {}
            }
        }
        while let Some(event) = app.sup.next_event() {
            log(&event, options.verbose);
        }
    }
    eprintln!("prefork: every worker reaped, bye");
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

fn log(event: &Event, verbose: bool) {
    match event {
        Event::Busy { .. } | Event::Idle { .. } if !verbose => {}
        Event::Exited {
            worker,
            exit,
            fault,
        } => eprintln!(
            "prefork: {worker} (pid {}) exited: {}{}",
            exit.id.pid(),
            exit.status().map_or("lost".to_owned(), |s| s.to_string()),
            if *fault { " [fault]" } else { "" }
        ),
        other => eprintln!("prefork: {other:?}"),
    }
}

fn print_scoreboard(sup: &Supervisor, pool: PoolId, t0: Instant) {
    let Some(p) = sup.pool(pool) else { return };
    let mut out = String::new();
    let state = |s: WorkerState| match s {
        WorkerState::Starting => "starting",
        WorkerState::Idle => "idle",
        WorkerState::Busy => "busy",
        WorkerState::Retiring => "retiring",
        _ => "?",
    };
    out.push_str(&format!(
        "pool {:?}: generation {}, {} active ({} idle, {} busy, {} starting, {} retiring), {} started{}\n",
        p.name(),
        p.generation(),
        p.active(),
        p.count(WorkerState::Idle),
        p.count(WorkerState::Busy),
        p.count(WorkerState::Starting),
        p.count(WorkerState::Retiring),
        p.starts(),
        p.throttled_until()
            .map(|u| format!(", throttled for {:?}", u.saturating_duration_since(Instant::now())))
            .unwrap_or_default(),
    ));
    out.push_str(&format!(
        "{:>8} {:>8} {:>9} {:>4} {:>9} {:>8}\n",
        "worker", "pid", "state", "gen", "started", "requests"
    ));
    for w in p.workers() {
        out.push_str(&format!(
            "{:>8} {:>8} {:>9} {:>4} {:>8.1}s {:>8}\n",
            w.id.number(),
            w.pid(),
            state(w.state),
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
                "{:>8} {:>8} {:>20} {:>4} {:>8.1}s {:>8}{}\n",
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
