//! What the two async examples, `tokio.rs` and `async_io.rs`, share: the
//! demo's commands and what each check expects of its children, the report
//! lines, and the command line. Each example includes it with
//! `#[path = "common.rs"] mod common;`; nothing here knows of a runtime, so
//! the driver, the handles and the reading of pipes stay in each example.

use std::error::Error as StdError;
use std::fmt::Display;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use evchild::{Backend, ChildId, DropPolicy, Exit, Hooks, Reactor, SigchldOwner, Stats};

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How long the whole example may take before it gives up.
pub const LIMIT: Duration = Duration::from_secs(30);
/// How many children the `fan-out` check starts, each from its own task.
pub const FAN_OUT: usize = 16;
/// How many lines the `bulk` child prints.
const LINES: usize = 200_000;
/// How long the `stubborn` child gets to obey `SIGTERM` (it will not).
pub const GRACE: Duration = Duration::from_millis(300);
/// How many children the checks start, and so how many reports the driver
/// must have delivered.
const CHILDREN: u64 = 4 + FAN_OUT as u64;

/// The example's reactor, with the `backend` asked for; says so, after
/// `runtime`. Should the example give up (time-out), whatever drops the
/// reactor then kills and reaps what is left rather than leave it.
pub fn reactor(backend: Backend, runtime: &str) -> Result<Reactor<()>, BoxError> {
    let mut reactor = Reactor::<()>::new(Hooks::new(SigchldOwner::Library).backend(backend))?;
    reactor.set_drop_policy(DropPolicy::KillAndReap(Duration::from_secs(1)));
    println!(
        "{runtime}; evchild reactor, {:?} backend, one descriptor ({})",
        reactor.backend().unwrap_or(Backend::Auto),
        reactor.as_raw_fd()
    );
    Ok(reactor)
}

// ---------------------------------------------------------------------------
// The checks: their commands, and what they expect
// ---------------------------------------------------------------------------

/// One check's result: a line to print, or what went wrong.
pub type Checked = Result<String, BoxError>;

pub fn sh(script: &str) -> Command {
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

/// `echo`: a child that prints a line and exits 3.
pub fn echo_command() -> Command {
    sh("echo \"hello from $$\"; exit 3")
}

/// `echo`: the output and death report of the child `pid`.
pub fn echo_verdict(
    pid: impl Display,
    output: io::Result<Vec<u8>>,
    exit: Result<Exit, BoxError>,
) -> Checked {
    let (output, exit) = (String::from_utf8(output?)?, exit?);
    let code = exit.status().and_then(|s| s.code());
    ensure(code == Some(3), || format!("exit code {code:?}, not 3"))?;
    let expected = format!("hello from {pid}\n");
    ensure(output == expected, || {
        format!("output {output:?}, not {expected:?}")
    })?;
    Ok(format!("pid {pid}: output {output:?}, exit code 3"))
}

/// `bulk`: a child that prints more than a pipe holds.
pub fn bulk_command() -> Command {
    let mut seq = Command::new("seq");
    seq.args(["1", &LINES.to_string()]);
    seq
}

/// `bulk`: the child's whole output and its death report.
pub fn bulk_verdict(output: io::Result<Vec<u8>>, exit: Result<Exit, BoxError>) -> Checked {
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

/// `polite`: a child that obeys `SIGTERM`.
pub fn polite_command() -> Command {
    sh("exec sleep 30")
}

/// `polite`: the death report of a child terminated at `asked`.
pub fn polite_verdict(asked: Instant, exit: Exit) -> Checked {
    let signal = exit.status().and_then(|s| s.signal());
    ensure(signal == Some(libc::SIGTERM), || {
        format!("{}, not SIGTERM", shown(&exit))
    })?;
    Ok(format!(
        "SIGTERM obeyed after {} ms: killed by signal 15",
        asked.elapsed().as_millis()
    ))
}

/// `stubborn`: a child that ignores `SIGTERM`, and says `ready` once it
/// does. (`exec` keeps an ignored signal ignored, so `sleep` ignores it.)
pub fn stubborn_command() -> Command {
    sh("trap '' TERM; echo ready; exec sleep 30")
}

/// `stubborn`: the child's first line; until it has printed it, the trap
/// may not be set, and a `SIGTERM` could still kill it.
pub fn stubborn_ready(line: &str) -> Result<(), BoxError> {
    ensure(line == "ready\n", || format!("first line {line:?}"))
}

/// `stubborn`: the death report of a child terminated (with [`GRACE`]) at
/// `asked`.
pub fn stubborn_verdict(asked: Instant, exit: Exit) -> Checked {
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

/// `fan-out`: the `n`th child, which exits `n`.
pub fn fan_out_command(n: usize) -> Command {
    sh(&format!("exit {n}"))
}

/// `fan-out`: the death report of the `n`th child.
pub fn fan_out_child(n: usize, exit: Exit) -> Result<(), BoxError> {
    let code = exit.status().and_then(|s| s.code());
    ensure(code == Some(n as i32), || {
        format!("child {n}: exit code {code:?}")
    })
}

/// `fan-out`: every child had its own exit code.
pub fn fan_out_verdict() -> Checked {
    Ok(format!(
        "{FAN_OUT} children from {FAN_OUT} tasks, each with its own exit code"
    ))
}

/// `missing`: a program that does not exist.
pub fn missing_command() -> Command {
    Command::new("/nonexistent/evchild-example")
}

/// `missing`: what `spawn` answered; it must fail at once.
pub fn missing_verdict(started: Result<ChildId, BoxError>) -> Checked {
    match started {
        Ok(id) => Err(format!("started {id}").into()),
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

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

/// Prints a check's line; counts it in `failed` if it failed.
pub fn report(failed: &mut usize, name: &str, checked: Checked) {
    match checked {
        Ok(line) => println!("ok    {name:<9} {line}"),
        Err(e) => {
            *failed += 1;
            println!("FAIL  {name:<9} {e}");
        }
    }
}

/// Prints the `driver` line, from the stopped driver's counters and whether
/// the process has a child left; counts it in `failed` if it failed.
pub fn report_driver(failed: &mut usize, stats: Stats) {
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
        *failed += 1;
        println!("FAIL  {:<9} {line}", "driver");
    }
}

/// Whether this process has no child at all, zombies included
/// (`waitid(P_ALL, WNOHANG | WNOWAIT)` answers `ECHILD`); reaps nothing.
fn no_child_left() -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::All, flags) == Err(nix::errno::Errno::ECHILD)
}

/// Prints the last line for how the run went (how many checks failed,
/// `None` if it ran out of time), and returns the exit code: 0 if every
/// check passed, 1 otherwise, 2 on time-out.
pub fn finish(outcome: Result<Option<usize>, BoxError>) -> ExitCode {
    match outcome {
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

// ---------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------

/// `--backend pidfd|peek|scan` (default: `Auto`); on bad arguments, says
/// why and returns the exit code 2. `program` is for the usage line.
pub fn backend_from_args(program: &str) -> Result<Backend, ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend = match args
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
        _ => Err(format!("usage: {program} [--backend pidfd|peek|scan|auto]")),
    };
    backend.map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}
