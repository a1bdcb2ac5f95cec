//! Children started from a [`Prepared`] description: the same bracket as
//! `spawn` (handler before the child exists, registration before the call
//! returns), around the `Prepared`'s own start (`clone` with
//! `CLONE_VFORK`, see `sys/spawn.rs`), which with the `Pidfd` backend also
//! gives the child's pidfd, so no `pidfd_open` follows.

use mio::unix::pipe::{Receiver, Sender};

use crate::reactor::OnDeath;
use crate::sys::spawn::SigchldRefused;
use crate::{Exit, Prepared, Reactor, Result, Spawned};

impl<C> Reactor<C> {
    /// Starts `prepared` and registers the child, so that `on_death` runs
    /// exactly once when it dies: [`spawn`](Self::spawn) for a command
    /// started many times, with what can be built beforehand built once
    /// (see [`Prepared`]).
    ///
    /// ```
    /// use evchild::{Hooks, Prepared, Reactor, Redirect};
    ///
    /// let mut children = Reactor::<usize>::new(Hooks::default())?;
    /// let mut truth = Prepared::new("true");
    /// truth.stdin(Redirect::Null);
    /// truth.build()?; // early: its descriptors are reserved low
    /// for _ in 0..10 {
    ///     children.spawn_prepared(&mut truth, |done, _, exit| {
    ///         assert!(exit.status().is_some_and(|s| s.success()));
    ///         *done += 1;
    ///     })?;
    /// }
    /// let mut done = 0;
    /// while done < 10 {
    ///     children.dispatch(&mut done)?; // a real program waits in mio::Poll
    /// }
    /// # Ok::<(), evchild::Error>(())
    /// ```
    ///
    /// What one start costs in the parent, once the `Prepared` is built:
    /// per [`Piped`](crate::Redirect::Piped) stream a `pipe2`, two `dup3`,
    /// a `close` and an `fcntl`; two `rt_sigprocmask` and one `clone`;
    /// then the registration (with the `Pidfd` backend one `epoll_ctl`,
    /// and no `pidfd_open`: the clone returned the pidfd). Where the
    /// reactor's children need no `SIGCHLD` handler (the `Pidfd` backend,
    /// `Mainloop` mode), not even the disposition query of every other
    /// start: the child, which reads every disposition to reset the
    /// handlers, checks `SIGCHLD` as it does and stops before it changes
    /// anything else (process group, directory, descriptors) and before
    /// `execve` if `SIGCHLD` is ignored or has `SA_NOCLDWAIT`. It allocates
    /// nothing but the reactor's `Box` for `on_death`. The child copies
    /// only the descriptors below the `Prepared`'s highest (see its
    /// *Descriptors*), and no page table.
    ///
    /// The `SIGCHLD` handler is in place before the child exists (where the
    /// reactor's children need it), and the child is registered before
    /// this returns, so a child that dies at once is reported, once. With a
    /// backend other than `Pidfd`, no pidfd is asked for, and the child is
    /// watched exactly as a `spawn` child.
    ///
    /// # Errors
    ///
    /// As for [`spawn`](Self::spawn):
    /// * [`Error::Spawn`](crate::Error::Spawn) if the child could not be
    ///   started: the program is missing (`NotFound`) or not executable
    ///   (`PermissionDenied`), the working directory does not exist
    ///   (`NotFound`), a builder call was misused or a string holds a NUL
    ///   byte (`InvalidInput`), or `clone`, a pipe or a descriptor failed.
    ///   Nothing is registered, and no zombie is left (a child whose exec
    ///   failed has been reaped).
    /// * [`Error::HandlerConflict`](crate::Error::HandlerConflict):
    ///   nothing of the command ran (a child the check was left to was
    ///   cloned and `_exit`ed before `execve`; under `SA_NOCLDWAIT` with a
    ///   handler of the application's, that handler sees its `SIGCHLD`).
    /// * [`Error::TooManyReactors`](crate::Error::TooManyReactors),
    ///   [`Error::ForkedChild`](crate::Error::ForkedChild): nothing was
    ///   started.
    pub fn spawn_prepared(
        &mut self,
        prepared: &mut Prepared,
        on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
    ) -> Result<Spawned> {
        self.check_process()?;
        prepared
            .build_io()
            .map_err(|source| prepared.spawn_error(source))?;
        let on_death: OnDeath<C> = Box::new(on_death);
        let pipes = prepared
            .open_pipes()
            .map_err(|source| prepared.spawn_error(source))?;
        // From here the slots hold the child's pipe ends: they get
        // /dev/null back whatever happens, so the parent sees end of file.
        let want_pidfd = self.watcher.uses_pidfds();
        // Where the handler is not needed, the child checks the SIGCHLD
        // disposition (it reads them all anyway): no query here.
        let started = self.start_child(true, on_death, |watcher, child_checks| {
            let (pid, pidfd) = prepared
                .launch(want_pidfd, child_checks)
                .map_err(|source| match SigchldRefused::of(&source) {
                    Some(refused) => watcher.refused_by_child(refused.ignored),
                    None => prepared.spawn_error(source),
                })?;
            Ok((pid, pidfd, ()))
        });
        prepared.release();
        let (id, ()) = started?;
        Ok(Spawned {
            id,
            stdin: pipes.stdin.map(Sender::from),
            stdout: pipes.stdout.map(Receiver::from),
            stderr: pipes.stderr.map(Receiver::from),
        })
    }
}
