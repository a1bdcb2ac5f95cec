//! `SigchldOwner::Mainloop`: the application owns `SIGCHLD` and reaping.
//!
//! ```text
//! cargo run --example mainloop_owner
//! ```
//!
//! Some programs must own `SIGCHLD` themselves: they already have children
//! of their own (here, one started with `std::process::Command`) and a reap
//! loop for them. In `Mainloop` mode evchild installs no handler and reaps
//! nothing; the application
//! 1. installs its own async-signal-safe handler, which writes a byte to a
//!    self-pipe registered in the same `mio::Poll` as the reactor;
//! 2. on wake-up, reaps with `waitpid(-1, WNOHANG)` until nothing is left;
//! 3. hands every status to `Reactor::reaped`. evchild runs the death
//!    callback if the pid is one of its children, and answers
//!    `Err(Error::UnknownChild)` otherwise: that status is the application's.
//!
//! (An application that would rather not reap evchild's children itself can
//! call `Reactor::sigchld_occurred` instead, and evchild reaps its own with
//! `waitpid(pid)`.)

#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_char, CString};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use evchild::{Error, Exit, Forked, Hooks, Pid, Reactor, SigchldOwner};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

const CHILDREN: Token = Token(0);
const SIGCHLD_PIPE: Token = Token(1);

/// The write end of our self-pipe, for the signal handler (-1: none).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// Our `SIGCHLD` handler. Every step is async-signal-safe:
/// 1. save `errno` (a plain thread-local read), since `write` may change it
///    under the code we interrupted;
/// 2. an atomic load of the pipe's descriptor (no lock);
/// 3. `write(2)` of one byte; the pipe is non-blocking, and `EAGAIN` (full
///    pipe) is ignored on purpose: a full pipe is already readable;
/// 4. restore `errno`.
extern "C" fn on_sigchld(_: libc::c_int) {
    let saved = Errno::last_raw();
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: a one-byte write from a live static buffer; `fd` stays open
        // until after the handler is uninstalled (see the end of `main`).
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
    Errno::set_raw(saved);
}

/// What the application knows: its own child, and how many reports are
/// still due.
struct App {
    /// The child the application started itself, with `Command`.
    own_child: Option<Pid>,
    evchild_deaths: usize,
    own_deaths: usize,
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signo)) => format!("killed by signal {signo}"),
        _ => format!("{status}"),
    }
}

/// Empties the self-pipe (until `EAGAIN`: `mio` is edge-triggered).
fn drain(pipe: &OwnedFd) -> std::io::Result<()> {
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(pipe, &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => return Ok(()),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The application's reap loop: every exited child of the process, whoever
/// started it. evchild gets the statuses of its own children through
/// `reaped`; the others are ours.
fn reap_all(children: &mut Reactor<App>, app: &mut App) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        let mut raw: libc::c_int = 0;
        // SAFETY: `raw` is a valid, writable int; waitpid touches nothing else.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        match pid {
            // Children exist, none has exited (0); or there are none left.
            0 => return Ok(()),
            -1 if Errno::last() == Errno::ECHILD => return Ok(()),
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Err(Errno::last().into()),
            _ => {}
        }
        let (pid, status) = (Pid::from_raw(pid), ExitStatus::from_raw(raw));
        match children.reaped(app, pid, status) {
            // One of evchild's: its death callback has just run.
            Ok(()) => {}
            Err(Error::UnknownChild { pid }) => {
                let whose = if app.own_child == Some(pid) {
                    "our own Command child"
                } else {
                    "a child nobody registered"
                };
                println!("app:     reaped pid {pid} ({whose}): {}", describe(status));
                app.own_deaths += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Our self-pipe and handler, before any child exists, so no death can
    //    be missed. Non-blocking so the handler never blocks; close-on-exec
    //    so no exec'd child inherits it.
    let (pipe_read, pipe_write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    WAKE_FD.store(pipe_write.as_raw_fd(), Ordering::Relaxed);
    let ours = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: `on_sigchld` is async-signal-safe (see its documentation).
    let previous = unsafe { sigaction(Signal::SIGCHLD, &ours) }?;

    // 2. The reactor, in Mainloop mode: it installs no handler and reaps
    //    nothing by itself. Both descriptors go into the same Poll.
    let mut children = Reactor::<App>::new(Hooks::new(SigchldOwner::Mainloop))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut children, CHILDREN, Interest::READABLE)?;
    poll.registry().register(
        &mut SourceFd(&pipe_read.as_raw_fd()),
        SIGCHLD_PIPE,
        Interest::READABLE,
    )?;

    let mut app = App {
        own_child: None,
        evchild_deaths: 0,
        own_deaths: 0,
    };

    println!("Mainloop mode: the application owns SIGCHLD and reaps with waitpid(-1)\n");

    // 3. Two children through evchild: one exits 0 at once, one execs a
    //    shell that exits 5. The exec arguments are built before the fork.
    let path = CString::new("/bin/sh")?;
    let args = [path.clone(), CString::new("-c")?, CString::new("exit 5")?];
    let argv: Vec<*const c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let on_death = |app: &mut App, _: &mut Reactor<App>, exit: Exit| {
        let how = exit.status().map_or("status unknown".into(), describe);
        println!("evchild: death callback for pid {}: {how}", exit.id.pid());
        app.evchild_deaths += 1;
    };
    for exec in [false, true] {
        // SAFETY: the child calls only execv(3) and _exit(2), both
        // async-signal-safe, on memory allocated before the fork.
        match unsafe { children.fork(on_death) }? {
            Forked::Child => {
                // SAFETY: `argv` is a null-terminated array of pointers to
                // the NUL-terminated strings in `args`, alive for the call;
                // execv(3) and _exit(2) are async-signal-safe.
                unsafe {
                    if exec {
                        libc::execv(path.as_ptr(), argv.as_ptr());
                        libc::_exit(127)
                    }
                    libc::_exit(0)
                }
            }
            Forked::Parent(id) => println!(
                "started pid {} through evchild ({})",
                id.pid(),
                if exec { "sh -c 'exit 5'" } else { "_exit(0)" }
            ),
        }
    }

    // 4. And one of the application's own, that evchild knows nothing about.
    //    We reap it ourselves in `reap_all`, so we must not also `wait` on the
    //    `Child` handle (its pid is gone by then); dropping it is fine.
    let own = Command::new("/bin/sh").args(["-c", "exit 7"]).spawn()?;
    app.own_child = Some(Pid::from(own.id()));
    println!(
        "started pid {} with std::process::Command (sh -c 'exit 7')",
        own.id()
    );
    drop(own);

    // 5. The loop. It sleeps no longer than the reactor's next deadline
    //    (none here, but `terminate` would set one) and calls `dispatch`
    //    whenever `poll` returns.
    let mut events = Events::with_capacity(16);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.evchild_deaths < 2 || app.own_deaths < 1 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("timed out");
            std::process::exit(1);
        }
        let sleep = evchild::earliest(children.timeout(), Some(left));
        match poll.poll(&mut events, sleep) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for event in &events {
            if event.token() == SIGCHLD_PIPE {
                // Drain first, then reap: a SIGCHLD that lands during the
                // reap writes a new byte, so we wake again.
                drain(&pipe_read)?;
                reap_all(&mut children, &mut app)?;
            }
        }
        // After the reaping, so every pid we reaped has been reported with
        // `reaped` before `dispatch` may signal a child (a `terminate`
        // deadline). In Mainloop mode `dispatch` reaps nothing, but it fires
        // those deadlines and delivers reports left over by a panicking
        // callback, so it stays in the loop, readable (`CHILDREN`) or not.
        children.dispatch(&mut app)?;
    }
    let stats = children.stats();
    println!(
        "done: {} evchild callbacks, {} of the application's own \
         (evchild stats: reaped {}, lost {})",
        app.evchild_deaths, app.own_deaths, stats.reaped, stats.lost
    );

    // 6. Put the previous disposition back before closing the pipe the
    //    handler writes to.
    // SAFETY: restores the disposition `sigaction` returned above.
    unsafe { sigaction(Signal::SIGCHLD, &previous) }?;
    WAKE_FD.store(-1, Ordering::Relaxed);
    drop(pipe_write);
    Ok(())
}
