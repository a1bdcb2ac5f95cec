//! Exit statuses, and the death reports a test collects from its reactor.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use evchild::{ChildId, Error, Exit, Outcome, Pid, Reactor};

/// The wait status of a process that called `exit(code)`.
pub fn exited(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}

/// The wait status of a process killed by `signal` (no core dump).
pub fn signaled(signal: libc::c_int) -> ExitStatus {
    ExitStatus::from_raw(signal)
}

/// A test context that keeps the death reports it is given.
pub trait Record {
    fn record(&mut self, exit: Exit);
}

impl Record for Vec<Exit> {
    fn record(&mut self, exit: Exit) {
        self.push(exit);
    }
}

/// The plain death callback: records the report in the context.
pub fn record<C: Record>(ctx: &mut C, _: &mut Reactor<C>, exit: Exit) {
    ctx.record(exit);
}

/// The outcome of child `id`, which must have been reported exactly once in
/// `deaths`.
#[track_caller]
pub fn outcome_of(deaths: &[Exit], id: ChildId) -> Outcome {
    let found: Vec<_> = deaths.iter().filter(|e| e.id == id).collect();
    assert_eq!(found.len(), 1, "exactly one report for {id}: {deaths:?}");
    found[0].outcome
}

/// The one report in `deaths`, which must be a reap, as `(code, signal)`.
#[track_caller]
pub fn only_death(deaths: &[Exit]) -> (Option<i32>, Option<i32>) {
    assert_eq!(deaths.len(), 1, "expected one death: {deaths:?}");
    let status = deaths[0].status().expect("reaped, not lost");
    (status.code(), status.signal())
}

/// Asserts that `result` (of `call`) is the refusal [`Error::AlreadyReaped`]
/// for `pid`.
#[track_caller]
pub fn assert_already_reaped<T: std::fmt::Debug>(result: evchild::Result<T>, pid: Pid, call: &str) {
    match result {
        Err(Error::AlreadyReaped { pid: refused }) => assert_eq!(refused, pid, "{call}"),
        other => panic!("{call}: expected AlreadyReaped, got {other:?}"),
    }
}

/// Loose upper bound on how late an escalation to `SIGKILL` may come.
pub const LATE: Duration = Duration::from_secs(10);

/// Right after `terminate` or `terminate_group` with `grace`: the reactor
/// has a deadline, due within `grace`. Returns `timeout()`.
#[track_caller]
pub fn assert_deadline_within<C>(reactor: &Reactor<C>, grace: Duration) -> Duration {
    let timeout = reactor.timeout().expect("a deadline after terminate");
    assert!(timeout <= grace, "timeout {timeout:?} > grace {grace:?}");
    timeout
}

/// A death by `SIGKILL` after a `grace` period, reported `elapsed` after
/// the `terminate` call: not before the grace ran out, nor after [`LATE`].
#[track_caller]
pub fn assert_killed_after_grace(elapsed: Duration, grace: Duration) {
    assert!(
        elapsed >= grace,
        "killed after {elapsed:?}, before the {grace:?} grace ran out"
    );
    assert!(elapsed < LATE, "killed only after {elapsed:?}");
}

/// Every death report, per child: a child reported twice shows up as two
/// entries.
#[derive(Debug, Default)]
pub struct Deaths {
    pub seen: HashMap<ChildId, Vec<Outcome>>,
    /// Children started from inside callbacks.
    pub spawned: Vec<ChildId>,
    /// Children whose callback panicked on purpose (recorded first).
    pub panicked: Vec<ChildId>,
}

impl Deaths {
    pub fn total(&self) -> usize {
        self.seen.values().map(Vec::len).sum()
    }

    /// The status of `id`, which must have been reported exactly once, and
    /// reaped (not lost).
    #[track_caller]
    pub fn status(&self, id: ChildId) -> ExitStatus {
        match self.seen.get(&id).map(Vec::as_slice) {
            Some([Outcome::Reaped(status)]) => *status,
            other => panic!("child {id}: expected exactly one reaped report, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn assert_code(&self, id: ChildId, code: i32) {
        let status = self.status(id);
        assert_eq!(status.code(), Some(code), "child {id}: {status}");
        assert_eq!(status.signal(), None, "child {id}: {status}");
    }

    #[track_caller]
    pub fn assert_signal(&self, id: ChildId, signal: i32) {
        let status = self.status(id);
        assert_eq!(status.signal(), Some(signal), "child {id}: {status}");
        assert_eq!(status.code(), None, "child {id}: {status}");
    }
}

impl Record for Deaths {
    fn record(&mut self, exit: Exit) {
        self.seen.entry(exit.id).or_default().push(exit.outcome);
    }
}

/// `Rc<Cell<T>>` for `Send` callbacks: a shared `Copy` value behind a lock.
#[derive(Debug, Default)]
pub struct Shared<T>(std::sync::Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(std::sync::Arc::clone(&self.0))
    }
}

impl<T: Copy> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared(std::sync::Arc::new(Mutex::new(value)))
    }

    pub fn get(&self) -> T {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set(&self, value: T) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }
}
