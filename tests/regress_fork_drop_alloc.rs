//! Issue 7, case 6: dropping a reactor in a forked child allocates and frees
//! nothing (freeing is not async-signal-safe in the child of a threaded
//! parent). A counting global allocator counts the allocations and frees made
//! while a forked child drops its copy of a reactor that had live children,
//! a pending (undelivered) report, a `terminate` deadline, a stop-report
//! child, and (with `Pidfd`) pidfds. Expected: 0 and 0.
//!
//! The reactor is built in a helper process (the test in a process of its
//! own, role `helper`: see `evchild_testkit::own_process`), whose forked
//! child drops it and reports the counts through its exit code: allocations
//! (capped at 15) in the low four bits, frees (capped at 15) in the high.
//! This file installs its own global allocator, so it holds nothing else.

use evchild_testkit as util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use evchild::{Backend, DropPolicy, Pid};
use util::{Check, Deaths, OwnProcess, BACKENDS};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters are
// atomics, touched only when counting is on.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NAME: &str = "dropping_a_reactor_in_a_forked_child_allocates_and_frees_nothing";
const HELPER: &str = "helper";
const BACKEND_ENV: &str = "EVCHILD_REGRESS_BACKEND";
/// The helper's own failures, above any count code.
const SETUP_FAILED: i32 = 255;

#[test]
fn dropping_a_reactor_in_a_forked_child_allocates_and_frees_nothing() {
    if util::own_process_role(NAME).as_deref() == Some(HELPER) {
        return helper();
    }
    let check = Check::start();
    let pidfd = util::pidfd_or_skip("drop in a forked child");
    let mut problems = Vec::new();
    for backend in BACKENDS {
        if backend == Backend::Pidfd && !pidfd {
            continue;
        }
        let ran = OwnProcess::new(NAME)
            .role(HELPER)
            .env(BACKEND_ENV, format!("{backend:?}"))
            .limit(Duration::from_secs(60))
            .run();
        let (status, output) = (ran.status, ran.output);
        match status.code() {
            Some(0) => {}
            Some(code) if code != SETUP_FAILED => problems.push(format!(
                "{backend:?}: dropping the reactor in the forked child made {} allocation(s) \
                 and {} free(s) (15 means 15 or more); expected 0 and 0. Helper output:\n{output}",
                code & 15,
                code >> 4
            )),
            _ => problems.push(format!(
                "{backend:?}: the helper failed ({status}):\n{output}"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    check.finish();
}

/// The helper process: builds the reactor, forks, and exits with the
/// counts of the forked child's drop.
fn helper() {
    let backend = match std::env::var(BACKEND_ENV).as_deref() {
        Ok("Pidfd") => Backend::Pidfd,
        Ok("Peek") => Backend::Peek,
        Ok("Scan") => Backend::Scan,
        other => {
            println!("helper: bad {BACKEND_ENV}: {other:?}");
            std::process::exit(SETUP_FAILED)
        }
    };
    let mut reactor = util::library_with::<Deaths>(backend);
    let mut deaths = Deaths::default();
    let spawn = |reactor: &mut evchild::Reactor<Deaths>, script: &str, panics: bool| {
        reactor
            .spawn(&mut util::quiet_sh(script), move |d: &mut Deaths, r, e| {
                if panics {
                    panic!("on purpose");
                }
                util::record(d, r, e)
            })
            .expect("spawn")
            .id
    };
    let live: Vec<_> = (0..3)
        .map(|_| spawn(&mut reactor, "exec sleep 30", false))
        .collect();
    // Two children whose callbacks panic: the first panics out of dispatch,
    // the second's report stays pending.
    let quick: Vec<_> = (0..2)
        .map(|_| spawn(&mut reactor, "exit 0", true))
        .collect();
    for id in &quick {
        util::wait_zombie(Pid::from_raw(id.pid().as_raw()));
    }
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let mut panicked = false;
    for _ in 0..3 {
        if panic::catch_unwind(AssertUnwindSafe(|| reactor.dispatch(&mut deaths))).is_err() {
            panicked = true;
            break;
        }
    }
    panic::set_hook(hook);
    let debug = format!("{reactor:?}");
    println!("helper: after the panicking dispatch: {debug}");
    if !panicked || !debug.contains("pending: 1") {
        println!("helper: expected one pending report");
        std::process::exit(SETUP_FAILED);
    }
    reactor
        .terminate(live[0], Duration::from_secs(60))
        .expect("terminate");
    reactor
        .on_state_change(live[1], |_, _, _, _| {})
        .expect("on_state_change");

    // SAFETY: the helper runs one test thread (libtest's main thread only
    // waits for it); the forked child counts, drops, and `_exit`s.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            COUNTING.store(true, Ordering::SeqCst);
            drop(reactor);
            COUNTING.store(false, Ordering::SeqCst);
            let allocs = ALLOCS.load(Ordering::SeqCst);
            let frees = FREES.load(Ordering::SeqCst);
            println!("forked child: drop made {allocs} allocation(s), {frees} free(s)");
            let code = allocs.min(15) | (frees.min(15) << 4);
            // SAFETY: ends the forked child without the harness.
            unsafe { libc::_exit(code as i32) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let code = match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
                other => {
                    println!("helper: forked child: {other:?}");
                    SETUP_FAILED
                }
            };
            reactor.set_drop_policy(DropPolicy::KillAndReap(Duration::from_secs(5)));
            drop(reactor);
            std::process::exit(code)
        }
        Err(e) => {
            println!("helper: fork: {e}");
            std::process::exit(SETUP_FAILED)
        }
    }
}
