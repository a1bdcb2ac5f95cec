//! evchild inside a multi-threaded tokio runtime, through
//! `tokio::io::unix::AsyncFd`.
//!
//! ```text
//! cargo run -p evchild-async --example tokio   # the default backend
//! cargo run -p evchild-async --example tokio -- --backend peek   # or pidfd, scan
//! ```
//!
//! # The shape
//!
//! One task, the *driver*, owns the reactor, wrapped in an `AsyncFd`: the
//! reactor shows one descriptor however many children it has, and tokio
//! watches that descriptor like a socket. The driver waits for three things
//! at once and handles whichever comes first:
//!
//! * the descriptor is readable: call `dispatch` (which reaps, and runs the
//!   death callbacks), then clear tokio's readiness, since `dispatch` has
//!   emptied the descriptor;
//! * a request from another task (start a child, terminate one), over an
//!   `mpsc` channel: the reactor is `Send` but not `Sync`, so other tasks
//!   talk to the one task that owns it, which calls the reactor at once
//!   (both calls are quick and never block);
//! * the reactor's next `terminate` deadline, from `timeout()`: those
//!   deadlines are not on the descriptor, so the driver sleeps no longer
//!   than that and then dispatches, which sends the `SIGKILL` that is due.
//!
//! Every other task holds a cheap, cloneable `Children` handle, and gets
//! back from `spawn` the child's id, its stdout (a non-blocking
//! `mio::unix::pipe::Receiver`, which owns its descriptor and so converts
//! into a `tokio::net::unix::pipe::Receiver`, an `AsyncRead`, without
//! `unsafe`),
//! and a `oneshot::Receiver<Exit>`, whose sender the (`Send`) death callback
//! captured: the callback runs in the driver, on whichever worker thread
//! runs it at the time, and the task that awaits the report wakes up
//! wherever it is.
//!
//! # What it shows
//!
//! * `echo`: a child's output collected, and its exit code (3);
//! * `bulk`: 200,000 lines, much more than a pipe holds, read while the
//!   child runs, then its exit;
//! * `polite`: `terminate` of a child that obeys `SIGTERM` at once;
//! * `stubborn`: `terminate` of a child that ignores `SIGTERM`, killed with
//!   `SIGKILL` by the deadline once the grace period has run out;
//! * `fan-out`: 16 tasks, each starting a child and awaiting its report;
//! * `missing`: a program that does not exist, an error at once.
//!
//! Then the driver stops (every handle is gone and no child is left) and
//! hands back the reactor's counters, and the process checks it has no
//! child left. It prints one line per check and exits 0 if all of them
//! passed, 1 otherwise (2 for bad arguments, or if it ran out of time).
//! `examples_async.rs` beside it runs it (`cargo test -p evchild-async`).

use std::error::Error as StdError;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use evchild::{Backend, ChildId, DropPolicy, Exit, Hooks, Reactor, SigchldOwner, Stats};
use mio::unix::pipe::Receiver;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

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
        reply: oneshot::Sender<evchild::Result<Child>>,
    },
    Terminate {
        id: ChildId,
        grace: Duration,
        reply: oneshot::Sender<evchild::Result<()>>,
    },
}

/// A child, as the task that started it sees it.
struct Child {
    id: ChildId,
    /// Its stdout, if the command asked for `Stdio::piped()`.
    stdout: Option<Receiver>,
    /// Its one death report, sent by its death callback.
    exit: oneshot::Receiver<Exit>,
}

impl Child {
    /// The child's death report.
    async fn wait(self) -> Result<Exit, BoxError> {
        self.exit
            .await
            .map_err(|_| "the driver stopped before the child's death was reported".into())
    }
}

/// Runs the reactor until every [`Children`] handle is dropped and every
/// child it started has been reported; returns the reactor's counters.
async fn drive(
    reactor: Reactor<()>,
    mut requests: mpsc::UnboundedReceiver<Request>,
) -> Result<Stats, BoxError> {
    // This registers the reactor's descriptor with tokio, once, for the
    // driver's whole life (a second `AsyncFd` of the same descriptor in the
    // same runtime would fail with `EEXIST`). READABLE only: it is never
    // writable. tokio's registration is edge-triggered, which the reactor
    // supports: `dispatch` empties it, so the next child's death is a new
    // edge.
    //
    // SAFETY: `register_with_interest` asks that the descriptor stay open,
    // and be the one `as_raw_fd` returns, for the life of the `AsyncFd`. The
    // reactor's descriptor is its epoll set, opened by `Reactor::new` and
    // closed only by its drop, whatever is called meanwhile; the `AsyncFd`
    // owns the reactor, and we never swap another one in through `get_mut`.
    let mut reactor = unsafe { AsyncFd::register_with_interest(reactor, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut open = true;
    while open || !reactor.get_ref().is_empty() {
        // The next `terminate` deadline, if any: recomputed every turn, so a
        // `terminate` served below is never slept through.
        let due = reactor.get_ref().timeout();
        tokio::select! {
            ready = reactor.readable_mut() => {
                let mut ready = ready?;
                // Reaps the children that died and runs their callbacks,
                // which send their reports to the tasks.
                ready.get_inner_mut().dispatch(&mut ())?;
                // `dispatch` emptied the descriptor: tell tokio, so the next
                // `readable_mut` waits for the next event. (A death during
                // `dispatch` is not lost: tokio clears only the readiness
                // this guard saw.)
                ready.clear_ready();
            }
            request = requests.recv(), if open => match request {
                Some(request) => serve(reactor.get_mut(), request),
                // Every handle is gone: finish the children already started.
                None => open = false,
            },
            () = sleep_until_due(due) => {
                // A grace period ran out: this dispatch sends the SIGKILL.
                reactor.get_mut().dispatch(&mut ())?;
            }
        }
    }
    // Deregisters the descriptor from tokio before the reactor closes it.
    Ok(reactor.into_inner().stats())
}

/// Sleeps for `due`, or for ever if the reactor has no deadline.
async fn sleep_until_due(due: Option<Duration>) {
    match due {
        Some(due) => tokio::time::sleep(due).await,
        None => std::future::pending().await,
    }
}

/// Carries out one request, in the driver, and answers it.
fn serve(reactor: &mut Reactor<()>, request: Request) {
    match request {
        Request::Spawn { mut command, reply } => {
            let (report, exit) = oneshot::channel();
            // The death callback runs once, inside `dispatch`, in the driver.
            // It is `Send` (the reactor requires it), like the oneshot sender
            // it captures. (A map from `ChildId` to senders in the context,
            // `dispatch(&mut map)`, would do as well.)
            let started = reactor.spawn(&mut command, move |_, _, exit| {
                // The task may have stopped waiting; the child is reaped
                // all the same.
                let _ = report.send(exit);
            });
            let _ = reply.send(started.map(|spawned| Child {
                id: spawned.id,
                stdout: spawned.stdout,
                exit,
            }));
        }
        Request::Terminate { id, grace, reply } => {
            // SIGTERM now; the SIGKILL deadline is what `timeout()` reports
            // at the top of the driver's next turn.
            let _ = reply.send(reactor.terminate(id, grace));
        }
    }
}

/// What a task holds to start and stop children: a cheap, cloneable handle
/// to the driver.
#[derive(Clone)]
struct Children(mpsc::UnboundedSender<Request>);

impl Children {
    async fn spawn(&self, command: Command) -> Result<Child, BoxError> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(Request::Spawn { command, reply })
            .map_err(|_| "the driver has stopped")?;
        Ok(answer.await.map_err(|_| "the driver has stopped")??)
    }

    async fn terminate(&self, id: ChildId, grace: Duration) -> Result<(), BoxError> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(Request::Terminate { id, grace, reply })
            .map_err(|_| "the driver has stopped")?;
        Ok(answer.await.map_err(|_| "the driver has stopped")??)
    }
}

// ---------------------------------------------------------------------------
// A child's output, read asynchronously
// ---------------------------------------------------------------------------

/// Starts `command` with its stdout piped; returns the child and its stdout
/// as a tokio pipe (`AsyncRead`).
///
/// The `Spawned` stdout is a non-blocking `mio::unix::pipe::Receiver`, which
/// owns its descriptor, so it converts into tokio's pipe type without
/// `unsafe` (`from_owned_fd` checks it is a pipe's read end). Wrapping it in
/// an `AsyncFd` of its own, as the driver does the reactor, works too, but
/// tokio 1.54 made that `unsafe` (`AsyncFd::register`).
async fn spawn_piped(
    children: &Children,
    mut command: Command,
) -> Result<(Child, pipe::Receiver), BoxError> {
    command.stdout(Stdio::piped());
    let mut child = children.spawn(command).await?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    Ok((child, pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))?))
}

/// Reads until end of file: the child (and every process that shares its
/// stdout) has exited or closed it.
async fn read_to_end(mut stdout: pipe::Receiver) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).await?;
    Ok(out)
}

/// Reads up to the first newline (or end of file), one byte at a time, so
/// nothing after it is taken from the pipe.
async fn read_line(stdout: &mut pipe::Receiver) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0];
    while stdout.read(&mut byte).await? == 1 {
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
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
    let (output, exit) = tokio::join!(read_to_end(stdout), child.wait());
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
    let (output, exit) = tokio::join!(read_to_end(stdout), child.wait());
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
    let (child, mut stdout) = spawn_piped(&children, sh(script)).await?;
    // Wait until the trap is set, or the SIGTERM could still kill it.
    let line = read_line(&mut stdout).await?;
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
    let mut tasks = JoinSet::new();
    for n in 0..FAN_OUT {
        let children = children.clone();
        tasks.spawn(async move {
            let child = children.spawn(sh(&format!("exit {n}"))).await?;
            let code = child.wait().await?.status().and_then(|s| s.code());
            ensure(code == Some(n as i32), || {
                format!("child {n}: exit code {code:?}")
            })
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
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
        _ => Err("usage: tokio [--backend pidfd|peek|scan|auto]".into()),
    }
}

/// Whether this process has no child at all, zombies included
/// (`waitid(P_ALL, WNOHANG | WNOWAIT)` answers `ECHILD`); reaps nothing.
fn no_child_left() -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::All, flags) == Err(nix::errno::Errno::ECHILD)
}

/// Runs every check; returns how many failed.
async fn run(backend: Backend) -> Result<usize, BoxError> {
    let mut reactor = Reactor::<()>::new(Hooks::new(SigchldOwner::Library).backend(backend))?;
    // Should the example give up (time-out), the runtime drops the driver
    // and with it the reactor: kill what is left rather than leave it.
    reactor.set_drop_policy(DropPolicy::KillAndReap(Duration::from_secs(1)));
    println!(
        "tokio multi-thread runtime; evchild reactor, {:?} backend, one descriptor ({})",
        reactor.backend().unwrap_or(Backend::Auto),
        reactor.as_raw_fd()
    );
    let (requests, inbox) = mpsc::unbounded_channel();
    let driver = tokio::spawn(drive(reactor, inbox));
    let children = Children(requests);

    // Every check is a task of its own, on whichever worker thread is free.
    let checks = [
        ("echo", tokio::spawn(echo(children.clone()))),
        ("bulk", tokio::spawn(bulk(children.clone()))),
        ("polite", tokio::spawn(polite(children.clone()))),
        ("stubborn", tokio::spawn(stubborn(children.clone()))),
        ("fan-out", tokio::spawn(fan_out(children.clone()))),
        ("missing", tokio::spawn(missing(children.clone()))),
    ];
    // The driver stops once every handle is gone and no child is left.
    drop(children);
    let mut failed = 0;
    for (name, check) in checks {
        match check.await {
            Ok(Ok(line)) => println!("ok    {name:<9} {line}"),
            Ok(Err(e)) => {
                failed += 1;
                println!("FAIL  {name:<9} {e}");
            }
            Err(e) => {
                failed += 1;
                println!("FAIL  {name:<9} the task failed: {e}");
            }
        }
    }
    let stats = driver.await??;
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
    Ok(failed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let backend = match backend_from_args() {
        Ok(backend) => backend,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match tokio::time::timeout(LIMIT, run(backend)).await {
        Ok(Ok(0)) => {
            println!("all checks passed");
            ExitCode::SUCCESS
        }
        Ok(Ok(failed)) => {
            println!("{failed} check(s) failed");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            println!("FAIL  {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            println!("FAIL  timed out after {LIMIT:?}");
            ExitCode::from(2)
        }
    }
}
