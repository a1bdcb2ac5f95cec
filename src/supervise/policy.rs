//! The two decisions a pool takes by the clock, without I/O: how many idle
//! workers to start this interval (Apache prefork's doubling spawn rate), and
//! whether a fault stops process creation for a while (Postfix's
//! `master_throttle`).
//!
//! Both take the time as an argument and touch no process, so the unit tests
//! below script them, and the pool's state machine ([`super::core`]) and its
//! fuzz target drive them with a fake clock.

use std::time::{Duration, Instant};

/// `t + d`, or a time some 136 years after `t` if `d` is too long to add
/// (a configuration may use `Duration::MAX` for "never").
pub(crate) fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(1 << 32)))
        .unwrap_or(t)
}

/// Apache's spawn rate for idle shortages: 1 the first interval with too few
/// idle workers, then 2, 4, … up to `cap` while the shortage lasts, back to
/// 1 once it is over.
#[derive(Debug, Clone)]
pub(crate) struct SpawnRate {
    rate: usize,
    cap: usize,
}

impl SpawnRate {
    pub(crate) fn new(cap: usize) -> Self {
        SpawnRate {
            rate: 1,
            cap: cap.max(1),
        }
    }

    /// The interval's decision: given the idle shortage (how many more idle
    /// workers `min_idle` asks for) and the room left under the maximum,
    /// how many to start now: the rate, up to the room (not the shortage:
    /// under load the workers just started go busy at once, and a pool
    /// that only ever fills the shortage grows one worker an interval).
    /// Advances the rate.
    pub(crate) fn decide(&mut self, shortage: usize, room: usize) -> usize {
        if shortage == 0 {
            self.rate = 1;
            return 0;
        }
        let n = self.rate.min(room);
        self.rate = (self.rate * 2).min(self.cap);
        n
    }

    /// The number of starts the next short interval may make.
    #[cfg(test)]
    pub(crate) fn rate(&self) -> usize {
        self.rate
    }
}

/// Postfix's process-creation throttle, with a delay that doubles on
/// repeated faults.
///
/// A fault while not throttled throttles for `delay`: `base` the first time,
/// twice the previous delay (up to `max`) if the previous throttle ended less
/// than `reset_after` ago. A fault while throttled changes nothing (the
/// workers that were already starting when the first one failed should not
/// double the delay each).
#[derive(Debug, Clone)]
pub(crate) struct Throttle {
    base: Duration,
    max: Duration,
    reset_after: Duration,
    delay: Duration,
    until: Option<Instant>,
    /// When the last throttle ended (or ends).
    last_end: Option<Instant>,
}

impl Throttle {
    pub(crate) fn new(base: Duration, max: Duration, reset_after: Duration) -> Self {
        Throttle {
            base,
            max: max.max(base),
            reset_after,
            delay: base,
            until: None,
            last_end: None,
        }
    }

    /// Records a fault at `now`. Returns the end of the new throttle if this
    /// fault started one, `None` if the pool was already throttled.
    pub(crate) fn fault(&mut self, now: Instant) -> Option<Instant> {
        if self.until.is_some() {
            return None;
        }
        self.delay = match self.last_end {
            Some(end) if now.saturating_duration_since(end) < self.reset_after => {
                self.delay.saturating_mul(2).min(self.max)
            }
            _ => self.base,
        };
        let until = later(now, self.delay);
        self.until = Some(until);
        self.last_end = Some(until);
        Some(until)
    }

    /// Whether process creation is suspended (until [`expire`](Self::expire)
    /// lifts it).
    pub(crate) fn is_on(&self) -> bool {
        self.until.is_some()
    }

    /// The end of the current throttle, if any.
    pub(crate) fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Lifts a throttle whose time has come; `true` exactly once per
    /// throttle.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        match self.until {
            Some(until) if until <= now => {
                self.until = None;
                true
            }
            _ => false,
        }
    }

    /// The delay of the current (or last) throttle.
    pub(crate) fn delay(&self) -> Duration {
        self.delay
    }

    /// Lifts the throttle now, whatever its end (a reload, the operator);
    /// the next fault starts again from the base delay. Whether it was on.
    pub(crate) fn lift(&mut self) -> bool {
        self.last_end = None;
        self.delay = self.base;
        self.until.take().is_some()
    }

    /// New parameters; a throttle in force keeps its end.
    pub(crate) fn configure(&mut self, base: Duration, max: Duration, reset_after: Duration) {
        self.base = base;
        self.max = max.max(base);
        self.reset_after = reset_after;
        self.delay = self.delay.clamp(self.base, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn spawn_rate_doubles_to_the_cap_and_resets() {
        let mut rate = SpawnRate::new(8);
        let starts: Vec<usize> = (0..6).map(|_| rate.decide(100, 100)).collect();
        assert_eq!(starts, [1, 2, 4, 8, 8, 8]);
        assert_eq!(rate.decide(0, 100), 0);
        assert_eq!(rate.rate(), 1);
        assert_eq!(rate.decide(100, 100), 1);
    }

    #[test]
    fn spawn_rate_is_capped_by_the_room_not_the_shortage() {
        let mut rate = SpawnRate::new(32);
        // A shortage of 1 all along (idle(1, _) under load): 1, 2, 4, 8.
        let starts: Vec<usize> = (0..4).map(|_| rate.decide(1, 100)).collect();
        assert_eq!(starts, [1, 2, 4, 8]);
        assert_eq!(rate.decide(3, 100), 16);
        assert_eq!(rate.decide(100, 2), 2);
        assert_eq!(rate.decide(100, 0), 0);
    }

    #[test]
    fn throttle_doubles_on_repeated_faults_up_to_the_cap() {
        let t0 = Instant::now();
        let mut th = Throttle::new(100 * MS, 350 * MS, 1000 * MS);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..4 {
            let until = th.fault(now).expect("not throttled, so this throttles");
            delays.push(th.delay());
            assert!(th.is_on());
            // Faults while throttled change nothing.
            assert_eq!(th.fault(now + MS), None);
            assert!(!th.expire(until - MS));
            assert!(th.expire(until));
            assert!(!th.expire(until), "lifted once");
            now = until + 10 * MS;
        }
        assert_eq!(delays, [100 * MS, 200 * MS, 350 * MS, 350 * MS]);
    }

    #[test]
    fn durations_too_long_to_add_saturate() {
        let t0 = Instant::now();
        assert!(later(t0, Duration::MAX) > t0 + Duration::from_secs(1 << 31));
        let mut th = Throttle::new(Duration::MAX, Duration::MAX, Duration::MAX);
        let until = th.fault(t0).unwrap();
        assert!(until > t0 + Duration::from_secs(1 << 31));
    }

    #[test]
    fn throttle_resets_after_a_quiet_period() {
        let t0 = Instant::now();
        let mut th = Throttle::new(100 * MS, 10_000 * MS, 500 * MS);
        let until = th.fault(t0).unwrap();
        th.expire(until);
        let until = th.fault(until + 100 * MS).unwrap();
        assert_eq!(th.delay(), 200 * MS);
        th.expire(until);
        // Quiet for longer than reset_after since the throttle ended.
        th.fault(until + 600 * MS).unwrap();
        assert_eq!(th.delay(), 100 * MS);
    }
}
