//! A process that inherited `EVCHILD_WORKER` without being a worker (a
//! worker's own child, say) must not take whatever descriptor has that
//! number for a status channel. Its own test binary: the worker side's
//! state is process-wide.

use std::io::{Read, Seek};
use std::os::fd::AsRawFd;

use evchild::supervise::{worker, ENV, MASTER_ENV};

#[test]
fn an_inherited_variable_never_makes_another_descriptor_the_channel() {
    let path = std::env::temp_dir().join(format!("evchild-worker-env-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("a scratch file");
    let _ = std::fs::remove_file(&path);
    let fd = file.as_raw_fd();
    // What a worker's child would see: the variables, and an unrelated
    // file of its own under that number.
    std::env::set_var(ENV, format!("{fd}:7"));
    std::env::set_var(MASTER_ENV, "1");
    assert!(!worker::is_worker(), "a plain file taken for the channel");
    assert!(!worker::ready(), "a report went somewhere");
    let mut bytes = Vec::new();
    file.rewind().expect("rewind");
    file.read_to_end(&mut bytes).expect("read");
    assert!(
        bytes.is_empty(),
        "ready() wrote {bytes:?} into an unrelated file"
    );
    // Read once, the variables are gone: this process's children do not
    // inherit them.
    assert!(std::env::var_os(ENV).is_none());
    assert!(std::env::var_os(MASTER_ENV).is_none());
}
