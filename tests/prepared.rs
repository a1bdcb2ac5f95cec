//! `Prepared` and `Reactor::spawn_prepared`: real children started through
//! the `clone(CLONE_VFORK)` path, with exact statuses, under each backend;
//! exec failures; stdio, environment, arguments, process groups, passed
//! descriptors; and what the child inherits (descriptors, signal mask and
//! dispositions).
//!
//! No test forks by hand: every child is started by the code under test.
//! The one process-wide change (a `SIGUSR1` handler and a blocked
//! `SIGUSR2` in the test's own thread) is made under the `Check` lock and
//! undone before it is released.

use evchild_testkit as util;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use evchild::{Backend, ChildId, Error, Prepared, Reactor, Redirect, Spawned};
use mio::unix::pipe::Receiver;
use util::{record, Check, Deaths, KillOnPanic, Loop};

const LIMIT: Duration = Duration::from_secs(30);

/// The backends to run through: `Pidfd` only where it works.
fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Peek, Backend::Scan];
    if util::pidfd_available() {
        all.insert(0, Backend::Pidfd);
    } else {
        util::skip!("the Pidfd part: no pidfds here");
    }
    all
}

fn sh(script: &str) -> Prepared {
    let mut p = Prepared::new("sh");
    p.args(["-c", script]);
    p
}

/// Runs the loop until `n` deaths are recorded.
fn run(reactor: &mut Reactor<Deaths>, lp: &mut Loop, deaths: &mut Deaths, n: usize) {
    lp.run_until(reactor, deaths, LIMIT, |d| d.total() >= n);
}

/// Reads a pipe end to its end of file (blocking).
fn read_all(pipe: Receiver) -> String {
    pipe.set_nonblocking(false).expect("blocking");
    let mut file = std::fs::File::from(OwnedFd::from(pipe));
    let mut out = String::new();
    file.read_to_string(&mut out).expect("read");
    out
}

/// Starts `prepared` with stdout piped, and returns what it wrote and its
/// status code (or the negated signal).
fn output_of(prepared: &mut Prepared) -> (String, i32) {
    let mut reactor = util::library::<Deaths>();
    let mut lp = Loop::new(&mut reactor);
    let mut deaths = Deaths::default();
    prepared.stdout(Redirect::Piped);
    let spawned = reactor
        .spawn_prepared(prepared, record)
        .expect("spawn_prepared");
    let out = read_all(spawned.stdout.expect("piped"));
    run(&mut reactor, &mut lp, &mut deaths, 1);
    let status = deaths.status(spawned.id);
    (
        out,
        status
            .code()
            .unwrap_or_else(|| -status.signal().unwrap_or(0)),
    )
}

use std::os::unix::process::ExitStatusExt;

#[test]
fn statuses_and_signals_through_each_backend() {
    let check = Check::start();
    let _kill = KillOnPanic;
    for backend in backends() {
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(backend);
        let mut exit = sh("exit 0");
        let mut codes = Vec::new();
        for code in [0, 1, 7, 255] {
            exit.set_arg(1, format!("exit {code}"));
            let spawned = reactor.spawn_prepared(&mut exit, record).expect("spawn");
            codes.push((spawned.id, code));
        }
        let mut killed = sh("kill -TERM $$");
        let term = reactor
            .spawn_prepared(&mut killed, record)
            .expect("spawn")
            .id;
        run(&mut reactor, &mut lp, &mut deaths, 5);
        for (id, code) in codes {
            deaths.assert_code(id, code);
        }
        deaths.assert_signal(term, libc::SIGTERM);
        assert_eq!(deaths.total(), 5, "{backend:?}");
        assert!(reactor.is_empty());
    }
    check.finish();
}

#[test]
fn hundreds_of_starts_one_report_each() {
    let check = Check::start();
    let _kill = KillOnPanic;
    for backend in backends() {
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(backend);
        let mut truth = Prepared::new("true");
        truth.stdin(Redirect::Null);
        let mut ids = BTreeSet::new();
        for round in 0..15 {
            for _ in 0..20 {
                ids.insert(
                    reactor
                        .spawn_prepared(&mut truth, record)
                        .expect("spawn")
                        .id,
                );
            }
            run(&mut reactor, &mut lp, &mut deaths, (round + 1) * 20);
        }
        assert_eq!(ids.len(), 300);
        assert_eq!(deaths.total(), 300, "{backend:?}: one report each");
        for id in ids {
            deaths.assert_code(id, 0);
        }
    }
    check.finish();
}

/// Asserts `result` is `Error::Spawn` of `kind`, and that nothing was
/// registered.
#[track_caller]
fn assert_spawn_error(
    result: evchild::Result<Spawned>,
    kind: ErrorKind,
    reactor: &Reactor<Deaths>,
) {
    match result {
        Err(Error::Spawn { source, .. }) => assert_eq!(source.kind(), kind, "{source}"),
        other => panic!("expected Error::Spawn({kind:?}), got {other:?}"),
    }
    assert!(reactor.is_empty(), "nothing registered");
    util::assert_no_children();
}

#[test]
fn exec_failures_are_typed_and_leave_nothing() {
    let check = Check::start();
    let _kill = KillOnPanic;
    for backend in backends() {
        let mut reactor = util::library_with::<Deaths>(backend);
        // Missing, through PATH and by path.
        let mut missing = Prepared::new("evchild-no-such-program");
        assert_spawn_error(
            reactor.spawn_prepared(&mut missing, record),
            ErrorKind::NotFound,
            &reactor,
        );
        let mut missing = Prepared::new("/nonexistent/evchild");
        assert_spawn_error(
            reactor.spawn_prepared(&mut missing, record),
            ErrorKind::NotFound,
            &reactor,
        );
        // Twice: the prebuilt form is reused after a failed exec.
        assert_spawn_error(
            reactor.spawn_prepared(&mut missing, record),
            ErrorKind::NotFound,
            &reactor,
        );

        // Not executable.
        let dir = std::env::temp_dir().join(format!("evchild-prepared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-executable");
        std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut denied = Prepared::new(&file);
        assert_spawn_error(
            reactor.spawn_prepared(&mut denied, record),
            ErrorKind::PermissionDenied,
            &reactor,
        );

        // A working directory that does not exist.
        let mut nowhere = Prepared::new("true");
        nowhere.current_dir("/nonexistent/evchild-dir");
        assert_spawn_error(
            reactor.spawn_prepared(&mut nowhere, record),
            ErrorKind::NotFound,
            &reactor,
        );

        // Builder misuse, reported at the start.
        let mut bad = Prepared::new("true");
        bad.set_arg(3, "x");
        assert_spawn_error(
            reactor.spawn_prepared(&mut bad, record),
            ErrorKind::InvalidInput,
            &reactor,
        );
        // Reported once: the misused call changed nothing, and the next
        // start proceeds.
        let id = reactor
            .spawn_prepared(&mut bad, record)
            .expect("the next start")
            .id;
        let mut deaths = Deaths::default();
        assert!(reactor
            .wait_for(&mut deaths, id, Some(Duration::from_secs(30)))
            .expect("wait_for"));
        deaths.assert_code(id, 0);
        let mut bad = Prepared::new("true");
        bad.arg("a\0b");
        assert_spawn_error(
            reactor.spawn_prepared(&mut bad, record),
            ErrorKind::InvalidInput,
            &reactor,
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    check.finish();
}

#[test]
fn piped_round_trip_sees_end_of_file() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (mut reactor, mut lp, mut deaths) = util::library_loop::<Deaths>();
    let mut cat = Prepared::new("cat");
    cat.stdin(Redirect::Piped).stdout(Redirect::Piped);
    for round in 0..3 {
        let spawned = reactor.spawn_prepared(&mut cat, record).expect("spawn");
        util::assert_cloexec_nonblock(spawned.stdin.as_ref().unwrap());
        util::assert_cloexec_nonblock(spawned.stdout.as_ref().unwrap());
        let mut stdin = spawned.stdin.unwrap();
        stdin.set_nonblocking(false).unwrap();
        stdin
            .write_all(format!("hello {round}\n").as_bytes())
            .unwrap();
        drop(stdin); // cat sees end of file only if no slot holds the pipe
        assert_eq!(
            read_all(spawned.stdout.unwrap()),
            format!("hello {round}\n")
        );
        run(&mut reactor, &mut lp, &mut deaths, round + 1);
        deaths.assert_code(spawned.id, 0);
    }
    drop(cat);
    drop(lp);
    drop(reactor);
    check.finish();
}

#[test]
fn null_and_inherit() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut p = sh("read x; echo \"[$x]\"; readlink /proc/self/fd/2");
    p.stdin(Redirect::Null);
    let (out, code) = output_of(&mut p);
    let stderr = std::fs::read_link("/proc/self/fd/2").unwrap();
    assert_eq!(out, format!("[]\n{}\n", stderr.display()));
    assert_eq!(code, 0, "{out}");
    drop(p);
    check.finish();
}

#[test]
fn environment_and_arguments() {
    let check = Check::start();
    let _kill = KillOnPanic;
    std::env::set_var("EVCHILD_PREPARED_PARENT", "parent");
    let mut p = sh("echo \"$EVCHILD_A|$EVCHILD_PREPARED_PARENT|$0\"");
    p.arg("one");
    p.env("EVCHILD_A", "a");
    assert_eq!(output_of(&mut p), ("a|parent|one\n".into(), 0));
    // Patched in place, after the first build.
    p.env("EVCHILD_A", "b").set_arg(2, "two");
    assert_eq!(output_of(&mut p), ("b|parent|two\n".into(), 0));
    p.env_remove("EVCHILD_PREPARED_PARENT");
    assert_eq!(output_of(&mut p), ("b||two\n".into(), 0));
    p.env_clear()
        .env("EVCHILD_A", "c")
        .env("PATH", "/usr/bin:/bin");
    let mut listing = Prepared::new("env");
    listing.env_clear().env("ONLY", "1");
    assert_eq!(output_of(&mut listing), ("ONLY=1\n".into(), 0));
    assert_eq!(output_of(&mut p), ("c||two\n".into(), 0));
    let args: Vec<_> = p.get_args().collect();
    assert_eq!(
        args,
        [
            "-c",
            "echo \"$EVCHILD_A|$EVCHILD_PREPARED_PARENT|$0\"",
            "two"
        ]
    );
    std::env::remove_var("EVCHILD_PREPARED_PARENT");
    drop((p, listing));
    check.finish();
}

#[test]
fn working_directory() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut p = Prepared::new("pwd");
    p.current_dir("/tmp");
    assert_eq!(output_of(&mut p), ("/tmp\n".into(), 0));
    drop(p);
    check.finish();
}

#[test]
fn process_group() {
    let check = Check::start();
    let _kill = KillOnPanic;
    for backend in backends() {
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(backend);
        let mut p = Prepared::new("sleep");
        p.arg("30").process_group(0);
        let id: ChildId = reactor.spawn_prepared(&mut p, record).expect("spawn").id;
        // The child set its group before the clone returned (vfork).
        let pgid =
            nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(id.pid().as_raw()))).unwrap();
        assert_eq!(pgid.as_raw(), id.pid().as_raw());
        reactor
            .kill_group(id, evchild::Signal::KILL)
            .expect("kill_group");
        run(&mut reactor, &mut lp, &mut deaths, 1);
        deaths.assert_signal(id, libc::SIGKILL);
    }
    check.finish();
}

/// The descriptors an `ls /proc/self/fd` child listed.
fn listed(out: &str) -> BTreeSet<RawFd> {
    out.split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect()
}

#[test]
fn passed_descriptor_and_nothing_else() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let (read, write) = util::pipe();
    // A descriptor that is NOT close-on-exec: std would pass it on.
    // SAFETY: dup(2) of an open descriptor; the result is owned below.
    let inheritable = unsafe { libc::dup(read.as_raw_fd()) };
    assert!(inheritable >= 0);
    // SAFETY: a new descriptor we own.
    let inheritable = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(inheritable) };
    let mut p = sh("echo hi >&7; exec ls /proc/self/fd");
    p.pass_fd(write, 7);
    let (out, code) = output_of(&mut p);
    assert_eq!(code, 0);
    let fds = listed(&out);
    assert!(fds.contains(&7), "{fds:?}");
    // 0, 1, 2, 7 and ls's own directory handle (the lowest free: 3).
    let expected: BTreeSet<RawFd> = [0, 1, 2, 3, 7].into();
    assert!(fds.is_subset(&expected), "the child got {fds:?}");
    assert!(!fds.contains(&inheritable.as_raw_fd()) || inheritable.as_raw_fd() == 3);
    drop(p); // closes the Prepared's copy of the write end
    let mut got = String::new();
    std::fs::File::from(read).read_to_string(&mut got).unwrap();
    assert_eq!(got, "hi\n");
    drop(inheritable);
    check.finish();
}

/// A descriptor given to `pass_fd` is close-on-exec in the parent at once
/// (before the `Prepared` is built), so no other spawn inherits it.
#[test]
fn a_passed_descriptor_leaks_into_no_other_spawn() {
    let check = Check::start();
    let (read, write) = util::pipe();
    // SAFETY: dup(2) of an open descriptor; the result is owned below.
    let inheritable = unsafe { libc::dup(write.as_raw_fd()) };
    assert!(inheritable >= 0);
    // SAFETY: a new descriptor we own.
    let inheritable = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(inheritable) };
    let number = inheritable.as_raw_fd();
    let mut p = Prepared::new("true");
    p.pass_fd(inheritable, 9);
    let out = std::process::Command::new("ls")
        .arg("/proc/self/fd")
        .output()
        .expect("ls");
    let fds = listed(&String::from_utf8_lossy(&out.stdout));
    assert!(
        !fds.contains(&number),
        "a std child inherited {number}: {fds:?}"
    );
    drop(p);
    drop((read, write));
    check.finish();
}

#[test]
fn built_early_the_child_sees_none_of_thousands_of_descriptors() {
    let check = Check::start();
    let _kill = KillOnPanic;
    if util::bench::raise_nofile() < 2_200 {
        util::skip!("RLIMIT_NOFILE below 2,200");
        return check.finish();
    }
    let mut p = Prepared::new("ls");
    p.arg("/proc/self/fd").stdout(Redirect::Piped);
    p.build().expect("build");
    let reserved = p.reserved_fds();
    let highest = *reserved.iter().max().unwrap();
    // 2,000 more descriptors, not close-on-exec.
    let null = std::fs::File::open("/dev/null").unwrap();
    let extra: Vec<OwnedFd> = (0..2_000)
        .map(|_| {
            // SAFETY: dup(2) of an open descriptor; owned at once.
            let fd = unsafe { libc::dup(null.as_raw_fd()) };
            assert!(fd >= 0);
            // SAFETY: a new descriptor we own.
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        })
        .collect();
    let (out, code) = output_of(&mut p);
    assert_eq!(code, 0);
    let fds = listed(&out);
    assert!(
        fds.iter().all(|&fd| fd <= 3),
        "the child saw {fds:?}; reserved {reserved:?}"
    );
    assert!(highest < 10, "reserved low: {reserved:?}");
    drop((extra, null, p));
    check.finish();
}

extern "C" fn on_usr1(_: libc::c_int) {}

/// The `SigBlk`, `SigIgn` and `SigCgt` masks of `/proc/self/status`.
fn masks(status: &str) -> [u64; 3] {
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).expect(name);
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    [field("SigBlk:"), field("SigIgn:"), field("SigCgt:")]
}

#[test]
fn signal_mask_and_dispositions() {
    let check = Check::start();
    let _kill = KillOnPanic;
    use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
    let bit = |sig: i32| 1u64 << (sig - 1);
    // SAFETY: an empty handler, async-signal-safe; restored below.
    let old_usr1 =
        unsafe { signal::signal(Signal::SIGUSR1, SigHandler::Handler(on_usr1)) }.unwrap();
    // SAFETY: SIG_IGN for SIGWINCH; restored below.
    let old_winch = unsafe { signal::signal(Signal::SIGWINCH, SigHandler::SigIgn) }.unwrap();
    let mut usr2 = SigSet::empty();
    usr2.add(Signal::SIGUSR2);
    let mut old_mask = SigSet::empty();
    signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&usr2), Some(&mut old_mask)).unwrap();

    let mut p = Prepared::new("cat");
    p.arg("/proc/self/status");
    let (status, code) = output_of(&mut p);
    let mut die = sh("kill -USR1 $$; sleep 5");
    let (_, died) = output_of(&mut die);

    signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None).unwrap();
    // SAFETY: restoring what was there.
    unsafe { signal::signal(Signal::SIGUSR1, old_usr1) }.unwrap();
    // SAFETY: as above.
    unsafe { signal::signal(Signal::SIGWINCH, old_winch) }.unwrap();

    assert_eq!(code, 0);
    let [blocked, ignored, caught] = masks(&status);
    assert_ne!(blocked & bit(libc::SIGUSR2), 0, "the mask is inherited");
    assert_ne!(ignored & bit(libc::SIGWINCH), 0, "ignored stays ignored");
    assert_eq!(ignored & bit(libc::SIGPIPE), 0, "SIGPIPE is default");
    assert_eq!(caught, 0, "no handler");
    assert_eq!(
        died,
        -libc::SIGUSR1,
        "a handled signal is default in the child"
    );
    drop((p, die));
    check.finish();
}

#[test]
fn spawn_output_prepared_collects_both_streams() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library::<Vec<evchild::Output>>();
    let mut lp = Loop::new(&mut reactor);
    let mut done = Vec::new();
    let mut line = sh("");
    for i in 0..20 {
        line.set_arg(1, format!("echo out{i}; echo err{i} >&2; exit {}", i % 3));
        reactor
            .spawn_output_prepared(&mut line, evchild::OutputOptions::new(), |d, _, o| {
                d.push(o)
            })
            .expect("spawn_output_prepared");
    }
    let mut fed = sh("tr a-z A-Z");
    reactor
        .spawn_output_prepared(
            &mut fed,
            evchild::OutputOptions::new().stdin(b"hello".to_vec()),
            |d, _, o| d.push(o),
        )
        .expect("spawn_output_prepared");
    lp.run_until(&mut reactor, &mut done, LIMIT, |d| d.len() == 21);
    for output in &done {
        let out = String::from_utf8_lossy(&output.stdout);
        if out == "HELLO" {
            continue;
        }
        let i: i32 = out.trim().trim_start_matches("out").parse().expect(&out);
        assert_eq!(output.stderr, format!("err{i}\n").into_bytes());
        assert_eq!(output.status().unwrap().code(), Some(i % 3));
        assert!(!output.cut);
    }
    assert!(done.iter().any(|o| o.stdout == b"HELLO"));
    drop((line, fed, lp, reactor));
    check.finish();
}
