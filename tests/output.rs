//! `Reactor::spawn_output`: a child's stdout and stderr read to the end
//! inside the reactor (no token of their own in the loop), its stdin fed
//! from a buffer, one callback with the exit and both streams; and
//! pipelines through `IntoStdio`.
//!
//! Every test drives a plain `util::Loop` (only the reactor is registered),
//! with this run's backend (`EVCHILD_TEST_BACKEND`), except the one that
//! goes through all of them.

use evchild_testkit as util;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use evchild::{Backend, Error, IntoStdio, Output, OutputOptions, Reactor};
use util::{record, Check, Deaths, KillOnPanic, Loop, BACKENDS};

const LIMIT: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

/// The context: every output delivered, in order.
type Outputs = Vec<Output>;

fn keep(outputs: &mut Outputs, _: &mut Reactor<Outputs>, output: Output) {
    outputs.push(output);
}

fn sh(script: &str) -> Command {
    let mut command = Command::new("/bin/sh");
    command.args(["-c", script]).stdin(Stdio::null());
    command
}

/// Bytes that are not all alike (a linear congruential generator).
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// FNV-1a, to compare big buffers in assertion messages.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs the loop until `n` outputs came, then a few more dispatches to
/// show no second callback comes.
fn run(lp: &mut Loop, reactor: &mut Reactor<Outputs>, outputs: &mut Outputs, n: usize) {
    lp.run_until(reactor, outputs, LIMIT, |o| o.len() >= n);
    for _ in 0..3 {
        reactor.dispatch(outputs).expect("dispatch");
    }
    assert_eq!(outputs.len(), n, "exactly one callback per child");
    assert!(reactor.is_empty());
}

#[track_caller]
fn code(output: &Output) -> Option<i32> {
    output.exit.status().expect("reaped, not lost").code()
}

#[test]
fn eight_mib_on_each_stream_at_once() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut outputs) = util::library_loop::<Outputs>();
    // tee writes each block to stdout, then to stderr: reading only one of
    // them would leave it blocked on the other.
    let script = format!("head -c {} /dev/urandom | tee /dev/stderr", 8 * MIB);
    reactor
        .spawn_output(&mut sh(&script), OutputOptions::new(), keep)
        .expect("spawn_output");
    run(&mut lp, &mut reactor, &mut outputs, 1);
    let out = &outputs[0];
    assert_eq!(code(out), Some(0));
    assert_eq!(out.stdout.len(), 8 * MIB);
    assert_eq!(out.stderr.len(), 8 * MIB);
    assert_eq!(checksum(&out.stdout), checksum(&out.stderr));
    assert!(out.stdout == out.stderr, "stdout and stderr differ");
    assert!(!out.stdout_truncated && !out.stderr_truncated);
    drop((outputs, lp, reactor));
    check.finish();
}

#[test]
fn a_cap_truncates_and_the_child_is_not_blocked() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut outputs) = util::library_loop::<Outputs>();
    // 4 MiB on stdout (far more than a pipe holds), a line on stderr.
    let script = format!("head -c {} /dev/zero; echo fine >&2", 4 * MIB);
    let options = OutputOptions::new().stdout_cap(1000);
    reactor
        .spawn_output(&mut sh(&script), options, keep)
        .expect("spawn_output");
    run(&mut lp, &mut reactor, &mut outputs, 1);
    let out = &outputs[0];
    assert_eq!(code(out), Some(0), "the child wrote it all and exited");
    assert_eq!(out.stdout, vec![0; 1000]);
    assert!(out.stdout_truncated);
    assert_eq!(out.stderr, b"fine\n");
    assert!(!out.stderr_truncated);
    drop((outputs, lp, reactor));
    check.finish();
}

#[test]
fn stdin_is_fed_and_echoed_intact() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut outputs) = util::library_loop::<Outputs>();
    let input = data(3 * MIB + 12345, 7);
    let options = OutputOptions::new().stdin(input.clone());
    reactor
        .spawn_output(&mut Command::new("cat"), options, keep)
        .expect("spawn_output");
    run(&mut lp, &mut reactor, &mut outputs, 1);
    let out = &outputs[0];
    assert_eq!(code(out), Some(0));
    assert_eq!(out.stdout.len(), input.len());
    assert_eq!(checksum(&out.stdout), checksum(&input));
    assert!(out.stdout == input, "cat's output differs from its input");
    assert!(out.stderr.is_empty());
    drop((outputs, lp, reactor));
    check.finish();
}

#[test]
fn a_child_that_closes_stdin_early_is_fine() {
    let check = Check::start();
    let _kill = KillOnPanic;
    // With SIGPIPE at its default (as in a C program), a write to the
    // closed pipe would kill the test: evchild must not let it through.
    // SAFETY: setting a disposition to SIG_DFL; no handler runs.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let (mut reactor, mut lp, mut outputs) = util::library_loop::<Outputs>();
    let input = data(4 * MIB, 3);
    for script in ["head -c 1", "exec <&-; sleep 0.2; echo closed"] {
        let options = OutputOptions::new().stdin(input.clone());
        reactor
            .spawn_output(&mut sh(script), options, keep)
            .expect("spawn_output");
    }
    run(&mut lp, &mut reactor, &mut outputs, 2);
    // SAFETY: restores the disposition the test harness had.
    unsafe { libc::signal(libc::SIGPIPE, previous) };
    outputs.sort_by_key(|o| o.stdout.len());
    assert_eq!(outputs[0].stdout, &input[..1]);
    assert_eq!(outputs[1].stdout, b"closed\n");
    for out in &outputs {
        assert_eq!(code(out), Some(0), "{out:?}");
        assert!(
            out.stderr.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop((outputs, lp, reactor));
    check.finish();
}

/// The context of the pipeline test: the stages' deaths and the last
/// stage's output.
#[derive(Default)]
struct Pipeline {
    deaths: Deaths,
    output: Option<Output>,
}

impl util::Record for Pipeline {
    fn record(&mut self, exit: evchild::Exit) {
        self.deaths.record(exit);
    }
}

#[test]
fn a_three_stage_pipeline_delivers_intact() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut ctx) = util::library_loop::<Pipeline>();
    // seq 1 200000 | tr 0-9 a-j | tr a-j A-J
    let mut a = Command::new("seq");
    a.args(["1", "200000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let a_spawned = reactor.spawn(&mut a, record).expect("spawn a");
    let a_out = a_spawned.stdout.expect("a's stdout").into_stdio().unwrap();
    let mut b = Command::new("tr");
    b.args(["0-9", "a-j"]).stdin(a_out).stdout(Stdio::piped());
    let b_spawned = reactor.spawn(&mut b, record).expect("spawn b");
    // The parent's copy of a's stdout lives in `b` until it is dropped.
    drop(b);
    let b_out = b_spawned.stdout.expect("b's stdout").into_stdio().unwrap();
    let mut c = Command::new("tr");
    c.args(["a-j", "A-J"]).stdin(b_out);
    let c_id = reactor
        .spawn_output(
            &mut c,
            OutputOptions::new().command_stdin(),
            |ctx: &mut Pipeline, _, out| {
                assert!(ctx.output.replace(out).is_none(), "a second callback");
            },
        )
        .expect("spawn_output c");
    drop(c);
    lp.run_until(&mut reactor, &mut ctx, LIMIT, |ctx| {
        ctx.output.is_some() && ctx.deaths.total() == 2
    });
    reactor.dispatch(&mut ctx).expect("dispatch");
    let expected: String = (1..=200_000)
        .map(|n: u32| format!("{n}\n"))
        .collect::<String>()
        .chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from(b'A' + d as u8),
            None => c,
        })
        .collect();
    let out = ctx.output.take().unwrap();
    assert_eq!(out.exit.id, c_id);
    assert_eq!(code(&out), Some(0));
    assert_eq!(out.stdout.len(), expected.len());
    assert!(
        out.stdout == expected.as_bytes(),
        "the pipeline's output differs"
    );
    ctx.deaths.assert_code(a_spawned.id, 0);
    ctx.deaths.assert_code(b_spawned.id, 0);
    assert_eq!(ctx.deaths.total(), 2);
    drop((ctx, lp, reactor));
    check.finish();
}

#[test]
fn into_stdio_clears_o_nonblock() {
    let check = Check::start();
    let (sender, receiver) = mio::unix::pipe::new().unwrap();
    let (fd_s, fd_r) = (
        std::os::fd::AsRawFd::as_raw_fd(&sender),
        std::os::fd::AsRawFd::as_raw_fd(&receiver),
    );
    let nonblocking = |fd| {
        // SAFETY: F_GETFL on a descriptor this test holds open.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        flags & libc::O_NONBLOCK != 0
    };
    assert!(nonblocking(fd_s) && nonblocking(fd_r));
    let (s, r) = (sender.into_stdio().unwrap(), receiver.into_stdio().unwrap());
    assert!(!nonblocking(fd_s) && !nonblocking(fd_r));
    drop((s, r));
    check.finish();
}

#[test]
fn a_missing_program_registers_nothing() {
    let check = Check::start();
    let (mut reactor, mut lp, mut outputs) = util::library_loop::<Outputs>();
    let mut command = Command::new("/nonexistent/evchild-test-program");
    let options = OutputOptions::new().stdin(b"input".to_vec());
    match reactor.spawn_output(&mut command, options, keep) {
        Err(Error::Spawn { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("expected Error::Spawn, got {other:?}"),
    }
    assert!(reactor.is_empty());
    // The reactor goes on: the next one works, and only it reports.
    reactor
        .spawn_output(&mut sh("echo next"), OutputOptions::new(), keep)
        .expect("spawn_output");
    run(&mut lp, &mut reactor, &mut outputs, 1);
    assert_eq!(outputs[0].stdout, b"next\n");
    drop((command, outputs, lp, reactor));
    check.finish();
}

#[test]
fn one_callback_with_the_right_status_under_every_backend() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let pidfd = util::pidfd_or_skip("the Pidfd backend's part");
    for backend in BACKENDS {
        if backend == Backend::Pidfd && !pidfd {
            continue;
        }
        let (mut reactor, mut lp, mut outputs) = util::library_loop_with::<Outputs>(backend);
        let scripts = [
            "echo out; echo err >&2; exit 0",
            "echo seven; exit 7",
            "kill -USR1 $$",
            "exec >&- 2>&-; exit 5", // closes both streams before it dies
        ];
        let mut ids = Vec::new();
        for script in scripts {
            let options = OutputOptions::new().stdin(b"unread".to_vec());
            let id = reactor
                .spawn_output(&mut sh(script), options, keep)
                .expect("spawn_output");
            ids.push(id);
        }
        run(&mut lp, &mut reactor, &mut outputs, scripts.len());
        let of = |i: usize| {
            let found: Vec<_> = outputs.iter().filter(|o| o.exit.id == ids[i]).collect();
            assert_eq!(found.len(), 1, "{backend:?}: one callback for child {i}");
            found[0]
        };
        assert_eq!(
            (code(of(0)), &of(0).stdout[..], &of(0).stderr[..]),
            (Some(0), &b"out\n"[..], &b"err\n"[..])
        );
        assert_eq!((code(of(1)), &of(1).stdout[..]), (Some(7), &b"seven\n"[..]));
        let status = of(2).exit.status().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGUSR1), "{backend:?}");
        assert_eq!(code(of(3)), Some(5), "{backend:?}");
        assert!(of(3).stdout.is_empty());
    }
    check.finish();
}

#[test]
fn terminate_stops_a_spawn_output_child() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut outputs) = util::library_loop::<Outputs>();
    let id = reactor
        .spawn_output(
            &mut sh("echo up; exec sleep 30"),
            OutputOptions::new(),
            keep,
        )
        .expect("spawn_output");
    // Let it reach the sleep (a SIGTERM before the echo would do as well).
    std::thread::sleep(Duration::from_millis(100));
    reactor.dispatch(&mut outputs).expect("dispatch");
    reactor
        .terminate(id, Duration::from_secs(10))
        .expect("terminate");
    run(&mut lp, &mut reactor, &mut outputs, 1);
    let out = &outputs[0];
    assert_eq!(out.exit.id, id);
    assert_eq!(out.exit.status().unwrap().signal(), Some(libc::SIGTERM));
    assert_eq!(out.stdout, b"up\n");
    assert!(matches!(
        reactor.kill(id, libc::SIGTERM),
        Err(Error::AlreadyReaped { .. })
    ));
    drop((outputs, lp, reactor));
    check.finish();
}

#[test]
fn close_output_gives_up_on_a_descendant_holding_the_pipes() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut outputs) = util::library_loop::<Outputs>();
    // The shell exits at once; its background sleep holds stdout and
    // stderr open. In a group of its own, so the test can end it.
    let mut command = sh("sleep 30 & echo started");
    command.process_group(0);
    // No drain time: the callback waits for the end of file.
    let options = OutputOptions::new().drain_after_exit(None);
    let id = reactor
        .spawn_output(&mut command, options, keep)
        .expect("spawn_output");
    // The shell dies; its output callback waits for the end of file.
    lp.run_with(
        &mut reactor,
        &mut outputs,
        LIMIT,
        |_, _, _| {},
        |reactor, _| !reactor.contains(id),
    );
    reactor.dispatch(&mut outputs).unwrap();
    assert!(
        outputs.is_empty(),
        "no callback while a descendant holds the pipes"
    );
    reactor.close_output(id).expect("close_output");
    run(&mut lp, &mut reactor, &mut outputs, 1);
    let out = &outputs[0];
    assert_eq!(code(out), Some(0));
    assert_eq!(out.stdout, b"started\n");
    assert!(out.stdout_truncated && out.stderr_truncated && out.cut);
    assert!(matches!(
        reactor.close_output(id),
        Err(Error::AlreadyReaped { .. })
    ));
    // End the sleep (no longer our child: the shell was its parent).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(id.pid().as_raw()),
        nix::sys::signal::Signal::SIGKILL,
    );
    drop((outputs, lp, reactor));
    check.finish();
}

#[test]
fn forget_drops_the_output_and_closes_the_pipes() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut outputs) = util::library_loop::<Outputs>();
    let id = reactor
        .spawn_output(&mut sh("sleep 0.5; echo late"), OutputOptions::new(), keep)
        .expect("spawn_output");
    let forgotten = reactor.forget(id).expect("forget");
    drop(forgotten.pidfd);
    // We reap it ourselves. Its pipes were closed: its `echo` got SIGPIPE.
    let status = util::reap_child(id.pid());
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status}");
    lp.run_with(&mut reactor, &mut outputs, LIMIT, |_, _, _| {}, |_, _| true);
    reactor.dispatch(&mut outputs).expect("dispatch");
    assert!(outputs.is_empty(), "no callback for a forgotten child");
    drop((outputs, lp, reactor));
    check.finish();
}

/// `wait_for` on a `spawn_output` child waits for `on_done`, not just the
/// death: here a grandchild keeps stdout open after the child exited.
#[test]
fn wait_for_waits_for_on_done() {
    let check = Check::start();
    let _kill = KillOnPanic;
    {
        let mut reactor = util::library::<Outputs>();
        let mut outputs = Outputs::new();
        let id = reactor
            .spawn_output(
                &mut sh("(sleep 0.3; echo late) & echo early"),
                // Wait for the grandchild's end of file, however long.
                OutputOptions::new().drain_after_exit(None),
                keep,
            )
            .expect("spawn_output");
        assert!(reactor
            .wait_for(&mut outputs, id, Some(LIMIT))
            .expect("wait_for"));
        assert_eq!(outputs.len(), 1, "wait_for returned before on_done");
        assert_eq!(code(&outputs[0]), Some(0));
        assert_eq!(outputs[0].stdout, b"early\nlate\n");
        // The grandchild was reparented (to init or a sub-reaper) once the
        // shell exited; it is not ours to reap.
    }
    check.finish();
}
