//! `Reactor::spawn`: children started with `std::process::Command`, their
//! piped stdio as mio pipes in the same loop as the reactor, and every way
//! an exec can fail.
//!
//! The stdio tests drive one `mio::Poll` by hand, with the reactor and the
//! child's pipes under different tokens, as an application would: write to
//! stdin when it is writable, read stdout and stderr when they are readable
//! until `WouldBlock`, drop stdin to close it.

use evchild_testkit as util;

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use evchild::{Backend, Error, Exit, Reactor, Spawned};
use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Registry, Token};
use util::{
    assert_cloexec_nonblock, only_death, record, sigchld_handler, Check, KillOnPanic, Loop, Record,
};

const LIMIT: Duration = Duration::from_secs(30);

const STDIN: Token = Token(1);
const STDOUT: Token = Token(2);
const STDERR: Token = Token(3);

/// The application's context in these tests.
#[derive(Default)]
struct App {
    /// Death reports, in callback order.
    deaths: Vec<Exit>,
    /// Whether the loop still held the child's stdin open when each death
    /// callback ran.
    stdin_open_at_death: Vec<bool>,
    /// The child's pipes, while the loop holds them.
    io: Io,
}

impl Record for App {
    fn record(&mut self, exit: Exit) {
        self.stdin_open_at_death.push(self.io.stdin.is_some());
        self.deaths.push(exit);
    }
}

/// What the child wrote.
#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// The loop's side of a child's piped stdio: the pipes still open, the
/// input and how much of it has been written, and the output read so far.
#[derive(Default)]
struct Io {
    stdin: Option<Sender>,
    stdout: Option<Receiver>,
    stderr: Option<Receiver>,
    input: Vec<u8>,
    written: usize,
    out: Output,
}

impl Io {
    fn closed(&self) -> bool {
        self.stdin.is_none() && self.stdout.is_none() && self.stderr.is_none()
    }

    /// Handles readiness of one pipe: feeds stdin (and closes it once all
    /// the input is written), or reads stdout or stderr (and closes it at
    /// end-of-file). A closed pipe is deregistered from `registry` first.
    fn on_event(&mut self, token: Token, registry: &Registry) {
        match token {
            STDIN => {
                let Some(pipe) = &mut self.stdin else { return };
                if feed(pipe, &self.input, &mut self.written) {
                    registry.deregister(pipe).expect("deregister");
                    // Dropping the write end is the child's end-of-file.
                    self.stdin = None;
                }
            }
            STDOUT | STDERR => {
                let (slot, into) = if token == STDOUT {
                    (&mut self.stdout, &mut self.out.stdout)
                } else {
                    (&mut self.stderr, &mut self.out.stderr)
                };
                let Some(pipe) = slot else { return };
                if drain(pipe, into) {
                    registry.deregister(pipe).expect("deregister");
                    *slot = None;
                }
            }
            other => panic!("unexpected token {other:?}"),
        }
    }
}

/// Writes `input[*written..]` until it is all written (`true`) or the pipe
/// is full (`false`).
fn feed(pipe: &mut Sender, input: &[u8], written: &mut usize) -> bool {
    while *written < input.len() {
        match pipe.write(&input[*written..]) {
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("write to the child's stdin: {e}"),
        }
    }
    true
}

/// Reads until the pipe is empty (`false`) or at end-of-file (`true`).
fn drain(pipe: &mut Receiver, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read from the child: {e}"),
        }
    }
}

/// The application's loop: the child's pipes in the loop's `Poll`, next to
/// the reactor. Feeds `input` to stdin (then closes it), reads stdout and
/// stderr to end-of-file, and dispatches the reactor, until the pipes are
/// closed and one more death has been reported.
fn pump(
    lp: &mut Loop,
    reactor: &mut Reactor<App>,
    app: &mut App,
    spawned: &mut Spawned,
    input: &[u8],
) -> Output {
    let registry = lp.poll.registry().try_clone().expect("clone registry");
    app.io = Io {
        stdin: spawned.stdin.take(),
        stdout: spawned.stdout.take(),
        stderr: spawned.stderr.take(),
        input: input.to_vec(),
        ..Io::default()
    };
    if let Some(pipe) = &mut app.io.stdin {
        registry
            .register(pipe, STDIN, Interest::WRITABLE)
            .expect("register stdin");
    }
    for (pipe, token) in [(&mut app.io.stdout, STDOUT), (&mut app.io.stderr, STDERR)] {
        if let Some(pipe) = pipe {
            registry
                .register(pipe, token, Interest::READABLE)
                .expect("register output");
        }
    }
    let deaths = app.deaths.len();
    lp.run_with(
        reactor,
        app,
        LIMIT,
        |token, _, app| app.io.on_event(token, &registry),
        |_, app| app.io.closed() && app.deaths.len() > deaths,
    );
    std::mem::take(&mut app.io.out)
}

/// Asserts a failed spawn was `Error::Spawn` of `program` with `kind`.
#[track_caller]
fn assert_spawn_error(result: evchild::Result<Spawned>, program: &str, kind: io::ErrorKind) {
    match result {
        Err(Error::Spawn {
            program: reported,
            source,
        }) => {
            assert_eq!(reported, program);
            assert_eq!(source.kind(), kind, "wrong kind: {source}");
        }
        other => panic!("expected Error::Spawn({kind:?}), got {other:?}"),
    }
}

/// A path in the temporary directory that no other test run uses.
fn unique_temp_path(what: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    std::env::temp_dir().join(format!("evchild-{what}-{}-{nanos}", std::process::id()))
}

/// Spawns `sh -c script` with nothing piped and runs the loop until its
/// death, returning `(code, signal)`.
fn run_script(
    lp: &mut Loop,
    reactor: &mut Reactor<App>,
    script: &str,
) -> (Option<i32>, Option<i32>) {
    let mut app = App::default();
    let spawned = reactor
        .spawn(Command::new("sh").args(["-c", script]), record)
        .expect("spawn");
    assert!(spawned.stdin.is_none() && spawned.stdout.is_none() && spawned.stderr.is_none());
    assert!(reactor.contains(spawned.id));
    lp.run_until(reactor, &mut app, LIMIT, |app| !app.deaths.is_empty());
    assert_eq!(app.deaths[0].id, spawned.id);
    assert!(!reactor.contains(spawned.id));
    only_death(&app.deaths)
}

/// Lines written to `cat` come back in order, through pipes registered in
/// the reactor's own `Poll`; `cat` exits 0 once stdin is closed, and not
/// before. The input is larger than a pipe buffer, so writing and reading
/// must interleave.
#[test]
fn stdio_round_trip_through_cat() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let input: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    assert!(input.len() > 128 * 1024);

    let mut spawned = reactor
        .spawn(
            Command::new("cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
            record,
        )
        .expect("spawn cat");
    assert!(spawned.stderr.is_none(), "stderr was not piped");
    assert_cloexec_nonblock(spawned.stdin.as_ref().expect("stdin"));
    assert_cloexec_nonblock(spawned.stdout.as_ref().expect("stdout"));
    assert_eq!(reactor.len(), 1);

    let out = pump(&mut lp, &mut reactor, &mut app, &mut spawned, &input);
    assert!(out.stdout == input, "cat's output differs from its input");
    assert_eq!(only_death(&app.deaths), (Some(0), None));
    assert_eq!(app.stdin_open_at_death, [false], "cat died before EOF");
    assert!(reactor.is_empty());

    drop((spawned, lp, reactor));
    check.finish();
}

/// Several MiB of output are read in the loop while the child writes them
/// (a child blocked on a full pipe would never exit): every byte arrives
/// and the child exits 0.
#[test]
fn large_output_is_read_without_deadlock() {
    const SIZE: usize = 8 * 1024 * 1024;
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let started = Instant::now();
    let mut spawned = reactor
        .spawn(
            Command::new("head")
                .args(["-c", &SIZE.to_string(), "/dev/zero"])
                .stdout(Stdio::piped()),
            record,
        )
        .expect("spawn head");
    let out = pump(&mut lp, &mut reactor, &mut app, &mut spawned, b"");
    eprintln!("read {} bytes in {:?}", out.stdout.len(), started.elapsed());
    assert_eq!(out.stdout.len(), SIZE);
    assert!(out.stdout.iter().all(|&b| b == 0));
    assert_eq!(only_death(&app.deaths), (Some(0), None));

    drop((spawned, lp, reactor));
    check.finish();
}

/// stdout and stderr are separate pipes, and the exit code is the child's.
#[test]
fn stdout_stderr_and_exit_code() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let mut spawned = reactor
        .spawn(
            Command::new("sh")
                .args(["-c", "read line; echo \"out $line\"; echo err >&2; exit 3"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            record,
        )
        .expect("spawn sh");
    assert_cloexec_nonblock(spawned.stderr.as_ref().expect("stderr"));
    let out = pump(&mut lp, &mut reactor, &mut app, &mut spawned, b"hello\n");
    assert_eq!(out.stdout, b"out hello\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(only_death(&app.deaths), (Some(3), None));

    drop((spawned, lp, reactor));
    check.finish();
}

/// A child that exits at once, or kills itself, is reported once with its
/// true status; `Spawned` has no pipes when none were asked for.
#[test]
fn spawned_children_report_their_status() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<App>();
    let mut lp = Loop::new(&mut reactor);
    assert_eq!(run_script(&mut lp, &mut reactor, "exit 0"), (Some(0), None));
    assert_eq!(
        run_script(&mut lp, &mut reactor, "exit 42"),
        (Some(42), None)
    );
    assert_eq!(
        run_script(&mut lp, &mut reactor, "kill -9 $$"),
        (None, Some(9))
    );
    assert!(reactor.is_empty());
    drop((lp, reactor));
    util::assert_no_registration("after drop");
    check.finish();
}

/// Dropping a `Spawned` (and its pipes) neither kills nor reaps the child:
/// its death is still reported.
#[test]
fn dropping_spawned_keeps_the_child() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    let spawned = reactor
        .spawn(
            Command::new("sh")
                .args(["-c", "sleep 0.1; exit 6"])
                .stdout(Stdio::piped()),
            record,
        )
        .expect("spawn");
    let id = spawned.id;
    drop(spawned);
    assert!(reactor.contains(id));
    lp.run_until(&mut reactor, &mut app, LIMIT, |app| !app.deaths.is_empty());
    assert_eq!(only_death(&app.deaths), (Some(6), None));
    assert_eq!(app.deaths[0].id, id);

    drop((lp, reactor));
    check.finish();
}

/// A program that does not exist: `NotFound`, by absolute path and by
/// `PATH` search. Nothing is registered, the handler is not left
/// installed, no zombie is left, and the reactor still works.
#[test]
fn exec_failure_missing_program() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut app) = util::library_loop::<App>();
    for program in [
        "/nonexistent/evchild-no-such-program",
        "evchild-no-such-program-in-path",
    ] {
        let result = reactor.spawn(&mut Command::new(program), record);
        assert_spawn_error(result, program, io::ErrorKind::NotFound);
        assert_eq!(reactor.len(), 0);
        assert!(reactor.is_empty());
        util::assert_no_registration("failed spawn");
        util::assert_no_children();
    }
    // Still usable.
    let spawned = reactor
        .spawn(&mut Command::new("true"), record)
        .expect("spawn true");
    lp.run_until(&mut reactor, &mut app, LIMIT, |app| !app.deaths.is_empty());
    assert_eq!(only_death(&app.deaths), (Some(0), None));
    assert_eq!(app.deaths[0].id, spawned.id);

    drop((lp, spawned, reactor));
    check.finish();
}

/// A file without the execute bit, and a directory: `PermissionDenied`.
#[test]
fn exec_failure_not_executable() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let path = unique_temp_path("not-executable");
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .expect("create temp file");
        file.write_all(b"#!/bin/sh\nexit 0\n").expect("write");
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod 0644");

    let mut reactor = util::library::<App>();
    let program = path.to_str().expect("utf-8 temp path").to_owned();
    let result = reactor.spawn(&mut Command::new(&program), record);
    fs::remove_file(&path).expect("remove temp file");
    assert_spawn_error(result, &program, io::ErrorKind::PermissionDenied);
    assert_eq!(reactor.len(), 0);
    util::assert_no_registration("failed spawn");
    util::assert_no_children();

    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let result = reactor.spawn(&mut Command::new(dir), record);
    assert_spawn_error(result, dir, io::ErrorKind::PermissionDenied);
    assert_eq!(reactor.len(), 0);
    util::assert_no_registration("failed spawn");

    drop(reactor);
    check.finish();
}

/// A working directory that does not exist: `NotFound`, though the program
/// exists.
#[test]
fn exec_failure_missing_directory() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<App>();
    let result = reactor.spawn(Command::new("true").current_dir("/nonexistent"), record);
    assert_spawn_error(result, "true", io::ErrorKind::NotFound);
    assert_eq!(reactor.len(), 0);
    util::assert_no_registration("failed spawn");
    drop(reactor);
    check.finish();
}

/// A failed spawn while another child is live leaves the registration in
/// place for that child, which is still reported; for each backend (with
/// pidfds there is no registration, before or after).
#[test]
fn exec_failure_keeps_handler_for_live_children() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let pidfd = util::pidfd_or_skip("the Pidfd backend's part");
    for backend in util::BACKENDS {
        if backend == Backend::Pidfd && !pidfd {
            continue;
        }
        let (mut reactor, mut lp, mut app) = util::library_loop_with::<App>(backend);
        let mut live = reactor
            .spawn(Command::new("cat").stdin(Stdio::piped()), record)
            .expect("spawn cat");
        let result = reactor.spawn(&mut Command::new("/nonexistent/evchild"), record);
        assert_spawn_error(result, "/nonexistent/evchild", io::ErrorKind::NotFound);
        assert_eq!(reactor.len(), 1);
        assert!(reactor.contains(live.id));
        if backend == Backend::Pidfd {
            util::assert_no_registration(&format!("{backend:?}"));
        } else {
            assert_ne!(
                sigchld_handler(),
                libc::SIG_DFL,
                "{backend:?}: no handler for the live child"
            );
            util::assert_registrations(1, &format!("{backend:?}: released too early"));
        }

        drop(live.stdin.take()); // cat sees EOF and exits 0
        lp.run_until(&mut reactor, &mut app, LIMIT, |app| !app.deaths.is_empty());
        assert_eq!(only_death(&app.deaths), (Some(0), None));
        assert_eq!(app.deaths[0].id, live.id);
        util::assert_no_registration(&format!("{backend:?}: not released"));
        drop((lp, live, reactor));
    }
    check.finish();
}
