//! Who gets which pid: the reaping decisions, behind a small OS seam.
//!
//! [`Reap`] is the seam: the forms of `waitid`/`wait4` evchild uses, all
//! `WNOHANG`, each naming a child by its pidfd where it has one
//! ([`Target`]). [`SysReap`](crate::sys::SysReap) implements it with the
//! real calls; the fuzz model implements it with a scripted process table,
//! in which a pid can be given to a new process. The passes here decide, for
//! each answer, whether it is a death of ours, a child lost to another
//! reaper, a stranger, or no death at all, and they are the same code in
//! both.
//!
//! * [`reap_scan`] (`Library` with `Scan`, children without a pidfd, and
//!   `Mainloop`'s `sigchld_occurred`): one `waitid(P_PID, WNOWAIT)` probe per
//!   such child, and a reaping `waitid` for each that died. O(N) in the
//!   number of live children, never touches a child that is not ours.
//! * [`reap_peek`] (`Library` with `Peek`): `waitid(P_ALL, WNOWAIT)` names
//!   the next exited child without reaping it; reap it if it is ours and
//!   peek again. O(k) for k exits. If someone else's zombie (or a stopped
//!   tracee of ours) is first in line, or the wake-up found nothing of ours
//!   at all (a child of ours reaped by other code leaves no zombie), the
//!   pass falls back to the scan, so a lost child is reported within the
//!   wake-up its `SIGCHLD` caused.
//! * [`reap_listed`] (`Library` with `Pidfd`): the children whose pidfds
//!   are readable, one `waitid(P_PIDFD)` each: the pidfd names exactly the
//!   process, so a pid given to another process can never be reaped in its
//!   place.
//! * [`reap_all`] (`LibraryAlways`): `wait4(-1, WNOHANG)` until it answers 0
//!   or `ECHILD`: k+1 calls for k exits, whatever N is.
//! * [`reap_states`]: stop and continue reports for the children that asked.
//!
//! Only a death ends a child: a ptrace stop (which `wait4` and `waitid`
//! report to the tracer even without `WUNTRACED`), a stop or a continue
//! never does. The selective passes probe with `WNOWAIT`, so a ptrace stop
//! of a child this process also traces is left for the tracer's own wait.
//!
//! Every pass retries `EINTR`. `ECHILD` for a registered child means
//! another reaper took it: a [`Reaped::Lost`] report, never a made-up
//! status. Any other errno stops the pass and is returned; the children not
//! yet looked at stay registered for the next pass.

#[cfg(any(test, fuzzing))]
pub mod model;
pub(crate) mod table;

use std::io;
use std::os::fd::RawFd;

use nix::errno::Errno;

use crate::reap::table::ChildTable;
use crate::{Pid, ResourceUsage};

/// A wait status, with the child's resource usage where the OS gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Waited {
    /// In `wait(2)`'s encoding, whatever call produced it.
    pub(crate) raw: libc::c_int,
    pub(crate) usage: Option<ResourceUsage>,
}

impl From<libc::c_int> for Waited {
    fn from(raw: libc::c_int) -> Self {
        Waited { raw, usage: None }
    }
}

impl Waited {
    /// Whether this status is a death (exited or killed by a signal), as
    /// opposed to a stop, a ptrace stop or a continue.
    pub(crate) fn is_death(&self) -> bool {
        libc::WIFEXITED(self.raw) || libc::WIFSIGNALED(self.raw)
    }
}

/// A child as the wait calls name it: by its pidfd where it has one (the
/// pid is then only for reports), otherwise by pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) pid: Pid,
    pub(crate) pidfd: Option<RawFd>,
}

/// What the passes need to know of a registered child.
pub(crate) trait Watched {
    /// The child's pidfd, if it is watched (and named) through one.
    fn pidfd(&self) -> Option<RawFd>;
    /// The serial of its registration (the rest of its `ChildId`).
    fn serial(&self) -> u64 {
        0
    }
}

impl Watched for libc::pid_t {
    fn pidfd(&self) -> Option<RawFd> {
        None
    }
}

fn target<T: Watched>(pid: Pid, value: &T) -> Target {
    Target {
        pid,
        pidfd: value.pidfd(),
    }
}

/// The OS seam. Every call is `WNOHANG`: `Ok(None)` means the child (or
/// some child, for `reap_any` and `peek`) exists but has nothing to report;
/// `Err(ECHILD)` that it is not a waitable child of this process (for a
/// pidfd: the process it names has been reaped).
pub(crate) trait Reap {
    /// `waitid(target, WEXITED | WNOHANG | WNOWAIT)`: the status of a dead
    /// child (or a ptrace stop, for a tracee), without reaping it.
    fn probe(&mut self, target: Target) -> Result<Option<Waited>, Errno>;
    /// `waitid(target, WEXITED | WNOHANG)`, with the resource usage: reaps
    /// a dead child (or consumes a ptrace stop).
    fn reap(&mut self, target: Target) -> Result<Option<Waited>, Errno>;
    /// `wait4(-1, WNOHANG)`: some child that died (or a ptrace stop),
    /// reaped now.
    fn reap_any(&mut self) -> Result<Option<(Pid, Waited)>, Errno>;
    /// `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`: some child that died
    /// (or a ptrace stop), *without* reaping it.
    fn peek(&mut self) -> Result<Option<(Pid, Waited)>, Errno>;
    /// `waitid(target, WEXITED | WSTOPPED | WCONTINUED | WNOHANG)`: a
    /// death, a stop or a continue, consumed.
    fn reap_state(&mut self, target: Target) -> Result<Option<Waited>, Errno>;
}

impl<R: Reap + ?Sized> Reap for &mut R {
    fn probe(&mut self, target: Target) -> Result<Option<Waited>, Errno> {
        (**self).probe(target)
    }
    fn reap(&mut self, target: Target) -> Result<Option<Waited>, Errno> {
        (**self).reap(target)
    }
    fn reap_any(&mut self) -> Result<Option<(Pid, Waited)>, Errno> {
        (**self).reap_any()
    }
    fn peek(&mut self) -> Result<Option<(Pid, Waited)>, Errno> {
        (**self).peek()
    }
    fn reap_state(&mut self, target: Target) -> Result<Option<Waited>, Errno> {
        (**self).reap_state(target)
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

/// Reaps `pid`, known (by a probe or a readable pidfd) to be dead, and
/// reports it. A child that turns out not to be dead stays registered.
fn finish<R: Reap, T: Watched>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    pid: Pid,
    out: &mut impl FnMut(Reaped<T>),
) -> Result<(), Errno> {
    let Some(value) = table.get(pid) else {
        return Ok(());
    };
    let status = match retry_eintr(|| sys.reap(target(pid, value)))? {
        Some(status) if status.is_death() => status,
        // A ptrace stop consumed from a pidfd that was readable for some
        // other reason, or nothing: still alive, still registered.
        Some(_) | None => return Ok(()),
    };
    if let Some(value) = table.remove(pid) {
        out(Reaped::Died(pid, status, value));
    }
    Ok(())
}

/// [`finish`], with `ECHILD` reported as lost.
fn finish_or_lost<R: Reap, T: Watched>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    pid: Pid,
    out: &mut impl FnMut(Reaped<T>),
) -> Result<(), Errno> {
    match finish(sys, table, pid, out) {
        Err(Errno::ECHILD) => {
            if let Some(value) = table.remove(pid) {
                out(Reaped::Lost(pid, value));
            }
            Ok(())
        }
        other => other,
    }
}

/// Probes every registered child that has no pidfd, then reaps those that
/// died, one probe each plus one reaping wait per death, and hands each
/// outcome to `out` after removing the child from the table. `scratch` is
/// reused between calls, so a steady state allocates nothing.
///
/// An unexpected errno stops the pass and is returned; children not yet
/// looked at are looked at by the next pass.
pub(crate) fn reap_scan<R: Reap, T: Watched>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    scratch: &mut Vec<(Pid, Option<Waited>)>,
    out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    scan(sys, table, scratch, false, out)
}

/// [`reap_scan`] over every registered child, those with a pidfd too (by
/// pidfd): for the drop policy's final reaping, where nothing says which
/// pidfds are ready.
pub(crate) fn reap_scan_all<R: Reap, T: Watched>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    scratch: &mut Vec<(Pid, Option<Waited>)>,
    out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    scan(sys, table, scratch, true, out)
}

fn scan<R: Reap, T: Watched>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    scratch: &mut Vec<(Pid, Option<Waited>)>,
    with_pidfds: bool,
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    scratch.clear();
    let mut failure = None;
    for (pid, value) in table.iter() {
        if value.pidfd().is_some() && !with_pidfds {
            continue;
        }
        match retry_eintr(|| sys.probe(target(pid, value))) {
            Ok(Some(status)) if status.is_death() => scratch.push((pid, Some(status))),
            Ok(_) => {}
            Err(Errno::ECHILD) => scratch.push((pid, None)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    for &(pid, probed) in scratch.iter() {
        let result = match probed {
            Some(_) => finish_or_lost(sys, table, pid, &mut out),
            None => {
                if let Some(value) = table.remove(pid) {
                    out(Reaped::Lost(pid, value));
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            failure = failure.or(Some(e));
            break;
        }
    }
    scratch.clear();
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Reaps the registered children that have exited, finding them with a
/// peek (`waitid(WNOWAIT)`) instead of asking each: a peek and a reaping
/// wait per exit, whatever the number of live children. Falls back to
/// [`reap_scan`] when the first child in line is not a dead child of ours
/// (someone else's zombie, not yet collected by its owner, or a ptrace stop:
/// the peek cannot see past it), and when the peeks found nothing of ours at
/// all: the wake-up then came from a child that someone else reaped (which
/// leaves no zombie) or from a stranger, and only the scan tells the first
/// apart. Never reaps a child that is not registered.
pub(crate) fn reap_peek<R: Reap, T: Watched>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    scratch: &mut Vec<(Pid, Option<Waited>)>,
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    let mut found = false;
    loop {
        if found && table.is_empty() {
            // Nothing of ours left to find: no final peek.
            return Ok(());
        }
        let pid = match retry_eintr(|| sys.peek()) {
            Ok(None) if found => return Ok(()),
            Ok(Some((pid, status))) if status.is_death() && table.get(pid).is_some() => pid,
            // Nothing of ours, a stranger or a tracee first in line, or no
            // child at all (then every registered child was taken by
            // someone else: the scan says so).
            Ok(_) | Err(Errno::ECHILD) => return reap_scan(sys, table, scratch, out),
            Err(e) => return Err(e.into()),
        };
        found = true;
        let before = table.len();
        finish_or_lost(sys, table, pid, &mut out)?;
        if table.len() == before {
            // Peeked as dead, yet not reaped: another thread reaped it
            // and the pid came back. Let the scan sort it out.
            return reap_scan(sys, table, scratch, out);
        }
    }
}

/// Reaps the listed children (those whose pidfds are readable), one
/// reaping wait each, by pidfd where they have one: O(k) for k exits. Pids
/// not (or no longer) in the table are skipped; one still alive stays
/// registered.
pub(crate) fn reap_listed<R: Reap, T: Watched>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    pids: impl IntoIterator<Item = Pid>,
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    for pid in pids {
        finish_or_lost(sys, table, pid, &mut out)?;
    }
    Ok(())
}

/// For the children that asked for stop/continue reports: one
/// `waitid(WEXITED | WSTOPPED | WCONTINUED)` each (by pidfd where they have
/// one), which reports a stop, a continue, or the death. `pids` is pruned of
/// children no longer registered.
pub(crate) fn reap_states<R: Reap, T: Watched>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    pids: &mut Vec<Pid>,
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    pids.retain(|&pid| table.get(pid).is_some());
    let mut failure = None;
    for &pid in pids.iter() {
        // Several changes may be queued (stop, then continue): ask until
        // there is nothing more, or the child is gone.
        while let Some(value) = table.get(pid) {
            match retry_eintr(|| sys.reap_state(target(pid, value))) {
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
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_some() {
            break;
        }
    }
    pids.retain(|&pid| table.get(pid).is_some());
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Reaps every dead child of the process with `wait4(-1)`, registered or
/// not. A ptrace stop it consumes ends nobody. If the kernel says the
/// process has no children at all (`ECHILD`), any child still registered
/// was reaped by someone else and is reported lost.
pub(crate) fn reap_all<R: Reap, T>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    loop {
        match retry_eintr(|| sys.reap_any()) {
            Ok(Some((_, status))) if !status.is_death() => continue,
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

/// [`reap_all`] while starts are in flight: peeks at each dead child
/// (`waitid(P_ALL, WNOWAIT)`) and reaps it (by pid, or by its pidfd if it
/// is registered with one) only if `may_reap` says so; stops at the first
/// it may not reap (a child a start in flight may own: see
/// `process::routes`). Two calls per exit instead of one, and no child that
/// a start in flight could own is ever reaped.
pub(crate) fn reap_all_careful<R: Reap, T: Watched>(
    sys: &mut R,
    table: &mut ChildTable<T>,
    mut may_reap: impl FnMut(Pid) -> bool,
    mut out: impl FnMut(Reaped<T>),
) -> io::Result<()> {
    loop {
        let pid = match retry_eintr(|| sys.peek()) {
            Ok(None) => return Ok(()),
            Ok(Some((pid, _))) => pid,
            Err(Errno::ECHILD) => {
                for (pid, value) in table.drain() {
                    out(Reaped::Lost(pid, value));
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let registered = table.get(pid).map(|value| target(pid, value));
        if registered.is_none() && !may_reap(pid) {
            return Ok(());
        }
        let target = registered.unwrap_or(Target { pid, pidfd: None });
        match retry_eintr(|| sys.reap(target)) {
            // A ptrace stop consumed: it ends nobody.
            Ok(Some(status)) if !status.is_death() => {}
            Ok(Some(status)) => match table.remove(pid) {
                Some(value) => out(Reaped::Died(pid, status, value)),
                None => out(Reaped::Stranger(pid, status)),
            },
            // Gone between the peek and the reap: someone else's wait.
            Err(Errno::ECHILD) => {
                if let Some(value) = table.remove(pid) {
                    out(Reaped::Lost(pid, value));
                }
            }
            // Nothing after all: look again at the next wake-up.
            Ok(None) => return Ok(()),
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
    use crate::reap::model::Procs;

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
        reap_scan(procs, table, &mut Vec::new(), |r| out.push(r)).map(|()| out)
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
        // Two probes and one reaping wait, plus the interrupted calls.
        assert_eq!(procs.calls, 2 + 1 + 3);
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
        let order: Vec<Pid> = table.iter().map(|(pid, _)| pid).collect();
        procs.inject_error(1, Errno::EINVAL);
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let err = reap_scan(&mut procs, &mut table, &mut scratch, |r| out.push(r)).unwrap_err();
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
        reap_scan(&mut procs, &mut table, &mut scratch, |_| {}).unwrap();
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
                .iter()
                .map(|(pid, _)| pid)
                .filter(|p| p.as_raw() % 5 == round % 5)
                .collect::<Vec<_>>()
            {
                procs.exit(dying, 0);
            }
            let mut died = 0;
            reap_scan(&mut procs, &mut table, &mut scratch, |_| died += 1).unwrap();
            assert!(died > 0 || round < 5);
            assert_eq!(scratch.capacity(), capacity, "round {round}");
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    struct ByPidfd(u64);

    impl Watched for ByPidfd {
        fn pidfd(&self) -> Option<RawFd> {
            Some(self.0 as RawFd)
        }
    }

    #[test]
    fn a_ptrace_stop_is_never_a_death() {
        use crate::reap::model::TRAP_STATUS;
        for pass in ["scan", "peek", "listed", "all"] {
            let (mut procs, mut table) = world(2);
            procs.trap(pid(1));
            let mut out = Vec::new();
            let mut scratch = Vec::new();
            let mut push = |r| out.push(r);
            match pass {
                "scan" => reap_scan(&mut procs, &mut table, &mut scratch, &mut push),
                "peek" => reap_peek(&mut procs, &mut table, &mut scratch, &mut push),
                "listed" => reap_listed(&mut procs, &mut table, [pid(1)], &mut push),
                _ => reap_all(&mut procs, &mut table, &mut push),
            }
            .unwrap();
            assert!(out.is_empty(), "{pass}: {out:?}");
            assert_eq!(table.len(), 2, "{pass}");
            // The probing passes leave the stop for the tracer's own wait.
            if pass == "scan" || pass == "peek" {
                assert_eq!(procs.probe_for_test(pid(1)), Some(TRAP_STATUS), "{pass}");
            }
            // The real death is still reported, once.
            procs.exit(pid(1), 5 << 8);
            let out = own(&mut procs, &mut table).unwrap();
            assert_eq!(out, [Reaped::Died(pid(1), (5 << 8).into(), 1)], "{pass}");
        }
    }

    #[test]
    fn a_pidfd_never_reaps_the_process_that_reused_its_pid() {
        let mut procs = Procs::default();
        let mut table = ChildTable::default();
        let serial = procs.spawn(pid(4));
        table.insert(pid(4), ByPidfd(serial));
        procs.exit(pid(4), 0);
        assert!(procs.foreign_reap(pid(4)).is_some());
        // The kernel gives the pid to another child, which exits with 7.
        let stranger = procs.spawn(pid(4));
        procs.exit(pid(4), 7 << 8);
        let mut out = Vec::new();
        reap_listed(&mut procs, &mut table, [pid(4)], |r| out.push(r)).unwrap();
        assert_eq!(out, [Reaped::Lost(pid(4), ByPidfd(serial))]);
        assert_eq!(procs.child(pid(4)), Some((stranger, Some(7 << 8))));
    }

    #[test]
    fn a_peek_that_finds_nothing_of_ours_scans_for_the_lost() {
        let (mut procs, mut table) = world(3);
        procs.exit(pid(2), 0);
        assert!(procs.foreign_reap(pid(2)).is_some());
        let mut out = Vec::new();
        reap_peek(&mut procs, &mut table, &mut Vec::new(), |r| out.push(r)).unwrap();
        assert_eq!(out, [Reaped::Lost(pid(2), 2)]);
        assert_eq!(table.len(), 2);
    }
}
