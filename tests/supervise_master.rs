//! Workers never outlive their master: a master killed with `SIGKILL`
//! leaves no worker behind and its port free, for executed and forked
//! workers, with `PoolConfig::parent_death_signal` and without it (then a
//! worker's next report fails instead of blocking, and it exits).
//!
//! The master is this test binary executed again (`master_entry`), so that
//! it can be killed; its workers are its children, not ours.

mod supervise_util;
use evchild_testkit as util;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use evchild::supervise::{worker, PoolConfig, Start, WorkerState};
use supervise_util::{listener, worker_command, Harness};
use util::{Check, KillOnPanic};

const MASTER_ENV: &str = "EVCHILD_SUPERVISE_TEST_MASTER";

/// Not a test: the worker program of this binary (see `supervise_util`).
#[test]
fn worker_entry() {
    supervise_util::worker_main_if_asked();
}

/// A forked worker: ready, then a heartbeat every 100 ms until one fails.
/// Async-signal-safe only (the master has other threads): atomics,
/// `write(2)` through `worker::*`, `poll(2)`.
fn forked_beat() -> i32 {
    worker::ready();
    loop {
        // SAFETY: poll(2) with no descriptors: a 100 ms sleep.
        unsafe { libc::poll(std::ptr::null_mut(), 0, 100) };
        if !worker::heartbeat() {
            return 3;
        }
    }
}

/// Not a test: run as a master by [`master`], serves until killed. Prints
/// `port P` and `pids A B C` once its workers are ready.
#[test]
fn master_entry() {
    let Ok(kind) = std::env::var(MASTER_ENV) else {
        return;
    };
    let (listener, addr) = listener();
    let fd: RawFd = listener.as_raw_fd();
    let mut h = Harness::new();
    let mut config = PoolConfig::new().start(3).workers(3, 3).idle(0, 3);
    if kind.ends_with("+pdeathsig") {
        config = config.parent_death_signal(libc::SIGTERM);
    }
    let start = if kind.starts_with("fork") {
        // SAFETY: `forked_beat` only calls async-signal-safe functions.
        unsafe { Start::fork(move |_| forked_beat()) }
    } else {
        Start::command(move |_| worker_command(fd, "beat"))
    };
    let pool = h.add_pool("master", config, start);
    assert!(h.run_until(Duration::from_secs(20), |h| h
        .count(pool, WorkerState::Idle)
        == 3));
    let pids: Vec<String> = h.pids(pool).iter().map(|p| p.to_string()).collect();
    println!("port {}", addr.port());
    println!("pids {}", pids.join(" "));
    loop {
        h.turn(Duration::from_millis(100));
    }
}

/// Whether `pid` is gone (or a zombie: dead, waiting for init).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Starts a master of `kind`, kills it with `SIGKILL` once its workers
/// are ready, and checks that they go by themselves and free the port.
fn master(kind: &str) {
    let check = Check::start();
    let _reap = KillOnPanic;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "master_entry", "--test-threads=1", "--nocapture"])
        .env(MASTER_ENV, kind)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut port = 0u16;
    let mut pids: Vec<u32> = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("port ") {
            port = p.parse().unwrap();
        } else if let Some(p) = line.strip_prefix("pids ") {
            pids = p.split(' ').map(|p| p.parse().unwrap()).collect();
            break;
        }
    }
    assert_eq!(pids.len(), 3, "the master did not report its workers");
    assert!(pids.iter().all(|p| !gone(*p)));
    child.kill().unwrap();
    child.wait().unwrap();
    let t0 = Instant::now();
    while !pids.iter().all(|p| gone(*p)) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<_> = pids.iter().filter(|p| !gone(**p)).collect();
    if !left.is_empty() {
        for p in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(**p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        panic!("{kind}: workers {left:?} outlived their master");
    }
    // The port is free: no worker holds the listener any more.
    let mut bound = TcpListener::bind(("127.0.0.1", port));
    let t1 = Instant::now();
    while bound.is_err() && t1.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        bound = TcpListener::bind(("127.0.0.1", port));
    }
    assert!(bound.is_ok(), "{kind}: port {port} still taken: {bound:?}");
    drop(bound);
    drop(lines);
    check.finish();
}

#[test]
fn executed_workers_die_with_their_master_by_the_parent_death_signal() {
    master("exec+pdeathsig");
}

#[test]
fn forked_workers_die_with_their_master_by_the_parent_death_signal() {
    master("fork+pdeathsig");
}

#[test]
fn executed_workers_exit_when_a_report_fails_after_their_master_died() {
    master("exec");
}

/// Issue 14, item 6: a forked worker inherited the status pipe's read
/// end, so its reports never failed (and blocked once the pipe was full):
/// it served on, unsupervised, holding the port.
#[test]
fn forked_workers_exit_when_a_report_fails_after_their_master_died() {
    master("fork");
}
