//! Children started with `std::process::Command`, and children started
//! elsewhere (`watch`).
//!
//! `spawn` hands the command to std unchanged, so std keeps its fast path
//! (`posix_spawn`, which uses `vfork`-like cloning, when the command allows
//! it): evchild adds no `pre_exec` of its own. It only brackets the call:
//! where the reactor's children need the `SIGCHLD` handler it is installed
//! before the child exists, and the child is registered before `spawn`
//! returns, the same ordering as `fork`. Exec
//! failures are reported by std synchronously, after std itself has reaped
//! the failed child.

use std::borrow::BorrowMut;
use std::process::{Child, Command};

use mio::unix::pipe::{Receiver, Sender};

use crate::reactor::OnDeath;
use crate::{ChildId, Error, Exit, Pid, Reactor, Result};

/// A child started by [`Reactor::spawn`]: its id and the parent's ends of its
/// piped stdio.
///
/// The pipes are non-blocking and close-on-exec, ready to register in the
/// same `mio::Poll` as the reactor. Each is `Some` only if the command asked
/// for it with `Stdio::piped()`. Dropping a pipe closes it (dropping `stdin`
/// is how the child sees end-of-file); dropping a `Spawned` neither kills nor
/// reaps the child: its death is reported to its callback as usual.
#[derive(Debug)]
#[non_exhaustive]
pub struct Spawned {
    /// The child's id.
    pub id: ChildId,
    /// The write end of the child's standard input.
    pub stdin: Option<Sender>,
    /// The read end of the child's standard output.
    pub stdout: Option<Receiver>,
    /// The read end of the child's standard error.
    pub stderr: Option<Receiver>,
}

impl<C> Reactor<C> {
    /// Starts `command` and registers the child, so that `on_death` runs
    /// exactly once when it dies.
    ///
    /// ```
    /// use std::io::Read;
    /// use std::process::{Command, Stdio};
    /// use evchild::{Hooks, Reactor};
    ///
    /// let mut children = Reactor::<Option<i32>>::new(Hooks::default())?;
    /// let mut child = children.spawn(
    ///     Command::new("sh").args(["-c", "echo hello; exit 4"]).stdout(Stdio::piped()),
    ///     |code, _, exit| *code = exit.status().and_then(|s| s.code()),
    /// )?;
    /// let mut code = None;
    /// while code.is_none() {
    ///     children.dispatch(&mut code)?; // a real program waits in mio::Poll
    /// }
    /// assert_eq!(code, Some(4));
    ///
    /// // The pipe is non-blocking: in a real program, register it in the
    /// // loop. Here the child is gone, so everything is there to read.
    /// let mut out = String::new();
    /// child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    /// assert_eq!(out, "hello\n");
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// `command` is a [`Command`] or a `&mut Command`, so a builder chain
    /// works (`children.spawn(Command::new("ls").arg("-l"), ..)`), and so
    /// does a command built beforehand, kept (`&mut command`) or given
    /// away (`command`: it is dropped once the child has started, and with
    /// it the parent's copies of the `Stdio`s it held, as a pipeline
    /// needs).
    ///
    /// The `SIGCHLD` handler is in place before the child exists (`Library`
    /// mode), and the child is registered before this returns, so a child
    /// that dies at once is reported, once. Process groups
    /// (`CommandExt::process_group`) work; see
    /// [`kill_group`](Reactor::kill_group).
    ///
    /// Do not wait for the child through other means; the reactor reaps it.
    ///
    /// The child inherits what std passes on: the environment, descriptors
    /// not marked close-on-exec, and, since Rust 1.66, **the calling thread's
    /// signal mask**. A program that blocks signals (for `signalfd`, say)
    /// starts children with those signals blocked, and a `SIGTERM` from
    /// `terminate` then waits, pending, until the `SIGKILL`. Prefer a handler
    /// that writes to a pipe (as evchild does for `SIGCHLD`) to blocking:
    /// handled signals are reset to their default at exec, blocked ones stay
    /// blocked. Unblocking them in `pre_exec` works too, but pushes std onto
    /// its slow `fork` path.
    ///
    /// # Errors
    ///
    /// * [`Error::Spawn`] if the child could not be started: the program is
    ///   missing (`NotFound`), not executable (`PermissionDenied`), the
    ///   working directory does not exist (`NotFound`), or `fork`/`clone`
    ///   failed. Nothing is registered, no zombie is left (std reaps a child
    ///   whose exec failed), and the handler's users are as they were.
    /// * [`Error::HandlerConflict`] if `SIGCHLD` is ignored or has
    ///   `SA_NOCLDWAIT` (checked before every start, in every mode: the
    ///   kernel would reap the child itself), or [`Error::TooManyReactors`]
    ///   if the handler cannot be installed; nothing was started.
    /// * [`Error::ForkedChild`] in a forked child; nothing was started.
    /// * [`Error::Io`] (`fcntl`) if a pipe could not be made non-blocking (it
    ///   cannot happen to a valid pipe on Linux): the child had started, and
    ///   has been sent `SIGKILL`; its death callback still runs once, with
    ///   signal 9.
    pub fn spawn(
        &mut self,
        mut command: impl BorrowMut<Command>,
        on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
    ) -> Result<Spawned> {
        self.check_process()?;
        let command = command.borrow_mut();
        let on_death: OnDeath<C> = Box::new(on_death);
        let (id, mut child) = self.start_child(false, on_death, |_, _| {
            let child = command.spawn().map_err(|source| Error::Spawn {
                program: command.get_program().to_string_lossy().into_owned(),
                source,
            })?;
            Ok((Pid::from(child.id()), None, child))
        })?;
        // std's `Child` neither waits nor kills on drop: from here on the
        // reactor alone owns the child's death.
        match nonblocking_stdio(&mut child) {
            Ok((stdin, stdout, stderr)) => Ok(Spawned {
                id,
                stdin,
                stdout,
                stderr,
            }),
            Err(e) => {
                // The caller gets no id, so it could not stop a child it
                // cannot talk to: end it now. Its death is still reported.
                let _ = self.send(id, crate::Signal::KILL);
                Err(e)
            }
        }
    }

    /// Adopts `pid`, a child this process started some other way (with
    /// `std::process::Command`, another library, a plain `fork`), so that
    /// `on_death` runs exactly once when it dies.
    ///
    /// The child may already have exited (it is then reported by the next
    /// `dispatch`, which this call makes sure happens) but must not have been
    /// reaped, and from now on nobody else may wait for it.
    ///
    /// # Errors
    ///
    /// Nothing is registered on error.
    /// * [`Error::InvalidPid`] if `pid` is ≤ 0 or this process's own.
    /// * [`Error::NotAChild`] if `pid` is not a child of this process, or was
    ///   already reaped (probed with `waitid(WNOWAIT)`, which reaps nothing).
    /// * [`Error::AlreadyWatched`] if `pid` is registered with this reactor.
    /// * [`Error::HandlerConflict`] / [`Error::TooManyReactors`] (`Library`
    ///   mode), [`Error::ForkedChild`], [`Error::Io`] (`waitid`).
    pub fn watch(
        &mut self,
        pid: Pid,
        on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
    ) -> Result<ChildId> {
        self.check_process()?;
        if pid.as_raw() <= 0 || pid == self.owner {
            return Err(Error::InvalidPid { pid });
        }
        if self.children.get(pid).is_some() {
            return Err(Error::AlreadyWatched { pid });
        }
        let on_death: OnDeath<C> = Box::new(on_death);
        self.children.reserve_one();
        // Handler first: a child that dies after the probe must wake us.
        let acquired = self.watcher.before_start(self.children.len())?;
        let starting = self.watcher.start();
        let registered = match crate::sys::probe_child(pid) {
            Ok(()) => self
                .register(pid, on_death)
                .inspect(|&id| self.watcher.claim(starting, id)),
            Err(nix::errno::Errno::ECHILD) => Err(Error::NotAChild { pid }),
            Err(e) => Err(Error::io("waitid", e)),
        };
        match registered {
            Ok(id) => {
                // Its SIGCHLD may have come before our handler was there:
                // look now.
                self.watcher.wake();
                Ok(id)
            }
            Err(e) => {
                self.watcher.abort_start(acquired);
                Err(e)
            }
        }
    }
}

type Stdio = (Option<Sender>, Option<Receiver>, Option<Receiver>);

/// Turns std's blocking pipe ends into non-blocking mio pipes.
fn nonblocking_stdio(child: &mut Child) -> Result<Stdio> {
    let fail = |e| Error::io("fcntl(O_NONBLOCK)", e);
    let stdin = child.stdin.take().map(Sender::from);
    let stdout = child.stdout.take().map(Receiver::from);
    let stderr = child.stderr.take().map(Receiver::from);
    if let Some(pipe) = &stdin {
        pipe.set_nonblocking(true).map_err(fail)?;
    }
    for pipe in stdout.iter().chain(&stderr) {
        pipe.set_nonblocking(true).map_err(fail)?;
    }
    Ok((stdin, stdout, stderr))
}
