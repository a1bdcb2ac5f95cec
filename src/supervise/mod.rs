//! Worker pools: what Postfix `master`, Apache prefork, OpenSRF and NGINX
//! Unit each build by hand around `waitpid` and a signal handler, on
//! evchild's public [`Reactor`] API, in the application's own `mio` loop.
//!
//! A [`Supervisor`] holds any number of [`Pool`]s. A pool is a named group
//! of interchangeable workers started from a command or a fork function
//! ([`Start`]), sized by a [`PoolConfig`]. It needs no thread: its timers
//! come out of [`Supervisor::timeout`], its status pipes are one descriptor
//! (the supervisor is a `mio::event::Source`), and its workers' deaths come
//! through the reactor's death callbacks, which reach the supervisor through
//! the application's context ([`HasSupervisor`]).
//!
//! ```no_run
//! use std::process::Command;
//! use evchild::supervise::{Event, HasSupervisor, PoolConfig, Start, Supervisor};
//! use evchild::{Hooks, Reactor};
//! use mio::{Events, Interest, Poll, Token};
//!
//! struct App { sup: Supervisor }
//! impl HasSupervisor for App {
//!     fn supervisor(&mut self) -> &mut Supervisor { &mut self.sup }
//! }
//!
//! let mut poll = Poll::new()?;
//! let mut reactor = Reactor::<App>::new(Hooks::default())?;
//! let mut app = App { sup: Supervisor::new()? };
//! poll.registry().register(&mut reactor, Token(0), Interest::READABLE)?;
//! poll.registry().register(&mut app.sup, Token(1), Interest::READABLE)?;
//!
//! let start = Start::command(|_| Command::new("/usr/local/bin/my-worker"));
//! app.sup.add_pool(&mut reactor, "web", PoolConfig::new().workers(2, 16), start)?;
//!
//! let mut events = Events::with_capacity(64);
//! loop {
//!     let timeout = evchild::earliest(reactor.timeout(), app.sup.timeout());
//!     match poll.poll(&mut events, timeout) {
//!         Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
//!         other => other?,
//!     }
//!     reactor.dispatch(&mut app)?;  // deaths
//!     app.sup.run(&mut reactor)?;   // reports and timers
//!     while let Some(event) = app.sup.next_event() {
//!         if let Event::Exited { worker, exit, .. } = event {
//!             println!("{worker} ended: {:?}", exit.status());
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Workers and their states
//!
//! Each worker gets the write end of its pool's status pipe and reports with
//! [`worker::ready`], [`worker::busy`], [`worker::idle`] and
//! [`worker::heartbeat`] (no allocation; usable after fork or exec). A
//! worker is [`WorkerState::Starting`] until it reports ready, then `Idle` ⇄
//! `Busy`, and `Retiring` once the pool has sent it its stop signal (too
//! many idle workers, its request limit, a reload, the stop); it leaves the
//! scoreboard when it is reaped. A worker that does not report ready within
//! the start timeout is killed and counts as a failed start. Workers may
//! accept on a listener the parent opened (Apache's model: keep its
//! descriptor inheritable), or the parent may take an idle worker for a job
//! of its own with [`Supervisor::checkout`] (OpenSRF's model). On its stop
//! signal (`SIGTERM` unless [`PoolConfig::stop_signal`]) a worker should
//! finish the request in hand and exit, between two requests of a
//! persistent connection too.
//!
//! # Sizing
//!
//! A worker that dies without the pool asking (the OOM killer, an operator,
//! a crash after ready) is replaced at once. Once per interval, with too
//! few idle workers the pool starts 1, then 2, 4, … workers per interval
//! while the shortage lasts (Apache's doubling: the rate is capped by the
//! room left under the maximum and by [`PoolConfig::max_spawn_rate`], not by
//! the shortage, which under load stays at 1 however many workers are
//! needed); with too many, it retires one. An application that sees work
//! waiting with no worker idle (its listener readable) calls
//! [`Supervisor::demand`], and a worker starts at once (Postfix's
//! `master`). No start ever takes the pool above its maximum.
//! [`Supervisor::set_config`] and [`Supervisor::resize`] change the sizes
//! at once.
//!
//! # Crash throttle and giving up
//!
//! A *fault* is a start that failed (`spawn` or `fork` error), a worker that
//! died before it reported ready, or one killed for not reporting ready
//! within the start timeout. A worker that reported ready has shown that
//! the command works: its death is no fault, unless
//! [`PoolConfig::strict_faults`] (then every abnormal death is). A fault
//! suspends starts for a delay that doubles on repeated faults up to a cap
//! and is forgotten after a quiet period ([`PoolConfig::throttle`]); when it
//! is lifted the pool starts one worker at a time until one reports ready.
//! So a command that crashes at once costs one start per throttle period.
//! After [`PoolConfig::give_up`] faults within a window the pool stops
//! starting altogether and says so ([`Event::GaveUp`]); the application
//! decides what next. A reload, or [`Supervisor::unthrottle`], lifts both.
//! Deaths the pool caused are never faults.
//!
//! # Liveness
//!
//! [`PoolConfig::busy_timeout`] kills a worker busy for too long (gunicorn's
//! `timeout`), [`PoolConfig::heartbeat`] one silent for too long (systemd's
//! `WatchdogSec`); both are replaced at once ([`Event::TimedOut`]).
//! [`PoolConfig::idle_timeout`] retires workers idle for too long above the
//! minimum (Postfix's `max_idle`), and [`PoolConfig::max_requests_jitter`]
//! spreads the request limit so that workers do not all retire together.
//!
//! # Reload without an outage
//!
//! [`Supervisor::reload`] (or [`Supervisor::reload_with`] a new
//! configuration) starts a new generation first, as many workers as the
//! pool serves with (within the new sizes), while the old generation keeps
//! serving. Each time a new worker reports ready, one old worker is retired
//! in its place: an idle one at once, a busy one when it reports idle or
//! after the [drain time](PoolConfig::drain), whichever comes first. The
//! capacity never falls below what it was; [`Event::Reloaded`] says when
//! the last old worker has been replaced. If the new generation faults, the
//! reload is abandoned ([`Event::ReloadAbandoned`], with the reason): its
//! workers still starting are killed, and the old ones serve on. A reload
//! lifts the throttle. Listeners are the application's and stay open.
//!
//! # Stop, and a master that dies
//!
//! [`Supervisor::shutdown`] stops the pools in reverse order of creation,
//! one after the other: no more starts, the stop signal to each worker (or
//! its process group), `SIGKILL` after the grace, and [`Event::Stopped`]
//! once the last one is reaped.
//!
//! When the master is killed outright: with
//! [`PoolConfig::parent_death_signal`] the kernel signals each worker
//! (executed or forked) at once. Without it, a worker learns it at its
//! next report, which fails with `EPIPE` instead of blocking (the status
//! pipe's read end is the master's: close-on-exec, and closed by a forked
//! worker with every other descriptor of the supervisor), and
//! [`worker::is_orphaned`] tells it to exit; that holds as long as no
//! other process the master forked without exec holds the read end (a
//! `Reactor::fork` child of the application's, say), and a worker that
//! never reports (blocked in `accept`) lives on until it does. The status descriptor is
//! never inheritable by a spawn it was not meant for: it is handed to a
//! worker in that child only, and the worker makes it close-on-exec.
//!
//! Children that are not workers are none of the supervisor's business:
//! the reactor's other children and unknown pids (`LibraryAlways`' hook) go
//! where they went before.

mod config;
mod core;
mod policy;
mod pool;
mod start;
mod status;
pub mod worker;

#[cfg(any(test, fuzzing))]
pub(crate) mod fuzz;

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

pub use config::PoolConfig;
pub use pool::{LastExit, Pool, WorkerInfo};
pub use start::{Start, WorkerSpec};
pub use status::{ENV, MASTER_ENV};

use crate::{Error, Exit, Pid, Reactor, Result};

/// The application's context gives the supervisor to the workers' death
/// callbacks: implement it for the `C` of your `Reactor<C>`.
pub trait HasSupervisor: Sized + 'static {
    /// The supervisor that owns the pools.
    fn supervisor(&mut self) -> &mut Supervisor;
}

/// A pool, by its index in its supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub(crate) usize);

impl PoolId {
    /// The index: 0 for the first pool added, and so on.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A worker: its pool, and a number no other worker of that pool has had.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId {
    /// Its pool.
    pub pool: PoolId,
    pub(crate) token: u64,
}

impl WorkerId {
    /// Its number in the pool (1 for the first worker, and so on).
    pub fn number(self) -> u64 {
        self.token
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {}.{}", self.pool.0, self.token)
    }
}

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerState {
    /// Started, not yet ready.
    Starting,
    /// Ready for work.
    Idle,
    /// Serving a request.
    Busy,
    /// Asked to stop (the stop signal; `SIGKILL` after a grace).
    Retiring,
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Retiring => "retiring",
        })
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool {}", self.0)
    }
}

/// Which time limit a worker broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timeout {
    /// It did not report ready within [`PoolConfig::start_timeout`] (a
    /// fault).
    Start,
    /// It was busy for longer than [`PoolConfig::busy_timeout`].
    Busy,
    /// It sent no report for [`PoolConfig::heartbeat`].
    Heartbeat,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timeout::Start => "did not report ready within the start timeout",
            Timeout::Busy => "was busy for longer than the busy timeout",
            Timeout::Heartbeat => "sent no heartbeat within the interval",
        })
    }
}

/// What happened in a pool, in order; read with
/// [`Supervisor::next_event`]. Its `Display` is one line for a log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A worker was started.
    Started {
        /// The worker.
        worker: WorkerId,
        /// Its pid.
        pid: Pid,
        /// The pool's generation it belongs to.
        generation: u64,
    },
    /// A worker could not be started (a fault).
    StartFailed {
        /// The pool.
        pool: PoolId,
        /// The error's message.
        error: String,
    },
    /// A worker reported ready for the first time.
    Ready {
        /// The worker.
        worker: WorkerId,
    },
    /// A worker took a request (or was checked out).
    Busy {
        /// The worker.
        worker: WorkerId,
    },
    /// A worker finished a request.
    Idle {
        /// The worker.
        worker: WorkerId,
    },
    /// The pool asked a worker to stop.
    Retiring {
        /// The worker.
        worker: WorkerId,
    },
    /// The pool killed a worker that broke a time limit.
    TimedOut {
        /// The worker.
        worker: WorkerId,
        /// Which limit.
        limit: Timeout,
    },
    /// A worker died and was reaped.
    Exited {
        /// The worker.
        worker: WorkerId,
        /// The reactor's report.
        exit: Exit,
        /// Whether it counted against the crash throttle.
        fault: bool,
    },
    /// A fault suspended starts for `delay`.
    Throttled {
        /// The pool.
        pool: PoolId,
        /// How long starts are suspended, from the event.
        delay: Duration,
    },
    /// Starts resumed.
    Unthrottled {
        /// The pool.
        pool: PoolId,
    },
    /// The pool had `faults` faults within `window`
    /// ([`PoolConfig::give_up`]) and starts no more workers until
    /// [`Supervisor::unthrottle`] or a reload.
    GaveUp {
        /// The pool.
        pool: PoolId,
        /// The faults counted.
        faults: usize,
        /// The window they fell in.
        window: Duration,
    },
    /// A reload is complete: every worker of the older generations has
    /// been replaced by a ready one of `generation`.
    Reloaded {
        /// The pool.
        pool: PoolId,
        /// The new generation.
        generation: u64,
    },
    /// A reload was abandoned because a worker of the new generation
    /// faulted: the workers that were serving go on; those of the new
    /// generation still starting are killed; the pool's configuration is
    /// the one before the reload.
    ReloadAbandoned {
        /// The pool.
        pool: PoolId,
        /// The abandoned generation.
        generation: u64,
        /// What went wrong, for a log.
        reason: String,
    },
    /// The pool was shut down and its last worker reaped.
    Stopped {
        /// The pool.
        pool: PoolId,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Started {
                worker,
                pid,
                generation,
            } => write!(f, "{worker} started: pid {pid}, generation {generation}"),
            Event::StartFailed { pool, error } => {
                write!(f, "{pool}: a worker could not start: {error}")
            }
            Event::Ready { worker } => write!(f, "{worker} ready"),
            Event::Busy { worker } => write!(f, "{worker} busy"),
            Event::Idle { worker } => write!(f, "{worker} idle"),
            Event::Retiring { worker } => write!(f, "{worker} retiring"),
            Event::TimedOut { worker, limit } => write!(f, "{worker} killed: it {limit}"),
            Event::Exited {
                worker,
                exit,
                fault,
            } => {
                write!(f, "{worker} (pid {}) ", exit.id.pid())?;
                match exit.status() {
                    Some(status) => write!(f, "{status}")?,
                    None => f.write_str("lost (reaped by other code)")?,
                }
                if *fault {
                    f.write_str(" [fault]")?;
                }
                Ok(())
            }
            Event::Throttled { pool, delay } => write!(
                f,
                "{pool}: throttled after a fault: no start for {:.3} s",
                delay.as_secs_f64()
            ),
            Event::Unthrottled { pool } => write!(f, "{pool}: starts resumed"),
            Event::GaveUp {
                pool,
                faults,
                window,
            } => write!(
                f,
                "{pool}: gave up after {faults} faults within {:.3} s: no more starts",
                window.as_secs_f64()
            ),
            Event::Reloaded { pool, generation } => {
                write!(f, "{pool}: reloaded, generation {generation} serving")
            }
            Event::ReloadAbandoned {
                pool,
                generation,
                reason,
            } => write!(
                f,
                "{pool}: reload to generation {generation} abandoned, the workers serving go on: {reason}"
            ),
            Event::Stopped { pool } => write!(f, "{pool}: stopped"),
        }
    }
}

/// The pools of one loop. See the [module docs](self).
///
/// Register it in the loop (it is one descriptor, an epoll set of the
/// pools' status pipes), sleep no longer than [`timeout`](Self::timeout),
/// and call [`run`](Self::run) whenever `poll` returns; the reactor's
/// `dispatch` brings it the workers' deaths through [`HasSupervisor`].
///
/// # Dropping
///
/// Dropping the supervisor closes the status pipes and forgets the pools;
/// it neither signals nor reaps the workers, which stay the reactor's
/// children (its [`DropPolicy`](crate::DropPolicy) applies when it is
/// dropped in turn). A worker's next report then fails with `EPIPE` (or
/// kills it with `SIGPIPE`, if it has not ignored the signal, as Rust
/// programs do). Stop the pools first with [`shutdown`](Self::shutdown).
pub struct Supervisor {
    /// Which supervisor this is, process-wide: a death callback of another
    /// (dropped) supervisor's worker carries another number.
    id: u64,
    pools: Vec<Pool>,
    /// Every descriptor of the supervisor (its epoll set, each pool's two
    /// ends), for a forked worker to close those that are not its own.
    fds: Vec<RawFd>,
    events: VecDeque<Event>,
    /// The status pipes, as one descriptor for the application's loop.
    poll: Poll,
    ready: Events,
    /// Set by `shutdown`: the grace for each pool.
    stopping: Option<Duration>,
}

impl Supervisor {
    /// A supervisor with no pool.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if its epoll instance cannot be created.
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let poll = Poll::new().map_err(|e| Error::io("epoll_create", e))?;
        Ok(Supervisor {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            pools: Vec::new(),
            fds: vec![poll.as_raw_fd()],
            events: VecDeque::new(),
            poll,
            ready: Events::with_capacity(16),
            stopping: None,
        })
    }

    /// Creates a pool and starts its initial workers through `reactor`.
    ///
    /// # Errors
    ///
    /// Nothing was created on error.
    /// * [`Error::InvalidConfig`] if `config` cannot work.
    /// * [`Error::Pool`] if the supervisor is shutting down.
    /// * [`Error::Io`] if the status pipe cannot be made.
    ///
    /// A worker that cannot be started is not an error here: it is a fault
    /// ([`Event::StartFailed`], and the pool is throttled).
    pub fn add_pool<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        name: &str,
        config: PoolConfig,
        start: Start,
    ) -> Result<PoolId> {
        let id = PoolId(self.pools.len());
        if self.stopping.is_some() {
            return Err(Error::Pool {
                pool: id.0,
                reason: "the supervisor is shutting down",
            });
        }
        let mut pool = Pool::new(self.id, id, name.to_owned(), config, start)?;
        self.poll
            .registry()
            .register(pool.status.receiver(), Token(id.0), Interest::READABLE)
            .map_err(|e| Error::io("epoll_ctl", e))?;
        self.fds.push(pool.status.receiver().as_raw_fd());
        self.fds.push(pool.status.write_raw());
        pool.act(reactor, &mut self.events, &self.fds);
        self.pools.push(pool);
        Ok(id)
    }

    /// A pool, for its scoreboard.
    pub fn pool(&self, id: PoolId) -> Option<&Pool> {
        self.pools.get(id.0)
    }

    /// A pool, to take a worker's stdio.
    pub fn pool_mut(&mut self, id: PoolId) -> Option<&mut Pool> {
        self.pools.get_mut(id.0)
    }

    /// Every pool, in order of creation.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> + '_ {
        self.pools.iter()
    }

    /// The next event, oldest first. Drain them after each
    /// [`run`](Self::run) and `dispatch`: they are kept until read.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// How long the loop may sleep before a pool's timer is due (the
    /// interval, a start timeout, the end of a throttle), or `None`.
    /// Combine it with [`Reactor::timeout`] using [`earliest`](crate::earliest).
    pub fn timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        self.pools
            .iter()
            .filter_map(|p| p.core.next_deadline())
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Reads the workers' reports, runs the timers that are due, and starts
    /// and signals workers accordingly. Call it whenever `poll` returns.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a status pipe cannot be read; the other pools were
    /// still served.
    pub fn run<C: HasSupervisor>(&mut self, reactor: &mut Reactor<C>) -> Result<()> {
        // Empty the epoll set's ready list first, then read every pipe to
        // EAGAIN: a report that comes in between wakes the loop again.
        let _ = self.poll.poll(&mut self.ready, Some(Duration::ZERO));
        let mut result = Ok(());
        for pool in &mut self.pools {
            let now = Instant::now();
            let Pool { status, core, .. } = pool;
            if let Err(e) = status.drain(|token, report| core.report(token, report, now)) {
                result = Err(e);
            }
            core.tick(now);
            pool.act(reactor, &mut self.events, &self.fds);
        }
        self.advance_shutdown(reactor);
        result
    }

    fn pool_entry(&mut self, id: PoolId) -> Result<&mut Pool> {
        self.pools.get_mut(id.0).ok_or(Error::Pool {
            pool: id.0,
            reason: "no such pool",
        })
    }

    /// Starts a new generation of a pool: see the [module docs](self).
    /// Lifts the throttle and the give-up.
    ///
    /// # Errors
    ///
    /// [`Error::Pool`] if there is no such pool; a stopping pool ignores it.
    pub fn reload<C: HasSupervisor>(&mut self, reactor: &mut Reactor<C>, id: PoolId) -> Result<()> {
        self.reload_inner(reactor, id, None)
    }

    /// [`reload`](Self::reload) with a new configuration, which the new
    /// generation is sized by (and which is dropped again if the reload is
    /// abandoned).
    ///
    /// # Errors
    ///
    /// [`Error::Pool`] if there is no such pool, [`Error::InvalidConfig`] if
    /// `config` cannot work (nothing changed).
    pub fn reload_with<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        id: PoolId,
        config: PoolConfig,
    ) -> Result<()> {
        config.validate()?;
        self.reload_inner(reactor, id, Some(config))
    }

    fn reload_inner<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        id: PoolId,
        config: Option<PoolConfig>,
    ) -> Result<()> {
        self.pool_entry(id)?.core.reload(config, Instant::now());
        self.pools[id.0].act(reactor, &mut self.events, &self.fds);
        Ok(())
    }

    /// A new configuration for a pool, without a reload (resizing, say):
    /// the sizes apply at once. Workers above a smaller maximum retire,
    /// idle ones first, busy ones after the [drain
    /// time](PoolConfig::drain).
    ///
    /// # Errors
    ///
    /// [`Error::Pool`] if there is no such pool, [`Error::InvalidConfig`] if
    /// `config` cannot work (nothing changed).
    pub fn set_config<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        id: PoolId,
        config: PoolConfig,
    ) -> Result<()> {
        config.validate()?;
        self.pool_entry(id)?.core.set_config(config, Instant::now());
        self.pools[id.0].act(reactor, &mut self.events, &self.fds);
        Ok(())
    }

    /// [`set_config`](Self::set_config) with new worker bounds (`min`,
    /// `max`), the rest unchanged: gunicorn's `TTIN`/`TTOU`.
    ///
    /// # Errors
    ///
    /// As for [`set_config`](Self::set_config).
    pub fn resize<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        id: PoolId,
        min: usize,
        max: usize,
    ) -> Result<()> {
        let config = self.pool_entry(id)?.config().clone().workers(min, max);
        self.set_config(reactor, id, config)
    }

    /// Lifts the crash throttle and the give-up of a pool now: starts
    /// resume at once (one at a time, as after a throttle, until a worker
    /// reports ready). A no-op for a pool that is neither.
    ///
    /// # Errors
    ///
    /// [`Error::Pool`] if there is no such pool.
    pub fn unthrottle<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        id: PoolId,
    ) -> Result<()> {
        self.pool_entry(id)?.core.unthrottle(Instant::now());
        self.pools[id.0].act(reactor, &mut self.events, &self.fds);
        Ok(())
    }

    /// The application's hint that work is waiting and no worker took it
    /// (its listener is readable, say): if no worker of the pool is idle or
    /// starting, and the pool may start one (room under the maximum, not
    /// throttled), one starts now rather than at the next interval
    /// (Postfix's `master` does this with the listener itself). Returns
    /// whether a worker was started.
    ///
    /// # Errors
    ///
    /// [`Error::Pool`] if there is no such pool.
    pub fn demand<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        id: PoolId,
    ) -> Result<bool> {
        let started = self.pool_entry(id)?.core.demand(Instant::now());
        self.pools[id.0].act(reactor, &mut self.events, &self.fds);
        Ok(started)
    }

    /// Takes an idle worker for a job of the parent's (one of the current
    /// generation if any is idle, and never one that is to retire): it is
    /// `Busy` until it reports idle. `None` if no worker is idle (the pool
    /// grows as its idle minimum asks; see also [`demand`](Self::demand)).
    pub fn checkout(&mut self, id: PoolId) -> Option<WorkerInfo> {
        let pool = self.pools.get_mut(id.0)?;
        let token = pool.core.checkout(Instant::now())?;
        pool.flush_notes(&mut self.events);
        pool.worker(WorkerId { pool: id, token })
    }

    /// Stops every pool, the last created first: each gets `SIGTERM` for its
    /// workers, `SIGKILL` after `grace`, and its [`Event::Stopped`] once its
    /// last worker is reaped; then the next one. Keep running the loop until
    /// [`is_stopped`](Self::is_stopped). Calling it again changes nothing.
    pub fn shutdown<C: HasSupervisor>(&mut self, reactor: &mut Reactor<C>, grace: Duration) {
        if self.stopping.is_none() {
            self.stopping = Some(grace);
            self.advance_shutdown(reactor);
        }
    }

    /// Whether every pool has stopped (after [`shutdown`](Self::shutdown)).
    pub fn is_stopped(&self) -> bool {
        self.stopping.is_some() && self.pools.iter().all(|p| p.is_stopped())
    }

    /// Shuts down the newest pool that is not stopped, once the ones after
    /// it have stopped.
    fn advance_shutdown<C: HasSupervisor>(&mut self, reactor: &mut Reactor<C>) {
        let Some(grace) = self.stopping else {
            return;
        };
        for pool in self.pools.iter_mut().rev() {
            if pool.is_stopped() {
                continue;
            }
            if !pool.is_stopping() {
                pool.core.shutdown(grace, Instant::now());
                pool.act(reactor, &mut self.events, &self.fds);
                if pool.is_stopped() {
                    continue;
                }
            }
            return;
        }
    }

    /// A worker's death callback: `supervisor` is the id of the
    /// supervisor that started it. The death of another supervisor's
    /// worker (one dropped before its workers died) is not ours, nor is a
    /// death whose child is not the one the pool knows by that token.
    pub(crate) fn worker_died<C: HasSupervisor>(
        &mut self,
        reactor: &mut Reactor<C>,
        supervisor: u64,
        pool: PoolId,
        token: u64,
        exit: Exit,
    ) {
        if supervisor != self.id {
            return;
        }
        if let Some(p) = self.pools.get_mut(pool.0) {
            // Reports the worker wrote before it died come first (a ready
            // report decides whether its death is a fault).
            let now = Instant::now();
            let Pool { status, core, .. } = p;
            let _ = status.drain(|token, report| core.report(token, report, now));
            p.flush_notes(&mut self.events);
            if !p.died(token, exit, &mut self.events) {
                return;
            }
            p.act(reactor, &mut self.events, &self.fds);
        }
        self.advance_shutdown(reactor);
    }
}

/// The supervisor can move to another thread with its application context.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Supervisor>();
};

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("pools", &self.pools)
            .field("events", &self.events.len())
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

impl Source for Supervisor {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> std::io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> std::io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> std::io::Result<()> {
        SourceFd(&self.poll.as_raw_fd()).deregister(registry)
    }
}

impl AsRawFd for Supervisor {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}
