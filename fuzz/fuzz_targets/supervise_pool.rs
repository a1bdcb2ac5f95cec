//! Scripted clocks, reports, deaths, failed starts, reloads, checkouts and
//! shutdowns against a pool's state machine; `evchild::fuzzing::pool`
//! panics when an invariant of `evchild::supervise` breaks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| evchild::fuzzing::pool(data));
