//! One pool as the application sees it: the state machine of `core.rs`
//! plus the processes, the status pipe, and the scoreboard.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::core::{Action, Cause, Core, Note};
use super::start::{spec, Start, StartOptions};
use super::status::StatusPipe;
use super::{Event, HasSupervisor, PoolConfig, PoolId, WorkerId, WorkerState};
use crate::{ChildId, Exit, Pid, Reactor, Result, Spawned};

/// One worker on the scoreboard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker.
    pub id: WorkerId,
    /// Its process, while it lives.
    pub child: ChildId,
    /// Where it is in its life.
    pub state: WorkerState,
    /// The pool's generation it was started in.
    pub generation: u64,
    /// When it was started.
    pub started: Instant,
    /// When it reported ready, if it has.
    pub ready_at: Option<Instant>,
    /// Requests served: its busy→idle reports.
    pub requests: u64,
}

impl WorkerInfo {
    /// Its pid. It names the worker only until its death is reported.
    pub fn pid(&self) -> Pid {
        self.child.pid()
    }
}

/// A worker's end, kept for the scoreboard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LastExit {
    /// The worker.
    pub id: WorkerId,
    /// Its generation.
    pub generation: u64,
    /// How long it lived.
    pub lifetime: Duration,
    /// Requests it served.
    pub requests: u64,
    /// Whether its death counted against the crash throttle.
    pub fault: bool,
    /// The reactor's report.
    pub exit: Exit,
}

/// A named group of interchangeable workers; see the [module
/// docs](super). Read it with [`Supervisor::pool`](super::Supervisor::pool).
#[derive(Debug)]
pub struct Pool {
    /// The id of the supervisor that owns it.
    supervisor: u64,
    pub(crate) id: PoolId,
    name: String,
    pub(crate) core: Core,
    start: Start,
    pub(crate) status: StatusPipe,
    children: HashMap<u64, ChildId>,
    stdio: HashMap<u64, Spawned>,
    last_exits: VecDeque<LastExit>,
    starts: u64,
    /// What the last fault was, in words, for an abandoned reload.
    failures: HashMap<u64, String>,
}

impl Pool {
    pub(crate) fn new(
        supervisor: u64,
        id: PoolId,
        name: String,
        config: PoolConfig,
        start: Start,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Pool {
            supervisor,
            id,
            name,
            core: Core::new(config, Instant::now()),
            start,
            status: StatusPipe::new()?,
            children: HashMap::new(),
            stdio: HashMap::new(),
            last_exits: VecDeque::new(),
            starts: 0,
            failures: HashMap::new(),
        })
    }

    /// The pool's id.
    pub fn id(&self) -> PoolId {
        self.id
    }

    /// The name it was given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration.
    pub fn config(&self) -> &PoolConfig {
        self.core.config()
    }

    /// The current generation: 1, then one more per reload.
    pub fn generation(&self) -> u64 {
        self.core.generation()
    }

    /// Every live worker, retiring ones included, oldest first.
    pub fn workers(&self) -> impl Iterator<Item = WorkerInfo> + '_ {
        self.core.workers().filter_map(|(token, w)| {
            Some(WorkerInfo {
                id: WorkerId {
                    pool: self.id,
                    token,
                },
                child: *self.children.get(&token)?,
                state: w.state,
                generation: w.generation,
                started: w.started,
                ready_at: w.ready_at,
                requests: w.requests,
            })
        })
    }

    /// One worker, while it lives.
    pub fn worker(&self, id: WorkerId) -> Option<WorkerInfo> {
        self.workers().find(|w| w.id == id)
    }

    /// How many live workers are in `state`.
    pub fn count(&self, state: WorkerState) -> usize {
        self.core
            .workers()
            .filter(|(_, w)| w.state == state)
            .count()
    }

    /// Live workers that are not retiring: what the sizes apply to.
    pub fn active(&self) -> usize {
        self.core.active()
    }

    /// Workers started since the pool was created.
    pub fn starts(&self) -> u64 {
        self.starts
    }

    /// The last exits, oldest first (as many as
    /// [`PoolConfig::last_exits`]).
    pub fn last_exits(&self) -> impl Iterator<Item = &LastExit> + '_ {
        self.last_exits.iter()
    }

    /// The end of the crash throttle, while the pool is throttled.
    pub fn throttled_until(&self) -> Option<Instant> {
        self.core.throttled_until()
    }

    /// Whether the pool gave up after too many faults
    /// ([`PoolConfig::give_up`]): it starts no worker until
    /// [`unthrottle`](super::Supervisor::unthrottle) or a reload.
    pub fn has_given_up(&self) -> bool {
        self.core.has_given_up()
    }

    /// Whether a reload is in progress: the new generation is starting and
    /// replacing the old one.
    pub fn is_reloading(&self) -> bool {
        self.core.is_reloading()
    }

    /// Whether [`shutdown`](super::Supervisor::shutdown) has reached this
    /// pool.
    pub fn is_stopping(&self) -> bool {
        self.core.is_stopping()
    }

    /// Whether the pool has stopped: it was shut down and its last worker
    /// has been reaped.
    pub fn is_stopped(&self) -> bool {
        self.core.is_stopped()
    }

    /// The parent's ends of a spawned worker's piped stdio (if its command
    /// asked for `Stdio::piped()`), once: the pool keeps them until taken,
    /// and closes them at the worker's death.
    pub fn take_stdio(&mut self, id: WorkerId) -> Option<Spawned> {
        self.stdio.remove(&id.token)
    }

    /// Executes the state machine's actions, until there are none, and
    /// turns its notes into events. `fds`: the supervisor's descriptors.
    pub(crate) fn act<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        events: &mut VecDeque<Event>,
        fds: &[std::os::fd::RawFd],
    ) {
        loop {
            self.flush_notes(events);
            let Some(action) = self.core.actions.pop_front() else {
                return;
            };
            let now = Instant::now();
            let group = self.core.config().process_group;
            match action {
                Action::Start { token, generation } => {
                    let spec = spec(self.id, token, generation);
                    let options = StartOptions {
                        supervisor: self.supervisor,
                        process_group: group,
                        parent_death_signal: self.core.config().parent_death_signal,
                        fds,
                    };
                    match self.start.start(reactor, &self.status, spec, options) {
                        Ok((child, spawned)) => {
                            self.starts += 1;
                            self.children.insert(token, child);
                            if let Some(s) = spawned.filter(|s| {
                                s.stdin.is_some() || s.stdout.is_some() || s.stderr.is_some()
                            }) {
                                self.stdio.insert(token, s);
                            }
                            self.core.started(token, now);
                            events.push_back(Event::Started {
                                worker: spec.worker,
                                pid: child.pid(),
                                generation,
                            });
                        }
                        Err(error) => {
                            let error = error.to_string();
                            self.failures
                                .insert(token, format!("{} could not start: {error}", spec.worker));
                            events.push_back(Event::StartFailed {
                                pool: self.id,
                                error,
                            });
                            self.core.start_failed(token, now);
                        }
                    }
                }
                Action::Stop { token } => {
                    if let Some(&child) = self.children.get(&token) {
                        // An error means its death is already being
                        // reported: nothing left to stop.
                        let signal = self.core.config().stop_signal;
                        let _ = if group {
                            reactor.kill_group(child, signal)
                        } else {
                            reactor.kill(child, signal)
                        };
                    }
                }
                Action::Kill { token } => {
                    if let Some(&child) = self.children.get(&token) {
                        let _ = if group {
                            reactor.kill_group(child, libc::SIGKILL)
                        } else {
                            reactor.kill(child, libc::SIGKILL)
                        };
                    }
                }
            }
        }
    }

    pub(crate) fn flush_notes(&mut self, events: &mut VecDeque<Event>) {
        let pool = self.id;
        let worker = |token| WorkerId { pool, token };
        while let Some(note) = self.core.notes.pop_front() {
            events.push_back(match note {
                Note::Ready(t) => Event::Ready { worker: worker(t) },
                Note::Busy(t) => Event::Busy { worker: worker(t) },
                Note::Idle(t) => Event::Idle { worker: worker(t) },
                Note::Retiring(t) => Event::Retiring { worker: worker(t) },
                Note::TimedOut { token, what } => Event::TimedOut {
                    worker: worker(token),
                    limit: what,
                },
                // Made into an event by `died`, which has the exit.
                Note::Exited { .. } => continue,
                Note::Throttled(delay) => Event::Throttled { pool, delay },
                Note::Unthrottled => Event::Unthrottled { pool },
                Note::GaveUp { faults, window } => Event::GaveUp {
                    pool,
                    faults,
                    window,
                },
                Note::Reloaded { generation } => Event::Reloaded { pool, generation },
                Note::ReloadAbandoned { generation, cause } => {
                    let (token, fallback) = match cause {
                        Cause::StartFailed(t) => (t, "could not start"),
                        Cause::Died(t) => (t, "died before it reported ready"),
                        Cause::StartTimeout(t) => {
                            (t, "did not report ready within the start timeout")
                        }
                    };
                    let reason = match (cause, self.failures.remove(&token)) {
                        (Cause::StartTimeout(_), _) | (_, None) => {
                            format!("{} {fallback}", worker(token))
                        }
                        (_, Some(text)) => text,
                    };
                    Event::ReloadAbandoned {
                        pool,
                        generation,
                        reason,
                    }
                }
                Note::Stopped => Event::Stopped { pool },
            });
        }
        self.failures.clear();
    }

    /// A worker's death, from its reactor callback. `false` if the death is
    /// not of the child this pool knows by `token` (nothing changed).
    pub(crate) fn died(&mut self, token: u64, exit: Exit, events: &mut VecDeque<Event>) -> bool {
        if self.children.get(&token) != Some(&exit.id) {
            return false;
        }
        self.children.remove(&token);
        self.stdio.remove(&token);
        let info = self.core.worker(token).cloned();
        let abnormal = !exit.status().is_some_and(|s| s.success());
        let id = WorkerId {
            pool: self.id,
            token,
        };
        if info
            .as_ref()
            .is_some_and(|w| w.state == WorkerState::Starting)
        {
            let status = exit
                .status()
                .map_or("was lost".to_owned(), |s| format!("ended ({s})"));
            self.failures
                .insert(token, format!("{id} {status} before it reported ready"));
        }
        self.core.exited(token, abnormal, Instant::now());
        let fault = self
            .core
            .notes
            .iter()
            .any(|n| matches!(n, Note::Exited { token: t, fault: true } if *t == token));
        if let Some(w) = info {
            if self.core.config().last_exits > 0 {
                while self.last_exits.len() >= self.core.config().last_exits {
                    self.last_exits.pop_front();
                }
                self.last_exits.push_back(LastExit {
                    id,
                    generation: w.generation,
                    lifetime: w.started.elapsed(),
                    requests: w.requests,
                    fault,
                    exit,
                });
            }
        }
        events.push_back(Event::Exited {
            worker: id,
            exit,
            fault,
        });
        true
    }
}
