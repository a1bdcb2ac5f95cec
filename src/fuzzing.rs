//! A scripted process model for the reaping decisions. Not part of the API.
//!
//! [`Procs`] is a fake `Reap`: the children of "the process", each running
//! or exited with a raw status until someone reaps it, with `waitpid`'s
//! answers (`0` while running, the status once, then `ECHILD`) and injected
//! `EINTR` or other errnos. The unit tests of `reap.rs` script it by hand;
//! [`run`] decodes fuzz bytes into a bounded list of operations (exits,
//! foreign reapers, pid reuse, faults, passes in either mode) and checks the
//! invariants of `reap_own` and `reap_all` with panics:
//!
//! * every registration gets exactly one outcome: `Died` with the status its
//!   process was scripted to exit with, or `Lost` only if its process is
//!   gone without our reaping it (a foreign reaper, or never a child);
//! * every child the code under test reaps is reported, once; strangers
//!   only in reap-all mode, with their exact status;
//! * a selective pass calls `waitpid(pid)` once per registered pid and for
//!   no other, never `waitpid(-1)`; a reap-all pass only `waitpid(-1)`, k+1
//!   times for k exits; `EINTR` never escapes, other errnos always do;
//! * after a clean selective pass no registered child is exited or gone
//!   unreported; after a clean reap-all pass no child is exited, and if the
//!   process has no children left the table is empty;
//! * the table always holds exactly the model's registrations.
//!
//! Pids are recycled: a registration under the pid of a child someone else
//! reaped displaces the stale entry (reported `Lost`). A stranger never takes
//! such a pid while the stale entry is still registered: per-pid `waitpid`
//! would then reap it as ours, a race only pidfds close.

use std::collections::{BTreeMap, BTreeSet};

use nix::errno::Errno;

use crate::reap::{reap_all, reap_own, reap_peek, Reap, Reaped, Waited};
use crate::table::ChildTable;
use crate::Pid;

/// The calls a pass may make, checked by [`Procs`] as they come.
#[derive(Debug, Default)]
enum Pass {
    /// No checking (hand-written unit tests).
    #[default]
    Any,
    /// `reap_own`: `waitpid(pid)` only, only for these pids.
    Selective(BTreeSet<Pid>),
    /// `reap_all`: `waitpid(-1)` only.
    All,
}

/// A scripted process table implementing the `waitpid` seam.
#[derive(Debug, Default)]
pub struct Procs {
    /// Unreaped children: pid → (serial, `None` while running, or the status).
    children: BTreeMap<Pid, (u64, Option<libc::c_int>)>,
    serials: u64,
    eintr: u32,
    /// Fail with this errno after that many more conclusive calls.
    error: Option<(usize, Errno)>,
    pass: Pass,
    /// Pids that got a conclusive answer in the current pass.
    answered: BTreeSet<Pid>,
    /// Every reap by the code under test: (pid, serial, status).
    pub reaps: Vec<(Pid, u64, libc::c_int)>,
    /// Calls of `reap_pid` and `reap_any`, `EINTR` included.
    pub calls: usize,
}

impl Procs {
    /// Starts a child under `pid` (which must be free) and returns its serial.
    pub fn spawn(&mut self, pid: Pid) -> u64 {
        let serial = self.serial();
        let old = self.children.insert(pid, (serial, None));
        assert!(old.is_none(), "the kernel never reuses an unreaped pid");
        serial
    }

    /// A fresh serial that names no child (for pids adopted by mistake).
    pub fn serial(&mut self) -> u64 {
        self.serials += 1;
        self.serials
    }

    /// The running child `pid` exits with `status`; false if none is running.
    pub fn exit(&mut self, pid: Pid, status: libc::c_int) -> bool {
        match self.children.get_mut(&pid) {
            Some((_, state @ None)) => {
                *state = Some(status);
                true
            }
            _ => false,
        }
    }

    /// Another reaper takes the exited child `pid`; its serial, if it did.
    pub fn foreign_reap(&mut self, pid: Pid) -> Option<u64> {
        match self.children.get(&pid) {
            Some(&(serial, Some(_))) => {
                self.children.remove(&pid);
                Some(serial)
            }
            _ => None,
        }
    }

    /// The next `n` calls fail with `EINTR`.
    pub fn inject_eintr(&mut self, n: u32) {
        self.eintr += n;
    }

    /// The call after the next `after` answers (not counting `EINTR`)
    /// fails with `errno`.
    pub fn inject_error(&mut self, after: usize, errno: Errno) {
        self.error = Some((after, errno));
    }

    /// Whether `pid` is an unreaped child, and its serial and status.
    pub fn child(&self, pid: Pid) -> Option<(u64, Option<libc::c_int>)> {
        self.children.get(&pid).copied()
    }

    fn fault(&mut self) -> Result<(), Errno> {
        self.calls += 1;
        if self.eintr > 0 {
            self.eintr -= 1;
            return Err(Errno::EINTR);
        }
        match &mut self.error {
            Some((0, _)) => Err(self.error.take().expect("injected").1),
            Some((after, _)) => {
                *after -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn take(&mut self, pid: Pid) -> libc::c_int {
        let (serial, status) = self.children.remove(&pid).expect("a child");
        let status = status.expect("an exited child");
        self.reaps.push((pid, serial, status));
        status
    }
}

impl Reap for Procs {
    fn reap_pid(&mut self, pid: Pid) -> Result<Option<Waited>, Errno> {
        match &self.pass {
            Pass::All => panic!("reap-all mode called waitpid({pid})"),
            Pass::Selective(pids) => assert!(pids.contains(&pid), "waitpid({pid}): not ours"),
            Pass::Any => {}
        }
        self.fault()?;
        if !matches!(self.pass, Pass::Any) {
            assert!(self.answered.insert(pid), "waitpid({pid}) twice in a pass");
        }
        match self.children.get(&pid) {
            None => Err(Errno::ECHILD),
            Some((_, None)) => Ok(None),
            Some((_, Some(_))) => Ok(Some(self.take(pid).into())),
        }
    }

    fn reap_any(&mut self) -> Result<Option<(Pid, Waited)>, Errno> {
        assert!(
            !matches!(self.pass, Pass::Selective(_)),
            "selective mode called waitpid(-1)"
        );
        self.fault()?;
        if self.children.is_empty() {
            return Err(Errno::ECHILD);
        }
        let exited = self.children.iter().find(|(_, c)| c.1.is_some());
        match exited.map(|(pid, _)| *pid) {
            Some(pid) => Ok(Some((pid, self.take(pid).into()))),
            None => Ok(None),
        }
    }

    fn peek(&mut self) -> Result<Option<Pid>, Errno> {
        assert!(
            !matches!(self.pass, Pass::All),
            "reap-all mode has no use for a peek"
        );
        self.fault()?;
        if self.children.is_empty() {
            return Err(Errno::ECHILD);
        }
        Ok(self
            .children
            .iter()
            .find(|(_, c)| c.1.is_some())
            .map(|(pid, _)| *pid))
    }
}

/// The fuzzed world: the process, the table, and what the table should hold.
#[derive(Debug, Default)]
struct Model {
    procs: Procs,
    table: ChildTable<u64>,
    scratch: Vec<(Pid, Option<Waited>)>,
    /// What the table should hold: pid → token (the serial registered).
    registered: BTreeMap<Pid, u64>,
    /// Tokens whose process is gone without our reaping it.
    lostable: BTreeSet<u64>,
    /// Tokens that got their one outcome.
    settled: BTreeSet<u64>,
    tokens: usize,
}

impl Model {
    /// Registers `token` under `pid`, as `Reactor::register` does.
    fn register(&mut self, pid: Pid, token: u64) {
        self.tokens += 1;
        if let Some(stale) = self.table.insert(pid, token) {
            assert!(self.lostable.contains(&stale), "displaced a live child");
            self.settle(pid, stale);
        }
        self.registered.insert(pid, token);
    }

    fn settle(&mut self, pid: Pid, token: u64) {
        assert_eq!(self.registered.remove(&pid), Some(token), "wrong child");
        assert!(self.settled.insert(token), "pid {pid} reported twice");
    }

    /// One pass, with every report checked against the model.
    fn pass(&mut self, mode: Mode) {
        let all = mode == Mode::All;
        let start = self.registered.clone();
        let (mut out, mut errors) = (Vec::new(), self.procs.error.is_some());
        let (calls, eintr) = (self.procs.calls, self.procs.eintr);
        self.procs.answered.clear();
        self.procs.reaps.clear();
        let scratch = &mut self.scratch;
        let result = match mode {
            Mode::All => {
                self.procs.pass = Pass::All;
                reap_all(&mut self.procs, &mut self.table, |r| out.push(r))
            }
            Mode::Scan => {
                self.procs.pass = Pass::Selective(start.keys().copied().collect());
                reap_own(&mut self.procs, &mut self.table, scratch, |r| out.push(r))
            }
            Mode::Peek => {
                self.procs.pass = Pass::Selective(start.keys().copied().collect());
                reap_peek(&mut self.procs, &mut self.table, scratch, |r| out.push(r))
            }
        };
        self.procs.pass = Pass::Any;
        errors &= self.procs.error.is_none();
        // An EINTR that escaped would be an error nobody injected.
        assert_eq!(result.is_err(), errors, "{result:?}");
        let mut reaps: BTreeMap<Pid, (u64, libc::c_int)> = BTreeMap::new();
        for &(pid, serial, status) in &self.procs.reaps {
            assert!(reaps.insert(pid, (serial, status)).is_none());
        }
        for report in out {
            match report {
                Reaped::Died(pid, status, token) => {
                    assert_eq!(reaps.remove(&pid), Some((token, status.raw)), "bad death");
                    self.settle(pid, token);
                }
                Reaped::Lost(pid, token) => {
                    assert!(self.lostable.contains(&token), "{pid} lost but alive");
                    self.settle(pid, token);
                }
                Reaped::Stopped(..) | Reaped::Continued(..) => {
                    panic!("the model scripts no stops: {report:?}")
                }
                Reaped::Stranger(pid, status) => {
                    assert!(all, "selective mode reported stranger {pid}");
                    let (serial, st) = reaps.remove(&pid).expect("stranger not reaped");
                    assert_eq!(st, status.raw, "stranger {pid}'s status");
                    assert_ne!(start.get(&pid), Some(&serial), "ours as a stranger");
                }
            }
        }
        assert!(reaps.is_empty(), "reaped but not reported: {reaps:?}");
        assert_eq!(self.table.len(), self.registered.len());
        assert!(self.registered.keys().all(|&pid| self.table.contains(pid)));
        if result.is_err() {
            return;
        }
        // One conclusive waitpid per registered child, or k+1 for k exits.
        // (A peek pass makes a peek and a waitpid per exit, and falls back
        // to the scan when a stranger's zombie is first in line.)
        let conclusive = self.procs.calls - calls - (eintr - self.procs.eintr) as usize;
        match mode {
            Mode::All => assert_eq!(conclusive, self.procs.reaps.len() + 1),
            Mode::Scan => assert_eq!(conclusive, start.len(), "waitpid calls"),
            Mode::Peek => assert!(conclusive <= 2 * self.procs.reaps.len() + 1 + start.len()),
        }
        if all {
            assert!(self.procs.children.values().all(|c| c.1.is_none()));
            assert!(!self.procs.children.is_empty() || self.registered.is_empty());
        } else {
            for (&pid, &token) in &self.registered {
                let state = self.procs.child(pid);
                if mode == Mode::Peek {
                    // A peek sees only zombies: a child some other reaper
                    // took leaves none, and is reported by a later scan.
                    let exited = matches!(state, Some((t, Some(_))) if t == token);
                    assert!(!exited, "{pid} exited but not reported");
                } else {
                    let alive = state == Some((token, None));
                    assert!(alive, "{pid} exited or gone but not reported");
                }
            }
        }
    }

    fn free(&self, pid: Pid) -> bool {
        self.procs.child(pid).is_none()
    }
}

/// Which reaping pass to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Scan,
    Peek,
    All,
}

/// Most operations a fuzz input may script.
pub const MAX_OPS: usize = 256;
/// Pids run from 1 to this, so they are recycled often.
pub const MAX_PIDS: u8 = 64;

/// Decodes `data` into operations, runs them, and panics if an invariant of
/// the reaping passes breaks. At the end every child exits and a clean pass
/// must leave the table empty, with exactly one outcome per registration.
pub fn run(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let mut model = Model::default();
    for _ in 0..MAX_OPS {
        let Some(op) = next() else { break };
        let arg = next().unwrap_or(0);
        let pid = Pid::from_raw(libc::pid_t::from(arg % MAX_PIDS) + 1);
        match op % 8 {
            // Spawn and register (a reused pid displaces a stale entry).
            0 if model.free(pid) => {
                let serial = model.procs.spawn(pid);
                model.register(pid, serial);
            }
            // Spawn a stranger, under a pid the table does not hold.
            1 if model.free(pid) && !model.registered.contains_key(&pid) => {
                model.procs.spawn(pid);
            }
            // Adopt a pid that is not a child of ours (`watch` by mistake).
            2 if model.free(pid) => {
                let token = model.procs.serial();
                model.lostable.insert(token);
                model.register(pid, token);
            }
            3 => {
                let status = [next().unwrap_or(0), next().unwrap_or(0)];
                model.procs.exit(pid, i32::from(u16::from_le_bytes(status)));
            }
            4 => {
                if let Some(serial) = model.procs.foreign_reap(pid) {
                    model.lostable.insert(serial);
                }
            }
            5 => model.procs.inject_eintr(u32::from(arg % 4) + 1),
            6 if arg % 4 == 0 => model
                .procs
                .inject_error(usize::from(arg / 4 % 4), Errno::EINVAL),
            6 if arg % 4 == 1 => model.pass(Mode::Peek),
            6 => model.pass(Mode::Scan),
            7 => model.pass(Mode::All),
            _ => {}
        }
    }
    let running: Vec<Pid> = model.procs.children.keys().copied().collect();
    for pid in running {
        model.procs.exit(pid, 0);
    }
    model.procs.eintr = 0;
    model.procs.error = None;
    model.pass(Mode::Scan);
    assert!(model.table.is_empty(), "children left after a clean pass");
    assert_eq!(
        model.settled.len(),
        model.tokens,
        "a child without an outcome"
    );
}

/// The pool state machine's fuzz target (`fuzz/fuzz_targets/supervise_pool.rs`):
/// decodes `data` into a pool configuration and scripted inputs, and panics
/// if an invariant of `evchild::supervise` breaks.
pub fn pool(data: &[u8]) {
    crate::supervise::fuzz::run(data)
}
