//! Tests that cannot run here say so, and are counted: never a silent pass.
//!
//! Whether a test can run is often known only at run time (root, pidfds, a
//! user namespace), so libtest's `#[ignore]` cannot say it. Instead the test
//! calls [`skip!`](crate::skip!) and returns. The line goes to the real standard error
//! (libtest captures `eprintln!`, not writes to `std::io::stderr()`), so a
//! plain `cargo test` shows it, and to the file named by [`SKIP_LOG_VAR`], if
//! set, which `.ci/run` counts and lists in its summary.

use std::io::Write;

/// The file every skip is appended to, one line each (set by `.ci/run`).
pub const SKIP_LOG_VAR: &str = "EVCHILD_SKIP_LOG";

/// Every skip line starts with this.
pub const SKIP_PREFIX: &str = "evchild-test SKIPPED";

/// Reports that the calling test (or the named part of it) does not run
/// here, and why; the test then returns (or goes on without that part).
///
/// ```ignore
/// if !util::pidfd_available() {
///     util::skip!("pidfd_open is not supported here");
///     return check.finish();
/// }
/// ```
#[macro_export]
macro_rules! skip {
    ($($reason:tt)+) => {
        $crate::skip::skipped(&::std::format!($($reason)+))
    };
}

/// What [`skip!`](crate::skip!) calls: prints `evchild-test SKIPPED <binary>::<test>:
/// <reason>` to the real standard error and appends it to the file of
/// [`SKIP_LOG_VAR`], if set.
pub fn skipped(reason: &str) {
    let line = format!("{SKIP_PREFIX} {}: {reason}\n", test_name());
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR).filter(|p| !p.is_empty()) {
        // One `write` of a whole line to an `O_APPEND` file: lines of
        // concurrent test binaries do not interleave.
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = log.write_all(line.as_bytes());
        }
    }
}

/// `<binary>::<test>`: the test binary's name without cargo's hash, and the
/// test's name (libtest names each test's thread after it).
pub fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem()?.to_str().map(str::to_owned))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => stem,
        })
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    let test = match thread.name() {
        Some("main") | None => "?",
        Some(name) => name,
    };
    format!("{binary}::{test}")
}

/// Whether this system gives evchild pidfds; if not, [`skip!`](crate::skip!)s `what`
/// (the part of the test that needs them) and returns `false`.
pub fn pidfd_or_skip(what: &str) -> bool {
    let pidfd = crate::backend::pidfd_available();
    if !pidfd {
        skip!("{what}: needs pidfds (the Pidfd backend), and pidfd_open is not supported here");
    }
    pidfd
}
