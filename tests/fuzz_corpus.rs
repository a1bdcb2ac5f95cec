//! Replays the saved fuzz corpora (`fuzz/corpus/reap` through the reaping
//! model, `fuzz/corpus/supervise_pool` through the pool's state machine),
//! so `cargo test --all-features` checks their invariants without
//! cargo-fuzz, plus a fixed sweep of pseudo-random inputs.

#![cfg(feature = "fuzzing")]

use std::fs;
use std::path::Path;

#[test]
fn corpus_replays_cleanly() {
    replay("reap", evchild::fuzzing::run);
}

#[test]
fn supervise_pool_corpus_replays_cleanly() {
    replay("supervise_pool", evchild::fuzzing::pool);
}

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        // Name the input if it fails.
        eprintln!("replaying {}", path.display());
        run(&data);
        count += 1;
    }
    assert!(count > 0, "the corpus in {} is empty", dir.display());
}

#[test]
fn pseudo_random_inputs_hold() {
    // xorshift64: deterministic, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let len = (next() % 600) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        evchild::fuzzing::run(&data);
        evchild::fuzzing::pool(&data);
    }
}
