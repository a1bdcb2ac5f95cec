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

#[path = "common.rs"]
mod common;

use std::io;
use std::os::fd::OwnedFd;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::{report, report_driver, BoxError, Checked, FAN_OUT, GRACE, LIMIT};
use evchild::{Backend, ChildId, Exit, Reactor, Stats};
use mio::unix::pipe::Receiver;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

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
        self.ask(|reply| Request::Spawn { command, reply }).await
    }

    async fn terminate(&self, id: ChildId, grace: Duration) -> Result<(), BoxError> {
        self.ask(|reply| Request::Terminate { id, grace, reply })
            .await
    }

    /// Sends the driver the request `request` makes of a reply sender, and
    /// waits for its answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<evchild::Result<T>>) -> Request,
    ) -> Result<T, BoxError> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(request(reply))
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
// The checks, each a task of its own (what each expects is in common.rs)
// ---------------------------------------------------------------------------

/// A child's output and its exit code, collected at the same time.
async fn echo(children: Children) -> Checked {
    let (child, stdout) = spawn_piped(&children, common::echo_command()).await?;
    let pid = child.id.pid();
    // Read and wait together: a child that fills the pipe would never exit
    // if nobody read it.
    let (output, exit) = tokio::join!(read_to_end(stdout), child.wait());
    common::echo_verdict(pid, output, exit)
}

/// More output than a pipe holds, read while the child runs.
async fn bulk(children: Children) -> Checked {
    let (child, stdout) = spawn_piped(&children, common::bulk_command()).await?;
    let (output, exit) = tokio::join!(read_to_end(stdout), child.wait());
    common::bulk_verdict(output, exit)
}

/// `terminate` of a child that obeys `SIGTERM`.
async fn polite(children: Children) -> Checked {
    let child = children.spawn(common::polite_command()).await?;
    let asked = Instant::now();
    children
        .terminate(child.id, Duration::from_secs(10))
        .await?;
    common::polite_verdict(asked, child.wait().await?)
}

/// `terminate` of a child that ignores `SIGTERM`: the deadline kills it.
async fn stubborn(children: Children) -> Checked {
    let (child, mut stdout) = spawn_piped(&children, common::stubborn_command()).await?;
    // Wait until the trap is set, or the SIGTERM could still kill it.
    common::stubborn_ready(&read_line(&mut stdout).await?)?;
    let asked = Instant::now();
    children.terminate(child.id, GRACE).await?;
    common::stubborn_verdict(asked, child.wait().await?)
}

/// Many tasks, each starting a child and awaiting its report.
async fn fan_out(children: Children) -> Checked {
    let mut tasks = JoinSet::new();
    for n in 0..FAN_OUT {
        let children = children.clone();
        tasks.spawn(async move {
            let child = children.spawn(common::fan_out_command(n)).await?;
            common::fan_out_child(n, child.wait().await?)
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    common::fan_out_verdict()
}

/// A program that does not exist: an error at once, nothing to reap.
async fn missing(children: Children) -> Checked {
    let started = children.spawn(common::missing_command()).await;
    common::missing_verdict(started.map(|child| child.id))
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

/// Runs every check; returns how many failed.
async fn run(backend: Backend) -> Result<usize, BoxError> {
    // Should the example give up (time-out), the runtime drops the driver
    // and with it the reactor: that kills what is left rather than leave it.
    let reactor = common::reactor(backend, "tokio multi-thread runtime")?;
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
        let checked = check
            .await
            .unwrap_or_else(|e| Err(format!("the task failed: {e}").into()));
        report(&mut failed, name, checked);
    }
    report_driver(&mut failed, driver.await??);
    Ok(failed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let backend = match common::backend_from_args("tokio") {
        Ok(backend) => backend,
        Err(code) => return code,
    };
    // A time-out (`Err(Elapsed)`) is `Ok(None)` to `finish`.
    let outcome = tokio::time::timeout(LIMIT, run(backend)).await;
    common::finish(outcome.map_or(Ok(None), |run| run.map(Some)))
}
