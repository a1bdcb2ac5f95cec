//! `SigchldOwner::LibraryAlways` as a sub-reaper: collect orphans too.
//!
//! ```text
//! cargo run --example reaper
//! ```
//!
//! A supervisor, a container init or a build tool often has to reap not only
//! the children it started but also their children, when those outlive their
//! parent. On Linux, `prctl(PR_SET_CHILD_SUBREAPER)` makes such orphans our
//! children; `LibraryAlways` makes evchild reap *every* child of the process
//! (`waitpid(-1)`) and hand the ones it did not start to the unknown-child
//! hook. (At most one reactor per process may be in this mode: two reap-all
//! owners would steal each other's children.)
//!
//! We start one child, `sh -c 'sleep 0.2 & sleep 0.4 & exit 0'`. The shell
//! exits at once; its two `sleep`s are orphaned, re-parented to us, and
//! reported through the hook when they finish.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_char, CString};
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use evchild::{Claim, Exit, Forked, Hooks, Pid, Reactor, SigchldOwner};
use mio::{Events, Interest, Poll, Token};

const CHILDREN: Token = Token(0);
const SCRIPT: &str = "sleep 0.2 & sleep 0.4 & exit 0";
/// How many grandchildren `SCRIPT` leaves behind.
const ORPHANS: usize = 2;

struct Supervisor {
    start: Instant,
    child_done: bool,
    orphans: usize,
}

impl Supervisor {
    fn ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signo)) => format!("killed by signal {signo}"),
        _ => format!("{status}"),
    }
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphaned descendants are re-parented
/// to this process instead of to init.
fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers and
    // touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    become_subreaper()?;

    // The hook sees every child of the process that evchild reaped but did
    // not start. `Claimed` counts it as handled (see `stats`); `Declined`
    // would count it as unclaimed (and log a warning with the `log` feature).
    let hooks = Hooks::new(SigchldOwner::LibraryAlways).unknown_child(
        |sup: &mut Supervisor, pid: Pid, status: ExitStatus| {
            sup.orphans += 1;
            println!(
                "{:>4} ms  orphan pid {pid} {} (unknown-child hook: claimed)",
                sup.ms(),
                describe(status)
            );
            Claim::Claimed
        },
    );
    let mut children = Reactor::new(hooks)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut children, CHILDREN, Interest::READABLE)?;
    let mut sup = Supervisor {
        start: Instant::now(),
        child_done: false,
        orphans: 0,
    };

    // Everything the child needs is allocated before the fork.
    let path = CString::new("/bin/sh")?;
    let args = [path.clone(), CString::new("-c")?, CString::new(SCRIPT)?];
    let argv: Vec<*const c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let on_death = |sup: &mut Supervisor, _: &mut Reactor<Supervisor>, exit: Exit| {
        let how = exit.status().map_or("status unknown".into(), describe);
        println!(
            "{:>4} ms  child  pid {} {how} (death callback)",
            sup.ms(),
            exit.id.pid()
        );
        sup.child_done = true;
    };
    // SAFETY: the child calls only execv(3) and _exit(2), both
    // async-signal-safe, on memory allocated before the fork.
    match unsafe { children.fork(on_death) }? {
        Forked::Child => {
            // SAFETY: `argv` is a null-terminated array of pointers to the
            // NUL-terminated strings in `args`, alive for the call.
            unsafe {
                libc::execv(path.as_ptr(), argv.as_ptr());
                libc::_exit(127)
            }
        }
        Forked::Parent(id) => println!("   0 ms  started pid {}: sh -c '{SCRIPT}'", id.pid()),
    }

    let mut events = Events::with_capacity(16);
    let deadline = sup.start + Duration::from_secs(5);
    while !sup.child_done || sup.orphans < ORPHANS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "timed out: child done {}, {} of {ORPHANS} orphans collected",
                sup.child_done, sup.orphans
            );
            std::process::exit(1);
        }
        // Sleep no longer than the reactor's next deadline (none here), and
        // dispatch whenever `poll` returns: cheap when there is nothing to do.
        let sleep = evchild::earliest(children.timeout(), Some(left));
        match poll.poll(&mut events, sleep) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        children.dispatch(&mut sup)?;
    }

    let stats = children.stats();
    println!(
        "done: our child and {} orphans accounted for (stats: reaped {}, \
         unknown claimed {}, unknown unclaimed {}, lost {}, wake-ups {})",
        sup.orphans,
        stats.reaped,
        stats.unknown_claimed,
        stats.unknown_unclaimed,
        stats.lost,
        stats.dispatches
    );
    Ok(())
}
