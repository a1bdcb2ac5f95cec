//! Forcing pid reuse: the kernel gives the next new process of a pid
//! namespace the pid after the one written to that namespace's
//! `/proc/sys/kernel/ns_last_pid`.
//!
//! Writing it needs `CAP_SYS_ADMIN` (or `CAP_CHECKPOINT_RESTORE`) in the
//! user namespace that owns the writer's pid namespace (the file is mode
//! 0666; the kernel checks in its handler). So there are two ways:
//!
//! * **as root** (of the machine's namespaces): write the real
//!   `ns_last_pid`, in the test process itself. Other processes of the
//!   machine may take the pid first: [`spawn_with_pid`] retries, and a test
//!   that never gets it skips.
//! * **in a user and pid namespace**, without privilege where the kernel
//!   lets users create user namespaces: the test runs in its own process
//!   ([`OwnProcess::in_new_pid_namespace`]), which is pid 1 of a new pid
//!   namespace owned by a new user namespace in which it is root, with a
//!   `/proc` of that pid namespace mounted over `/proc` (in a new mount
//!   namespace), like `unshare --user --map-root-user --pid --fork
//!   --mount-proc`. Its `ns_last_pid` is writable, no other process of the
//!   machine allocates pids there, and `/proc/<pid>` names its pids.
//!
//! [`force_pids_or_skip`] picks: root's `ns_last_pid` when root, else the
//! namespace, else a visible skip. [`PID_NS_VAR`]` = 1` forces the namespace
//! path (to test it as root).
//!
//! [`OwnProcess::in_new_pid_namespace`]: crate::OwnProcess::in_new_pid_namespace

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::check::Check;
use crate::own_process::{in_own_process, OwnProcess};

pub const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

/// `1` (or anything but `0` and empty): force the namespace path even as
/// root.
pub const PID_NS_VAR: &str = "EVCHILD_TEST_PID_NS";

/// How this process can force pid reuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForcePids {
    /// Here, by writing `ns_last_pid` (root, or already in the namespace).
    Here,
    /// In a process of its own, in a new user and pid namespace.
    InNamespace,
    /// Not at all, and why.
    No(String),
}

/// How this process can force pid reuse (see the module docs).
pub fn how_to_force_pids() -> ForcePids {
    let want_ns = std::env::var(PID_NS_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
    // In the namespace (pid 1 there, `ns_last_pid` writable), or root.
    // SAFETY: getpid has no preconditions.
    let in_ns = unsafe { libc::getpid() } == 1;
    let here = cannot_force_pids();
    if here.is_none() && (in_ns || !want_ns) {
        return ForcePids::Here;
    }
    match namespace_works() {
        Ok(()) => ForcePids::InNamespace,
        Err(ns) => ForcePids::No(format!(
            "{}; and in a user and pid namespace: {ns}",
            here.unwrap_or_else(|| format!("{PID_NS_VAR} asks for a namespace"))
        )),
    }
}

/// The gate of a test that forces pid reuse, named `name`: `true` if the
/// test's body runs here (as root, or this is its own process in the
/// namespace); `false` if the test must return: it ran in its own process
/// in a new user and pid namespace (and passed, or this panics), or it is
/// skipped ([`skip!`](crate::skip!)), pids cannot be forced.
#[track_caller]
pub fn force_pids_or_skip(name: &str) -> bool {
    if in_own_process(name) {
        assert_eq!(
            cannot_force_pids(),
            None,
            "{name} in its own process, in the namespace"
        );
        return true;
    }
    // Under the lock: the probe of the namespace starts a child, which a
    // test of this binary that reaps every child must not see.
    let check = Check::start();
    let how = how_to_force_pids();
    let here = match how {
        ForcePids::Here => true,
        ForcePids::InNamespace => {
            OwnProcess::new(name)
                .in_new_pid_namespace()
                .run()
                .assert_passed();
            false
        }
        ForcePids::No(reason) => {
            crate::skip!("cannot force pid reuse: {reason}");
            false
        }
    };
    check.finish();
    here
}

/// Why pids cannot be forced in this process, if they cannot: not root (of
/// the pid namespace's user namespace), or no writable `ns_last_pid`.
pub fn cannot_force_pids() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: cannot write ns_last_pid".into());
    }
    match std::fs::OpenOptions::new().write(true).open(NS_LAST_PID) {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open {NS_LAST_PID} for writing: {e}")),
    }
}

/// Whether a process in a new user and pid namespace can write its
/// `ns_last_pid` (tried once: `sh` writes back the value it reads).
fn namespace_works() -> Result<(), String> {
    static WORKS: OnceLock<Result<(), String>> = OnceLock::new();
    WORKS
        .get_or_init(|| {
            let mut sh = Command::new("/bin/sh");
            // `cat`, not `read`: a sysctl file reads as end of file at any
            // offset but 0, so `read` (a byte at a time) never sees a newline.
            let script = format!("n=$(cat {NS_LAST_PID}) && echo $n > {NS_LAST_PID}");
            sh.args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            crate::own_process::namespace_command(&mut sh);
            match sh.output() {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Err(e.to_string()),
            }
        })
        .clone()
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
pub fn spawn_with_pid(command: &mut Command, pid: libc::pid_t) -> Option<Child> {
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
