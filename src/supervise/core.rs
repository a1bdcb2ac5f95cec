//! A pool's state machine, without I/O: workers and their states, sizing,
//! the crash throttle, generations and the stop, as inputs (a start's
//! result, a status report, a death, the clock) and outputs ([`Action`]s for
//! the I/O shell in `pool.rs`, [`Note`]s that become public events).
//!
//! Every input takes the time, so the unit tests below and the fuzz target
//! (`evchild::fuzzing::pool`) script the clock and the processes; the shell
//! executes each action at once and feeds the result back.
//!
//! Worker states: `Starting` → `Idle` ⇄ `Busy` → `Retiring` → removed at its
//! death. Only the pool moves a worker to `Retiring`, by signalling it;
//! every other transition is the worker's report.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::policy::{later, SpawnRate, Throttle};
use super::{PoolConfig, WorkerState};

/// A worker's report on the status channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    Ready,
    Busy,
    Idle,
}

/// What the shell must do now, for the worker with this token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start a worker of `generation`; report the result with
    /// [`Core::started`] or [`Core::start_failed`].
    Start { token: u64, generation: u64 },
    /// `SIGTERM` now, `SIGKILL` after `grace`.
    Stop { token: u64, grace: Duration },
    /// `SIGKILL` now (it did not report ready in time).
    Kill { token: u64 },
}

/// Something the application is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    Ready(u64),
    Busy(u64),
    Idle(u64),
    Retiring(u64),
    /// A worker died; `fault` if it counted against the throttle.
    Exited {
        token: u64,
        fault: bool,
    },
    Throttled(Instant),
    Unthrottled,
    Stopped,
}

/// The pool's view of one worker.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    pub(crate) generation: u64,
    pub(crate) state: WorkerState,
    pub(crate) started: Instant,
    pub(crate) ready_at: Option<Instant>,
    pub(crate) requests: u64,
    /// Retire as soon as it reports idle (old generation).
    retire_on_idle: bool,
    /// Retire at this time even if still busy (old generation).
    retire_by: Option<Instant>,
    /// Its death is not the worker's fault: the pool signalled it, or
    /// already counted the fault (start timeout).
    excused: bool,
}

/// The state machine of one pool.
#[derive(Debug)]
pub(crate) struct Core {
    cfg: PoolConfig,
    workers: BTreeMap<u64, Worker>,
    next_token: u64,
    generation: u64,
    rate: SpawnRate,
    throttle: Throttle,
    /// After a throttle: one start at a time until a worker reports ready.
    probing: bool,
    next_tick: Instant,
    stopping: Option<Duration>,
    stopped: bool,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) notes: VecDeque<Note>,
}

impl Core {
    /// A pool that starts its initial workers at once.
    pub(crate) fn new(cfg: PoolConfig, now: Instant) -> Self {
        let mut core = Core {
            rate: SpawnRate::new(cfg.max_spawn_rate),
            throttle: Throttle::new(cfg.throttle_delay, cfg.throttle_max, cfg.throttle_reset),
            next_tick: later(now, cfg.interval),
            cfg,
            workers: BTreeMap::new(),
            next_token: 1,
            generation: 1,
            probing: false,
            stopping: None,
            stopped: false,
            actions: VecDeque::new(),
            notes: VecDeque::new(),
        };
        for _ in 0..core.cfg.initial() {
            core.start_one(now);
        }
        core
    }

    pub(crate) fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    pub(crate) fn workers(&self) -> impl Iterator<Item = (u64, &Worker)> + '_ {
        self.workers.iter().map(|(t, w)| (*t, w))
    }

    pub(crate) fn worker(&self, token: u64) -> Option<&Worker> {
        self.workers.get(&token)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn throttled_until(&self) -> Option<Instant> {
        self.throttle.until()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Workers that count against the sizes: all but the retiring ones.
    pub(crate) fn active(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.state != WorkerState::Retiring)
            .count()
    }

    fn count(&self, state: WorkerState) -> usize {
        self.workers.values().filter(|w| w.state == state).count()
    }

    /// The next time [`tick`](Self::tick) has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let mut next = if self.stopping.is_some() {
            None
        } else {
            Some(self.next_tick)
        };
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some(until) = self.throttle.until() {
            earliest(until);
        }
        for w in self.workers.values() {
            if w.state == WorkerState::Starting && !w.excused {
                earliest(later(w.started, self.cfg.start_timeout));
            }
            if let Some(by) = w.retire_by {
                earliest(by);
            }
        }
        next
    }

    /// Does what the clock says: start timeouts, the end of a throttle,
    /// old-generation deadlines, and the interval's idle maintenance.
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        let timeout = self.cfg.start_timeout;
        let late: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.state == WorkerState::Starting && !w.excused && later(w.started, timeout) <= now
            })
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            if let Some(w) = self.workers.get_mut(&token) {
                w.excused = true;
                w.state = WorkerState::Retiring;
            }
            self.actions.push_back(Action::Kill { token });
            self.notes.push_back(Note::Retiring(token));
            self.fault(now);
        }
        let overdue: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| w.retire_by.is_some_and(|by| by <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in overdue {
            self.retire(token, self.cfg.retire_grace);
        }
        if self.throttle.expire(now) {
            self.notes.push_back(Note::Unthrottled);
            self.probing = true;
        }
        if self.stopping.is_some() {
            return;
        }
        if now >= self.next_tick {
            self.next_tick = later(now, self.cfg.interval);
            self.idle_maintenance(now);
        }
        self.fill_minimum(now);
    }

    /// Once per interval: too few idle workers, start some at the doubling
    /// rate; too many, retire one.
    fn idle_maintenance(&mut self, now: Instant) {
        let spare = self.count(WorkerState::Idle) + self.count(WorkerState::Starting);
        let shortage = self.cfg.min_idle.saturating_sub(spare);
        let room = self.cfg.max_workers.saturating_sub(self.active());
        let n = if self.throttle.is_on() {
            0
        } else {
            self.rate.decide(shortage, room)
        };
        for _ in 0..n {
            if !self.may_start() {
                break;
            }
            self.start_one(now);
        }
        let idle = self.count(WorkerState::Idle);
        if shortage == 0 && idle > self.cfg.max_idle && self.active() > self.cfg.min_workers {
            // The newest idle worker: the older ones have warmed up.
            let newest = self
                .workers
                .iter()
                .rev()
                .find(|(_, w)| w.state == WorkerState::Idle)
                .map(|(t, _)| *t);
            if let Some(token) = newest {
                self.retire(token, self.cfg.retire_grace);
            }
        }
    }

    /// Starts workers until there are `min_workers`, unless throttled.
    fn fill_minimum(&mut self, now: Instant) {
        while self.active() < self.cfg.min_workers && self.may_start() {
            self.start_one(now);
        }
    }

    fn may_start(&self) -> bool {
        self.stopping.is_none()
            && !self.throttle.is_on()
            && self.active() < self.cfg.max_workers
            && !(self.probing && self.count(WorkerState::Starting) > 0)
    }

    fn start_one(&mut self, now: Instant) {
        let token = self.next_token;
        self.next_token += 1;
        self.workers.insert(
            token,
            Worker {
                generation: self.generation,
                state: WorkerState::Starting,
                started: now,
                ready_at: None,
                requests: 0,
                retire_on_idle: false,
                retire_by: None,
                excused: false,
            },
        );
        self.actions.push_back(Action::Start {
            token,
            generation: self.generation,
        });
    }

    fn fault(&mut self, now: Instant) {
        if let Some(until) = self.throttle.fault(now) {
            self.notes.push_back(Note::Throttled(until));
            // Starts decided before the fault but not yet made are dropped:
            // the throttle holds from now on.
            let workers = &mut self.workers;
            self.actions.retain(|a| match a {
                Action::Start { token, .. } => {
                    workers.remove(token);
                    false
                }
                _ => true,
            });
        }
    }

    /// `SIGTERM` with `grace`; the worker stops counting against the sizes.
    fn retire(&mut self, token: u64, grace: Duration) {
        if let Some(w) = self.workers.get_mut(&token) {
            w.retire_by = None;
            w.retire_on_idle = false;
            w.excused = true;
            if w.state != WorkerState::Retiring {
                w.state = WorkerState::Retiring;
                self.notes.push_back(Note::Retiring(token));
            }
            self.actions.push_back(Action::Stop { token, grace });
        }
    }

    /// The shell started the worker.
    pub(crate) fn started(&mut self, _token: u64, _now: Instant) {}

    /// The shell could not start the worker: it never existed.
    pub(crate) fn start_failed(&mut self, token: u64, now: Instant) {
        if self.workers.remove(&token).is_some() {
            self.fault(now);
            self.after_change(now);
        }
    }

    /// A worker's report on the status channel. Reports from unknown (dead)
    /// or retiring workers are ignored.
    pub(crate) fn report(&mut self, token: u64, report: Report, now: Instant) {
        let generation = self.generation;
        let max_requests = self.cfg.max_requests;
        let Some(w) = self.workers.get_mut(&token) else {
            return;
        };
        if w.state == WorkerState::Retiring {
            return;
        }
        if w.state == WorkerState::Starting {
            w.state = WorkerState::Idle;
            w.ready_at = Some(now);
            self.probing = false;
            self.notes.push_back(Note::Ready(token));
        }
        match (report, w.state) {
            (Report::Busy, WorkerState::Idle) => {
                w.state = WorkerState::Busy;
                self.notes.push_back(Note::Busy(token));
            }
            (Report::Idle, WorkerState::Busy) => {
                w.state = WorkerState::Idle;
                w.requests += 1;
                self.notes.push_back(Note::Idle(token));
                let spent = max_requests.is_some_and(|max| w.requests >= max);
                if spent || w.retire_on_idle || w.generation < generation {
                    self.retire(token, self.cfg.retire_grace);
                }
            }
            _ => {}
        }
        // A retirement left room, or a ready report ended probing.
        self.after_change(now);
    }

    /// The parent takes an idle worker of the current generation for a job
    /// of its own (OpenSRF): it is busy until it reports idle.
    pub(crate) fn checkout(&mut self) -> Option<u64> {
        if self.stopping.is_some() {
            return None;
        }
        let generation = self.generation;
        let (token, w) = self
            .workers
            .iter_mut()
            .find(|(_, w)| w.state == WorkerState::Idle && w.generation == generation)?;
        w.state = WorkerState::Busy;
        self.notes.push_back(Note::Busy(*token));
        Some(*token)
    }

    /// A worker died; `abnormal` if by a signal or with a non-zero code (or
    /// lost).
    pub(crate) fn exited(&mut self, token: u64, abnormal: bool, now: Instant) {
        let Some(w) = self.workers.remove(&token) else {
            return;
        };
        // Postfix's rule, plus the start handshake: a death the pool did not
        // cause is a fault if the worker never reported ready, or died
        // abnormally before serving a request (or at all, if strict).
        let proven = w.requests > 0 && !self.cfg.strict_faults;
        let fault = !w.excused && (w.state == WorkerState::Starting || (abnormal && !proven));
        self.notes.push_back(Note::Exited { token, fault });
        if fault {
            self.fault(now);
        }
        self.after_change(now);
    }

    /// After a worker left: replace it up to the minimum, or, when
    /// stopping, say so if it was the last.
    fn after_change(&mut self, now: Instant) {
        if self.stopping.is_some() {
            if self.workers.is_empty() && !self.stopped {
                self.stopped = true;
                self.notes.push_back(Note::Stopped);
            }
        } else {
            self.fill_minimum(now);
        }
    }

    /// A new generation: idle (and starting) workers of older ones are
    /// retired now, busy ones when they report idle, or after the retire
    /// grace at the latest; the minimum is refilled with new ones at once.
    pub(crate) fn reload(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.generation += 1;
        let old: Vec<(u64, WorkerState)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state != WorkerState::Retiring)
            .map(|(t, w)| (*t, w.state))
            .collect();
        for (token, state) in old {
            if state == WorkerState::Busy {
                let by = Some(later(now, self.cfg.retire_grace));
                if let Some(w) = self.workers.get_mut(&token) {
                    w.retire_on_idle = true;
                    w.retire_by = by;
                }
            } else {
                self.retire(token, self.cfg.retire_grace);
            }
        }
        // A reload is an operator's fresh start: no probing, and the idle
        // shortage is filled from the next interval on.
        self.fill_minimum(now);
    }

    /// Stops starting workers and asks every worker to stop: `SIGTERM`,
    /// `SIGKILL` after `grace`. [`Note::Stopped`] follows the last death.
    pub(crate) fn shutdown(&mut self, grace: Duration) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(grace);
        let tokens: Vec<u64> = self.workers.keys().copied().collect();
        for token in tokens {
            // Again for retiring workers too: their grace may be longer.
            self.retire(token, grace);
        }
        if self.workers.is_empty() {
            self.stopped = true;
            self.notes.push_back(Note::Stopped);
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
