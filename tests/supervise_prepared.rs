//! `Start::prepared` and `Start::prepared_with`: workers started from a
//! `Prepared` (no `pre_exec`, no fork of the master) get the status channel
//! and what the `Prepared` passes, report ready, serve, and stop when the
//! supervisor shuts down; the per-worker hook runs before each start.

mod supervise_util;
use evchild_testkit as util;

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use evchild::supervise::{Event, PoolConfig, Start, WorkerState};
use evchild::{Prepared, Redirect};
use supervise_util::{listener, request, Harness, WORKER_ENV};
use util::{Check, KillOnPanic};

/// Not a test: the worker program of this binary (see `supervise_util`).
#[test]
fn worker_entry() {
    supervise_util::worker_main_if_asked();
}

/// The descriptor number the workers find the listener under.
const LISTENER_FD: i32 = 10;

/// This test binary as a worker serving on descriptor [`LISTENER_FD`],
/// which the `Prepared` passes (the only descriptor of the master a
/// `Prepared` child gets, besides its stdio and the status channel).
fn worker(listener: &std::net::TcpListener) -> Prepared {
    let mut worker = Prepared::new(std::env::current_exe().expect("current_exe"));
    worker
        .args(["--exact", "worker_entry", "--test-threads=1", "--quiet"])
        .env(WORKER_ENV, format!("{LISTENER_FD}:serve"))
        .stdin(Redirect::Null)
        .stdout(Redirect::Null)
        .pass_fd(
            listener.as_fd().try_clone_to_owned().expect("dup"),
            LISTENER_FD,
        );
    worker
}

#[test]
fn prepared_workers_report_ready_serve_and_stop() {
    let check = Check::start();
    {
        let _kill = KillOnPanic;
        let (listener, addr) = listener();
        let mut h = Harness::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&starts);
        let start = Start::prepared_with(worker(&listener), move |_, prepared| {
            counted.fetch_add(1, Ordering::Relaxed);
            prepared.env("EVCHILD_TEST_WORKER_START", "yes");
        });
        let config = PoolConfig::new()
            .start(3)
            .workers(3, 3)
            .idle(1, 3)
            .interval(Duration::from_millis(200));
        let pool = h.add_pool("prepared", config, start);
        assert!(
            h.run_until(Duration::from_secs(20), |h| h
                .count(pool, WorkerState::Idle)
                == 3),
            "three prepared workers did not report ready: {:?}",
            h.app.events
        );
        assert_eq!(
            starts.load(Ordering::Relaxed),
            3,
            "the hook before each start"
        );
        let pids = h.pids(pool);
        // Each request is served by one of the pool's workers.
        for _ in 0..6 {
            let handle = std::thread::spawn(move || request(addr, 1));
            h.run_until(Duration::from_secs(10), |_| handle.is_finished());
            let outcome = handle.join().expect("client");
            assert!(outcome.ok, "{outcome:?}");
            let pid = outcome.worker.expect("greeted");
            assert!(
                pids.contains(&pid),
                "served by {pid}, not a worker of {pids:?}"
            );
        }
        assert!(
            !h.seen(|e| matches!(e, Event::Throttled { .. } | Event::GaveUp { .. })),
            "{:?}",
            h.app.events
        );
        h.stop(Duration::from_secs(2), Duration::from_secs(20));
        drop(h);
        drop(listener);
    }
    check.finish();
}
