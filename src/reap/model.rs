//! A scripted process model for the reaping decisions. Not part of the API.
//!
//! [`Procs`] is a fake `Reap`: the children of "the process", each running
//! or exited with a raw status until someone reaps it, with `waitpid`'s
//! answers (`0` while running, the status once, then `ECHILD`) and injected
//! `EINTR` or other errnos. The unit tests of `reap/mod.rs` script it by hand;
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

use std::os::fd::RawFd;

use crate::reap::table::ChildTable;
use crate::reap::{
    reap_all, reap_all_careful, reap_listed, reap_peek, reap_scan, reap_states, Reap, Reaped,
    Target, Waited, Watched,
};
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
    /// Calls of every seam method, `EINTR` included.
    pub calls: usize,
    /// Running children in a ptrace stop not yet waited for.
    traps: BTreeSet<Pid>,
    /// Running children with a stop or continue not yet waited for
    /// (`WUNTRACED`/`WCONTINUED` only): the latest one, as the kernel keeps.
    states: BTreeMap<Pid, libc::c_int>,
}

/// What a wait reports for a ptrace stop (`SIGTRAP`, as `WIFSTOPPED`).
pub const TRAP_STATUS: libc::c_int = (libc::SIGTRAP << 8) | 0x7f;

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

    /// The running child `pid` enters a ptrace stop (this process being
    /// its tracer): every wait reports it, until one consumes it.
    pub fn trap(&mut self, pid: Pid) {
        if matches!(self.children.get(&pid), Some((_, None))) {
            self.traps.insert(pid);
        }
    }

    /// The running child `pid` is stopped by `signal`, or continued (`None`):
    /// a wait with `WUNTRACED | WCONTINUED` reports it once.
    pub fn job_control(&mut self, pid: Pid, signal: Option<libc::c_int>) {
        if matches!(self.children.get(&pid), Some((_, None))) {
            let status = signal.map_or(0xffff, |sig| (sig << 8) | 0x7f);
            self.states.insert(pid, status);
        }
    }

    /// The running child `pid` exits with `status`; false if none is running.
    pub fn exit(&mut self, pid: Pid, status: libc::c_int) -> bool {
        self.traps.remove(&pid);
        self.states.remove(&pid);
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

    /// What a `WNOWAIT` probe of `pid` would say, outside any pass.
    pub fn probe_for_test(&mut self, pid: Pid) -> Option<libc::c_int> {
        let target = Target { pid, pidfd: None };
        self.answer(target, false, false)
            .ok()
            .flatten()
            .map(|w| w.raw)
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

impl Procs {
    /// Answers a per-child wait, checked against the pass and the identity
    /// it names: with a pidfd (the model's pidfd is the child's serial), a
    /// child that has the pid but another serial is not the one named:
    /// `ECHILD`. `consume` reaps a death or takes a ptrace stop.
    fn answer(
        &mut self,
        target: Target,
        consume: bool,
        states: bool,
    ) -> Result<Option<Waited>, Errno> {
        let pid = target.pid;
        match &self.pass {
            Pass::All => panic!("reap-all mode called waitid({pid})"),
            Pass::Selective(pids) => assert!(pids.contains(&pid), "waitid({pid}): not ours"),
            Pass::Any => {}
        }
        self.fault()?;
        if !consume && !matches!(self.pass, Pass::Any) {
            assert!(self.answered.insert(pid), "probed {pid} twice in a pass");
        }
        match (self.children.get(&pid), target.pidfd) {
            (None, _) => Err(Errno::ECHILD),
            (Some(&(serial, _)), Some(fd)) if i64::from(fd) != serial as i64 => Err(Errno::ECHILD),
            (Some(&(_, Some(status))), _) => {
                if consume {
                    self.take(pid);
                }
                Ok(Some(status.into()))
            }
            (Some((_, None)), _) if self.traps.contains(&pid) => {
                if consume {
                    self.traps.remove(&pid);
                }
                Ok(Some(TRAP_STATUS.into()))
            }
            (Some((_, None)), _) if states && self.states.contains_key(&pid) => {
                let status = self.states.remove(&pid).expect("a state");
                Ok(Some(status.into()))
            }
            (Some((_, None)), _) => Ok(None),
        }
    }
}

impl Reap for Procs {
    fn probe(&mut self, target: Target) -> Result<Option<Waited>, Errno> {
        self.answer(target, false, false)
    }

    fn reap(&mut self, target: Target) -> Result<Option<Waited>, Errno> {
        self.answer(target, true, false)
    }

    fn reap_state(&mut self, target: Target) -> Result<Option<Waited>, Errno> {
        self.answer(target, true, true)
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
            None => Ok(self.traps.pop_first().map(|pid| (pid, TRAP_STATUS.into()))),
        }
    }

    fn peek(&mut self) -> Result<Option<(Pid, Waited)>, Errno> {
        assert!(
            !matches!(self.pass, Pass::All),
            "reap-all mode has no use for a peek"
        );
        self.fault()?;
        if self.children.is_empty() {
            return Err(Errno::ECHILD);
        }
        Ok(self.children.iter().find_map(|(pid, c)| match c.1 {
            Some(status) => Some((*pid, status.into())),
            None if self.traps.contains(pid) => Some((*pid, TRAP_STATUS.into())),
            None => None,
        }))
    }
}

/// A registration in the model: the serial of the process it was made
/// for, and whether it is watched (and named) through a pidfd, whose
/// model value is that serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    serial: u64,
    pidfd: bool,
}

impl Watched for Token {
    fn pidfd(&self) -> Option<RawFd> {
        self.pidfd.then_some(self.serial as RawFd)
    }
}

/// The fuzzed world: the process, the table, and what the table should hold.
#[derive(Debug, Default)]
struct Model {
    procs: Procs,
    table: ChildTable<Token>,
    scratch: Vec<(Pid, Option<Waited>)>,
    /// What the table should hold: pid → token.
    registered: BTreeMap<Pid, Token>,
    /// Serials whose process is gone without our reaping it.
    lostable: BTreeSet<u64>,
    /// Serials that got their one outcome.
    settled: BTreeSet<u64>,
    tokens: usize,
}

impl Model {
    /// Registers `token` under `pid`, as `Reactor::register` does.
    fn register(&mut self, pid: Pid, token: Token) {
        self.tokens += 1;
        if let Some(stale) = self.table.insert(pid, token) {
            assert!(
                self.lostable.contains(&stale.serial),
                "displaced a live child"
            );
            self.settle(pid, stale);
        }
        self.registered.insert(pid, token);
    }

    fn settle(&mut self, pid: Pid, token: Token) {
        assert_eq!(self.registered.remove(&pid), Some(token), "wrong child");
        assert!(
            self.settled.insert(token.serial),
            "pid {pid} reported twice"
        );
    }

    /// Whether the registration's process is running (not exited, not
    /// gone, not replaced under the same pid).
    fn alive(&self, pid: Pid, token: Token) -> bool {
        self.procs.child(pid) == Some((token.serial, None))
    }

    /// One pass, with every report checked against the model.
    fn pass(&mut self, mode: Mode) {
        let all = matches!(mode, Mode::All | Mode::Careful);
        let start = self.registered.clone();
        let scanned = start.values().filter(|t| !t.pidfd).count();
        // What the pidfd backend's epoll set would report: pidfds of
        // processes that exited or are gone.
        let ready: Vec<Pid> = start
            .iter()
            .filter(|&(&pid, t)| t.pidfd && !self.alive(pid, *t))
            .map(|(&pid, _)| pid)
            .collect();
        let (mut out, mut errors) = (Vec::new(), self.procs.error.is_some());
        let (calls, eintr) = (self.procs.calls, self.procs.eintr);
        let traps = self.procs.traps.len();
        let states = self.procs.states.clone();
        self.procs.answered.clear();
        self.procs.reaps.clear();
        let scratch = &mut self.scratch;
        self.procs.pass = match mode {
            Mode::All => Pass::All,
            Mode::Careful => Pass::Any,
            _ => Pass::Selective(start.keys().copied().collect()),
        };
        let table = &mut self.table;
        let result = match mode {
            Mode::All => reap_all(&mut self.procs, table, |r| out.push(r)),
            Mode::Careful => reap_all_careful(
                &mut self.procs,
                table,
                |pid| pid.as_raw() % 2 == 1,
                |r| out.push(r),
            ),
            Mode::Scan => reap_scan(&mut self.procs, table, scratch, |r| out.push(r)),
            Mode::Peek => reap_peek(&mut self.procs, table, scratch, |r| out.push(r)),
            Mode::Pidfd => reap_listed(&mut self.procs, table, ready.iter().copied(), |r| {
                out.push(r)
            }),
            Mode::States => {
                let mut stateful: Vec<Pid> = start.keys().copied().collect();
                reap_states(&mut self.procs, table, &mut stateful, |r| out.push(r))
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
        let outcomes = out.len();
        for report in out {
            match report {
                Reaped::Died(pid, status, token) => {
                    let reaped = reaps.remove(&pid);
                    assert_eq!(reaped, Some((token.serial, status.raw)), "bad death");
                    self.settle(pid, token);
                }
                Reaped::Lost(pid, token) => {
                    assert!(
                        self.lostable.contains(&token.serial),
                        "{pid} lost but alive"
                    );
                    self.settle(pid, token);
                }
                Reaped::Stopped(pid, signal) => {
                    assert_eq!(mode, Mode::States, "a stop from a death-only pass");
                    let status = (signal << 8) | 0x7f;
                    let expected =
                        states.get(&pid) == Some(&status) || self.procs.traps.len() < traps;
                    assert!(expected, "{pid}: stop {signal} never scripted");
                    assert!(start.contains_key(&pid), "a stranger's stop");
                }
                Reaped::Continued(pid) => {
                    assert_eq!(mode, Mode::States, "a continue from a death-only pass");
                    assert_eq!(
                        states.get(&pid),
                        Some(&0xffff),
                        "{pid}: continue never scripted"
                    );
                }
                Reaped::Stranger(pid, status) => {
                    assert!(all, "selective mode reported stranger {pid}");
                    if mode == Mode::Careful {
                        assert_eq!(pid.as_raw() % 2, 1, "a start's child {pid} reaped");
                    }
                    let (serial, st) = reaps.remove(&pid).expect("stranger not reaped");
                    assert_eq!(st, status.raw, "stranger {pid}'s status");
                    assert_ne!(
                        start.get(&pid).map(|t| t.serial),
                        Some(serial),
                        "ours as a stranger"
                    );
                }
            }
        }
        assert!(reaps.is_empty(), "reaped but not reported: {reaps:?}");
        assert_eq!(self.table.len(), self.registered.len());
        assert!(self.registered.keys().all(|&pid| self.table.contains(pid)));
        if result.is_err() {
            return;
        }
        // A scan probes each child without a pidfd once and reaps each
        // death; the pidfd pass reaps each ready child; reap-all makes k+1
        // calls for k exits; a peek pass a peek and a reap per exit, plus a
        // scan when it found nothing of ours or a stranger was in line.
        let conclusive = self.procs.calls - calls - (eintr - self.procs.eintr) as usize;
        let reaped = self.procs.reaps.len();
        match mode {
            // (Reap-all consumes ptrace stops too, one call each.)
            Mode::All => assert_eq!(conclusive, reaped + 1 + traps - self.procs.traps.len()),
            // A peek and a reap per exit (or ptrace stop), and a last peek.
            Mode::Careful => {
                assert!(
                    conclusive <= 2 * (reaped + traps - self.procs.traps.len()) + 1 + start.len()
                )
            }
            Mode::Scan => assert_eq!(conclusive, scanned + reaped, "waitid calls"),
            Mode::Pidfd => assert_eq!(conclusive, ready.len(), "waitid calls"),
            Mode::Peek => assert!(conclusive <= 2 * reaped + 1 + scanned + start.len()),
            // One answer per stop, continue or ptrace stop, and a last one
            // (nothing, the death, or gone) per child.
            Mode::States => assert!(conclusive <= start.len() + states.len() + traps),
        }
        if mode == Mode::Careful {
            // It may stop at a start's child: nothing more to say.
            return;
        }
        if all {
            assert!(self.procs.children.values().all(|c| c.1.is_none()));
            assert!(!self.procs.children.is_empty() || self.registered.is_empty());
            return;
        }
        for (&pid, &token) in &self.registered {
            let alive = self.alive(pid, token);
            match mode {
                Mode::Pidfd if token.pidfd => assert!(alive, "{pid}: ready pidfd not reported"),
                Mode::Scan if !token.pidfd => assert!(alive, "{pid} exited or gone, unreported"),
                Mode::States => {
                    assert!(alive, "{pid} exited or gone, unreported by the state pass");
                    assert!(!self.procs.states.contains_key(&pid), "{pid}: a state left");
                }
                // A peek that found nothing of ours scanned; one that found
                // something leaves no zombie of ours behind.
                Mode::Peek if outcomes == 0 && !token.pidfd => {
                    assert!(alive, "{pid} exited or gone, unreported by a peek pass")
                }
                // (Pidfd children are the pidfd pass's: a peek backend has
                // none, and its fallback scan skips them.)
                Mode::Peek if !token.pidfd => {
                    let exited =
                        matches!(self.procs.child(pid), Some((s, Some(_))) if s == token.serial);
                    assert!(!exited, "{pid} exited but not reported");
                }
                _ => {}
            }
        }
    }

    /// Whether no process has `pid`.
    fn free(&self, pid: Pid) -> bool {
        self.procs.child(pid).is_none()
    }

    /// Whether a new process may take `pid`: no registration names it by
    /// pid alone (per-pid waits would reap the newcomer as ours, a race only
    /// pidfds close).
    fn reusable(&self, pid: Pid) -> bool {
        self.free(pid) && !matches!(self.registered.get(&pid), Some(t) if !t.pidfd)
    }
}

/// Which reaping pass to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Scan,
    Peek,
    Pidfd,
    States,
    All,
    /// `reap_all_careful`, allowed to reap strangers only with an odd pid
    /// (the others stand for children of starts in flight).
    Careful,
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
        let pidfd = arg & 0x40 != 0;
        match op % 8 {
            // Spawn and register (a reused pid displaces a stale entry).
            0 if model.reusable(pid) => {
                let serial = model.procs.spawn(pid);
                model.register(pid, Token { serial, pidfd });
            }
            // Spawn a stranger, under a pid no registration names by pid.
            1 if model.reusable(pid) => {
                model.procs.spawn(pid);
            }
            // Adopt a pid that is not a child of ours (`watch` by mistake).
            2 if model.reusable(pid) => {
                let serial = model.procs.serial();
                model.lostable.insert(serial);
                model.register(pid, Token { serial, pidfd });
            }
            3 => {
                // A death status as the kernel makes them: an exit code, or
                // a signal, with or without a core dump.
                let (how, value) = (next().unwrap_or(0), i32::from(next().unwrap_or(0)));
                let status = match how % 3 {
                    0 => value << 8,
                    1 => value % 31 + 1,
                    _ => (value % 31 + 1) | 0x80,
                };
                model.procs.exit(pid, status);
            }
            4 => {
                if let Some(serial) = model.procs.foreign_reap(pid) {
                    model.lostable.insert(serial);
                }
            }
            5 if arg & 0x80 != 0 && arg & 0x40 != 0 => model.procs.trap(pid),
            5 if arg & 0x80 != 0 => {
                let signal = [None, Some(libc::SIGSTOP), Some(libc::SIGTSTP)];
                model
                    .procs
                    .job_control(pid, signal[usize::from(arg / 4 % 3)]);
            }
            5 => model.procs.inject_eintr(u32::from(arg % 4) + 1),
            6 if arg % 4 == 0 => model
                .procs
                .inject_error(usize::from(arg / 4 % 4), Errno::EINVAL),
            6 if arg % 4 == 1 => model.pass(Mode::Peek),
            6 if arg % 4 == 2 && arg & 0x80 != 0 => model.pass(Mode::States),
            6 if arg % 4 == 2 => model.pass(Mode::Pidfd),
            6 => model.pass(Mode::Scan),
            // Reap-all reactors have no pidfds: it names children by pid.
            7 if model.registered.values().any(|t| t.pidfd) => {}
            7 if arg & 0x80 != 0 => model.pass(Mode::Careful),
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
    model.pass(Mode::Pidfd);
    model.pass(Mode::Scan);
    assert!(model.table.is_empty(), "children left after clean passes");
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

/// The saved corpora (`fuzz/corpus/reap` through the reaping model,
/// `fuzz/corpus/supervise_pool` through the pool's state machine), replayed
/// by `cargo test` without cargo-fuzz, plus a fixed sweep of pseudo-random
/// inputs.
#[cfg(test)]
mod corpus {
    use std::fs;
    use std::path::Path;

    #[test]
    fn reap_corpus_replays_cleanly() {
        replay("reap", super::run);
    }

    #[test]
    fn supervise_pool_corpus_replays_cleanly() {
        replay("supervise_pool", super::pool);
    }

    fn replay(target: &str, run: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut count = 0;
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("corpus entry").path();
            let data = fs::read(&path).expect("corpus file");
            // Name the input if it fails.
            eprintln!("replaying {}", path.display());
            run(&data);
            count += 1;
        }
        assert!(count > 0, "the corpus in {} is empty", dir.display());
    }

    #[test]
    fn pseudo_random_inputs_hold() {
        // xorshift64: deterministic, so a failure reproduces.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 600) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            super::run(&data);
            super::pool(&data);
        }
    }
}
