//! Who gets which pid: the reaping decisions, behind a small OS seam.
//!
//! [`Reap`] is the seam: `waitpid(pid, WNOHANG)` and `waitpid(-1, WNOHANG)`.
//! [`SysReap`](crate::sys::SysReap) implements it with the real calls; the
//! fuzz model implements it with a scripted process table. The two functions
//! here decide, for each answer, whether it is a death of ours, a child lost
//! to another reaper, or a stranger, and they are the same code in both.
//!
//! * [`reap_own`] (`Library`, `Mainloop` + `sigchld_occurred`): one
//!   `waitpid(pid, WNOHANG)` per registered child. O(N) in the number of live
//!   children, and never touches a child that is not ours.
//! * [`reap_all`] (`LibraryAlways`): `waitpid(-1, WNOHANG)` until it answers
//!   0 or `ECHILD`: k+1 calls for k exits, whatever N is.
//!
//! Both retry `EINTR`. `ECHILD` for a registered pid means another reaper took
//! it: a [`Reaped::Lost`] report, never a made-up status.

use std::io;

use nix::errno::Errno;

use crate::table::ChildTable;
use crate::Pid;

/// The OS seam: the two forms of `waitpid` evchild uses, both `WNOHANG`.
pub(crate) trait Reap {
    /// `waitpid(pid, &status, WNOHANG)`: `Ok(Some(raw_status))` if it was
    /// reaped now, `Ok(None)` if it is still running, `Err` with the errno
    /// otherwise (`ECHILD`: not a waitable child of ours).
    fn reap_pid(&mut self, pid: Pid) -> Result<Option<libc::c_int>, Errno>;
    /// `waitpid(-1, &status, WNOHANG)`: `Ok(Some((pid, raw_status)))` for a
    /// child reaped now, `Ok(None)` if children exist but none has exited.
    fn reap_any(&mut self) -> Result<Option<(Pid, libc::c_int)>, Errno>;
}

impl<R: Reap + ?Sized> Reap for &mut R {
    fn reap_pid(&mut self, pid: Pid) -> Result<Option<libc::c_int>, Errno> {
        (**self).reap_pid(pid)
    }
    fn reap_any(&mut self) -> Result<Option<(Pid, libc::c_int)>, Errno> {
        (**self).reap_any()
    }
}

/// One outcome of a reaping pass.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reaped<T> {
    /// A registered child died; it has left the table.
    Died(Pid, libc::c_int, T),
    /// A registered child was reaped by someone else; it has left the table.
    Lost(Pid, T),
    /// A child that is not registered died (reap-all only).
    Stranger(Pid, libc::c_int),
}

/// Reaps the registered children that have exited, one `waitpid(pid)` each,
/// and hands each outcome to `out` after removing the child from the table.
/// `scratch` is reused between calls, so a steady state allocates nothing.
///
/// An unexpected errno stops the pass and is returned; children not yet
/// looked at are looked at by the next pass.
pub(crate) fn reap_own<R: Reap, T>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    scratch: &mut Vec<(Pid, Option<libc::c_int>)>,
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    scratch.clear();
    let mut failure = None;
    for pid in table.pids() {
        match retry_eintr(|| sys.reap_pid(pid)) {
            Ok(Some(status)) => scratch.push((pid, Some(status))),
            Ok(None) => {}
            Err(Errno::ECHILD) => scratch.push((pid, None)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    for (pid, status) in scratch.drain(..) {
        if let Some(value) = table.remove(pid) {
            out(match status {
                Some(status) => Reaped::Died(pid, status, value),
                None => Reaped::Lost(pid, value),
            });
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Reaps every exited child of the process with `waitpid(-1)`, registered or
/// not. If the kernel says the process has no children at all (`ECHILD`), any
/// child still registered was reaped by someone else and is reported lost.
pub(crate) fn reap_all<R: Reap, T>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    loop {
        match retry_eintr(|| sys.reap_any()) {
            Ok(Some((pid, status))) => match table.remove(pid) {
                Some(value) => out(Reaped::Died(pid, status, value)),
                None => out(Reaped::Stranger(pid, status)),
            },
            Ok(None) => return Ok(()),
            Err(Errno::ECHILD) => {
                for (pid, value) in table.drain() {
                    out(Reaped::Lost(pid, value));
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn retry_eintr<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}
