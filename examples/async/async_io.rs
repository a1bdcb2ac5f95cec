//! evchild under async-io (the reactor of smol), through `async_io::Async`.
//!
//! ```text
//! cargo run -p evchild-async --example async_io   # the default backend
//! cargo run -p evchild-async --example async_io -- --backend peek   # or pidfd, scan
//! ```
//!
//! The same program as `tokio.rs` beside it, with smol's executor, channels
//! and timers. One task, the *driver*, owns the reactor and waits for three
//! things at once:
//!
//! * the reactor's descriptor is readable: call `dispatch`, which reaps and
//!   runs the death callbacks;
//! * a request from another task (start a child, terminate one), over a
//!   channel: the reactor is `Send` but not `Sync`, so other tasks talk to
//!   the one task that owns it;
//! * the reactor's next `terminate` deadline (`timeout()`), with an
//!   `async_io::Timer`: the deadlines are not on the descriptor.
//!
//! async-io's `Async::get_mut` is `unsafe` (it could swap the descriptor
//! out), so the driver does not wrap the reactor itself: it gives async-io
//! a duplicate of the reactor's descriptor (`try_clone_to_owned`, a `dup`
//! of the same epoll set, so it is readable exactly when the reactor is),
//! and keeps the reactor to itself, plain `&mut`. async-io re-arms its
//! registration at every `readable()`, and reports it at once if the
//! descriptor is still readable, so there is no readiness to clear: a
//! `dispatch` empties the descriptor, and the next `readable()` waits for
//! the next event.
//!
//! A child's stdout, a non-blocking `mio::unix::pipe::Receiver`, goes into
//! an `Async` of its own (`read_with` calls the mio pipe's `read` whenever
//! async-io says it is readable), and each child's one death report comes
//! back from its (`Send`) death callback through a one-slot channel.
//!
//! The checks (`echo`, `bulk`, `polite`, `stubborn`, `fan-out`, `missing`)
//! are those of the tokio example; see there. It prints one line per check
//! and exits 0 if all of them passed, 1 otherwise (2 for bad arguments, or
//! if it ran out of time). `examples_async.rs` beside it runs it (`cargo test -p evchild-async`).

use std::error::Error as StdError;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use evchild::{Backend, ChildId, DropPolicy, Exit, Hooks, Reactor, SigchldOwner, Stats};
use mio::unix::pipe::Receiver;
use smol::channel::{self, Sender};
use smol::future;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long the whole example may take before it gives up.
const LIMIT: Duration = Duration::from_secs(30);
/// How many children the `fan-out` check starts, each from its own task.
const FAN_OUT: usize = 16;
/// How many lines the `bulk` child prints.
const LINES: usize = 200_000;
/// How long the `stubborn` child gets to obey `SIGTERM` (it will not).
const GRACE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------
// The driver: the one task that owns the reactor
// ---------------------------------------------------------------------------

/// What the other tasks ask of the driver.
enum Request {
    Spawn {
        command: Command,
        reply: Sender<evchild::Result<Child>>,
    },
    Terminate {
        id: ChildId,
        grace: Duration,
        reply: Sender<evchild::Result<()>>,
    },
}

/// A child, as the task that started it sees it.
struct Child {
    id: ChildId,
    /// Its stdout, if the command asked for `Stdio::piped()`.
    stdout: Option<Receiver>,
    /// Its one death report, sent by its death callback.
    exit: channel::Receiver<Exit>,
}

impl Child {
    /// The child's death report.
    async fn wait(self) -> Result<Exit, BoxError> {
        self.exit
            .recv()
            .await
            .map_err(|_| "the driver stopped before the child's death was reported".into())
    }
}

/// What woke the driver. (A value that lives for one turn of the loop: no
/// point boxing the request.)
#[allow(clippy::large_enum_variant)]
enum Woken {
    Readable,
    Request(Option<Request>),
    Due,
}

/// Runs the reactor until every [`Children`] handle is dropped and every
/// child it started has been reported; returns the reactor's counters.
async fn drive(
    mut reactor: Reactor<()>,
    requests: channel::Receiver<Request>,
) -> Result<Stats, BoxError> {
    // async-io's own copy of the reactor's descriptor, registered here, once.
    let readiness: Async<OwnedFd> = Async::new(reactor.as_fd().try_clone_to_owned()?)?;
    let mut open = true;
    while open || !reactor.is_empty() {
        // The next `terminate` deadline, if any: recomputed every turn, so a
        // `terminate` served below is never slept through.
        let mut due = reactor.timeout().map_or_else(Timer::never, Timer::after);
        let readable = async { readiness.readable().await.map(|()| Woken::Readable) };
        let request = async {
            if open {
                Ok(Woken::Request(requests.recv().await.ok()))
            } else {
                future::pending().await
            }
        };
        let deadline = async {
            (&mut due).await;
            Ok(Woken::Due)
        };
        match future::or(readable, future::or(request, deadline)).await? {
            // Reaps the children that died and runs their callbacks, which
            // send their reports to the tasks; on a deadline, also sends the
            // SIGKILL that is due.
            Woken::Readable | Woken::Due => reactor.dispatch(&mut ())?,
            Woken::Request(Some(request)) => serve(&mut reactor, request),
            // Every handle is gone: finish the children already started.
            Woken::Request(None) => open = false,
        }
    }
    Ok(reactor.stats())
}

/// Carries out one request, in the driver, and answers it.
fn serve(reactor: &mut Reactor<()>, request: Request) {
    match request {
        Request::Spawn { mut command, reply } => {
            let (report, exit) = channel::bounded(1);
            // The death callback runs once, inside `dispatch`, in the driver.
            // It must be `Send`, like the sender it captures.
            let started = reactor.spawn(&mut command, move |_, _, exit| {
                // The task may have stopped waiting; the child is reaped
                // all the same.
                let _ = report.try_send(exit);
            });
            let _ = reply.try_send(started.map(|spawned| Child {
                id: spawned.id,
                stdout: spawned.stdout,
                exit,
            }));
        }
        Request::Terminate { id, grace, reply } => {
            // SIGTERM now; the SIGKILL deadline is what `timeout()` reports
            // at the top of the driver's next turn.
            let _ = reply.try_send(reactor.terminate(id, grace));
        }
    }
}

/// What a task holds to start and stop children: a cheap, cloneable handle
/// to the driver.
#[derive(Clone)]
struct Children(Sender<Request>);

impl Children {
    async fn spawn(&self, command: Command) -> Result<Child, BoxError> {
        let (reply, answer) = channel::bounded(1);
        self.0
            .send(Request::Spawn { command, reply })
            .await
            .map_err(|_| "the driver has stopped")?;
        Ok(answer
            .recv()
            .await
            .map_err(|_| "the driver has stopped")??)
    }

    async fn terminate(&self, id: ChildId, grace: Duration) -> Result<(), BoxError> {
        let (reply, answer) = channel::bounded(1);
        self.0
            .send(Request::Terminate { id, grace, reply })
            .await
            .map_err(|_| "the driver has stopped")?;
        Ok(answer
            .recv()
            .await
            .map_err(|_| "the driver has stopped")??)
    }
}

// ---------------------------------------------------------------------------
// A child's output, read asynchronously
// ---------------------------------------------------------------------------

/// A child's stdout under async-io: the non-blocking mio pipe in an `Async`.
struct Output(Async<Receiver>);

impl Output {
    /// Reads what is there, waiting until something is; 0 at end of file.
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // `read_with` retries on `WouldBlock` once async-io reports the pipe
        // readable; mio implements `Read` for `&Receiver`.
        self.0.read_with(|mut pipe| pipe.read(buf)).await
    }

    /// Reads until end of file: the child (and every process that shares
    /// its stdout) has exited or closed it.
    async fn read_to_end(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            match self.read(&mut buf).await? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads up to the first newline (or end of file), one byte at a time,
    /// so nothing after it is taken from the pipe.
    async fn read_line(&self) -> io::Result<String> {
        let mut line = Vec::new();
        let mut byte = [0];
        while self.read(&mut byte).await? == 1 {
            line.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }
}

/// Starts `command` with its stdout piped.
async fn spawn_piped(
    children: &Children,
    mut command: Command,
) -> Result<(Child, Output), BoxError> {
    command.stdout(Stdio::piped());
    let mut child = children.spawn(command).await?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    // Already non-blocking: no `fcntl` needed.
    Ok((child, Output(Async::new_nonblocking(stdout)?)))
}

// ---------------------------------------------------------------------------
// The checks, each a task of its own
// ---------------------------------------------------------------------------

/// One check's result: a line to print, or what went wrong.
type Checked = Result<String, BoxError>;

fn sh(script: &str) -> Command {
    let mut command = Command::new("/bin/sh");
    command.args(["-c", script]);
    command
}

/// A death report, for messages.
fn shown(exit: &Exit) -> String {
    exit.status()
        .map_or("lost (reaped by other code)".to_string(), |s| s.to_string())
}

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Result<(), BoxError> {
    if condition {
        Ok(())
    } else {
        Err(what().into())
    }
}

/// A child's output and its exit code, collected at the same time.
async fn echo(children: Children) -> Checked {
    let (child, stdout) = spawn_piped(&children, sh("echo \"hello from $$\"; exit 3")).await?;
    let pid = child.id.pid();
    // Read and wait together: a child that fills the pipe would never exit
    // if nobody read it.
    let (output, exit) = future::zip(stdout.read_to_end(), child.wait()).await;
    let (output, exit) = (String::from_utf8(output?)?, exit?);
    let code = exit.status().and_then(|s| s.code());
    ensure(code == Some(3), || format!("exit code {code:?}, not 3"))?;
    let expected = format!("hello from {pid}\n");
    ensure(output == expected, || {
        format!("output {output:?}, not {expected:?}")
    })?;
    Ok(format!("pid {pid}: output {output:?}, exit code 3"))
}

/// More output than a pipe holds, read while the child runs.
async fn bulk(children: Children) -> Checked {
    let mut seq = Command::new("seq");
    seq.args(["1", &LINES.to_string()]);
    let (child, stdout) = spawn_piped(&children, seq).await?;
    let (output, exit) = future::zip(stdout.read_to_end(), child.wait()).await;
    let (output, exit) = (output?, exit?);
    let lines = output.iter().filter(|&&b| b == b'\n').count();
    let last = String::from_utf8_lossy(&output)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    ensure(exit.status().is_some_and(|s| s.success()), || {
        format!("seq: {}", shown(&exit))
    })?;
    ensure(lines == LINES && last == LINES.to_string(), || {
        format!("{lines} lines, the last {last:?}")
    })?;
    Ok(format!(
        "{lines} lines ({} bytes) read while it ran, exit code 0",
        output.len()
    ))
}

/// `terminate` of a child that obeys `SIGTERM`.
async fn polite(children: Children) -> Checked {
    let child = children.spawn(sh("exec sleep 30")).await?;
    let asked = Instant::now();
    children
        .terminate(child.id, Duration::from_secs(10))
        .await?;
    let exit = child.wait().await?;
    let signal = exit.status().and_then(|s| s.signal());
    ensure(signal == Some(libc::SIGTERM), || {
        format!("{}, not SIGTERM", shown(&exit))
    })?;
    Ok(format!(
        "SIGTERM obeyed after {} ms: killed by signal 15",
        asked.elapsed().as_millis()
    ))
}

/// `terminate` of a child that ignores `SIGTERM`: the deadline kills it.
async fn stubborn(children: Children) -> Checked {
    // `exec` keeps an ignored signal ignored, so `sleep` ignores SIGTERM.
    let script = "trap '' TERM; echo ready; exec sleep 30";
    let (child, stdout) = spawn_piped(&children, sh(script)).await?;
    // Wait until the trap is set, or the SIGTERM could still kill it.
    let line = stdout.read_line().await?;
    ensure(line == "ready\n", || format!("first line {line:?}"))?;
    let asked = Instant::now();
    children.terminate(child.id, GRACE).await?;
    let exit = child.wait().await?;
    let elapsed = asked.elapsed();
    let signal = exit.status().and_then(|s| s.signal());
    ensure(signal == Some(libc::SIGKILL), || {
        format!("{}, not SIGKILL", shown(&exit))
    })?;
    ensure(elapsed >= GRACE, || {
        format!("killed after {elapsed:?}, before the {GRACE:?} grace ran out")
    })?;
    Ok(format!(
        "ignored SIGTERM; SIGKILL once the {} ms grace ran out ({} ms): signal 9",
        GRACE.as_millis(),
        elapsed.as_millis()
    ))
}

/// Many tasks, each starting a child and awaiting its report.
async fn fan_out(children: Children) -> Checked {
    let tasks: Vec<smol::Task<Result<(), BoxError>>> = (0..FAN_OUT)
        .map(|n| {
            let children = children.clone();
            smol::spawn(async move {
                let child = children.spawn(sh(&format!("exit {n}"))).await?;
                let code = child.wait().await?.status().and_then(|s| s.code());
                ensure(code == Some(n as i32), || {
                    format!("child {n}: exit code {code:?}")
                })
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    Ok(format!(
        "{FAN_OUT} children from {FAN_OUT} tasks, each with its own exit code"
    ))
}

/// A program that does not exist: an error at once, nothing to reap.
async fn missing(children: Children) -> Checked {
    match children
        .spawn(Command::new("/nonexistent/evchild-example"))
        .await
    {
        Ok(child) => Err(format!("started {}", child.id).into()),
        Err(e) => match e.downcast_ref::<evchild::Error>() {
            Some(evchild::Error::Spawn { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Ok("spawn failed at once: NotFound".to_string())
            }
            _ => Err(format!("unexpected error: {e}").into()),
        },
    }
}

/// How many children the checks start, and so how many reports the driver
/// must have delivered.
const CHILDREN: u64 = 4 + FAN_OUT as u64;

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

/// `--backend pidfd|peek|scan` (default: `Auto`).
fn backend_from_args() -> Result<Backend, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => Ok(Backend::Auto),
        ["--backend", name] => match *name {
            "auto" => Ok(Backend::Auto),
            "pidfd" => Ok(Backend::Pidfd),
            "peek" => Ok(Backend::Peek),
            "scan" => Ok(Backend::Scan),
            other => Err(format!(
                "unknown backend {other:?}: pidfd, peek, scan or auto"
            )),
        },
        _ => Err("usage: async_io [--backend pidfd|peek|scan|auto]".into()),
    }
}

/// Whether this process has no child at all, zombies included
/// (`waitid(P_ALL, WNOHANG | WNOWAIT)` answers `ECHILD`); reaps nothing.
fn no_child_left() -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::All, flags) == Err(nix::errno::Errno::ECHILD)
}

/// Runs every check; returns how many failed, or `None` on time-out.
async fn run(backend: Backend) -> Result<Option<usize>, BoxError> {
    let mut reactor = Reactor::<()>::new(Hooks::new(SigchldOwner::Library).backend(backend))?;
    // Should the example give up (time-out), it cancels the driver, which
    // drops the reactor: kill what is left rather than leave it.
    reactor.set_drop_policy(DropPolicy::KillAndReap(Duration::from_secs(1)));
    println!(
        "smol (async-io); evchild reactor, {:?} backend, one descriptor ({})",
        reactor.backend().unwrap_or(Backend::Auto),
        reactor.as_raw_fd()
    );
    let (requests, inbox) = channel::unbounded();
    // smol's global executor runs tasks on a thread of its own.
    let driver = smol::spawn(drive(reactor, inbox));
    let children = Children(requests);

    // Every check is a task of its own.
    let checks = [
        ("echo", smol::spawn(echo(children.clone()))),
        ("bulk", smol::spawn(bulk(children.clone()))),
        ("polite", smol::spawn(polite(children.clone()))),
        ("stubborn", smol::spawn(stubborn(children.clone()))),
        ("fan-out", smol::spawn(fan_out(children.clone()))),
        ("missing", smol::spawn(missing(children.clone()))),
    ];
    // The driver stops once every handle is gone and no child is left.
    drop(children);
    let mut failed = 0;
    let mut driver = driver;
    let finished = async {
        for (name, check) in checks {
            match check.await {
                Ok(line) => println!("ok    {name:<9} {line}"),
                Err(e) => {
                    failed += 1;
                    println!("FAIL  {name:<9} {e}");
                }
            }
        }
        Some((&mut driver).await)
    };
    let gave_up = async {
        Timer::after(LIMIT).await;
        None
    };
    let Some(stats) = future::or(finished, gave_up).await else {
        // Dropping the check tasks cancelled them; cancelling the driver
        // drops the reactor, which kills and reaps what is left.
        driver.cancel().await;
        return Ok(None);
    };
    let stats = stats?;
    let no_child = no_child_left();
    let line = format!(
        "{} reaped (of {CHILDREN} expected), {} lost, in {} dispatches; {}",
        stats.reaped,
        stats.lost,
        stats.dispatches,
        if no_child {
            "no child left"
        } else {
            "a child is left"
        }
    );
    if stats.reaped == CHILDREN && stats.lost == 0 && no_child {
        println!("ok    {:<9} {line}", "driver");
    } else {
        failed += 1;
        println!("FAIL  {:<9} {line}", "driver");
    }
    Ok(Some(failed))
}

fn main() -> ExitCode {
    let backend = match backend_from_args() {
        Ok(backend) => backend,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match smol::block_on(run(backend)) {
        Ok(Some(0)) => {
            println!("all checks passed");
            ExitCode::SUCCESS
        }
        Ok(Some(failed)) => {
            println!("{failed} check(s) failed");
            ExitCode::FAILURE
        }
        Ok(None) => {
            println!("FAIL  timed out after {LIMIT:?}");
            ExitCode::from(2)
        }
        Err(e) => {
            println!("FAIL  {e}");
            ExitCode::FAILURE
        }
    }
}
