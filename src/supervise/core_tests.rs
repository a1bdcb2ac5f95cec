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
    // The deaths that follow do not count again.
    for t in s.tokens(WorkerState::Retiring) {
        s.core.exited(t, true, s.now);
    }
    let faults = s
        .notes()
        .iter()
        .filter(|n| matches!(n, Note::Exited { fault: true, .. }))
        .count();
    assert_eq!(faults, 0);
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
    assert!(actions.contains(&Action::Stop {
        token: t,
        grace: s.core.cfg.retire_grace
    }));
    assert!(actions.iter().any(|a| matches!(a, Action::Start { .. })));
}

#[test]
fn reload_retires_idle_now_and_busy_when_idle() {
    let mut s = Script::new(cfg());
    s.ready_all();
    let [a, b] = s.tokens(WorkerState::Idle)[..] else {
        panic!()
    };
    s.core.report(a, Report::Busy, s.now);
    s.core.reload(s.now);
    let actions = s.settle();
    assert!(actions
        .iter()
        .any(|x| matches!(x, Action::Stop { token, .. } if *token == b)));
    assert!(!actions
        .iter()
        .any(|x| matches!(x, Action::Stop { token, .. } if *token == a)));
    assert_eq!(
        actions
            .iter()
            .filter(|x| matches!(x, Action::Start { generation: 2, .. }))
            .count(),
        1,
        "one new worker replaces the retired idle one"
    );
    s.core.report(a, Report::Idle, s.now);
    let actions = s.settle();
    assert!(actions
        .iter()
        .any(|x| matches!(x, Action::Stop { token, .. } if *token == a)));
}

#[test]
fn shutdown_stops_everything_and_reports_once() {
    let mut s = Script::new(cfg());
    s.ready_all();
    s.core.shutdown(300 * MS);
    let actions = s.settle();
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::Stop { grace, .. } if *grace == 300 * MS))
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
