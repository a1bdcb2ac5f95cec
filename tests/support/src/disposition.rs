//! The `SIGCHLD` disposition: read it, set it, put it back, and see what
//! evchild's handler machinery has done in this process.

/// glibc adds `SA_RESTORER` (its signal trampoline) to every action it
/// installs and reports it back; it is not ours to compare.
pub const SA_RESTORER: libc::c_int = 0x0400_0000;

/// The current `SIGCHLD` action, as the kernel reports it.
#[track_caller]
pub fn sigchld_action() -> libc::sigaction {
    // SAFETY: an all-zero `sigaction` is a valid value; the kernel overwrites it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is a valid out-pointer.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) };
    assert_eq!(
        rc,
        0,
        "sigaction(SIGCHLD): {}",
        std::io::Error::last_os_error()
    );
    old
}

/// The current `SIGCHLD` handler address (`SIG_DFL`, `SIG_IGN` or a
/// function).
#[track_caller]
pub fn sigchld_handler() -> libc::sighandler_t {
    sigchld_action().sa_sigaction
}

/// The current `SIGCHLD` disposition: handler and flags (without
/// [`SA_RESTORER`]).
#[track_caller]
pub fn disposition() -> (libc::sighandler_t, libc::c_int) {
    let action = sigchld_action();
    (action.sa_sigaction, action.sa_flags & !SA_RESTORER)
}

/// Installs `handler` with `flags` (and an empty mask) as the `SIGCHLD`
/// disposition; returns the action it replaced.
///
/// `handler` must be `SIG_DFL`, `SIG_IGN`, or a function with the signature
/// `flags` tells the kernel: `extern "C" fn(c_int)`, or with `SA_SIGINFO`
/// `extern "C" fn(c_int, *mut siginfo_t, *mut c_void)`.
#[track_caller]
pub fn set_disposition(handler: libc::sighandler_t, flags: libc::c_int) -> libc::sigaction {
    // SAFETY: all-zero is a valid sigaction; the fields used are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler;
    action.sa_flags = flags;
    // SAFETY: `sa_mask` is a valid out-pointer.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: all-zero is a valid sigaction; the kernel overwrites it.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `action` is fully initialised, and its handler has the
    // signature its flags tell the kernel (the caller's obligation, see
    // above); `old` is a valid out-pointer.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, &action, &mut old) };
    assert_eq!(rc, 0, "sigaction(SIGCHLD)");
    old
}

/// Reinstalls a `SIGCHLD` action obtained from the kernel.
#[track_caller]
pub fn restore_action(action: &libc::sigaction) {
    // SAFETY: `action` came from the kernel, so it is valid to install.
    let rc = unsafe { libc::sigaction(libc::SIGCHLD, action, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "sigaction(SIGCHLD)");
}

/// What evchild's handler machinery has done so far in this process:
/// `(installs, live registrations)`, read through evchild's hidden test
/// counters (`evchild::__private`, atomic loads). Always `Some`.
///
/// Once evchild installs its `SIGCHLD` handler it stays installed for the
/// life of the process, so "the reactor gave the handler up" is "no
/// registration is left", not "`SIGCHLD` is `SIG_DFL` again".
pub fn handler_use() -> Option<(u64, usize)> {
    use evchild::__private as counters;
    Some((
        counters::sigchld_installs(),
        counters::sigchld_registrations(),
    ))
}

/// Asserts no reactor of the process holds a `SIGCHLD` registration (its
/// wake pipe in the handler's table): every reactor that needed the
/// handler has released it.
#[track_caller]
pub fn assert_no_registration(what: &str) {
    assert_registrations(0, what);
}

/// Asserts how many `SIGCHLD` registrations are live (one per reactor that
/// needs the handler now).
#[track_caller]
pub fn assert_registrations(expected: usize, what: &str) {
    if let Some((_, registrations)) = handler_use() {
        assert_eq!(registrations, expected, "{what}: SIGCHLD registrations");
    }
}

/// A snapshot of the `SIGCHLD` disposition and of evchild's installs, to
/// check that something (the pidfd backend, `Mainloop` mode) left the
/// handler alone.
pub struct HandlerWatch {
    disposition: (libc::sighandler_t, libc::c_int),
    installs: Option<u64>,
}

impl HandlerWatch {
    pub fn start() -> Self {
        HandlerWatch {
            disposition: disposition(),
            installs: handler_use().map(|(installs, _)| installs),
        }
    }

    /// The disposition is as it was, evchild installed nothing since
    /// [`start`](HandlerWatch::start), and holds no registration.
    #[track_caller]
    pub fn assert_untouched(&self, what: &str) {
        assert_eq!(
            disposition(),
            self.disposition,
            "{what}: disposition changed"
        );
        if let (Some(before), Some((now, _))) = (self.installs, handler_use()) {
            assert_eq!(now, before, "{what}: evchild installed its handler");
        }
        assert_no_registration(what);
    }
}

/// Puts `SIG_DFL` back when the test ends, even if it fails.
pub struct RestoreDefault;

impl Drop for RestoreDefault {
    fn drop(&mut self) {
        set_disposition(libc::SIG_DFL, 0);
    }
}
