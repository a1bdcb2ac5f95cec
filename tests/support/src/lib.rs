//! The helpers of evchild's integration tests and benchmarks: a dev-only
//! crate (`publish = false`), compiled once and linked into every test
//! binary, so that each binary uses what it needs and nothing is dead code.
//!
//! Everything is re-exported at the crate root, so a test says
//! `use evchild_testkit as util;` and calls `util::library_loop()`,
//! `util::Check::start()`, and so on. The modules, by concern:
//!
//! | module | what |
//! |---|---|
//! | [`check`](mod@check) | [`Check`]: one test at a time per binary, and no child or descriptor left afterwards |
//! | [`own_process`](mod@own_process) | [`isolated`] and [`OwnProcess`]: a test that must own the whole process |
//! | [`skip`](mod@skip) | [`skip!`]: a test that cannot run here says so, and is counted |
//! | [`pid_reuse`](mod@pid_reuse) | forcing the kernel to give a freed pid to a new process (root, or a user and pid namespace) |
//! | [`report`](mod@report) | exit statuses and the death reports a test collects ([`Deaths`]) |
//! | [`fork`](mod@fork) | children forked without exec through a reactor ([`Gate`], [`fork_exit`]) |
//! | [`process`](mod@process) | children started with std ([`shell`]), and waits that reap or only look |
//! | [`fd`](mod@fd) | pipes and single bytes, async-signal-safe |
//! | [`disposition`](mod@disposition) | the `SIGCHLD` disposition, and evchild's handler counters |
//! | [`event_loop`](mod@event_loop) | the mio [`Loop`] a test drives its reactor with |
//! | [`backend`](mod@backend) | the backend of this run of the suite (`EVCHILD_TEST_BACKEND`), and the reactors tests start with |
//! | [`ptrace`](mod@ptrace) | a child in a ptrace stop |
//! | [`bench`](mod@bench) | what the benchmarks share: CPU time from `getrusage`, the machine |
//!
//! # Isolation: a lock, or a process of its own
//!
//! `SIGCHLD`, the set of children, the descriptor table, pids and the
//! subreaper attribute belong to the whole process, and `cargo test` runs a
//! binary's tests on several threads. There are two mechanisms, and only two:
//!
//! 1. **The lock, for tests that share a binary.** Every test takes
//!    [`Check::start`] first and calls [`Check::finish`] last: the lock
//!    serialises the tests of one binary, so "no child is left" and "no
//!    descriptor leaked" are checks of this test alone. [`KillOnPanic`] (or
//!    [`ReapOnPanic`]) right after it keeps one failing test from failing
//!    the next ones.
//! 2. **A process of its own, for tests whose subject is process-wide and
//!    one-way** (a handler evchild installs stays installed; a foreign
//!    handler is chained only if evchild never installed one in that
//!    process; forced pid reuse; a forked child that may allocate, which
//!    needs a single-threaded parent). The test re-executes its own binary
//!    for itself alone (`--exact NAME --test-threads=1`, with
//!    [`OWN_PROCESS_VAR`]` = NAME`): [`isolated`] runs the whole test there
//!    and asserts it passed; [`OwnProcess`] is the general form, with a
//!    role (a helper the test talks to through its exit code and output),
//!    environment, a time limit, and optionally a new user and pid
//!    namespace ([`force_pids_or_skip`]).
//!
//! A test file of its own is not an isolation mechanism: a test gets one
//! only when the binary itself differs (a counting global allocator), or to
//! group tests by subject.
//!
//! # Skipped tests
//!
//! A test that cannot run here (no pidfd, pids cannot be forced) calls
//! [`skip!`]`(reason)` and returns: it prints `evchild-test SKIPPED
//! <binary>::<test>: <reason>` to the real stderr (not captured by the test
//! harness, so `cargo test` shows it), and appends the same line to the file
//! named by [`SKIP_LOG_VAR`] if set; `.ci/run` sets it and lists the skipped
//! tests, with their count, in its summary. A skip is never silent, and a
//! test that can only half run skips the half it cannot, by name.
//!
//! # Forked test children
//!
//! The test binary has other threads, so a child forked by a helper here
//! only calls async-signal-safe functions (`_exit`, `read`, `close`) until it
//! dies; each helper that forks says which. A test that needs a forked child
//! to run ordinary code runs in a process of its own ([`OwnProcess`]), whose
//! only other thread is libtest's main thread, idle in a channel receive.

pub mod backend;
pub mod bench;
pub mod check;
pub mod disposition;
pub mod event_loop;
pub mod fd;
pub mod fork;
pub mod own_process;
pub mod pid_reuse;
pub mod process;
pub mod ptrace;
pub mod report;
pub mod skip;

pub use backend::*;
pub use check::*;
pub use disposition::*;
pub use event_loop::*;
pub use fd::*;
pub use fork::*;
pub use own_process::*;
pub use pid_reuse::*;
pub use process::*;
pub use report::*;
pub use skip::*;
