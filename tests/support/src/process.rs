//! Processes seen from outside a reactor: children started with std (a
//! shell), and waits that reap, or only look at, a child.

use std::io::{ErrorKind, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use evchild::Pid;
use mio::unix::pipe::Receiver;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;

use crate::disposition::disposition;

/// Blocks until `pid` has exited, without reaping it
/// (`waitid(P_PID, pid, WEXITED | WNOWAIT)`): afterwards the child is a
/// zombie that only its owner will reap.
#[track_caller]
pub fn wait_zombie(pid: Pid) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let id = || Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw()));
    loop {
        match waitid(id(), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => return,
            Err(Errno::EINTR) => continue,
            Err(e) => panic!("waitid({pid}, WNOWAIT): {e}"),
        }
    }
}

/// Whether `pid` has exited (is a zombie), without reaping it
/// (`waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)`).
#[track_caller]
pub fn has_exited(pid: Pid) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw())), flags) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(e) => panic!("waitid({pid}): {e}"),
    }
}

/// Reaps `pid` (blocking `waitpid(pid, 0)`, retrying `EINTR`) and returns
/// its status.
#[track_caller]
pub fn reap_child(pid: Pid) -> ExitStatus {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid, writable int.
        let rc = unsafe { libc::waitpid(pid.as_raw(), &mut status, 0) };
        if rc == pid.as_raw() {
            return ExitStatus::from_raw(status);
        }
        assert_eq!(Errno::last(), Errno::EINTR, "waitpid({pid})");
    }
}

/// Reads a child's output from the non-blocking `pipe` (in a `Poll` of its
/// own) until `count` whole lines have arrived, and returns every line read;
/// panics at end of file or after `limit`.
#[track_caller]
pub fn read_lines(pipe: &mut Receiver, count: usize, limit: Duration) -> Vec<String> {
    const OUTPUT: Token = Token(0);
    let mut poll = Poll::new().expect("mio::Poll::new");
    poll.registry()
        .register(pipe, OUTPUT, Interest::READABLE)
        .expect("register pipe");
    let mut events = Events::with_capacity(4);
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 256];
    while seen.iter().filter(|&&b| b == b'\n').count() < count {
        match pipe.read(&mut buf) {
            Ok(0) => panic!("EOF after {:?}", String::from_utf8_lossy(&seen)),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "timed out waiting for {count} lines: {:?}",
                    String::from_utf8_lossy(&seen)
                );
                match poll.poll(&mut events, Some(left)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("poll: {e}"),
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    poll.registry().deregister(pipe).expect("deregister");
    String::from_utf8(seen)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts `/bin/sh -c script` with `std::process::Command`, stdio to
/// `/dev/null`: a child of the process that evchild did not start.
#[track_caller]
pub fn shell(script: &str) -> Child {
    Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn /bin/sh")
}

/// Whether `pid` is an unreaped child of this process (`waitid(P_PID,
/// WNOWAIT)`, which reaps nothing).
pub fn is_our_child(pid: Pid) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw())), flags) != Err(Errno::ECHILD)
}

/// Waits until `pid` is no longer an unreaped child of this process (the
/// kernel reaped it, `SIGCHLD` being ignored, or someone else did). Asks
/// `waitid(P_PID, WNOWAIT)`, which reaps nothing and, unlike `kill(pid, 0)`,
/// cannot be fooled by another process that got the pid since.
#[track_caller]
pub fn wait_not_our_child(pid: Pid) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let deadline = Instant::now() + Duration::from_secs(10);
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    let id = || Id::Pid(nix::unistd::Pid::from_raw(pid.as_raw()));
    while waitid(id(), flags) != Err(Errno::ECHILD) {
        if Instant::now() >= deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
            let disposition = disposition();
            panic!("child {pid} never went away: /proc stat {stat:?}, SIGCHLD {disposition:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `sh -c SCRIPT` with no stdio (nothing inherited from the test harness).
pub fn quiet_sh(script: &str) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// [`shell`] `exit code`.
#[track_caller]
pub fn sh_exit(code: i32) -> Child {
    shell(&format!("exit {code}"))
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
