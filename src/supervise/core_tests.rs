//! Unit tests of the pool's state machine: a scripted clock and scripted
//! processes (`Script`), one behaviour per test.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// A scripted pool: the clock and the processes are ours.
struct Script {
    core: Core,
    now: Instant,
    fail_starts: bool,
    starts: Vec<Instant>,
}

impl Script {
    fn new(cfg: PoolConfig) -> Self {
        let now = Instant::now();
        let mut s = Script {
            core: Core::new(cfg, now),
            now,
            fail_starts: false,
            starts: Vec::new(),
        };
        s.settle();
        s
    }

    /// Executes the actions the way the shell does: starts succeed (or
    /// fail), signals are sent (the deaths come when the test says).
    fn settle(&mut self) -> Vec<Action> {
        let mut done = Vec::new();
        while let Some(action) = self.core.actions.pop_front() {
            if let Action::Start { token, .. } = action {
                self.starts.push(self.now);
                if self.fail_starts {
                    self.core.start_failed(token, self.now);
                } else {
                    self.core.started(token, self.now);
                }
            }
            done.push(action);
        }
        done
    }

    fn advance(&mut self, by: Duration) -> Vec<Action> {
        self.now += by;
        self.core.tick(self.now);
        self.settle()
    }

    fn tokens(&self, state: WorkerState) -> Vec<u64> {
        self.core
            .workers()
            .filter(|(_, w)| w.state == state)
            .map(|(t, _)| t)
            .collect()
    }

    fn ready_all(&mut self) {
        for t in self.tokens(WorkerState::Starting) {
            self.core.report(t, Report::Ready, self.now);
        }
        self.settle();
    }

    fn notes(&mut self) -> Vec<Note> {
        self.core.notes.drain(..).collect()
    }
}

fn cfg() -> PoolConfig {
    PoolConfig::new()
        .start(2)
        .workers(2, 10)
        .idle(2, 4)
        .interval(1000 * MS)
        .throttle(500 * MS, 4000 * MS, 10_000 * MS)
}

#[test]
fn starts_the_initial_workers_and_keeps_the_minimum() {
    let mut s = Script::new(cfg());
    assert_eq!(s.starts.len(), 2);
    s.ready_all();
    let idle = s.tokens(WorkerState::Idle);
    // A ready worker killed from outside after serving a request: no
    // throttle, replaced at once.
    s.core.report(idle[0], Report::Busy, s.now);
    s.core.report(idle[0], Report::Idle, s.now);
    s.core.exited(idle[0], true, s.now);
    s.settle();
    assert_eq!(s.starts.len(), 3);
    assert!(s.core.throttled_until().is_none());
}

#[test]
fn idle_shortage_doubles_then_surplus_retires_one_per_interval() {
    let mut s = Script::new(cfg().idle(8, 8).workers(2, 10));
    s.ready_all();
    // Busy everything, each interval: 1, 2, 4, then the room left (3).
    let mut per_interval = Vec::new();
    for _ in 0..5 {
        s.ready_all();
        for t in s.tokens(WorkerState::Idle) {
            s.core.report(t, Report::Busy, s.now);
        }
        let before = s.starts.len();
        s.advance(1000 * MS);
        per_interval.push(s.starts.len() - before);
    }
    assert_eq!(per_interval, [1, 2, 4, 1, 0]);
    assert_eq!(s.core.active(), 10, "the maximum and no further");
    // Load over: all idle, max idle 8 ⇒ retire 1 per interval down to 8.
    s.ready_all();
    for t in s.tokens(WorkerState::Busy) {
        s.core.report(t, Report::Idle, s.now);
    }
    s.core.cfg.max_idle = 8;
    s.core.cfg.min_idle = 0;
    let mut retired = Vec::new();
    for _ in 0..4 {
        let actions = s.advance(1000 * MS);
        retired.push(
            actions
                .iter()
                .filter(|a| matches!(a, Action::Stop { .. }))
                .count(),
        );
    }
    assert_eq!(retired, [1, 1, 0, 0]);
}

#[test]
fn a_crash_loop_is_throttled_and_bounded() {
    let mut s = Script::new(cfg());
    let t0 = s.now;
    // Every worker exits 1 at once, before ready.
    for _ in 0..600 {
        for t in s.tokens(WorkerState::Starting) {
            s.core.exited(t, true, s.now);
        }
        s.settle();
        s.advance(100 * MS);
    }
    let minute = s.now - t0;
    assert_eq!(minute, 60_000 * MS);
    // Throttle 0.5, 1, 2, 4, 4, 4 … s with one probe each: about 20.
    assert!(
        s.starts.len() <= 25,
        "{} starts in a minute",
        s.starts.len()
    );
    let notes = s.notes();
    assert!(notes.iter().any(|n| matches!(n, Note::Throttled(_))));
    assert!(notes.contains(&Note::Unthrottled));
}

#[test]
fn strict_faults_count_abnormal_deaths_after_requests_too() {
    for (strict, throttled) in [(false, false), (true, true)] {
        let mut s = Script::new(cfg().strict_faults(strict));
        s.ready_all();
        let t = s.tokens(WorkerState::Idle)[0];
        s.core.report(t, Report::Busy, s.now);
        s.core.report(t, Report::Idle, s.now);
        s.core.exited(t, true, s.now);
        assert_eq!(s.core.throttled_until().is_some(), throttled);
        // A clean exit after a request is never a fault.
        let t = s.tokens(WorkerState::Idle)[0];
        s.core.report(t, Report::Busy, s.now);
        s.core.report(t, Report::Idle, s.now);
        s.core.exited(t, false, s.now);
        assert!(!s
            .notes()
            .iter()
            .any(|n| matches!(n, Note::Exited { token, fault: true } if *token == t)));
    }
}

#[test]
fn a_failed_spawn_throttles() {
    let mut cfg = cfg();
    cfg.start = 3;
    let now = Instant::now();
    let mut core = Core::new(cfg, now);
    let Some(Action::Start { token, .. }) = core.actions.pop_front() else {
        panic!("no start");
    };
    core.start_failed(token, now);
    assert!(core.throttled_until().is_some());
    assert!(core.notes.iter().any(|n| matches!(n, Note::Throttled(_))));
}

#[test]
fn a_worker_that_never_reports_ready_is_killed_and_throttles() {
    let mut s = Script::new(cfg().start_timeout(2000 * MS));
    let actions = s.advance(2000 * MS);
    let kills = actions
        .iter()
        .filter(|a| matches!(a, Action::Kill { .. }))
        .count();
    assert_eq!(kills, 2);
    assert!(s.core.throttled_until().is_some());
    let delay = s.core.throttle.delay();
    // The deaths that follow are reported as faults (they were), but do not
    // count again.
    for t in s.tokens(WorkerState::Retiring) {
        s.core.exited(t, true, s.now);
    }
    let notes = s.notes();
    let faults = notes
        .iter()
        .filter(|n| matches!(n, Note::Exited { fault: true, .. }))
        .count();
    assert_eq!(faults, 2, "a start-timeout kill is a fault: {notes:?}");
    assert_eq!(
        notes
            .iter()
            .filter(|n| matches!(
                n,
                Note::TimedOut {
                    what: Timeout::Start,
                    ..
                }
            ))
            .count(),
        2
    );
    assert_eq!(
        notes
            .iter()
            .filter(|n| matches!(n, Note::Throttled(_)))
            .count(),
        1
    );
    assert_eq!(s.core.throttle.delay(), delay);
}

#[test]
fn max_requests_retires_and_replaces() {
    let mut s = Script::new(cfg().max_requests(2));
    s.ready_all();
    let t = s.tokens(WorkerState::Idle)[0];
    for _ in 0..2 {
        s.core.report(t, Report::Busy, s.now);
        s.core.report(t, Report::Idle, s.now);
    }
    let actions = s.settle();
    assert!(actions.contains(&Action::Stop { token: t }));
    assert!(actions.iter().any(|a| matches!(a, Action::Start { .. })));
}

#[test]
fn shutdown_stops_everything_and_reports_once() {
    let mut s = Script::new(cfg());
    s.ready_all();
    s.core.shutdown(300 * MS, s.now);
    let actions = s.settle();
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::Stop { .. }))
            .count(),
        2
    );
    // SIGKILL when the grace is up, not before.
    assert!(s.advance(299 * MS).is_empty());
    let kills = s.advance(MS);
    assert_eq!(
        kills
            .iter()
            .filter(|a| matches!(a, Action::Kill { .. }))
            .count(),
        2
    );
    for t in s.tokens(WorkerState::Retiring) {
        s.core.exited(t, true, s.now);
    }
    s.advance(5000 * MS);
    assert_eq!(s.starts.len(), 2, "no start after shutdown");
    let notes = s.notes();
    assert_eq!(notes.iter().filter(|n| **n == Note::Stopped).count(), 1);
    assert!(!notes.iter().any(|n| matches!(n, Note::Throttled(_))));
}

fn count(actions: &[Action], pred: impl Fn(&Action) -> bool) -> usize {
    actions.iter().filter(|a| pred(a)).count()
}

/// Issue 14, item 4: a worker killed during its first request had reported
/// ready, which proves the command works: replaced at once, no fault.
#[test]
fn a_death_during_the_first_request_is_no_fault_and_is_replaced() {
    let mut s = Script::new(cfg().workers(2, 10));
    s.ready_all();
    let t = s.tokens(WorkerState::Idle)[0];
    s.core.report(t, Report::Busy, s.now);
    s.core.exited(t, true, s.now);
    let actions = s.settle();
    assert!(s.core.throttled_until().is_none());
    assert!(s.notes().contains(&Note::Exited {
        token: t,
        fault: false
    }));
    assert_eq!(count(&actions, |a| matches!(a, Action::Start { .. })), 1);
}

/// Above the minimum too: an unexpected death is replaced at once, so a
/// pool under kills keeps its size.
#[test]
fn a_killed_worker_above_the_minimum_is_replaced_at_once() {
    let mut s = Script::new(cfg().start(6).workers(2, 10).idle(0, 10));
    s.ready_all();
    for t in s.tokens(WorkerState::Idle) {
        s.core.report(t, Report::Busy, s.now);
    }
    let t = s.tokens(WorkerState::Busy)[3];
    s.core.exited(t, true, s.now);
    s.settle();
    assert_eq!(s.core.active(), 6);
}

/// Issue 14, item 3: with idle(1, 4) the shortage is 1 all along under
/// load, yet the pool doubles: 2 → 16 in four intervals, not fourteen.
#[test]
fn the_spawn_rate_doubles_past_a_shortage_of_one() {
    let mut s = Script::new(cfg().start(2).workers(2, 16).idle(1, 4));
    let mut sizes = Vec::new();
    for _ in 0..5 {
        s.ready_all();
        for t in s.tokens(WorkerState::Idle) {
            s.core.report(t, Report::Busy, s.now);
        }
        s.advance(1000 * MS);
        sizes.push(s.core.active());
    }
    assert_eq!(sizes, [3, 5, 9, 16, 16]);
}

#[test]
fn demand_starts_one_worker_at_once_when_none_is_available() {
    let mut s = Script::new(cfg().start(2).workers(2, 4).idle(0, 4));
    // Starting workers count as available.
    assert!(!s.core.demand(s.now));
    s.ready_all();
    assert!(!s.core.demand(s.now));
    for t in s.tokens(WorkerState::Idle) {
        s.core.report(t, Report::Busy, s.now);
    }
    assert!(s.core.demand(s.now));
    s.settle();
    assert!(!s.core.demand(s.now), "one is starting");
    s.ready_all();
    for t in s.tokens(WorkerState::Idle) {
        s.core.report(t, Report::Busy, s.now);
    }
    assert!(s.core.demand(s.now));
    s.settle();
    s.ready_all();
    for t in s.tokens(WorkerState::Idle) {
        s.core.report(t, Report::Busy, s.now);
    }
    assert!(!s.core.demand(s.now), "at the maximum");
}

/// Issue 14, item 1: the new generation starts first, as many as were
/// active; an old worker retires only when a new one is ready in its
/// place; busy ones drain first.
#[test]
fn reload_starts_the_new_generation_first_and_swaps_on_ready() {
    let mut s = Script::new(cfg().start(3).workers(2, 10).idle(0, 10).drain(700 * MS));
    s.ready_all();
    let old = s.tokens(WorkerState::Idle);
    s.core.report(old[0], Report::Busy, s.now);
    s.core.reload(None, s.now);
    let actions = s.settle();
    assert_eq!(
        count(&actions, |a| matches!(
            a,
            Action::Start { generation: 2, .. }
        )),
        3
    );
    assert_eq!(count(&actions, |a| matches!(a, Action::Stop { .. })), 0);
    let new = s.tokens(WorkerState::Starting);
    // Each ready swaps one old worker: idle ones first.
    s.core.report(new[0], Report::Ready, s.now);
    let actions = s.settle();
    assert_eq!(actions, [Action::Stop { token: old[1] }]);
    s.core.report(new[1], Report::Ready, s.now);
    assert_eq!(s.settle(), [Action::Stop { token: old[2] }]);
    // The last old one is busy: it drains, then goes when idle.
    s.core.report(new[2], Report::Ready, s.now);
    assert!(s.settle().is_empty());
    assert!(s.notes().contains(&Note::Reloaded { generation: 2 }));
    s.core.report(old[0], Report::Idle, s.now);
    assert_eq!(s.settle(), [Action::Stop { token: old[0] }]);
}

#[test]
fn a_busy_old_worker_gets_the_stop_signal_after_the_drain_time() {
    let mut s = Script::new(cfg().start(2).workers(2, 10).idle(0, 10).drain(700 * MS));
    s.ready_all();
    for t in s.tokens(WorkerState::Idle) {
        s.core.report(t, Report::Busy, s.now);
    }
    s.core.reload(None, s.now);
    s.settle();
    s.ready_all();
    assert!(s.advance(699 * MS).is_empty());
    let actions = s.advance(MS);
    assert_eq!(count(&actions, |a| matches!(a, Action::Stop { .. })), 2);
}

#[test]
fn a_faulty_new_generation_abandons_the_reload_and_the_old_one_serves() {
    let mut s = Script::new(cfg().start(3).workers(2, 10).idle(0, 10));
    s.ready_all();
    let old = s.tokens(WorkerState::Idle);
    s.core.reload(None, s.now);
    s.settle();
    let new = s.tokens(WorkerState::Starting);
    s.core.exited(new[0], true, s.now);
    let actions = s.settle();
    let notes = s.notes();
    assert!(notes.contains(&Note::ReloadAbandoned {
        generation: 2,
        cause: Cause::Died(new[0])
    }));
    assert!(notes.iter().any(|n| matches!(n, Note::Throttled(_))));
    // The other new ones are killed; no old one is touched.
    assert_eq!(count(&actions, |a| matches!(a, Action::Stop { .. })), 2);
    assert!(!actions.iter().any(
        |a| matches!(a, Action::Stop { token } | Action::Kill { token } if old.contains(token))
    ));
    assert_eq!(s.tokens(WorkerState::Idle), old);
    assert!(!s.core.is_reloading());
    // A second reload lifts the throttle and starts at once.
    s.core.reload(None, s.now);
    let actions = s.settle();
    assert!(s.core.throttled_until().is_none());
    assert_eq!(
        count(&actions, |a| matches!(
            a,
            Action::Start { generation: 3, .. }
        )),
        3
    );
}

#[test]
fn a_reload_may_resize_and_unthrottle_lifts_on_demand() {
    let mut s = Script::new(cfg().start(2).workers(2, 10));
    s.ready_all();
    let bigger = cfg().workers(5, 10);
    s.core.reload(Some(bigger), s.now);
    let actions = s.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::Start { .. })), 5);
    s.ready_all();
    assert!(!s.core.is_reloading());
    assert_eq!(s.core.active(), 5);
    // Throttle, then lift.
    s.fail_starts = true;
    let t = s.tokens(WorkerState::Idle)[0];
    s.core.report(t, Report::Busy, s.now);
    s.core.exited(t, true, s.now);
    s.settle();
    assert!(s.core.throttled_until().is_some());
    s.fail_starts = false;
    s.core.unthrottle(s.now);
    s.settle();
    assert!(s.core.throttled_until().is_none());
    assert_eq!(s.core.active(), 5);
}

#[test]
fn set_config_shrinks_idle_first_and_grows_at_once() {
    let mut s = Script::new(cfg().start(4).workers(2, 10).idle(0, 10));
    s.ready_all();
    let ws = s.tokens(WorkerState::Idle);
    s.core.report(ws[0], Report::Busy, s.now);
    s.core.set_config(cfg().workers(1, 1).idle(0, 1), s.now);
    let actions = s.settle();
    // Three idle retire now; the busy one stays.
    assert_eq!(count(&actions, |a| matches!(a, Action::Stop { .. })), 3);
    assert_eq!(s.core.active(), 1);
    s.core.set_config(cfg().workers(3, 5).idle(0, 5), s.now);
    let actions = s.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::Start { .. })), 2);
}

#[test]
fn the_pool_gives_up_after_a_burst_of_faults() {
    let mut s = Script::new(
        cfg()
            .start(3)
            .workers(3, 3)
            .throttle(10 * MS, 10 * MS, 10 * MS)
            .give_up(5, 10_000 * MS),
    );
    for _ in 0..20 {
        for t in s.tokens(WorkerState::Starting) {
            s.core.exited(t, true, s.now);
        }
        s.settle();
        s.advance(20 * MS);
    }
    let notes = s.notes();
    assert_eq!(
        notes
            .iter()
            .filter(|n| matches!(n, Note::GaveUp { faults: 5, .. }))
            .count(),
        1
    );
    assert!(s.core.has_given_up());
    let starts = s.starts.len();
    s.advance(60_000 * MS);
    assert_eq!(s.starts.len(), starts, "no start after giving up");
    s.core.unthrottle(s.now);
    s.settle();
    assert_eq!(s.starts.len(), starts + 3);
}

#[test]
fn busy_and_heartbeat_timeouts_kill_and_replace_without_a_fault() {
    let mut s = Script::new(
        cfg()
            .start(2)
            .workers(2, 4)
            .idle(0, 4)
            .busy_timeout(500 * MS)
            .heartbeat(800 * MS),
    );
    s.ready_all();
    let [a, b] = s.tokens(WorkerState::Idle)[..] else {
        panic!()
    };
    s.core.report(a, Report::Busy, s.now);
    s.advance(400 * MS);
    s.core.report(b, Report::Heartbeat, s.now);
    let actions = s.advance(100 * MS);
    assert!(actions.contains(&Action::Kill { token: a }));
    assert_eq!(count(&actions, |x| matches!(x, Action::Start { .. })), 1);
    // b heard from at 400 ms: killed at 1200 ms, not before.
    assert!(!s.advance(699 * MS).contains(&Action::Kill { token: b }));
    assert!(s.advance(MS).contains(&Action::Kill { token: b }));
    s.core.exited(a, false, s.now);
    s.core.exited(b, false, s.now);
    let notes = s.notes();
    assert!(notes.contains(&Note::TimedOut {
        token: a,
        what: Timeout::Busy
    }));
    assert!(notes.contains(&Note::TimedOut {
        token: b,
        what: Timeout::Heartbeat
    }));
    assert!(!notes
        .iter()
        .any(|n| matches!(n, Note::Exited { fault: true, .. } | Note::Throttled(_))));
}

#[test]
fn the_idle_timeout_retires_down_to_the_minimum() {
    let mut s = Script::new(
        cfg()
            .start(4)
            .workers(2, 4)
            .idle(0, 4)
            .idle_timeout(300 * MS),
    );
    s.ready_all();
    let actions = s.advance(300 * MS);
    assert_eq!(count(&actions, |a| matches!(a, Action::Stop { .. })), 2);
    assert_eq!(s.core.active(), 2);
    // At the minimum, the deadline no longer wakes the loop.
    let next = s.core.next_deadline().unwrap();
    assert!(next >= s.now + 600 * MS, "{:?}", next - s.now);
}

#[test]
fn request_limits_are_spread_by_the_jitter() {
    let mut s = Script::new(
        cfg()
            .start(10)
            .workers(10, 10)
            .max_requests(100)
            .max_requests_jitter(50),
    );
    let limits: std::collections::BTreeSet<u64> = s
        .core
        .workers()
        .filter_map(|(_, w)| w.max_requests)
        .collect();
    assert!(limits.len() >= 5, "{limits:?}");
    assert!(limits.iter().all(|l| (100..=150).contains(l)));
    s.ready_all();
}
