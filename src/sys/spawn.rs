//! The start of a [`Prepared`](crate::Prepared) child: `clone(2)` with
//! `CLONE_VM | CLONE_VFORK | CLONE_FILES` (and `CLONE_PIDFD` when the
//! reactor watches children through pidfds), on a stack of its own, and
//! the async-signal-safe child function that makes the child what its plan
//! says and `execve`s.
//!
//! Cost: the parent makes five system calls around the child (two
//! `rt_sigprocmask`, `clone`, and nothing else: no `pidfd_open`, no pipe to
//! learn of an exec failure, since the child writes its `errno` into the
//! parent's memory and vfork semantics make the parent wait until the child
//! has exec'd or exited). The child copies no page table (`CLONE_VM`) and,
//! because the descriptor table is shared at the clone (`CLONE_FILES`) and
//! then unshared with `close_range(low, ~0, CLOSE_RANGE_UNSHARE)`, copies
//! only the descriptors below `low` (those it needs), whatever the number
//! the parent holds. Fallback: before Linux 5.9 (`close_range` answers
//! `ENOSYS`, or `EINVAL` for the flag), `unshare(CLONE_FILES)`, which
//! copies the whole table, as a `fork` or `posix_spawn` would.
//!
//! Also here: the owned pieces a `Prepared` keeps between starts that hold
//! raw pointers (the argument and environment arrays, the child's stack),
//! and the descriptor calls of its slots (`open("/dev/null")`,
//! `F_DUPFD_CLOEXEC`, `dup3`, `pipe2`).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use crate::Pid;

/// The size of the kernel's signal set (`_NSIG / 8`) on the architectures
/// evchild builds for (x86, x86-64, arm, aarch64, riscv, powerpc, s390x).
const KERNEL_SIGSET: usize = 8;

/// The bytes of the child's stack, above its guard page.
const STACK_SIZE: usize = 64 * 1024;

/// A `NULL`-terminated array of C strings, as `execve` takes for `argv`
/// and `envp`: the strings and the pointer array are built once and
/// patched in place (one string replaced, appended or removed).
pub(crate) struct CStrings {
    strings: Vec<CString>,
    /// `strings[i].as_ptr()` for each `i`, then a null pointer.
    ptrs: Vec<*const c_char>,
}

// SAFETY: the pointers point into the heap buffers of `strings`, which this
// value owns (a `CString` keeps its buffer where it is when it is moved),
// and are only read, by the child that this value's owner starts while it
// holds `&mut`. Sending the whole to another thread moves the owner of
// both together.
unsafe impl Send for CStrings {}
// SAFETY: shared access only reads (the pointers are never dereferenced
// through `&self` but by a start, which needs `&mut` of the owner).
unsafe impl Sync for CStrings {}

impl CStrings {
    pub(crate) fn new(strings: Vec<CString>) -> Self {
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(ptr::null());
        CStrings { strings, ptrs }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &CStr> {
        self.strings.iter().map(|s| s.as_c_str())
    }

    /// Replaces string `index` (which must exist) and its pointer.
    pub(crate) fn set(&mut self, index: usize, string: CString) {
        self.ptrs[index] = string.as_ptr();
        self.strings[index] = string;
    }

    /// Appends a string (before the null pointer).
    pub(crate) fn push(&mut self, string: CString) {
        let last = self.ptrs.len() - 1;
        self.ptrs.insert(last, string.as_ptr());
        self.strings.push(string);
    }

    /// Removes string `index` (which must exist) and its pointer.
    pub(crate) fn remove(&mut self, index: usize) {
        self.ptrs.remove(index);
        self.strings.remove(index);
    }

    /// The array, for `execve`.
    pub(crate) fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

impl std::fmt::Debug for CStrings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.strings.iter()).finish()
    }
}

/// The stack the child function runs on: `STACK_SIZE` bytes mapped once,
/// with a `PROT_NONE` guard page below them, so that an overflow faults
/// instead of writing into the parent's memory (which the child shares).
pub(crate) struct ChildStack {
    base: *mut c_void,
    len: usize,
    guard: usize,
}

// SAFETY: the mapping belongs to this value alone; it is used only by a
// child started while its owner holds `&mut`, and unmapped by its drop.
unsafe impl Send for ChildStack {}
// SAFETY: `&ChildStack` gives no access to the memory.
unsafe impl Sync for ChildStack {}

impl ChildStack {
    /// `mmap` of the stack and its guard page.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: sysconf takes and returns integers.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let guard = usize::try_from(page).unwrap_or(4096).max(4096);
        let len = STACK_SIZE + guard;
        // SAFETY: an anonymous private mapping at an address the kernel
        // chooses: it touches no existing memory.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len, guard };
        // SAFETY: the first page of the mapping we just made; the stack
        // grows down towards it.
        if unsafe { libc::mprotect(base, guard, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error()); // `stack` unmaps it
        }
        Ok(stack)
    }

    /// The highest address of the stack (page-aligned, so 16-byte aligned).
    fn top(&mut self) -> *mut c_void {
        // SAFETY: one past the end of our own mapping, which `add` allows.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, not used after this (no child runs on it:
        // a start returns only once its child has exec'd or exited).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

impl std::fmt::Debug for ChildStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} KiB + {} B guard",
            (self.len - self.guard) / 1024,
            self.guard
        )
    }
}

/// One descriptor the child gets: `source` (a descriptor of the parent,
/// below the plan's `low`) as `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) source: c_int,
    pub(crate) target: c_int,
}

/// Which step of the child failed (with `errno` saved), for the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Step {
    Files = 1,
    ParentDeath = 2,
    ProcessGroup = 3,
    Chdir = 4,
    Descriptors = 5,
    Exec = 6,
    /// `SIGCHLD` is ignored or has `SA_NOCLDWAIT` (the check the parent
    /// left to the child, which reads every disposition anyway).
    SigchldIgnored = 7,
    SigchldNoCldWait = 8,
}

/// The error [`clone_exec`] returns (inside an `io::Error`) when the child
/// found `SIGCHLD` ignored (`ignored`) or with `SA_NOCLDWAIT` (not
/// `ignored`) and stopped before `execve`: nothing ran.
#[derive(Debug)]
pub(crate) struct SigchldRefused {
    pub(crate) ignored: bool,
}

impl SigchldRefused {
    /// The refusal `error` carries, if it is one.
    pub(crate) fn of(error: &io::Error) -> Option<&SigchldRefused> {
        error.get_ref()?.downcast_ref()
    }
}

impl std::fmt::Display for SigchldRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SIGCHLD is ignored or has SA_NOCLDWAIT")
    }
}

impl std::error::Error for SigchldRefused {}

/// Everything the child function reads, and the two fields it writes on
/// failure: pointers into the `Prepared`'s built form (which outlives the
/// start: the parent is suspended until the child has exec'd or exited),
/// made on the parent's stack per start, allocating nothing.
#[derive(Debug)]
pub(crate) struct ChildPlan {
    pub(crate) path: *const c_char,
    pub(crate) argv: *const *const c_char,
    pub(crate) envp: *const *const c_char,
    /// The working directory, or null.
    pub(crate) dir: *const c_char,
    /// `setpgid(0, pgid)` if `Some`.
    pub(crate) pgid: Option<libc::pid_t>,
    /// The parent-death signal (`prctl(PR_SET_PDEATHSIG)`) and the pid of
    /// the parent it is about: `(signal, master)`; signal 0 for none.
    pub(crate) parent_death: (c_int, libc::pid_t),
    /// 1 + the highest descriptor the child needs (at least 3).
    pub(crate) low: c_int,
    pub(crate) moves: *const Move,
    pub(crate) move_count: usize,
    /// Whether a move's source is another move's target: then every source
    /// is first duplicated above all of them.
    pub(crate) two_phase: bool,
    /// Above every source and target: where the two-phase copies go
    /// (move `i`'s at `high + i`, close-on-exec).
    pub(crate) high: c_int,
    /// Descriptors 3.. that are no move's target: closed in the child
    /// (`[first, last]` pairs), so it has nothing but its stdio and the
    /// passed descriptors.
    pub(crate) closes: *const [u32; 2],
    pub(crate) close_count: usize,
    /// Whether the child checks the `SIGCHLD` disposition before anything
    /// else it does (the parent made no query): ignored or `SA_NOCLDWAIT`,
    /// it stops before `execve` ([`Step::SigchldIgnored`]).
    pub(crate) check_sigchld: bool,
    /// The parent thread's signal mask, restored in the child (set by
    /// [`clone_exec`]).
    old_mask: u64,
    /// The child's `errno` and failed [`Step`] (0: none).
    errno: c_int,
    step: c_int,
}

impl ChildPlan {
    /// A plan with nothing to do but `execve(path, argv, envp)`.
    pub(crate) fn new(
        path: *const c_char,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> Self {
        ChildPlan {
            path,
            argv,
            envp,
            dir: ptr::null(),
            pgid: None,
            parent_death: (0, 0),
            low: 3,
            moves: ptr::null(),
            move_count: 0,
            two_phase: false,
            high: 3,
            closes: ptr::null(),
            close_count: 0,
            check_sigchld: false,
            old_mask: 0,
            errno: 0,
            step: 0,
        }
    }
}

/// The errno of the calling thread.
fn errno() -> c_int {
    // SAFETY: __errno_location returns the calling thread's errno slot,
    // always valid. Async-signal-safe (a TLS address).
    unsafe { *libc::__errno_location() }
}

/// `rt_sigprocmask(SIG_SETMASK, new, old)`, raw: glibc's wrapper would
/// refuse to block its internal signals, and the child must not run any
/// handler of the parent's (it would run in the parent's memory).
/// Async-signal-safe.
fn set_mask(new: &u64, old: *mut u64) -> c_int {
    // SAFETY: `new` is a valid 8-byte set and `old` null or a valid 8-byte
    // out-pointer; the kernel reads/writes KERNEL_SIGSET bytes.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            new as *const u64,
            old,
            KERNEL_SIGSET,
        ) as c_int
    }
}

/// Records the failure and ends the child: the parent reads `errno` and
/// `step` once `clone` returns. Async-signal-safe.
fn fail(plan: &mut ChildPlan, step: Step) -> ! {
    plan.errno = errno();
    plan.step = step as c_int;
    // SAFETY: _exit(2) ends the child at once; it runs no handler of the
    // parent's (atexit, destructors), which would run in its memory.
    unsafe { libc::_exit(127) }
}

/// Ends the child before `execve` for a refused `SIGCHLD` disposition
/// (nothing of the command ran). Async-signal-safe.
fn refuse(plan: &mut ChildPlan, step: Step) -> ! {
    plan.errno = 0;
    plan.step = step as c_int;
    // SAFETY: as in `fail`.
    unsafe { libc::_exit(127) }
}

/// The child: runs on [`ChildStack`] in the parent's memory (`CLONE_VM`)
/// while the parent thread is suspended (`CLONE_VFORK`), with every signal
/// blocked, until it `execve`s or `_exit`s.
///
/// Async-signal-safety, step by step: it calls only raw system calls
/// through libc (`close_range`/`unshare`, `sigaction`, `rt_sigprocmask`,
/// `prctl`, `getppid`, `kill`, `setpgid`, `chdir`, `fcntl`, `dup2`,
/// `execve`, `_exit`), all async-signal-safe; it allocates nothing, takes
/// no lock, does no Rust I/O, and cannot panic (no indexing, no checked
/// arithmetic that can overflow, no `unwrap`: raw pointers are read with
/// counts the parent computed). The only memory it writes is its own stack,
/// the two failure fields of the plan, and `errno`: glibc's `errno` is a
/// thread-local of the *parent thread* (the child inherits its thread
/// pointer), which is suspended, and whose `errno` after the start is
/// whatever the start's last call left, as with glibc's `posix_spawn`.
/// Until the `close_range` (step 1) the descriptor table is the parent's
/// own: nothing is opened, closed or duplicated before it.
///
/// 1. Unshares the descriptor table, copying only the descriptors below
///    `low` (`unshare(CLONE_FILES)` before Linux 5.9: a full copy).
/// 2. With `check_sigchld`, stops (before anything the child would do)
///    if `SIGCHLD` is ignored or has `SA_NOCLDWAIT`: its disposition is a
///    copy of the parent's at the clone (no `CLONE_SIGHAND`), and this loop
///    reads it anyway, so the parent's own query is saved.
///    Resets every handled signal to `SIG_DFL` (a handler of the parent
///    must never run here, in its memory), `SIGPIPE` too (as std does for
///    its children; Rust programs ignore it), leaves ignored ones ignored,
///    and restores the parent thread's signal mask (as std: the child
///    inherits it).
/// 3. The parent-death signal, the process group, the working directory.
/// 4. The descriptors: each source to its target (`dup2`; a source that is
///    its own target has `FD_CLOEXEC` cleared), then every other
///    descriptor from 3 up is closed.
/// 5. `execve`.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `&mut ChildPlan` that `clone_exec` passed, alive
    // on the suspended parent's stack until the child execs or exits; the
    // parent does not touch it meanwhile.
    let plan = unsafe { &mut *arg.cast::<ChildPlan>() };

    // 1. All of this function's blocks are one raw system call each, with
    // integer arguments or pointers into the plan, which the parent built
    // valid (NUL-terminated strings, null-terminated arrays, `move_count`
    // moves, `close_count` ranges) and keeps alive ("see above" below).
    // SAFETY: close_range takes integers only.
    let unshared = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            plan.low as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        )
    };
    if unshared != 0 {
        let e = errno();
        if e != libc::ENOSYS && e != libc::EINVAL {
            fail(plan, Step::Files);
        }
        // SAFETY: see above.
        if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
            fail(plan, Step::Files);
        }
    }

    // 2.
    let mut sig: c_int = 1;
    while sig < 65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: see above; an all-zero sigaction is valid.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: see above (glibc refuses its internal signals with
            // EINVAL: they are left as they are, and the kernel resets
            // handled ones at exec).
            let queried = unsafe { libc::sigaction(sig, ptr::null(), &mut old) } == 0;
            if queried && sig == libc::SIGCHLD && plan.check_sigchld {
                if old.sa_sigaction == libc::SIG_IGN {
                    refuse(plan, Step::SigchldIgnored);
                }
                if old.sa_flags & libc::SA_NOCLDWAIT != 0 {
                    refuse(plan, Step::SigchldNoCldWait);
                }
            }
            let handled = old.sa_sigaction != libc::SIG_IGN && old.sa_sigaction != libc::SIG_DFL;
            if queried && (handled || sig == libc::SIGPIPE) {
                // SAFETY: see above.
                let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
                dfl.sa_sigaction = libc::SIG_DFL;
                // SAFETY: see above.
                unsafe { libc::sigaction(sig, &dfl, ptr::null_mut()) };
            }
        }
        sig += 1;
    }
    let mask = plan.old_mask;
    set_mask(&mask, ptr::null_mut());

    // 3.
    let (signal, master) = plan.parent_death;
    if signal != 0 {
        // SAFETY: see above.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) } != 0 {
            fail(plan, Step::ParentDeath);
        }
        // The master may have died before the prctl: then now.
        // SAFETY: see above.
        if unsafe { libc::getppid() } != master {
            // SAFETY: see above.
            unsafe { libc::kill(libc::getpid(), signal) };
        }
    }
    if let Some(pgid) = plan.pgid {
        // SAFETY: see above.
        if unsafe { libc::setpgid(0, pgid) } != 0 {
            fail(plan, Step::ProcessGroup);
        }
    }
    // SAFETY: see above.
    if !plan.dir.is_null() && unsafe { libc::chdir(plan.dir) } != 0 {
        fail(plan, Step::Chdir);
    }

    // 4.
    let mut i = 0;
    while plan.two_phase && i < plan.move_count {
        // SAFETY: see above; `i < move_count`.
        let m = unsafe { *plan.moves.add(i) };
        // Move `i`'s source first goes to `high + i`, above every source
        // and target (close-on-exec: closed at exec).
        // SAFETY: see above.
        if unsafe {
            libc::dup3(
                m.source,
                plan.high.wrapping_add(i as c_int),
                libc::O_CLOEXEC,
            )
        } < 0
        {
            fail(plan, Step::Descriptors);
        }
        i += 1;
    }
    let mut i = 0;
    while i < plan.move_count {
        // SAFETY: see above; `i < move_count`.
        let m = unsafe { *plan.moves.add(i) };
        let source = if plan.two_phase {
            plan.high.wrapping_add(i as c_int)
        } else {
            m.source
        };
        let done = if source == m.target {
            // SAFETY: see above.
            unsafe { libc::fcntl(m.target, libc::F_SETFD, 0) }
        } else {
            // SAFETY: see above.
            unsafe { libc::dup2(source, m.target) }
        };
        if done < 0 {
            fail(plan, Step::Descriptors);
        }
        i += 1;
    }
    let mut i = 0;
    while i < plan.close_count {
        // SAFETY: see above; `i < close_count`.
        let [first, last] = unsafe { *plan.closes.add(i) };
        // SAFETY: see above. Failure (ENOSYS before 5.9) leaves them
        // open: close-on-exec ones close at exec anyway.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        i += 1;
    }

    // 5. SAFETY: see above.
    unsafe { libc::execve(plan.path, plan.argv, plan.envp) };
    fail(plan, Step::Exec)
}

/// Starts the child `plan` describes on `stack`; with `pidfd`, asks the
/// kernel for its pidfd (`CLONE_PIDFD`, close-on-exec).
///
/// Returns once the child has exec'd (`Ok`) or failed (`Err` with the
/// child's `errno`, after the child has been reaped by pid, so no zombie
/// is left; the caller has marked the start as in flight, so no reap-all
/// reactor takes it first) or could not be created (`clone`'s error).
/// Every signal is blocked in the calling thread around the clone, and its
/// mask restored after.
pub(crate) fn clone_exec(
    plan: &mut ChildPlan,
    stack: &mut ChildStack,
    pidfd: bool,
) -> io::Result<(Pid, Option<OwnedFd>)> {
    let all: u64 = !0;
    let mut old: u64 = 0;
    if set_mask(&all, &mut old) != 0 {
        return Err(io::Error::last_os_error());
    }
    plan.old_mask = old;
    plan.errno = 0;
    plan.step = 0;
    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD;
    if pidfd {
        flags |= libc::CLONE_PIDFD;
    }
    let mut raw_pidfd: c_int = -1;
    let top = stack.top();
    // SAFETY: `child` is async-signal-safe and runs on `stack`, our own
    // mapping, which nothing else uses during the call; `plan` lives on
    // our stack until the call returns, which (CLONE_VFORK) is after the
    // child has exec'd or exited, so nothing of ours is used concurrently.
    // With CLONE_PIDFD the kernel stores the pidfd in `raw_pidfd` (the
    // parent_tid argument). Every signal is blocked, so no handler runs in
    // the child before it resets them.
    let pid = unsafe {
        libc::clone(
            child,
            top,
            flags,
            (plan as *mut ChildPlan).cast(),
            &mut raw_pidfd as *mut c_int,
        )
    };
    let cloned = if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    set_mask(&old, ptr::null_mut());
    cloned?;
    let pidfd = (pidfd && raw_pidfd >= 0).then(|| {
        // SAFETY: the kernel just gave us this new descriptor.
        unsafe { OwnedFd::from_raw_fd(raw_pidfd) }
    });
    if plan.step != 0 {
        // (With SIGCHLD ignored the kernel reaped it already: ECHILD.)
        reap(pid);
        if plan.step == Step::SigchldIgnored as c_int
            || plan.step == Step::SigchldNoCldWait as c_int
        {
            let ignored = plan.step == Step::SigchldIgnored as c_int;
            return Err(io::Error::other(SigchldRefused { ignored }));
        }
        let errno = if plan.errno == 0 {
            libc::EIO
        } else {
            plan.errno
        };
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok((Pid::from_raw(pid), pidfd))
}

/// Reaps a child that `_exit`ed (blocking, retrying `EINTR`; `__WALL`
/// since it is a clone child).
fn reap(pid: libc::pid_t) {
    loop {
        // SAFETY: a null status pointer is allowed.
        let rc = unsafe { libc::waitpid(pid, ptr::null_mut(), libc::__WALL) };
        if rc != -1 || errno() != libc::EINTR {
            return;
        }
    }
}

/// Takes ownership of a descriptor a system call returned, or its error.
fn owned(fd: c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned, owned by nobody.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `access(path, X_OK)`: whether this process may execute `path`.
pub(crate) fn is_executable(path: &CStr) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// `open("/dev/null", O_RDWR | O_CLOEXEC)`.
pub(crate) fn open_null() -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path; returns a new descriptor or -1.
    owned(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 3)`: a copy of `fd` in the lowest free
/// descriptor from 3 up.
pub(crate) fn dup_low(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on a borrowed, open descriptor; returns a new one or -1.
    owned(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })
}

/// Sets `FD_CLOEXEC` on `fd`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFD) on a borrowed, open descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `dup3(source, slot, O_CLOEXEC)`: `slot` (a descriptor the caller owns)
/// now refers to `source`'s file.
pub(crate) fn dup_into(source: BorrowedFd<'_>, slot: &OwnedFd) -> io::Result<()> {
    // SAFETY: both descriptors are open and `slot` is owned by the caller,
    // whose handle stays valid (same number, another file).
    let rc = unsafe { libc::dup3(source.as_raw_fd(), slot.as_raw_fd(), libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pipe2(O_CLOEXEC)`: `(read end, write end)`, both blocking.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The close-range pairs that leave open, from 3 up to `high - 1` (above
/// it the child has nothing open but close-on-exec copies), only the
/// `keep` descriptors (sorted, deduplicated, each at least 3).
pub(crate) fn ranges_to_close(keep: &[RawFd], high: RawFd) -> Vec<[u32; 2]> {
    let mut ranges = Vec::new();
    let mut next: RawFd = 3;
    for &fd in keep {
        if fd > next {
            ranges.push([next as u32, (fd - 1) as u32]);
        }
        next = next.max(fd + 1);
    }
    if next < high {
        ranges.push([next as u32, (high - 1) as u32]);
    }
    ranges
}

/// Makes a new pipe end non-blocking: one `fcntl(F_SETFL, O_NONBLOCK)`,
/// which replaces the status flags (a pipe from [`pipe`] has none but the
/// access mode, which `F_SETFL` leaves alone).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFL) on a borrowed, open descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 3)` of a descriptor number the caller keeps
/// open (a `supervise` pool's status write end): a copy of it, owned.
pub(crate) fn dup_raw(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on a number: a closed one is EBADF; the new descriptor
    // is owned at once.
    owned(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })
}
