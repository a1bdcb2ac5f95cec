//! `spawn_prepared` allocates nothing per start in steady state but the
//! reactor's own `Box` for the child's `on_death`: counted with a counting
//! global allocator, after a warm-up (the first starts build the
//! `Prepared` and grow the reactor's tables).
//!
//! Its own binary: the allocator counts every thread of the process, so
//! no other test may run at the same time.

use evchild_testkit as util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use evchild::{Backend, Prepared, Redirect};
use util::{record, Check, Deaths, KillOnPanic};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: passes every call to the system allocator unchanged; counting is
// an atomic add.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f`.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    f();
    COUNTING.store(false, Relaxed);
    ALLOCATIONS.load(Relaxed)
}

#[test]
fn a_start_allocates_only_the_callback_box() {
    let check = Check::start();
    let _kill = KillOnPanic;
    let mut backends = vec![Backend::Peek, Backend::Scan];
    if util::pidfd_available() {
        backends.insert(0, Backend::Pidfd);
    } else {
        util::skip!("the Pidfd part: no pidfds here");
    }
    for backend in backends {
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(backend);
        deaths.seen.reserve(1_000);
        let mut truth = Prepared::new("true");
        truth.stdin(Redirect::Null).stdout(Redirect::Piped);
        // Warm-up: builds the Prepared, grows the tables (to 16 children
        // in flight, as many as are measured below).
        for round in 0..3 {
            for _ in 0..16 {
                reactor.spawn_prepared(&mut truth, record).expect("spawn");
            }
            lp.run_until(&mut reactor, &mut deaths, Duration::from_secs(30), |d| {
                d.total() == (round + 1) * 16
            });
        }
        let mut spawned = Vec::with_capacity(16);
        let counted = allocations(|| {
            for _ in 0..8 {
                spawned.push(reactor.spawn_prepared(&mut truth, record).expect("spawn"));
            }
        });
        // One `Box` per child for `record` (a zero-sized fn item: a ZST
        // box does not allocate) — so nothing at all here.
        assert_eq!(counted, 0, "{backend:?}: allocations in 8 starts");
        // A capturing callback: its Box is the one allocation per start.
        let tag = [1u8; 4];
        let counted = allocations(|| {
            for _ in 0..8 {
                let tag = tag.len();
                spawned.push(
                    reactor
                        .spawn_prepared(&mut truth, move |d: &mut Deaths, r, exit| {
                            assert_eq!(tag, 4);
                            record(d, r, exit)
                        })
                        .expect("spawn"),
                );
            }
        });
        assert_eq!(counted, 8, "{backend:?}: one Box per start");
        drop(spawned);
        lp.run_until(&mut reactor, &mut deaths, Duration::from_secs(30), |d| {
            d.total() == 64
        });
        drop((truth, lp, reactor));
    }
    check.finish();
}
