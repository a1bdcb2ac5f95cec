//! `evchild::supervise` figures:
//!
//! 1. *Replacement latency*: in a pool of N workers (N = 10, 200), the time
//!    from a worker's `SIGKILL` to its replacement reporting ready, p50 and
//!    p99. Workers are this binary executed again: it reports ready, serves
//!    one pretend request (so its death is no fault) and waits to be
//!    killed.
//! 2. *Requests per second* of `examples/prefork.rs` against the same
//!    server run as one process (`--single`), with concurrent loopback
//!    clients, one connection per request, for a trivial request
//!    (`echo`) and a 2 ms one (`sleep 2`).
//!
//! ```sh
//! cargo build --release --example prefork   # part 2 runs that binary
//! cargo bench --bench supervise
//! ```
//!
//! Knobs (environment): `EVCHILD_BENCH_KILLS` (samples per pool size,
//! default 200), `EVCHILD_BENCH_SECS` (seconds per throughput cell,
//! default 3), `EVCHILD_BENCH_CLIENTS` (default 16).
//! Without `--bench` (under `cargo test --benches`) it runs a smoke-sized
//! pass and skips part 2.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evchild::supervise::{
    earliest, Event, HasSupervisor, PoolConfig, Start, Supervisor, WorkerState,
};
use evchild::{Hooks, Reactor};
use mio::{Events, Interest, Poll, Token};

const WORKER_ENV: &str = "EVCHILD_BENCH_SUPERVISE_WORKER";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Res<()> {
    if std::env::var_os(WORKER_ENV).is_some() {
        // The worker: ready, one request, then wait for the SIGKILL (or for
        // the parent to go: stdin is a pipe from it).
        evchild::supervise::worker::ready();
        evchild::supervise::worker::busy();
        evchild::supervise::worker::idle();
        let _ = std::io::stdin().read(&mut [0u8; 1]);
        return Ok(());
    }
    let full = std::env::args().any(|a| a == "--bench");
    let kills = if full {
        env_or("EVCHILD_BENCH_KILLS", 200)
    } else {
        5
    };
    println!("## Replacement latency: SIGKILL → replacement ready ({kills} kills per size)\n");
    println!("| workers | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|");
    for n in [10usize, 200] {
        let n = if full { n } else { n.min(10) };
        let mut samples = replacement_latency(n, kills as usize)?;
        samples.sort();
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(pct(0.5)),
            ms(pct(0.99)),
            ms(*samples.last().unwrap())
        );
    }
    if !full {
        return Ok(());
    }
    let secs = env_or("EVCHILD_BENCH_SECS", 3);
    let clients = env_or("EVCHILD_BENCH_CLIENTS", 16) as usize;
    let Some(prefork) = prefork_binary() else {
        println!("\n(skipped requests per second: build it first with `cargo build --release --example prefork`)");
        return Ok(());
    };
    println!("\n## Requests per second, {clients} clients, one connection per request, {secs} s per cell\n");
    println!("| server | `echo hello` | `sleep 2` |");
    println!("|---|---:|---:|");
    let cells: [(&str, &[&str]); 3] = [
        (
            "prefork, 2 cores: --workers 4:32 --idle 2:8",
            &["--workers", "4:32", "--idle", "2:8"],
        ),
        (
            "prefork --fork, same sizes",
            &["--fork", "--workers", "4:32", "--idle", "2:8"],
        ),
        ("one process (--single)", &["--single"]),
    ];
    for (name, args) in cells {
        let mut row = format!("| {name} |");
        for request in ["echo hello", "sleep 2"] {
            let (rps, failed) =
                throughput(&prefork, args, request, clients, Duration::from_secs(secs))?;
            row.push_str(&format!(
                " {rps:.0}{} |",
                if failed > 0 {
                    format!(" ({failed} failed)")
                } else {
                    String::new()
                }
            ));
        }
        println!("{row}");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------
// Replacement latency
// ---------------------------------------------------------------------------

struct App {
    sup: Supervisor,
}

impl HasSupervisor for App {
    fn supervisor(&mut self) -> &mut Supervisor {
        &mut self.sup
    }
}

fn replacement_latency(n: usize, kills: usize) -> Res<Vec<Duration>> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut reactor = Reactor::<App>::new(Hooks::default())?;
    let mut app = App {
        sup: Supervisor::new()?,
    };
    poll.registry()
        .register(&mut reactor, Token(0), Interest::READABLE)?;
    poll.registry()
        .register(&mut app.sup, Token(1), Interest::READABLE)?;
    let exe = std::env::current_exe()?;
    let config = PoolConfig::new()
        .start(n)
        .workers(n, n)
        .idle(0, n)
        .max_spawn_rate(n)
        .start_timeout(Duration::from_secs(30));
    let pool = app.sup.add_pool(
        &mut reactor,
        "bench",
        config,
        Start::command(move |_| {
            let mut cmd = Command::new(&exe);
            cmd.env(WORKER_ENV, "1").stdin(Stdio::piped());
            cmd
        }),
    )?;
    let mut turn = |reactor: &mut Reactor<App>, app: &mut App, max: Duration| -> Res<Vec<Event>> {
        let timeout = earliest(earliest(reactor.timeout(), app.sup.timeout()), Some(max));
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => other?,
        }
        reactor.dispatch(app)?;
        app.sup.run(reactor)?;
        Ok(std::iter::from_fn(|| app.sup.next_event()).collect())
    };
    // Idle and done with its pretend request: a worker killed before that
    // would be a fault (it served nothing), and throttle the pool.
    let idle = |app: &App| {
        app.sup.pool(pool).map_or(0, |p| {
            p.workers()
                .filter(|w| w.state == WorkerState::Idle && w.requests > 0)
                .count()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while idle(&app) < n {
        turn(&mut reactor, &mut app, Duration::from_millis(50))?;
        assert!(Instant::now() < deadline, "workers never became ready");
    }
    let mut samples = Vec::with_capacity(kills);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = {
            let p = app.sup.pool(pool).expect("pool");
            let idle: Vec<_> = p
                .workers()
                .filter(|w| w.state == WorkerState::Idle && w.requests > 0)
                .collect();
            idle[(seed % idle.len() as u64) as usize].clone()
        };
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim.pid().as_raw()),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        // The replacement is the first worker to report ready after the
        // kill, with a number above every worker's so far.
        let ready = loop {
            let events = turn(&mut reactor, &mut app, Duration::from_millis(100))?;
            if let Some(t) = events.iter().find_map(|e| match e {
                Event::Ready { worker } if worker.number() > victim.id.number() => {
                    Some(Instant::now())
                }
                Event::Throttled { .. } => panic!("a killed worker throttled the pool"),
                _ => None,
            }) {
                break t;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "no replacement");
        };
        samples.push(ready - t0);
        // Let the pool settle: all n idle again.
        while idle(&app) < n {
            turn(&mut reactor, &mut app, Duration::from_millis(50))?;
        }
    }
    app.sup.shutdown(&mut reactor, Duration::from_secs(5));
    while !(app.sup.is_stopped() && reactor.is_empty()) {
        turn(&mut reactor, &mut app, Duration::from_millis(50))?;
    }
    Ok(samples)
}

// ---------------------------------------------------------------------------
// Requests per second
// ---------------------------------------------------------------------------

fn prefork_binary() -> Option<PathBuf> {
    // target/release/deps/supervise-HASH → target/release/examples/prefork
    let path = std::env::current_exe()
        .ok()?
        .parent()?
        .parent()?
        .join("examples/prefork");
    path.exists().then_some(path)
}

/// Starts the server, waits for its address, loads it, stops it.
fn throughput(
    prefork: &PathBuf,
    args: &[&str],
    request: &str,
    clients: usize,
    secs: Duration,
) -> Res<(f64, usize)> {
    let mut server: Child = Command::new(prefork)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(server.stderr.take().expect("piped"));
    let mut line = String::new();
    stderr.read_line(&mut line)?;
    let addr: SocketAddr = line
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .ok_or("no address in the server's first line")?
        .parse()?;
    // Drain the server's log so it never blocks on a full pipe.
    let drain = std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    // Warm-up: let the pool start its workers.
    std::thread::sleep(Duration::from_millis(500));
    let end = Instant::now() + secs;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let request = format!("{request}\n");
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0usize, 0usize);
                while Instant::now() < end {
                    if one_request(addr, &request) {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for t in threads {
        let (o, f) = t.join().expect("client");
        ok += o;
        failed += f;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    // The pool stops gracefully; the one-process server just dies.
    server.wait()?;
    let _ = drain.join();
    Ok((ok as f64 / secs.as_secs_f64(), failed))
}

fn one_request(addr: SocketAddr, request: &str) -> bool {
    (|| -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(request.as_bytes())?;
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply)?;
        Ok(!reply.is_empty() && !reply.starts_with("error"))
    })()
    .unwrap_or(false)
}
