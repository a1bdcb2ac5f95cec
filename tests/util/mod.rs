//! A compatibility path for test files that still declare `mod util;` (the
//! `supervise_*` tests): every helper lives in the `evchild-testkit` crate
//! (`tests/support`), re-exported here under the old paths. New tests say
//! `use evchild_testkit as util;` instead.

#[allow(unused_imports)]
pub use evchild_testkit::*;
