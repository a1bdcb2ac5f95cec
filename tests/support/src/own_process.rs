//! A test that must own the whole process re-executes its own test binary
//! for itself alone: the one mechanism for process-wide, one-way subjects
//! (see the crate docs, *Isolation*).
//!
//! The re-executed binary runs `--exact NAME --test-threads=1` with
//! [`OWN_PROCESS_VAR`]` = NAME` (and [`ROLE_VAR`] if the test gave a role):
//! the same test function starts again there, finds it is in its own process
//! ([`in_own_process`], [`own_process_role`]) and does the work. It is the
//! only test running, on the only thread besides libtest's main thread,
//! which waits in a channel receive holding no lock: so a child it forks may
//! allocate and use evchild.
//!
//! The output goes to a file (grandchildren that hold it open do not block
//! the test), and the process is killed after a time limit (a hang guard,
//! not a measure of speed: 120 s unless the test says otherwise).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::io::Write;

use crate::check::Check;
use crate::skip::SKIP_PREFIX;

/// Names the test a re-executed test binary runs.
pub const OWN_PROCESS_VAR: &str = "EVCHILD_TEST_ISOLATED";

/// The role the re-executed test plays, if it is a helper of the test in the
/// parent process rather than the test itself.
pub const ROLE_VAR: &str = "EVCHILD_TEST_ROLE";

/// Whether this process is the test `name`'s own process (whatever its
/// role).
pub fn in_own_process(name: &str) -> bool {
    std::env::var(OWN_PROCESS_VAR).as_deref() == Ok(name)
}

/// The role of this process, if it is the test `name`'s own process started
/// with [`OwnProcess::role`].
pub fn own_process_role(name: &str) -> Option<String> {
    if !in_own_process(name) {
        return None;
    }
    std::env::var(ROLE_VAR).ok().filter(|r| !r.is_empty())
}

/// Runs the calling test, `name`, alone in a fresh process of this test
/// binary: for tests whose subject is process-wide and one-way (evchild's
/// `SIGCHLD` handler stays installed once taken, a foreign handler installed
/// before it is chained only if evchild never installed in that process).
///
/// In the test process: takes [`Check::start`] (so no other test of the
/// binary has children meanwhile), runs the test in its own process, asserts
/// it passed (showing its output if not), and returns `false`: the test
/// returns. In the test's own process it returns `true`: the test runs its
/// body there.
#[track_caller]
pub fn isolated(name: &str) -> bool {
    if in_own_process(name) {
        return true;
    }
    let check = Check::start();
    OwnProcess::new(name).run().assert_passed();
    check.finish();
    false
}

/// A run of one test of this binary in a process of its own (see the module
/// docs). Build it, then [`run`](OwnProcess::run) it.
#[must_use]
pub struct OwnProcess {
    name: String,
    role: Option<String>,
    envs: Vec<(String, String)>,
    limit: Duration,
    new_pid_namespace: bool,
}

/// How the test's own process ended, and what it printed.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub output: String,
}

impl Ran {
    /// Asserts the test passed in its own process: exit 0 and libtest's
    /// `1 passed` (so a name that matched no test cannot pass).
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(
            self.status.success() && self.output.contains("1 passed"),
            "the test in its own process: {}\n--- output\n{}",
            self.status,
            self.output
        );
    }
}

impl OwnProcess {
    /// The test `name` of this binary (its full name, as libtest lists it).
    pub fn new(name: &str) -> Self {
        OwnProcess {
            name: name.to_owned(),
            role: None,
            envs: Vec::new(),
            limit: Duration::from_secs(120),
            new_pid_namespace: false,
        }
    }

    /// The process is a helper playing `role` ([`own_process_role`]), not
    /// the test itself.
    pub fn role(mut self, role: &str) -> Self {
        self.role = Some(role.to_owned());
        self
    }

    /// Adds a variable to the process's environment.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.envs.push((key.to_owned(), value.into()));
        self
    }

    /// Kills the process if it runs longer than `limit` (a hang guard).
    pub fn limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Runs the process as pid 1 of a new pid namespace, owned by a new user
    /// namespace in which it is root, with a `/proc` of its own (see
    /// [`crate::pid_reuse`]). Needs no privilege where the kernel lets
    /// users create user namespaces.
    pub fn in_new_pid_namespace(mut self) -> Self {
        self.new_pid_namespace = true;
        self
    }

    /// Runs it, waits for it (killing it after the limit: then it panics,
    /// showing the output), and returns how it ended.
    #[track_caller]
    pub fn run(self) -> Ran {
        let log = temp_dir(&format!("own-{}", self.name)).join("output");
        let out = std::fs::File::create(&log).expect("create the output file");
        let err = out.try_clone().expect("dup the output file");
        let mut command = Command::new(std::env::current_exe().expect("current_exe"));
        command
            .args(["--exact", &self.name, "--test-threads=1", "--nocapture"])
            .env(OWN_PROCESS_VAR, &self.name)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        match &self.role {
            Some(role) => command.env(ROLE_VAR, role),
            None => command.env_remove(ROLE_VAR),
        };
        if self.new_pid_namespace {
            namespace::enter_on_exec(&mut command);
        }
        let mut child = command.spawn().expect("re-execute the test binary");
        let deadline = Instant::now() + self.limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the test's process") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let status = child.wait().expect("wait for the test's process");
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                let _ = std::fs::remove_dir_all(log.parent().expect("a directory"));
                panic!(
                    "{} ran longer than {:?} in its own process (killed: {status}); output:\n{output}",
                    self.name, self.limit
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(log.parent().expect("a directory"));
        // Its skips show here too (its skip log, if any, has them already).
        for line in output.lines().filter(|l| l.starts_with(SKIP_PREFIX)) {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        Ran { status, output }
    }
}

/// Makes `command` run in a new user, pid and mount namespace, as
/// [`OwnProcess::in_new_pid_namespace`] does.
pub fn namespace_command(command: &mut Command) {
    namespace::enter_on_exec(command);
}

/// A fresh, empty directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("evchild-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Entering a new user, pid and mount namespace between `fork` and `exec`.
mod namespace {
    use super::*;

    /// Everything the forked child needs, prepared before the fork (the
    /// child of a multithreaded process may only make async-signal-safe
    /// calls: no allocation).
    struct Prepared {
        setgroups: CString,
        uid_map: CString,
        gid_map: CString,
        deny: CString,
        uid_line: CString,
        gid_line: CString,
        proc_: CString,
        proc_dir: CString,
        root: CString,
    }

    /// Makes `command`'s process enter the namespaces before it executes:
    ///
    /// 1. `unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS)`: a user
    ///    namespace, and a pid and a mount namespace it owns;
    /// 2. maps root of the new user namespace to our uid and gid (`deny` to
    ///    `setgroups` first, as an unprivileged process must), so the
    ///    process has every capability over the new namespaces;
    /// 3. forks: the child is pid 1 of the new pid namespace. The parent
    ///    closes every other descriptor (so the exec-status pipe of
    ///    `Command::spawn` closes when the child executes), waits for it and
    ///    exits with its status (`128 + signal` if it was killed);
    /// 4. the child dies with the parent (`PR_SET_PDEATHSIG`), makes the
    ///    mounts private, mounts a `/proc` of the new pid namespace over
    ///    `/proc` (so `/proc/<pid>` and `/proc/sys/kernel/ns_last_pid` are
    ///    the namespace's), and goes on to execute the test binary.
    ///
    /// Every call after the fork is a raw system call (async-signal-safe).
    pub(super) fn enter_on_exec(command: &mut Command) {
        // SAFETY: getuid and getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let c = |s: &str| CString::new(s).expect("no NUL");
        let p = Prepared {
            setgroups: c("/proc/self/setgroups"),
            uid_map: c("/proc/self/uid_map"),
            gid_map: c("/proc/self/gid_map"),
            deny: c("deny"),
            uid_line: c(&format!("0 {uid} 1")),
            gid_line: c(&format!("0 {gid} 1")),
            proc_: c("proc"),
            proc_dir: c("/proc"),
            root: c("/"),
        };
        // SAFETY: the closure makes raw system calls only, on memory
        // prepared before the fork (see above).
        unsafe {
            command.pre_exec(move || enter(&p));
        }
    }

    fn check(rc: libc::c_int) -> std::io::Result<()> {
        if rc == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Writes `text` to the file `path` (one `write(2)`). Async-signal-safe.
    fn write_file(path: &CString, text: &CString) -> std::io::Result<()> {
        // SAFETY: a valid C string path; the descriptor is closed below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        check(fd)?;
        let bytes = text.as_bytes();
        // SAFETY: `bytes` is valid for its length.
        let rc = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        let result = if rc == bytes.len() as isize {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        };
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        result
    }

    fn enter(p: &Prepared) -> std::io::Result<()> {
        // SAFETY: unshare(2) with namespace flags; the process is
        // single-threaded (a forked child), as CLONE_NEWUSER requires.
        check(unsafe {
            libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS)
        })?;
        write_file(&p.setgroups, &p.deny)?;
        write_file(&p.uid_map, &p.uid_line)?;
        write_file(&p.gid_map, &p.gid_line)?;
        // SAFETY: the process is single-threaded; both sides make raw system
        // calls only.
        let pid = unsafe { libc::fork() };
        check(pid)?;
        if pid > 0 {
            // SAFETY: close_range(2) of every descriptor above stderr: this
            // process only waits from now on.
            if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == -1 {
                // Before Linux 5.9: one at a time.
                for fd in 3..1024 {
                    // SAFETY: close(2) is async-signal-safe; see above.
                    unsafe { libc::close(fd) };
                }
            }
            let mut status = 0;
            loop {
                // SAFETY: `status` is a valid out-pointer.
                let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
                if rc == pid {
                    break;
                }
                if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    // SAFETY: _exit is async-signal-safe.
                    unsafe { libc::_exit(125) };
                }
            }
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            // SAFETY: _exit is async-signal-safe; this process never executes.
            unsafe { libc::_exit(code) };
        }
        // SAFETY: prctl with an integer argument.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
        // SAFETY: mount(2) with valid C strings or nulls.
        check(unsafe {
            libc::mount(
                std::ptr::null(),
                p.root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        // SAFETY: as above.
        check(unsafe {
            libc::mount(
                p.proc_.as_ptr(),
                p.proc_dir.as_ptr(),
                p.proc_.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            )
        })
    }
}
