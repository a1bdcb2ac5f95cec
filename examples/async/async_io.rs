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
//! are those of the tokio example (see there), with the commands and what
//! each check expects in `common.rs`, which both examples include. It prints one line per check
//! and exits 0 if all of them passed, 1 otherwise (2 for bad arguments, or
//! if it ran out of time). `examples_async.rs` beside it runs it (`cargo test -p evchild-async`).

#[path = "common.rs"]
mod common;

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use common::{report, report_driver, BoxError, Checked, FAN_OUT, GRACE, LIMIT};
use evchild::{Backend, ChildId, Exit, Reactor, Stats};
use mio::unix::pipe::Receiver;
use smol::channel::{self, Sender};
use smol::future;

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
        request: impl FnOnce(Sender<evchild::Result<T>>) -> Request,
    ) -> Result<T, BoxError> {
        let (reply, answer) = channel::bounded(1);
        self.0
            .send(request(reply))
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
// The checks, each a task of its own (what each expects is in common.rs)
// ---------------------------------------------------------------------------

/// A child's output and its exit code, collected at the same time.
async fn echo(children: Children) -> Checked {
    let (child, stdout) = spawn_piped(&children, common::echo_command()).await?;
    let pid = child.id.pid();
    // Read and wait together: a child that fills the pipe would never exit
    // if nobody read it.
    let (output, exit) = future::zip(stdout.read_to_end(), child.wait()).await;
    common::echo_verdict(pid, output, exit)
}

/// More output than a pipe holds, read while the child runs.
async fn bulk(children: Children) -> Checked {
    let (child, stdout) = spawn_piped(&children, common::bulk_command()).await?;
    let (output, exit) = future::zip(stdout.read_to_end(), child.wait()).await;
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
    let (child, stdout) = spawn_piped(&children, common::stubborn_command()).await?;
    // Wait until the trap is set, or the SIGTERM could still kill it.
    common::stubborn_ready(&stdout.read_line().await?)?;
    let asked = Instant::now();
    children.terminate(child.id, GRACE).await?;
    common::stubborn_verdict(asked, child.wait().await?)
}

/// Many tasks, each starting a child and awaiting its report.
async fn fan_out(children: Children) -> Checked {
    let tasks: Vec<smol::Task<Result<(), BoxError>>> = (0..FAN_OUT)
        .map(|n| {
            let children = children.clone();
            smol::spawn(async move {
                let child = children.spawn(common::fan_out_command(n)).await?;
                common::fan_out_child(n, child.wait().await?)
            })
        })
        .collect();
    for task in tasks {
        task.await?;
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

/// Runs every check; returns how many failed, or `None` on time-out.
async fn run(backend: Backend) -> Result<Option<usize>, BoxError> {
    // Should the example give up (time-out), it cancels the driver, which
    // drops the reactor: that kills what is left rather than leave it.
    let reactor = common::reactor(backend, "smol (async-io)")?;
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
            report(&mut failed, name, check.await);
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
    report_driver(&mut failed, stats?);
    Ok(Some(failed))
}

fn main() -> ExitCode {
    let backend = match common::backend_from_args("async_io") {
        Ok(backend) => backend,
        Err(code) => return code,
    };
    common::finish(smol::block_on(run(backend)))
}
