//! Helpers for the `regress_*` tests (issue 7): single-threaded helper
//! processes (the test binary re-executed for one `#[ignore]`d helper test,
//! with a role in the environment), and forced pid reuse through
//! `/proc/sys/kernel/ns_last_pid`.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that tells a re-executed test binary which
/// helper role to play.
pub const ROLE_VAR: &str = "EVCHILD_REGRESS_ROLE";

/// The role this process plays, if it is a helper.
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok().filter(|r| !r.is_empty())
}

/// Runs this test binary again for the one (ignored) test `helper`, on one
/// test thread, with `role` and `envs` in its environment and its output in
/// `log` (a file, so that grandchildren holding it open do not block us).
/// Returns the helper's exit status and its output.
#[track_caller]
pub fn run_helper(
    helper: &str,
    role: &str,
    envs: &[(&str, String)],
    log: &Path,
    limit: Duration,
) -> (ExitStatus, String) {
    let out = std::fs::File::create(log).expect("create helper log");
    let err = out.try_clone().expect("dup helper log");
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args([
            "--exact",
            helper,
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(ROLE_VAR, role)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn helper");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait helper") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait().expect("wait helper");
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("helper {role} ran longer than {limit:?} (killed: {status}); output:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status, std::fs::read_to_string(log).unwrap_or_default())
}

/// A fresh, empty directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("evchild-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

pub const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

/// Why pids cannot be forced here, if they cannot: not root, or no
/// `ns_last_pid`.
pub fn cannot_force_pids() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: cannot write ns_last_pid to force pid reuse".into());
    }
    match std::fs::OpenOptions::new().write(true).open(NS_LAST_PID) {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open {NS_LAST_PID} for writing: {e}")),
    }
}

/// Asks the kernel to give the next new process the pid `pid` (it writes
/// `pid - 1` to `ns_last_pid`). Another process of the machine may still
/// take it first: check the pid you got.
pub fn next_pid_will_be(pid: libc::pid_t) -> std::io::Result<()> {
    std::fs::write(NS_LAST_PID, (pid - 1).to_string())
}

/// Starts `command` so that it gets pid `pid` (a freed pid), retrying a few
/// times if another process of the machine took it first (each miss is
/// killed and reaped). `None` if it never worked.
pub fn spawn_with_pid(command: &mut Command, pid: libc::pid_t) -> Option<std::process::Child> {
    for _ in 0..20 {
        next_pid_will_be(pid).ok()?;
        let mut child = command.spawn().expect("spawn");
        if child.id() as libc::pid_t == pid {
            return Some(child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `t`, `T`, `Z`, ...),
/// or `None` if the process does not exist.
pub fn proc_state(pid: libc::pid_t) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Whether `pidfd_open` works here (the Pidfd backend is real, not the
/// fallback). Prints why not.
pub fn pidfd_or_skip(what: &str) -> bool {
    let pidfd = evchild::Reactor::<()>::new(
        evchild::Hooks::new(evchild::SigchldOwner::Library).backend(evchild::Backend::Pidfd),
    )
    .expect("Reactor::new")
    .backend()
        == Some(evchild::Backend::Pidfd);
    if !pidfd {
        println!("skipping {what} with the Pidfd backend: pidfd_open is not supported here");
    }
    pidfd
}
