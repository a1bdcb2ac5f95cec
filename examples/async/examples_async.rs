//! Runs the async-runtime examples (`examples/async/tokio.rs`,
//! `examples/async/async_io.rs`) as they are, and checks what they say:
//! `cargo test -p evchild-async` (CI runs it).
//!
//! `cargo test` builds every example of the package before it runs the
//! tests, next to the test binaries: the test binary is
//! `<target>/<profile>/deps/NAME-HASH`, the example
//! `<target>/<profile>/examples/NAME`. A run of this file alone
//! (`cargo test -p evchild-async --test examples_async`) builds no example,
//! so an example that is missing, or older than its sources, is built here
//! with `cargo build -p evchild-async --example NAME --all-features` first.
//!
//! Each example runs in a process of its own with this run's backend
//! (`EVCHILD_TEST_BACKEND`, passed as `--backend`), bounded in time, and
//! must exit 0 with one `ok` line per check. The example checks itself that
//! it leaves no child behind (zombies included); the test checks the same
//! of its own process, and that it leaked no descriptor.

use evchild_testkit as util;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use evchild::Backend;
use util::{test_backend, Check, KillOnPanic};

/// How long an example may run (each stops itself after 30 s).
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// How long building an example may take (a cold build of tokio on a busy
/// two-core machine takes a few minutes).
const BUILD_LIMIT: Duration = Duration::from_secs(600);

/// The checks each example prints an `ok` line for.
const CHECKS: [&str; 7] = [
    "echo", "bulk", "polite", "stubborn", "fan-out", "missing", "driver",
];

#[test]
fn tokio_example() {
    run_example("tokio");
}

#[test]
fn async_io_example() {
    run_example("async_io");
}

fn run_example(name: &str) {
    let check = Check::start();
    let _kill = KillOnPanic;

    let binary = example_binary(name);
    let backend = backend_arg(test_backend());
    let started = Instant::now();
    let child = Command::new(&binary)
        .args(["--backend", backend])
        // Its own process group, so that a time-out kills its children too.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    let (status, stdout, stderr) = wait_with_output(child, RUN_LIMIT);
    let elapsed = started.elapsed();
    let shown = format!(
        "{name} --backend {backend}: {} after {elapsed:?}\n--- stdout\n{stdout}--- stderr\n{stderr}",
        status.map_or("still running: killed".to_string(), |s| s.to_string()),
    );
    let status = status.unwrap_or_else(|| panic!("timed out: {shown}"));
    assert!(status.success(), "{shown}");
    for name in CHECKS {
        let prefix = format!("ok    {name:<9} ");
        assert!(
            stdout.lines().any(|line| line.starts_with(&prefix)),
            "no line {prefix:?}: {shown}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{shown}");
    assert!(
        stdout.lines().last() == Some("all checks passed"),
        "{shown}"
    );
    println!("{shown}");

    check.finish();
}

/// The `--backend` argument the examples take for `backend`.
fn backend_arg(backend: Backend) -> &'static str {
    match backend {
        Backend::Pidfd => "pidfd",
        Backend::Peek => "peek",
        Backend::Scan => "scan",
        _ => "auto",
    }
}

// ---------------------------------------------------------------------------
// Finding (or building) the example
// ---------------------------------------------------------------------------

/// The example's binary, built by `cargo test` next to this test binary, or
/// built now if it is missing or older than its sources.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/examples_async-HASH
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary sits in <target>/<profile>/deps");
    let binary = profile_dir.join("examples").join(name);
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = newest_source(manifest_dir, name);
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    if built.is_some_and(|built| built >= sources) {
        return binary;
    }
    println!(
        "{} is {}: cargo build -p evchild-async --example {name} --all-features",
        binary.display(),
        if built.is_some() { "stale" } else { "missing" }
    );
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(manifest_dir)
        .args(["build", "--example", name, "--all-features"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !cfg!(debug_assertions) {
        cargo.arg("--release");
    }
    cargo.process_group(0);
    let child = cargo.spawn().expect("run cargo");
    let (status, stdout, stderr) = wait_with_output(child, BUILD_LIMIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "cargo build --example {name}: {status:?}\n{stdout}{stderr}"
    );
    assert!(
        binary.exists(),
        "cargo built the example, but not at {} (another --target?)",
        binary.display()
    );
    binary
}

/// The last modification of what the example is built from: its source
/// and the `common.rs` it includes, the library's sources, and the
/// manifests and lock file.
fn newest_source(manifest_dir: &Path, name: &str) -> SystemTime {
    // examples/async/ in evchild's workspace.
    let root = manifest_dir.join("../..");
    let mut files = vec![
        manifest_dir.join(format!("{name}.rs")),
        // What both examples include (`#[path = "common.rs"] mod common`).
        manifest_dir.join("common.rs"),
        manifest_dir.join("Cargo.toml"),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
    ];
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

// ---------------------------------------------------------------------------
// Running a process with a time limit
// ---------------------------------------------------------------------------

/// Waits for `child`, which leads its own process group, at most `limit`,
/// reading its stdout and stderr meanwhile (on threads, so a full pipe never
/// stops it); kills its whole group if it runs out of time, so no
/// grandchild holds the pipes open. Returns its status (`None` if it had to
/// be killed) and what it printed. The child is always reaped.
fn wait_with_output(mut child: Child, limit: Duration) -> (Option<ExitStatus>, String, String) {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let group = nix::unistd::Pid::from_raw(-(child.id() as libc::pid_t));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            child.wait().expect("wait for the killed child");
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Only a grandchild that left the group could keep the pipes open now.
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    (status, stdout, stderr)
}
