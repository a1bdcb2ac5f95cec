//! A tour of evchild: four children in one `mio` loop, one death report each.
//!
//! ```text
//! cargo run --example tour
//! ```
//!
//! The children:
//! * `true`:    execs `/bin/true`, exits with code 0;
//! * `exit-3`:  execs `/bin/sh -c 'exit 3'`, exits with code 3;
//! * `sleeper`: execs `/bin/sleep 30`; we stop it with `terminate`
//!   (`SIGTERM`, and `SIGKILL` should it still live after a grace period);
//! * `primes`:  forks *without* exec, counts primes in the child and sends
//!   the answer back through a pipe.
//!
//! # The SIGCHLD contract, briefly
//!
//! `SIGCHLD` is one process-wide resource, so evchild asks the application
//! who owns it. Here it is `SigchldOwner::Library`, with the default backend:
//! each child's pidfd sits in the reactor's own epoll set (where the kernel
//! has pidfds; elsewhere a `SIGCHLD` handler writes a byte to the reactor's
//! wake pipe). The reactor's descriptor then becomes readable, `mio` reports
//! its token, and we call `dispatch`. `dispatch` reaps only evchild's own
//! children (by pidfd, `waitid(P_PIDFD)`, never `waitpid(-1)`, so other
//! code's children are never stolen) and runs each child's death callback
//! exactly once, in our loop, never in a signal handler.
//!
//! The reactor's timers (`terminate`'s grace periods) need no thread either:
//! the loop sleeps in `poll` no longer than `timeout()` says, and calls
//! `dispatch` whenever `poll` returns, on an event or on time-out.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use evchild::{ChildId, Exit, Forked, Hooks, Reactor, SigchldOwner};
use mio::{Events, Interest, Poll, Token};
use nix::fcntl::OFlag;

const CHILDREN: Token = Token(0);
/// The `primes` child counts the primes below this.
const LIMIT: u64 = 1_000_000;
/// How long the sleeper may take to obey `SIGTERM` before it gets `SIGKILL`.
const GRACE: Duration = Duration::from_secs(2);

/// The application's context. `dispatch(&mut tour)` hands it to every death
/// callback, so the callbacks need no `Rc<RefCell<..>>` and no globals.
struct Tour {
    start: Instant,
    /// What each live child is, and when it was started.
    children: HashMap<ChildId, (&'static str, Instant)>,
    /// The child the `primes` callback stops once it has its answer.
    sleeper: Option<ChildId>,
}

impl Tour {
    fn started(&mut self, id: ChildId, name: &'static str, what: &str) {
        println!("started  pid {:>7}  {name:<8} {what}", id.pid());
        self.children.insert(id, (name, Instant::now()));
    }

    /// Prints one death report; returns the child's name.
    fn report(&mut self, exit: Exit, extra: &str) -> &'static str {
        let (name, born) = self.children.remove(&exit.id).unwrap_or(("?", self.start));
        let how = match exit.status() {
            Some(status) => describe(status),
            // Only if other code in this process reaped our child behind
            // evchild's back (e.g. with `waitpid(-1)`): its status is unknown.
            None => "was reaped by someone else (status unknown)".to_string(),
        };
        println!(
            "died     pid {:>7}  {name:<8} {how}{extra}  (lived {} ms)",
            exit.id.pid(),
            born.elapsed().as_millis()
        );
        name
    }
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else if let Some(signo) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(signo).map_or("?", |s| s.as_str());
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("killed by {name} (signal {signo}{core})")
    } else {
        format!("{status}")
    }
}

/// An argument vector for `execv(3)`, built *before* the fork: after `fork`
/// in a (possibly) multithreaded process, the child may not allocate.
/// (`nix::unistd::execv` builds its pointer array after being called, that
/// is in the child, so we call `libc::execv` with one made in advance.)
struct Argv {
    _args: Vec<CString>,
    /// Pointers into `_args`, then a null pointer.
    ptrs: Vec<*const c_char>,
}

impl Argv {
    fn new(args: &[&str]) -> Argv {
        assert!(!args.is_empty(), "argv[0] is the program");
        let args: Vec<CString> = args
            .iter()
            .map(|a| CString::new(*a).expect("no NUL in arguments"))
            .collect();
        let mut ptrs: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Argv { _args: args, ptrs }
    }

    /// In the forked child: `execv(argv[0], argv)`, or `_exit(127)` if that
    /// fails. Both are async-signal-safe, and nothing here allocates.
    fn exec(&self) -> ! {
        // SAFETY: `ptrs` is a null-terminated array of pointers to the
        // NUL-terminated strings in `_args`, which `self` keeps alive; execv
        // only reads them. `_exit` is always safe and never returns.
        unsafe {
            libc::execv(self.ptrs[0], self.ptrs.as_ptr());
            libc::_exit(127)
        }
    }
}

/// Starts a child that execs `args`, and registers it under `name`.
fn start_exec(
    children: &mut Reactor<Tour>,
    tour: &mut Tour,
    name: &'static str,
    args: &[&str],
) -> evchild::Result<ChildId> {
    let argv = Argv::new(args);
    // SAFETY: in the child we only call `Argv::exec`: execv(3) and _exit(2),
    // both async-signal-safe, on memory allocated before the fork.
    let forked = unsafe {
        children.fork(|tour: &mut Tour, _: &mut Reactor<Tour>, exit: Exit| {
            tour.report(exit, "");
        })
    }?;
    match forked {
        Forked::Child => argv.exec(),
        Forked::Parent(id) => {
            // Death callbacks run only inside `dispatch`, so recording the
            // child after `fork` returned is not a race, even if it has
            // already exited.
            let shown: Vec<String> = args.iter().map(|a| quote(a)).collect();
            tour.started(id, name, &format!("exec {}", shown.join(" ")));
            Ok(id)
        }
    }
}

/// `a`, in single quotes if it has spaces (for display only).
fn quote(a: &str) -> String {
    if a.contains(' ') {
        format!("'{a}'")
    } else {
        a.to_string()
    }
}

/// Counts the primes below `limit` by trial division: real work, with no
/// allocation and nothing that can panic, so it may run in a forked child.
fn count_primes(limit: u64) -> u64 {
    let mut count = 0;
    let mut n = 2;
    while n < limit {
        let mut d = 2;
        while d * d <= n && n % d != 0 {
            d += 1;
        }
        if d * d > n {
            count += 1;
        }
        n += 1;
    }
    count
}

/// Starts the worker: a forked child that runs Rust code of its own (no
/// exec) and writes its answer to a pipe before it exits.
fn start_worker(
    children: &mut Reactor<Tour>,
    tour: &mut Tour,
) -> Result<ChildId, Box<dyn std::error::Error>> {
    // Close-on-exec, so the exec'd children do not inherit it; blocking is
    // fine: the callback reads only after the writer has exited.
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let mut answer = File::from(read_end);
    let on_death = move |tour: &mut Tour, children: &mut Reactor<Tour>, exit: Exit| {
        // The child is gone, so whatever it wrote is in the pipe.
        let mut buf = [0u8; 8];
        let extra = match answer.read_exact(&mut buf) {
            Ok(()) => format!(": {} primes below {LIMIT}", u64::from_ne_bytes(buf)),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => ": no answer".into(),
            Err(e) => format!(": reading its answer failed: {e}"),
        };
        tour.report(exit, &extra);
        // A callback gets the reactor too: it may start, or signal, others.
        if let Some(sleeper) = tour.sleeper {
            println!(
                "         (the answer is in, so we stop the sleeper: SIGTERM to pid {}, \
                 SIGKILL if it still lives in {} s)",
                sleeper.pid(),
                GRACE.as_secs()
            );
            if let Err(e) = children.terminate(sleeper, GRACE) {
                println!("         terminate failed: {e}");
            }
        }
    };
    // SAFETY: the child runs `count_primes` (stack only, cannot panic), then
    // write(2) and _exit(2), both async-signal-safe. It allocates nothing,
    // takes no lock and never returns from this block.
    match unsafe { children.fork(on_death) }? {
        Forked::Child => {
            let bytes = count_primes(LIMIT).to_ne_bytes();
            // SAFETY: `bytes` is a live 8-byte buffer and `write_end` is
            // open. A short or failed write shows up in the parent as "no
            // answer"; there is nothing safe to do about it here.
            unsafe {
                libc::write(write_end.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0)
            }
        }
        Forked::Parent(id) => {
            // Our copy of the write end must go, so that the read sees EOF
            // rather than blocking if the child dies without writing.
            drop(write_end);
            tour.started(
                id,
                "primes",
                &format!("fork, no exec: counts the primes below {LIMIT}"),
            );
            Ok(id)
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);

    // Library mode: evchild installs its SIGCHLD handler while it has live
    // children and reaps only its own. The reactor is one descriptor for the
    // loop, however many children it has.
    let mut children = Reactor::<Tour>::new(Hooks::new(SigchldOwner::Library))?;
    poll.registry()
        .register(&mut children, CHILDREN, Interest::READABLE)?;

    let mut tour = Tour {
        start: Instant::now(),
        children: HashMap::new(),
        sleeper: None,
    };
    println!("evchild tour: four children, one mio loop, one report per child\n");
    start_exec(&mut children, &mut tour, "true", &["/bin/true"])?;
    start_exec(
        &mut children,
        &mut tour,
        "exit-3",
        &["/bin/sh", "-c", "exit 3"],
    )?;
    let sleeper = start_exec(&mut children, &mut tour, "sleeper", &["/bin/sleep", "30"])?;
    tour.sleeper = Some(sleeper);
    start_worker(&mut children, &mut tour)?;
    println!();

    // The loop: wait no longer than the reactor's next deadline, and
    // dispatch whenever `poll` returns. A deadline of our own keeps a broken
    // system from hanging the tour.
    let deadline = tour.start + Duration::from_secs(10);
    while !children.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("timed out with {} children still running", children.len());
            std::process::exit(1);
        }
        let sleep = evchild::earliest(children.timeout(), Some(left));
        match poll.poll(&mut events, sleep) {
            Ok(()) => {}
            // A signal (SIGCHLD itself) can interrupt epoll_wait: poll again.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        // Whether the reactor's token is ready (children died) or a
        // deadline is due: reaps the children that died, sends the SIGKILLs
        // that are due, and runs the death callbacks. Cheap when there is
        // nothing to do. (A loop with other sources would handle their
        // events here too.)
        children.dispatch(&mut tour)?;
    }

    let stats = children.stats();
    println!(
        "\nall children reported, each exactly once, in {} ms \
         (reaped {}, lost {}, wake-ups {})",
        tour.start.elapsed().as_millis(),
        stats.reaped,
        stats.lost,
        stats.dispatches
    );
    Ok(())
}
