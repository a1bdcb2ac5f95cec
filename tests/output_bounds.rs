//! Issue 13: what a new user trips on with `spawn_output`, each as a
//! regression. Stdin is null by default (as with `Command::output`); a
//! descendant holding the pipes delays `on_done` by the drain time at most;
//! `OutputOptions::timeout` terminates the child (or its group); `Output`
//! says how much was read and whether it was cut, has `status()` and
//! `success()`, and holds no spare capacity; `try_wait` tells a child whose
//! output is still being read; `Command` by value; the per-child drop
//! policy.
//!
//! The time limits here are behavioural bounds, never speed checks: a
//! `sleep 30` that holds the pipes would delay `on_done` by 30 s, so a
//! callback within [`PROMPT`] (10 s) shows that something bounded the wait.

use evchild_testkit as util;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evchild::{ChildStatus, DropPolicy, Outcome, Output, OutputOptions, Reactor};
use util::{Check, KillOnPanic};

/// Far less than the 30 s a `sleep 30` holding the pipes would take.
const PROMPT: Duration = Duration::from_secs(10);

type Outputs = Vec<Output>;

fn keep(outputs: &mut Outputs, _: &mut Reactor<Outputs>, output: Output) {
    outputs.push(output);
}

/// `sh -c script`, with the command's stdin left at its default (the
/// tests of the null default rely on `spawn_output` setting it).
fn sh(script: &str) -> Command {
    let mut command = Command::new("/bin/sh");
    command.args(["-c", script]);
    command
}

/// The program: a shell that prints, then sleeps in a child.
const SLEEPER: &str = "echo going to sleep; sleep 30; echo woke";

/// Runs until `n` outputs came (within [`PROMPT`]), then a few more
/// dispatches to show no second callback comes.
fn run(reactor: &mut Reactor<Outputs>, outputs: &mut Outputs, n: usize) {
    let mut lp = util::Loop::new(reactor);
    lp.run_until(reactor, outputs, PROMPT, |o| o.len() >= n);
    for _ in 0..3 {
        reactor.dispatch(outputs).expect("dispatch");
    }
    assert_eq!(outputs.len(), n, "exactly one callback per child");
}

/// How many processes are in process group `pgid` (from `/proc`).
fn group_size(pgid: evchild::Pid) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid pgrp ...: comm may hold spaces.
            let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            rest.split_whitespace().nth(2) == Some(&pgid.as_raw().to_string())
        })
        .count()
}

/// Waits until the shell leading group `pgid` has started its `sleep`
/// (so its `echo` is done): the group has two members.
fn wait_for_the_sleep(pgid: evchild::Pid) {
    let deadline = Instant::now() + PROMPT;
    while group_size(pgid) < 2 {
        assert!(Instant::now() < deadline, "the shell never started sleep");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `SIGKILL` to a process group the test started (its members are no
/// longer our children once their shell died).
fn kill_group(pgid: evchild::Pid) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid.as_raw()),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Item 2: with no input given, the child's stdin is null, as with
/// `Command::output`, not the parent's. Here the parent's stdin is a pipe
/// with a line in it and a writer that never closes: a `cat` that
/// inherited it would print the line and then wait for ever.
#[test]
fn stdin_is_null_unless_input_is_given() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (read, write) = util::pipe();
    assert!(util::write_byte(
        std::os::fd::AsRawFd::as_raw_fd(&write),
        b'x'
    ));
    // SAFETY: dup and dup2 on descriptors this test holds; the original
    // stdin is put back below (tests of this binary run one at a time:
    // `Check`).
    let saved = unsafe { libc::dup(0) };
    assert!(saved >= 0);
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&read), 0) },
        0
    );
    let mut reactor = util::library::<Outputs>();
    let mut outputs = Outputs::new();
    reactor
        .spawn_output(&mut Command::new("cat"), OutputOptions::new(), keep)
        .expect("spawn_output");
    reactor
        .spawn_output(
            &mut Command::new("cat"),
            OutputOptions::new().stdin(b"given\n".to_vec()),
            keep,
        )
        .expect("spawn_output");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&mut reactor, &mut outputs, 2);
    }));
    // SAFETY: puts the saved stdin back and closes the copy.
    unsafe {
        libc::dup2(saved, 0);
        libc::close(saved);
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    outputs.sort_by_key(|o| o.stdout.len());
    assert_eq!(outputs[0].stdout, b"", "cat read the parent's stdin");
    assert_eq!(outputs[1].stdout, b"given\n");
    for out in &outputs {
        assert!(out.success(), "{out:?}");
        assert!(!out.cut && !out.timed_out, "{out:?}");
    }
    drop((outputs, reactor, read, write));
    check.finish();
}

/// Item 1, the scenario: `terminate` ends the shell, but its
/// `sleep 30` holds the pipes. `on_done` comes after the default drain
/// time, not after 30 s, with what was written and the cut flag.
#[test]
fn a_grandchild_holding_the_pipes_delays_on_done_by_the_drain_time_only() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Outputs>();
    let mut outputs = Outputs::new();
    let mut command = sh(SLEEPER);
    // A group of its own, so the test can end the sleep afterwards; only
    // the shell is terminated.
    command.process_group(0);
    let id = reactor
        .spawn_output(command, OutputOptions::new(), keep)
        .expect("spawn_output");
    wait_for_the_sleep(id.pid());
    reactor
        .terminate(id, Duration::from_secs(30))
        .expect("terminate");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&mut reactor, &mut outputs, 1);
    }));
    kill_group(id.pid());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    let out = &outputs[0];
    assert_eq!(out.exit.id, id);
    assert_eq!(out.status().unwrap().signal(), Some(libc::SIGTERM));
    assert!(!out.success());
    assert_eq!(out.stdout, b"going to sleep\n");
    assert_eq!((out.stdout_total, out.stderr_total), (15, 0));
    assert!(out.cut, "{out:?}");
    assert!(out.stdout_truncated && out.stderr_truncated, "{out:?}");
    assert!(!out.timed_out);
    drop((outputs, reactor));
    check.finish();
}

/// Item 1: what is in the pipes when the drain time runs out is read, not
/// lost: the child writes more than a pipe holds and exits, a background
/// sleep holds the pipes.
#[test]
fn the_drain_reads_what_is_in_the_pipes() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Outputs>();
    let mut outputs = Outputs::new();
    let mut command = sh("sleep 30 & head -c 300000 /dev/zero; echo done >&2");
    command.process_group(0);
    let options = OutputOptions::new().drain_after_exit(Some(Duration::ZERO));
    let id = reactor
        .spawn_output(command, options, keep)
        .expect("spawn_output");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&mut reactor, &mut outputs, 1);
    }));
    kill_group(id.pid());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    let out = &outputs[0];
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.len(), 300_000);
    assert_eq!(out.stdout_total, 300_000);
    assert_eq!(out.stderr, b"done\n");
    assert!(out.cut && out.stdout_truncated && out.stderr_truncated);
    drop((outputs, reactor));
    check.finish();
}

/// Item 3: the time-out terminates the whole group the child leads, so
/// the sleep that holds the pipes ends too, and nothing is cut.
#[test]
fn timeout_terminates_the_group_the_child_leads() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Outputs>();
    let mut outputs = Outputs::new();
    let mut command = sh(SLEEPER);
    command.process_group(0);
    // 2 s: time enough for the shell's echo (a behavioural margin, not a
    // measurement), far less than the sleep.
    let options = OutputOptions::new()
        .timeout(Duration::from_secs(2))
        .drain_after_exit(None);
    let id = reactor
        .spawn_output(command, options, keep)
        .expect("spawn_output");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&mut reactor, &mut outputs, 1);
    }));
    kill_group(id.pid());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    let out = &outputs[0];
    assert_eq!(out.status().unwrap().signal(), Some(libc::SIGTERM));
    assert_eq!(out.stdout, b"going to sleep\n");
    assert!(out.timed_out, "{out:?}");
    // The sleep died with the group: end of file, not a cut.
    assert!(!out.cut && !out.stdout_truncated, "{out:?}");
    drop((outputs, reactor));
    check.finish();
}

/// Item 3: a child that leads no group gets `terminate`; one that ignores
/// `SIGTERM` is killed after the configured grace.
#[test]
fn timeout_terminates_then_kills_after_the_grace() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Outputs>();
    let mut outputs = Outputs::new();
    let short = Duration::from_millis(100);
    let obeys = reactor
        .spawn_output(
            sh("exec sleep 30"),
            OutputOptions::new().timeout(short),
            keep,
        )
        .expect("spawn_output");
    // SIGTERM ignored from before the exec (an ignored signal stays
    // ignored across it), so the timeout's SIGTERM can never come first,
    // however slow the machine: only the SIGKILL after the grace ends it.
    let mut ignoring = Command::new("sleep");
    ignoring.arg("30");
    // SAFETY: `signal(2)` is async-signal-safe; the closure allocates
    // nothing.
    unsafe {
        ignoring.pre_exec(|| {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            Ok(())
        });
    }
    let ignores = reactor
        .spawn_output(
            ignoring,
            OutputOptions::new().timeout(short).kill_grace(short),
            keep,
        )
        .expect("spawn_output");
    run(&mut reactor, &mut outputs, 2);
    let of = |id| outputs.iter().find(|o| o.exit.id == id).unwrap();
    let signal = |id| of(id).status().unwrap().signal();
    assert_eq!(signal(obeys), Some(libc::SIGTERM));
    assert_eq!(signal(ignores), Some(libc::SIGKILL));
    assert!(of(obeys).timed_out && of(ignores).timed_out);
    assert!(reactor.timeout().is_none(), "no deadline left behind");
    drop((outputs, reactor));
    check.finish();
}

/// Item 4: the totals count what was read past the cap; `status()`,
/// `success()`; `Debug` of an outcome shows what the status means.
#[test]
fn totals_status_success_and_a_readable_debug() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Outputs>();
    let mut outputs = Outputs::new();
    let capped = reactor
        .spawn_output(
            sh("head -c 5000 /dev/zero; echo err >&2; exit 3"),
            OutputOptions::new().stdout_cap(1000),
            keep,
        )
        .expect("spawn_output");
    let fine = reactor
        .spawn_output(sh("echo fine"), OutputOptions::new(), keep)
        .expect("spawn_output");
    run(&mut reactor, &mut outputs, 2);
    let of = |id| outputs.iter().find(|o| o.exit.id == id).unwrap();
    let out = of(capped);
    assert_eq!(out.stdout.len(), 1000);
    assert_eq!((out.stdout_total, out.stderr_total), (5000, 4));
    assert!(out.stdout_truncated && !out.stderr_truncated && !out.cut);
    assert_eq!(out.status().and_then(|s| s.code()), Some(3));
    assert!(!out.success());
    assert_eq!(
        format!("{:?}", out.exit.outcome),
        "Reaped(exit status: 3)",
        "Debug of an outcome"
    );
    assert!(of(fine).success());
    assert_eq!(of(fine).stdout_total, 5);
    assert!(!format!("{:?}", of(fine)).contains("unix_wait_status"));
    drop((outputs, reactor));
    check.finish();
}

/// Item 8: an `Output`'s buffers hold what was read and no more.
#[test]
fn buffers_hold_what_was_read_and_no_more() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Outputs>();
    let mut outputs = Outputs::new();
    reactor
        .spawn_output(Command::new("true"), OutputOptions::new(), keep)
        .expect("spawn_output");
    reactor
        .spawn_output(sh("echo hello"), OutputOptions::new(), keep)
        .expect("spawn_output");
    run(&mut reactor, &mut outputs, 2);
    outputs.sort_by_key(|o| o.stdout.len());
    for out in &outputs {
        assert!(out.stdout.capacity() < 65536, "{}", out.stdout.capacity());
        assert_eq!(out.stdout.capacity(), out.stdout.len());
        assert_eq!(out.stderr.capacity(), 0);
    }
    assert_eq!(outputs[1].stdout, b"hello\n");
    drop((outputs, reactor));
    check.finish();
}

/// Item 9: `try_wait` tells a dead child whose output is still being read
/// (a background sleep holds its pipes) from a reported one.
#[test]
fn try_wait_tells_a_child_whose_output_is_being_read() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Outputs>();
    let mut outputs = Outputs::new();
    let mut command = sh("sleep 30 & exit 4");
    command.process_group(0);
    let options = OutputOptions::new().drain_after_exit(None);
    let id = reactor
        .spawn_output(command, options, keep)
        .expect("spawn_output");
    let mut lp = util::Loop::new(&mut reactor);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lp.run_with(
            &mut reactor,
            &mut outputs,
            PROMPT,
            |_, _, _| {},
            |reactor, _| !reactor.contains(id),
        );
        let status = reactor.try_wait(id).expect("try_wait");
        match status {
            ChildStatus::ReadingOutput(Outcome::Reaped(s)) => assert_eq!(s.code(), Some(4)),
            other => panic!("expected ReadingOutput, got {other:?}"),
        }
        assert!(outputs.is_empty());
        reactor.close_output(id).expect("close_output");
        run(&mut reactor, &mut outputs, 1);
        assert_eq!(reactor.try_wait(id).unwrap(), ChildStatus::Reported);
    }));
    kill_group(id.pid());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(outputs[0].cut);
    drop((outputs, lp, reactor));
    check.finish();
}

/// Item 4 of the issue: commands built with std's builder chains, kept in
/// a list and given by value, to both `spawn` and `spawn_output`.
#[test]
fn commands_by_value() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Outputs>();
    let mut outputs = Outputs::new();
    let mut commands = Vec::new();
    for word in ["one", "two"] {
        let mut command = Command::new("echo");
        command.arg(word);
        commands.push(command);
    }
    for command in commands {
        reactor
            .spawn_output(command, OutputOptions::new(), keep)
            .expect("spawn_output");
    }
    let mut quiet = Command::new("true");
    quiet.stdout(Stdio::null());
    let spawned = reactor
        .spawn(quiet, |outputs: &mut Outputs, _, _| {
            outputs.retain(|_| true);
        })
        .expect("spawn");
    run(&mut reactor, &mut outputs, 2);
    let mut lp = util::Loop::new(&mut reactor);
    lp.run_with(
        &mut reactor,
        &mut outputs,
        PROMPT,
        |_, _, _| {},
        |reactor, _| !reactor.contains(spawned.id),
    );
    let mut words: Vec<_> = outputs.iter().map(|o| o.stdout.clone()).collect();
    words.sort();
    assert_eq!(words, [b"one\n".to_vec(), b"two\n".to_vec()]);
    drop((outputs, lp, reactor));
    check.finish();
}

/// Item 7: a child's own drop policy wins over the reactor's, both ways.
#[test]
fn a_per_child_drop_policy_overrides_the_reactors() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<()>();
    let sleep = || {
        let mut command = Command::new("sleep");
        command.arg("30");
        command
    };
    let killed = reactor.spawn(sleep(), |_, _, _| {}).unwrap().id;
    let left = reactor.spawn(sleep(), |_, _, _| {}).unwrap().id;
    let reap = DropPolicy::KillAndReap(PROMPT);
    reactor.set_drop_policy_for(killed, reap).unwrap();
    assert_eq!(reactor.drop_policy_for(killed).unwrap(), reap);
    assert_eq!(reactor.drop_policy_for(left).unwrap(), DropPolicy::Leave);
    drop(reactor);
    // `killed` was killed and reaped; `left` runs on.
    assert!(!util::is_our_child(killed.pid()), "killed was not reaped");
    assert!(!util::has_exited(left.pid()), "left did not keep running");
    kill_and_see_the_orphan_reaped(left);

    // The other way round: a reactor that kills, a child that is left.
    let mut reactor = util::library::<()>();
    reactor.set_drop_policy(reap);
    let left = reactor.spawn(sleep(), |_, _, _| {}).unwrap().id;
    let killed = reactor.spawn(sleep(), |_, _, _| {}).unwrap().id;
    reactor
        .set_drop_policy_for(left, DropPolicy::Leave)
        .unwrap();
    drop(reactor);
    assert!(!util::is_our_child(killed.pid()));
    assert!(!util::has_exited(left.pid()));
    kill_and_see_the_orphan_reaped(left);
    check.finish();
}

/// Kills `left`, a child a dropped reactor left running, and asserts that a
/// later dispatch of another reactor reaps the orphan (and closes its
/// pidfd) within [`PROMPT`].
#[track_caller]
fn kill_and_see_the_orphan_reaped(left: evchild::ChildId) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(left.pid().as_raw()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut other = util::library::<()>();
    let deadline = Instant::now() + PROMPT;
    while util::is_our_child(left.pid()) {
        assert!(Instant::now() < deadline, "orphan never reaped");
        other.dispatch(&mut ()).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What the streaming test keeps: every chunk, and the final output.
#[derive(Default)]
struct Streamed {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    chunks: usize,
    output: Option<Output>,
}

/// Item 5 (optional): `on_output` hands each chunk to the loop as it is
/// read, past the cap too, and the final `Output` still comes.
#[test]
fn on_output_streams_every_chunk_and_on_done_still_comes() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Streamed>();
    let mut ctx = Streamed::default();
    let script = "echo first; echo oops >&2; head -c 300000 /dev/zero; echo last";
    let id = reactor
        .spawn_output(
            sh(script),
            OutputOptions::new().stdout_cap(0),
            |ctx: &mut Streamed, _, output| ctx.output = Some(output),
        )
        .expect("spawn_output");
    reactor
        .on_output(id, move |ctx: &mut Streamed, from, stream, bytes| {
            assert_eq!(from, id);
            ctx.chunks += 1;
            match stream {
                evchild::Stream::Stdout => ctx.stdout.extend_from_slice(bytes),
                evchild::Stream::Stderr => ctx.stderr.extend_from_slice(bytes),
                _ => unreachable!(),
            }
        })
        .expect("on_output");
    let mut lp = util::Loop::new(&mut reactor);
    lp.run_until(&mut reactor, &mut ctx, PROMPT, |ctx| ctx.output.is_some());
    let mut expected = b"first\n".to_vec();
    expected.extend_from_slice(&[0; 300_000]);
    expected.extend_from_slice(b"last\n");
    assert!(
        ctx.stdout == expected,
        "the chunks differ from what was written"
    );
    assert_eq!(ctx.stderr, b"oops\n");
    assert!(ctx.chunks >= 3, "{} chunks", ctx.chunks);
    let out = ctx.output.take().unwrap();
    assert!(out.success());
    assert!(out.stdout.is_empty() && out.stdout_truncated);
    assert_eq!(out.stdout_total, expected.len() as u64);
    assert_eq!(out.stderr, b"oops\n");
    assert!(matches!(
        reactor.on_output(id, |_, _, _, _| {}),
        Err(evchild::Error::AlreadyReaped { .. })
    ));
    drop((ctx, lp, reactor));
    check.finish();
}

/// A panicking `on_chunk` propagates out of `dispatch`, as a death
/// callback's panic does, and leaves the reactor consistent: the chunk is
/// kept, and the next dispatches go on to `on_done`.
#[test]
fn a_panicking_on_chunk_leaves_the_reactor_consistent() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Streamed>();
    let mut ctx = Streamed::default();
    let id = reactor
        .spawn_output(
            sh("echo one; sleep 0.2; echo two"),
            OutputOptions::new(),
            |ctx: &mut Streamed, _, output| ctx.output = Some(output),
        )
        .expect("spawn_output");
    reactor
        .on_output(id, |ctx: &mut Streamed, _, _, bytes| {
            ctx.chunks += 1;
            ctx.stdout.extend_from_slice(bytes);
            if ctx.chunks == 1 {
                panic!("on_chunk panics once");
            }
        })
        .expect("on_output");
    let mut lp = util::Loop::new(&mut reactor);
    let mut panics = 0;
    let deadline = Instant::now() + PROMPT;
    while ctx.output.is_none() {
        assert!(Instant::now() < deadline, "on_done never came");
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lp.run_until(&mut reactor, &mut ctx, PROMPT, |ctx| ctx.output.is_some());
        }));
        panics += usize::from(step.is_err());
    }
    assert_eq!(panics, 1);
    let out = ctx.output.take().unwrap();
    assert_eq!(out.stdout, b"one\ntwo\n");
    assert_eq!(ctx.stdout, b"one\ntwo\n");
    assert!(out.success() && !out.cut);
    drop((ctx, lp, reactor));
    check.finish();
}

/// A child forked without exec (`fork_with`, as `supervise::Start::fork`
/// does) does not hold a `spawn_output` child's stdin open: `cat` sees end
/// of file and `on_done` comes, while the forked child still lives.
#[test]
fn a_forked_child_does_not_hold_a_spawn_output_stdin_open() {
    let check = Check::start();
    let mut reactor = util::library::<Vec<Output>>();
    let mut outs = Vec::new();
    let id = reactor
        .spawn_output(
            Command::new("cat"),
            OutputOptions::new().stdin(b"hello\n".to_vec()),
            |outs: &mut Vec<Output>, _, out| outs.push(out),
        )
        .expect("spawn_output");
    // SAFETY: the child only calls `sleep(3)` (30 s) and returns, then `_exit`s:
    // async-signal-safe.
    let forked = unsafe {
        reactor.fork_with(
            || {
                libc::sleep(30);
                0
            },
            |_, _, _| {},
        )
    }
    .expect("fork_with");
    let done = reactor
        .wait_for(&mut outs, id, Some(Duration::from_secs(10)))
        .expect("wait_for");
    reactor
        .kill(forked, libc::SIGKILL)
        .expect("kill the forked child");
    assert!(reactor
        .wait_for(&mut outs, forked, Some(Duration::from_secs(10)))
        .expect("wait_for"));
    assert!(done, "the forked child held cat's stdin open");
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].stdout, b"hello\n");
    assert!(outs[0].success());
    drop(reactor);
    check.finish();
}
