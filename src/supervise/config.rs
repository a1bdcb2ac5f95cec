//! A pool's sizes, timers and throttle, with the defaults of the process
//! managers evchild learnt from.

use std::time::Duration;

use crate::{Error, Result};

/// How a pool is sized and paced: what Apache calls `StartServers`,
/// `MinSpareServers`, `MaxSpareServers` and `MaxRequestWorkers`, OpenSRF
/// `min_children`/`max_children`, Postfix `max_proc`.
///
/// Build it with [`PoolConfig::new`] and the setters; [`Supervisor::add_pool`]
/// checks it.
///
/// ```
/// use std::time::Duration;
/// let config = evchild::supervise::PoolConfig::new()
///     .workers(2, 16)      // never fewer than 2 workers, never more than 16
///     .idle(1, 4)          // keep 1 to 4 of them idle
///     .start(4)            // start 4 at once
///     .max_requests(1000)  // replace a worker after 1000 requests
///     .interval(Duration::from_millis(500));
/// # let _ = config;
/// ```
///
/// [`Supervisor::add_pool`]: super::Supervisor::add_pool
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub(crate) start: usize,
    pub(crate) min_workers: usize,
    pub(crate) max_workers: usize,
    pub(crate) min_idle: usize,
    pub(crate) max_idle: usize,
    pub(crate) interval: Duration,
    pub(crate) max_spawn_rate: usize,
    pub(crate) start_timeout: Duration,
    pub(crate) max_requests: Option<u64>,
    pub(crate) retire_grace: Duration,
    pub(crate) throttle_delay: Duration,
    pub(crate) throttle_max: Duration,
    pub(crate) throttle_reset: Duration,
    pub(crate) process_group: bool,
    pub(crate) last_exits: usize,
    pub(crate) strict_faults: bool,
    pub(crate) max_requests_jitter: u64,
    pub(crate) drain: Option<Duration>,
    pub(crate) stop_signal: i32,
    pub(crate) give_up: Option<(usize, Duration)>,
    pub(crate) busy_timeout: Option<Duration>,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) parent_death_signal: Option<i32>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig::new()
    }
}

impl PoolConfig {
    /// The defaults: start 2 workers; 1 to 8 workers; 1 to 3 idle;
    /// maintenance every second, starting at most 32 workers an interval;
    /// 10 s to report ready; no request limit; 10 s between `SIGTERM` and
    /// `SIGKILL` for a retired worker; a throttle of 1 s after a fault,
    /// doubling up to 60 s, forgotten after 60 s without faults; workers in
    /// the parent's process group; deaths after ready are no faults; no
    /// give-up limit, no liveness limit, no parent-death signal; `SIGTERM`
    /// to stop a worker, and a busy worker to retire may finish its work for
    /// the retire grace first.
    pub fn new() -> Self {
        PoolConfig {
            start: 2,
            min_workers: 1,
            max_workers: 8,
            min_idle: 1,
            max_idle: 3,
            interval: Duration::from_secs(1),
            max_spawn_rate: 32,
            start_timeout: Duration::from_secs(10),
            max_requests: None,
            retire_grace: Duration::from_secs(10),
            throttle_delay: Duration::from_secs(1),
            throttle_max: Duration::from_secs(60),
            throttle_reset: Duration::from_secs(60),
            process_group: false,
            last_exits: 16,
            strict_faults: false,
            max_requests_jitter: 0,
            drain: None,
            stop_signal: libc::SIGTERM,
            give_up: None,
            busy_timeout: None,
            heartbeat: None,
            idle_timeout: None,
            parent_death_signal: None,
        }
    }

    /// How many workers to start when the pool is created (Apache's
    /// `StartServers`); clamped to the `workers` range.
    pub fn start(mut self, n: usize) -> Self {
        self.start = n;
        self
    }

    /// The fewest and most workers, idle, busy or starting (workers being
    /// retired are not counted). Dead workers below `min` are replaced at
    /// once (unless the pool is throttled); no start ever goes above `max`.
    pub fn workers(mut self, min: usize, max: usize) -> Self {
        self.min_workers = min;
        self.max_workers = max;
        self
    }

    /// The fewest and most idle workers. Checked once per interval: below
    /// `min`, start 1, then 2, 4, … workers per interval (up to
    /// [`max_spawn_rate`](Self::max_spawn_rate)) while the shortage lasts;
    /// above `max`, retire one idle worker per interval. Starting workers
    /// count as idle for the first check.
    pub fn idle(mut self, min: usize, max: usize) -> Self {
        self.min_idle = min;
        self.max_idle = max;
        self
    }

    /// The fewest and most workers, as set by [`workers`](Self::workers).
    pub fn worker_range(&self) -> (usize, usize) {
        (self.min_workers, self.max_workers)
    }

    /// The maintenance interval (default 1 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The most workers started in one interval for an idle shortage
    /// (Apache's `MAX_SPAWN_RATE`, default 32).
    pub fn max_spawn_rate(mut self, n: usize) -> Self {
        self.max_spawn_rate = n;
        self
    }

    /// How long a worker has to report ready (default 10 s). One that does
    /// not is killed, and counts as a failed start.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Retire a worker, and replace it, once it has served this many
    /// requests (counted from its busy→idle reports). Default: no limit.
    ///
    /// The parent counts, so the retirement (`SIGTERM`) comes a moment
    /// after the last report: a worker that takes its next request at once
    /// may serve one more (completing it, as on any `SIGTERM`) before it
    /// exits. A worker that must never exceed the limit counts for itself.
    pub fn max_requests(mut self, n: u64) -> Self {
        self.max_requests = Some(n);
        self
    }

    /// How long a retired worker (too many idle, request limit, replaced by
    /// a reload, above a new maximum) has between its stop signal and
    /// `SIGKILL` (default 10 s).
    pub fn retire_grace(mut self, grace: Duration) -> Self {
        self.retire_grace = grace;
        self
    }

    /// The crash throttle: after a fault, no new starts for `delay`; on a
    /// fault within `reset` of the end of the previous throttle, twice the
    /// previous delay, up to `max`. Defaults: 1 s, 60 s, 60 s.
    pub fn throttle(mut self, delay: Duration, max: Duration, reset: Duration) -> Self {
        self.throttle_delay = delay;
        self.throttle_max = max;
        self.throttle_reset = reset;
        self
    }

    /// Which deaths count as faults for the throttle. By default (`false`):
    /// a start that failed, a worker that died before it reported ready, or
    /// one that did not report ready within the start timeout. A worker
    /// that reported ready has shown that the command works: when the OOM
    /// killer or an operator kills it, even during its first request, it
    /// is replaced at once. With `true`, every abnormal death (a signal, a
    /// non-zero code) the pool did not cause is a fault too, however long
    /// the worker served.
    pub fn strict_faults(mut self, on: bool) -> Self {
        self.strict_faults = on;
        self
    }

    /// Starts each worker in a process group of its own
    /// (`CommandExt::process_group(0)`, or `setpgid` in a forked worker), so
    /// that retiring and stopping signal the whole group. Default: off.
    pub fn process_group(mut self, on: bool) -> Self {
        self.process_group = on;
        self
    }

    /// Spreads the request limit: each worker retires after
    /// `max_requests + j` requests, `j` drawn in `0..=spread` (gunicorn's
    /// `max_requests_jitter`), so that workers started together do not all
    /// retire together. Default 0.
    pub fn max_requests_jitter(mut self, spread: u64) -> Self {
        self.max_requests_jitter = spread;
        self
    }

    /// How long a busy worker that is to retire (replaced by a reload, or
    /// above a new maximum) may go on serving before it gets the stop
    /// signal; it gets it as soon as it reports idle. Default: the
    /// [retire grace](Self::retire_grace).
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = Some(drain);
        self
    }

    /// The signal that asks a worker to stop (retirement, shutdown);
    /// `SIGKILL` follows after the grace. Default `SIGTERM` (Apache's
    /// graceful stop is `SIGUSR1`, say).
    pub fn stop_signal(mut self, signal: i32) -> Self {
        self.stop_signal = signal;
        self
    }

    /// Gives up after `faults` faults within `window` (systemd's
    /// `StartLimitBurst`/`StartLimitIntervalSec`, supervisord's
    /// `startretries`): the pool starts no more workers and emits
    /// [`Event::GaveUp`](super::Event::GaveUp); the workers it has keep
    /// serving. [`Supervisor::unthrottle`](super::Supervisor::unthrottle)
    /// or a reload resumes. Default: never give up.
    pub fn give_up(mut self, faults: usize, window: Duration) -> Self {
        self.give_up = Some((faults, window));
        self
    }

    /// Kills (`SIGKILL`) a worker busy for longer than `limit` and replaces
    /// it (gunicorn's `timeout` for a stuck request). Not a fault. Default:
    /// no limit.
    pub fn busy_timeout(mut self, limit: Duration) -> Self {
        self.busy_timeout = Some(limit);
        self
    }

    /// Kills (`SIGKILL`) a ready worker that sent no report at all for
    /// `interval`, idle or busy, and replaces it (systemd's `WatchdogSec`).
    /// Workers then call [`worker::heartbeat`](super::worker::heartbeat)
    /// (or any report) more often than that. Not a fault. Default: off.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// Retires a worker idle for longer than `limit`, while the pool has
    /// more than its minimum (Postfix's `max_idle`). Default: off (the
    /// idle range alone shrinks the pool).
    pub fn idle_timeout(mut self, limit: Duration) -> Self {
        self.idle_timeout = Some(limit);
        self
    }

    /// Asks the kernel to send `signal` to each worker when the master
    /// dies (`PR_SET_PDEATHSIG`), for executed and forked workers alike. A
    /// worker whose master died before the setting took effect gets the
    /// signal at once. Default: none (a worker then learns that its master
    /// is gone from a failed report: see
    /// [`worker::is_orphaned`](super::worker::is_orphaned)).
    ///
    /// Linux sends it when the *thread* that started the worker ends: run
    /// the supervisor on a thread that lives as long as the pool.
    pub fn parent_death_signal(mut self, signal: i32) -> Self {
        self.parent_death_signal = Some(signal);
        self
    }

    /// How many of the last exits the pool keeps for its scoreboard
    /// (default 16).
    pub fn last_exits(mut self, n: usize) -> Self {
        self.last_exits = n;
        self
    }

    /// The checks `add_pool` makes.
    pub(crate) fn validate(&self) -> Result<()> {
        let reason = if self.max_workers == 0 {
            "max workers must be at least 1"
        } else if self.min_workers > self.max_workers {
            "min workers must not exceed max workers"
        } else if self.min_idle > self.max_idle {
            "min idle must not exceed max idle"
        } else if self.min_idle > self.max_workers {
            "min idle must not exceed max workers"
        } else if self.interval.is_zero() {
            "the maintenance interval must not be zero"
        } else if self.start_timeout.is_zero() {
            "the start timeout must not be zero"
        } else if self.throttle_delay.is_zero() {
            "the throttle delay must not be zero"
        } else if self.max_requests == Some(0) {
            "max requests must be at least 1"
        } else if !valid_signal(self.stop_signal)
            || self.parent_death_signal.is_some_and(|s| !valid_signal(s))
        {
            "not a signal number"
        } else if self.give_up.is_some_and(|(n, w)| n == 0 || w.is_zero()) {
            "give up needs at least 1 fault and a window"
        } else if [self.busy_timeout, self.heartbeat, self.idle_timeout]
            .iter()
            .any(|d| d.is_some_and(|d| d.is_zero()))
        {
            "a time limit must not be zero"
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig { reason })
    }

    /// The initial start count, clamped to the workers range.
    pub(crate) fn initial(&self) -> usize {
        self.start.clamp(self.min_workers, self.max_workers)
    }
}

/// Signals `kill(2)` takes (not 0, the probe).
fn valid_signal(signal: i32) -> bool {
    (1..=libc::SIGRTMAX()).contains(&signal)
}
