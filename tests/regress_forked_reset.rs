//! Issue 7, case 5: nothing is reset after fork. A process forked (without
//! exec) from one with a `LibraryAlways` reactor, once it has dropped its
//! copy of that reactor, must be able to create its own `LibraryAlways`
//! reactor and use it (today: `ReapAllTaken`, the parent's token is still
//! "taken" in the child's copy of the process-wide flag).
//!
//! The test binary is multithreaded, and a forked child of it may only call
//! async-signal-safe functions; so the work runs in a helper process (the
//! test in a process of its own, role `helper`: see
//! `evchild_testkit::own_process`), whose forked child may create reactors
//! and spawn. (libtest
//! still keeps its main thread, idle in a channel receive while the test
//! thread runs: it holds no lock the child needs, and glibc's `malloc` is
//! fork-safe.)

use evchild_testkit as util;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evchild::{Error, Hooks, Outcome, Reactor, SigchldOwner};
use util::{Check, Deaths, OwnProcess};

const NAME: &str = "forked_child_may_create_a_library_always_reactor";
const HELPER: &str = "helper";

// The forked child's exit codes.
const OK: i32 = 0;
const REAP_ALL_TAKEN: i32 = 1;
const NEW_FAILED: i32 = 2;
const SPAWN_FAILED: i32 = 3;
const WRONG_REPORT: i32 = 4;
const FORK_FAILED: i32 = 5;

fn describe(code: Option<i32>) -> &'static str {
    match code {
        Some(OK) => "ok",
        Some(REAP_ALL_TAKEN) => "Reactor::new(LibraryAlways) in the forked child: ReapAllTaken",
        Some(NEW_FAILED) => "Reactor::new(LibraryAlways) in the forked child failed otherwise",
        Some(SPAWN_FAILED) => "the forked child's new reactor could not spawn",
        Some(WRONG_REPORT) => "the forked child's new reactor reported its child wrongly",
        Some(FORK_FAILED) => "the helper could not fork",
        _ => "the helper failed (see its output)",
    }
}

#[test]
fn forked_child_may_create_a_library_always_reactor() {
    if util::own_process_role(NAME).as_deref() == Some(HELPER) {
        return helper();
    }
    let check = Check::start();
    let ran = OwnProcess::new(NAME)
        .role(HELPER)
        .limit(Duration::from_secs(60))
        .run();
    let (status, output) = (ran.status, ran.output);
    assert_eq!(
        status.code(),
        Some(OK),
        "{} ({status}); helper output:\n{output}",
        describe(status.code())
    );
    check.finish();
}

/// The helper process: single test thread, so its forked child may do
/// anything.
fn helper() {
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    println!("helper {}: {threads} thread(s)", std::process::id());
    let reactor = Reactor::<Deaths>::new(Hooks::new(SigchldOwner::LibraryAlways))
        .expect("Reactor::new(LibraryAlways) in the helper");
    // SAFETY: the helper runs one test thread; its child may use the heap
    // (glibc's malloc is fork-safe) and evchild (nobody else was inside).
    match unsafe { nix::unistd::fork() }.map_err(|_| FORK_FAILED) {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(reactor);
            let code = in_forked_child();
            // SAFETY: _exit ends the forked child without running the
            // helper's test harness.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let code = match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
                other => {
                    println!("helper: forked child: {other:?}");
                    99
                }
            };
            drop(reactor);
            std::process::exit(code)
        }
        Err(code) => std::process::exit(code),
    }
}

fn in_forked_child() -> i32 {
    let mut reactor = match Reactor::<Deaths>::new(Hooks::new(SigchldOwner::LibraryAlways)) {
        Ok(reactor) => reactor,
        Err(e @ Error::ReapAllTaken) => {
            println!("forked child: Reactor::new(LibraryAlways): {e}");
            return REAP_ALL_TAKEN;
        }
        Err(e) => {
            println!("forked child: Reactor::new(LibraryAlways): {e:?}");
            return NEW_FAILED;
        }
    };
    let id = match reactor.spawn(
        Command::new("/bin/sh")
            .args(["-c", "exit 4"])
            .stdin(Stdio::null()),
        util::record,
    ) {
        Ok(spawned) => spawned.id,
        Err(e) => {
            println!("forked child: spawn: {e:?}");
            return SPAWN_FAILED;
        }
    };
    let mut deaths = Deaths::default();
    let end = Instant::now() + Duration::from_secs(5);
    while deaths.total() == 0 && Instant::now() < end {
        util::readable_within(
            std::os::fd::AsRawFd::as_raw_fd(&reactor),
            Duration::from_millis(20),
        );
        if let Err(e) = reactor.dispatch(&mut deaths) {
            println!("forked child: dispatch: {e:?}");
            return WRONG_REPORT;
        }
    }
    match deaths.seen.get(&id).map(Vec::as_slice) {
        Some([Outcome::Reaped(status)]) if *status == util::exited(4) => OK,
        other => {
            println!("forked child: its child's reports: {other:?}");
            WRONG_REPORT
        }
    }
}
