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
//! 3. *As an operator runs it* (issue 14), `examples/prefork.rs` with 64
//!    concurrent loopback clients, one connection per 20 ms request
//!    (`sleep 20`), each figure side by side with the same run without
//!    faults: a random worker `SIGKILL`ed every 200 ms (default elastic
//!    pool, and a fixed 16:16 pool); growth from 2 to 16 workers with
//!    `--idle 1:4`; `SIGHUP` with a broken worker binary, then with a good
//!    one (failed requests, capacity, persistent connections drained); the
//!    master killed with `SIGKILL` (executed and forked workers gone, port
//!    free).
//!
//! ```sh
//! cargo build --release --example prefork
//! cargo bench --bench supervise                                  # all
//! EVCHILD_BENCH_QUICK=1 cargo bench --bench supervise            # short
//! EVCHILD_BENCH_ONLY=ops cargo bench --bench supervise           # part 3
//! ```
//!
//! Knobs (environment): `EVCHILD_BENCH_KILLS` (samples per pool size,
//! default 200), `EVCHILD_BENCH_SECS` (seconds per throughput cell,
//! default 3), `EVCHILD_BENCH_CLIENTS` (default 16),
//! `EVCHILD_BENCH_OPS_SECS` (seconds per run of part 3, default 10),
//! `EVCHILD_BENCH_QUICK` (20 kills, 1 s cells, 4 s runs),
//! `EVCHILD_BENCH_ONLY=ops` (part 3 alone), `EVCHILD_BENCH_HEAP_MIB` (a heap
//! of that size in the master during part 1, default 0),
//! `EVCHILD_BENCH_START=prepared` (part 1's workers through
//! `Start::prepared` instead of `Start::command`). Without `--bench` (under
//! `cargo test --benches`) it runs a smoke-sized pass of part 1 and skips
//! the others.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evchild::supervise::{Event, HasSupervisor, PoolConfig, Start, Supervisor, WorkerState};
use evchild::{earliest, Hooks, Reactor};
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
    let quick = std::env::var_os("EVCHILD_BENCH_QUICK").is_some();
    if full && std::env::var("EVCHILD_BENCH_ONLY").as_deref() == Ok("ops") {
        return operator(quick);
    }
    let kills = if !full {
        5
    } else if quick {
        20
    } else {
        env_or("EVCHILD_BENCH_KILLS", 200)
    };
    // The master's heap: std spawns a worker through `fork` (the pool's
    // `pre_exec` step), whose cost grows with the parent's mapped memory.
    let heap_mib = env_or("EVCHILD_BENCH_HEAP_MIB", 0) as usize;
    let heap: Vec<u8> = vec![1u8; heap_mib << 20];
    std::hint::black_box(&heap);
    println!(
        "## Replacement latency: SIGKILL → replacement ready ({kills} kills per size, master heap {heap_mib} MiB)\n"
    );
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
    let secs = if quick {
        1
    } else {
        env_or("EVCHILD_BENCH_SECS", 3)
    };
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
    operator(quick)
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
        match std::env::var("EVCHILD_BENCH_START").as_deref() {
            Ok("prepared") => {
                let mut worker = evchild::Prepared::new(&exe);
                worker.env(WORKER_ENV, "1").stdin(evchild::Redirect::Piped);
                worker.build()?;
                Start::prepared(worker)
            }
            _ => Start::command(move |_| {
                let mut cmd = Command::new(&exe);
                cmd.env(WORKER_ENV, "1").stdin(Stdio::piped());
                cmd
            }),
        },
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

/// Starts the server `command` runs, with its stderr piped, and reads the
/// address it listens on from its first line (`... on ADDR ...`). Returns
/// it with the rest of its stderr, which the caller must drain.
fn spawn_server(command: &mut Command) -> Res<(Child, BufReader<ChildStderr>, SocketAddr)> {
    let mut child = command.stderr(Stdio::piped()).spawn()?;
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    stderr.read_line(&mut line)?;
    let addr: SocketAddr = line
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .ok_or("no address in the server's first line")?
        .parse()?;
    Ok((child, stderr, addr))
}

/// Starts the server, waits for its address, loads it, stops it.
fn throughput(
    prefork: &PathBuf,
    args: &[&str],
    request: &str,
    clients: usize,
    secs: Duration,
) -> Res<(f64, usize)> {
    let (mut server, mut stderr, addr) = spawn_server(Command::new(prefork).args(args))?;
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

// ---------------------------------------------------------------------------
// Part 3: as an operator runs it
// ---------------------------------------------------------------------------

/// A `prefork` server: its process, address, and its log lines with the
/// time each was read.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(prefork: &Path, args: &[&str]) -> Res<Server> {
        let (child, stderr, addr) =
            spawn_server(Command::new(prefork).args(args).stdout(Stdio::null()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { return };
                l.lock().unwrap().push((Instant::now(), line));
            }
        });
        Ok(Server {
            child,
            addr,
            log,
            reader: Some(reader),
        })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal);
    }

    /// Its live (not zombie) children: the worker processes.
    fn workers(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    fn log_has(&self, text: &str) -> Option<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.contains(text))
            .map(|(_, l)| l.clone())
    }

    fn wait_log(&self, text: &str, limit: Duration) -> Option<String> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(l) = self.log_has(text) {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn wait_workers(&self, n: usize, limit: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if self.workers().len() >= n {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// SIGTERM and wait: the graceful stop.
    fn stop(mut self) -> Res<()> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The live children of `pid`, from `/proc`.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.trim_start().to_owned();
                    let mut fields = rest.split_whitespace();
                    let state = fields.next()?;
                    let ppid: i32 = fields.next()?.parse().ok()?;
                    Some(ppid == pid && state != "Z")
                })
                .unwrap_or(false)
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// One request's end and result.
type Outcomes = Vec<(Instant, bool)>;

/// `clients` threads sending `sleep ms` requests (one connection each)
/// until `stop`.
fn clients(
    addr: SocketAddr,
    clients: usize,
    ms: u64,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Outcomes>> {
    (0..clients)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let request = format!("sleep {ms}\n");
            std::thread::spawn(move || {
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let ok = (|| -> std::io::Result<bool> {
                        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                        stream.set_nodelay(true)?;
                        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                        stream.write_all(request.as_bytes())?;
                        let mut reply = String::new();
                        BufReader::new(&stream).read_line(&mut reply)?;
                        Ok(reply.trim_end() == "ok")
                    })()
                    .unwrap_or(false);
                    out.push((Instant::now(), ok));
                }
                out
            })
        })
        .collect()
}

fn join_all(handles: Vec<std::thread::JoinHandle<Outcomes>>) -> Outcomes {
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client"))
        .collect()
}

/// Successful requests per second within `[from, to)`, and failures.
fn rate(outcomes: &Outcomes, from: Instant, to: Instant) -> (f64, usize) {
    let inside = outcomes.iter().filter(|(t, _)| *t >= from && *t < to);
    let (ok, failed) = inside.fold(
        (0, 0),
        |(o, f), (_, ok)| {
            if *ok {
                (o + 1, f)
            } else {
                (o, f + 1)
            }
        },
    );
    (ok as f64 / (to - from).as_secs_f64(), failed)
}

struct KillRun {
    rps: f64,
    failed: usize,
    kills: usize,
    /// Median live workers, sampled every 20 ms.
    median_workers: usize,
    /// From each kill until the worker count is back to its level before.
    recovery: Vec<Duration>,
}

/// Loads a server for `secs`; with `kill`, a random worker gets `SIGKILL`
/// every 200 ms.
fn kill_run(prefork: &Path, args: &[&str], secs: Duration, kill: bool) -> Res<KillRun> {
    let server = Server::start(prefork, args)?;
    std::thread::sleep(Duration::from_millis(500));
    let stop = Arc::new(AtomicBool::new(false));
    let load = clients(server.addr, 64, 20, Arc::clone(&stop));
    // Warm up: the pool grows to the demand.
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut kills = 0;
    let mut pending: Vec<(Instant, usize)> = Vec::new();
    let mut recovery = Vec::new();
    let mut next_kill = t0 + Duration::from_millis(200);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    while t0.elapsed() < secs {
        let workers = server.workers();
        samples.push(workers.len());
        let now = Instant::now();
        pending.retain(|(at, before)| {
            if workers.len() >= *before {
                recovery.push(now - *at);
                false
            } else {
                true
            }
        });
        if kill && now >= next_kill && !workers.is_empty() {
            next_kill += Duration::from_millis(200);
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let victim = workers[(seed % workers.len() as u64) as usize];
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(victim),
                nix::sys::signal::Signal::SIGKILL,
            );
            kills += 1;
            pending.push((Instant::now(), workers.len()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let t1 = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let outcomes = join_all(load);
    server.stop()?;
    let (rps, failed) = rate(&outcomes, t0, t1);
    samples.sort();
    recovery.extend(pending.iter().map(|(at, _)| t1 - *at));
    recovery.sort();
    Ok(KillRun {
        rps,
        failed,
        kills,
        median_workers: samples[samples.len() / 2],
        recovery,
    })
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The worker-program script: `good` execs prefork's worker, otherwise it
/// exits 1 at once. Replaced atomically (rename), as a package upgrade
/// does.
fn install_worker_script(path: &Path, prefork: &Path, good: bool) -> Res<()> {
    use std::os::unix::fs::PermissionsExt;
    let body = if good {
        format!("#!/bin/sh\nexec {} \"$@\"\n", prefork.display())
    } else {
        "#!/bin/sh\nexit 1\n".to_owned()
    };
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, body)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The pool's capacity over time from its log: workers ready and not
/// retiring (or gone). Returns the lowest within `[from, to]`.
fn lowest_capacity(log: &[(Instant, String)], from: Instant, to: Instant) -> usize {
    use std::collections::HashSet;
    let mut ready: HashSet<String> = HashSet::new();
    let mut lowest = usize::MAX;
    for (t, line) in log {
        let Some(rest) = line.split("prefork: ").nth(1) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        if words.next() != Some("worker") {
            continue;
        }
        let Some(id) = words.next() else { continue };
        let what = words.next().unwrap_or("");
        match what {
            "ready" => {
                ready.insert(id.to_owned());
            }
            "retiring" | "killed:" | "(pid" => {
                ready.remove(id);
            }
            _ => {}
        }
        if *t >= from && *t <= to {
            lowest = lowest.min(ready.len());
        }
    }
    if lowest == usize::MAX {
        ready.len()
    } else {
        lowest
    }
}

fn capacity_now(log: &[(Instant, String)]) -> usize {
    let far = Instant::now() + Duration::from_secs(3600);
    lowest_capacity(log, far, far)
}

/// A persistent client (like an HTTP keep-alive one): many requests per
/// connection, a new connection after a `bye`. Returns (ok, failed,
/// connections).
fn persistent_client(addr: SocketAddr, stop: Arc<AtomicBool>) -> (usize, usize, usize) {
    let (mut ok, mut failed, mut conns) = (0, 0, 0);
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            failed += 1;
            continue;
        };
        conns += 1;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(mut out) = stream.try_clone() else {
            continue;
        };
        let mut lines = BufReader::new(stream).lines();
        while !stop.load(Ordering::Relaxed) {
            if out.write_all(b"sleep 20\n").is_err() {
                failed += 1;
                continue 'connect;
            }
            match lines.next() {
                Some(Ok(l)) if l == "ok" => ok += 1,
                Some(Ok(l)) if l == "bye" => continue 'connect,
                _ => {
                    failed += 1;
                    continue 'connect;
                }
            }
        }
    }
    (ok, failed, conns)
}

fn operator(quick: bool) -> Res<()> {
    let Some(prefork) = prefork_binary() else {
        println!(
            "\n(skipped part 3: build it first with `cargo build --release --example prefork`)"
        );
        return Ok(());
    };
    let secs = Duration::from_secs(if quick {
        4
    } else {
        env_or("EVCHILD_BENCH_OPS_SECS", 10)
    });
    println!(
        "\n## As an operator runs it: 64 clients, one connection per `sleep 20` request, {} s per run\n",
        secs.as_secs()
    );

    // --- SIGKILL every 200 ms -------------------------------------------
    println!("### A random worker SIGKILLed every 200 ms\n");
    println!("| pool | fault-free req/s | with kills req/s | ratio | failed (kills) | median workers (fault-free → kills) | back to size after a kill: p50 / p99 / max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let pools: [(&str, &[&str]); 2] = [
        ("elastic (default: --workers 2:16 --idle 1:4)", &[]),
        (
            "fixed (--workers 16:16 --start 16)",
            &["--workers", "16:16", "--start", "16"],
        ),
    ];
    for (name, args) in pools {
        let clean = kill_run(&prefork, args, secs, false)?;
        let faulty = kill_run(&prefork, args, secs, true)?;
        println!(
            "| {name} | {:.0} | {:.0} | {:.1} % | {} ({}) | {} → {} | {:.0} / {:.0} / {:.0} ms |",
            clean.rps,
            faulty.rps,
            100.0 * faulty.rps / clean.rps,
            faulty.failed,
            faulty.kills,
            clean.median_workers,
            faulty.median_workers,
            ms(pct(&faulty.recovery, 0.5)),
            ms(pct(&faulty.recovery, 0.99)),
            ms(pct(&faulty.recovery, 1.0)),
        );
    }

    // --- Growth 2 → 16 ----------------------------------------------------
    println!("\n### Growth from 2 to 16 workers under load, `--idle 1:4`\n");
    println!("| starts | time to 16 workers |");
    println!("|---|---:|");
    let growth: [(&str, &[&str]); 2] = [
        ("demand-driven + doubling (default)", &[]),
        (
            "doubling alone (`--no-demand`, 1 s interval)",
            &["--no-demand"],
        ),
    ];
    for (name, args) in growth {
        let server = Server::start(&prefork, args)?;
        server.wait_workers(2, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(500));
        let stop = Arc::new(AtomicBool::new(false));
        let load = clients(server.addr, 64, 20, Arc::clone(&stop));
        let took = server.wait_workers(16, Duration::from_secs(30));
        stop.store(true, Ordering::Relaxed);
        join_all(load);
        server.stop()?;
        println!(
            "| {name} | {} |",
            took.map_or("> 30 s".to_owned(), |t| format!("{:.2} s", t.as_secs_f64()))
        );
    }

    // --- SIGHUP, broken then good -----------------------------------------
    println!("\n### SIGHUP with a broken worker binary, then with a good one\n");
    let dir = std::env::temp_dir().join(format!("evchild-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("worker.sh");
    install_worker_script(&script, &prefork, true)?;
    let script_arg = script.to_string_lossy().into_owned();
    let server = Server::start(&prefork, &["--worker-program", &script_arg, "--drain", "1"])?;
    server.wait_workers(2, Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let load = clients(server.addr, 64, 20, Arc::clone(&stop));
    let pstop = Arc::new(AtomicBool::new(false));
    let addr = server.addr;
    let persistent: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&pstop);
            std::thread::spawn(move || persistent_client(addr, s))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let t_base = Instant::now();
    std::thread::sleep(secs / 2);
    // Broken.
    install_worker_script(&script, &prefork, false)?;
    let old = server.workers();
    let t_bad = Instant::now();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    let why = server.wait_log("abandoned", Duration::from_secs(15));
    std::thread::sleep(secs / 2);
    let still = server.workers().iter().filter(|p| old.contains(p)).count();
    // Good.
    install_worker_script(&script, &prefork, true)?;
    let before = capacity_now(&server.log.lock().unwrap());
    let t_good = Instant::now();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    let reloaded = server.wait_log("reloaded, generation 3", Duration::from_secs(15));
    let t_reloaded = Instant::now();
    // The old generation's last worker (a persistent one) leaves after the
    // drain time.
    let old_gone = {
        let t = Instant::now();
        while old.iter().any(|p| alive(*p)) && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(10));
        }
        t_good.elapsed()
    };
    std::thread::sleep(secs / 2);
    let t_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    pstop.store(true, Ordering::Relaxed);
    let outcomes = join_all(load);
    let (mut pok, mut pfailed, mut pconns) = (0, 0, 0);
    for p in persistent {
        let (o, f, c) = p.join().expect("persistent client");
        pok += o;
        pfailed += f;
        pconns += c;
    }
    let lowest = lowest_capacity(&server.log.lock().unwrap(), t_good, t_reloaded);
    server.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    let (base_rps, base_failed) = rate(&outcomes, t_base, t_bad);
    let (bad_rps, bad_failed) = rate(&outcomes, t_bad, t_good);
    let (good_rps, good_failed) = rate(&outcomes, t_good, t_end);
    println!("| phase | req/s | vs before | failed requests |");
    println!("|---|---:|---:|---:|");
    println!("| before (fault-free) | {base_rps:.0} | 100 % | {base_failed} |");
    println!(
        "| after SIGHUP, broken binary | {bad_rps:.0} | {:.1} % | {bad_failed} |",
        100.0 * bad_rps / base_rps
    );
    println!(
        "| after SIGHUP, good binary | {good_rps:.0} | {:.1} % | {good_failed} |",
        100.0 * good_rps / base_rps
    );
    println!();
    println!(
        "* broken binary: the event: `{}`; old workers still serving: {still} of {}",
        why.as_deref()
            .and_then(|l| l.split("prefork: ").nth(1))
            .unwrap_or("NONE"),
        old.len()
    );
    println!(
        "* good binary: {}; capacity (ready, not retiring) before: {before}, lowest during the reload: {lowest}; \
         old generation gone {:.2} s after SIGHUP (drain 1 s)",
        if reloaded.is_some() { "reloaded" } else { "NOT reloaded" },
        old_gone.as_secs_f64()
    );
    println!(
        "* 8 persistent clients throughout: {pok} requests, {pfailed} failed, {pconns} connections"
    );

    // --- Master SIGKILL -----------------------------------------------------
    println!("\n### The master killed with SIGKILL\n");
    println!("| workers | every worker gone after | port free after |");
    println!("|---|---:|---:|");
    let masters: [(&str, &[&str]); 4] = [
        (
            "executed (parent-death signal, default)",
            &["--workers", "8:8", "--start", "8"],
        ),
        (
            "forked (parent-death signal, default)",
            &["--fork", "--workers", "8:8", "--start", "8"],
        ),
        (
            "executed, `--no-pdeathsig`: a failed report",
            &["--no-pdeathsig", "--workers", "8:8", "--start", "8"],
        ),
        (
            "forked, `--no-pdeathsig`: a failed report",
            &[
                "--fork",
                "--no-pdeathsig",
                "--workers",
                "8:8",
                "--start",
                "8",
            ],
        ),
    ];
    for (name, args) in masters {
        let mut server = Server::start(&prefork, args)?;
        server.wait_workers(8, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(300));
        let stop = Arc::new(AtomicBool::new(false));
        let load = clients(server.addr, 16, 20, Arc::clone(&stop));
        std::thread::sleep(Duration::from_millis(500));
        let workers = server.workers();
        let port = server.addr.port();
        let t0 = Instant::now();
        server.signal(nix::sys::signal::Signal::SIGKILL);
        server.child.wait()?;
        let mut gone = None;
        let mut free = None;
        while (gone.is_none() || free.is_none()) && t0.elapsed() < Duration::from_secs(10) {
            if gone.is_none() && workers.iter().all(|p| !alive(*p)) {
                gone = Some(t0.elapsed());
            }
            if free.is_none() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                free = Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        join_all(load);
        for p in workers.iter().filter(|p| alive(**p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(r) = server.reader.take() {
            let _ = r.join();
        }
        let show =
            |d: Option<Duration>| d.map_or("> 10 s".to_owned(), |d| format!("{:.0} ms", ms(d)));
        println!("| {name} | {} | {} |", show(gone), show(free));
    }
    Ok(())
}
