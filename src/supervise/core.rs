//! A pool's state machine, without I/O: workers and their states, sizing,
//! the crash throttle and the give-up limit, liveness timers, generations
//! (reloads) and the stop, as inputs (a start's result, a status report, a
//! death, the clock) and outputs ([`Action`]s for the I/O shell in
//! `pool.rs`, [`Note`]s that become public events).
//!
//! Every input takes the time, so the unit tests (`core_tests.rs`) and the
//! fuzz target (`evchild::fuzzing::pool`) script the clock and the
//! processes; the shell executes each action at once and feeds the result
//! back.
//!
//! Worker states: `Starting` → `Idle` ⇄ `Busy` → `Retiring` → removed at its
//! death. Only the pool moves a worker to `Retiring`, by signalling it;
//! every other transition is the worker's report. A worker may also be
//! *leaving*: still serving, but marked to retire when it reports idle (or
//! when its drain time is up); leaving workers no longer count for sizing.
//!
//! The rules, each in one function:
//! * who counts for sizing: [`Core::is_member`];
//! * what is a fault: [`Core::exited`] (and the start timeout in `tick`);
//! * what a fault does (throttle, give up, abandon a reload): `fault`;
//! * when a start may happen: `may_start`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::policy::{later, SpawnRate, Throttle};
use super::{PoolConfig, Timeout, WorkerState};

/// A worker's report on the status channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    Ready,
    Busy,
    Idle,
    Heartbeat,
}

/// What the shell must do now, for the worker with this token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start a worker of `generation`; report the result with
    /// [`Core::started`] or [`Core::start_failed`].
    Start { token: u64, generation: u64 },
    /// Send the pool's stop signal now (the core sends [`Action::Kill`]
    /// itself when the grace is up).
    Stop { token: u64 },
    /// `SIGKILL` now.
    Kill { token: u64 },
}

/// Why a reload was abandoned: the new generation's first fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// A worker of the new generation could not be started.
    StartFailed(u64),
    /// It died before it reported ready (or, strict, abnormally).
    Died(u64),
    /// It did not report ready within the start timeout.
    StartTimeout(u64),
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
    /// The pool killed a worker that broke a time limit.
    TimedOut {
        token: u64,
        what: Timeout,
    },
    Throttled(Duration),
    Unthrottled,
    GaveUp {
        faults: usize,
        window: Duration,
    },
    Reloaded {
        generation: u64,
    },
    ReloadAbandoned {
        generation: u64,
        cause: Cause,
    },
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
    /// Its last report of any kind (or its start).
    last_report: Instant,
    /// When it last reported busy / idle.
    busy_since: Instant,
    idle_since: Instant,
    /// Its own request limit (the pool's, plus jitter).
    max_requests: Option<u64>,
    /// Retire as soon as it reports idle (old generation, resize).
    leaving: bool,
    /// Retire at this time even if still busy (the drain time).
    retire_by: Option<Instant>,
    /// `SIGKILL` at this time (the grace after the stop signal).
    kill_at: Option<Instant>,
    /// Its death is not the worker's fault: the pool signalled it.
    excused: bool,
    /// Killed for not reporting ready in time: its fault, already counted.
    timed_out: bool,
}

/// A reload in progress.
#[derive(Debug, Clone)]
struct Reload {
    /// How many workers the new generation brings.
    target: usize,
    /// The configuration to go back to if it is abandoned.
    old_cfg: PoolConfig,
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
    /// Recent faults, for the give-up limit.
    faults: VecDeque<Instant>,
    gave_up: bool,
    reload: Option<Reload>,
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
            faults: VecDeque::new(),
            gave_up: false,
            reload: None,
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

    pub(crate) fn has_given_up(&self) -> bool {
        self.gave_up
    }

    pub(crate) fn is_reloading(&self) -> bool {
        self.reload.is_some()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Workers that are not retiring (leaving ones included: they serve).
    pub(crate) fn active(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.state != WorkerState::Retiring)
            .count()
    }

    /// Whether a worker counts for sizing: not retiring nor leaving, and,
    /// during a reload, of the new generation (the old one serves on loan
    /// until the new one has replaced it).
    fn is_member(&self, w: &Worker) -> bool {
        w.state != WorkerState::Retiring
            && !w.leaving
            && (self.reload.is_none() || w.generation == self.generation)
    }

    pub(crate) fn members(&self) -> usize {
        self.workers.values().filter(|w| self.is_member(w)).count()
    }

    fn members_in(&self, state: WorkerState) -> usize {
        self.workers
            .values()
            .filter(|w| w.state == state && self.is_member(w))
            .count()
    }

    /// Workers of an older generation that still serve unreplaced.
    fn old_unreplaced(&self) -> impl Iterator<Item = (u64, &Worker)> + '_ {
        let generation = self.generation;
        self.workers
            .iter()
            .filter(move |(_, w)| {
                w.generation < generation && w.state != WorkerState::Retiring && !w.leaving
            })
            .map(|(t, w)| (*t, w))
    }

    /// The drain time of a busy worker that is to retire.
    fn drain(&self) -> Duration {
        self.cfg.drain.unwrap_or(self.cfg.retire_grace)
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
        let may_shrink = self.may_shrink_idle();
        for w in self.workers.values() {
            if let Some(t) = self.liveness_deadline(w) {
                earliest(t.0);
            }
            if may_shrink && w.state == WorkerState::Idle && self.is_member(w) {
                if let Some(limit) = self.cfg.idle_timeout {
                    earliest(later(w.idle_since, limit));
                }
            }
            if let Some(by) = w.retire_by {
                earliest(by);
            }
            if let Some(at) = w.kill_at {
                earliest(at);
            }
        }
        next
    }

    /// When the worker breaks a time limit, and which.
    fn liveness_deadline(&self, w: &Worker) -> Option<(Instant, Timeout)> {
        match w.state {
            WorkerState::Starting if !w.excused => {
                Some((later(w.started, self.cfg.start_timeout), Timeout::Start))
            }
            WorkerState::Idle | WorkerState::Busy => {
                let busy = (w.state == WorkerState::Busy)
                    .then_some(self.cfg.busy_timeout)
                    .flatten()
                    .map(|d| (later(w.busy_since, d), Timeout::Busy));
                let beat = self
                    .cfg
                    .heartbeat
                    .map(|d| (later(w.last_report, d), Timeout::Heartbeat));
                match (busy, beat) {
                    (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                    (a, b) => a.or(b),
                }
            }
            _ => None,
        }
    }

    /// Idle workers above the minimum may be retired by the idle timeout.
    fn may_shrink_idle(&self) -> bool {
        self.cfg.idle_timeout.is_some()
            && self.stopping.is_none()
            && self.reload.is_none()
            && self.members() > self.cfg.min_workers
    }

    /// Does what the clock says: liveness limits, the end of a throttle,
    /// drain and kill deadlines, idle timeouts, and the interval's idle
    /// maintenance.
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        let late: Vec<(u64, Timeout)> = self
            .workers
            .iter()
            .filter_map(|(t, w)| {
                let (at, what) = self.liveness_deadline(w)?;
                (at <= now).then_some((*t, what))
            })
            .collect();
        for (token, what) in late {
            self.timed_out(token, what, now);
        }
        let overdue: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| w.retire_by.is_some_and(|by| by <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in overdue {
            self.retire(token, self.cfg.retire_grace, now);
        }
        let to_kill: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| w.kill_at.is_some_and(|at| at <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in to_kill {
            if let Some(w) = self.workers.get_mut(&token) {
                w.kill_at = None;
            }
            self.actions.push_back(Action::Kill { token });
        }
        if let Some(limit) = self.cfg.idle_timeout {
            while self.may_shrink_idle() {
                let stale = self
                    .workers
                    .iter()
                    .find(|(_, w)| {
                        w.state == WorkerState::Idle
                            && !w.leaving
                            && later(w.idle_since, limit) <= now
                    })
                    .map(|(t, _)| *t);
                match stale {
                    Some(token) => self.retire(token, self.cfg.retire_grace, now),
                    None => break,
                }
            }
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
        self.fill(now);
    }

    /// A worker broke a time limit: `SIGKILL`. A start timeout is a fault;
    /// a busy or heartbeat timeout is not (the worker had shown the command
    /// works), and it is replaced at once.
    fn timed_out(&mut self, token: u64, what: Timeout, now: Instant) {
        let Some(w) = self.workers.get_mut(&token) else {
            return;
        };
        let generation = w.generation;
        let was_member = w.state != WorkerState::Retiring && !w.leaving;
        w.excused = true;
        w.timed_out = what == Timeout::Start;
        w.state = WorkerState::Retiring;
        w.leaving = false;
        w.retire_by = None;
        self.actions.push_back(Action::Kill { token });
        self.notes.push_back(Note::TimedOut { token, what });
        self.notes.push_back(Note::Retiring(token));
        if what == Timeout::Start {
            self.fault(now, generation, Cause::StartTimeout(token));
        } else if was_member {
            self.replace(now);
        }
        self.fill(now);
    }

    /// Once per interval: too few idle workers, start some at the doubling
    /// rate; too many, retire one. Not during a reload, which sizes the new
    /// generation itself.
    fn idle_maintenance(&mut self, now: Instant) {
        if self.reload.is_some() {
            return;
        }
        let spare = self.members_in(WorkerState::Idle) + self.members_in(WorkerState::Starting);
        let shortage = self.cfg.min_idle.saturating_sub(spare);
        let room = self.cfg.max_workers.saturating_sub(self.members());
        let n = if self.throttle.is_on() || self.gave_up {
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
        let idle = self.members_in(WorkerState::Idle);
        if shortage == 0 && idle > self.cfg.max_idle && self.members() > self.cfg.min_workers {
            // The newest idle worker: the older ones have warmed up.
            let newest = self
                .workers
                .iter()
                .rev()
                .find(|(_, w)| w.state == WorkerState::Idle && !w.leaving)
                .map(|(t, _)| *t);
            if let Some(token) = newest {
                self.retire(token, self.cfg.retire_grace, now);
            }
        }
    }

    /// Starts workers until there are as many as the floor: the minimum, or
    /// during a reload the new generation's target.
    fn fill(&mut self, now: Instant) {
        let floor = match &self.reload {
            Some(r) => r.target,
            None => self.cfg.min_workers,
        };
        while self.members() < floor && self.may_start() {
            self.start_one(now);
        }
    }

    /// One start in place of a worker that died or was killed, if allowed.
    fn replace(&mut self, now: Instant) {
        if self.may_start() {
            self.start_one(now);
        }
    }

    fn may_start(&self) -> bool {
        self.stopping.is_none()
            && !self.throttle.is_on()
            && !self.gave_up
            && self.members() < self.cfg.max_workers
            && !(self.probing && self.members_in(WorkerState::Starting) > 0)
    }

    fn start_one(&mut self, now: Instant) {
        let token = self.next_token;
        self.next_token += 1;
        let max_requests = self
            .cfg
            .max_requests
            .map(|max| max.saturating_add(jitter(token, self.cfg.max_requests_jitter)));
        self.workers.insert(
            token,
            Worker {
                generation: self.generation,
                state: WorkerState::Starting,
                started: now,
                ready_at: None,
                requests: 0,
                last_report: now,
                busy_since: now,
                idle_since: now,
                max_requests,
                leaving: false,
                retire_by: None,
                kill_at: None,
                excused: false,
                timed_out: false,
            },
        );
        self.actions.push_back(Action::Start {
            token,
            generation: self.generation,
        });
    }

    /// A fault of a worker of `generation`: it may abandon a reload, end in
    /// giving up, and throttles.
    fn fault(&mut self, now: Instant, generation: u64, cause: Cause) {
        if self.reload.is_some() && generation == self.generation {
            self.abandon_reload(cause, now);
        }
        if let Some((burst, window)) = self.cfg.give_up {
            self.faults.push_back(now);
            while self
                .faults
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                self.faults.pop_front();
            }
            if !self.gave_up && self.faults.len() >= burst {
                self.gave_up = true;
                self.notes.push_back(Note::GaveUp {
                    faults: self.faults.len(),
                    window,
                });
                self.drop_pending_starts();
            }
        }
        if self.throttle.fault(now).is_some() {
            self.notes.push_back(Note::Throttled(self.throttle.delay()));
            self.drop_pending_starts();
        }
    }

    /// Starts decided before a fault but not yet made are dropped: the
    /// throttle (or the give-up) holds from now on.
    fn drop_pending_starts(&mut self) {
        let workers = &mut self.workers;
        let mut dropped = Vec::new();
        self.actions.retain(|a| match a {
            Action::Start { token, .. } => {
                workers.remove(token);
                dropped.push(*token);
                false
            }
            _ => true,
        });
        // Nor are they signalled: they never existed.
        self.actions.retain(|a| match a {
            Action::Stop { token } | Action::Kill { token } => !dropped.contains(token),
            Action::Start { .. } => true,
        });
    }

    /// The stop signal now, `SIGKILL` after `grace`; the worker stops
    /// counting for sizing.
    fn retire(&mut self, token: u64, grace: Duration, now: Instant) {
        if let Some(w) = self.workers.get_mut(&token) {
            w.retire_by = None;
            w.leaving = false;
            w.excused = true;
            let kill_at = later(now, grace);
            w.kill_at = Some(w.kill_at.map_or(kill_at, |k| k.min(kill_at)));
            if w.state != WorkerState::Retiring {
                w.state = WorkerState::Retiring;
                self.notes.push_back(Note::Retiring(token));
            }
            self.actions.push_back(Action::Stop { token });
        }
    }

    /// Retire an idle (or starting) worker now, a busy one when it reports
    /// idle or its drain time is up.
    fn retire_or_drain(&mut self, token: u64, now: Instant) {
        let drain = self.drain();
        let Some(w) = self.workers.get_mut(&token) else {
            return;
        };
        if w.state == WorkerState::Busy {
            w.leaving = true;
            w.retire_by = Some(later(now, drain));
        } else {
            self.retire(token, self.cfg.retire_grace, now);
        }
    }

    /// The shell started the worker.
    pub(crate) fn started(&mut self, _token: u64, _now: Instant) {}

    /// The shell could not start the worker: it never existed.
    pub(crate) fn start_failed(&mut self, token: u64, now: Instant) {
        if let Some(w) = self.workers.remove(&token) {
            self.fault(now, w.generation, Cause::StartFailed(token));
            self.after_change(now);
        }
    }

    /// A worker's report on the status channel. Reports from unknown (dead)
    /// or retiring workers are ignored.
    pub(crate) fn report(&mut self, token: u64, report: Report, now: Instant) {
        let Some(w) = self.workers.get_mut(&token) else {
            return;
        };
        if w.state == WorkerState::Retiring {
            return;
        }
        w.last_report = now;
        let mut ready = false;
        if w.state == WorkerState::Starting && report != Report::Heartbeat {
            w.state = WorkerState::Idle;
            w.ready_at = Some(now);
            w.idle_since = now;
            ready = true;
            self.probing = false;
            self.notes.push_back(Note::Ready(token));
        }
        let mut retire = false;
        match (report, w.state) {
            (Report::Busy, WorkerState::Idle) => {
                w.state = WorkerState::Busy;
                w.busy_since = now;
                self.notes.push_back(Note::Busy(token));
            }
            (Report::Idle, WorkerState::Busy) => {
                w.state = WorkerState::Idle;
                w.idle_since = now;
                w.requests += 1;
                self.notes.push_back(Note::Idle(token));
                let spent = w.max_requests.is_some_and(|max| w.requests >= max);
                retire = spent || w.leaving;
            }
            _ => {}
        }
        let generation = w.generation;
        if retire {
            self.retire(token, self.cfg.retire_grace, now);
        }
        if ready && self.reload.is_some() && generation == self.generation {
            self.swap_one(now);
        }
        // A retirement left room, or a ready report ended probing.
        self.after_change(now);
    }

    /// A new worker is ready during a reload: one old worker goes, idle
    /// ones first, busy ones after their drain time.
    fn swap_one(&mut self, now: Instant) {
        let pick = |want: WorkerState| {
            self.old_unreplaced()
                .find(|(_, w)| w.state == want)
                .map(|(t, _)| t)
        };
        let victim = pick(WorkerState::Idle)
            .or_else(|| pick(WorkerState::Starting))
            .or_else(|| pick(WorkerState::Busy));
        if let Some(token) = victim {
            self.retire_or_drain(token, now);
        }
        self.check_reload_done(now);
    }

    /// The reload is over when no old worker is left unreplaced; once the
    /// new generation is all ready, the old workers left (more than the
    /// target, after a resize) go too.
    fn check_reload_done(&mut self, now: Instant) {
        let Some(reload) = &self.reload else {
            return;
        };
        let generation = self.generation;
        let ready_new = self
            .workers
            .values()
            .filter(|w| {
                w.generation == generation
                    && matches!(w.state, WorkerState::Idle | WorkerState::Busy)
                    && !w.leaving
            })
            .count();
        if ready_new >= reload.target {
            let old: Vec<u64> = self.old_unreplaced().map(|(t, _)| t).collect();
            for token in old {
                self.retire_or_drain(token, now);
            }
        }
        if self.old_unreplaced().next().is_none() {
            self.reload = None;
            self.rate = SpawnRate::new(self.cfg.max_spawn_rate);
            self.next_tick = later(now, self.cfg.interval);
            self.notes.push_back(Note::Reloaded { generation });
        }
    }

    /// The new generation faulted: its workers that are still starting are
    /// killed, the old ones keep serving (ready new ones too), and the
    /// configuration goes back to the old one.
    fn abandon_reload(&mut self, cause: Cause, now: Instant) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        self.notes.push_back(Note::ReloadAbandoned {
            generation: self.generation,
            cause,
        });
        // New workers not started yet never will be.
        self.drop_pending_starts();
        let generation = self.generation;
        let starting: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation == generation && w.state == WorkerState::Starting)
            .map(|(t, _)| *t)
            .collect();
        for token in starting {
            self.retire(token, Duration::ZERO, now);
        }
        for w in self.workers.values_mut() {
            if w.leaving && w.generation < generation {
                w.leaving = false;
                w.retire_by = None;
            }
        }
        self.apply_config(reload.old_cfg);
        self.shrink_to_max(now);
        self.next_tick = later(now, self.cfg.interval);
    }

    fn apply_config(&mut self, cfg: PoolConfig) {
        self.throttle
            .configure(cfg.throttle_delay, cfg.throttle_max, cfg.throttle_reset);
        self.rate = SpawnRate::new(cfg.max_spawn_rate);
        self.cfg = cfg;
    }

    /// The parent takes an idle worker for a job of its own (OpenSRF): it
    /// is busy until it reports idle. Workers of the current generation
    /// first.
    pub(crate) fn checkout(&mut self, now: Instant) -> Option<u64> {
        if self.stopping.is_some() {
            return None;
        }
        let generation = self.generation;
        let token = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WorkerState::Idle && !w.leaving)
            .max_by_key(|(t, w)| (w.generation == generation, std::cmp::Reverse(**t)))
            .map(|(t, _)| *t)?;
        let w = self.workers.get_mut(&token)?;
        w.state = WorkerState::Busy;
        w.busy_since = now;
        self.notes.push_back(Note::Busy(token));
        Some(token)
    }

    /// The application says work is waiting and no worker took it
    /// (Postfix: the listener is readable while no process is available):
    /// start one worker at once if none is idle or starting. Returns whether
    /// one was started.
    pub(crate) fn demand(&mut self, now: Instant) -> bool {
        if self.members_in(WorkerState::Idle) > 0 || self.members_in(WorkerState::Starting) > 0 {
            return false;
        }
        if !self.may_start() {
            return false;
        }
        self.start_one(now);
        true
    }

    /// A worker died; `abnormal` if by a signal or with a non-zero code (or
    /// lost). The fault rule: a death the pool did not cause is a fault if
    /// the worker never reported ready; after ready, only with
    /// `strict_faults` and if abnormal. Any other death the pool did not
    /// cause is replaced at once.
    pub(crate) fn exited(&mut self, token: u64, abnormal: bool, now: Instant) {
        let Some(w) = self.workers.get(&token) else {
            return;
        };
        let member = self.is_member(w);
        let Some(w) = self.workers.remove(&token) else {
            return;
        };
        let fault = w.timed_out
            || (!w.excused
                && (w.state == WorkerState::Starting || (abnormal && self.cfg.strict_faults)));
        self.notes.push_back(Note::Exited { token, fault });
        if fault && !w.timed_out {
            self.fault(now, w.generation, Cause::Died(token));
        } else if !fault && !w.excused && member && self.reload.is_none() {
            self.replace(now);
        }
        if self.reload.is_some() {
            self.check_reload_done(now);
        }
        self.after_change(now);
    }

    /// After a worker left: keep the floor, or, when stopping, say so if it
    /// was the last.
    fn after_change(&mut self, now: Instant) {
        if self.stopping.is_some() {
            if self.workers.is_empty() && !self.stopped {
                self.stopped = true;
                self.notes.push_back(Note::Stopped);
            }
        } else {
            self.fill(now);
        }
    }

    /// A new generation, with a new configuration if given (checked by the
    /// caller): see the module docs of `supervise` for the rules. Lifts the
    /// throttle and the give-up.
    pub(crate) fn reload(&mut self, cfg: Option<PoolConfig>, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        let old_cfg = match self.reload.take() {
            Some(r) => r.old_cfg,
            None => self.cfg.clone(),
        };
        if let Some(cfg) = cfg {
            self.apply_config(cfg);
        }
        self.lift();
        // Everything not retiring nor leaving: old generations included.
        let serving = self
            .workers
            .values()
            .filter(|w| w.state != WorkerState::Retiring && !w.leaving)
            .count();
        let target = serving.clamp(self.cfg.min_workers.max(1), self.cfg.max_workers);
        self.generation += 1;
        self.reload = Some(Reload { target, old_cfg });
        self.fill(now);
        self.check_reload_done(now);
    }

    /// Lifts the throttle and the give-up, forgets recent faults.
    fn lift(&mut self) {
        if self.throttle.lift() {
            self.notes.push_back(Note::Unthrottled);
        }
        self.gave_up = false;
        self.probing = false;
        self.faults.clear();
        self.rate = SpawnRate::new(self.cfg.max_spawn_rate);
    }

    /// The operator's call: starts resume now.
    pub(crate) fn unthrottle(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.lift();
        self.fill(now);
    }

    /// A new configuration (checked by the caller), without a reload: the
    /// sizes apply at once. Too many workers: idle ones retire now (newest
    /// first), then starting ones, then busy ones after their drain time.
    pub(crate) fn set_config(&mut self, cfg: PoolConfig, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        if let Some(r) = &mut self.reload {
            // The old configuration stays the fallback; the new one sizes
            // the new generation.
            r.target = r.target.clamp(cfg.min_workers.max(1), cfg.max_workers);
        }
        self.apply_config(cfg);
        self.shrink_to_max(now);
        self.fill(now);
        if self.reload.is_some() {
            self.check_reload_done(now);
        }
    }

    /// Retires members above the maximum: idle ones now (newest first),
    /// then starting ones, then busy ones after their drain time.
    fn shrink_to_max(&mut self, now: Instant) {
        for want in [WorkerState::Idle, WorkerState::Starting, WorkerState::Busy] {
            while self.members() > self.cfg.max_workers {
                let newest = self
                    .workers
                    .iter()
                    .rev()
                    .find(|(_, w)| w.state == want && self.is_member(w))
                    .map(|(t, _)| *t);
                match newest {
                    Some(token) => self.retire_or_drain(token, now),
                    None => break,
                }
            }
        }
    }

    /// Stops starting workers and asks every worker to stop: the stop
    /// signal, `SIGKILL` after `grace`. [`Note::Stopped`] follows the last
    /// death.
    pub(crate) fn shutdown(&mut self, grace: Duration, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(grace);
        self.reload = None;
        let tokens: Vec<u64> = self.workers.keys().copied().collect();
        for token in tokens {
            // Again for retiring workers too: their grace may be longer.
            self.retire(token, grace, now);
        }
        if self.workers.is_empty() {
            self.stopped = true;
            self.notes.push_back(Note::Stopped);
        }
    }
}

/// A worker's share of the request-limit jitter: a number in `0..=spread`,
/// spread over the tokens (splitmix64), so that workers started together
/// do not all retire together.
fn jitter(token: u64, spread: u64) -> u64 {
    if spread == 0 {
        return 0;
    }
    let mut z = token.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % spread.saturating_add(1).max(1)
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
