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
//!     println!("child {} ended: {:?}", exit.pid, exit.status());
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
//! * [`Reactor::watch`] adopts a child the process started some other way.
//! * `unsafe` [`Reactor::fork`] is libxl's raw primitive, for children that
//!   run Rust code of their own.
//!
//! Each returns a [`ChildId`]. [`Reactor::kill`], [`Reactor::kill_group`]
//! and [`Reactor::terminate`] (`SIGTERM`, then `SIGKILL` after a grace
//! period) take it, and refuse a child whose death has been reported.
//! Deadlines need no runtime: pass [`Reactor::timeout`] to `poll` and call
//! `dispatch` whenever `poll` returns. What dropping the reactor does to
//! live children is the application's choice ([`DropPolicy`]).
//!
//! # The loop
//!
//! Register the reactor for `READABLE` (it is edge-triggered safe: `dispatch`
//! empties it), pass [`Reactor::timeout`] to `poll`, and call
//! [`Reactor::dispatch`] when `poll` returns with the reactor's event or on
//! time-out (calling it after every return is simplest and cheap). While
//! evchild's handler is installed, a `SIGCHLD` can make `poll` fail with
//! `ErrorKind::Interrupted`: `epoll_wait(2)` is never restarted after a
//! signal handler, `SA_RESTART` or not. That is not an error; poll again.
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
//! | `Library` (default) | nobody with the (default) `Pidfd` backend; otherwise evchild, only while this reactor has live children | evchild, **its own children only**, by pid (see *Backends*) | never touched |
//! | `Mainloop` | the application | the application, which reports each pid with [`reaped`](Reactor::reaped); or it calls [`sigchld_occurred`](Reactor::sigchld_occurred) and evchild reaps its own | `reaped` answers [`Error::UnknownChild`] |
//! | `LibraryAlways` | evchild, from `new`/`set_mode` until drop | evchild reaps **every** child of the process (`waitpid(-1)`) | handed to the unknown-child hook ([`Hooks::unknown_child`]); if there is none or it declines, counted in [`Stats::unknown_unclaimed`] (and logged with the `log` feature) |
//!
//! What the application may and may not do:
//!
//! * **`Library`**: the application may have children of its own and reap
//!   them any way that names them: `Child::wait`, `waitpid(pid)`, its own
//!   `SIGCHLD` handler (installed before or after evchild's, see
//!   *Coexistence*). It must not call `waitpid(-1)`/`wait()` or ignore
//!   `SIGCHLD`: that takes evchild's children, which are then reported as
//!   [`Outcome::Lost`]. (Worse, if a child taken that way has its pid given
//!   to another child of the process before evchild looks, the per-pid
//!   `waitpid` of `Library` mode reaps that other child in its place: a pid
//!   cannot tell two processes apart. Only a pidfd can, which is why a pidfd
//!   backend is planned.) It must not block `SIGCHLD` in every thread.
//! * **`Mainloop`**: the application installs the handler and reaps. For every
//!   pid it reaps it calls [`Reactor::reaped`] (which runs our callback, or
//!   answers `UnknownChild` for its own children), *before* it signals any
//!   child through the reactor. Or, if it reaps only its own children by pid,
//!   it calls [`Reactor::sigchld_occurred`] whenever `SIGCHLD` arrives. It
//!   reports every pid it reaped *before* the next `dispatch`, which may send
//!   a `terminate` deadline's `SIGKILL`.
//!   evchild installs no handler. The reactor should still be registered in
//!   the loop: `dispatch` delivers callbacks left over by a panicking one.
//! * **`LibraryAlways`**: evchild reaps every child of the process. The
//!   application must not reap at all; it learns of its own children through
//!   the unknown-child hook. At most one reactor per process may be in this
//!   mode ([`Error::ReapAllTaken`]). Other reactors of the process should not
//!   start children meanwhile: the reap-all reactor would take them, and they
//!   would be reported [`Outcome::Lost`] to their own reactor.
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
//!   if other code reaped it first (evchild never makes up a status).
//! * Callbacks run only inside [`dispatch`](Reactor::dispatch),
//!   [`reaped`](Reactor::reaped) and [`sigchld_occurred`](Reactor::sigchld_occurred),
//!   on the caller's thread, never in the signal handler. They run after the
//!   child has left the reactor's tables, and get `&mut Reactor`: they may
//!   fork, kill and register children, change state, and dispatch.
//! * A panicking callback propagates out of `dispatch` and leaves the reactor
//!   consistent; reports not yet delivered are delivered by the next
//!   `dispatch`, and the reactor makes its descriptor readable so there is
//!   one.
//! * A child that dies before `fork` returns is reported (once): with a
//!   `SIGCHLD` backend the handler is installed before the fork, with
//!   `Pidfd` the pidfd of a zombie is readable at once, and either way the
//!   child is registered before any `dispatch` can look for it.
//! * A child is signalled only between its registration and the report of
//!   its death, while the kernel cannot give its pid to another process
//!   ([`Error::AlreadyReaped`] afterwards, for its [`ChildId`], even if a
//!   new child has the same pid).
//! * `Library` mode never reaps, waits for or signals a pid it did not
//!   register.
//! * Every misuse is an [`Error`] and changes nothing; nothing reachable from
//!   the API panics on bad input.
//!
//! # Coexistence
//!
//! evchild's handler saves the disposition it replaces. A previous real
//! handler is called from evchild's (chained), so code that installed its own
//! handler earlier keeps working; if it asked for stop/continue
//! notifications, evchild's asks too. A previous `SIG_IGN` or `SA_NOCLDWAIT`
//! makes the kernel reap children by itself, so nothing can be waited for:
//! evchild refuses it with [`Error::HandlerConflict`] rather than report
//! every child lost. When the last user is gone, evchild restores the
//! previous disposition *only if its own handler is still the installed
//! one*: a handler installed after evchild's is never clobbered (and if that
//! handler chains, evchild keeps working through it; if it does not, use
//! `Mainloop` mode).
//!
//! The handler is async-signal-safe: it saves and restores `errno`, writes
//! one byte to the non-blocking, close-on-exec wake pipe of each reactor that
//! needs it, chains, and does nothing else: no lock, no allocation, no
//! panic, no logging.
//!
//! # Fork safety
//!
//! * Every descriptor evchild opens is close-on-exec: executed children
//!   inherit none.
//! * A reactor used in a process forked from the one that created it (by
//!   [`Reactor::fork`] or anyone else, without exec) returns
//!   [`Error::ForkedChild`] from every method instead of reading the parent's
//!   wake pipe, and dropping it there only closes that process's copies of
//!   its descriptors.
//! * The handler, inherited by a forked child, wakes only reactors registered
//!   by the process it runs in (it compares `getpid()`), so a forked child
//!   never steals its parent's wake-ups.
//! * In the child of a multi-threaded process, create a new reactor only
//!   after `exec`, or if no other thread could have been inside evchild at
//!   the fork: the process-wide registry's lock may be held by a thread that
//!   does not exist in the child.
//!
//! # Backends
//!
//! How a `Library`-mode reactor learns which of its children died is its
//! [`Backend`] ([`Hooks::backend`], [`Reactor::backend`]). All of them reap
//! only the reactor's own children.
//!
//! | backend | wake-up | cost per exit with N live children | price |
//! |---|---|---|---|
//! | `Pidfd` (the default where available) | each child's pidfd in the reactor's epoll set; no `SIGCHLD` handler | flat: a `wait4(pid)` for exactly the children that died | one descriptor per live child: every later spawn copies the descriptor table, and `RLIMIT_NOFILE` caps the children |
//! | `Peek` (the fallback) | `SIGCHLD`, then `waitid(P_ALL, WNOWAIT)` | one peek and one `wait4(pid)` per exit in user space, but the kernel walks the whole child list for each peek | none; a zombie of someone else's first in line makes that wake-up a scan |
//! | `Scan` | `SIGCHLD`, then `wait4(pid)` for every live child | O(N) system calls | none |
//!
//! `LibraryAlways` mode reaps with `waitpid(-1)`, which the kernel also
//! answers by walking the child list.
//!
//! Measured on this project's 2-core machine (`BENCHMARKS.md`,
//! `cargo bench --bench reaping`): with 10,000 idle children, the reaping
//! cost per exit stays within about 1.2× of that with none for `Pidfd`,
//! while for `Peek`, `Scan` and `LibraryAlways` it grows a hundredfold or
//! more, the first two through the kernel's walk; but `Pidfd` doubles the
//! child's CPU per spawn there (the descriptor table). `Pidfd` gave the
//! most children per second at every size, so `Backend::Auto` chooses it
//! where `pidfd_open` works (Linux ≥ 5.3, no seccomp veto) and `Peek`
//! elsewhere. Choose `Peek` for a process that spawns far more than it
//! keeps alive and is short of descriptors. A program that expects hundreds
//! of live children should raise its soft `RLIMIT_NOFILE`; children past
//! the limit are not lost, but watched through `SIGCHLD` (and scanned).
//!
//! # Implementation notes
//!
//! *The following is **not** guaranteed, just a description of the current
//! situation.*
//!
//! | | |
//! |---|---|
//! | wake-up | one `SIGCHLD` handler per process; one self-pipe per reactor, registered in a fixed table of 256 slots while the reactor needs the handler |
//! | descriptor | an epoll set holding the wake pipe and, with `Pidfd`, one pidfd per child |
//! | `Library` reaping | see *Backends* |
//! | `LibraryAlways` reaping | `waitpid(-1, WNOHANG)` until nothing is left: k+1 calls for k exits |
//! | timers | a binary heap of `terminate` deadlines, fired by `dispatch`: O(log n) each |
//! | per wake-up allocation | none in steady state (the report queue and scratch space are reused) |
//! | platform | Linux; other Unix systems with `pipe2` untested |
//!
//! Where this differs from the project's design notes, deliberately: death
//! callbacks receive `&mut Reactor` as well as the context (so they can start
//! and signal children without `Rc`); `Mainloop` mode's `dispatch` reaps
//! nothing but still delivers left-over reports; a `LibraryAlways` reactor
//! makes its descriptor readable at creation so zombies that predate it are
//! collected by the first `dispatch`; and in `Library` mode a reactor with
//! no live child holds no slot in the handler's table, so idle reactors cost
//! the handler nothing.

#![deny(missing_docs, missing_debug_implementations, unsafe_code)]
#![warn(rust_2018_idioms, clippy::undocumented_unsafe_blocks)]

mod control;
mod dispatch;
mod drop_policy;
mod error;
mod exit;
mod fork;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod mode;
mod pidfd;
mod poller;
mod reactor;
mod reap;
mod selfpipe;
mod sigchld;
mod spawn;
pub mod supervise;
mod sys;
mod table;
mod timer;

pub use drop_policy::DropPolicy;
pub use error::{Error, Result};
pub use exit::{ChildId, ChildState, Exit, Outcome, Pid, ResourceUsage};
pub use mode::{Backend, Claim, Forked, Hooks, SigchldOwner};
pub use reactor::{Reactor, Stats};
pub use spawn::Spawned;
