//! How a pool starts a worker: a command built for each worker (std's fast
//! `posix_spawn` path, through [`Reactor::spawn`]), or a function run in a
//! forked child (through [`Reactor::fork`]).

#![allow(unsafe_code)]

use std::fmt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::status::{StatusPipe, ENV};
use super::{HasSupervisor, PoolId, WorkerId};
use crate::{ChildId, Exit, Forked, Reactor, Result, Spawned};

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

enum How {
    Command(MakeCommand),
    Fork(RunForked),
}

/// How a pool starts its workers.
pub struct Start(How);

impl Start {
    /// Each worker is `make(spec)`, spawned. The pool adds
    /// [`ENV`](super::ENV) to its environment (and a process group, if
    /// configured); the program reports with
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
    /// A forked worker inherits every descriptor of the parent (the other
    /// pools' pipes, the application's sockets): close what it does not
    /// need, or a peer may wait for an end of file that this worker holds
    /// back.
    pub unsafe fn fork(run: impl FnMut(&WorkerSpec) -> i32 + Send + 'static) -> Self {
        Start(How::Fork(Box::new(run)))
    }

    /// Starts one worker through `reactor`; its death is reported to the
    /// pool's supervisor.
    pub(crate) fn start<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        status: &StatusPipe,
        spec: WorkerSpec,
        process_group: bool,
    ) -> Result<(ChildId, Option<Spawned>)> {
        let (pool, token) = (spec.worker.pool, spec.worker.token);
        let on_death = move |ctx: &mut C, reactor: &mut Reactor<C>, exit: Exit| {
            ctx.supervisor().worker_died(reactor, pool, token, exit);
        };
        // What the pool hands the reactor is `Send`: it captures two
        // numbers, and reaches the pool through the context.
        assert_send(&on_death);
        match &mut self.0 {
            How::Command(make) => {
                let mut cmd = make(&spec);
                cmd.env(ENV, format!("{}:{}", status.write_raw(), token));
                if process_group {
                    cmd.process_group(0);
                }
                // Only for this spawn may a child inherit the write end.
                status.set_cloexec(false)?;
                let spawned = reactor.spawn(&mut cmd, on_death);
                let restored = status.set_cloexec(true);
                let spawned = spawned?;
                restored?;
                Ok((spawned.id, Some(spawned)))
            }
            How::Fork(run) => {
                let fd = status.write_raw();
                // SAFETY: the caller of `Start::fork` promised that `run` is
                // fit for the forked child. What we do there before it is
                // async-signal-safe: atomic stores (`set_channel`) and
                // `setpgid(2)`; after it, `_exit(2)`.
                match unsafe { reactor.fork(on_death) }? {
                    Forked::Child => {
                        super::worker::set_channel(fd, token);
                        if process_group {
                            let _ = nix::unistd::setpgid(
                                nix::unistd::Pid::from_raw(0),
                                nix::unistd::Pid::from_raw(0),
                            );
                        }
                        let code = run(&spec);
                        // SAFETY: `_exit` is async-signal-safe and skips
                        // the parent's atexit handlers and stdio buffers.
                        unsafe { libc::_exit(code) }
                    }
                    Forked::Parent(id) => {
                        if process_group {
                            // Also from the parent, so that a signal to the
                            // group cannot come before the child's own call
                            // (EACCES once it has, or ESRCH: harmless).
                            let pid = nix::unistd::Pid::from_raw(id.pid().as_raw());
                            let _ = nix::unistd::setpgid(pid, pid);
                        }
                        Ok((id, None))
                    }
                }
            }
        }
    }
}

impl fmt::Debug for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            How::Command(_) => f.write_str("Start::command(..)"),
            How::Fork(_) => f.write_str("Start::fork(..)"),
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
