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
//! * [`reap_peek`] (`Library` with the peek backend): `waitid(WNOWAIT)`
//!   names the next exited child without reaping it; reap it if it is ours
//!   and peek again. O(k) for k exits, unless someone else's zombie is first
//!   in line, when it falls back to `reap_own` for that pass.
//! * [`reap_all`] (`LibraryAlways`): `waitpid(-1, WNOHANG)` until it answers
//!   0 or `ECHILD`: k+1 calls for k exits, whatever N is.
//!
//! Both retry `EINTR`. `ECHILD` for a registered pid means another reaper took
//! it: a [`Reaped::Lost`] report, never a made-up status.

use std::io;

use nix::errno::Errno;

use crate::table::ChildTable;
use crate::{Pid, ResourceUsage};

/// A wait status, with the child's resource usage where the OS gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Waited {
    pub(crate) raw: libc::c_int,
    pub(crate) usage: Option<ResourceUsage>,
}

impl From<libc::c_int> for Waited {
    fn from(raw: libc::c_int) -> Self {
        Waited { raw, usage: None }
    }
}

/// The OS seam: the two forms of `waitpid` evchild uses, both `WNOHANG`.
pub(crate) trait Reap {
    /// `waitpid(pid, &status, WNOHANG)`: `Ok(Some(raw_status))` if it was
    /// reaped now, `Ok(None)` if it is still running, `Err` with the errno
    /// otherwise (`ECHILD`: not a waitable child of ours).
    fn reap_pid(&mut self, pid: Pid) -> Result<Option<Waited>, Errno>;
    /// `waitpid(-1, &status, WNOHANG)`: `Ok(Some((pid, raw_status)))` for a
    /// child reaped now, `Ok(None)` if children exist but none has exited.
    fn reap_any(&mut self) -> Result<Option<(Pid, Waited)>, Errno>;
    /// `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`: the pid of some child
    /// that has exited, *without* reaping it; `Ok(None)` if children exist
    /// but none has exited.
    fn peek(&mut self) -> Result<Option<Pid>, Errno>;
    /// `waitpid(pid, &status, WNOHANG | WUNTRACED | WCONTINUED)`: like
    /// `reap_pid`, but a stop or a continue is an answer too (and reaps
    /// nothing).
    fn reap_pid_or_state(&mut self, pid: Pid) -> Result<Option<Waited>, Errno> {
        self.reap_pid(pid)
    }
}

impl<R: Reap + ?Sized> Reap for &mut R {
    fn reap_pid(&mut self, pid: Pid) -> Result<Option<Waited>, Errno> {
        (**self).reap_pid(pid)
    }
    fn reap_any(&mut self) -> Result<Option<(Pid, Waited)>, Errno> {
        (**self).reap_any()
    }
    fn peek(&mut self) -> Result<Option<Pid>, Errno> {
        (**self).peek()
    }
    fn reap_pid_or_state(&mut self, pid: Pid) -> Result<Option<Waited>, Errno> {
        (**self).reap_pid_or_state(pid)
    }
}

/// One outcome of a reaping pass.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reaped<T> {
    /// A registered child died; it has left the table.
    Died(Pid, Waited, T),
    /// A registered child was reaped by someone else; it has left the table.
    Lost(Pid, T),
    /// A child that is not registered died (reap-all only).
    Stranger(Pid, Waited),
    /// A registered child stopped, with this signal; it stays registered.
    Stopped(Pid, libc::c_int),
    /// A registered child continued; it stays registered.
    Continued(Pid),
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
    scratch: &mut Vec<(Pid, Option<Waited>)>,
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

/// Reaps the registered children that have exited, finding them with a
/// peek (`waitid(WNOWAIT)`) instead of asking each: a peek and a `waitpid`
/// per exit, whatever the number of live children. If the first exited
/// child in line is not registered (someone else's zombie, not yet collected
/// by its owner), the peek cannot see past it, so this pass falls back to
/// [`reap_own`]. Never reaps a child that is not registered.
///
/// A registered child that another reaper took leaves no zombie to peek at:
/// it is reported [`Reaped::Lost`] only by a later fallback scan (a stranger
/// first in line, or no child left at all), not by this pass.
pub(crate) fn reap_peek<R: Reap, T>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    scratch: &mut Vec<(Pid, Option<Waited>)>,
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    loop {
        let pid = match retry_eintr(|| sys.peek()) {
            Ok(None) => return Ok(()),
            Ok(Some(pid)) if table.get(pid).is_some() => pid,
            // A stranger first in line, or no child at all (then every
            // registered child was taken by someone else: the scan says so).
            Ok(Some(_)) | Err(Errno::ECHILD) => return reap_own(sys, table, scratch, out),
            Err(e) => return Err(e.into()),
        };
        match retry_eintr(|| sys.reap_pid(pid)) {
            Ok(Some(status)) => {
                if let Some(value) = table.remove(pid) {
                    out(Reaped::Died(pid, status, value));
                }
            }
            Err(Errno::ECHILD) => {
                if let Some(value) = table.remove(pid) {
                    out(Reaped::Lost(pid, value));
                }
            }
            // Peeked as exited, yet not waitable: another thread reaped it
            // and the pid came back. Let the scan sort it out.
            Ok(None) => return reap_own(sys, table, scratch, out),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reaps the listed children (those whose pidfds are ready), one
/// `waitpid(pid)` each: O(k) for k exits. Pids not (or no longer) in the
/// table are skipped; one still running stays registered.
pub(crate) fn reap_listed<R: Reap, T>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    pids: &[Pid],
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    for &pid in pids {
        if table.get(pid).is_none() {
            continue;
        }
        match retry_eintr(|| sys.reap_pid(pid)) {
            Ok(Some(status)) => {
                if let Some(value) = table.remove(pid) {
                    out(Reaped::Died(pid, status, value));
                }
            }
            Ok(None) => {}
            Err(Errno::ECHILD) => {
                if let Some(value) = table.remove(pid) {
                    out(Reaped::Lost(pid, value));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// For the children that asked for stop/continue reports: one
/// `waitpid(pid, WNOHANG | WUNTRACED | WCONTINUED)` each, which reports a
/// stop, a continue, or the death. `pids` is pruned of children no longer
/// registered.
pub(crate) fn reap_states<R: Reap, T>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    pids: &mut Vec<Pid>,
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    pids.retain(|&pid| table.get(pid).is_some());
    for &pid in pids.iter() {
        // Several changes may be queued (stop, then continue): ask until
        // there is nothing more, or the child is gone.
        loop {
            match retry_eintr(|| sys.reap_pid_or_state(pid)) {
                Ok(None) => break,
                Ok(Some(w)) if libc::WIFSTOPPED(w.raw) => {
                    out(Reaped::Stopped(pid, libc::WSTOPSIG(w.raw)))
                }
                Ok(Some(w)) if libc::WIFCONTINUED(w.raw) => out(Reaped::Continued(pid)),
                Ok(Some(status)) => {
                    if let Some(value) = table.remove(pid) {
                        out(Reaped::Died(pid, status, value));
                    }
                    break;
                }
                Err(Errno::ECHILD) => {
                    if let Some(value) = table.remove(pid) {
                        out(Reaped::Lost(pid, value));
                    }
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    pids.retain(|&pid| table.get(pid).is_some());
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::Procs;

    fn pid(raw: libc::pid_t) -> Pid {
        Pid::from_raw(raw)
    }

    /// A process with children 1..=n, all registered (token = pid) and all
    /// running.
    fn world(n: libc::pid_t) -> (Procs, ChildTable<libc::pid_t>) {
        let (mut procs, mut table) = (Procs::default(), ChildTable::default());
        for raw in 1..=n {
            procs.spawn(pid(raw));
            assert!(table.insert(pid(raw), raw).is_none());
        }
        (procs, table)
    }

    fn own(procs: &mut Procs, table: &mut ChildTable<libc::pid_t>) -> io::Result<Vec<Reaped<i32>>> {
        let mut out = Vec::new();
        reap_own(procs, table, &mut Vec::new(), |r| out.push(r)).map(|()| out)
    }

    fn all(procs: &mut Procs, table: &mut ChildTable<libc::pid_t>) -> io::Result<Vec<Reaped<i32>>> {
        let mut out = Vec::new();
        reap_all(procs, table, |r| out.push(r)).map(|()| out)
    }

    #[test]
    fn selective_retries_eintr() {
        let (mut procs, mut table) = world(2);
        procs.exit(pid(2), 7 << 8);
        procs.inject_eintr(3);
        let out = own(&mut procs, &mut table).unwrap();
        assert_eq!(out, [Reaped::Died(pid(2), (7 << 8).into(), 2)]);
        assert_eq!(procs.calls, 2 + 3);
        assert!(table.contains(pid(1)) && table.len() == 1);
    }

    #[test]
    fn reap_all_retries_eintr() {
        let (mut procs, mut table) = world(2);
        procs.exit(pid(1), libc::SIGKILL);
        procs.inject_eintr(2);
        let out = all(&mut procs, &mut table).unwrap();
        assert_eq!(out, [Reaped::Died(pid(1), libc::SIGKILL.into(), 1)]);
        // k+1 answers for k exits, plus the interrupted calls.
        assert_eq!(procs.calls, 2 + 2);
    }

    #[test]
    fn echild_on_a_registered_pid_is_lost() {
        let (mut procs, mut table) = world(3);
        procs.exit(pid(2), 0);
        assert!(procs.foreign_reap(pid(2)).is_some());
        // Adopted by mistake: never a child of this process.
        table.insert(pid(9), 9);
        let mut out = own(&mut procs, &mut table).unwrap();
        out.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(out, [Reaped::Lost(pid(2), 2), Reaped::Lost(pid(9), 9)]);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn unexpected_errno_stops_the_pass_and_loses_nothing() {
        let (mut procs, mut table) = world(3);
        for raw in 1..=3 {
            procs.exit(pid(raw), raw);
        }
        let order: Vec<Pid> = table.pids().collect();
        procs.inject_error(1, Errno::EINVAL);
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let err = reap_own(&mut procs, &mut table, &mut scratch, |r| out.push(r)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::EINVAL as i32));
        // The one reaped before the failure is reported; the others stay.
        let first = order[0];
        assert_eq!(
            out,
            [Reaped::Died(first, first.as_raw().into(), first.as_raw())]
        );
        assert_eq!(table.len(), 2);
        for &later in &order[1..] {
            assert!(table.contains(later));
            assert_eq!(procs.child(later).unwrap().1, Some(later.as_raw()));
        }
        // The next pass picks them up.
        let out = own(&mut procs, &mut table).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|r| matches!(r, Reaped::Died(..))));
        assert!(table.is_empty());
    }

    #[test]
    fn reap_all_errno_is_returned() {
        let (mut procs, mut table) = world(1);
        procs.inject_error(0, Errno::EINVAL);
        let err = all(&mut procs, &mut table).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::EINVAL as i32));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn reap_all_hands_out_strangers_and_stops_at_none() {
        let (mut procs, mut table) = world(2);
        procs.spawn(pid(5));
        procs.spawn(pid(6));
        procs.exit(pid(1), 3);
        procs.exit(pid(5), 4);
        let out = all(&mut procs, &mut table).unwrap();
        assert_eq!(
            out,
            [
                Reaped::Died(pid(1), 3.into(), 1),
                Reaped::Stranger(pid(5), 4.into())
            ]
        );
        assert_eq!(procs.calls, 3, "k+1 calls for k exits");
        assert!(table.contains(pid(2)) && table.len() == 1);
        assert_eq!(procs.child(pid(6)), Some((4, None)));
    }

    #[test]
    fn reap_all_echild_reports_the_rest_lost() {
        let (mut procs, mut table) = world(3);
        procs.spawn(pid(7));
        procs.exit(pid(1), 0);
        procs.exit(pid(2), 0);
        procs.exit(pid(7), 9);
        assert!(procs.foreign_reap(pid(2)).is_some());
        table.insert(pid(8), 8);
        procs.exit(pid(3), 1);
        let mut out = all(&mut procs, &mut table).unwrap();
        assert_eq!(
            out.drain(..3).collect::<Vec<_>>(),
            [
                Reaped::Died(pid(1), 0.into(), 1),
                Reaped::Died(pid(3), 1.into(), 3),
                Reaped::Stranger(pid(7), 9.into())
            ]
        );
        out.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(out, [Reaped::Lost(pid(2), 2), Reaped::Lost(pid(8), 8)]);
        assert!(table.is_empty());
    }

    #[test]
    fn steady_state_does_not_grow_scratch() {
        let (mut procs, mut table) = world(16);
        let mut scratch = Vec::new();
        for raw in 1..=16 {
            procs.exit(pid(raw), 0);
        }
        reap_own(&mut procs, &mut table, &mut scratch, |_| {}).unwrap();
        let capacity = scratch.capacity();
        let mut next = 17;
        for round in 0..200 {
            // Keep 16 children: replace the dead, let a few die.
            while table.len() < 16 {
                procs.spawn(pid(next));
                table.insert(pid(next), next);
                next += 1;
            }
            for dying in table
                .pids()
                .filter(|p| p.as_raw() % 5 == round % 5)
                .collect::<Vec<_>>()
            {
                procs.exit(dying, 0);
            }
            let mut died = 0;
            reap_own(&mut procs, &mut table, &mut scratch, |_| died += 1).unwrap();
            assert!(died > 0 || round < 5);
            assert_eq!(scratch.capacity(), capacity, "round {round}");
        }
    }
}
