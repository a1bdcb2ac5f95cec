//! Issue 7, case 8: the `Peek` backend holds back `Lost`. Children that
//! other code reaped (against the contract) leave no zombie to peek at, and
//! while the reactor's other children live, the peek finds nothing and
//! never falls back to a scan: the stolen children are never reported.
//! Expected: every stolen child reported `Lost` within a bounded number of
//! wake-ups (here: 40 turns of the loop, each a wait of at most 50 ms and a
//! dispatch, however fast the machine), the long-lived child still
//! registered.

use evchild_testkit as util;

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evchild::{Backend, ChildId, Outcome};
use util::{exited, reap_child, record, Check, Deaths, KillOnPanic};

const STOLEN: usize = 200;

fn command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[test]
fn peek_reports_stolen_children_lost_while_another_lives() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut reactor = util::library_with::<Deaths>(Backend::Peek);
    let mut deaths = Deaths::default();
    let long = reactor
        .spawn(&mut command("/bin/sleep", &["30"]), record)
        .expect("spawn the long-lived child")
        .id;
    let mut stolen: Vec<ChildId> = Vec::with_capacity(STOLEN);
    for _ in 0..STOLEN {
        let id = reactor
            .spawn(&mut command("/bin/true", &[]), record)
            .expect("spawn")
            .id;
        // Other code takes it, by pid, as soon as it exits.
        assert_eq!(reap_child(id.pid()), exited(0));
        stolen.push(id);
    }

    // The loop: wait for the reactor (at most 50 ms at a time), dispatch;
    // at most 40 turns (a count, not a time: the machine's speed is not
    // the subject).
    let start = Instant::now();
    let mut wakeups = 0;
    let mut turns = 0;
    while deaths.total() < STOLEN && turns < 40 {
        if util::readable_within(reactor.as_raw_fd(), Duration::from_millis(50)) {
            wakeups += 1;
        }
        reactor.dispatch(&mut deaths).expect("dispatch");
        turns += 1;
    }
    let lost = stolen
        .iter()
        .filter(|id| deaths.seen.get(id).is_some_and(|o| o == &[Outcome::Lost]))
        .count();
    let still_registered = reactor.contains(long);

    // Clean up before asserting.
    reactor
        .kill(long, libc::SIGKILL)
        .expect("kill the long-lived child");
    let end = Instant::now() + Duration::from_secs(10);
    while !deaths.seen.contains_key(&long) && Instant::now() < end {
        util::readable_within(reactor.as_raw_fd(), Duration::from_millis(50));
        reactor.dispatch(&mut deaths).expect("dispatch");
    }
    let total = deaths.total();
    let long_report = deaths.seen.get(&long).cloned();
    drop(reactor);

    assert_eq!(
        lost,
        STOLEN,
        "{lost} of {STOLEN} stolen children reported Lost after {turns} turns of the loop \
         ({:?}, {wakeups} wake-ups, {total} reports in all)",
        start.elapsed()
    );
    assert!(
        still_registered,
        "the long-lived child was still registered"
    );
    assert_eq!(
        long_report.as_deref().map(|o| o.len()),
        Some(1),
        "the long-lived child: one report"
    );
    check.finish();
}
