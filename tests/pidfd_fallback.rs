//! The pidfd backend when `pidfd_open` fails for one child (`EMFILE`: the
//! process is at its `RLIMIT_NOFILE`): that child alone is watched through
//! `SIGCHLD` (the handler is installed while such a child lives, and removed
//! after its report), and every child is still reported exactly once.
//!
//! Its own binary: it lowers the process's descriptor limit, which no other
//! test may see (the limit and the descriptors that fill it are restored by
//! a guard, even if the test fails).
//!
//! Forks: the test binary has other threads, so every forked child only
//! calls async-signal-safe functions (`_exit`, `read`, `close`) until it
//! dies (see `util::fork_exit` and `util::fork_waiting`).

use evchild_testkit as util;

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use evchild::{Backend, ChildId};
use util::{fork_exit, fork_waiting, record, sigchld_handler, Deaths, Gate, KillOnPanic};

const LIMIT: Duration = Duration::from_secs(30);

/// The descriptors of this process that are pidfds.
fn pidfds() -> Vec<RawFd> {
    util::open_fds()
        .into_iter()
        .filter(|fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|target| target.as_os_str() == "anon_inode:[pidfd]")
        })
        .collect()
}

fn get_nofile() -> libc::rlimit {
    // SAFETY: all-zero is a valid `rlimit`, overwritten by the kernel.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is a valid out-pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    limit
}

fn set_nofile(limit: &libc::rlimit) {
    // SAFETY: `limit` is a valid `rlimit`; setrlimit only reads it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// While it lives, the process can open exactly `free` more descriptors:
/// the soft `RLIMIT_NOFILE` is lowered to a little above the highest open
/// descriptor, and every free number below it but `free` is taken by a
/// copy of stdin. Dropping it closes the copies and restores the limit.
struct FewDescriptors {
    saved: libc::rlimit,
    filler: Vec<OwnedFd>,
}

impl FewDescriptors {
    #[track_caller]
    fn leaving(free: usize) -> Self {
        let saved = get_nofile();
        let highest = util::open_fds().into_iter().max().unwrap_or(2);
        let soft = (highest as libc::rlim_t + 1 + 32 + free as libc::rlim_t).min(saved.rlim_cur);
        let mut guard = FewDescriptors {
            saved,
            filler: Vec::new(),
        };
        set_nofile(&libc::rlimit {
            rlim_cur: soft,
            rlim_max: saved.rlim_max,
        });
        loop {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) only creates a new descriptor
            // (or fails); descriptor 0 stays open throughout the test.
            let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 0) };
            if fd < 0 {
                let err = std::io::Error::last_os_error();
                assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "F_DUPFD: {err}");
                break;
            }
            // SAFETY: `fd` was just created and nobody else owns it.
            guard.filler.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        assert!(
            guard.filler.len() >= free,
            "not enough room under the limit"
        );
        guard.filler.truncate(guard.filler.len() - free);
        guard
    }
}

impl Drop for FewDescriptors {
    fn drop(&mut self) {
        self.filler.clear();
        set_nofile(&self.saved);
    }
}

/// With room for only `K` more descriptors, `N` children are forked (`K`
/// get a pidfd, the others fall back to `SIGCHLD`), and `EARLY` more that
/// exit at once (each falling back after it may already have died). The
/// early ones are reported while the limit is still low. The handler is
/// installed while a child without a pidfd lives, and removed once the
/// last of them is reported, though children with pidfds still live; each
/// child is reported exactly once, with its status; no pidfd is left.
#[test]
fn children_beyond_the_descriptor_limit_fall_back_to_sigchld() {
    const K: usize = 5;
    const N: usize = 12;
    const EARLY: i32 = 4;
    let check = util::Check::start();
    if !util::pidfd_or_skip("the whole test") {
        return check.finish();
    }
    {
        let _kill = KillOnPanic;
        let gate = Gate::new();
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(Backend::Pidfd);
        let pidfds_before = pidfds().len();
        util::assert_no_registration("new");

        let few = FewDescriptors::leaving(K);
        let waiting: Vec<ChildId> = (0..N)
            .map(|_| fork_waiting(&mut reactor, &gate, record))
            .collect();
        assert_ne!(
            sigchld_handler(),
            libc::SIG_DFL,
            "no handler for the children without a pidfd"
        );
        util::assert_registrations(1, "children without a pidfd");
        let early: Vec<ChildId> = (0..EARLY)
            .map(|code| fork_exit(&mut reactor, code, record))
            .collect();
        // Reported with the limit still low.
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| {
            d.total() == EARLY as usize
        });
        for (code, &id) in (0..).zip(&early) {
            deaths.assert_code(id, code);
        }
        drop(few);

        // The first K children got the K pidfds.
        assert_eq!(
            pidfds().len(),
            pidfds_before + K,
            "one per child that got one"
        );
        assert_ne!(sigchld_handler(), libc::SIG_DFL);
        let (with_pidfd, without) = waiting.split_at(K);

        // Those without a pidfd die: the registration goes with the last of
        // them (the handler itself stays installed).
        for (i, &id) in without.iter().enumerate() {
            reactor.kill(id, libc::SIGKILL).expect("kill");
            let reported = EARLY as usize + i + 1;
            lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == reported);
            deaths.assert_signal(id, libc::SIGKILL);
            if i + 1 < without.len() {
                util::assert_registrations(1, "released too early");
            }
        }
        util::assert_no_registration("only pidfd children left");
        assert_eq!(pidfds().len(), pidfds_before + K);

        for &id in with_pidfd {
            reactor.kill(id, libc::SIGKILL).expect("kill");
        }
        let total = EARLY as usize + N;
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == total);
        for &id in &waiting {
            deaths.assert_signal(id, libc::SIGKILL);
        }
        assert_eq!(deaths.seen.len(), total, "each child exactly once");
        reactor.dispatch(&mut deaths).expect("dispatch");
        assert_eq!(deaths.total(), total, "a report twice");
        let stats = reactor.stats();
        assert_eq!((stats.reaped, stats.lost), (total as u64, 0));
        assert_eq!(pidfds().len(), pidfds_before, "pidfds left");
        util::assert_no_registration("after every report");
    }
    check.finish();
}

/// The same with no room at all, from the first child: every child falls
/// back, all are reported, and the registration is released afterwards. Then, with
/// the limit restored, the same reactor uses pidfds again.
#[test]
fn no_room_for_any_pidfd() {
    const N: usize = 8;
    let check = util::Check::start();
    if !util::pidfd_or_skip("the whole test") {
        return check.finish();
    }
    {
        let _kill = KillOnPanic;
        let gate = Gate::new();
        let (mut reactor, mut lp, mut deaths) = util::library_loop_with::<Deaths>(Backend::Pidfd);
        let pidfds_before = pidfds().len();

        let few = FewDescriptors::leaving(0);
        let ids: Vec<ChildId> = (0..N)
            .map(|_| fork_waiting(&mut reactor, &gate, record))
            .collect();
        assert_ne!(sigchld_handler(), libc::SIG_DFL);
        for &id in &ids {
            reactor.kill(id, libc::SIGTERM).expect("kill");
        }
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == N);
        drop(few);
        for &id in &ids {
            deaths.assert_signal(id, libc::SIGTERM);
        }
        util::assert_no_registration("after every report");
        assert_eq!(pidfds().len(), pidfds_before);

        let again = fork_waiting(&mut reactor, &gate, record);
        assert_eq!(pidfds().len(), pidfds_before + 1, "a pidfd again");
        util::assert_no_registration("a pidfd again");
        reactor.kill(again, libc::SIGKILL).expect("kill");
        lp.run_until(&mut reactor, &mut deaths, LIMIT, |d| d.total() == N + 1);
        deaths.assert_signal(again, libc::SIGKILL);
        assert_eq!(pidfds().len(), pidfds_before);
    }
    check.finish();
}
