//! Child processes for a `mio` event loop: exactly one death callback per
//! child, in your own loop, with an explicit agreement about who owns
//! `SIGCHLD`.
//!
//! evchild is the Rust heir of the child-process facility of Xen's libxl
//! (`libxl__ev_child_fork`, `libxl_childproc_setmode`,
//! `libxl_childproc_reaped`). A [`Reactor`] is an event source that is both a
//! version of `fork()` and a source of one death callback per child. It needs
//! no runtime and no helper thread: the loop sees one descriptor, and all
//! reaping and every callback happen when the loop calls
//! [`Reactor::dispatch`].
//!
//! ```no_run
//! use evchild::{Forked, Hooks, Reactor, SigchldOwner};
//! use mio::{Events, Interest, Poll, Token};
//!
//! struct App { running: usize }
//! const CHILDREN: Token = Token(0);
//!
//! let mut poll = Poll::new()?;
//! let mut children = Reactor::<App>::new(Hooks::new(SigchldOwner::Library))?;
//! poll.registry().register(&mut children, CHILDREN, Interest::READABLE)?;
//!
//! let mut app = App { running: 0 };
//! // SAFETY: the child calls only `_exit`, which is async-signal-safe.
//! match unsafe { children.fork(|app: &mut App, _children, exit| {
//!     println!("child {} ended: {:?}", exit.id, exit.status());
//!     app.running -= 1;
//! }) }? {
//!     Forked::Child => unsafe { libc::_exit(3) },
//!     Forked::Parent(_child) => app.running += 1,
//! }
//!
//! let mut events = Events::with_capacity(64);
//! while app.running > 0 {
//!     // SIGCHLD interrupts epoll_wait even with SA_RESTART: just poll again.
//!     match poll.poll(&mut events, children.timeout()) {
//!         Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
//!         other => other?,
//!     }
//!     // Cheap when there is nothing to do; also fires `terminate` deadlines.
//!     children.dispatch(&mut app)?;
//!     for _event in &events {
//!         // ... the application's other sources ...
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Starting children
//!
//! * [`Reactor::spawn`] starts a `std::process::Command` and keeps std's
//!   fast `posix_spawn` path; its piped stdio comes back as non-blocking
//!   `mio::unix::pipe` ends ([`Spawned`]) to register in the same loop.
//! * [`Reactor::spawn_output`] is the loop's `Command::output()`: the
//!   reactor reads the child's stdout and stderr in its own epoll set (the
//!   loop needs no other token), feeds its stdin from a buffer
//!   ([`OutputOptions`]; stdin is null otherwise, as with
//!   `Command::output`), and calls back once with the exit and both
//!   streams ([`Output`]), when the child has been reaped and both streams
//!   ended, or a short drain time after the death ran out (with the
//!   default, a descendant holding the pipes delays it 100 ms at most;
//!   `drain_after_exit(None)` waits for end of file); [`OutputOptions::timeout`]
//!   bounds the child's life. Both take a `Command` by value or by
//!   `&mut`, so builder chains work. [`IntoStdio`] hands a spawned pipe
//!   end to the next child of a pipeline.
//! * [`Reactor::spawn_prepared`] (and [`Reactor::spawn_output_prepared`])
//!   start a [`Prepared`] command: described once, with its `argv`,
//!   `envp`, path and descriptors built at the first start and reused, and
//!   started with `clone(CLONE_VFORK)`, whose pidfd comes from the clone
//!   and whose child copies only the descriptors it needs: cheaper than
//!   `spawn` per child, and flat in the number of descriptors the parent
//!   holds. No `pre_exec`: `spawn` remains the general path.
//! * [`Reactor::watch`] adopts a child the process started some other way.
//! * `unsafe` [`Reactor::fork`] is libxl's raw primitive, for children that
//!   run Rust code of their own; `unsafe` [`Reactor::fork_with`] runs a
//!   closure in the child and aborts it if the closure panics, so a panic
//!   never unwinds into the parent's code in the child.
//!
//! Each returns a [`ChildId`], which the per-child calls take, refusing a
//! child whose death has been reported ([`Error::AlreadyReaped`]):
//!
//! * [`Reactor::kill`] and [`Reactor::kill_group`], with a checked
//!   [`Signal`] (standard, real-time, or a raw number that is checked);
//!   [`Reactor::terminate`] and [`Reactor::terminate_group`] (`SIGTERM`,
//!   then `SIGKILL` after a grace period), and
//!   [`Reactor::cancel_terminate`]. Deadlines need no runtime: pass
//!   [`Reactor::timeout`] to `poll` and call `dispatch` whenever `poll`
//!   returns.
//! * [`Reactor::try_wait`] says whether a child runs, is dead with its
//!   report pending, or was reported, and never reaps;
//!   [`Reactor::wait_for`] blocks (with a time-out) until a child's
//!   callback has run, dispatching meanwhile.
//! * [`Reactor::forget`] lets go of a live child without reaping it (its
//!   callback never runs; its pid and pidfd come back);
//!   [`Reactor::pidfd`] lends the child's pidfd.
//!
//! What dropping the reactor does to live children is the application's
//! choice ([`DropPolicy`]); children left running (in `Library` and
//! `LibraryAlways` mode; in `Mainloop` mode they are the application's) go
//! on the process's orphan list, and are reaped once they die by the next `dispatch` of any
//! reactor, which their death wakes. To keep a child beyond its reactor and
//! reap it yourself, [`forget`](Reactor::forget) it before the drop; a
//! left child can also be adopted by another reactor with
//! [`watch`](Reactor::watch), which takes it off the list with its status
//! intact.
//!
//! # The loop
//!
//! Register the reactor for `READABLE` (it is edge-triggered safe: `dispatch`
//! empties it) and call [`Reactor::dispatch`] when `poll` returns with the
//! reactor's event (calling it after every return is simplest and cheap: a
//! `dispatch` that nothing woke makes one `epoll_wait` with no timeout on
//! the reactor's own set, and no wait call, whatever the number of
//! children or of orphans). `terminate` deadlines need nothing more: the
//! descriptor becomes readable when one is due. Passing
//! [`Reactor::timeout`] to `poll` as well does no harm, and is the fallback
//! should the timer not be had (`EMFILE`).
//!
//! While evchild's handler is installed (see *SIGCHLD ownership*), a
//! `SIGCHLD` can make a blocking call fail with `EINTR` in **whichever
//! thread the kernel picks to run the handler**, not only the loop's:
//! `epoll_wait(2)` (mio's `poll`) is never restarted after a signal handler,
//! `SA_RESTART` or not, and neither are a few others (`nanosleep`,
//! `select`, socket calls with a timeout). `ErrorKind::Interrupted` is not
//! an error there: retry. Threads that cannot take that should block
//! `SIGCHLD` (at least one thread must leave it unblocked).
//!
//! # SIGCHLD ownership
//!
//! `SIGCHLD` is one process-wide resource, `waitpid(-1)` steals other code's
//! children, and a signal handler may do almost nothing. So the application
//! chooses, when it creates a reactor ([`Reactor::new`]) or later with no
//! child registered ([`Reactor::set_mode`]), one of three modes
//! ([`SigchldOwner`]):
//!
//! | mode | who has the `SIGCHLD` handler | who reaps | children evchild did not start |
//! |---|---|---|---|
//! | `Library` (default) | with the (default) `Pidfd` backend, nobody, unless a child has no pidfd (`RLIMIT_NOFILE` reached) or asked for stop reports, or has died but is held by another process's tracer (until it is reaped), or an orphan of a dropped reactor has none; with `Peek` and `Scan`, evchild. Installed at the first child that needs it and kept for the life of the process; the reactor is in the handler's table only while such children live | evchild, **its own children only**: by pidfd, or by pid where there is none (see *Backends*) | never touched |
//! | `Mainloop` | the application | the application, which reports each pid with [`reaped`](Reactor::reaped); or it calls [`sigchld_occurred`](Reactor::sigchld_occurred) and evchild reaps its own; statuses a `LibraryAlways` reactor routed here come through `dispatch` | `reaped` answers [`Error::UnknownChild`] |
//! | `LibraryAlways` | evchild, from `new`/`set_mode` on (registered until drop) | evchild reaps **every** child of the process (`wait4(-1)`); a child another reactor of the process registered is handed to that reactor, with its exact status | handed to the unknown-child hook ([`Hooks::unknown_child`]); if there is none or it declines, counted in [`Stats::unknown_unclaimed`] (and logged with the `log` feature) |
//!
//! What the application may and may not do:
//!
//! * **`Library`**: the application may have children of its own and reap
//!   them any way that names them: `Child::wait`, `waitpid(pid)`, its own
//!   `SIGCHLD` handler (installed before or after evchild's, see
//!   *Coexistence*). It must not call `waitpid(-1)`/`wait()` or ignore
//!   `SIGCHLD`: that takes evchild's children, which are then reported as
//!   [`Outcome::Lost`] (see *Identity* for what that can and cannot do to
//!   other processes). It must not block `SIGCHLD` in every thread.
//! * **`Mainloop`**: the application installs the handler and reaps. For every
//!   pid it reaps it calls [`Reactor::reaped`] (which runs our callback, or
//!   answers `UnknownChild` for its own children), *before* it signals any
//!   child through the reactor. Or, if it reaps only its own children by pid,
//!   it calls [`Reactor::sigchld_occurred`] whenever `SIGCHLD` arrives. It
//!   reports every pid it reaped *before* the next `dispatch`, which may send
//!   a `terminate` deadline's `SIGKILL`.
//!   evchild installs no handler. The reactor must still be registered in
//!   the loop: `dispatch` delivers callbacks left over by a panicking one,
//!   statuses a `LibraryAlways` reactor of the process reaped and routed
//!   here, and reaps orphans. [`wait_for`](Reactor::wait_for) is refused
//!   ([`Error::WrongMode`]): nothing in it could reap.
//! * **`LibraryAlways`**: evchild reaps every child of the process. The
//!   application must not reap at all; it learns of its own children through
//!   the unknown-child hook. That includes children started by
//!   `std::process::Command`: their `wait`, `try_wait` and `output` then fail
//!   with `ECHILD` ("No child processes"), and their statuses go to the hook.
//!   At most one reactor per process may be in this mode
//!   ([`Error::ReapAllTaken`]). Other reactors of the process (`Library` or
//!   `Mainloop`, on any thread) may go on starting children: every reactor
//!   *claims* the pids it registers, and the reap-all reactor hands each
//!   claimed child's exact status (and resource usage) to its reactor,
//!   waking it, instead of to the hook; that reactor delivers it in its next
//!   `dispatch`, whatever its mode. A child whose start is in flight
//!   (forked, not yet registered) is never reaped by the reap-all reactor:
//!   while starts are in flight it reaps only claimed children, so std's
//!   own fork path (`pre_exec`, `uid`), which waits for a child whose
//!   `exec` failed, always finds it.
//!
//! Any number of reactors may be in `Library` or `Mainloop` mode at once, on
//! any threads. The mode changes only while no child is registered;
//! otherwise [`set_mode`](Reactor::set_mode) returns
//! [`Error::ChildrenActive`] and changes nothing.
//!
//! # Guarantees
//!
//! * Every child registered with a reactor gets exactly one death callback,
//!   with its true wait status ([`Outcome::Reaped`]), or [`Outcome::Lost`]
//!   if code outside evchild reaped it first (evchild never makes up a
//!   status).
//! * Only a death ends a child: a stop, a continue or a ptrace stop (which
//!   the wait calls report to a tracer even unasked) never does. The passes
//!   that probe (`Scan`, `Peek`, the `Pidfd` fallback) use `WNOWAIT`, so a
//!   ptrace stop of a child this process also traces stays for the tracer's
//!   own `waitpid`.
//! * Callbacks run only inside [`dispatch`](Reactor::dispatch),
//!   [`reaped`](Reactor::reaped) and [`sigchld_occurred`](Reactor::sigchld_occurred),
//!   on the caller's thread, never in the signal handler. They run after the
//!   child has left the reactor's tables, and get `&mut Reactor`: they may
//!   fork, kill and register children, change state, and dispatch.
//! * A panicking callback propagates out of `dispatch` and leaves the reactor
//!   consistent; reports not yet delivered are delivered by the next
//!   `dispatch`, and the reactor makes its descriptor readable so there is
//!   one. (A panicking callback is the one panic evchild lets through.)
//! * A child that dies before `fork` returns is reported (once): with a
//!   `SIGCHLD` backend the handler is installed before the fork, with
//!   `Pidfd` the pidfd of a zombie is readable at once, and either way the
//!   child is registered before any `dispatch` can look for it.
//! * No silent hang, as far as a process can tell:
//!   * a start is refused ([`Error::HandlerConflict`]) while `SIGCHLD` is
//!     ignored, and the reactor then makes itself readable, so children the
//!     kernel reaped meanwhile are reported `Lost` by the next `dispatch`;
//!   * a start by a reactor whose children need evchild's handler (a
//!     `SIGCHLD` backend, `LibraryAlways`, or `Pidfd` children without a
//!     pidfd, with stop reports, or dead but held by another process's
//!     tracer) reinstalls it if other code reset
//!     `SIGCHLD` to `SIG_DFL`, and is refused ([`Error::HandlerConflict`])
//!     if a handler installed over evchild's does not call it (checked once
//!     per such handler: see *Coexistence*);
//!   * an unexpected error in the middle of a pass leaves the reactor
//!     readable, so the work left is not forgotten.
//!
//!   What a process cannot see is not covered: a disposition changed after
//!   the last start (children already running then wait for the next
//!   start), or a thread that blocks `SIGCHLD` in every thread.
//! * `Library` mode never reaps, waits for or signals a pid that no reactor
//!   of the process registered. (A reactor reaps its own children and, when
//!   their death wakes it, the orphans that dropped reactors left: see
//!   [`DropPolicy::Leave`]; an orphan is named by its pidfd wherever the
//!   system has them.)
//! * Every misuse is an [`Error`] and changes nothing; nothing reachable from
//!   the API panics on bad input (a pid ≤ 0 or the process's own, or one
//!   that is not a child of the process, from a fork replacement, is
//!   [`Error::InvalidPid`]; from `watch`, [`Error::InvalidPid`] or
//!   [`Error::NotAChild`]). The one panic evchild lets through is a
//!   callback's own.
//! * [`Reactor`] is `Send` (every callback must be `Send`), so it can move
//!   to another thread or live in a task of a multi-threaded runtime; it is
//!   not `Sync`.
//!
//! # Identity
//!
//! A pid names a process only until that process is reaped. Wherever a
//! child has a pidfd (the `Pidfd` backend, Linux ≥ 5.4), the pidfd is its
//! identity: readiness, reaping (`waitid(P_PIDFD)`) and every signal
//! ([`kill`](Reactor::kill), `terminate`'s deadline, the drop policy:
//! `pidfd_send_signal`) go through it. If other code reaps the child and the
//! kernel gives its pid to another process, the pidfd says so (`ECHILD`,
//! `ESRCH`): the child is reported `Lost`, the signal is refused, and the
//! other process is never waited for or signalled.
//!
//! Without a pidfd (`Peek`, `Scan`, `Mainloop`, `LibraryAlways`, or a child
//! past `RLIMIT_NOFILE`) evchild names a child by pid, which is sound only
//! while the contract holds: nobody else reaps it. A child that the
//! process's `LibraryAlways` reactor reaped (its status routed to its own
//! reactor, not yet delivered) is no longer signalled: `kill` and the other
//! control calls answer [`Error::AlreadyReaped`]. (A reap-all pass that
//! reaps the child between that check and the signal is the window that
//! remains.) If other code breaks the contract
//! (a `waitpid(-1)` in the same process) *and* the kernel gives the pid to a
//! new child of the process before evchild looks, a per-pid wait reaps that
//! new child in the old one's place, and a signal for the old child reaches
//! the new one. [`kill_group`](Reactor::kill_group) checks the leader
//! through its pidfd first, but `kill(-pgid)` itself names the group by
//! number: the window between the check and the signal remains.
//!
//! # Coexistence
//!
//! evchild installs its handler the first time a reactor needs it, and
//! then keeps it installed for the life of the process (until `exec`): a
//! reactor that goes idle or is dropped only leaves the handler's table, so
//! a loop with one child in flight at a time makes no `sigaction` change per
//! child. A real handler that was installed before evchild's is called from
//! evchild's (chained), for good, so code that installed its own handler
//! earlier keeps working; if it asked for stop/continue notifications,
//! evchild's asks too. A handler installed after evchild's is never
//! clobbered: if it chains, evchild keeps working through it; if it does
//! not, every reactor that needs `SIGCHLD` would wait for ever, so the
//! first start that needs the handler after such a handler appeared checks
//! it (once per handler: it raises `SIGCHLD` in the calling thread and sees
//! whether evchild's handler ran) and is refused with
//! [`Error::HandlerConflict`] if it does not chain. Use `Mainloop` mode
//! with such a handler.
//!
//! Every child start (`spawn`, `spawn_prepared`, `fork`, `watch`, in every
//! mode) first reads the disposition (one `sigaction(SIGCHLD, NULL, ..)`
//! query; for a `spawn_prepared` start whose reactor does not need the
//! handler, the query is the child's, made after the `clone` while it
//! reads every disposition to reset the handlers, and before it changes
//! anything else or execs):
//! * `SIG_IGN` or `SA_NOCLDWAIT` makes the kernel reap children by itself,
//!   so nothing can be waited for: evchild refuses it with
//!   [`Error::HandlerConflict`], starting nothing (a `spawn_prepared`
//!   child that finds it stops before `execve`: nothing of the command
//!   runs), rather than report every child lost (or, in `Mainloop` mode,
//!   leave its callback pending for ever);
//! * `SIG_DFL` where evchild needs its handler (other code reset `SIGCHLD`,
//!   as libuv and libev do when they stop, or restored the default after
//!   ignoring it): evchild installs its handler again, chaining to nothing.
//!
//! The handler is async-signal-safe: it saves and restores `errno`, counts
//! its call (an atomic), writes one byte to the non-blocking, close-on-exec
//! wake pipe of each reactor that needs it, chains, and does nothing else:
//! no lock, no allocation, no panic, no logging.
//!
//! # Fork safety
//!
//! * Every descriptor evchild opens is close-on-exec: executed children
//!   inherit none (but for the status pipe end that a `supervise` worker
//!   is given on purpose). Three live as long as the process: the orphan
//!   set (an epoll set) and its wake pipe, opened by the first
//!   [`Reactor::new`].
//! * A reactor used in a process forked from the one that created it (by
//!   [`Reactor::fork`] or anyone else, without exec) returns
//!   [`Error::ForkedChild`] from every method instead of reading the parent's
//!   wake pipe, and dropping it there only closes that process's copies of
//!   its descriptors, allocating and freeing nothing.
//! * A forked child starts with an empty handler table: a `pthread_atfork`
//!   child handler (registered by the first [`Reactor::new`]), or
//!   [`Reactor::fork`] itself, advances a process-wide fork generation and
//!   empties the table (and the reap-all token and the pid claims), so the
//!   handler the child inherits never writes through its parent's
//!   descriptor numbers and never steals its wake-ups (and the orphan list,
//!   whose children are the parent's). A pid comparison
//!   would not do: a later process can have the parent's pid. The child may
//!   then create any reactor of its own, `LibraryAlways` included (in the
//!   child of a multi-threaded process, only once it may allocate).
//! * Not covered: a child made by raw `clone(2)` or `syscall(SYS_fork)`
//!   outside [`Reactor::fork`], which bypasses `pthread_atfork` handlers,
//!   keeps its parent's generation and table until it execs.
//!
//! # Backends
//!
//! How a `Library`-mode reactor learns which of its children died is its
//! [`Backend`] ([`Hooks::backend`], [`Reactor::backend`]). All of them reap
//! only the reactor's own children.
//!
//! | backend | wake-up | cost per exit with N live children | price |
//! |---|---|---|---|
//! | `Pidfd` (the default where available) | each child's pidfd in the reactor's epoll set; no `SIGCHLD` handler | flat: one `waitid(P_PIDFD)` for exactly the children that died | one descriptor per live child: every later spawn copies the descriptor table, and `RLIMIT_NOFILE` caps the children with a pidfd (the rest are watched through `SIGCHLD`) |
//! | `Peek` (the fallback) | `SIGCHLD`, then `waitid(P_ALL, WNOWAIT)` | one peek and one reaping `waitid(P_PID)` per exit in user space, but the kernel walks the whole child list for each peek | none; a wake-up whose peek finds nothing of ours (a child someone else reaped, or another's zombie first in line) scans |
//! | `Scan` | `SIGCHLD`, then a `waitid(P_PID, WNOWAIT)` probe for every live child | O(N) system calls | none |
//!
//! `LibraryAlways` mode reaps with `wait4(-1)`, which the kernel also
//! answers by walking the child list.
//!
//! Measured on this project's 2-core machine (`BENCHMARKS.md`,
//! `cargo bench --bench reaping`): with 10,000 idle children, the reaping
//! cost per exit stays within about 1.2× of that with none for `Pidfd`,
//! while for `Peek`, `Scan` and `LibraryAlways` it grows a hundredfold or
//! more, the first two through the kernel's walk; but `Pidfd` doubles the
//! child's CPU per spawn there (the descriptor table). `Pidfd` gave the
//! most children per second at every size, so `Backend::Auto` chooses it
//! where `pidfd_open` and `waitid(P_PIDFD)` work (Linux ≥ 5.4, no seccomp
//! veto) and `Peek` elsewhere. A program that expects hundreds of live
//! children should raise its soft `RLIMIT_NOFILE`; children past the limit
//! are not lost, but watched through `SIGCHLD` (and scanned).
//!
//! What `Pidfd` costs at a start depends on how the child is started. With
//! [`Reactor::spawn`] (std's `Command`), six system calls more than a
//! bare std loop at one child in flight (`pidfd_open`, `EPOLL_CTL_ADD`,
//! the pidfd's `close`, the disposition query and the loop's two
//! `epoll_wait`; `waitid` replaces `wait4`), and every later spawn copies
//! the whole descriptor table, pidfds included. With [`Reactor::spawn_prepared`] the
//! pidfd comes from the `clone` itself and the child copies only the
//! descriptors it needs, so a start costs the parent less than std's own
//! spawn (about 0.9× at eight in flight), and about the same work per
//! child with 10,000 live children as with none (`BENCHMARKS.md`,
//! *Issue 15*). **`Peek` is the better choice** for a program that starts
//! its children through std's `Command`, keeps few of them alive at once
//! (say, fewer than a hundred), and either is short of descriptors or
//! wants the last few microseconds per child: it holds no descriptor per
//! child, and each start costs about 1.1× a bare std loop against
//! `Pidfd`'s 1.2×. Past a few hundred live children `Pidfd` is the better
//! choice whatever the start: each `Peek` or `Scan` wake-up walks every
//! child.
//!
//! # How it is built
//!
//! *Not part of the contract: where each rule lives, for readers of the
//! source.* Each layer uses only the ones below it:
//!
//! | module | owns |
//! |---|---|
//! | `types/` | the public vocabulary: ids, exits, signals, errors, hooks |
//! | `reactor/` | [`Reactor`]: starting (`spawn`, `fork`, `watch`), control, `dispatch`, output streams, drop |
//! | `prepared/` | [`Prepared`]: a command described once (builder, [`Redirect`]) and its prebuilt form (argv, envp, path, `/dev/null`, descriptor slots, the child's stack), reused by every start |
//! | `watch/` | the one place that decides how each child is watched, reaped and signalled, and the reactor's epoll set |
//! | `reap/` | the reaping passes, behind the `Reap` seam a fuzzed process model also implements |
//! | `process/` | all process-wide state behind one futex lock (waiters sleep in the kernel; no system call under it but a handler install, and a few `sched_yield`s while a running handler finishes when a slot is emptied): the `SIGCHLD` handler and disposition, fork generations, the routes between reactors, the orphans |
//! | `sys/spawn.rs` | the start of a `Prepared` child: `clone(CLONE_VM \| CLONE_VFORK \| CLONE_FILES [\| CLONE_PIDFD])`, the async-signal-safe child function (`close_range(CLOSE_RANGE_UNSHARE)`, signal reset, `execve`) |
//! | `sys/` | every raw (`libc`) system call, and all `unsafe` code but the `unsafe fn` declarations of `Reactor::fork`, `fork_with` and `supervise::Start::fork` (epoll, `fcntl` and signal masks go through nix's safe calls where they are used) |
//! | `supervise/` | worker pools on the public API; its only process-wide state is a pool id counter and, in a worker process, its status channel (`supervise/worker.rs`: atomics, read after fork and in signal handlers, so lock-free by design) |
//!
//! Where this differs from the project's design notes, deliberately: death
//! callbacks receive `&mut Reactor` as well as the context (so they can start
//! and signal children without `Rc`); `Mainloop` mode's `dispatch` reaps none
//! of its own children but delivers left-over reports and routed statuses,
//! and reaps orphans; a `LibraryAlways` reactor
//! makes its descriptor readable at creation so zombies that predate it are
//! collected by the first `dispatch`; in `Library` mode a reactor with no
//! live child holds no slot in the handler's table, so idle reactors cost
//! the handler nothing; [`Reactor::backend`] is `None` outside `Library`
//! mode; and a start is refused under `SIG_IGN` in `Mainloop` mode too (the
//! application could not wait for the child either).

#![deny(missing_docs, missing_debug_implementations, unsafe_code)]
#![warn(rust_2018_idioms, clippy::undocumented_unsafe_blocks)]

mod prepared;
mod process;
mod reactor;
mod reap;
pub mod supervise;
mod sys;
mod types;
mod watch;

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub use reap::model as fuzzing;

/// Counters that evchild's own tests read (atomic loads). Not part of the
/// API: they may change or go at any time.
#[doc(hidden)]
pub mod __private {
    /// How many `sigaction(SIGCHLD, &new, ..)` calls evchild has made to
    /// install or refresh its handler in this process.
    pub fn sigchld_installs() -> u64 {
        crate::process::debug::installs()
    }

    /// How many reactors hold a slot in the handler's table now.
    pub fn sigchld_registrations() -> usize {
        crate::process::debug::registrations()
    }
}

/// The earlier of two optional time-outs, where `None` means no limit:
/// what a loop passes to `poll` when more than one source has deadlines.
///
/// [`Reactor::timeout`] says how long the loop may sleep before a
/// `terminate` deadline is due (`None`: no deadline), and so do
/// [`Supervisor::timeout`](supervise::Supervisor::timeout) and, often, the
/// application's own timers. Unlike `Option::min`, which would pick `None`
/// (that is, sleep forever), `earliest` keeps the limit that exists:
///
/// ```
/// use std::time::Duration;
/// use evchild::earliest;
///
/// let second = Some(Duration::from_secs(1));
/// assert_eq!(earliest(second, None), second);
/// assert_eq!(earliest(None, None), None);
/// assert_eq!(earliest(second, Some(Duration::from_millis(5))), Some(Duration::from_millis(5)));
/// ```
///
/// In a loop (nest it for more sources):
///
/// ```no_run
/// # use std::time::{Duration, Instant};
/// # use evchild::{earliest, Hooks, Reactor};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut poll = mio::Poll::new()?;
/// # let mut events = mio::Events::with_capacity(8);
/// # let mut reactor = Reactor::<()>::new(Hooks::default())?;
/// let give_up = Instant::now() + Duration::from_secs(10); // a timer of our own
/// while !reactor.is_empty() {
///     let ours = give_up.saturating_duration_since(Instant::now());
///     poll.poll(&mut events, earliest(reactor.timeout(), Some(ours)))?;
///     reactor.dispatch(&mut ())?;
/// }
/// # Ok(())
/// # }
/// ```
pub fn earliest(
    a: Option<std::time::Duration>,
    b: Option<std::time::Duration>,
) -> Option<std::time::Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub use prepared::{Prepared, Redirect};
pub use reactor::{
    ChildStatus, DropPolicy, Forgotten, IntoStdio, Output, OutputOptions, Reactor, Spawned, Stats,
    Stream,
};
pub use types::{
    Backend, ChildId, ChildState, Claim, Error, Exit, Forked, Hooks, Outcome, Pid, ResourceUsage,
    Result, SigchldOwner, Signal,
};
