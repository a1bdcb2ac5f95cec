//! "Every descriptor evchild opens is close-on-exec": an executed child that
//! lists its `/proc/self/fd` finds none of evchild's, however many children
//! the reactor has. With 20 live children under each backend (so, with
//! pidfds, 20 pidfds besides the epoll set and the wake pipe) and in
//! `LibraryAlways` mode, three children list their descriptors with
//! `ls -l /proc/self/fd/`: one started by the reactor's `spawn` with its
//! stdout piped, one by `std::process::Command`, and one forked by the
//! reactor that execs. None may see a pidfd, an epoll set or the wake pipe.
//!
//! Its own binary: the tests look at every descriptor of the process.
//!
//! Forks: the test binary has other threads, so every forked child only
//! calls async-signal-safe functions (`_exit`, `read`, `close`, `dup2`,
//! `execv`) until it dies or execs; each `unsafe` block says which.

#![warn(clippy::undocumented_unsafe_blocks)]

use evchild_testkit as util;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::RawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use evchild::{Backend, ChildId, Hooks, Reactor, SigchldOwner};
use util::{fork_waiting, record, Deaths, Gate, KillOnPanic, Loop};

const LIMIT: Duration = Duration::from_secs(30);
const LIVE: usize = 20;

const EPOLL: &str = "anon_inode:[eventpoll]";
const PIDFD: &str = "anon_inode:[pidfd]";
use util::LIST;

fn fd_target(fd: RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What each descriptor in an `ls -l /proc/self/fd/` listing names (the
/// part after `-> `).
fn listed_targets(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.split_once(" -> ").map(|(_, t)| t.trim().to_owned()))
        .collect()
}

/// Asserts that `listing`, from `who`, is a real listing that names no
/// pidfd, no epoll set and none of `ours` (the wake pipe).
#[track_caller]
fn assert_inherited_none(listing: &str, ours: &BTreeSet<String>, who: &str) {
    let targets = listed_targets(listing);
    // At least stdin, stdout and stderr (and the listing's own directory).
    assert!(targets.len() >= 3, "{who}: unexpected listing:\n{listing}");
    for target in &targets {
        assert!(
            target != PIDFD && target != EPOLL && !ours.contains(target),
            "{who} inherited {target}:\n{listing}"
        );
    }
}

/// Creates a reactor with `hooks` and returns it with the targets of the
/// descriptors it opened (its epoll set and its wake pipe), each checked
/// close-on-exec and non-blocking.
#[track_caller]
fn reactor_and_its_fds(hooks: Hooks<Deaths>) -> (Reactor<Deaths>, BTreeSet<String>) {
    let before = util::open_fds();
    let reactor = Reactor::new(hooks).expect("Reactor::new");
    let opened: Vec<RawFd> = util::open_fds()
        .difference(&before)
        .copied()
        .filter(|&fd| !fd_target(fd).is_empty()) // the listing's own handle
        .collect();
    let targets: BTreeSet<String> = opened.iter().map(|&fd| fd_target(fd)).collect();
    assert!(targets.contains(EPOLL), "no epoll set among {targets:?}");
    assert!(
        targets.iter().any(|t| t.starts_with("pipe:")),
        "no wake pipe among {targets:?}"
    );
    for fd in &opened {
        util::assert_cloexec_nonblock(fd);
    }
    (reactor, targets)
}

/// The listing of a child started by `reactor.spawn` with its stdout piped
/// (read to the end, blocking). Returns it with the child's id.
#[track_caller]
fn spawn_listing(reactor: &mut Reactor<Deaths>) -> (String, ChildId) {
    let spawned = reactor
        .spawn(
            Command::new("/bin/sh")
                .args(["-c", LIST])
                .stdin(Stdio::null())
                .stdout(Stdio::piped()),
            record,
        )
        .expect("spawn ls");
    let stdout = spawned.stdout.expect("piped stdout");
    stdout.set_nonblocking(false).expect("blocking");
    let mut listing = String::new();
    std::fs::File::from(std::os::fd::OwnedFd::from(stdout))
        .read_to_string(&mut listing)
        .expect("read listing");
    (listing, spawned.id)
}

/// The listing of a child of `std::process::Command`.
#[track_caller]
fn command_listing() -> String {
    let output = Command::new("/bin/sh")
        .args(["-c", LIST])
        .stdin(Stdio::null())
        .output()
        .expect("run ls");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// With [`LIVE`] live children of a reactor made with `hooks`, the three
/// listings name none of its descriptors; then every child is reported.
#[track_caller]
fn check_listings(hooks: Hooks<Deaths>, what: &str) {
    let gate = Gate::new();
    let (mut reactor, ours) = reactor_and_its_fds(hooks);
    let mut lp = Loop::new(&mut reactor);
    let mut deaths = Deaths::default();
    let pidfds_before = count(PIDFD);
    let live: Vec<ChildId> = (0..LIVE)
        .map(|_| fork_waiting(&mut reactor, &gate, record))
        .collect();
    let pidfds = count(PIDFD) - pidfds_before;
    let expected =
        if reactor.mode() == SigchldOwner::Library && reactor.backend() == Some(Backend::Pidfd) {
            LIVE
        } else {
            0
        };
    assert_eq!(pidfds, expected, "{what}: pidfds of the live children");

    let (listing, spawned) = spawn_listing(&mut reactor);
    assert_inherited_none(&listing, &ours, &format!("{what}: a spawned child"));
    let listing = command_listing();
    assert_inherited_none(&listing, &ours, &format!("{what}: a Command child"));
    let (listing, execed) = util::fork_exec_listing(&mut reactor);
    assert_inherited_none(
        &listing,
        &ours,
        &format!("{what}: an exec'd child of Reactor::fork"),
    );

    for &id in &live {
        reactor.kill(id, libc::SIGKILL).expect("kill");
    }
    lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == LIVE + 2);
    deaths.assert_code(spawned, 0);
    deaths.assert_code(execed, 0);
    for &id in &live {
        deaths.assert_signal(id, libc::SIGKILL);
    }
    assert_eq!(count(PIDFD), pidfds_before, "{what}: pidfds left");
}

/// How many descriptors of this process name `target`.
fn count(target: &str) -> usize {
    util::open_fds()
        .into_iter()
        .filter(|&fd| fd_target(fd) == target)
        .count()
}

#[test]
fn library_children_inherit_no_descriptor_of_ours() {
    let check = util::Check::start();
    {
        let _kill = KillOnPanic;
        let pidfd = util::pidfd_or_skip("the Pidfd backend's part");
        for backend in util::BACKENDS {
            if backend == Backend::Pidfd && !pidfd {
                continue;
            }
            check_listings(
                Hooks::new(SigchldOwner::Library).backend(backend),
                &format!("{backend:?}"),
            );
        }
    }
    check.finish();
}

#[test]
fn library_always_children_inherit_no_descriptor_of_ours() {
    let check = util::Check::start();
    {
        let _kill = KillOnPanic;
        check_listings(Hooks::new(SigchldOwner::LibraryAlways), "LibraryAlways");
    }
    check.finish();
}
