//! [`Prepared`]: a command described once and started many times by
//! [`Reactor::spawn_prepared`](crate::Reactor::spawn_prepared), with
//! everything that can be built beforehand built at the first start.
//!
//! Mechanism: `clone(CLONE_VM | CLONE_VFORK | CLONE_FILES [| CLONE_PIDFD])`
//! on a stack of the `Prepared`'s own, then, in the child,
//! `close_range(low, ~0, CLOSE_RANGE_UNSHARE)`, which copies only the
//! descriptors below `low` (`sys/spawn.rs`). Cost: no allocation per start
//! in steady state, no `pidfd_open`, and a child whose descriptor-table
//! copy does not grow with the parent's table. Fallback: before Linux 5.9,
//! `unshare(CLONE_FILES)` (a full copy: std's cost). `plan.rs` holds the
//! prebuilt form and the per-start steps, `redirect.rs` the stdio kinds.

mod plan;
mod redirect;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use redirect::Redirect;

/// A command described once and started many times, each start as cheap
/// as this library can make it: the event-loop `Command` for a program a
/// loop starts over and over (a runner, a pool's workers, a build tool's
/// compiler).
///
/// ```
/// use evchild::{Hooks, Prepared, Reactor, Redirect};
///
/// let mut children = Reactor::<Vec<i32>>::new(Hooks::default())?;
/// let mut job = Prepared::new("sh");
/// job.args(["-c", "exit 0"]).stdin(Redirect::Null);
/// for code in 0..3 {
///     job.set_arg(1, format!("exit {code}")); // rebuilds that string only
///     children.spawn_prepared(&mut job, |codes, _, exit| {
///         codes.push(exit.status().and_then(|s| s.code()).unwrap_or(-1));
///     })?;
/// }
/// let mut codes = Vec::new();
/// while codes.len() < 3 {
///     children.dispatch(&mut codes)?; // a real program waits in mio::Poll
/// }
/// codes.sort();
/// assert_eq!(codes, [0, 1, 2]);
/// # Ok::<(), evchild::Error>(())
/// ```
///
/// # What is built once
///
/// The first start builds, and later starts reuse: the `argv` and `envp`
/// arrays of C strings (with their pointer arrays), the program's path
/// (looked up in `PATH` once), the working directory, a `/dev/null`
/// descriptor, a 64 KiB stack (with a guard page) for the child, and the
/// descriptor layout. A builder call drops only the part it changes:
/// [`set_arg`](Self::set_arg) replaces one string of `argv`,
/// [`env`](Self::env) and [`env_remove`](Self::env_remove) one entry of
/// `envp` (a `PATH` change also drops the program's path), a stdio or
/// [`pass_fd`](Self::pass_fd) change the layout. A start in steady state
/// allocates nothing (the reactor keeps one `Box` per child for its
/// callback), and makes in the parent: per `Piped` stream a `pipe2`, a
/// `dup3`, a `close`, an `fcntl` and after the start a `dup3`; then two
/// `rt_sigprocmask` around one `clone`; no `pidfd_open` (the clone returns
/// the pidfd) and no pipe to learn of an exec failure.
///
/// # Descriptors
///
/// The child gets its stdin, stdout and stderr and the descriptors given
/// with [`pass_fd`](Self::pass_fd), **and nothing else**, even a
/// descriptor of the parent that is not close-on-exec (std's `Command`
/// passes those on; pass them explicitly here). On kernels before 5.9 the
/// child does inherit those that are not close-on-exec, as with std.
///
/// The child shares the parent's descriptor table until it copies the part
/// it needs, the descriptors below the highest it uses. To keep that part
/// small whatever the number of descriptors the parent holds (10,000
/// pidfds of idle children, say), the `Prepared` **reserves its
/// descriptors when it is first built**, as low as they go: its
/// `/dev/null`, one slot (a copy of `/dev/null`, the lowest free from 3
/// up) per `Piped` stream, and each passed descriptor, moved to the lowest
/// free number. A pipe's child end is put into its slot for the start, and
/// the slot gets `/dev/null` back after it. So build it early, before the
/// table fills (start it once, or call [`build`](Self::build)); built late,
/// with its slots high, it works the same, at the cost of a copy of the
/// table up to them. The reserved descriptors are close-on-exec and stay
/// open as long as the `Prepared`.
///
/// # How it differs from [`Reactor::spawn`](crate::Reactor::spawn)
///
/// * The environment is resolved against the parent's **when it is
///   built**, not at each start: later changes to the parent's environment
///   (`std::env::set_var`) reach the child only through
///   [`env`](Self::env), or after [`env_clear`](Self::env_clear) or a new
///   `Prepared`. Otherwise std's rules: the parent's environment, with the
///   builder's changes applied; the program is looked up in the child's
///   `PATH` if the builder sets it, else in the parent's (at build time),
///   and used as given if it holds a `/` (relative to the
///   [`current_dir`](Self::current_dir) if one is set).
/// * No `pre_exec`, no uid, gid or groups, no `arg0`: `spawn` with std's
///   `Command` remains the general path.
/// * Every handled signal is reset to its default in the child and
///   `SIGPIPE` too (std does the same); ignored signals stay ignored; the
///   signal mask is the calling thread's, as with std.
///
/// Every guarantee of `spawn` holds: one report per child, the pidfd as
/// the child's identity (here from the `clone` itself, with the `Pidfd`
/// backend; the other backends ask for none), [`Error::Spawn`](crate::Error::Spawn)
/// with `NotFound` or `PermissionDenied` for a missing or non-executable
/// program (nothing registered, no zombie).
#[derive(Debug)]
pub struct Prepared {
    program: OsString,
    args: Vec<OsString>,
    env_clear: bool,
    env: BTreeMap<OsString, Option<OsString>>,
    dir: Option<PathBuf>,
    stdio: [Redirect; 3],
    pgid: Option<libc::pid_t>,
    passed: Vec<(RawFd, OwnedFd)>,
    parent_death: Option<(libc::c_int, libc::pid_t)>,
    /// A builder misuse, reported by the next start.
    invalid: Option<String>,
    built: plan::Built,
}

impl Prepared {
    /// A description of `program` with no arguments, the parent's
    /// environment and working directory, and inherited stdio, as std's
    /// `Command::new`. Builds nothing yet.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Prepared {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env_clear: false,
            env: BTreeMap::new(),
            dir: None,
            stdio: [Redirect::Inherit; 3],
            pgid: None,
            passed: Vec::new(),
            parent_death: None,
            invalid: None,
            built: plan::Built::default(),
        }
    }

    fn arg0(&self) -> &OsStr {
        &self.program
    }

    /// Appends an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        let arg = arg.as_ref().to_owned();
        if let Some(argv) = &mut self.built.argv {
            match c_string_of(&arg) {
                Some(c) => argv.push(c),
                None => self.built.argv = None, // reported by the rebuild
            }
        }
        self.args.push(arg);
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self.arg(arg);
        }
        self
    }

    /// Replaces argument `index` (0 is the first after the program) with
    /// `value`, rebuilding only that string of the prebuilt `argv`: for a
    /// runner that changes one argument per start (`sh -c LINE`).
    ///
    /// An `index` past the arguments changes nothing and is reported by
    /// the next start (which fails with [`Error::Spawn`](crate::Error::Spawn)
    /// and `InvalidInput`, as std reports a bad `Command` at `spawn`; the
    /// one after it proceeds).
    pub fn set_arg(&mut self, index: usize, value: impl AsRef<OsStr>) -> &mut Self {
        let value = value.as_ref();
        let Some(arg) = self.args.get_mut(index) else {
            self.invalid = Some(format!(
                "set_arg({index}) with {} arguments",
                self.args.len()
            ));
            return self;
        };
        arg.clear();
        arg.push(value);
        if let Some(argv) = &mut self.built.argv {
            match c_string_of(value) {
                Some(c) => argv.set(index + 1, c),
                None => self.built.argv = None,
            }
        }
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        let (key, value) = (key.as_ref(), value.as_ref());
        if key == "PATH" {
            self.built.path = None;
        }
        if let Some(envp) = &mut self.built.envp {
            match (plan::entry(key, value), plan::find(envp, key)) {
                (Ok(entry), Some(at)) => envp.set(at, entry),
                (Ok(entry), None) => envp.push(entry),
                (Err(_), _) => self.built.envp = None,
            }
        }
        self.env.insert(key.to_owned(), Some(value.to_owned()));
        self
    }

    /// Sets environment variables for the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, value) in vars {
            self.env(key, value);
        }
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        let key = key.as_ref();
        if key == "PATH" {
            self.built.path = None;
        }
        if let Some(envp) = &mut self.built.envp {
            if let Some(at) = plan::find(envp, key) {
                envp.remove(at);
            }
        }
        self.env.insert(key.to_owned(), None);
        self
    }

    /// Starts the child's environment empty (the variables set afterwards
    /// with [`env`](Self::env) are its only ones).
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.clear();
        self.built.envp = None;
        self.built.path = None;
        self
    }

    /// The child's working directory (`chdir` in the child before `execve`).
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.dir = Some(dir.as_ref().to_owned());
        self.built.dir = None;
        self
    }

    fn redirect(&mut self, stream: usize, redirect: Redirect) -> &mut Self {
        if self.stdio[stream] != redirect {
            self.stdio[stream] = redirect;
            self.built.layout = None;
        }
        self
    }

    /// The child's stdin (default [`Redirect::Inherit`]).
    pub fn stdin(&mut self, redirect: Redirect) -> &mut Self {
        self.redirect(0, redirect)
    }

    /// The child's stdout (default [`Redirect::Inherit`]).
    pub fn stdout(&mut self, redirect: Redirect) -> &mut Self {
        self.redirect(1, redirect)
    }

    /// The child's stderr (default [`Redirect::Inherit`]).
    pub fn stderr(&mut self, redirect: Redirect) -> &mut Self {
        self.redirect(2, redirect)
    }

    /// Puts the child in process group `pgid` (`setpgid(0, pgid)` in the
    /// child; 0: a new group that the child leads), as std's
    /// `CommandExt::process_group`.
    pub fn process_group(&mut self, pgid: i32) -> &mut Self {
        self.pgid = Some(pgid);
        self
    }

    /// Gives the child `fd` as its descriptor `child_fd` (3 or more: stdio
    /// goes through [`stdin`](Self::stdin) and its peers), not
    /// close-on-exec there. The `Prepared` owns `fd` from now on (keep a
    /// copy with `try_clone_to_owned` if the parent needs it too); it stays
    /// close-on-exec in the parent, so no other spawn inherits it, and is
    /// moved to the lowest free descriptor when the `Prepared` is built.
    /// Passing another `fd` as the same `child_fd` replaces the first.
    ///
    /// A `child_fd` below 3 changes nothing and is reported by the next
    /// start (which fails with [`Error::Spawn`](crate::Error::Spawn) and
    /// `InvalidInput`; the one after it proceeds).
    pub fn pass_fd(&mut self, fd: OwnedFd, child_fd: RawFd) -> &mut Self {
        if child_fd < 3 {
            self.invalid = Some(format!("pass_fd to descriptor {child_fd}, below 3"));
            return self;
        }
        // Close-on-exec in the parent from now on, so no other spawn
        // inherits it (the child gets it through its move).
        if let Err(e) = crate::sys::spawn::set_cloexec(std::os::fd::AsFd::as_fd(&fd)) {
            self.invalid = Some(format!("pass_fd: fcntl(FD_CLOEXEC): {e}"));
            return self;
        }
        self.passed.retain(|(target, _)| *target != child_fd);
        self.passed.push((child_fd, fd));
        self.built.layout = None;
        self
    }

    /// `prctl(PR_SET_PDEATHSIG)` in the child, with the check that its
    /// parent is still `master` (else it signals itself at once).
    pub(crate) fn parent_death_signal(&mut self, signal: Option<(i32, i32)>) -> &mut Self {
        self.parent_death = signal;
        self
    }

    /// Builds every part of the prebuilt form now (see *What is built
    /// once*), reserving the descriptors while the table is small; the
    /// first start does it otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`](crate::Error::Spawn): an argument or variable holds
    /// a NUL byte or a builder call was misused (`InvalidInput`), the
    /// program is not found in `PATH` (`NotFound`, or `PermissionDenied`
    /// if only non-executable files of that name are), or a descriptor or
    /// the stack could not be had (`EMFILE`, `ENOMEM`). What was built
    /// stays built.
    pub fn build(&mut self) -> crate::Result<()> {
        self.build_io().map_err(|source| self.spawn_error(source))
    }

    pub(crate) fn build_io(&mut self) -> std::io::Result<()> {
        self.build_parts()
    }

    pub(crate) fn spawn_error(&self, source: std::io::Error) -> crate::Error {
        crate::Error::Spawn {
            program: self.program.to_string_lossy().into_owned(),
            source,
        }
    }

    /// The program, as given to [`new`](Self::new).
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments (not the program).
    pub fn get_args(&self) -> impl ExactSizeIterator<Item = &OsStr> {
        self.args.iter().map(OsString::as_os_str)
    }

    /// The environment changes made with the builder (`None`: removed), in
    /// key order, as std's `Command::get_envs`.
    pub fn get_envs(&self) -> impl ExactSizeIterator<Item = (&OsStr, Option<&OsStr>)> {
        self.env.iter().map(|(k, v)| (k.as_os_str(), v.as_deref()))
    }

    /// The working directory, if one was set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The descriptors the `Prepared` holds now: its `/dev/null`, its
    /// slots and the passed descriptors (empty before it is built, but for
    /// passed ones). All close-on-exec.
    pub fn reserved_fds(&self) -> Vec<RawFd> {
        self.reserved()
    }
}

/// A C string of an argument or value, if it holds no NUL byte.
fn c_string_of(s: &OsStr) -> Option<std::ffi::CString> {
    std::ffi::CString::new(s.as_bytes()).ok()
}
