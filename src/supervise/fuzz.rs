//! The pool's state machine under scripted inputs: the logic of the
//! `supervise_pool` fuzz target, replayed from its saved corpus by
//! `tests/fuzz_corpus.rs`. Not part of the API.
//!
//! [`run`] decodes bytes into a configuration and a bounded list of inputs
//! (clock advances, status reports, deaths, failed starts, reloads,
//! checkouts, a shutdown), executes the actions the way the I/O shell does,
//! and checks with panics:
//!
//! * no start ever takes the active workers above the maximum, and none
//!   comes while throttled or stopping; after a throttle, one start at a
//!   time until a worker reports ready;
//! * tokens are fresh; signals go only to live workers, and a signalled
//!   worker is `Retiring`;
//! * `Throttled` and `Unthrottled` alternate, and a throttle is never lifted
//!   before its end;
//! * when neither throttled, probing nor stopping, the minimum is kept;
//! * `Stopped` comes once, only when stopping with no worker left, and
//!   nothing happens after it;
//! * reports and deaths of unknown workers change nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::core::{Action, Core, Note, Report};
use super::{PoolConfig, WorkerState};

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn or(&mut self, default: u8) -> u8 {
        self.next().unwrap_or(default)
    }
}

struct Model {
    core: Core,
    now: Instant,
    fail_next_start: bool,
    tokens: BTreeSet<u64>,
    last_token: u64,
    throttled_until: Option<Instant>,
    probing: bool,
    stopped: bool,
    gave_up: bool,
    /// A reload or an unthrottle is lifting the throttle now.
    lifting: bool,
}

impl Model {
    /// Executes the actions and checks the notes, as the shell would.
    fn settle(&mut self) {
        loop {
            while let Some(note) = self.core.notes.pop_front() {
                self.note(note);
            }
            let Some(action) = self.core.actions.pop_front() else {
                break;
            };
            assert!(!self.stopped, "{action:?} after Stopped");
            match action {
                Action::Start { token, generation } => {
                    assert!(token > self.last_token, "token {token} reused");
                    self.last_token = token;
                    assert!(self.throttled_until.is_none(), "start while throttled");
                    assert!(!self.core.is_stopping(), "start while stopping");
                    assert!(!self.gave_up, "start after giving up");
                    assert_eq!(generation, self.core.generation());
                    assert!(self.core.members() <= self.core.config().max_workers);
                    if self.probing {
                        let starting = self
                            .core
                            .workers()
                            .filter(|(_, w)| w.state == WorkerState::Starting)
                            .count();
                        assert!(starting <= 1, "{starting} starting while probing");
                    }
                    if std::mem::take(&mut self.fail_next_start) {
                        self.core.start_failed(token, self.now);
                    } else {
                        self.tokens.insert(token);
                        self.core.started(token, self.now);
                    }
                }
                Action::Stop { token, .. } | Action::Kill { token } => {
                    assert!(self.tokens.contains(&token), "signal to dead {token}");
                    let w = self.core.worker(token).expect("signalled worker is known");
                    assert_eq!(w.state, WorkerState::Retiring);
                }
            }
        }
        let cfg = self.core.config();
        assert!(self.core.members() <= cfg.max_workers);
        if !self.core.is_stopping()
            && self.throttled_until.is_none()
            && !self.probing
            && !self.gave_up
        {
            assert!(
                self.core.members() >= cfg.min_workers,
                "{} members, min {}",
                self.core.members(),
                cfg.min_workers
            );
        }
    }

    fn note(&mut self, note: Note) {
        assert!(!self.stopped, "{note:?} after Stopped");
        match note {
            Note::Throttled(delay) => {
                assert!(self.throttled_until.is_none(), "throttled twice");
                assert!(!delay.is_zero());
                self.throttled_until = Some(self.now + delay);
                self.probing = false;
            }
            Note::Unthrottled => {
                let until = self.throttled_until.take().expect("unthrottled twice");
                if self.lifting {
                    self.probing = false;
                } else {
                    assert!(self.now >= until, "lifted early");
                    self.probing = true;
                }
            }
            Note::GaveUp { faults, .. } => {
                assert!(!self.gave_up, "gave up twice");
                assert!(faults >= 1);
                self.gave_up = true;
            }
            Note::Reloaded { generation } | Note::ReloadAbandoned { generation, .. } => {
                assert_eq!(generation, self.core.generation());
            }
            Note::TimedOut { token, .. } => assert!(self.tokens.contains(&token)),
            Note::Ready(_) => self.probing = false,
            Note::Stopped => {
                assert!(self.core.is_stopping());
                assert_eq!(self.core.workers().count(), 0);
                self.stopped = true;
            }
            Note::Exited { token, .. } => assert!(self.tokens.remove(&token)),
            Note::Busy(_) | Note::Idle(_) | Note::Retiring(_) => {}
        }
    }

    /// A live worker chosen by `b`, or a made-up token.
    fn pick(&self, b: u8) -> u64 {
        if self.tokens.is_empty() || b == 255 {
            return self.last_token + 1 + u64::from(b);
        }
        *self
            .tokens
            .iter()
            .nth(usize::from(b) % self.tokens.len())
            .unwrap_or(&0)
    }
}

/// Runs the pool's state machine on `data`; panics if an invariant breaks.
pub(crate) fn run(data: &[u8]) {
    let mut bytes = Bytes(data);
    let ms = |b: u8| Duration::from_millis(u64::from(b) * 10);
    let min = usize::from(bytes.or(1) % 5);
    let max = min.max(1) + usize::from(bytes.or(3) % 6);
    let min_idle = usize::from(bytes.or(1) % 4).min(max);
    let max_idle = min_idle + usize::from(bytes.or(2) % 4);
    let mut cfg = PoolConfig::new()
        .start(usize::from(bytes.or(2) % 8))
        .workers(min, max)
        .idle(min_idle, max_idle)
        .interval(ms(bytes.or(10).max(1)))
        .max_spawn_rate(usize::from(bytes.or(4) % 8))
        .start_timeout(ms(bytes.or(50).max(1)))
        .throttle(ms(bytes.or(5).max(1)), ms(bytes.or(40)), ms(bytes.or(100)));
    if let Some(n) = bytes.next().filter(|n| *n % 2 == 1) {
        cfg = cfg
            .max_requests(u64::from(n % 7) + 1)
            .max_requests_jitter(u64::from(n % 5))
            .strict_faults(n % 3 == 0);
    }
    if let Some(n) = bytes.next().filter(|n| *n % 2 == 1) {
        cfg = cfg
            .give_up(usize::from(n % 5) + 1, ms(n))
            .busy_timeout(ms(n / 2 + 1))
            .heartbeat(ms(n / 3 + 1))
            .idle_timeout(ms(n / 4 + 1))
            .drain(ms(n / 5));
    }
    let sizes = cfg.clone();
    cfg.validate().expect("a valid configuration");
    let now = Instant::now();
    let mut m = Model {
        core: Core::new(cfg, now),
        now,
        fail_next_start: false,
        tokens: BTreeSet::new(),
        last_token: 0,
        throttled_until: None,
        probing: false,
        stopped: false,
        gave_up: false,
        lifting: false,
    };
    m.settle();
    let mut ops = 0;
    while let Some(op) = bytes.next() {
        ops += 1;
        if ops > 2000 {
            break;
        }
        let arg = bytes.or(0);
        match op % 12 {
            0 => {
                m.now += ms(arg);
                m.core.tick(m.now);
            }
            1..=3 => {
                let report = [Report::Ready, Report::Busy, Report::Idle][usize::from(op % 12 - 1)];
                let token = m.pick(arg);
                let known = m.tokens.contains(&token);
                m.core.report(token, report, m.now);
                if !known {
                    assert!(m.core.notes.is_empty() && m.core.actions.is_empty());
                }
            }
            4 => {
                let token = m.pick(arg);
                let known = m.tokens.contains(&token);
                m.core.exited(token, arg % 2 == 0, m.now);
                if !known {
                    assert!(m.core.notes.is_empty() && m.core.actions.is_empty());
                }
            }
            5 => m.fail_next_start = true,
            6 => {
                let cfg = (arg % 2 == 1).then(|| {
                    let min = usize::from(arg / 2 % 3);
                    sizes
                        .clone()
                        .workers(min, min + usize::from(arg / 8 % 4) + 1)
                });
                let cfg = cfg.filter(|c| c.validate().is_ok());
                m.lifting = true;
                m.core.reload(cfg, m.now);
                m.gave_up = false;
                m.probing = false;
            }
            7 => {
                if let Some(token) = m.core.checkout(m.now) {
                    assert_eq!(
                        m.core.worker(token).map(|w| w.state),
                        Some(WorkerState::Busy)
                    );
                }
            }
            9 => {
                m.lifting = true;
                m.core.unthrottle(m.now);
                if !m.core.is_stopping() {
                    m.gave_up = false;
                    m.probing = false;
                }
            }
            10 => {
                if arg % 2 == 0 {
                    m.core.demand(m.now);
                } else {
                    let min = usize::from(arg / 2 % 3);
                    let cfg = sizes
                        .clone()
                        .workers(min, min + usize::from(arg / 8 % 4) + 1);
                    if cfg.validate().is_ok() {
                        m.core.set_config(cfg, m.now);
                    }
                }
            }
            11 => {
                let token = m.pick(arg);
                m.core.report(token, Report::Heartbeat, m.now);
            }
            _ => {
                if arg % 4 == 0 {
                    m.core.shutdown(ms(arg), m.now);
                } else {
                    m.now += Duration::from_millis(u64::from(arg));
                    m.core.tick(m.now);
                }
            }
        }
        m.settle();
        m.lifting = false;
    }
    // Every worker dies: a stopping pool then says Stopped.
    if m.core.is_stopping() {
        let tokens: Vec<u64> = m.tokens.iter().copied().collect();
        for token in tokens {
            m.core.exited(token, true, m.now);
            m.settle();
        }
        assert!(m.stopped, "all workers gone but no Stopped");
    }
}
