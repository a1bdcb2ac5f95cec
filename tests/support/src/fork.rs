//! Children forked without exec, through a reactor: they exit at once, or
//! when a [`Gate`] opens, or when killed.
//!
//! The test binary has other threads, so a child forked here only calls
//! async-signal-safe functions (`_exit`, `read`, `close`, `dup2`, `execv`)
//! until it dies; each helper says which.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use evchild::{ChildId, Exit, Forked, Pid, Reactor};

use crate::fd::{pipe, read_byte};
use crate::report::{record, Deaths};

/// Calls `_exit(code)`. For forked test children: `_exit` is
/// async-signal-safe, and skips the parent's atexit handlers and buffers.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// A pipe that forked children block on until the test opens the gate
/// (drops the write end, which only the test holds).
///
/// It is also their lifeline: a child meant to wait until it is killed
/// ([`fork_waiting`]) blocks on a gate too, not in `pause()`. If the test
/// fails (its gates are dropped while unwinding) or the test process dies,
/// such children see end of file and exit, so a failing test leaves no
/// orphan behind holding the test runner's output pipes open.
pub struct Gate {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

/// The exit code of a [`fork_waiting`] child whose gate opened before anyone
/// killed it.
pub const NOT_KILLED: i32 = 86;

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        let (read, write) = pipe();
        Gate {
            read,
            write: Some(write),
        }
    }

    /// The read end's descriptor number, for a forked child that waits on
    /// it by itself (closing every other descriptor first, as
    /// [`wait_in_child`](Self::wait_in_child) does).
    pub fn read_raw(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Lets the children waiting on this gate go.
    pub fn open(&mut self) {
        self.write = None;
    }

    /// In a forked child: closes every other descriptor (so the child holds
    /// no write end of this gate or any other, which would keep that gate
    /// shut), waits for end of file on the gate, then `_exit(code)`. Only
    /// calls `close(2)`, `read(2)` and `_exit(2)`, which are
    /// async-signal-safe, and allocates nothing.
    pub fn wait_in_child(&self, code: i32) -> ! {
        let gate = self.read.as_raw_fd();
        for fd in 3..1024 {
            if fd != gate {
                // SAFETY: close(2) is async-signal-safe; this process exits
                // below and uses none of these descriptors.
                unsafe { libc::close(fd) };
            }
        }
        read_byte(gate);
        exit_child(code)
    }
}

/// Forks through `reactor` a child that `_exit`s with `code` at once.
#[track_caller]
pub fn fork_exit<C>(
    reactor: &mut Reactor<C>,
    code: i32,
    on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
) -> ChildId {
    // SAFETY: the child only calls `_exit` (`exit_child`), which is
    // async-signal-safe.
    match unsafe { reactor.fork(on_death) } {
        Ok(Forked::Child) => exit_child(code),
        Ok(Forked::Parent(id)) => id,
        Err(e) => panic!("fork: {e}"),
    }
}

/// Forks through `reactor` a child that exits with `code` once `gate` opens.
#[track_caller]
pub fn fork_gated<C>(
    reactor: &mut Reactor<C>,
    gate: &Gate,
    code: i32,
    on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
) -> ChildId {
    // SAFETY: the child only runs `Gate::wait_in_child`, which is
    // async-signal-safe (see there).
    match unsafe { reactor.fork(on_death) } {
        Ok(Forked::Child) => gate.wait_in_child(code),
        Ok(Forked::Parent(id)) => id,
        Err(e) => panic!("fork: {e}"),
    }
}

/// Forks through `reactor` a child that waits until a signal kills it (or
/// `gate` opens: then it exits with [`NOT_KILLED`]).
#[track_caller]
pub fn fork_waiting<C>(
    reactor: &mut Reactor<C>,
    gate: &Gate,
    on_death: impl FnOnce(&mut C, &mut Reactor<C>, Exit) + Send + 'static,
) -> ChildId {
    fork_gated(reactor, gate, NOT_KILLED, on_death)
}

/// `nix::unistd::fork`, as a `fork_replacement` returns it: `Some(pid)` in
/// the parent, `None` in the child.
///
/// # Safety
/// As `fork(2)`: the child may only call async-signal-safe functions.
pub unsafe fn forward_fork() -> std::io::Result<Option<Pid>> {
    // SAFETY: forwarded to the caller.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(Pid::from_raw(child.as_raw()))),
        nix::unistd::ForkResult::Child => Ok(None),
    }
}

/// The command that lists a process's open descriptors.
pub const LIST: &str = "ls -l /proc/self/fd/";

/// Forks through the reactor a child that execs `sh -c 'ls -l
/// /proc/self/fd/'` with its output in a pipe; returns the output and the
/// child's id.
#[track_caller]
pub fn fork_exec_listing(reactor: &mut Reactor<Deaths>) -> (String, ChildId) {
    use std::ffi::CString;
    let (read, write) = pipe();
    // Everything the child needs, allocated before the fork.
    let args: Vec<CString> = ["sh", "-c", LIST]
        .iter()
        .map(|s| CString::new(*s).expect("no NUL"))
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let path = CString::new("/bin/sh").expect("no NUL");
    let write_fd = write.as_raw_fd();

    // SAFETY: the child only calls `dup2`, `execv` and `_exit`, which are
    // async-signal-safe, with memory allocated before the fork.
    match unsafe { reactor.fork(record) } {
        Ok(Forked::Child) => {
            // SAFETY: see above. `dup2` onto stdout clears FD_CLOEXEC on the
            // copy only; `argv` is a null-terminated array of C strings.
            unsafe {
                libc::dup2(write_fd, 1);
                libc::execv(path.as_ptr(), argv.as_ptr());
            }
            exit_child(127)
        }
        Ok(Forked::Parent(id)) => {
            drop(write);
            let mut out = String::new();
            std::fs::File::from(read)
                .read_to_string(&mut out)
                .expect("read listing");
            (out, id)
        }
        Err(e) => panic!("fork: {e}"),
    }
}
