//! How a pool starts a worker: a command built for each worker (through
//! [`Reactor::spawn`]), a [`Prepared`] description started again for each
//! (through [`Reactor::spawn_prepared`], which passes the status
//! descriptor with no `pre_exec`), or a function run in a forked child (through
//! [`Reactor::fork_with`], so that a panic aborts the worker instead of
//! unwinding into the master's frames).
//!
//! Either way the worker gets the pool's status write end and nothing else
//! of the supervisor's: an executed worker through a `pre_exec` step that
//! clears close-on-exec on that one descriptor in the child (the parent's
//! copy is never inheritable, so a spawn on another thread cannot take it);
//! a forked worker closes every other descriptor of the supervisor (its
//! epoll set, the pipes' read ends, the other pools' write ends), so that
//! its reports fail once the master is gone instead of blocking on a pipe
//! it holds open itself.

//!
//! `Start::fork` is an `unsafe fn` (what the child may do is its caller's
//! contract), and `start` calls `Reactor::fork_with` for it: both allowed
//! item by item, like `Reactor::fork`.

use std::fmt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::status::{StatusPipe, ENV, MASTER_ENV};
use super::{HasSupervisor, PoolId, WorkerId};
use crate::sys::worker as sys;
use crate::{ChildId, Exit, Prepared, Reactor, Result, Spawned};

/// What a worker's start is told: which worker it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerSpec {
    /// The worker.
    pub worker: WorkerId,
    /// The pool's generation it belongs to (1, then one more per reload).
    pub generation: u64,
}

type MakeCommand = Box<dyn FnMut(&WorkerSpec) -> Command + Send>;
type RunForked = Box<dyn FnMut(&WorkerSpec) -> i32 + Send>;
type EachWorker = Box<dyn FnMut(&WorkerSpec, &mut Prepared) + Send>;

/// A `Start::prepared` pool's description, and the status descriptor it
/// was last given (passed again only if the pool's changed).
struct PreparedStart {
    prepared: Prepared,
    each: Option<EachWorker>,
    passed: Option<std::os::fd::RawFd>,
}

enum How {
    Command(MakeCommand),
    Fork(RunForked),
    Prepared(Box<PreparedStart>),
}

/// How a pool starts its workers.
pub struct Start(How);

impl Start {
    /// Each worker is `make(spec)`, spawned. The pool adds
    /// [`ENV`](super::ENV) to its environment (and a process group, if
    /// configured), and a `pre_exec` step that lets this child alone
    /// inherit the status descriptor (and sets the parent-death signal, if
    /// configured): std then spawns through `fork` and `exec` rather than
    /// `posix_spawn`, whose cost grows with the master's mapped memory
    /// (measured by `benches/supervise.rs`: a replacement ready in 2 ms with
    /// a small master, 73 ms with 1 GiB of heap, against 4 ms through
    /// `posix_spawn`). Keep the master small, as prefork masters are. A
    /// command may add `pre_exec` steps of its own. The program reports with
    /// [`worker::ready`](super::worker::ready) and friends.
    ///
    /// ```
    /// use std::process::Command;
    /// use evchild::supervise::Start;
    /// let start = Start::command(|_spec| {
    ///     let mut cmd = Command::new("/usr/local/bin/my-worker");
    ///     cmd.arg("--serve");
    ///     cmd
    /// });
    /// # let _ = start;
    /// ```
    pub fn command(make: impl FnMut(&WorkerSpec) -> Command + Send + 'static) -> Self {
        Start(How::Command(Box::new(make)))
    }

    /// Each worker is `prepared`, started with
    /// [`Reactor::spawn_prepared`]: the same program every time, described
    /// once, with no `pre_exec` (so no `fork` of the master, whatever its
    /// size: the child is a `clone(CLONE_VM | CLONE_VFORK)`). The pool
    /// gives each worker what [`command`](Self::command) gives it: the
    /// [`ENV`](super::ENV) and `EVCHILD_WORKER_MASTER` variables (patched
    /// into the prebuilt environment per worker), the status descriptor
    /// (passed with [`Prepared::pass_fd`] at the number `ENV` names; the
    /// `Prepared` keeps a close-on-exec copy of it), the process group and
    /// the parent-death signal, if configured. The child gets nothing else
    /// of the master's descriptors (see [`Prepared`]'s *Descriptors*).
    ///
    /// ```
    /// use evchild::{Prepared, Redirect};
    /// use evchild::supervise::Start;
    /// let mut worker = Prepared::new("/usr/local/bin/my-worker");
    /// worker.arg("--serve").stdin(Redirect::Null);
    /// let start = Start::prepared(worker);
    /// # let _ = start;
    /// ```
    pub fn prepared(prepared: Prepared) -> Self {
        Start(How::Prepared(Box::new(PreparedStart {
            prepared,
            each: None,
            passed: None,
        })))
    }

    /// [`prepared`](Self::prepared), with `each(spec, &mut prepared)`
    /// called before each worker's start, to change what differs per worker
    /// (an argument with [`Prepared::set_arg`], a variable with
    /// [`Prepared::env`]: each rebuilds only its own string).
    pub fn prepared_with(
        prepared: Prepared,
        each: impl FnMut(&WorkerSpec, &mut Prepared) + Send + 'static,
    ) -> Self {
        Start(How::Prepared(Box::new(PreparedStart {
            prepared,
            each: Some(Box::new(each)),
            passed: None,
        })))
    }

    /// Each worker is a forked child (no exec) that runs `run(spec)` and
    /// `_exit`s with the code it returns. The status channel is set before
    /// `run` is called.
    ///
    /// # Safety
    ///
    /// As for [`Reactor::fork`]: in the child of a multithreaded process,
    /// `run` may only call async-signal-safe functions (no allocation, no
    /// lock, no `println!`) until it execs or exits, since another thread
    /// may have held a lock at the fork. In a single-threaded process
    /// anything goes. `run` must not return into the parent's loop: the
    /// pool calls `_exit` with its result.
    ///
    /// A forked worker closes the supervisor's descriptors that are not its
    /// own before `run`, but inherits every other descriptor of the parent
    /// (the reactor's, the application's sockets): close what it does not
    /// need, or a peer may wait for an end of file that this worker holds
    /// back. A panic in `run` aborts the worker (`SIGABRT`); it never
    /// unwinds into the parent's frames.
    #[allow(unsafe_code)] // an `unsafe fn`: see the module docs
    pub unsafe fn fork(run: impl FnMut(&WorkerSpec) -> i32 + Send + 'static) -> Self {
        Start(How::Fork(Box::new(run)))
    }

    /// Starts one worker through `reactor`; its death is reported to the
    /// supervisor `supervisor` (its id) and the pool. `fds` are the
    /// supervisor's descriptors, which a forked worker closes (all but its
    /// status write end).
    #[allow(unsafe_code)] // calls `fork_with` for `Start::fork`: see the SAFETY comment
    pub(crate) fn start<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        status: &StatusPipe,
        spec: WorkerSpec,
        how: StartOptions<'_>,
    ) -> Result<(ChildId, Option<Spawned>)> {
        let (pool, token) = (spec.worker.pool, spec.worker.token);
        let supervisor = how.supervisor;
        let on_death = move |ctx: &mut C, reactor: &mut Reactor<C>, exit: Exit| {
            ctx.supervisor()
                .worker_died(reactor, supervisor, pool, token, exit);
        };
        // What the pool hands the reactor is `Send`: it captures numbers,
        // and reaches the pool through the context.
        assert_send(&on_death);
        let fd = status.write_raw();
        let master = sys::getpid();
        let pdeathsig = how.parent_death_signal;
        let process_group = how.process_group;
        match &mut self.0 {
            How::Command(make) => {
                let mut cmd = make(&spec);
                cmd.env(ENV, format!("{fd}:{token}"));
                cmd.env(MASTER_ENV, master.to_string());
                if process_group {
                    cmd.process_group(0);
                }
                sys::pass_status_fd(&mut cmd, fd, pdeathsig, master);
                let spawned = reactor.spawn(&mut cmd, on_death)?;
                Ok((spawned.id, Some(spawned)))
            }
            How::Prepared(start) => {
                let PreparedStart {
                    prepared,
                    each,
                    passed,
                } = &mut **start;
                if let Some(each) = each {
                    each(&spec, prepared);
                }
                prepared.env(ENV, format!("{fd}:{token}"));
                prepared.env(MASTER_ENV, master.to_string());
                if process_group {
                    prepared.process_group(0);
                }
                prepared.parent_death_signal(pdeathsig.map(|signal| (signal, master)));
                if *passed != Some(fd) {
                    let copy = crate::sys::spawn::dup_raw(fd)
                        .map_err(|e| crate::Error::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
                    prepared.pass_fd(copy, fd);
                    *passed = Some(fd);
                }
                let spawned = reactor.spawn_prepared(prepared, on_death)?;
                Ok((spawned.id, Some(spawned)))
            }
            How::Fork(run) => {
                let fds = how.fds;
                let child = || {
                    for &other in fds {
                        if other != fd {
                            sys::close(other);
                        }
                    }
                    if let Some(signal) = pdeathsig {
                        let _ = sys::set_parent_death_signal(signal, master);
                    }
                    super::worker::set_channel(fd, token, master);
                    if process_group {
                        crate::sys::worker::set_own_process_group(0);
                    }
                    run(&spec)
                };
                // SAFETY: the caller of `Start::fork` promised that `run` is
                // fit for the forked child. What we do there before it is
                // async-signal-safe: close(2), prctl(2), getppid(2),
                // setpgid(2) and atomic stores; `fork_with` then `_exit`s
                // with its result, or aborts on a panic.
                let id = unsafe { reactor.fork_with(child, on_death) }?;
                if process_group {
                    // Also from the parent, so that a signal to the group
                    // cannot come before the child's own call (EACCES once
                    // it has, or ESRCH: harmless).
                    crate::sys::worker::set_own_process_group(id.pid().as_raw());
                }
                Ok((id, None))
            }
        }
    }
}

/// The pool's settings for one start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartOptions<'a> {
    pub(crate) supervisor: u64,
    pub(crate) process_group: bool,
    pub(crate) parent_death_signal: Option<i32>,
    pub(crate) fds: &'a [std::os::fd::RawFd],
}

impl fmt::Debug for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            How::Command(_) => f.write_str("Start::command(..)"),
            How::Fork(_) => f.write_str("Start::fork(..)"),
            How::Prepared(start) => {
                write!(f, "Start::prepared({:?})", start.prepared.get_program())
            }
        }
    }
}

/// Used by the pool to build a `WorkerSpec`.
pub(crate) fn spec(pool: PoolId, token: u64, generation: u64) -> WorkerSpec {
    WorkerSpec {
        worker: WorkerId { pool, token },
        generation,
    }
}

fn assert_send<T: Send + 'static>(_: &T) {}
