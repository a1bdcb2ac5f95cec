//! Issue 7, case 1: the inherited handler writes into a stranger's file.
//!
//! P has a reactor holding evchild's handler (so P's wake pipe is in the
//! process-wide registry, under P's pid): `LibraryAlways` (C forked plainly,
//! or by the reactor's own `fork`), or `Library` with `Scan`/`Peek` and a
//! live child. P forks C without exec; P exits. C drops its copy of the reactor (closing its copies
//! of the descriptors, leaving the registry as it was) and forks D, which
//! gets P's old pid (forced through `ns_last_pid`). D opens a file of its
//! own, which takes the wake pipe's old descriptor numbers, and starts a
//! child E that exits. E's `SIGCHLD` runs the inherited handler in D, which
//! compares `getpid()` (P's pid again) with the pid of the registry's slot
//! and writes one byte to the slot's descriptor: into D's file. Expected: D's
//! file stays empty (the registry is emptied in a forked child by a fork
//! generation, whatever its pid).
//!
//! P runs in a helper process (the test in a process of its own, role `p`:
//! see `evchild_testkit::own_process`) so that C and D may run ordinary
//! code. The test makes itself a child subreaper so that C, orphaned when P
//! exits, becomes its child and is reaped by it. Pids are forced as root, or
//! else in a user and pid namespace (`evchild_testkit::pid_reuse`); the test
//! skips, visibly, where neither works. This file changes the process's
//! subreaper attribute and forces pid reuse, so it holds nothing else.

use evchild_testkit as util;

use std::fs::OpenOptions;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::process::{Command, Stdio};

use evchild::{Backend, Forked, Hooks, Reactor, SigchldOwner};
use util::{Check, KillOnPanic, OwnProcess};

const NAME: &str = "inherited_handler_never_writes_into_a_strangers_file";
/// The role of the helper process P.
const P: &str = "p";
const DIR_ENV: &str = "EVCHILD_REGRESS_DIR";
const VARIANT_ENV: &str = "EVCHILD_REGRESS_VARIANT";

/// How P holds the handler, and how it forks C.
const VARIANTS: [&str; 4] = [
    // LibraryAlways (the handler from creation to drop), C by a plain fork.
    "library-always",
    // The same, C by the reactor's own `fork`.
    "library-always-reactor-fork",
    // Library mode with Scan / Peek: the handler while a child lives.
    "scan-live-child",
    "peek-live-child",
];

// C's exit codes.
const CLEAN: i32 = 0;
const WRITTEN: i32 = 1;
const NO_REUSE: i32 = 2;
const C_FAILED: i32 = 3;
/// D's exit code when it did not get P's pid.
const WRONG_PID: i32 = 100;

/// Makes the test process a child subreaper while it lives.
struct Subreaper;

impl Subreaper {
    fn new() -> Self {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes an integer argument.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
        Subreaper
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
    }
}

fn read_pid(path: &Path) -> libc::pid_t {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a pid")
}

/// Waits for our child `pid` (bounded); `None` on time-out (then killed and
/// reaped).
fn wait_bounded(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let end = Instant::now() + limit;
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Some(status);
        }
        assert!(rc == 0 || nix::errno::Errno::last() == nix::errno::Errno::EINTR);
        if Instant::now() >= end {
            // SAFETY: kill(2) and waitpid(2) of our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn inherited_handler_never_writes_into_a_strangers_file() {
    if util::own_process_role(NAME).as_deref() == Some(P) {
        return helper_p();
    }
    if !util::force_pids_or_skip(NAME) {
        return;
    }
    let check = Check::start();
    let _kill = KillOnPanic;
    let subreaper = Subreaper::new();
    let problems: Vec<String> = VARIANTS.iter().filter_map(|v| one_variant(v)).collect();
    drop(subreaper);
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    check.finish();
}

/// Runs P, C and D for one variant; returns the problem, if any.
fn one_variant(variant: &str) -> Option<String> {
    let dir = util::temp_dir("fork-handler");
    let ran = OwnProcess::new(NAME)
        .role(P)
        .env(DIR_ENV, dir.display().to_string())
        .env(VARIANT_ENV, variant)
        .limit(Duration::from_secs(60))
        .run();
    let (status, p_output) = (ran.status, ran.output);
    if status.code() != Some(0) {
        let _ = std::fs::remove_dir_all(&dir);
        return Some(format!(
            "{variant}: helper P failed ({status}); output:\n{p_output}"
        ));
    }
    // P is reaped: its pid is free for D.
    let c = read_pid(&dir.join("c_pid"));
    std::fs::write(dir.join("go"), "").expect("write go");
    let c_status = wait_bounded(c, Duration::from_secs(20));
    let victim = std::fs::metadata(dir.join("victim")).map_or(0, |m| m.len());
    let c_log = std::fs::read_to_string(dir.join("c.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let code = c_status.map(|s| {
        if libc::WIFEXITED(s) {
            libc::WEXITSTATUS(s)
        } else {
            -1
        }
    });
    match code {
        Some(CLEAN) => None,
        Some(NO_REUSE) => {
            util::skip!(
                "{variant}: D never got P's pid (another process took it); C's log:\n{c_log}"
            );
            None
        }
        Some(WRITTEN) => Some(format!(
            "{variant}: the evchild handler inherited by D (which has P's old pid) wrote \
             {victim} byte(s) into D's own file, through P's old wake-pipe descriptor number; \
             C's log:\n{c_log}"
        )),
        other => Some(format!(
            "{variant}: C failed ({other:?}); C's log:\n{c_log}\nP's output:\n{p_output}"
        )),
    }
}

/// P: holds the handler, forks C, and exits.
fn helper_p() {
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("the test's directory"));
    let variant = std::env::var(VARIANT_ENV).expect("the variant");
    let p = std::process::id();
    let hooks = match variant.as_str() {
        "library-always" | "library-always-reactor-fork" => Hooks::new(SigchldOwner::LibraryAlways),
        "scan-live-child" => Hooks::new(SigchldOwner::Library).backend(Backend::Scan),
        "peek-live-child" => Hooks::new(SigchldOwner::Library).backend(Backend::Peek),
        other => panic!("unknown variant {other:?}"),
    };
    let mut reactor = Reactor::<()>::new(hooks).expect("Reactor::new");
    if variant.ends_with("live-child") {
        // A live child: the reactor holds the handler (and its slot) now.
        reactor
            .spawn(
                Command::new("/bin/sleep")
                    .arg("30")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                |_, _, _| {},
            )
            .expect("spawn a live child");
    }
    println!("P {p} ({variant}): {reactor:?}");
    let forked = if variant == "library-always-reactor-fork" {
        // SAFETY: one test thread (libtest's main thread only waits for it);
        // C may run ordinary code.
        match unsafe { reactor.fork(|_, _, _| {}) }.expect("fork C") {
            Forked::Child => None,
            Forked::Parent(id) => Some(id.pid().as_raw()),
        }
    } else {
        // SAFETY: as above.
        match unsafe { nix::unistd::fork() }.expect("fork C") {
            nix::unistd::ForkResult::Child => None,
            nix::unistd::ForkResult::Parent { child } => Some(child.as_raw()),
        }
    };
    match forked {
        None => {
            drop(reactor);
            let code = c_main(&dir, p as libc::pid_t);
            // SAFETY: ends C without the harness.
            unsafe { libc::_exit(code) }
        }
        Some(child) => {
            std::fs::write(dir.join("c_pid"), child.to_string()).expect("write c_pid");
            // P's own children die with it (the sleeper); C lives on. P exits
            // now; its pid is freed once the test reaps it.
            let sleeper = reactor.children().find(|id| id.pid().as_raw() != child);
            if let Some(sleeper) = sleeper {
                reactor
                    .kill(sleeper, libc::SIGKILL)
                    .expect("kill the sleeper");
                util::reap_child(sleeper.pid());
            }
            std::process::exit(0)
        }
    }
}

/// C: waits until P is reaped, then forks D under P's pid.
fn c_main(dir: &Path, p: libc::pid_t) -> i32 {
    let log = |line: String| {
        use std::io::Write;
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("c.log"))
        {
            let _ = writeln!(f, "{line}");
        }
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !dir.join("go").exists() {
        if Instant::now() >= end {
            log("no go after 10 s".into());
            return C_FAILED;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let victim = dir.join("victim");
    for attempt in 0..20 {
        if let Err(e) = util::next_pid_will_be(p) {
            log(format!("ns_last_pid: {e}"));
            return C_FAILED;
        }
        // SAFETY: C is single-threaded.
        match unsafe { nix::unistd::fork() } {
            Err(e) => {
                log(format!("fork D: {e}"));
                return C_FAILED;
            }
            Ok(nix::unistd::ForkResult::Child) => {
                // SAFETY: ends D without the harness.
                unsafe { libc::_exit(d_main(&victim, p)) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                let code = match nix::sys::wait::waitpid(child, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
                    other => {
                        log(format!("D: {other:?}"));
                        return C_FAILED;
                    }
                };
                if code == WRONG_PID {
                    log(format!("attempt {attempt}: D got pid {child}, not {p}"));
                    continue;
                }
                if code != 0 {
                    log(format!("D failed: exit {code}"));
                    return C_FAILED;
                }
                let written = std::fs::metadata(&victim).map_or(0, |m| m.len());
                log(format!(
                    "D ({child} = P's pid): its file holds {written} byte(s)"
                ));
                return if written == 0 { CLEAN } else { WRITTEN };
            }
        }
    }
    NO_REUSE
}

/// D: has P's pid; opens its own file on the lowest free descriptors (which
/// include P's old wake-pipe numbers), and has a child that exits.
fn d_main(victim: &Path, p: libc::pid_t) -> i32 {
    if std::process::id() as libc::pid_t != p {
        return WRONG_PID;
    }
    for _ in 0..16 {
        match OpenOptions::new().create(true).append(true).open(victim) {
            Ok(file) => {
                // Stays open, without close-on-exec mattering: D execs nothing.
                let _ = file.into_raw_fd();
            }
            Err(_) => return 1,
        }
    }
    // SAFETY: D is single-threaded; E only calls `_exit`.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => unsafe { libc::_exit(0) },
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // E's SIGCHLD is handled before waitpid returns.
            match nix::sys::wait::waitpid(child, None) {
                Ok(_) => 0,
                Err(_) => 2,
            }
        }
        Err(_) => 3,
    }
}
