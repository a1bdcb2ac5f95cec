//! Scripted exits, foreign reapers, pid reuse and faults against the reaping
//! passes; `evchild::fuzzing::run` panics when an invariant breaks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| evchild::fuzzing::run(data));
